"""The saved positions: every transition as a plain function, and state written by the release
before them still loading and resuming."""

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Tuple

from marketo_source.chains import StartRules, chains_for_cursors
from marketo_source.paging import Page
from marketo_source.sandbox import DataSpec, Limits, MarketoSandbox
from marketo_source.state import ChainStart, Cursor, CursorId, LastRun, PageRead, Position, Slice, StreamState
from marketo_source.time_slices import TimeSlicer

from tests.expected import key_columns
from tests.helpers import loaded_keys, source_for

T = datetime(2026, 11, 20, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
NOW = T + 100 * HOUR
RELEASE_STATE = Path(__file__).parent / "fixtures" / "state_written_by_860a46d.json"
"""The source state the release at 860a46d left after two runs stopped half way with 30 time
slices open, and the positions (in the sandbox's ground truth) of the records it loaded. Its
paging tokens mark places in the sandbox's generated data: when the generator changes,
`tests/fixtures/write_release_state.py` writes it again with the release."""


def test_reading_on_moves_the_token_and_the_newest_activity() -> None:
    cursor = Cursor(Position(token="a", newest=T))
    moved = cursor.read_on(PageRead("b", T, more=True), recheck_from=None, now=NOW)
    assert moved.latest == Position(token="b", newest=T, position_at=T)
    at_end = moved.read_on(PageRead("c", T + HOUR, more=False), recheck_from=T - HOUR, now=NOW)
    assert at_end.latest == Position(token="c", newest=T + HOUR, position_at=NOW)
    assert (at_end.recheck_from, at_end.caught_up) == (T - HOUR, True)


def test_a_split_makes_the_latest_range_a_slice_and_starts_a_new_one() -> None:
    cursor = Cursor(Position(token="a", newest=T, position_at=T), recheck_from=T, caught_up=True)
    split = cursor.split(T + 10 * HOUR, T + 11 * HOUR)
    assert split.slices == (Slice(cursor.latest, T + 10 * HOUR, T + 11 * HOUR),)
    assert split.latest == Position(since=T + 10 * HOUR, newest=T, position_at=T) and not split.caught_up
    # Splitting the slice puts the new one right after it, with the old one's bounds.
    twice = split.split_slice(None, T + 5 * HOUR, T + 6 * HOUR)
    assert [(s.position.since, s.keep_before, s.stop_at) for s in twice.slices] == [
        (None, T + 5 * HOUR, T + 6 * HOUR), (T + 5 * HOUR, T + 10 * HOUR, T + 11 * HOUR)
    ]


def test_a_slice_reads_on_until_its_end_then_is_dropped() -> None:
    cursor = Cursor(
        Position(since=T), slices=(Slice(Position(token="s"), T, T + HOUR), Slice(Position(since=T - HOUR), T, T))
    )
    moved = cursor.slice_read_on(None, PageRead("s2", T - HOUR, more=True), NOW)
    assert moved.slices[0].position == Position(token="s2", newest=T - HOUR, position_at=T - HOUR)
    done = moved.slice_read_on(None, PageRead("s3", None, more=False), NOW)
    assert [s.position.since for s in done.slices] == [T - HOUR]


def test_a_handed_over_cursor_starts_where_the_other_reader_stopped() -> None:
    assert Cursor().handed_over(T) == Cursor(Position(since=T))


def test_a_refused_token_falls_back_to_the_newest_activity_fetched_or_the_slice_bound() -> None:
    start = ChainStart("stale", T - 10 * HOUR)
    assert start.fell_back(T, keep_before=None) == ChainStart(None, T)
    assert start.fell_back(T, keep_before=T - HOUR) == ChainStart(None, T - HOUR)
    assert start.fell_back(None, keep_before=None) == ChainStart(None, T - 10 * HOUR)


def test_where_a_cursor_stands_is_its_least_advanced_range() -> None:
    cursor = Cursor(
        Position(token="a", position_at=T),
        slices=(Slice(Position(token="s"), T, T), Slice(Position(since=T - HOUR), T, T)),
    )
    assert cursor.earliest(start=T - 50 * HOUR) == T - HOUR
    assert Cursor().earliest(start=T - 50 * HOUR) == T - 50 * HOUR
    assert Cursor(Position(token="a")).earliest(start=T) is None


def test_state_written_by_the_release_before_loads_and_round_trips() -> None:
    saved = json.loads(RELEASE_STATE.read_text())["state"]
    cursors = list(_saved_cursors(saved))
    assert len(cursors) > 10 and sum(len(c.get("slices", ())) for c in cursors) >= 10
    for json_cursor in cursors:
        assert Cursor.from_json(json_cursor).to_json() == _without_nulls(json_cursor)
    for resource in saved["resources"].values():
        last_run = LastRun.from_json(resource["last_run"])
        assert last_run.to_json() == {**last_run.to_json(), **_without_nulls(resource["last_run"])}


def test_a_pipeline_whose_state_the_release_before_wrote_resumes_and_ends_exact(make_pipeline: Any) -> None:
    fixture = json.loads(RELEASE_STATE.read_text())
    with MarketoSandbox(data=DataSpec(**fixture["data"]), block_size=fixture["block_size"],
                        limits=Limits(calls_per_window=None)) as sandbox:
        pipeline = make_pipeline()
        with pipeline.managed_state() as state:
            state.setdefault("sources", {})["marketo"] = fixture["state"]
        for _ in range(10):
            pipeline.run(source_for(sandbox, start_date=fixture["data"]["start_date"], time_slices=True))
            if not any(r["last_run"]["stopped"] for r in pipeline.state["sources"]["marketo"]["resources"].values()):
                break
        truth = sandbox.ground_truth()["activities"]
        loaded_by_release = {truth[n]["marketoGUID"] for low, high in fixture["loaded"] for n in range(low, high + 1)}
        loaded_now = {key[0] for table, keys in loaded_keys(pipeline).items()
                      if key_columns(table) == ("marketo_guid",) for key in keys}
    assert loaded_by_release | loaded_now == {record["marketoGUID"] for record in truth}
    assert len(loaded_by_release - loaded_now) > 1000, "the run read from the start again instead of resuming"


def _saved_cursors(saved: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    for name, resource in saved["resources"].items():
        for scope, value in resource.items():
            if scope in (StreamState.LAST_RUN, StreamState.HISTORY) or name.endswith("types"):
                continue
            yield from (value.values() if name == "activities" else [value])


def _without_nulls(saved: Dict[str, Any]) -> Dict[str, Any]:
    return {key: [_without_nulls(v) for v in value] if key == "slices" else value
            for key, value in saved.items() if value is not None}




def test_a_page_with_no_activity_keeps_the_time_its_range_stood_at() -> None:
    position = Position(token="a", position_at=T)
    assert position.read_on(PageRead("b", None, more=True), NOW) == Position(token="b", position_at=T)


def test_cursors_grouped_at_one_restart_stay_one_chain_and_each_moves_its_own_slice() -> None:
    """Cursors that split at different times, then restarted at one point, read as one chain:
    they are saved with one newest activity, and a split of that chain moves each one's own slice."""
    saved: Dict[str, Any] = {"all": {
        "1": Cursor(Position(token="a", since=T, newest=T + HOUR), recheck_from=T, caught_up=True).to_json(),
        "2": Cursor(Position(token="b", since=T + HOUR, newest=T + 2 * HOUR), recheck_from=T, caught_up=True).to_json(),
    }}
    state = StreamState(saved, per_type=True)
    ids = {key: ("all", key) for key in ("1", "2")}
    rules = StartRules(start=T - 50 * HOUR, recheck=True)
    (chain,) = chains_for_cursors("/path", _read(state, ids), {}, rules, "activityTypeIds")
    assert chain.newest == T + 2 * HOUR
    split = TimeSlicer(HOUR, NOW).open(chain, T + 10 * HOUR, pages=40)
    split.apply(state)
    new = split.slice
    chain.hand_on(Page(chain, [], "c", more=True), state, recheck_floor=None, now=NOW)
    new.hand_on(Page(new, [{"activityDate": "2026-11-21T00:00:00Z"}], "d", more=True, newest=T + 24 * HOUR),
                state, recheck_floor=T, now=NOW)
    cursors = [state.cursor(i) for i in ids.values()]
    assert [c.slices[0].position.since for c in cursors] == [T, T + HOUR]
    assert [c.slices[0].position.token for c in cursors] == ["c", "c"]
    assert {c.latest.newest for c in cursors} == {T + 24 * HOUR}
    regrouped = chains_for_cursors("/path", _read(state, ids), {}, rules, "activityTypeIds")
    assert len(regrouped) == 2, "one chain for the latest range and one for the slice, for both types"


def _read(state: StreamState, ids: Mapping[str, CursorId]) -> Dict[str, Tuple[CursorId, Cursor]]:
    return {key: (cursor_id, state.cursor(cursor_id)) for key, cursor_id in ids.items()}
