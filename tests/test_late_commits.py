"""Where chains restart to read late commits again: the transitions of `late_commits`, as plain
functions (no server, no threads). The runs against the sandbox are in test_late_commits_runs.py."""

from datetime import datetime, timedelta, timezone
from typing import Any, Dict

from marketo_source.late_commits import Recheck, latest_restart, recheck_floor, restart_point
from marketo_source.state import Cursor

HOUR = timedelta(hours=1)
T = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    return moment.isoformat()


def saved(cursor: Dict[str, Any]) -> Cursor:
    """A cursor as dlt state holds it."""
    return Cursor.from_json(cursor)


def test_the_floor_is_the_window_before_the_run_began_to_the_minute() -> None:
    assert recheck_floor(T + timedelta(seconds=59, microseconds=5), HOUR) == T - HOUR
    assert latest_restart(T + timedelta(minutes=5, seconds=30), HOUR) == T - HOUR + timedelta(minutes=5)
    assert latest_restart(None, HOUR) is None


def test_a_chain_that_read_to_the_end_restarts_at_its_recheck_point() -> None:
    cursor = {"token": "t", "recheck_from": iso(T), "caught_up": True}
    assert restart_point(saved(cursor), lookback=None, recheck=True, latest=None) == T


def test_without_a_window_a_chain_resumes_from_its_token() -> None:
    cursor = {"token": "t", "recheck_from": iso(T), "caught_up": True}
    assert restart_point(saved(cursor), lookback=None, recheck=False, latest=T - HOUR) is None


def test_a_chain_stopped_half_way_resumes_from_its_token() -> None:
    cursor = {"token": "t", "newest": iso(T - 5 * HOUR), "recheck_from": iso(T), "caught_up": False}
    assert restart_point(saved(cursor), lookback=None, recheck=True, latest=None) is None


def test_no_restart_is_later_than_the_window_before_the_newest_activity_read() -> None:
    cursor = {"token": "t", "recheck_from": iso(T), "caught_up": True}
    assert restart_point(saved(cursor), lookback=None, recheck=True, latest=T - 3 * HOUR) == T - 3 * HOUR
    assert restart_point(saved(cursor), lookback=None, recheck=True, latest=T + HOUR) == T


def test_a_lookback_restarts_earlier_when_it_reaches_further() -> None:
    caught_up = {"token": "t", "newest": iso(T), "recheck_from": iso(T - HOUR), "caught_up": True}
    assert restart_point(saved(caught_up), lookback=3 * HOUR, recheck=True, latest=None) == T - 3 * HOUR
    assert restart_point(saved(caught_up), lookback=timedelta(minutes=10), recheck=True, latest=None) == T - HOUR
    half_way = {**caught_up, "caught_up": False}
    restart = restart_point(saved(half_way), lookback=timedelta(minutes=10), recheck=True, latest=None)
    assert restart == T - timedelta(minutes=10)


def test_a_first_read_has_nothing_to_recheck() -> None:
    assert restart_point(saved({}), lookback=HOUR, recheck=True, latest=T) is None
    recheck = Recheck.for_cursor(saved({}), restart=None)
    assert recheck.after_page(earliest=T - 90 * 24 * HOUR, floor=T - HOUR) == T - HOUR


def test_a_restart_at_or_before_the_carried_point_settles_it() -> None:
    cursor = {"token": "t", "recheck_from": iso(T - HOUR), "caught_up": True}
    recheck = Recheck.for_cursor(saved(cursor), restart=T - HOUR)
    assert recheck.pending is None
    assert recheck.after_page(earliest=None, floor=T + 2 * HOUR) == T + 2 * HOUR


def test_a_resumed_chain_carries_its_recheck_point_until_its_first_activity_tells() -> None:
    cursor = {"token": "t", "recheck_from": iso(T), "caught_up": False}
    recheck = Recheck.for_cursor(saved(cursor), restart=None)
    assert recheck.pending == T and recheck.awaiting_first_activity
    # An empty page tells nothing: the point stays, the earlier of it and this run's floor.
    assert recheck.after_page(earliest=None, floor=T + HOUR) == T
    # The token stood after this activity's date, which lies past the point: it still holds.
    assert recheck.after_page(earliest=T + timedelta(minutes=1), floor=T + HOUR) == T
    assert not recheck.awaiting_first_activity
    # Later pages do not reconsider it.
    assert recheck.after_page(earliest=T - HOUR, floor=T + HOUR) == T


def test_a_first_activity_before_the_point_shows_the_earlier_runs_stopped_before_it() -> None:
    cursor = {"token": "t", "recheck_from": iso(T), "caught_up": False}
    recheck = Recheck.for_cursor(saved(cursor), restart=None)
    assert recheck.after_page(earliest=T - 40 * 24 * HOUR, floor=T + HOUR) == T + HOUR
    assert recheck.pending is None


def test_a_point_this_run_does_not_reread_is_kept_when_the_run_restarts_later() -> None:
    # A lookback restart after the carried point leaves what lies between unread again.
    cursor = {"token": "t", "newest": iso(T + HOUR), "recheck_from": iso(T - HOUR), "caught_up": False}
    restart = restart_point(saved(cursor), lookback=timedelta(minutes=30), recheck=True, latest=None)
    recheck = Recheck.for_cursor(saved(cursor), restart=restart)
    assert recheck.pending == T - HOUR and not recheck.awaiting_first_activity
    assert recheck.after_page(earliest=T + HOUR, floor=T + 2 * HOUR) == T - HOUR


def test_a_cursor_saved_without_a_recheck_point_rereads_from_its_last_run() -> None:
    cursor = saved({"token": "t", "newest": iso(T), "position_at": iso(T + HOUR)})
    adopted = cursor.with_recheck_point(last_run_started=T - timedelta(minutes=5, seconds=7), window=HOUR).to_json()
    assert adopted["recheck_from"] == iso(T - HOUR - timedelta(minutes=6)) and adopted["caught_up"] is True
    # A cursor stopped far back restarts from its own newest activity, never past its token.
    far_back = saved({"token": "t", "newest": iso(T - 30 * 24 * HOUR)})
    assert far_back.with_recheck_point(last_run_started=T, window=HOUR).recheck_from == T - 30 * 24 * HOUR - HOUR
    # Nothing to date a restart by, or nothing read yet, or already adopted: left as it is.
    for json in ({"token": "t"}, {}, {"token": "t", "newest": iso(T), "recheck_from": iso(T), "caught_up": False}):
        assert saved(json).with_recheck_point(last_run_started=T, window=HOUR) == saved(json)
