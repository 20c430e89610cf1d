"""HTTP-level behaviour: 414 and the POST `_method=GET` fallback, unknown paths, wrong methods, big bodies."""

from __future__ import annotations

import contextlib
import time

import pytest
import requests

from marketo_source.sandbox import DataSpec, Fault, MarketoSandbox

from sandbox_helpers import Api

LEAD_CHANGES = "/rest/v1/activities/leadchanges.json"


def _long_fields() -> str:
    # Unknown field names are ignored by Marketo, so padding the list only makes the URI long.
    return ",".join(["city", "title"] + [f"customField{n:04d}" for n in range(600)])


def test_long_get_gets_414_and_the_post_fallback_serves_it(api: Api) -> None:
    token = api.paging_token()
    long_get = api.raw("GET", LEAD_CHANGES, params={"nextPageToken": token, "fields": _long_fields()})
    assert long_get.status_code == 414
    form = {"_method": "GET", "nextPageToken": token, "fields": _long_fields(), "batchSize": "50"}
    fallback = api.raw("POST", LEAD_CHANGES, data=form).json()
    short_get = api.get(LEAD_CHANGES, nextPageToken=token, fields="city,title", batchSize=50)
    assert fallback["success"] and fallback["result"] == short_get["result"]
    assert api.sandbox.stats()["errors"]["http414"] == 1


def test_post_fallback_works_for_every_get_endpoint(api: Api) -> None:
    answer = api.raw("POST", "/rest/v1/activities/types.json", data={"_method": "GET"}).json()
    assert answer["success"] and answer["result"]


def test_unknown_path_is_404_and_wrong_method_is_405(api: Api) -> None:
    assert api.raw("GET", "/rest/v1/nothing.json").status_code == 404
    assert api.raw("POST", "/rest/v1/activities/types.json", json={}).status_code == 405
    assert api.raw("GET", "/rest/v1/activities/external.json").status_code == 405


def test_body_over_one_megabyte_gets_413(api: Api) -> None:
    answer = api.raw("POST", "/rest/v1/activities/external.json", data=b"x" * (1024 * 1024 + 1),
                     headers={"Content-Type": "application/json"})
    assert answer.status_code == 413


def test_keep_alive_connection_serves_many_calls(api: Api) -> None:
    for _ in range(20):
        assert api.get("/rest/v1/activities/types.json")["success"]
    assert requests.get(f"{api.base_url}/_sandbox/stats", timeout=10).json()["calls"]["activity_types"] == 20


def test_a_client_that_gives_up_on_a_slow_answer_leaves_no_traceback(capfd: pytest.CaptureFixture[str]) -> None:

    data = DataSpec(seed=1, leads=10, activities=100, days=2)
    with MarketoSandbox(data=data, faults=[Fault("slow", calls=(1,), slow_s=0.6)]) as sandbox:
        token = requests.post(f"{sandbox.base_url}/identity/oauth/token", timeout=5, data={
            "grant_type": "client_credentials", "client_id": sandbox.client_id, "client_secret": sandbox.client_secret,
        }).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        with contextlib.suppress(requests.Timeout):
            requests.get(f"{sandbox.base_url}/rest/v1/activities/types.json", headers=headers, timeout=0.2)
        answer = requests.get(f"{sandbox.base_url}/rest/v1/activities/types.json", headers=headers, timeout=5)
        assert answer.json()["success"] is True
        time.sleep(0.8)  # the slow answer is written to the closed connection meanwhile
        assert sandbox.stats()["faults_injected"] == {"slow": 1}
    assert "Traceback" not in capfd.readouterr().err
