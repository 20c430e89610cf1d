"""The HTTP client against the sandbox: retries, new tokens, limits, long queries and clear errors."""

import itertools
import statistics
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List

import pytest
import requests

from marketo_source import (
    MarketoAuthError,
    MarketoClient,
    MarketoConfigurationError,
    MarketoQuotaExceeded,
    MarketoRequestError,
    MarketoTransientError,
    MarketoWriteUncertain,
    marketo_source,
)
from marketo_source.config import MarketoDestinationConfiguration
from marketo_source.sandbox import Fault, Limits, MarketoSandbox
from marketo_source.settings import ACTIVITY_TYPES_PATH, IDENTITY_PATH, LEAD_CHANGES_PATH, PAGING_TOKEN_PATH

from tests.helpers import FAST_CLIENT

QUICK_RETRIES = dict(FAST_CLIENT, max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.05)


def client_for(sandbox: MarketoSandbox, base_url: str = "", **kwargs: Any) -> MarketoClient:
    url = base_url or sandbox.base_url
    return MarketoClient(url, sandbox.client_id, sandbox.client_secret, **{**QUICK_RETRIES, **kwargs})


@pytest.mark.parametrize(
    "kind", ["604", "606", "608", "611", "615", "713", "http500", "http502", "truncated", "reset"]
)
def test_transient_failures_are_retried(sandbox: MarketoSandbox, kind: str) -> None:
    sandbox.set_faults([Fault(kind, calls=(1, 2))])
    client = client_for(sandbox)

    answer = client.get(ACTIVITY_TYPES_PATH)

    assert answer["success"] is True and answer["result"]
    assert sandbox.stats()["faults_injected"].get(kind) == 2
    assert sum(client.retries.values()) == 2
    assert client.calls[ACTIVITY_TYPES_PATH] == 3


def test_an_answer_slower_than_the_timeout_is_retried(sandbox: MarketoSandbox) -> None:
    sandbox.set_faults([Fault("slow", calls=(1,), slow_s=3.0)])
    client = client_for(sandbox, read_timeout_s=0.5)

    assert client.get(ACTIVITY_TYPES_PATH)["success"] is True
    assert client.retries == {"ReadTimeout": 1}


def test_transient_failures_past_the_last_attempt_raise_a_clear_error(sandbox: MarketoSandbox) -> None:
    sandbox.set_faults([Fault("606", probability=1.0)])
    with pytest.raises(MarketoTransientError, match="still failed after 3 attempts"):
        client_for(sandbox).get(ACTIVITY_TYPES_PATH)


@pytest.mark.parametrize("kind", ["601", "602"])
def test_a_refused_token_is_replaced_and_the_call_replayed(sandbox: MarketoSandbox, kind: str) -> None:
    client = client_for(sandbox)
    client.get(ACTIVITY_TYPES_PATH)
    sandbox.set_faults([Fault(kind, calls=(2,))])

    assert client.get(ACTIVITY_TYPES_PATH)["success"] is True
    assert sandbox.stats()["calls"]["identity"] == 2
    assert not client.retries


def test_an_expired_token_is_replaced(sandbox: MarketoSandbox) -> None:
    client = client_for(sandbox)
    client.get(ACTIVITY_TYPES_PATH)
    sandbox.expire_tokens()

    assert client.get(ACTIVITY_TYPES_PATH)["success"] is True
    assert sandbox.stats()["errors"].get("602") == 1


def test_wrong_credentials_raise_an_auth_error_naming_their_section_without_the_secret(
    sandbox: MarketoSandbox,
) -> None:
    config = MarketoDestinationConfiguration(base_url=sandbox.base_url, client_id=sandbox.client_id,
                                             client_secret="wrong-secret-value", **QUICK_RETRIES)
    with pytest.raises(MarketoAuthError) as raised:
        MarketoClient.connect(config).get(ACTIVITY_TYPES_PATH)
    setting = "destination.marketo_custom_activities.client_id/client_secret"
    assert (raised.value.setting, str(raised.value)) == (setting, f"{setting}: Marketo refused them (HTTP 401); give "
                                                         "the client id and secret of the API user's LaunchPoint "
                                                         "service (Admin > Integration > LaunchPoint > View Details)")
    assert "wrong-secret-value" not in str(raised.value) and "wrong-secret-value" not in repr(raised.value)


REST_ENDPOINT = ("give your instance's REST endpoint, e.g. https://123-ABC-456.mktorest.com (Admin > Integration > "
                 "Web Services)")


def test_a_base_url_that_is_not_marketo_is_named(sandbox: MarketoSandbox) -> None:
    client = MarketoClient(sandbox.base_url + "/not-marketo", sandbox.client_id, sandbox.client_secret, **QUICK_RETRIES)
    with pytest.raises(MarketoConfigurationError) as raised:
        client.get(ACTIVITY_TYPES_PATH)
    assert str(raised.value) == (f"sources.marketo.base_url: {sandbox.base_url}/not-marketo/identity/oauth/token "
                                 f"answered HTTP 404, not an access token; {REST_ENDPOINT}")


