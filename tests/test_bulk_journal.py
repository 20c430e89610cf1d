"""The bulk journal as plain values and files: what it records, what it finds, and how its jobs
merge into the progress from dlt's state. No server: the journal makes no call."""

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from marketo_source.bulk.jobs import Job, Progress, Stage
from marketo_source.bulk.journal import FILE_NAME, KEPT_AFTER_DONE, ClaimKey, Journal, merged

from tests.test_bulk_jobs import HAND_OVER, NOW, START, TYPES, begun, through

KEY = ClaimKey("activities", "all", START, "http://127.0.0.1:9")
BULK_TYPES = (1, 6, 7)


def planned() -> Progress:
    """A claim's progress with one planned job per window."""
    progress = begun()
    return replace(progress, jobs=tuple(Job(window, BULK_TYPES) for window in progress.windows))


def test_a_recorded_claim_is_found_with_its_hand_over_point_and_jobs(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    progress = through(planned(), planned().jobs[0], "e1", "queued")
    journal.record(KEY, HAND_OVER, progress, NOW)
    entry = Journal(tmp_path).find(KEY)
    assert entry is not None and entry.until == HAND_OVER and not entry.done
    assert entry.progress == progress
    # Another start, scope or instance is another claim.
    for other in (replace(KEY, start=START + timedelta(seconds=1)), replace(KEY, scope="list:1"),
                  replace(KEY, base_url="http://127.0.0.1:10")):
        assert Journal(tmp_path).find(other) is None
    # Written whole, with nothing but the entry: no temporary file is left beside it.
    assert [path.name for path in tmp_path.iterdir()] == [FILE_NAME]


def test_the_jobs_of_windows_committed_since_stay_in_the_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    first = planned().jobs[0]
    journal.record(KEY, HAND_OVER, through(planned(), first, "e1", "queued"), NOW)
    loaded = through(planned(), first, "e1", "queued", "completed", "downloaded", "loaded")
    assert loaded.committed == 1 and all(job.export_id != "e1" for job in loaded.jobs)
    journal.record(KEY, HAND_OVER, loaded, NOW)
    entry = journal.find(KEY)
    assert entry is not None
    # As last seen: a kill before dlt committed the window leaves it to the next run to load again.
    assert entry.progress.job("e1").stage is Stage.QUEUED and entry.progress.committed == 1
    assert merged(planned(), entry.progress).job("e1") == entry.progress.job("e1")


def test_without_a_folder_the_journal_records_and_finds_nothing(tmp_path: Path) -> None:
    journal = Journal(None)
    journal.record(KEY, HAND_OVER, planned(), NOW)
    assert journal.find(KEY) is None


def test_an_unreadable_journal_finds_nothing_and_is_written_anew(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / FILE_NAME).write_text('{"entries": [')
    journal = Journal(tmp_path)
    assert journal.find(KEY) is None
    assert "is unreadable" in caplog.text
    journal.record(KEY, HAND_OVER, planned(), NOW)
    assert journal.find(KEY) is not None


def test_a_done_claim_is_dropped_once_its_files_are_gone(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    done = replace(planned(), committed=len(planned().windows), jobs=())
    journal.record(KEY, HAND_OVER, done, NOW)
    other = replace(KEY, scope="list:1")
    journal.record(other, HAND_OVER, planned(), NOW + KEPT_AFTER_DONE)
    assert journal.find(KEY) is not None, "kept while its files may be at Marketo"
    journal.record(other, HAND_OVER, planned(), NOW + KEPT_AFTER_DONE + timedelta(seconds=1))
    assert journal.find(KEY) is None and journal.find(other) is not None
    assert len(json.loads((tmp_path / FILE_NAME).read_text())["entries"]) == 1


def test_jobs_dlt_state_does_not_know_are_taken_from_the_journal() -> None:
    journaled = through(planned(), planned().jobs[0], "e1", "queued")
    journaled = through(journaled, journaled.jobs[1], "e2")
    assert merged(planned(), journaled) == replace(planned(), jobs=journaled.jobs)
    # A claim dlt never saved (the killed run's): its progress is begun again without jobs.
    assert merged(begun(), journaled).jobs == tuple(job for job in journaled.jobs if job.export_id)


def test_a_job_the_journal_saw_loaded_is_taken_as_completed_since_its_rows_may_not_be_loaded() -> None:
    journaled = through(planned(), planned().jobs[1], "e2", "queued", "completed", "downloaded", "loaded")
    job = merged(planned(), journaled).job("e2")
    assert job.stage is Stage.COMPLETED and job.file_size is not None and job.file_checksum is not None


def test_dlt_state_wins_for_the_exports_it_knows_and_for_the_windows_it_committed() -> None:
    first = planned().jobs[0]
    recorded = through(planned(), first, "e1", "queued", "completed")
    assert merged(recorded, through(planned(), first, "e1", "queued")) == recorded
    committed = through(planned(), first, "e1", "queued", "completed", "downloaded", "loaded")
    assert merged(committed, through(planned(), first, "e1", "queued")) == committed


def test_an_export_created_after_dlt_state_was_saved_replaces_the_one_it_knows() -> None:
    first = planned().jobs[0]
    failed = through(planned(), first, "e1", "queued")
    failed = failed.with_job(failed.job("e1").observed({"exportId": "e1", "status": "Failed"}, NOW))
    assert failed.jobs[0].export_id is None and failed.jobs[0].attempts == 1
    again = through(failed, failed.jobs[0], "e9", "queued")
    assert merged(failed, again).jobs[0] == again.job("e9")


def test_a_journal_of_another_plan_or_with_overlapping_types_is_not_used() -> None:
    journaled = through(planned(), planned().jobs[0], "e1", "queued")
    other_types = Progress.begin(START, HAND_OVER, None, TYPES)
    assert merged(other_types, journaled) == other_types
    split = replace(planned(), jobs=(Job(planned().windows[0], (1,)), *planned().jobs[1:]))
    assert merged(split, journaled) == split


def test_a_forgotten_claim_is_not_found_and_the_others_stay(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    other = replace(KEY, scope="list:1")
    journal.record(KEY, HAND_OVER, planned(), NOW)
    journal.record(other, HAND_OVER, planned(), NOW)
    journal.forget(KEY)
    assert journal.find(KEY) is None and journal.find(other) is not None


def test_a_journal_that_cannot_be_written_warns_and_the_run_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / FILE_NAME).mkdir()  # a folder where the file should be: the rename fails
    Journal(tmp_path).record(KEY, HAND_OVER, planned(), NOW)
    assert "cannot be written" in caplog.text
    assert [path.name for path in tmp_path.iterdir()] == [FILE_NAME]
