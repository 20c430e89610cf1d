"""Paging: a chain of pages, and how it reads its next page.

A *chain* is one sequence of page calls: the cursors of up to 10 activity types (or of a whole
stream) that stand at the same position read together. Within a chain pages follow each other,
because each page's token comes from the one before; chains run concurrently (`scheduler`).
A chain reads on the fetching side, ahead of its consumer, and moves its cursors' saved state
(`state`) only on the consuming side, once a page's rows are handed to dlt.
"""

import logging
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from marketo_source import settings
from marketo_source.client import MarketoClient
from marketo_source.errors import MarketoListTooLarge, MarketoRequestError
from marketo_source.late_commits import Recheck
from marketo_source.schema import parse_timestamp
from marketo_source.state import ChainStart, Cursor, CursorId, PageRead, StreamState, later

logger = logging.getLogger("marketo_source")

Record = Dict[str, Any]


class PagingTokens:
    """Asks Get Paging Token once per distinct start time and shares the answer.

    A date-based token depends only on its datetime, so one serves every endpoint and every
    type filter that starts there. The first chain to need a datetime asks; the others that
    need it meanwhile wait for that answer, and chains needing other datetimes do not wait.
    """

    def __init__(self, client: MarketoClient) -> None:
        self._client = client
        self._answers: Dict[str, _TokenAnswer] = {}
        self._lock = threading.Lock()

    def since(self, moment: datetime, urgent: bool = False) -> str:
        """A token for `moment`; an urgent chain's token call goes first when calls wait."""
        key = moment.isoformat()
        with self._lock:
            answer = self._answers.get(key)
            asking = answer is None or answer.stale()
            if asking:
                answer = self._answers[key] = _TokenAnswer()
        assert answer is not None
        if asking:
            answer.ask(lambda: self._client.get(
                settings.PAGING_TOKEN_PATH, {"sinceDatetime": key},
                timeout=self._client.paging_token_timeout_s, urgent=urgent,
            )["nextPageToken"])
        return answer.token.result()


@dataclass
class _TokenAnswer:
    token: "Future[str]" = field(default_factory=Future)
    answered_at: Optional[float] = None

    def ask(self, call: Any) -> None:
        try:
            token = call()
        except BaseException as error:  # the waiting chains fail with it; the next one asks again
            self.answered_at = time.monotonic()
            self.token.set_exception(error)
        else:
            self.answered_at = time.monotonic()
            self.token.set_result(token)

    def stale(self) -> bool:
        # Shared while fresh: Marketo does not say when a token expires. A failed answer is asked again.
        if not self.token.done() or self.answered_at is None:
            return False
        if self.token.exception() is not None:
            return True
        return time.monotonic() - self.answered_at > settings.PAGING_TOKEN_SHARED_S


@dataclass(frozen=True)
class SliceRef:
    """The unfinished slice of its cursors' history a chain reads: in each cursor, the slice that
    starts at its `since` (cursors grouped in one chain may have split at different times)."""

    sinces: Tuple[Optional[datetime], ...]
    """Per cursor of the chain, in the order of its `cursor_ids`."""

    def change(self, state: StreamState, cursor_ids: List[CursorId], transition: "SliceTransition") -> None:
        """Applies `transition` to each cursor with the start of its slice."""
        for cursor_id, since in zip(cursor_ids, self.sinces, strict=True):
            state.change([cursor_id], _bound(transition, since))


SliceTransition = Callable[[Cursor, Optional[datetime]], Cursor]
"""A change of a cursor given the start of the slice it concerns."""


def _bound(transition: SliceTransition, since: Optional[datetime]) -> Callable[[Cursor], Cursor]:
    return lambda cursor: transition(cursor, since)


