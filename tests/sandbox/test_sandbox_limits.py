"""Limits: rate window (606), concurrency (615), daily quota (607), latency (behaviour 7)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from marketo_source.sandbox import Limits

from sandbox_helpers import Api, StartSandbox, error_code

TYPES = "/rest/v1/activities/types.json"


def _codes(api: Api, calls: int, path: str = TYPES) -> list[str]:
    return ["ok" if answer["success"] else error_code(answer) for answer in (api.get(path) for _ in range(calls))]


def test_rate_window_answers_606_and_recovers(start_sandbox: StartSandbox) -> None:
    api = Api(start_sandbox(limits=Limits(calls_per_window=3, window_s=0.5)))
    answer = [api.get(TYPES) for _ in range(4)][-1]
    assert error_code(answer) == "606"
    assert answer["errors"][0]["message"] == "Max rate limit '3' exceeded with in '0.5' secs"
    time.sleep(0.3)
    assert error_code(api.get(TYPES)) == "606"  # rejected calls do not enter the window ...
    time.sleep(0.3)
    assert _codes(api, 3) == ["ok"] * 3  # ... so it is free again once the first three are 0.5 s old


def test_concurrent_calls_beyond_the_limit_get_615(start_sandbox: StartSandbox) -> None:
    sandbox = start_sandbox(limits=Limits(calls_per_window=None, max_concurrent=2, latency_s=0.3))
    api = Api(sandbox)
    clients = [Api(sandbox) for _ in range(6)]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda client: client.get(TYPES), clients))
    assert sum(a["success"] for a in answers) == 2
    assert {error_code(a) for a in answers if not a["success"]} == {"615"}
    assert sandbox.stats()["max_concurrent_seen"] == 2
    assert api.get(TYPES)["success"]


def test_daily_quota_answers_607_until_reset(start_sandbox: StartSandbox) -> None:
    sandbox = start_sandbox(limits=Limits(calls_per_window=None, daily_quota=3))
    api = Api(sandbox)
    sandbox.expire_tokens()
    assert error_code(api.get(TYPES)) == "602"  # does not count against the quota
    api.session.headers["Authorization"] = f"Bearer {api.token()}"
    assert _codes(api, 4) == ["ok", "ok", "ok", "607"]
    assert sandbox.stats()["quota_used"] == 3
    sandbox.reset_quota()
    assert _codes(api, 1) == ["ok"]


def test_latency_applies_globally_and_per_endpoint(start_sandbox: StartSandbox) -> None:
    sandbox = start_sandbox(limits=Limits(calls_per_window=None, latency_s=0.2,
                                          endpoint_latency_s={"describe_leads": 0.5}))
    api = Api(sandbox)
    durations = {}
    for path in (TYPES, "/rest/v1/leads/describe2.json"):
        started = time.monotonic()
        assert api.get(path)["success"]
        durations[path] = time.monotonic() - started
    assert 0.2 <= durations[TYPES] < 0.45
    assert durations["/rest/v1/leads/describe2.json"] >= 0.5


def test_limits_change_while_running(start_sandbox: StartSandbox) -> None:
    sandbox = start_sandbox()
    api = Api(sandbox)
    assert _codes(api, 3) == ["ok"] * 3
    sandbox.limits = Limits(calls_per_window=None, daily_quota=3)
    assert _codes(api, 1) == ["607"]
    sandbox.limits.daily_quota = None
    assert _codes(api, 1) == ["ok"]
