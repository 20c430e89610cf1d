"""Bulk Activity Extract jobs as plain values: the plan, the transitions, the saved progress, the export budget.

Marketo's answers are written as its OpenAPI file renders them (`ExportResponse`: exportId,
status, fileSize, fileChecksum, numberOfRecords, finishedAt, errorMsg).
"""

import json
import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from typing import Any, Dict, List

import pytest

from marketo_source.bulk import plan, quota
from marketo_source.bulk.jobs import Job, Progress, Stage, enqueue_slots
from marketo_source.bulk.plan import Window
from marketo_source.errors import MarketoRequestError
from marketo_source.state import HistoryClaim

UTC = timezone.utc
START = datetime(2026, 6, 1, 8, 30, 15, 250_000, tzinfo=UTC)
HAND_OVER = datetime(2026, 9, 1, 12, 0, 0, 500_000, tzinfo=UTC)
LATE = timedelta(minutes=60)
TYPES = (1, 6, 7, 37)
MB = 1_000_000
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
INTERVAL = timedelta(seconds=60)


def status(export_id: str, state: str, **more: Any) -> Dict[str, Any]:
    return {"exportId": export_id, "status": state, "format": "CSV", **more}


def completed(export_id: str, size: int = 3 * MB, records: int = 300, finished: datetime = NOW) -> Dict[str, Any]:
    return status(export_id, "Completed", fileSize=size, fileChecksum="sha256:" + "ab" * 32,
                  numberOfRecords=records, finishedAt=finished.isoformat())


def begun(type_ids: Any = TYPES) -> Progress:
    return Progress.begin(START, HAND_OVER, LATE, type_ids)


def through(progress: Progress, job: Job, export_id: str, *steps: str) -> Progress:
    """Moves the job of `job`'s window and types on: created as `export_id`, then each step."""
    job = job.created(export_id)
    for step in steps:
        if step == "queued":
            job = job.enqueue_answered(NOW)
        elif step == "completed":
            job = job.observed(completed(export_id), NOW)
        elif step == "downloaded":
            job = job.downloaded()
        elif step == "loaded":
            job = job.loaded()
        progress = progress.with_job(job)
    return progress.with_job(job)


# -- windows and the plan -------------------------------------------------------------------


def test_windows_cover_the_claim_up_to_the_hand_over_point_plus_the_late_window_in_31_days_at_most() -> None:
    windows = plan.windows(START, HAND_OVER, LATE)
    assert windows[0].start == START.replace(microsecond=0)
    assert windows[-1].end == (HAND_OVER + LATE).replace(microsecond=0) + timedelta(seconds=1)
    assert all(earlier.end == later.start for earlier, later in pairwise(windows))
    assert all(timedelta(0) < window.end - window.start <= timedelta(days=31) for window in windows)
    assert len(windows) == 3
    for window in windows:
        created_at = window.created_at_filter()
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value) for value in created_at.values())
    assert windows[0].created_at_filter() == {"startAt": "2026-06-01T08:30:15Z", "endAt": "2026-07-02T08:30:15Z"}


def test_no_window_when_the_claim_is_empty_and_no_late_window_when_late_commits_are_off() -> None:
    whole = HAND_OVER.replace(microsecond=0)
    assert plan.windows(whole, whole - LATE, LATE) == ()
    assert plan.windows(START, START + timedelta(days=2), None) == (
        Window(START.replace(microsecond=0), (START + timedelta(days=2)).replace(microsecond=0) + timedelta(seconds=1)),
    )
    assert Progress.begin(whole, whole - LATE, LATE, TYPES).done


def test_delete_lead_is_never_exported() -> None:
    assert plan.bulk_type_ids([37, 7, 1, 6, 6]) == (1, 6, 7)
    assert begun().type_ids == (1, 6, 7)


