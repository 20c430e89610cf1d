"""The run report (`marketo_run_reports`), progress counters and the daily call limit, checked
against what the sandbox holds and counted."""

import io
import logging
import re
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import dlt
import pytest
import requests
from dlt.common.runtime.collector_base import Collector

from marketo_source import MarketoConfigurationError
from marketo_source.client import CallLimiter
from marketo_source.run_report import RateLimitNotices
from marketo_source.sandbox import MarketoSandbox
from marketo_source.settings import DEDICATED_STREAM_TYPE_IDS, RUN_REPORTS_TABLE

from tests.expected import records_of_types, table_of, utc
from tests.helpers import assert_everything_matches, source_for, table_names, table_rows

PAGED_STREAMS = {"activities": "activities", "lead_changes": "lead_changes", "deleted_leads": "deleted_leads"}
"""Stream -> the sandbox's name for its endpoint in stats()["calls"]."""


def expected_rows(truth: Dict[str, Any]) -> Dict[str, int]:
    return {
        "activities": len(records_of_types(truth["activities"], _other_type_ids(truth))),
        "lead_changes": len(truth["lead_changes"]),
        "deleted_leads": len(truth["deleted_leads"]),
    }


def reports_by_load(pipeline: dlt.Pipeline) -> List[Dict[str, Dict[str, Any]]]:
    """The report rows of each load, oldest first, by stream."""
    loads: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for row in table_rows(pipeline, RUN_REPORTS_TABLE):
        loads.setdefault(row["_dlt_load_id"], {})[row["stream"]] = row
    return [loads[load_id] for load_id in sorted(loads)]


def newest_date(records: List[Dict[str, Any]]) -> datetime:
    return max(utc(r["activityDate"]) for r in records)


def test_each_run_reports_what_each_stream_loaded_and_spent(sandbox: MarketoSandbox, make_pipeline: Any) -> None:
    pipeline = make_pipeline()
    pipeline.run(source_for(sandbox))
    first_calls = sandbox.stats()["calls"]
    truth = sandbox.ground_truth()
    sandbox.add_activities(new=120)
    sandbox.reset_stats()
    pipeline.run(source_for(sandbox))
    second_calls = sandbox.stats()["calls"]
    assert_everything_matches(pipeline, sandbox)

    first, second = reports_by_load(pipeline)
    assert set(first) == set(second) == {*PAGED_STREAMS, "activity_types", "custom_activity_types"}
    added = {stream: n - expected_rows(truth)[stream] for stream, n in expected_rows(sandbox.ground_truth()).items()}
    for stream, endpoint in PAGED_STREAMS.items():
        assert first[stream]["rows_loaded"] == expected_rows(truth)[stream], stream
        # What the second run read again for late commits is counted apart from what is new.
        assert second[stream]["rows_loaded"] - second[stream]["rows_reread"] == added[stream], stream
        assert 0 < second[stream]["reread_calls"] <= second[stream]["calls"], stream
        assert first[stream]["reread_calls"] == first[stream]["rows_reread"] == 0, stream
        assert first[stream]["calls"] == first_calls[endpoint], stream
        assert second[stream]["calls"] == second_calls[endpoint], stream
        assert first[stream]["pages"] == first[stream]["calls"]  # no retries without faults
        assert first[stream]["stopped"] is None
        # A first run cannot have missed what a more frequent schedule would have read.
        assert first[stream]["warnings"] is None, stream
        # The second run starts where the first one ended, and ends past everything Marketo holds.
        assert second[stream]["position_from"] == first[stream]["position_to"], stream
    assert "marketo_retention_gaps" not in table_names(pipeline)
    assert first["activities"]["position_from"] == utc("2026-10-01T00:00:00Z")
    assert second["activities"]["position_to"] >= newest_date(sandbox.ground_truth()["activities"])
    assert second["activities"]["newest_activity_at"] == newest_date(
        records_of_types(sandbox.ground_truth()["activities"], _other_type_ids(truth))
    )
    state = pipeline.state["sources"]["marketo"]["resources"]["activities"]["last_run"]
    assert state["rows_loaded"] == second["activities"]["rows_loaded"]


def _other_type_ids(truth: Dict[str, Any]) -> List[int]:
    return [t["id"] for t in truth["activity_types"] if t["id"] not in DEDICATED_STREAM_TYPE_IDS]


def test_a_stop_and_set_aside_rows_are_reported_as_warnings(sandbox: MarketoSandbox, make_pipeline: Any) -> None:
    pipeline = make_pipeline()
    pipeline.run(source_for(sandbox, max_pages_per_run=3, max_concurrency=1))
    (report,) = reports_by_load(pipeline)
    stopped = [stream for stream in PAGED_STREAMS if report[stream]["stopped"]]
    assert stopped, "three pages cannot read the whole sandbox"
    for stream in stopped:
        assert report[stream]["stopped"] == "budget"
        assert "max_pages_per_run (3) reached" in report[stream]["warnings"]
    assert sum(report[stream]["pages"] for stream in PAGED_STREAMS) == 3
    # Where it stopped, it is complete only up to the position it reached.
    loaded_until = max(r["activity_date"] for r in table_rows(pipeline, "activity_visit_webpage"))
    assert report["activities"]["position_to"] <= loaded_until


