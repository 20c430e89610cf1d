"""Where each stream stands, as saved in dlt state: declared types, and every change made to them.

A stream keeps one `Cursor` per filter scope (`activities`: one per activity type and scope). A
cursor holds the position of its latest range (the range that reads on into later runs) and,
once time slices have split its history, the unfinished earlier `Slice`s. Each change of a
cursor is a method below that returns the new value; `StreamState` is the only writer of a
resource's dlt state, and `LastRun` the declared form of a stream's last run report. The JSON
they write is the one earlier releases wrote, so that their pipelines resume where they stood.
"""

from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, Mapping, MutableMapping, Optional, Sequence, Tuple

from marketo_source.schema import parse_timestamp

CursorId = Tuple[str, Optional[str]]
"""(filter scope, activity type id) of a cursor; the type is None for a stream with one cursor per scope."""


@dataclass(frozen=True)
class PageRead:
    """What a page handed on tells its chain's cursors."""

    next_token: str
    newest: Optional[datetime]
    """The newest activityDate its chain has read, this page included: one value for every cursor
    the chain moves, so that they stay at one position and read together next run."""
    more: bool
    """Marketo's moreResult: false once the page reached Marketo's end."""


@dataclass(frozen=True)
class Position:
    """Where a range of pages resumes."""

    token: Optional[str] = None
    """The nextPageToken of the last page handed on."""
    since: Optional[datetime] = None
    """Where a fresh token starts when there is no token: None for the first run's start_date."""
    newest: Optional[datetime] = None
    """The newest activityDate read."""
    position_at: Optional[datetime] = None
    """The time the range is read up to: the time it reached Marketo's end, else its newest activity."""

    def read_on(self, page: PageRead, now: datetime) -> "Position":
        newest = page.newest or self.newest
        # A page with no activity in the middle of a range tells no time: the range keeps its own.
        position_at = (newest if page.more else now) or self.position_at
        return replace(self, token=page.next_token, newest=newest, position_at=position_at)

    def earliest(self, start: Optional[datetime]) -> Optional[datetime]:
        """The time this range stands at; `start` for one not begun. None when nothing tells.

        A range with a token but no time yet (its pages were all empty) stands at least at its since.
        """
        if self.position_at is not None:
            return self.position_at
        if self.since is not None:
            return self.since
        return None if self.token else start


@dataclass(frozen=True)
class Slice:
    """An earlier range of a cursor's history that a time slice reads alongside the later ones."""

    position: Position
    keep_before: datetime
    """The slice keeps only activities dated before this: the next range reads the others."""
    stop_at: datetime
    """It ends at its first page whose activities are all dated at or after this."""


