"""The activities stream's history read through Bulk Activity Extract, against the sandbox.

The source is configured through environment variables only (`SOURCES__MARKETO__BACKFILL=bulk`),
as a scheduled pipeline would be. Each run must load exactly the sandbox's ground truth, whichever
reading of a job's createdAt filter the sandbox plays (Marketo does not document it) and whichever
order its paging tokens keep. Rows from export files carry no `id` (the files have none): the
ground truth is compared without `id` for the activities dated before the hand-over point.
"""

import json
import logging
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Set, Tuple

import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from marketo_source.bulk import journal, reader
from marketo_source.sandbox import BulkSpec, DataSpec, Fault, Limits, MarketoSandbox
from marketo_source.sandbox.paging import TokenOrder
from marketo_source.settings import DEDICATED_STREAM_TYPE_IDS, RUN_REPORTS_TABLE
from marketo_source.state import HistoryClaim

from tests.crash_child import pipeline_for
from tests.destinations import table_rows
from tests.expected import expected_keys, key_differences, table_of, utc
from tests.helpers import (
    assert_activities_match,
    assert_deleted_leads_match,
    assert_every_table_matches,
    assert_lead_changes_match,
    assert_nothing_lost_or_invented,
    loaded_keys,
    recent_start_date,
    source_for,
)
from tests.test_crash_safety import DUCKDB_FILE, Child

HISTORY_DAYS = 212
"""About seven months: seven windows of 31 days."""
FAST_JOBS = dict(queue_s=0.05, processing_s=0.1, status_interval_s=0.05)
POLL_S = "0.05"


@pytest.fixture
def bulk_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """backfill=bulk and a short poll interval, as environment variables."""
    monkeypatch.setenv("SOURCES__MARKETO__BACKFILL", "bulk")
    monkeypatch.setenv("SOURCES__MARKETO__BULK_POLL_INTERVAL_S", POLL_S)
    return monkeypatch


