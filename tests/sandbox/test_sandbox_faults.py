"""Fault injection by schedule and by probability (behaviour 8)."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from marketo_source.sandbox import Fault

from sandbox_helpers import Api, StartSandbox, error_code

TYPES = "/rest/v1/activities/types.json"


@pytest.mark.parametrize("kind", ["601", "602", "604", "606", "607", "608", "611", "615", "713"])
def test_marketo_coded_fault_on_a_scheduled_call(start_sandbox: StartSandbox, kind: str) -> None:
    sandbox = start_sandbox(faults=[Fault(kind, calls=(2,))])
    api = Api(sandbox)
    answers = [api.get(TYPES) for _ in range(3)]
    assert [a["success"] for a in answers] == [True, False, True]
    assert error_code(answers[1]) == kind and answers[1]["errors"][0]["message"]
    assert sandbox.stats()["faults_injected"] == {kind: 1}
    assert sandbox.stats()["errors"] == {kind: 1}


@pytest.mark.parametrize("status", [500, 502])
def test_http_error_faults(start_sandbox: StartSandbox, status: int) -> None:
    sandbox = start_sandbox(faults=[Fault(f"http{status}", calls=(1,))])
    api = Api(sandbox)
    assert api.raw("GET", TYPES).status_code == status
    assert api.raw("GET", TYPES).status_code == 200
    assert sandbox.stats()["errors"] == {f"http{status}": 1}


def test_reset_fault_drops_the_connection(start_sandbox: StartSandbox) -> None:
    sandbox = start_sandbox(faults=[Fault("reset", calls=(1,))])
    api = Api(sandbox)
    with pytest.raises(requests.ConnectionError):
        api.raw("GET", TYPES)
    assert api.get(TYPES)["success"]
    assert sandbox.stats()["faults_injected"] == {"reset": 1}


def test_truncated_fault_cuts_the_json_in_half(start_sandbox: StartSandbox) -> None:
    sandbox = start_sandbox(faults=[Fault("truncated", calls=(1,))])
    api = Api(sandbox)
    answer = api.raw("GET", TYPES)
    complete = api.raw("GET", TYPES)
    assert answer.status_code == 200 and int(answer.headers["Content-Length"]) == len(answer.content)
    assert 0.4 < len(answer.content) / len(complete.content) < 0.6
    with pytest.raises(requests.JSONDecodeError):
        answer.json()


def test_slow_fault_answers_after_the_delay(start_sandbox: StartSandbox) -> None:
    api = Api(start_sandbox(faults=[Fault("slow", calls=(1,), slow_s=0.5)]))
    started = time.monotonic()
    assert api.get(TYPES)["success"]
    assert time.monotonic() - started >= 0.5
    api.sandbox.set_faults([Fault("slow", calls=(2,), slow_s=5)])
    with pytest.raises(requests.Timeout):
        api.session.get(f"{api.base_url}{TYPES}", timeout=0.3)


def test_stop_ends_a_slow_answer_early(start_sandbox: StartSandbox) -> None:
    sandbox = start_sandbox(faults=[Fault("slow", calls=(1,), slow_s=30)])
    api = Api(sandbox)
    threading.Timer(0.3, sandbox.stop).start()
    started = time.monotonic()
    api.raw("GET", TYPES)
    assert time.monotonic() - started < 5


def test_probability_faults_are_seeded_and_counted(start_sandbox: StartSandbox) -> None:
    def pattern(seed: int) -> list[bool]:
        sandbox = start_sandbox(faults=[Fault("713", probability=0.3)], fault_seed=seed)
        api = Api(sandbox)
        outcome = [api.get(TYPES)["success"] for _ in range(40)]
        assert sandbox.stats()["faults_injected"]["713"] == outcome.count(False)
        return outcome

    first = pattern(3)
    assert 3 <= first.count(False) <= 25
    assert pattern(3) == first
    assert pattern(4) != first


def test_endpoint_and_times_restrict_injection(start_sandbox: StartSandbox) -> None:
    sandbox = start_sandbox(faults=[Fault("611", probability=1.0, endpoint="describe_leads", times=2)])
    api = Api(sandbox)
    assert api.get(TYPES)["success"]
    outcomes = [api.get("/rest/v1/leads/describe2.json")["success"] for _ in range(4)]
    assert outcomes == [False, False, True, True]


def test_unknown_fault_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown fault kind 'boom'"):
        Fault("boom")