@dataclass(frozen=True)
class Cursor:
    """The saved position of an activity type (or a whole stream) in one filter scope."""

    latest: Position = field(default_factory=Position)
    """The range that reads on into later runs."""
    recheck_from: Optional[datetime] = None
    """Activities dated from here on may still be recorded late: read them again (see `late_commits`)."""
    caught_up: bool = False
    """Whether the latest range read to Marketo's end the last time it read."""
    slices: Tuple[Slice, ...] = ()
    """Unfinished earlier ranges, oldest first."""

    # -- the latest range -------------------------------------------------------------------

    def read_on(self, page: PageRead, recheck_from: Optional[datetime], now: datetime) -> "Cursor":
        """Past a page of the latest range; `recheck_from` None keeps no late-commit point."""
        cursor = replace(self, latest=self.latest.read_on(page, now))
        if recheck_from is None:
            return cursor
        return replace(cursor, recheck_from=recheck_from, caught_up=not page.more)

    def handed_over(self, at: datetime) -> "Cursor":
        """Another reader read the history before `at`: the latest range begins there."""
        return replace(self, latest=Position(since=at))

    def with_recheck_point(self, last_run_started: Optional[datetime], window: timedelta) -> "Cursor":
        """A cursor saved before late commits were read again, given the point to read again from.

        Its last run began at `last_run_started` at the latest and read up to its newest
        activity, so reading again from `window` before the earlier of the two covers whatever
        that run may have passed, and stays behind its token's place, whether or not it reached
        Marketo's end. A cursor that never read an activity has no date for it, and is left as is.
        """
        newest = self.latest.newest
        if self.recheck_from is not None or not self.latest.token or newest is None:
            return self
        since = newest if last_run_started is None else min(newest, last_run_started)
        return replace(self, recheck_from=to_minute(since - window), caught_up=True)

    # -- time slices ------------------------------------------------------------------------

    def split(self, at: datetime, stop_at: datetime) -> "Cursor":
        """Hands the latest range from `at` on to a new range; what it read so far becomes the last slice."""
        earlier = Slice(self.latest, keep_before=at, stop_at=stop_at)
        # The new range has read nothing yet: its time is where the cursor stood, its start `at`.
        latest = replace(self.latest, token=None, since=at)
        return replace(self, latest=latest, caught_up=False, slices=(*self.slices, earlier))

    def split_slice(self, since: Optional[datetime], at: datetime, stop_at: datetime) -> "Cursor":
        """Hands the slice starting at `since` from `at` on to a new slice, right after it."""
        index = self._slice_index(since)
        old = self.slices[index]
        following = Slice(Position(since=at), keep_before=old.keep_before, stop_at=old.stop_at)
        earlier = replace(old, keep_before=at, stop_at=stop_at)
        return replace(self, slices=(*self.slices[:index], earlier, following, *self.slices[index + 1 :]))

    def slice_read_on(self, since: Optional[datetime], page: PageRead, now: datetime) -> "Cursor":
        """Past a page of the slice starting at `since`; a slice at its end is done and dropped."""
        index = self._slice_index(since)
        if not page.more:
            return replace(self, slices=self.slices[:index] + self.slices[index + 1 :])
        moved = replace(self.slices[index], position=self.slices[index].position.read_on(page, now))
        return replace(self, slices=(*self.slices[:index], moved, *self.slices[index + 1 :]))

    def _slice_index(self, since: Optional[datetime]) -> int:
        # A slice is known by where it starts: a split always starts the new range at a new time.
        return next(n for n, part in enumerate(self.slices) if part.position.since == since)

    # -- reading it -------------------------------------------------------------------------

    def earliest(self, start: Optional[datetime]) -> Optional[datetime]:
        """The time the least advanced of its ranges stands at (see `Position.earliest`)."""
        times = [part.earliest(start) for part in (self.latest, *(s.position for s in self.slices))]
        return min((t for t in times if t is not None), default=None)

    # -- JSON in dlt state ------------------------------------------------------------------

    @classmethod
    def from_json(cls, saved: Mapping[str, Any]) -> "Cursor":
        return cls(
            latest=_position_from_json(saved),
            recheck_from=_time(saved.get("recheck_from")),
            caught_up=bool(saved.get("caught_up")),
            slices=tuple(
                Slice(
                    _position_from_json(entry), parse_timestamp(entry["keep_before"]), parse_timestamp(entry["stop_at"])
                )
                for entry in saved.get("slices") or ()
            ),
        )

    def to_json(self) -> Dict[str, Any]:
        saved = _position_to_json(self.latest)
        if self.recheck_from is not None:
            saved.update(recheck_from=self.recheck_from.isoformat(), caught_up=self.caught_up)
        if self.slices:
            saved["slices"] = [
                {
                    **_position_to_json(s.position),
                    "keep_before": s.keep_before.isoformat(),
                    "stop_at": s.stop_at.isoformat(),
                }
                for s in self.slices
            ]
        return saved


@dataclass(frozen=True)
class ChainStart:
    """Where a chain of pages starts in a run: from `token`, else from a fresh token at `since`."""

    token: Optional[str]
    since: datetime

    def fell_back(self, fetched_newest: Optional[datetime], keep_before: Optional[datetime]) -> "ChainStart":
        """Where to go on when Marketo refuses the token: a fresh token from the newest activity
        fetched (for a slice, no later than its bound: it may have read on past it)."""
        restart = fetched_newest or self.since
        return ChainStart(None, restart if keep_before is None else min(restart, keep_before))


@dataclass(frozen=True)
class HistoryClaim:
    """History of a filter scope that another reader than REST paging reads (see `history`)."""

    reader: str
    """The reader's name."""
    start: datetime
    until: datetime
    """REST paging reads the scope from here on; the reader reads what lies before."""
    done: bool = False
    progress: Mapping[str, Any] = field(default_factory=dict)
    """The reader's own record of how far it got, as JSON; only the reader reads it."""

    def read_on(self, progress: Mapping[str, Any], done: bool) -> "HistoryClaim":
        return replace(self, progress=dict(progress), done=done)

    @classmethod
    def from_json(cls, saved: Mapping[str, Any]) -> "HistoryClaim":
        return cls(saved["reader"], parse_timestamp(saved["start"]), parse_timestamp(saved["until"]),
                   bool(saved.get("done")), dict(saved.get("progress") or {}))

    def to_json(self) -> Dict[str, Any]:
        return {"reader": self.reader, "start": self.start.isoformat(), "until": self.until.isoformat(),
                "done": self.done, "progress": dict(self.progress)}


