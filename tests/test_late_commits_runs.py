"""Late commits against the sandbox, under both readings of Marketo's paging tokens.

Marketo does not document whether a saved `nextPageToken` marks a place in the order it records
activities ("commit": resuming returns an activity recorded late) or in activityDate order
("date": an activity recorded after the reader passed its date lies behind the token). The
sandbox plays both; with default settings every stream must end exactly on the ground truth
under both, for activities recorded up to an hour late, and the window must be what bounds it.
"""

from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Set, Tuple

import pytest

from marketo_source.sandbox import DataSpec, Lateness, Limits, MarketoSandbox
from marketo_source.sandbox.paging import TokenOrder
from marketo_source.settings import DEDICATED_STREAM_TYPE_IDS as DEDICATED

from tests.expected import expected_keys, utc
from tests.helpers import assert_every_table_matches, loaded_keys, recent_start_date, source_for

TOKEN_ORDERS: Tuple[TokenOrder, ...] = ("commit", "date")
HOUR_S = 3600
EVERY_STREAM_LATE = Lateness(
    default=(0, 5),  # seconds late
    by_type=tuple((type_id, (0, HOUR_S)) for type_id in (6, 7, 12, 13, 37)),  # up to an hour late
)
"""Send Email and Email Delivered up to an hour late, as Marketo documents it, and so the New
Lead, Change Data Value and Delete Lead activities that `lead_changes` and `deleted_leads` read;
every other type a few seconds late."""