def test_progress_shows_pages_records_and_calls(sandbox: MarketoSandbox, tmp_path: Any) -> None:
    shown = io.StringIO()
    pipeline = dlt.pipeline(
        pipeline_name="progress",
        pipelines_dir=str(tmp_path),
        destination=dlt.destinations.duckdb(str(tmp_path / "progress.duckdb")),
        dataset_name="marketo",
        # dlt documents dlt.progress.log, which its module imports under that name without re-exporting it.
        progress=dlt.progress.log(log_period=3600, logger=shown, dump_system_stats=False),  # type: ignore[attr-defined]
    )
    pipeline.run(source_for(sandbox, daily_call_limit=40_000))
    (report,) = reports_by_load(pipeline)
    text = shown.getvalue()  # the collector prints every counter when the extract step ends
    for stream in PAGED_STREAMS:
        assert f"Marketo pages ({stream}): {report[stream]['pages']} " in text
        assert f"Marketo records ({stream}): {report[stream]['records']} " in text
    calls = sum(pipeline.state["sources"]["marketo"]["last_run_calls"].values())
    calls_counter = re.search(r"Marketo API calls: (\d+) .*\[([\d,]+) calls left in the budget\]", text)
    assert calls_counter, "no API calls counter in the progress log"
    shown_calls, left = calls_counter.groups()
    assert int(shown_calls) == calls  # the last page was the last call
    assert int(left.replace(",", "")) == 40_000 - sandbox.stats()["quota_used"]


class RecordingCollector(Collector):
    """A progress display that keeps what each step showed: every counter as it ended, by its name
    (and label, as dlt's displays write it), and each counter's last message."""

    def __init__(self) -> None:
        self.shown: Dict[str, Dict[str, int]] = {}
        self.messages: Dict[str, str] = {}

    def update(self, name: str, inc: int = 1, total: Optional[int] = None, inc_total: Optional[int] = None,
               message: Optional[str] = None, label: Optional[str] = None) -> None:
        counters = self.shown[self.step]
        key = f"{name} ({label})" if label else name
        counters[key] = counters.get(key, 0) + inc
        if message is not None:
            self.messages[key] = message

    def _start(self, step: str) -> None:
        self.shown.setdefault(step, {})

    def _stop(self) -> None:
        pass


def test_dlt_counts_the_rows_of_each_table_as_the_source_counts_its_records(
    sandbox: MarketoSandbox, tmp_path: Any
) -> None:
    collector = RecordingCollector()
    pipeline = dlt.pipeline(
        pipeline_name="counted", pipelines_dir=str(tmp_path), dataset_name="marketo", progress=collector,
        destination=dlt.destinations.duckdb(str(tmp_path / "counted.duckdb")),
    )
    pipeline.run(source_for(sandbox))
    assert_everything_matches(pipeline, sandbox)
    truth = sandbox.ground_truth()
    shown = collector.shown["Extract marketo"]

    # dlt counts rows per table, not per resource: no counter named after a stream (or the run
    # reports) that stands at 0 while the stream's own tables fill.
    assert [name for name, count in shown.items() if count == 0] == []
    for table in table_names(pipeline):
        assert shown[table] == len(table_rows(pipeline, table)), table
    activity_tables = {table_of(t["name"]) for t in truth["activity_types"] if t["id"] not in DEDICATED_STREAM_TYPE_IDS}
    from_dlt = sum(shown.get(table, 0) for table in activity_tables)
    assert from_dlt == shown["Marketo records (activities)"] == expected_rows(truth)["activities"]
    assert shown["lead_changes"] == shown["Marketo records (lead_changes)"] == len(truth["lead_changes"])
    assert shown["deleted_leads"] == shown["Marketo records (deleted_leads)"] == len(truth["deleted_leads"])


def test_a_wait_for_the_rate_limit_is_told_to_the_notices() -> None:
    told: List[Tuple[float, int, float]] = []

    class Recorder:
        def waiting(self, seconds: float, calls: int, period_s: float) -> None:
            told.append((seconds, calls, period_s))

    limiter = CallLimiter(2, 0.5, 3, waits=Recorder())
    with limiter.slot(), limiter.slot():
        pass

    def third_call() -> None:
        with limiter.slot():
            pass

    third = threading.Thread(target=third_call)
    third.start()
    third.join()
    assert told, "the third call in a window of two waited without a word"
    assert all(0 < seconds <= 0.5 and (calls, period_s) == (2, 0.5) for seconds, calls, period_s in told)


def test_long_waits_are_logged_once_per_window_and_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="marketo_source")
    now = [100.0]
    notices = RateLimitNotices(notice_s=5, every_s=60, clock=lambda: now[0])
    notices.waiting(4.9, 100, 20)  # short: neither logged nor counted
    assert notices.summary() is None
    for _ in range(5):  # five calls wait for the same window
        notices.waiting(14.2, 100, 20)
    now[0] += 15  # the window freed; the next wait is another
    notices.waiting(6, 100, 20)
    now[0] += 61
    notices.waiting(10, 100, 20)
    assert [r.getMessage() for r in caplog.records] == [
        "waiting 14 s for the rate limit (100 calls per 20 s)",
        "waiting 10 s for the rate limit (100 calls per 20 s); 1 more such wait(s) since the last line",
    ]
    assert notices.summary() == "rate limit waits: 3 (30 s)"