def bulk_sandbox(token_order: TokenOrder = "commit", **bulk: Any) -> MarketoSandbox:
    """Seven months of activities up to now, with jobs that complete in a fraction of a second."""
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=HISTORY_DAYS - 1)
    data = DataSpec(seed=43, leads=60, activities=2500, days=HISTORY_DAYS - 1,
                    start_date=start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return MarketoSandbox(data=data, block_size=300, token_order=token_order, limits=Limits(calls_per_window=None),
                          bulk=BulkSpec(**{**FAST_JOBS, **bulk}))


def source(sandbox: MarketoSandbox, **settings: Any) -> Any:
    return source_for(sandbox, start_date=recent_start_date(days=HISTORY_DAYS), **settings)


def claim_of(pipeline: Any) -> HistoryClaim:
    return HistoryClaim.from_json(pipeline.state["sources"]["marketo"]["resources"]["activities"]["history"]["all"])


def without_bulk_ids(pipeline: Any, truth: Dict[str, Any], until: datetime) -> Dict[str, Any]:
    """The ground truth as the tables hold it: no `id` for the activities read from export files.

    A row without `id` must be one the files could carry (dated before the hand-over point). Which
    rows near the hand-over REST paging read as well (with their `id`) is REST paging's business."""
    names = {t["id"]: t["name"] for t in truth["activity_types"]}
    tables = {table_of(names[r["activityTypeId"]]) for r in truth["activities"]
              if r["activityTypeId"] not in DEDICATED_STREAM_TYPE_IDS}
    from_files = {row["marketo_guid"] for table in tables for row in table_rows(pipeline, table) if row["id"] is None}
    dated = {r["marketoGUID"]: utc(r["activityDate"]) for r in truth["activities"]}
    assert all(dated[guid] < until for guid in from_files if guid in dated), "a row without id after the hand-over"

    def loaded(record: Dict[str, Any]) -> Dict[str, Any]:
        if record["marketoGUID"] not in from_files:
            return record
        return {key: value for key, value in record.items() if key != "id"}
    return {**truth, "activities": [loaded(record) for record in truth["activities"]]}


def assert_exact(pipeline: Any, sandbox: MarketoSandbox) -> None:
    """Every table holds exactly the ground truth's rows, and no other table exists."""
    truth = without_bulk_ids(pipeline, sandbox.ground_truth(), claim_of(pipeline).until)
    differences = key_differences(loaded_keys(pipeline), expected_keys(truth))
    assert not differences, f"tables differ from Marketo: {differences}"
    assert assert_activities_match(pipeline, truth) > 0
    assert_lead_changes_match(pipeline, truth)
    assert_deleted_leads_match(pipeline, truth)


def bulk_rows(pipeline: Any) -> List[Dict[str, Any]]:
    return [row for row in table_rows(pipeline, RUN_REPORTS_TABLE) if row["stream"] == reader.REPORT_STREAM]


def journal_entries(pipeline: Any) -> List[Dict[str, Any]]:
    """The entries of the bulk journal in the pipeline's working folder."""
    path = Path(pipeline.working_dir) / journal.FILE_NAME
    entries: List[Dict[str, Any]] = json.loads(path.read_text())["entries"] if path.exists() else []
    return entries


def jobs_per_window(sandbox: MarketoSandbox) -> Counter[Tuple[int, int]]:
    return Counter(tuple(job["filter"]["createdAt"]) for job in sandbox.bulk_jobs())


def stream_history(truth: Dict[str, Any], until: datetime) -> Tuple[int, int]:
    """Activities of the activities stream dated before `until`, and those dated from it on."""
    records = [r for r in truth["activities"] if r["activityTypeId"] not in DEDICATED_STREAM_TYPE_IDS]
    dates = [utc(r["activityDate"]) for r in records]
    return sum(1 for d in dates if d < until), sum(1 for d in dates if d >= until)


CREATED_AT = ("activity_date", "recorded")
TOKEN_ORDERS: Tuple[TokenOrder, ...] = ("commit", "date")


@pytest.mark.parametrize("created_at", CREATED_AT)
@pytest.mark.parametrize("token_order", TOKEN_ORDERS)
def test_seven_months_read_through_bulk_export_then_rest_paging_goes_on(
    token_order: TokenOrder, created_at: str, bulk_env: Any, make_pipeline: Any
) -> None:
    with bulk_sandbox(token_order, created_at=created_at) as sandbox:
        pipeline = make_pipeline()
        pipeline.run(source(sandbox))
        claim = claim_of(pipeline)
        assert claim.done
        assert claim.until - claim.start > timedelta(days=HISTORY_DAYS - 2)
        assert_exact(pipeline, sandbox)

        per_window = jobs_per_window(sandbox)
        assert len(per_window) == 7 and max(per_window.values()) <= 2, per_window
        assert all(job["status"] == "Completed" for job in sandbox.bulk_jobs())
        # The export files carried what lies before the hand-over; REST paging read only what lies after.
        before, after = stream_history(sandbox.ground_truth(), claim.until)
        [bulk] = bulk_rows(pipeline)
        assert bulk["records"] == before and bulk["bulk_jobs_created"] == len(sandbox.bulk_jobs())
        activities_row = next(r for r in table_rows(pipeline, RUN_REPORTS_TABLE) if r["stream"] == "activities")
        assert activities_row["records"] == before + after
        assert bulk["bulk_bytes"] == sum(job["fileSize"] for job in sandbox.bulk_jobs())
        # Calls are counted per endpoint, not per export.
        calls = pipeline.state["sources"]["marketo"]["last_run_calls"]
        bulk_paths = {path for path in calls if path.startswith("/bulk/")}
        assert calls["/bulk/v1/activities/export/{exportId}/file.json"] == len(sandbox.bulk_jobs())
        assert all("{exportId}" in path or path.endswith(("/create.json", "/export.json")) for path in bulk_paths)

        sandbox.add_activities(new=40, late=40)
        jobs_before = len(sandbox.bulk_jobs())
        pipeline.run(source(sandbox))
        assert_exact(pipeline, sandbox)
        assert len(sandbox.bulk_jobs()) == jobs_before, "a claim once done creates no job"


def wait_until(condition: Callable[[], bool], timeout_s: float = 60) -> None:
    """Polls the sandbox until `condition()` holds; fails the test when it never does."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)


def stream_guids_from(truth: Dict[str, Any], since: datetime) -> Set[str]:
    return {r["marketoGUID"] for r in truth["activities"]
            if r["activityTypeId"] not in DEDICATED_STREAM_TYPE_IDS and utc(r["activityDate"]) >= since}


def loaded_guids(pipeline: Any) -> Set[str]:
    return {key[0] for keys in loaded_keys(pipeline).values() for key in keys if isinstance(key[0], str)}


def test_a_run_that_ends_while_jobs_are_in_flight_leaves_them_to_the_next_run(
    bulk_env: Any, make_pipeline: Any
) -> None:
    with bulk_sandbox(processing_s=3.0) as sandbox:
        pipeline = make_pipeline()
        pipeline.run(source(sandbox, max_seconds_per_run=1))
        claim = claim_of(pipeline)
        assert not claim.done
        in_flight = [job for job in claim.progress["jobs"] if job["stage"] in ("queued", "processing")]
        assert in_flight, claim.progress
        [first] = bulk_rows(pipeline)
        assert first["stopped"] == "budget" and first["bulk_jobs_created"] >= 1

        pipeline.run(source(sandbox))
        assert claim_of(pipeline).done
        assert_exact(pipeline, sandbox)
        second = bulk_rows(pipeline)[-1]
        assert second["bulk_jobs_adopted"] == len(in_flight) and second["stopped"] is None
        # The job of each window delivered: none was exported twice.
        assert max(jobs_per_window(sandbox).values()) == 1 and len(jobs_per_window(sandbox)) == 7


def test_when_the_export_quota_runs_out_the_backfill_goes_on_the_next_day(
    bulk_env: Any, make_pipeline: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A queue of two: the jobs planned wait to be enqueued, and the quota is used up by then.
    with bulk_sandbox(daily_export_bytes=100_000, max_queued=2) as sandbox:
        pipeline = make_pipeline()
        pipeline.run(source(sandbox))  # ends without an error: the REST side is loaded
        claim = claim_of(pipeline)
        assert not claim.done
        assert "Marketo's daily export quota is used up (1029 Export daily quota exceeded)" in caplog.text
        [first] = bulk_rows(pipeline)
        assert first["stopped"] == "quota" and "midnight US Central" in first["warnings"]
        truth = sandbox.ground_truth()
        assert stream_guids_from(truth, claim.until) <= loaded_guids(pipeline), "REST paging went on"
        assert_nothing_lost_or_invented({}, loaded_keys(pipeline), truth)

        days = 0
        while not claim_of(pipeline).done:
            days += 1
            assert days < 10, "the backfill does not progress"
            sandbox.bulk_new_day()
            # The next day, on the reader's clock (Marketo's quota day follows the wall clock).
            monkeypatch.setattr(reader, "_now", lambda ahead=timedelta(days=days): datetime.now(timezone.utc) + ahead)
            pipeline.run(source(sandbox))
        assert days > 1, "the quota was meant to spread the backfill over days"
        assert_exact(pipeline, sandbox)
        assert max(jobs_per_window(sandbox).values()) <= 2


def test_cut_downloads_failed_jobs_and_expired_files_are_survived(bulk_env: Any, make_pipeline: Any) -> None:
    faults = [Fault("cut", probability=1.0, cut_bytes=700, endpoint="bulk_file", times=3)]
    with bulk_sandbox(processing_s=3.0, fail_jobs=(2,)) as sandbox:
        sandbox.set_faults(faults)
        pipeline = make_pipeline()
        pipeline.run(source(sandbox, max_seconds_per_run=1))
        in_flight = {job["export_id"] for job in claim_of(pipeline).progress["jobs"] if "export_id" in job}
        assert in_flight
        # Marketo finishes the jobs between runs; their files are gone by the next run.
        wait_until(lambda: all(job["status"] in ("Completed", "Failed") for job in sandbox.bulk_jobs()))
        for job in sandbox.bulk_jobs():
            if job["exportId"] in in_flight and job["status"] == "Completed":
                sandbox.expire_bulk_file(job["exportId"])

        pipeline.run(source(sandbox))
        assert claim_of(pipeline).done
        assert_exact(pipeline, sandbox)
        jobs = sandbox.bulk_jobs()
        assert any(job["status"] == "Failed" for job in jobs) and any(job["fileExpired"] for job in jobs)
        assert sandbox.stats()["faults_injected"].get("cut") == 3
        assert bulk_rows(pipeline)[-1]["bulk_jobs_recreated"] >= 2


@pytest.mark.parametrize("code", ["606", "615"])
def test_bulk_calls_refused_for_the_rate_or_concurrency_limit_are_retried(
    code: str, bulk_env: Any, make_pipeline: Any
) -> None:
    faults = [Fault(code, probability=1.0, endpoint=endpoint, times=2)
              for endpoint in ("bulk_jobs", "bulk_create", "bulk_enqueue", "bulk_status", "bulk_file")]
    with bulk_sandbox() as sandbox:
        sandbox.set_faults(faults)
        pipeline = make_pipeline()
        pipeline.run(source(sandbox, backoff_base_s=0.01, backoff_max_s=0.02))
        assert sandbox.stats()["errors"][code] == 2 * len(faults)
        assert claim_of(pipeline).done
        assert_exact(pipeline, sandbox)


def test_auto_falls_back_to_rest_paging_when_marketo_refuses_bulk_export(
    bulk_env: Any, make_pipeline: Any, caplog: pytest.LogCaptureFixture
) -> None:
    bulk_env.setenv("SOURCES__MARKETO__BACKFILL", "auto")
    with bulk_sandbox() as sandbox:
        sandbox.set_faults([Fault("603", probability=1.0, endpoint="bulk_jobs")])
        pipeline = make_pipeline()
        pipeline.run(source(sandbox))
        assert "Marketo refused Bulk Activity Extract" in caplog.text
        assert "history" not in pipeline.state["sources"]["marketo"]["resources"]["activities"]
        assert not sandbox.bulk_jobs() and not bulk_rows(pipeline)
        assert not journal_entries(pipeline), "a refused claim is not left to the next run"
        assert_every_table_matches(pipeline, sandbox)


def test_bulk_refused_by_marketo_is_a_configuration_error(bulk_env: Any, make_pipeline: Any) -> None:
    with bulk_sandbox() as sandbox:
        sandbox.set_faults([Fault("603", probability=1.0, endpoint="bulk_jobs")])
        with pytest.raises(PipelineStepFailed, match=r"backfill: Marketo refused Bulk Activity Extract .*603.*; give"):
            make_pipeline().run(source(sandbox))


def test_a_run_killed_while_jobs_are_in_flight_is_followed_by_an_exact_run(tmp_path: Path) -> None:
    """A killed run saves no state in dlt, but its claim and jobs are in the bulk journal: the next
    run adopts the job in flight rather than exporting its window again, and ends exact."""
    with bulk_sandbox(processing_s=3.0) as sandbox:
        start = recent_start_date(days=HISTORY_DAYS)
        settings = {"BACKFILL": "bulk", "BULK_POLL_INTERVAL_S": POLL_S}
        killed = Child(sandbox, start, tmp_path, 1, settings=settings)
        wait_until(lambda: any(job["status"] in ("Queued", "Processing") for job in sandbox.bulk_jobs()))
        assert killed.kill() == "extract"
        in_flight = [job["exportId"] for job in sandbox.bulk_jobs()]
        Child(sandbox, start, tmp_path, 2, settings=settings).finish()
        pipeline = pipeline_for(str(tmp_path / "pipelines"), str(tmp_path / DUCKDB_FILE))
        assert claim_of(pipeline).done
        assert_exact(pipeline, sandbox)
        # Each window was exported once: the killed run's jobs delivered to the next run.
        per_window = jobs_per_window(sandbox)
        assert len(per_window) == 7 and set(per_window.values()) == {1}, per_window
        assert bulk_rows(pipeline)[-1]["bulk_jobs_adopted"] == len(in_flight)
        assert [entry["done"] for entry in journal_entries(pipeline)] == [True]


def test_activities_that_include_delete_lead_stay_with_rest_paging(
    bulk_env: Any, make_pipeline: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Marketo cannot export Delete Lead, and a claim hands every cursor of its scope over."""
    caplog.set_level(logging.INFO, logger="marketo_source")
    with bulk_sandbox() as sandbox:
        pipeline = make_pipeline()
        pipeline.run(source(sandbox, activity_type_ids=[1, 6, 37]))
        assert "bulk export cannot read types [37]" in caplog.text
        assert not sandbox.bulk_jobs() and not bulk_rows(pipeline)
        loaded = {row["marketo_guid"] for row in table_rows(pipeline, "activity_delete_lead")}
        truth = sandbox.ground_truth()["activities"]
        assert loaded == {r["marketoGUID"] for r in truth if r["activityTypeId"] == 37}