@dataclass(eq=False)  # chains are told apart by identity: two may hold equal fields
class Chain:
    """One sequence of page calls and the cursors it moves."""

    path: str
    params: Dict[str, str]
    cursor_ids: List[CursorId]
    read: ChainStart
    """Fetching side: the token of the next page, or where a fresh token starts."""
    slice: Optional[SliceRef] = None
    """Consuming side: the slice of history the pages read, None for the latest range."""
    ends_before: Optional[datetime] = None
    """Fetching side: set on a time slice, which keeps only activities dated before this."""
    stop_at: Optional[datetime] = None
    """Fetching side: a time slice ends at its first page whose activities are all dated at or after this."""
    token_is_fresh: bool = False
    pace: "ChainPace" = field(default_factory=lambda: ChainPace())
    urgent: bool = False
    """Whether the run waits for this chain: its calls go first when the rate limit makes calls wait."""
    newest: Optional[datetime] = None
    """Consuming side: the newest activityDate its cursors had read and the pages handed on since."""
    recheck: Recheck = field(default_factory=Recheck)
    """Consuming side: what the chain owes to late commits."""
    rereading_until: Optional[datetime] = None
    """Fetching side, on a chain restarted from a date token: the newest activityDate its cursors had
    read, up to which its pages read again what earlier runs read (counted in the run report)."""

    def range_end(self, run_started: datetime) -> datetime:
        """Where the chain's range ends: a time slice's bound, else where the run began."""
        return self.ends_before or run_started

    def hand_on(self, page: "Page", state: StreamState, recheck_floor: Optional[datetime], now: datetime) -> None:
        """Moves the cursors past `page`, once its rows are handed on.

        With a `recheck_floor` (see `late_commits`), the latest range's cursors also keep where
        the next run reads again for activities Marketo records late; a time slice needs none,
        since its range ends before the floor.
        """
        self.newest = later(self.newest, page.newest)
        read = PageRead(page.next_token, self.newest, page.more)
        if self.slice is not None:
            self.slice.change(state, self.cursor_ids, lambda cursor, since: cursor.slice_read_on(since, read, now))
            return
        recheck_from = None
        if recheck_floor is not None:
            earliest = earliest_date(page.records) if self.recheck.awaiting_first_activity else None
            recheck_from = self.recheck.after_page(earliest, recheck_floor)
        state.change(self.cursor_ids, lambda cursor: cursor.read_on(read, recheck_from, now))


@dataclass
class ChainPace:
    """How far and how fast a chain moves through its time range, from the pages fetched so far."""

    reached: Optional[datetime] = None
    """The newest activityDate fetched (or its cursors had read), where a refused token falls back to."""
    first_date: Optional[datetime] = None
    """The newest activityDate of the first page with activities: where progress is measured from."""
    pages_since_first: int = 0
    pages_fetched: int = 0
    expected_pages: float = 0.0
    """A new time slice's pages, as the chain it came from expected them, until its own pace shows."""

    def fetched(self, page_newest: Optional[datetime]) -> None:
        self.reached = later(self.reached, page_newest)
        self.pages_fetched += 1
        if self.first_date is None:
            self.first_date = page_newest
        else:
            self.pages_since_first += 1

    def pages_left(self, end: datetime) -> float:
        """Pages still to fetch until `end`, at the pace of the pages fetched so far.

        Without that pace, what the chain a time slice came from expected of its range (0 for a
        chain that has found no activities yet: sparse types, whose calls each scan one stretch
        of Marketo's log, whatever they find).
        """
        if self.first_date is None or self.reached is None or not self.paced():
            return self.expected_pages
        covered = (self.reached - self.first_date).total_seconds()
        left = (end - self.reached).total_seconds()
        return self.pages_since_first * left / covered if covered > 0 and left > 0 else 0.0

    def paced(self) -> bool:
        """Whether the chain has read far enough to tell how many pages its time range takes."""
        return self.first_date is not None and self.reached is not None and self.pages_since_first >= 2

    def blind(self) -> bool:
        """Whether many pages found no activities to tell the pace by: sparse types, whose calls each
        scan one stretch of Marketo's log whatever they find."""
        return not self.paced() and not self.expected_pages and self.pages_fetched >= settings.SLICE_MIN_PAGES