def test_unknown_sizes_plan_one_window_with_all_its_types_and_wait_for_its_file() -> None:
    progress = begun().planned_more(400 * MB, 400 * MB)
    assert [(job.window, job.type_ids) for job in progress.jobs] == [(progress.windows[0], (1, 6, 7))]
    assert progress.planned_more(400 * MB, 400 * MB) == progress
    # Its file completed and downloaded: still nothing more until its rows tell each type's size.
    progress = through(progress, progress.jobs[0], "e1", "queued", "completed", "downloaded")
    assert progress.planned_more(400 * MB, 400 * MB) == progress
    job = progress.job("e1")
    progress = progress.learned(job, {1: 100, 6: 200}).with_job(job.loaded())
    # Type 7 had no rows: it is estimated as the largest type seen, 6.
    assert progress.committed == 1 and set(progress.rates) == {1, 6}
    assert plan.estimate(progress.windows[1], (1, 6, 7), progress.rates) == plan.estimate(
        progress.windows[1], (1, 6, 6), progress.rates)
    planned = progress.planned_more(400 * MB, 400 * MB)
    assert [(job.window, job.type_ids) for job in planned.jobs] == [(w, (1, 6, 7)) for w in progress.windows[1:]]


def test_known_sizes_that_fit_plan_one_job_per_window_with_every_type() -> None:
    progress = Progress(begun().windows, (1, 6, 7), rates={1: 1_000.0, 6: 2_000.0, 7: 3_000.0})
    planned = progress.planned_more(400 * MB, 400 * MB)
    assert [(job.window, job.type_ids, job.stage) for job in planned.jobs] == [
        (window, (1, 6, 7), Stage.PLANNED) for window in planned.windows
    ]


def test_a_window_that_does_not_fit_the_budget_gets_a_job_for_the_types_that_fit_and_the_rest_waits() -> None:
    windows = begun().windows
    rates = {1: 5 * MB, 6: 1 * MB, 7: 2 * MB}  # a 31-day window: 155 MB, 31 MB, 62 MB
    progress = Progress(windows, (1, 6, 7), rates=rates).planned_more(100 * MB, 400 * MB)
    assert [(job.window, job.type_ids) for job in progress.jobs] == [(windows[0], (6, 7))]
    # The next day: the window's last type first (155 MB), then of the next window what fits.
    loaded = through(progress, progress.jobs[0], "e1", "queued", "completed", "downloaded", "loaded")
    next_day = loaded.planned_more(400 * MB, 400 * MB)
    assert [(job.window, job.type_ids) for job in next_day.jobs if job.stage is Stage.PLANNED] == [
        (windows[0], (1,)), (windows[1], (1, 6)),
    ]


def test_the_budget_promised_to_jobs_not_completed_is_not_planned_twice() -> None:
    windows = begun().windows
    rates = {1: 1 * MB, 6: 1 * MB, 7: 1 * MB}  # 93 MB per 31-day window
    first = Progress(windows, (1, 6, 7), rates=rates).planned_more(100 * MB, 400 * MB)
    assert len(first.jobs) == 1
    assert first.planned_more(100 * MB, 400 * MB) == first
    assert len(first.planned_more(200 * MB, 400 * MB).jobs) == 2


def test_a_type_larger_than_a_whole_day_is_planned_alone_on_a_day_nothing_else_took() -> None:
    windows = begun().windows
    progress = Progress(windows, (1, 6), rates={1: 20 * MB, 6: 1 * MB})  # type 1: 620 MB per window
    assert [job.type_ids for job in progress.planned_more(400 * MB, 400 * MB).jobs] == [(6,)]
    only_6_left = progress.planned_more(400 * MB, 400 * MB)
    assert only_6_left.planned_more(400 * MB, 400 * MB) == only_6_left
    alone = Progress(windows, (1,), rates={1: 20 * MB})
    assert [job.type_ids for job in alone.planned_more(400 * MB, 400 * MB).jobs] == [(1,)]
    assert alone.planned_more(399 * MB, 400 * MB).jobs == ()


def test_rates_are_learned_from_a_files_bytes_shared_by_its_rows() -> None:
    window = Window(START, START + timedelta(days=10))
    job = Job(window, (1, 6, 7), "e1", Stage.LOADED, file_size=10 * MB, records=1_000)
    learned = Progress(rates={12: 5.0}).learned(job, {1: 600, 6: 400})
    # Type 7 had no rows in this window: it stays unknown (estimated as the largest type seen).
    assert learned.rates == {12: 5.0, 1: 600_000.0, 6: 400_000.0}
    assert Progress().learned(Job(window, (1,), "e2", file_size=0, records=0), {}).rates == {}
    assert learned.learned(job, {1: 300, 6: 700}).rates[1] == 600_000.0  # a rate only grows


# -- transitions ----------------------------------------------------------------------------


