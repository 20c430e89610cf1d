"""The late-commit transitions over simulated days, against a model of both token readings.

The sandbox tests run minutes of wall-clock time, in which every run starts within the same
window; here a simulated clock lets runs start hours apart, stop half way and resume, while
activities are recorded up to the window late. The model is a list of activities and the two
readings of a paging token; the reader drives `late_commits` as a chain does (`streams.Chain`).
"""

import random
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Set, Tuple

import pytest

from marketo_source.late_commits import Recheck, latest_restart, recheck_floor, restart_point
from marketo_source.state import Cursor, PageRead

EPOCH = datetime(2026, 11, 1, tzinfo=timezone.utc)
WINDOW = timedelta(hours=1)
BATCH = 10


def at(seconds: float) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


@dataclass(frozen=True)
class Activity:
    id: int
    date: datetime
    recorded: datetime


@dataclass
class Marketo:
    """Activities as recorded by a time, read through tokens of one reading."""

    token_order: str
    activities: List[Activity] = field(default_factory=list)
    marks: Dict[str, Tuple[Any, ...]] = field(default_factory=dict)
    """What each token handed out marks."""

    def date_token(self, since: datetime) -> str:
        return self._token(("commit", since, 0) if self.token_order == "commit" else ("date", (since, -1)))

    def page(self, token: str, now: datetime) -> Tuple[List[Activity], str, bool]:
        records, mark, more = self._page(self.marks[token], now)
        return records, self._token(mark), more

    def _token(self, mark: Tuple[Any, ...]) -> str:
        token = str(len(self.marks))
        self.marks[token] = mark
        return token

    def _page(self, token: Tuple[Any, ...], now: datetime) -> Tuple[List[Activity], Tuple[Any, ...], bool]:
        recorded = [a for a in self.activities if a.recorded <= now]
        if token[0] == "commit":
            _, since, position = token
            in_order = sorted(recorded, key=lambda a: (a.recorded, a.id))
            found = [a for a in in_order[position:] if a.date >= since][:BATCH]
            end = in_order.index(found[-1]) + 1 if len(found) == BATCH else len(in_order)
            return found, ("commit", since, end), end < len(in_order)
        _, mark = token
        after = sorted((a for a in recorded if (a.date, a.id) > mark), key=lambda a: (a.date, a.id))
        found = after[:BATCH]
        next_mark = (found[-1].date, found[-1].id) if found else mark
        return found, ("date", next_mark), len(after) > BATCH


@dataclass
class Reader:
    """One chain of pages and its cursor, moved as `streams.Chain` moves them."""

    marketo: Marketo
    start: datetime
    cursor: Cursor = field(default_factory=Cursor)
    loaded: Set[int] = field(default_factory=set)

    def run(self, now: datetime, max_pages: Optional[int], seconds_per_page: float) -> None:
        restart = restart_point(self.cursor, None, True, latest_restart(self.cursor.latest.newest, WINDOW))
        recheck = Recheck.for_cursor(self.cursor, restart)
        floor = recheck_floor(now, WINDOW)
        if restart is not None:
            token = self.marketo.date_token(restart)
        else:
            token = self.cursor.latest.token or self.marketo.date_token(self.start)
        pages = 0
        while max_pages is None or pages < max_pages:
            read_at = now + timedelta(seconds=pages * seconds_per_page)
            records, token, more = self.marketo.page(token, read_at)
            pages += 1
            self.loaded |= {a.id for a in records}
            earliest = min((a.date for a in records), default=None) if recheck.awaiting_first_activity else None
            page = PageRead(token, max((a.date for a in records), default=None), more)
            self.cursor = self.cursor.read_on(page, recheck.after_page(earliest, floor), read_at)
            if not more:
                return


def simulate(token_order: str, seed: int) -> Tuple[Set[int], Set[int]]:
    """A day and a half of activities, some recorded up to the window late, read by runs at
    random intervals, some bounded to a few pages; then one run after the last is recorded.
    Returns (every activity id, the ids loaded)."""
    rng = random.Random(seed)
    marketo = Marketo(token_order)
    span_s = 36 * 3600
    window_s = WINDOW.total_seconds()
    for activity_id in range(2000):
        date = at(rng.uniform(0, span_s))
        # On time, seconds late, up to the window late, and near the window's end, where a
        # restart a little too late would miss them.
        late = rng.choice((0, rng.uniform(0, 5), rng.uniform(0, window_s), rng.uniform(0.9 * window_s, window_s)))
        marketo.activities.append(Activity(activity_id, date.replace(microsecond=0), date + timedelta(seconds=late)))
    reader = Reader(marketo, start=at(0))
    clock = 600.0
    while clock < span_s:
        reader.run(at(clock), max_pages=rng.choice((None, 2, 5, 20)), seconds_per_page=rng.choice((1, 30, 120)))
        clock += rng.uniform(300, 3 * 3600)
    reader.run(at(span_s + 2 * 3600), max_pages=None, seconds_per_page=1)
    return {a.id for a in marketo.activities}, reader.loaded


@pytest.mark.parametrize("token_order", ["commit", "date"])
@pytest.mark.parametrize("seed", range(12))
def test_runs_hours_apart_read_every_activity_recorded_up_to_the_window_late(token_order: str, seed: int) -> None:
    every, loaded = simulate(token_order, seed)
    assert every == loaded, f"{len(every - loaded)} activities never read"


def test_the_model_loses_late_activities_when_runs_resume_from_date_ordered_tokens() -> None:
    """The model can fail: resuming from the saved token, as without a window, loses activities."""
    marketo = Marketo("date")
    marketo.activities = [Activity(0, at(100), at(100)), Activity(1, at(50), at(400))]
    reader = Reader(marketo, start=at(0))
    reader.run(at(200), max_pages=None, seconds_per_page=1)
    reader.cursor = replace(reader.cursor, caught_up=False)  # as if no window: resume from the token
    reader.run(at(500), max_pages=None, seconds_per_page=1)
    assert reader.loaded == {0}