def live_sandbox(token_order: TokenOrder, **data: Any) -> MarketoSandbox:
    """A sandbox whose log runs up to now, as a live instance's does: a reader that has read it
    has passed dates an hour back, so activities recorded an hour late lie behind its tokens."""
    spec: Dict[str, Any] = dict(seed=21, leads=60, activities=2500, days=3, lateness=EVERY_STREAM_LATE)
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=spec["days"])
    spec.update(data, start_date=start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return MarketoSandbox(data=DataSpec(**spec), block_size=200, token_order=token_order,
                          limits=Limits(calls_per_window=None))


def source(sandbox: MarketoSandbox, **settings: Any) -> Any:
    """The source reading the sandbox's whole log, within every retention window."""
    return source_for(sandbox, start_date=recent_start_date(days=4), **settings)


def guids(records: List[Dict[str, Any]]) -> Set[str]:
    return {record["marketoGUID"] for record in records}


def loaded_guids(pipeline: Any) -> Set[str]:
    return {key[0] for table, keys in loaded_keys(pipeline).items() if table != "lead_field_changes" for key in keys}


def last_runs(pipeline: Any) -> Dict[str, Dict[str, Any]]:
    resources = pipeline.state["sources"]["marketo"]["resources"]
    return {name: state["last_run"] for name, state in resources.items() if "last_run" in state}


@pytest.mark.parametrize("token_order", TOKEN_ORDERS)
def test_five_incremental_runs_with_late_commits_load_exactly_marketos_data(
    token_order: TokenOrder, make_pipeline: Any
) -> None:
    """After each run, every record Marketo held when it began is loaded once, and nothing else
    but what Marketo recorded while it read; once the recording stops, one run ends exact."""
    with live_sandbox(token_order) as sandbox:
        pipeline = make_pipeline()
        pipeline.run(source(sandbox))
        assert_every_table_matches(pipeline, sandbox)
        late_types: Set[int] = set()
        committed_while_reading = 0
        for _ in range(5):
            late = sandbox.add_activities(new=40, late=80) + sandbox.add_activities(late=6, lateness_s=HOUR_S - 30)
            late_types |= {record["activityTypeId"] for record in late}
            held_before = sandbox.ground_truth()
            sandbox.set_auto_add((5, 2, 3))  # on time and late, while the run reads
            pipeline.run(source(sandbox))
            sandbox.set_auto_add(None)
            held_after = sandbox.ground_truth()
            committed_while_reading += len(held_after["activities"]) - len(held_before["activities"])
            assert_loaded_between(pipeline, held_before, held_after)
        pipeline.run(source(sandbox))
        assert_every_table_matches(pipeline, sandbox)
        # The runs met what they were meant to: commits during a run, and late ones in every stream.
        assert committed_while_reading > 0
        assert {6, 7, 12, 13, 37} <= late_types


def assert_loaded_between(pipeline: Any, held_before: Dict[str, Any], held_after: Dict[str, Any]) -> None:
    """Every row of what Marketo held before a run is loaded, once, and no row Marketo did not
    hold after it; rows recorded while it read may wait for the next run."""
    loaded = loaded_keys(pipeline)  # fails on a row loaded twice
    before, after = expected_keys(held_before), expected_keys(held_after)
    for table in set(before) | set(after) | set(loaded):
        rows = loaded.get(table, set())
        missing, invented = before.get(table, set()) - rows, rows - after.get(table, set())
        assert not missing, (
            f"{table}: {len(missing)} rows Marketo held before the run are missing, e.g. {sorted(missing)[:3]}"
        )
        assert not invented, f"{table}: {len(invented)} rows Marketo does not hold, e.g. {sorted(invented)[:3]}"


def test_without_the_window_date_ordered_tokens_lose_late_commits(make_pipeline: Any) -> None:
    """What the window is for: resuming from the saved tokens misses activities recorded after a
    run passed their date, when tokens mark activityDate order."""
    with live_sandbox("date") as sandbox:
        pipeline = make_pipeline()
        pipeline.run(source(sandbox, late_commit_minutes=0))
        late = sandbox.add_activities(late=30, lateness_s=20 * 60)
        pipeline.run(source(sandbox, late_commit_minutes=0))
        assert guids(late) - loaded_guids(pipeline) == guids(late)


@pytest.mark.parametrize("token_order", TOKEN_ORDERS)
def test_a_commit_later_than_the_window_is_missed_until_a_lookback_reaches_it(
    token_order: TokenOrder, make_pipeline: Any
) -> None:
    with live_sandbox(token_order) as sandbox:
        default, wide = make_pipeline("default"), make_pipeline("wide")
        for pipeline, settings in ((default, {}), (wide, dict(late_commit_minutes=240))):
            pipeline.run(source(sandbox, **settings))
        too_late = sandbox.add_activities(late=8, lateness_s=3 * HOUR_S)
        on_time = sandbox.add_activities(new=20)

        default.run(source(sandbox))
        assert not guids(too_late) & loaded_guids(default), "recorded three hours late, past the hour the window covers"
        assert guids(on_time) <= loaded_guids(default)

        wide.run(source(sandbox, late_commit_minutes=240))
        assert_every_table_matches(wide, sandbox)

        default.run(source(sandbox, lookback_minutes=240))  # recovers what was missed
        assert_every_table_matches(default, sandbox)


@pytest.mark.parametrize("token_order", TOKEN_ORDERS)
def test_runs_stopped_half_way_while_late_commits_arrive_end_exact(token_order: TokenOrder, make_pipeline: Any) -> None:
    """Runs bounded to a few pages resume from their tokens and read the window again once they
    reach Marketo's end, so the late commits that arrive between them are all read."""
    with live_sandbox(token_order) as sandbox:
        pipeline = make_pipeline()
        for run in range(60):
            pipeline.run(source(sandbox, max_pages_per_run=6, max_concurrency=2))
            if not any(report["stopped"] for report in last_runs(pipeline).values()):
                break
            if run % 3 == 0:
                sandbox.add_activities(new=10, late=20)
        else:
            pytest.fail("60 bounded runs did not read to Marketo's end")
        assert run > 5, "the runs were meant to stop half way many times"
        sandbox.add_activities(new=10, late=20)
        pipeline.run(source(sandbox))
        assert_every_table_matches(pipeline, sandbox)


@pytest.mark.parametrize("token_order", TOKEN_ORDERS)
def test_lookback_and_the_window_together_end_exact(token_order: TokenOrder, make_pipeline: Any) -> None:
    with live_sandbox(token_order) as sandbox:
        pipeline = make_pipeline()
        for _ in range(3):
            pipeline.run(source(sandbox, lookback_minutes=30))
            sandbox.add_activities(new=30, late=60)
        pipeline.run(source(sandbox, lookback_minutes=30))
        assert_every_table_matches(pipeline, sandbox)


def test_state_saved_before_the_window_existed_reads_late_commits_on_its_next_run(make_pipeline: Any) -> None:
    """Cursors saved without a recheck point (late_commit_minutes = 0 saves them as releases
    before the window did) get one from their stream's last run."""
    with live_sandbox("date") as sandbox:
        pipeline = make_pipeline()
        pipeline.run(source(sandbox, late_commit_minutes=0))
        cursors = pipeline.state["sources"]["marketo"]["resources"]["deleted_leads"]["all"]
        assert "recheck_from" not in cursors and cursors.get("token")
        sandbox.add_activities(late=40, lateness_s=30 * 60)

        pipeline.run(source(sandbox))

        assert_every_table_matches(pipeline, sandbox)


@pytest.mark.parametrize("token_order", TOKEN_ORDERS)
def test_what_is_read_again_is_counted_in_the_run_report(token_order: TokenOrder, make_pipeline: Any) -> None:
    with live_sandbox(token_order) as sandbox:
        pipeline = make_pipeline()
        pipeline.run(source(sandbox))
        first_truth = sandbox.ground_truth()["activities"]
        cursors = pipeline.state["sources"]["marketo"]["resources"]["activities"]["all"].values()
        newest_read = max(
            utc(run["newest_activity_at"]) for run in last_runs(pipeline).values() if run["newest_activity_at"]
        )
        # Where the second run restarts: the window before the first run, no later than before its newest activity.
        restart = min(min(utc(cursor["recheck_from"]) for cursor in cursors),
                      (newest_read - timedelta(hours=1)).replace(second=0))
        added = sandbox.add_activities(new=50)

        pipeline.run(source(sandbox))

        report = last_runs(pipeline)["activities"]
        read_before = [
            r for r in first_truth if r["activityTypeId"] not in DEDICATED and utc(r["activityDate"]) >= restart
        ]
        assert report["rows_reread"] == len(read_before) > 0
        added_read = [r for r in added if r["activityTypeId"] not in DEDICATED]
        assert report["records"] - report["rows_reread"] == len(added_read)
        assert 0 < report["reread_calls"] <= report["calls"]