def test_a_rest_path_answered_with_an_http_error_names_the_base_url(sandbox: MarketoSandbox) -> None:
    with pytest.raises(MarketoConfigurationError) as raised:
        client_for(sandbox).get("/v1/not-an-endpoint.json")
    assert (raised.value.setting, raised.value.code) == ("sources.marketo.base_url", "404")
    assert str(raised.value) == (f"sources.marketo.base_url: {sandbox.base_url}/rest/v1/not-an-endpoint.json "
                                 f"answered HTTP 404; {REST_ENDPOINT}")


class _NotMarketo(BaseHTTPRequestHandler):
    """A web server that is not Marketo's REST endpoint: it hands out a token at Marketo's
    identity path, and an HTML page everywhere else."""

    def do_GET(self) -> None:
        token = self.path.split("?")[0] == IDENTITY_PATH
        body = b'{"access_token": "a-token", "expires_in": 3600}' if token else b"<html><p>Welcome</p></html>"
        self.send_response(200)
        self.send_header("Content-Type", "application/json" if token else "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        """Keeps the test's output clean."""


@pytest.fixture
def not_marketo() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotMarketo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("prefix", "answered", "problem"),
    [("/site", f"/site{IDENTITY_PATH}", "did not answer as Marketo's identity service does"),
     ("", f"/rest{ACTIVITY_TYPES_PATH}", "did not answer JSON")],
)
def test_an_answer_that_is_not_marketos_names_the_base_url_in_its_section(
    not_marketo: str, prefix: str, answered: str, problem: str
) -> None:
    config = MarketoDestinationConfiguration(base_url=not_marketo + prefix, client_id="an-id",
                                             client_secret="a-secret", **QUICK_RETRIES)
    with pytest.raises(MarketoConfigurationError) as raised:
        MarketoClient.connect(config).get(ACTIVITY_TYPES_PATH)
    assert str(raised.value) == (f"destination.marketo_custom_activities.base_url: {not_marketo}{answered} "
                                 f"{problem}; {REST_ENDPOINT}")


@pytest.mark.parametrize("suffix", ["", "/", "/rest", "/rest/", "/identity"])
def test_the_rest_and_identity_urls_from_marketo_admin_work_as_base_url(sandbox: MarketoSandbox, suffix: str) -> None:
    assert client_for(sandbox, base_url=sandbox.base_url + suffix).get(ACTIVITY_TYPES_PATH)["success"]


def test_a_query_over_8_kb_goes_as_post_with_method_get(sandbox: MarketoSandbox) -> None:
    client = client_for(sandbox)
    token = client.get(PAGING_TOKEN_PATH, {"sinceDatetime": "2026-10-01T00:00:00Z"})["nextPageToken"]
    fields = ",".join(["firstName", "lastName", "email"] * 600)
    params = {"nextPageToken": token, "fields": fields}
    plain = requests.get(
        f"{sandbox.base_url}/rest{LEAD_CHANGES_PATH}",
        params=params,
        headers={"Authorization": f"Bearer {client.auth.current_token()}"},
        timeout=10,
    )
    assert plain.status_code == 414

    answer = client.get(LEAD_CHANGES_PATH, params)

    assert answer["success"] is True and "nextPageToken" in answer


def test_the_limiter_keeps_calls_within_the_window(sandbox: MarketoSandbox) -> None:
    sandbox.limits = Limits(calls_per_window=10, window_s=1.0, max_concurrent=10, daily_quota=None)
    client = client_for(sandbox, rate_limit_calls=10, rate_limit_period_s=1.0)
    started = time.monotonic()
    for _ in range(25):
        client.get(ACTIVITY_TYPES_PATH)
    assert sandbox.stats()["errors"].get("606", 0) == 0
    assert time.monotonic() - started >= 2.0  # 25 calls at 10 per second need two full windows