def test_daily_call_limit_leaves_the_rest_of_the_quota_to_other_integrations(
    sandbox: MarketoSandbox, make_pipeline: Any
) -> None:
    others = _another_integration_spends(sandbox, calls=25)
    limit = others + 12
    pipeline = make_pipeline()
    pipeline.run(source_for(sandbox, daily_call_limit=limit))

    (report,) = reports_by_load(pipeline)
    assert any(report[s]["stopped"] == "budget" for s in PAGED_STREAMS)
    assert any(f"daily_call_limit ({limit}) reached" in (report[s]["warnings"] or "") for s in PAGED_STREAMS)
    # The limit holds on Marketo's own count, every caller included, with five calls at once.
    assert sandbox.stats()["quota_used"] == limit
    assert sandbox.stats()["calls"]["usage"] == 1  # asked once: the run made fewer than 500 calls
    assert min(report[s]["calls_left_today"] for s in PAGED_STREAMS) == 0

    sandbox.reset_quota()  # a new day: the same limit now lets the run finish
    for _ in range(5):
        if not any(r.get("last_run", {}).get("stopped") for r in _resources(pipeline)):
            break
        pipeline.run(source_for(sandbox, daily_call_limit=limit + 1000))
    assert_everything_matches(pipeline, sandbox)


def _another_integration_spends(sandbox: MarketoSandbox, calls: int) -> int:
    """Makes `calls` calls as another integration would; returns the instance's calls today."""
    token = requests.get(
        f"{sandbox.base_url}/identity/oauth/token",
        params={
            "grant_type": "client_credentials", "client_id": sandbox.client_id, "client_secret": sandbox.client_secret,
        },
        timeout=10,
    ).json()["access_token"]
    for _ in range(calls):
        requests.get(
            f"{sandbox.base_url}/rest/v1/activities/types.json",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).raise_for_status()
    return sandbox.stats()["quota_used"]


def _resources(pipeline: dlt.Pipeline) -> List[Dict[str, Any]]:
    return list(pipeline.state["sources"]["marketo"]["resources"].values())


@pytest.mark.parametrize("limit", [0, -5, "80%", True])
def test_a_bad_daily_call_limit_names_the_setting(sandbox: MarketoSandbox, limit: Any) -> None:
    with pytest.raises(MarketoConfigurationError, match=r"daily_call_limit: .* is not a positive whole number"):
        source_for(sandbox, daily_call_limit=limit)


def test_resetting_a_stream_as_the_readme_says_keeps_every_streams_history_of_runs(
    sandbox: MarketoSandbox, make_pipeline: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # dlt's command line finds the DuckDB file where the pipeline first ran
    pipeline = make_pipeline()
    for _ in range(2):
        pipeline.run(source_for(sandbox))
    history = table_rows(pipeline, RUN_REPORTS_TABLE)
    assert len(history) == 2 * 5

    # The README's reset command, without a terminal (as from cron or CI).
    reset = subprocess.run(
        [str(Path(sys.executable).parent / "dlt"), "--yes", "pipeline", "--pipelines-dir", str(tmp_path / "pipelines"),
         pipeline.pipeline_name, "drop", "activities"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert reset.returncode == 0, reset.stdout + reset.stderr
    pipeline = make_pipeline()  # as the next scheduled run attaches to it
    assert "activity_send_email" not in pipeline.default_schema.tables, reset.stdout
    assert sorted(map(repr, table_rows(pipeline, RUN_REPORTS_TABLE))) == sorted(map(repr, history))

    pipeline.run(source_for(sandbox))  # reads the stream again from start_date
    assert_everything_matches(pipeline, sandbox)
    assert len(table_rows(pipeline, RUN_REPORTS_TABLE)) == 3 * 5
    assert pipeline.default_schema.tables[RUN_REPORTS_TABLE]["resource"] == "run_reports"


def test_every_table_ties_its_rows_to_their_load(sandbox: MarketoSandbox, make_pipeline: Any) -> None:
    pipeline = make_pipeline()
    pipeline.run(source_for(sandbox))
    sandbox.add_activities(new=50)
    pipeline.run(source_for(sandbox))
    loads = {row["stream"]: row["_dlt_load_id"] for row in table_rows(pipeline, RUN_REPORTS_TABLE)}
    for table in table_names(pipeline):
        load_ids = {row["_dlt_load_id"] for row in table_rows(pipeline, table)}
        assert load_ids and None not in load_ids, table
        assert load_ids <= set(pipeline.list_completed_load_packages()), table
    newest = max(table_rows(pipeline, "activity_send_email"), key=lambda row: row["activity_date"])
    assert newest["_dlt_load_id"] == loads["activities"] == max(pipeline.list_completed_load_packages())