@dataclass(frozen=True)
class LastRun:
    """What a stream did in its last run: its row of `marketo_run_reports`."""

    stream: str
    started_at: datetime
    ended_at: datetime
    pages: int = 0
    records: int = 0
    rows_loaded: int = 0
    rows_set_aside: int = 0
    calls: int = 0
    time_slices: int = 0
    reread_calls: int = 0
    rows_reread: int = 0
    position_from: Optional[datetime] = None
    position_to: Optional[datetime] = None
    newest_activity_at: Optional[datetime] = None
    calls_left_today: Optional[int] = None
    stopped: Optional[str] = None
    """None, or why the stream stopped early: "quota", "budget" or "error"."""
    warnings: Optional[str] = None

    def row(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, saved: Mapping[str, Any]) -> "LastRun":
        values = {f.name: saved[f.name] for f in fields(cls) if saved.get(f.name) is not None}
        for name in ("started_at", "ended_at", "position_from", "position_to", "newest_activity_at"):
            if name in values:
                values[name] = parse_timestamp(values[name])
        return cls(**values)

    def to_json(self) -> Dict[str, Any]:
        return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in self.row().items()}


class StreamState:
    """A resource's cursors and last run, kept in its dlt state: the one place that writes it.

    `per_type` streams (`activities`) keep `{scope: {type id: cursor}}`, the others `{scope: cursor}`.
    Transitions come from the dlt extract thread, where the resource's consumer runs.
    """

    LAST_RUN = "last_run"
    HISTORY = "history"

    def __init__(self, resource_state: MutableMapping[str, Any], per_type: bool) -> None:
        self._saved = resource_state
        self._per_type = per_type

    def cursor(self, cursor_id: CursorId) -> Cursor:
        return Cursor.from_json(self._json(cursor_id))

    def change(self, cursor_ids: Sequence[CursorId], transition: Callable[[Cursor], Cursor]) -> None:
        """Applies `transition` to each cursor and saves the results."""
        for cursor_id in cursor_ids:
            saved = self._json(cursor_id)
            new = transition(Cursor.from_json(saved)).to_json()
            saved.clear()
            saved.update(new)

    def claims(self) -> Dict[str, HistoryClaim]:
        """Per filter scope, the history another reader reads."""
        return {scope: HistoryClaim.from_json(saved) for scope, saved in self._saved.get(self.HISTORY, {}).items()}

    def save_claim(self, scope: str, claim: HistoryClaim) -> None:
        self._saved.setdefault(self.HISTORY, {})[scope] = claim.to_json()

    def last_run_started(self) -> Optional[datetime]:
        """When the stream's last run began, if a run has been recorded."""
        return _time((self._saved.get(self.LAST_RUN) or {}).get("started_at"))

    def record_last_run(self, last_run: LastRun) -> None:
        self._saved[self.LAST_RUN] = last_run.to_json()

    def _json(self, cursor_id: CursorId) -> Dict[str, Any]:
        scope, type_id = cursor_id
        saved: Dict[str, Any] = self._saved.setdefault(scope, {})
        return saved.setdefault(type_id, {}) if self._per_type and type_id is not None else saved


def newest_read_anywhere(source_state: Mapping[str, Any]) -> Optional[datetime]:
    """The newest activityDate any stream of the source had read when its last run ended."""
    newest = [
        _time((resource.get(StreamState.LAST_RUN) or {}).get("newest_activity_at"))
        for resource in (source_state.get("resources") or {}).values()
    ]
    return max((moment for moment in newest if moment is not None), default=None)


def record_run_calls(source_state: MutableMapping[str, Any], calls: Mapping[str, int]) -> None:
    """Keeps the run's calls per API path, for the pipeline's summary."""
    source_state["last_run_calls"] = dict(calls)


def to_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _position_from_json(saved: Mapping[str, Any]) -> Position:
    return Position(
        saved.get("token"), _time(saved.get("since")), _time(saved.get("newest")), _time(saved.get("position_at"))
    )


def _position_to_json(position: Position) -> Dict[str, Any]:
    values = {"token": position.token, "since": position.since, "newest": position.newest,
              "position_at": position.position_at}
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in values.items() if value}


def _time(value: Optional[str]) -> Optional[datetime]:
    return parse_timestamp(value) if value else None


def later(moment: Optional[datetime], other: Optional[datetime]) -> Optional[datetime]:
    """The later of two moments, either of which may be missing."""
    if moment is None or (other is not None and other > moment):
        return other
    return moment