def test_the_limiter_caps_calls_in_flight(sandbox: MarketoSandbox) -> None:
    sandbox.limits = Limits(calls_per_window=None, max_concurrent=3, daily_quota=None, latency_s=0.05)
    client = client_for(sandbox, max_concurrency=3)
    threads = [threading.Thread(target=lambda: [client.get(ACTIVITY_TYPES_PATH) for _ in range(3)]) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = sandbox.stats()
    assert stats["errors"].get("615", 0) == 0
    assert stats["max_concurrent_seen"] == 3


def test_urgent_calls_take_the_places_the_window_frees_first(sandbox: MarketoSandbox) -> None:
    sandbox.limits = Limits(calls_per_window=10, window_s=0.5, max_concurrent=10, daily_quota=None)
    client = client_for(sandbox, rate_limit_calls=10, rate_limit_period_s=0.5, max_concurrency=10)
    seconds: Dict[bool, List[float]] = {True: [], False: []}
    stop = threading.Event()

    def keep_calling(urgent: bool) -> None:
        while not stop.is_set():
            started = time.monotonic()
            client.get(ACTIVITY_TYPES_PATH, urgent=urgent)
            seconds[urgent].append(time.monotonic() - started)

    threads = [threading.Thread(target=keep_calling, args=(urgent,)) for urgent in (True, False, False, False, False)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    stop.set()
    for thread in threads:
        thread.join()

    assert sandbox.stats()["errors"].get("606", 0) == 0
    # The window holds everyone up; an urgent call waits only for the next place it frees (it
    # waits about half as long as the others; sharing fairly, about as long).
    urgent_s, other_s = (statistics.mean(seconds[urgent]) for urgent in (True, False))
    assert urgent_s < other_s / 1.7, (urgent_s, other_s, len(seconds[True]), len(seconds[False]))


def test_once_the_window_is_full_calls_are_paced_not_bursty(sandbox: MarketoSandbox) -> None:
    sandbox.limits = Limits(calls_per_window=10, window_s=0.5, max_concurrent=10, daily_quota=None)
    unfilled = client_for(sandbox, rate_limit_calls=10, rate_limit_period_s=2.0)
    started = time.monotonic()
    for _ in range(8):  # fewer than its window holds: not paced (paced, 8 calls take 1.4 s)
        unfilled.get(ACTIVITY_TYPES_PATH)
    assert time.monotonic() - started < 0.7
    time.sleep(0.5)  # the sandbox's window forgets those calls

    client = client_for(sandbox, rate_limit_calls=10, rate_limit_period_s=0.5, max_concurrency=10)
    started = time.monotonic()
    ended: List[float] = []

    def keep_calling() -> None:
        while time.monotonic() - started < 2.5:
            client.get(ACTIVITY_TYPES_PATH)
            ended.append(time.monotonic() - started)

    threads = [threading.Thread(target=keep_calling) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sandbox.stats()["errors"].get("606", 0) == 0
    # Unpaced, a window's 10 calls end together and a pause of about 0.45 s follows; paced, one
    # call starts every 50 ms, about 5 in a quarter of a second.
    after_first_window = sorted(at for at in ended if at >= 0.6)
    gaps = [later - earlier for earlier, later in itertools.pairwise(after_first_window)]
    assert max(gaps) < 0.35, max(gaps)
    quarters = Counter(int(at / 0.25) for at in after_first_window)
    assert max(quarters.values()) <= 8, sorted(quarters.items())


def test_quota_exhaustion_is_its_own_error(sandbox: MarketoSandbox) -> None:
    sandbox.limits.daily_quota = 1
    client = client_for(sandbox)
    client.get(ACTIVITY_TYPES_PATH)
    with pytest.raises(MarketoQuotaExceeded, match="midnight US Central"):
        client.get(ACTIVITY_TYPES_PATH)


def test_a_rejected_parameter_names_marketos_code(sandbox: MarketoSandbox) -> None:
    with pytest.raises(MarketoRequestError) as raised:
        client_for(sandbox).get(PAGING_TOKEN_PATH, {"sinceDatetime": "not a date"})
    assert raised.value.code == "704"


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("lead_ids", ["12a"], "lead_ids: '12a' is not a whole number"),
        ("activity_type_ids", [1, "two"], "activity_type_ids: 'two' is not a whole number"),
        ("start_date", "2999-01-01", "start_date: '2999-01-01' lies in the future"),
        ("start_date", "last tuesday", "start_date: 'last tuesday' is not a date"),
        ("max_concurrency", 11, "max_concurrency: 11 is not between 1 and 10"),
        ("rate_limit_calls", 0, "rate_limit_calls: 0 is not a positive whole number"),
        ("base_url", "123-ABC-456.mktorest.com", "is not an http"),
        ("client_secret", "", "client_secret: not set"),
    ],
)
def test_bad_settings_are_named(sandbox: MarketoSandbox, setting: str, value: Any, message: str) -> None:
    settings = dict(base_url=sandbox.base_url, client_id=sandbox.client_id, client_secret=sandbox.client_secret)
    with pytest.raises(MarketoConfigurationError, match=message):
        marketo_source(**{**settings, setting: value})


@pytest.mark.parametrize(
    ("kind", "resent"),
    [("606", True), ("615", True), ("602", True), ("611", False), ("http502", False), ("reset", False)],
)
def test_a_write_is_resent_only_after_failures_answered_before_processing(
    sandbox: MarketoSandbox, kind: str, resent: bool
) -> None:
    client = client_for(sandbox)
    client.get(ACTIVITY_TYPES_PATH)
    sandbox.set_faults([Fault(kind, calls=(2,))])
    truth = sandbox.ground_truth()
    item = {"leadId": truth["activities"][0]["leadId"], "activityDate": "2026-10-02T10:00:00Z",
            "activityTypeId": truth["custom_activity_types"][0]["id"], "primaryAttributeValue": "x", "attributes": []}
    body = {"input": [item]}
    if resent:
        assert client.post("/v1/activities/external.json", body, idempotent=False)["success"] is True
    else:
        with pytest.raises(MarketoWriteUncertain, match="may have applied it"):
            client.post("/v1/activities/external.json", body, idempotent=False)
    assert client.calls["/v1/activities/external.json"] == (2 if resent else 1)
    assert sandbox.stats()["faults_injected"] == {kind: 1}
