"""Bulk Activity Extract over real HTTP: job stages, Marketo's queue and quota rules, retention, limits, faults."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import requests

from marketo_source.sandbox import BulkSpec, Fault, Limits, MarketoSandbox
from marketo_source.sandbox.__main__ import build_sandbox, parse_args

from sandbox_helpers import EXPORT, BulkApi, StartSandbox, error_code, wait_until

FAST = BulkSpec(queue_s=0, processing_s=0.05, status_interval_s=0.01)
# Jobs that stay processing for the length of any test.
SLOW = BulkSpec(queue_s=0, processing_s=3600, status_interval_s=0.01)


def _bulk(start_sandbox: StartSandbox, spec: BulkSpec = FAST, **kwargs: Any) -> BulkApi:
    return BulkApi(start_sandbox(bulk=spec, **kwargs))


def _true_statuses(sandbox: MarketoSandbox) -> dict[str, str]:
    return {job["exportId"]: job["status"] for job in sandbox.bulk_jobs()}


@pytest.fixture
def api(start_sandbox: StartSandbox) -> BulkApi:
    """A bulk client for a sandbox whose jobs complete quickly."""
    return _bulk(start_sandbox)


def test_a_job_goes_from_created_to_completed(start_sandbox: StartSandbox) -> None:
    api = _bulk(start_sandbox)
    created = api.create()["result"][0]
    assert created["status"] == "Created" and created["format"] == "CSV"
    export_id = created["exportId"]
    queued = api.job("enqueue", export_id)["result"][0]
    assert queued["status"] == "Queued" and "queuedAt" in queued
    completed = api.wait(export_id, "Completed")
    file = api.file(export_id).content
    assert completed["fileSize"] == len(file)
    assert completed["fileChecksum"] == "sha256:" + hashlib.sha256(file).hexdigest()
    assert completed["numberOfRecords"] == file.count(b"\n") - 1  # the test data holds no line breaks
    assert completed["createdAt"] <= completed["queuedAt"] <= completed["startedAt"] <= completed["finishedAt"]
    assert api.sandbox.bulk_jobs()[0]["status"] == "Completed"


def test_file_is_404_plain_text_until_completed(start_sandbox: StartSandbox) -> None:
    api = _bulk(start_sandbox, SLOW)
    export_id = api.created()
    for _ in ("Created", "Processing"):
        answer = api.file(export_id)
        assert answer.status_code == 404 and answer.headers["Content-Type"].startswith("text/plain")
        api.job("enqueue", export_id)
    assert api.file("no-such-job").status_code == 404
    assert error_code(api.job("status", "no-such-job")) == "1003"


@pytest.mark.parametrize(("body", "code"), [
    ({"format": "TSV"}, "1003"),
    ({"fields": ["marketoGUID", "id"]}, "1003"),
    ({"activityTypeIds": [1, 37]}, "1003"),
    ({"activityTypeIds": [1, 424242]}, "1003"),
    ({"activityTypeIds": "1"}, "1003"),
    ({"start": "2026-10-01T00:00:00.000Z"}, "1003"),
    ({"start": "yesterday"}, "1003"),
    ({"start": ""}, "701"),
    ({"end": "2026-11-01T00:00:01Z"}, "1003"),  # 31 days and 1 s
    ({"end": "2026-09-30T00:00:00Z"}, "1003"),
    ({"columnHeaderNames": {"leadId": 7}}, "1003"),
])
def test_create_refuses_invalid_requests(start_sandbox: StartSandbox, body: dict[str, Any], code: str) -> None:
    api = _bulk(start_sandbox)
    assert error_code(api.create(**body)) == code
    assert api.sandbox.bulk_jobs() == []


def test_create_needs_a_filter_with_created_at(api: BulkApi) -> None:
    assert error_code(api.post(f"{EXPORT}/create.json", {"format": "CSV"})) == "701"
    assert error_code(api.post(f"{EXPORT}/create.json", {"filter": {"activityTypeIds": [1]}})) == "701"
    assert error_code(api.post(f"{EXPORT}/create.json", [])) == "1003"


def test_a_31_day_span_is_accepted(api: BulkApi) -> None:
    assert api.create(end="2026-11-01T00:00:00Z")["success"]


def test_two_jobs_process_at_once_and_the_next_starts_when_one_ends(start_sandbox: StartSandbox) -> None:
    api = _bulk(start_sandbox, SLOW)
    ids = [api.created() for _ in range(3)]
    for export_id in ids:
        assert api.job("enqueue", export_id)["success"]
    wait_until(lambda: list(_true_statuses(api.sandbox).values()).count("Processing") == 2)
    assert _true_statuses(api.sandbox) == {ids[0]: "Processing", ids[1]: "Processing", ids[2]: "Queued"}
    assert api.job("cancel", ids[0])["result"][0]["status"] == "Cancelled"
    assert api.wait(ids[2], "Processing")["status"] == "Processing"
    assert _true_statuses(api.sandbox)[ids[1]] == "Processing"


def test_queue_holds_ten_jobs_and_a_job_is_enqueued_once(start_sandbox: StartSandbox) -> None:
    api = _bulk(start_sandbox, SLOW)
    ids = [api.created() for _ in range(11)]
    for export_id in ids[:10]:
        assert api.job("enqueue", export_id)["success"]
    full = api.job("enqueue", ids[10])
    assert error_code(full) == "1029" and full["errors"][0]["message"] == "Too many jobs in queue"
    twice = api.job("enqueue", ids[0])
    assert error_code(twice) == "1029" and twice["errors"][0]["message"] == "Job already queued"
    assert api.job("cancel", ids[9])["success"]
    assert api.job("enqueue", ids[10])["success"]
    assert error_code(api.job("enqueue", ids[9])) == "1003"  # a cancelled job cannot be queued again


def test_cancel_of_an_ended_job_is_refused(api: BulkApi) -> None:
    export_id = api.created()
    api.job("enqueue", export_id)
    api.wait(export_id, "Completed")
    assert error_code(api.job("cancel", export_id)) == "1003"
    assert api.job("status", export_id)["result"][0]["status"] == "Completed"


def test_export_quota_blocks_create_and_enqueue_until_a_new_day(start_sandbox: StartSandbox) -> None:
    api = _bulk(start_sandbox, BulkSpec(queue_s=0, processing_s=0.05, status_interval_s=0.01, daily_export_bytes=1))
    waiting = api.created()
    status, _ = api.export()
    assert api.sandbox.bulk_export_bytes_today() == status["fileSize"]
    for refused in (api.create(), api.job("enqueue", waiting)):
        assert error_code(refused) == "1029" and refused["errors"][0]["message"] == "Export daily quota exceeded"
    api.sandbox.bulk_new_day()
    assert api.sandbox.bulk_export_bytes_today() == 0
    assert api.job("enqueue", waiting)["success"]
    api.wait(waiting, "Completed")
    assert error_code(api.create()) == "1029"
    assert requests.post(f"{api.base_url}/_sandbox/bulk-new-day", timeout=10).status_code == 200
    assert api.create()["success"]


def test_listed_completed_sizes_sum_to_the_export_bytes_of_the_day(api: BulkApi) -> None:
    sizes = [api.export()[0]["fileSize"] for _ in range(2)]
    listed = api.get(f"{EXPORT}.json", status="Completed")["result"]
    assert sorted(job["fileSize"] for job in listed) == sorted(sizes)
    assert sum(sizes) == api.sandbox.bulk_export_bytes_today()


def test_files_expire_after_their_retention_and_on_demand(start_sandbox: StartSandbox) -> None:
    api = _bulk(start_sandbox, BulkSpec(queue_s=0, processing_s=0.05, status_interval_s=0.01,
                                        file_retention_days=2, status_retention_days=3, list_days=2))
    export_id, other = (api.export()[0]["exportId"] for _ in range(2))
    api.sandbox.expire_bulk_file(other)
    assert api.file(other).status_code == 404
    api.sandbox.bulk_new_day()
    assert api.file(export_id).status_code == 200
    assert {job["exportId"] for job in api.get(f"{EXPORT}.json")["result"]} == {export_id, other}
    api.sandbox.bulk_new_day()
    assert api.file(export_id).status_code == 404
    assert api.job("status", export_id)["result"][0]["status"] == "Completed"
    assert api.get(f"{EXPORT}.json")["result"] == []  # created two days ago: past the list's 2 days
    api.sandbox.bulk_new_day()
    assert error_code(api.job("status", export_id)) == "1003"
    assert api.sandbox.bulk_jobs() == []


def test_expire_file_over_admin_http(api: BulkApi) -> None:
    export_id = api.export()[0]["exportId"]
    expired = requests.post(f"{api.base_url}/_sandbox/bulk-expire-file", json={"exportId": export_id}, timeout=10)
    assert expired.status_code == 200
    assert api.file(export_id).status_code == 404
    assert requests.get(f"{api.base_url}/_sandbox/bulk-jobs", timeout=10).json()[0]["fileExpired"] is True
    assert requests.post(f"{api.base_url}/_sandbox/bulk-expire-file", json={"exportId": "x"},
                         timeout=10).status_code == 400


def test_status_changes_show_only_at_status_intervals(start_sandbox: StartSandbox) -> None:
    # An interval longer than the epoch: no stage a job reaches by itself ever shows in status answers.
    api = _bulk(start_sandbox, BulkSpec(queue_s=0, processing_s=0.01, status_interval_s=1e10))
    export_id = api.created()
    api.job("enqueue", export_id)
    wait_until(lambda: _true_statuses(api.sandbox)[export_id] == "Completed")
    shown = api.job("status", export_id)["result"][0]
    assert shown["status"] == "Queued" and "startedAt" not in shown and "fileSize" not in shown
    assert api.get(f"{EXPORT}.json")["result"][0]["status"] == "Queued"


def test_job_list_filters_on_status_and_pages(start_sandbox: StartSandbox) -> None:
    api = _bulk(start_sandbox, SLOW)
    ids = [api.created() for _ in range(5)]
    api.job("enqueue", ids[0])
    api.job("cancel", ids[1])
    listed: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = api.get(f"{EXPORT}.json", batchSize=2, **({"nextPageToken": token} if token else {}))
        assert len(page["result"]) <= 2
        listed += page["result"]
        token = page.get("nextPageToken")
        if token is None:
            break
    assert [job["exportId"] for job in listed] == ids
    created = api.get(f"{EXPORT}.json", status="created")["result"]
    assert [job["exportId"] for job in created] == ids[2:]
    both = api.get(f"{EXPORT}.json", status="cancelled,Queued,processing")["result"]
    assert {job["exportId"] for job in both} == set(ids[:2])
    assert error_code(api.get(f"{EXPORT}.json", status="done")) == "1003"
    assert error_code(api.get(f"{EXPORT}.json", nextPageToken="bad")) == "1003"
    assert error_code(api.get(f"{EXPORT}.json", batchSize=301)) == "1003"


def test_bulk_calls_need_the_bearer_token(api: BulkApi) -> None:
    for method, path in (("POST", f"{EXPORT}/create.json"), ("GET", f"{EXPORT}/x/status.json"),
                         ("GET", f"{EXPORT}/x/file.json"), ("GET", f"{EXPORT}.json")):
        answer = requests.request(method, f"{api.base_url}{path}", json={}, timeout=10).json()
        assert error_code(answer) == "601"


def test_bulk_calls_count_in_the_call_stats_rate_limit_and_daily_quota(start_sandbox: StartSandbox) -> None:
    api = _bulk(start_sandbox, limits=Limits(calls_per_window=None, daily_quota=3))
    export_id = api.created()
    api.job("enqueue", export_id)
    wait_until(lambda: _true_statuses(api.sandbox)[export_id] == "Completed")
    assert api.job("status", export_id)["success"]
    assert error_code(api.file(export_id).json()) == "607"
    calls = api.sandbox.stats()["calls"]
    assert calls == {"identity": 1, "bulk_create": 1, "bulk_enqueue": 1, "bulk_status": 1, "bulk_file": 1}
    assert api.sandbox.stats()["quota_used"] == 3
    rated = _bulk(start_sandbox, limits=Limits(calls_per_window=2, window_s=600))
    assert rated.create()["success"] and rated.get(f"{EXPORT}.json")["success"]
    assert error_code(rated.create()) == "606"


@pytest.mark.parametrize(("kind", "endpoint"), [("606", "bulk_create"), ("615", "bulk_status"),
                                                ("606", "bulk_file")])
def test_injected_errors_on_bulk_calls(start_sandbox: StartSandbox, kind: str, endpoint: str) -> None:
    api = _bulk(start_sandbox, faults=[Fault(kind, probability=1.0, endpoint=endpoint, times=1)])
    if endpoint == "bulk_create":
        assert error_code(api.create()) == kind
    export_id = api.created()
    api.job("enqueue", export_id)
    wait_until(lambda: _true_statuses(api.sandbox)[export_id] == "Completed")
    if endpoint == "bulk_status":
        assert error_code(api.job("status", export_id)) == kind
    status = api.job("status", export_id)["result"][0]
    if endpoint == "bulk_file":
        assert error_code(api.file(export_id).json()) == kind
    file = api.file(export_id).content
    assert "sha256:" + hashlib.sha256(file).hexdigest() == status["fileChecksum"]
    assert api.sandbox.stats()["faults_injected"] == {kind: 1}


def test_a_failed_job_has_no_file(start_sandbox: StartSandbox) -> None:
    api = _bulk(start_sandbox, BulkSpec(queue_s=0, processing_s=0.05, status_interval_s=0.01, fail_jobs=(1,)))
    failed = api.created()
    api.job("enqueue", failed)
    shown = api.wait(failed, "Completed", "Failed")
    assert shown["status"] == "Failed" and "finishedAt" in shown and "fileSize" not in shown
    assert api.file(failed).status_code == 404
    assert api.export()[0]["status"] == "Completed"  # job 2 completes
    assert api.sandbox.bulk_export_bytes_today() == api.sandbox.bulk_jobs()[1]["fileSize"]


def _read_into(response: requests.Response, received: bytearray) -> None:
    for chunk in response.iter_content(1024):
        received += chunk


def test_a_download_cut_short_resumes_with_range(start_sandbox: StartSandbox) -> None:
    api = _bulk(start_sandbox, faults=[Fault("cut", probability=1.0, endpoint="bulk_file", times=1, cut_bytes=5000)])
    export_id = api.created()
    api.job("enqueue", export_id)
    status = api.wait(export_id, "Completed")
    received = bytearray()
    with api.raw("GET", f"{EXPORT}/{export_id}/file.json", stream=True) as cut:
        assert int(cut.headers["Content-Length"]) == status["fileSize"]
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            _read_into(cut, received)
    assert 0 < len(received) < status["fileSize"]
    rest = api.file(export_id, f"bytes={len(received)}-")
    assert rest.status_code == 206
    assert rest.headers["Content-Range"] == f"bytes {len(received)}-{status['fileSize'] - 1}/{status['fileSize']}"
    whole = bytes(received) + rest.content
    assert "sha256:" + hashlib.sha256(whole).hexdigest() == status["fileChecksum"]
    assert api.sandbox.stats()["errors"]["cut"] == 1


def test_range_requests(api: BulkApi) -> None:
    status, file = api.export()
    export_id, size = status["exportId"], status["fileSize"]
    parts = [api.file(export_id, f"bytes={first}-{first + 999}") for first in range(0, size, 1000)]
    assert all(part.status_code == 206 for part in parts)
    assert b"".join(part.content for part in parts) == file
    suffix = api.file(export_id, "bytes=-10")
    assert suffix.status_code == 206 and suffix.content == file[-10:]
    assert suffix.headers["Content-Range"] == f"bytes {size - 10}-{size - 1}/{size}"
    beyond = api.file(export_id, f"bytes={size}-")
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{size}"
    assert api.file(export_id, "lines=1-2").content == file


def test_cli_bulk_created_at() -> None:
    small = ["--leads", "5", "--activities", "50"]
    assert build_sandbox(parse_args(small)).bulk_spec.created_at == "activity_date"
    assert build_sandbox(parse_args([*small, "--bulk-created-at", "recorded"])).bulk_spec.created_at == "recorded"
    with pytest.raises(SystemExit):
        parse_args(["--bulk-created-at", "commit"])