def test_a_job_goes_from_planned_to_loaded_and_commits_its_window() -> None:
    progress = begun().planned_more(400 * MB, 400 * MB)
    job = progress.to_create(enqueue_slots([]))[0]
    job = job.created("e1")
    assert (job.stage, job.export_id, job.attempts) == (Stage.CREATED, "e1", 1)
    job = job.enqueue_answered(NOW)
    assert job.stage is Stage.QUEUED
    job = job.observed(status("e1", "Processing"), NOW)
    assert (job.stage, job.polled_at) == (Stage.PROCESSING, NOW)
    job = job.observed(completed("e1", size=123_456, records=789), NOW)
    assert (job.stage, job.file_size, job.records, job.file_checksum) == (
        Stage.COMPLETED, 123_456, 789, "sha256:" + "ab" * 32
    )
    progress = progress.with_job(job.downloaded())
    assert progress.committed == 0 and progress.job("e1").stage is Stage.DOWNLOADED
    progress = progress.with_job(progress.job("e1").loaded())
    assert (progress.committed, progress.committed_until, progress.jobs) == (1, progress.windows[0].end, ())
    assert not progress.done


def test_windows_commit_in_order_and_what_was_loaded_stays_loaded() -> None:
    windows = begun().windows
    progress = Progress(windows, (1, 6, 7), rates={1: 1.0, 6: 1.0, 7: 1.0}).planned_more(400 * MB, 400 * MB)
    first, second, third = progress.jobs
    progress = through(progress, second, "e2", "queued", "completed", "downloaded", "loaded")
    assert (progress.committed, progress.job("e2").stage) == (0, Stage.LOADED)
    progress = through(progress, first, "e1", "queued", "completed", "downloaded", "loaded")
    assert (progress.committed, [job.window for job in progress.jobs]) == (2, [third.window])
    progress = through(progress, third, "e3", "queued", "completed", "downloaded", "loaded")
    assert progress.done and progress.committed_until == windows[-1].end


def test_a_failed_job_is_planned_again_as_a_new_export_and_the_windows_other_job_stays_loaded() -> None:
    windows = begun().windows
    progress = Progress(windows, (1, 6, 7), rates={1: 5 * MB, 6: 1 * MB, 7: 2 * MB})
    progress = progress.planned_more(100 * MB, 400 * MB).planned_more(400 * MB, 400 * MB)
    assert [job.type_ids for job in progress.jobs if job.window == windows[0]] == [(6, 7), (1,)]
    progress = through(progress, progress.jobs[0], "e1", "queued", "completed", "downloaded", "loaded")
    progress = through(progress, progress.jobs[1], "e2", "queued")
    failed = progress.job("e2").observed(status("e2", "Failed", errorMsg="internal error"), NOW)
    assert failed.stage is Stage.FAILED
    progress = progress.with_job(failed)
    again = next(job for job in progress.jobs if job.type_ids == (1,) and job.window == windows[0])
    assert (again.stage, again.export_id, again.attempts) == (Stage.PLANNED, None, 1)
    assert again.error is not None and "internal error" in again.error
    assert progress.job("e1").stage is Stage.LOADED and progress.committed == 0
    progress = through(progress, again, "e3", "queued", "completed", "downloaded", "loaded")
    assert progress.committed == 1
    assert progress.windows[0] not in {job.window for job in progress.jobs}


@pytest.mark.parametrize("state", ["Canceled", "Cancelled"])
def test_a_canceled_job_is_planned_again(state: str) -> None:
    progress = begun().planned_more(400 * MB, 400 * MB)
    progress = through(progress, progress.jobs[0], "e1", "queued")
    progress = progress.with_job(progress.job("e1").observed(status("e1", state), NOW))
    assert [(job.stage, job.export_id) for job in progress.jobs] == [(Stage.PLANNED, None)]


def test_a_file_gone_from_marketo_plans_its_job_again() -> None:
    progress = begun().planned_more(400 * MB, 400 * MB)
    progress = through(progress, progress.jobs[0], "e1", "queued", "completed")
    progress = progress.lost("e1")
    assert [(job.stage, job.export_id, job.attempts) for job in progress.jobs] == [(Stage.PLANNED, None, 1)]
    assert progress.jobs[0].error == "Marketo no longer holds the export or its file"