@dataclass
class Page:
    chain: Chain
    records: List[Record]
    next_token: str
    more: bool
    newest: Optional[datetime] = None
    reread: Optional[int] = None
    """On a page that reads again what earlier runs read: how many of its records they had read
    (or Marketo recorded late since); None on a page of new activities."""


def fetch_page(client: MarketoClient, tokens: PagingTokens, chain: Chain) -> Page:
    """Reads the chain's next page; falls back to a fresh token once if Marketo refuses a saved one."""
    if chain.read.token is None:
        chain.read = ChainStart(tokens.since(chain.read.since, urgent=chain.urgent), chain.read.since)
        chain.token_is_fresh = True
    try:
        answer = client.get(chain.path, {**chain.params, "nextPageToken": chain.read.token}, urgent=chain.urgent)
    except MarketoRequestError as error:
        if error.code != "1003":
            raise
        if chain.token_is_fresh:
            raise _explain_1003(error, chain) from None
        chain.read = chain.read.fell_back(chain.pace.reached, chain.ends_before)
        logger.warning(
            "Marketo refused the saved paging token of %s (%s); restarting from %s. Rows read "
            "again are merged on marketo_guid.",
            chain.path, error, chain.read.since,
        )
        return fetch_page(client, tokens, chain)
    records = answer.get("result") or []
    page = Page(chain, records, answer["nextPageToken"], bool(answer.get("moreResult")), newest_date(records))
    if chain.rereading_until is not None:
        page.reread = _dated_until(records, chain.rereading_until)
        if page.reread < len(records):
            chain.rereading_until = None  # the pages after this one hold only activities new to this run
    chain.read = ChainStart(page.next_token, chain.read.since)
    chain.token_is_fresh = False
    chain.pace.fetched(page.newest)
    return page


def _explain_1003(error: MarketoRequestError, chain: Chain) -> MarketoRequestError:
    if "listId" in chain.params:
        return MarketoListTooLarge(
            f"{error} Marketo refuses a list_id whose list holds 10,000 or more leads. Split the "
            "list into smaller static lists, or pass lead_ids instead.",
            code=error.code,
            endpoint=error.endpoint,
        )
    return error


def activity_date(record: Record) -> Optional[datetime]:
    try:
        return parse_timestamp(record.get("activityDate"))
    except (TypeError, ValueError):
        return None


def newest_date(records: Sequence[Record]) -> Optional[datetime]:
    """The newest activityDate of `records`; values that are not a datetime are skipped."""
    return _extreme_date(records, max)


def earliest_date(records: Sequence[Record]) -> Optional[datetime]:
    """The earliest activityDate of `records`; values that are not a datetime are skipped."""
    return _extreme_date(records, min)


def _extreme_date(records: Sequence[Record], pick: Callable[..., Any]) -> Optional[datetime]:
    """`pick` (min or max) of the activityDates of `records`.

    Marketo writes activityDate in whole seconds UTC, whose text sorts as the moments do: when
    every value has that form, only the one picked is parsed (half the cost of parsing each).
    """
    dates: List[Any] = [record.get("activityDate") for record in records]  # JSON: of any type, or missing
    if dates and all(type(d) is str for d in dates) and all(map(_WHOLE_SECONDS_UTC.fullmatch, dates)):
        try:
            return parse_timestamp(pick(d[:19] for d in dates) + "Z")
        except ValueError:
            pass  # the one picked is no datetime (a 13th month, say): parse them one by one
    extreme: Optional[datetime] = pick(_timestamps(dates), default=None)
    return extreme


_WHOLE_SECONDS_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:Z|\+0000)")
"""The forms Marketo writes activityDate in: `2024-01-31T23:59:59Z` or `...+0000`."""


def _timestamps(values: Sequence[Any]) -> Iterator[datetime]:
    for value in values:
        try:
            yield parse_timestamp(value)
        except ValueError:
            continue


def _dated_until(records: Sequence[Record], moment: datetime) -> int:
    """How many of `records` are dated at or before `moment`."""
    return sum(1 for record in records if (date := activity_date(record)) is not None and date <= moment)