def test_enqueue_answers() -> None:
    job = Job(Window(START, HAND_OVER), (1,)).created("e1")
    assert job.enqueue_answered(NOW, "1029", "Too many jobs in queue") == job
    assert job.enqueue_answered(NOW, "1029", "Job already queued").stage is Stage.QUEUED
    assert job.enqueue_answered(NOW, "1029", "Export daily quota exceeded") == job
    assert quota.is_quota_refusal("1029", "Export daily quota exceeded")
    assert not quota.is_quota_refusal("1029", "Too many jobs in queue")
    with pytest.raises(MarketoRequestError, match="1003"):
        job.enqueue_answered(NOW, "1003", "Invalid export id")


def test_the_queue_takes_what_the_job_list_leaves_and_jobs_are_created_only_to_be_enqueued() -> None:
    listed = [status(f"x{n}", "Queued") for n in range(6)] + [
        status("p1", "Processing"), status("p2", "Processing"), completed("c1"), status("f1", "Failed"),
    ]
    assert enqueue_slots(listed) == 2
    assert enqueue_slots([status(f"x{n}", "Queued") for n in range(12)]) == 0
    rates = {1: 1.0, 6: 1.0, 7: 1.0}
    progress = Progress(begun().windows, (1, 6, 7), rates=rates).planned_more(400 * MB, 400 * MB)
    assert progress.to_create(2) == list(progress.jobs[:2])
    progress = progress.with_job(progress.jobs[0].created("e1"))
    assert progress.to_create(2) == [progress.jobs[1]]
    assert progress.to_enqueue(2) == [progress.job("e1")]
    assert progress.to_create(1) == []


def test_a_job_is_polled_at_most_once_per_interval_and_the_reader_learns_when_to_poll_next() -> None:
    progress = Progress(begun().windows, (1,), rates={1: 1.0}).planned_more(400 * MB, 400 * MB)
    progress = through(progress, progress.jobs[0], "e1", "queued")  # enqueued at NOW
    progress = progress.with_job(progress.jobs[1].created("e2").enqueue_answered(NOW + timedelta(seconds=20)))
    assert progress.due(NOW + timedelta(seconds=59), INTERVAL) == []
    assert progress.next_poll_at(INTERVAL) == NOW + INTERVAL
    assert [job.export_id for job in progress.due(NOW + INTERVAL, INTERVAL)] == ["e1"]
    progress = progress.with_job(progress.job("e1").observed(status("e1", "Processing"), NOW + INTERVAL))
    assert progress.next_poll_at(INTERVAL) == NOW + timedelta(seconds=80)
    progress = progress.with_job(progress.job("e2").observed(completed("e2"), NOW + timedelta(seconds=80)))
    assert progress.next_poll_at(INTERVAL) == NOW + 2 * INTERVAL
    # A queued job whose status this run has not read yet (adopted from an earlier run) is due at once.
    never_polled = Progress(jobs=(Job(Window(START, HAND_OVER), (1,), "e9", Stage.QUEUED),))
    assert never_polled.due(NOW, INTERVAL) == list(never_polled.jobs)
    assert Progress().next_poll_at(INTERVAL) is None


def test_a_run_adopts_the_jobs_an_earlier_run_left_at_marketo() -> None:
    progress = Progress(begun().windows, (1,), rates={1: 1.0}).planned_more(400 * MB, 400 * MB)
    progress = through(progress, progress.jobs[0], "e1", "queued")
    progress = through(progress, progress.jobs[1], "e2", "queued")
    progress = through(progress, progress.jobs[2], "e3")
    saved = json.loads(json.dumps(progress.to_json()))
    listed = [completed("e1", size=42, records=7), status("e3", "Failed", errorMsg="boom"), status("other", "Queued")]
    adopted = Progress.from_json(saved).adopted(listed, NOW)
    assert (adopted.job("e1").stage, adopted.job("e1").file_size) == (Stage.COMPLETED, 42)
    assert adopted.job("e2").stage is Stage.QUEUED
    assert [(job.stage, job.export_id, job.attempts) for job in adopted.jobs[2:]] == [(Stage.PLANNED, None, 1)]
    assert adopted.unlisted(listed) == ["e2"]
    # Marketo's status says it no longer holds e2: it is exported again.
    assert adopted.lost("e2").jobs[1].stage is Stage.PLANNED


# -- saved progress -------------------------------------------------------------------------


def test_progress_round_trips_through_the_claims_saved_mapping() -> None:
    progress = Progress(begun().windows, (1, 6), rates={1: 10.5, 6: 0.0}).planned_more(400 * MB, 400 * MB)
    progress = through(progress, progress.jobs[0], "e1", "queued", "completed")
    progress = progress.with_job(progress.job("e1").observed(completed("e1"), NOW))
    progress = progress.paused(quota.quota_exceeded(NOW))
    progress = progress.with_job(progress.jobs[1].created("e2").enqueue_answered(NOW))
    claim = HistoryClaim("bulk", START, HAND_OVER, progress=progress.to_json())
    saved = json.loads(json.dumps(claim.to_json()))
    assert Progress.from_json(HistoryClaim.from_json(saved).progress) == progress


def test_progress_from_a_mapping_missing_keys() -> None:
    assert Progress.from_json({}) == Progress()
    assert Progress.from_json({}).done
    window = Window(START.replace(microsecond=0), HAND_OVER.replace(microsecond=0))
    partial = Progress.from_json({"windows": [window.to_json()], "jobs": [{"window": window.to_json()}]})
    assert partial == Progress((window,), jobs=(Job(window, ()),))


# -- the export budget ----------------------------------------------------------------------


def test_todays_spend_counts_completed_files_since_midnight_us_central() -> None:
    midnight_central = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)  # CST, UTC-6
    listed: List[Dict[str, Any]] = [
        completed("a", size=5 * MB, finished=midnight_central),
        completed("b", size=7 * MB, finished=midnight_central - timedelta(seconds=1)),
        completed("c", size=11 * MB, finished=NOW),
        status("d", "Failed", finishedAt=NOW.isoformat()),
        status("e", "Processing"),
    ]
    assert quota.marketo_day_began(NOW) == midnight_central
    assert quota.spent_today(listed, NOW) == 16 * MB
    assert quota.remaining(400, quota.spent_today(listed, NOW)) == 384 * MB
    assert quota.remaining(10, 16 * MB) == 0


def test_the_export_day_resets_at_midnight_us_central_daylight_saving_included() -> None:
    assert quota.next_reset(NOW) == datetime(2026, 12, 6, 6, 0, tzinfo=UTC)
    assert quota.next_reset(datetime(2026, 7, 1, 4, 59, tzinfo=UTC)) == datetime(2026, 7, 1, 5, 0, tzinfo=UTC)
    # 8 March 2026 starts daylight saving time in the US: the day has 23 hours.
    assert quota.next_reset(datetime(2026, 3, 8, 12, 0, tzinfo=UTC)) == datetime(2026, 3, 9, 5, 0, tzinfo=UTC)


def test_a_used_up_quota_stops_the_bulk_side_until_the_reset_with_a_message_naming_it() -> None:
    pause = quota.quota_exceeded(NOW)
    assert pause.message == (
        "Marketo's daily export quota is used up (1029 Export daily quota exceeded): bulk exports wait until it "
        "resets at midnight US Central (2026-12-06 06:00 UTC); REST paging goes on"
    )
    progress = begun().paused(pause)
    assert not progress.may_export(NOW) and progress.may_export(pause.resumes_at)
    own = quota.limit_reached(400, 401 * MB, NOW)
    assert own.resumes_at == pause.resumes_at
    assert own.message.startswith("bulk_daily_mb_limit (400 MB) reached: export files took 401.0 MB today;")


def test_a_1029_that_names_the_quota_or_a_full_queue_leaves_the_job_to_enqueue_later() -> None:
    job = Job(Window(START, START + timedelta(days=1)), (1,), "e1", Stage.CREATED)
    for message in ("Export daily quota 500MB exceeded.", "Export daily quota exceeded", "Too many jobs in queue"):
        assert job.enqueue_answered(NOW, "1029", message) == job
    assert quota.is_quota_refusal("1029", "Export daily quota 500MB exceeded.")
    assert not quota.is_quota_refusal("1029", "Too many jobs in queue")
    assert job.enqueue_answered(NOW, "1029", "Job already queued").stage is Stage.QUEUED


def test_a_status_marketo_does_not_document_is_read_again_at_the_next_poll() -> None:
    job = Job(Window(START, START + timedelta(days=1)), (1,), "e1", Stage.QUEUED)
    assert job.observed({"status": "Archived"}, NOW) == replace(job, polled_at=NOW)
