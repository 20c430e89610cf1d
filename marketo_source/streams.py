"""Paging and state: where each stream resumes, and how its pages are fetched.

A *cursor* is the saved position of one activity type (or of a whole stream) in dlt state:
the last `nextPageToken` and the newest activityDate seen. A *chain* is one sequence of page
calls: cursors that share a position and the same filters are read together, at most 10 types
per call. Chains run concurrently up to the client's concurrency; within a chain pages follow
each other, because each page's token comes from the one before.

With `time_slices`, a long chain whose calls are slow hands the later half of its remaining time
range to a new chain, a *slice*, that starts from a date token and runs alongside it. Tokens keep
their start date as a filter, so a slice never sees activities dated before its start: the earlier
chain keeps every activity dated before that start, and reads on until a page lies wholly
`overlap` past it, so that activities Marketo commits up to `overlap` late are still read once.
A slice's position is saved in its cursors' "slices" until it is done.

Where a chain restarts so that activities Marketo records late are still read is the business
of `late_commits`.
"""

import logging
import math
import queue
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import AbstractSet, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from marketo_source import settings
from marketo_source.client import MarketoClient
from marketo_source.budget import RunBudget, StopReason, stop_reason_for
from marketo_source.errors import MarketoListTooLarge, MarketoRequestError
from marketo_source.late_commits import Recheck, recheck_floor, restart_point
from marketo_source.schema import parse_timestamp

logger = logging.getLogger("marketo_source")

Cursor = Dict[str, Any]
"""A saved position in dlt state: "token" (the last nextPageToken), "newest" (the newest
activityDate read), "position_at" (the time the position stands at), "recheck_from" and
"caught_up" (see `late_commits`) and, once time slices split its range, "since" (where a fresh
token starts) and "slices" (the unfinished earlier slices, in order, each with "token", "since",
"newest", "position_at", "keep_before" and "stop_at"); datetimes in ISO 8601."""


class PagingTokens:
    """Asks Get Paging Token once per distinct start time and shares the answer.

    A date-based token depends only on its datetime, so one serves every endpoint and every
    type filter that starts there.
    """

    def __init__(self, client: MarketoClient) -> None:
        self._client = client
        self._tokens: Dict[str, Tuple[str, float]] = {}
        self._lock = threading.Lock()

    def since(self, moment: datetime, urgent: bool = False) -> str:
        """A token for `moment`; an urgent chain's token call goes first when calls wait."""
        key = moment.isoformat()
        with self._lock:
            token, asked_at = self._tokens.get(key, (None, 0.0))
            # Shared while fresh: Marketo does not say when a token expires.
            if token is None or time.monotonic() - asked_at > settings.PAGING_TOKEN_SHARED_S:
                answer = self._client.get(
                    settings.PAGING_TOKEN_PATH,
                    {"sinceDatetime": key},
                    timeout=self._client.paging_token_timeout_s,
                    urgent=urgent,
                )
                token, asked_at = answer["nextPageToken"], time.monotonic()
                self._tokens[key] = token, asked_at
            return token


@dataclass(eq=False)  # chains are told apart by identity: two may hold equal fields
class Chain:
    """One sequence of page calls and the cursors it advances.

    The fetching side (`token`, `start`, `fetched_newest`, the bounds) runs ahead of the consuming
    side (`newest` and the cursors), which moves only when a page's rows are handed to dlt.
    """

    path: str
    params: Dict[str, str]
    cursors: List[Cursor]
    """What the chain's pages advance: its types' cursors, or for a slice their entries in "slices"."""
    start: datetime
    """Where a fresh token starts: the first run's start, a slice's start, or the lookback's restart."""
    token: Optional[str] = None
    """The token of the next page to fetch."""
    owners: List[Cursor] = field(default_factory=list)
    """The chain's types' cursors (default: `cursors`)."""
    keep_before: Optional[datetime] = None
    """A slice keeps only the activities dated before this; the next slice reads the others."""
    stop_at: Optional[datetime] = None
    """A slice ends at its first activity dated at or after this."""
    token_is_fresh: bool = False
    newest: Optional[datetime] = None
    """The newest activityDate handed on, as the cursors record it."""
    fetched_newest: Optional[datetime] = None
    """The newest activityDate fetched, where a refused token falls back to."""
    first_date: Optional[datetime] = None
    """The newest activityDate of the first page with activities: where its progress is measured from."""
    pages_since_first: int = 0
    pages_fetched: int = 0
    urgent: bool = False
    """Whether the run waits for this chain: its calls go first when the rate limit makes calls wait."""
    expected_pages: float = 0.0
    """A new slice's pages, as its chain expected them, until its own pace shows."""
    recheck: Recheck = field(default_factory=Recheck)
    """What the chain owes to late commits (consuming side)."""
    rereading_until: Optional[datetime] = None
    """Set on a chain that restarted from a date token: the newest activityDate its cursors had
    read, up to which its pages read again what earlier runs read (fetching side, for the report)."""

    def __post_init__(self) -> None:
        if not self.owners:
            self.owners = self.cursors
        self.newest = self.fetched_newest = _max_newest(self.cursors)

    @property
    def is_slice(self) -> bool:
        """Whether the chain reads a slice that another chain continues after."""
        return self.cursors is not self.owners

    def advance(self, page: "Page", recheck_floor: Optional[datetime]) -> None:
        """Moves the cursors past `page`, once its rows are handed on.

        With a `recheck_floor` (see `late_commits`), the cursors also keep where the next run
        reads again for activities Marketo records late; a slice that another chain continues
        after needs none, since its range ends before the floor.
        """
        if self.is_slice and not page.more:
            self._remove_slice()
            return
        self.newest = _later(self.newest, page.newest)
        # A chain at its end stands at "now"; in the middle, near the newest activity it read.
        position = datetime.now(timezone.utc) if not page.more else self.newest
        recheck_from = None
        if recheck_floor is not None and not self.is_slice:
            earliest = _earliest(page.records) if self.recheck.awaiting_first_activity else None
            recheck_from = self.recheck.after_page(earliest, recheck_floor).isoformat()
        for cursor in self.cursors:
            cursor["token"] = page.next_token
            if self.newest is not None:
                cursor["newest"] = self.newest.isoformat()
            if position is not None:
                cursor["position_at"] = position.isoformat()
            if recheck_from is not None:
                cursor["recheck_from"], cursor["caught_up"] = recheck_from, not page.more

    def bound(self, page: "Page") -> None:
        """Keeps only the activities of this slice, and ends it once a whole page lies past its overlap.

        A record without a readable activityDate stays: the next slice may read it too, and merge
        on marketo_guid keeps one. A single activity dated in the future does not end the slice.
        """
        if self.keep_before is None:
            return
        dates = [_activity_date(record) for record in page.records]
        known = [date for date in dates if date is not None]
        if self.stop_at is not None and known and min(known) >= self.stop_at:
            page.more = False
        kept = [record for record, date in zip(page.records, dates) if date is None or date < self.keep_before]
        if len(kept) < len(page.records):
            page.records, page.newest = kept, _newest(kept)

    def pages_left(self, end: datetime) -> float:
        """Pages still to fetch until `end`, at the pace of the pages fetched so far.

        Without that pace, what the chain that opened this slice expected of its range (0 for a
        chain that has found no activities yet: sparse types, whose calls each scan one stretch
        of Marketo's log, whatever they find).
        """
        if not self.paced():
            return self.expected_pages
        assert self.first_date is not None and self.fetched_newest is not None
        covered = (self.fetched_newest - self.first_date).total_seconds()
        left = (end - self.fetched_newest).total_seconds()
        return self.pages_since_first * left / covered if covered > 0 and left > 0 else 0.0

    def blind(self) -> bool:
        """Whether many pages found no activities to tell the chain's pace by: sparse types, whose
        calls each scan one stretch of Marketo's log whatever they find. Such a chain cannot be
        sliced well (a slice ends only past activities), so it goes first when calls wait."""
        return not self.paced() and not self.expected_pages and self.pages_fetched >= settings.SLICE_MIN_PAGES

    def paced(self) -> bool:
        """Whether the chain has read far enough to tell how many pages its time range takes."""
        return self.first_date is not None and self.fetched_newest is not None and self.pages_since_first >= 2

    def _remove_slice(self) -> None:
        for owner, entry in zip(self.owners, self.cursors):
            owner["slices"] = [other for other in owner.get("slices", ()) if other is not entry]
            if not owner["slices"]:
                del owner["slices"]


@dataclass
class SliceSplit:
    """Stands in a stream's queue where `chain` handed its range from `at` on to `slice`.

    Applied when the consumer reaches it, after the chain's pages fetched before the split and
    before any page bounded by it, so that the cursors always describe what was handed on.
    """

    chain: Chain
    slice: Chain
    at: datetime
    stop_at: datetime

    def apply(self) -> None:
        chain, new = self.chain, self.slice
        if chain.is_slice:
            new.cursors = [
                _insert_slice(owner, after=entry, entry={"keep_before": entry.get("keep_before"),
                                                         "stop_at": entry.get("stop_at")})
                for owner, entry in zip(chain.owners, chain.cursors)
            ]
        else:  # the chain read the latest range: its entries move into "slices", the new slice takes its place
            chain.cursors = [
                _insert_slice(owner, after=None, entry={k: owner.get(k) for k in _POSITION_KEYS})
                for owner in chain.owners
            ]
            for owner in chain.owners:
                owner.pop("token", None)
                if owner.get("caught_up"):
                    owner["caught_up"] = False  # the new slice has yet to read to Marketo's end
            new.cursors = chain.owners
            new.recheck, chain.recheck = chain.recheck, Recheck()
        for entry in new.cursors:
            entry["since"] = self.at.isoformat()
        for entry in chain.cursors:
            entry["keep_before"], entry["stop_at"] = self.at.isoformat(), self.stop_at.isoformat()


_POSITION_KEYS = ("token", "since", "newest", "position_at")


def _insert_slice(owner: Cursor, after: Optional[Cursor], entry: Cursor) -> Cursor:
    """Puts `entry` into the owner's slices, right after `after` (None: last)."""
    slices = owner.setdefault("slices", [])
    index = len(slices) if after is None else next(n for n, other in enumerate(slices) if other is after) + 1
    slices.insert(index, entry)
    return entry


@dataclass
class Page:
    chain: Chain
    records: List[Dict[str, Any]]
    next_token: str
    more: bool
    newest: Optional[datetime] = field(default=None)
    reread: Optional[int] = None
    """On a page that reads again what earlier runs read: how many of its records they had read
    (or Marketo recorded late since); None on a page of new activities."""


def chains_for_cursors(
    path: str,
    cursors: Dict[str, Cursor],
    params: Dict[str, str],
    start: datetime,
    lookback: Optional[timedelta] = None,
    recheck: bool = False,
    latest_restart: Optional[datetime] = None,
    group_param: Optional[str] = None,
    heavy: AbstractSet[str] = frozenset(),
) -> List[Chain]:
    """Groups cursors that stand at the same position into chains.

    A group keeps reading from its own position, so groups once read stay as they are; only
    cursors that share a position (all of them on a first run) are grouped anew.

    Args:
        path: The endpoint the chains read.
        cursors: Cursor per key; with `group_param`, the key is the value sent in that parameter
            (an activity type id) and at most 10 keys share a chain.
        params: Filters every call of these chains sends.
        start: The first run's start; cursors with no token begin there.
        lookback: With a lookback, cursors restart from their newest activityDate minus it
            (or earlier, to read late commits again: see `late_commits`).
        recheck: Whether cursors that read to Marketo's end restart where they must read late
            commits again (see `late_commits`), rather than from their tokens.
        latest_restart: With `recheck`, no cursor restarts later than this (see
            `late_commits.latest_restart`).
        group_param: The parameter listing the grouped keys (`activityTypeIds`), if any.
        heavy: Keys expected to hold many records, spread over the groups (see `groups_of`).
    """
    by_position: Dict[Any, List[str]] = {}
    for key, cursor in cursors.items():
        position = _position(cursor, start, lookback, recheck, latest_restart)
        by_position.setdefault((position, _slices_key(cursor)), []).append(key)
    size = settings.MAX_TYPES_PER_CALL if group_param else max(1, len(cursors))
    chains = []
    for ((token, chain_start, restart), _), keys in by_position.items():
        for group in groups_of(keys, size, heavy):
            chain_params = {**params, group_param: ",".join(group)} if group_param else dict(params)
            owners = [cursors[k] for k in group]
            chains += _slice_chains(path, chain_params, owners, start)
            chain = Chain(path, chain_params, owners, chain_start, token, recheck=Recheck.for_cursor(owners[0], restart))
            chain.rereading_until = chain.newest if restart is not None else None
            chains.append(chain)
    return chains


def _slice_chains(path: str, params: Dict[str, str], owners: List[Cursor], start: datetime) -> List[Chain]:
    """The chains of the unfinished slices these cursors share."""
    chains = []
    for entries in zip(*(owner.get("slices", ()) for owner in owners)):
        entry = entries[0]
        chains.append(
            Chain(
                path, params, list(entries), _since(entry, start), entry.get("token"), owners=owners,
                keep_before=parse_timestamp(entry["keep_before"]), stop_at=parse_timestamp(entry["stop_at"]),
            )
        )
    return chains


def groups_of(keys: Sequence[str], size: int, heavy: AbstractSet[str] = frozenset()) -> List[List[str]]:
    """The fewest groups of at most `size` keys, with the heavy keys spread evenly over them.

    A page call scans a bounded stretch of Marketo's log and returns at most 300 records: a
    group of sparse types costs the scan's calls, and a group holding several high-volume types
    fills its pages before the stretch ends and needs more. Spread over the groups, the heavy
    types keep each group near the scan's cost: 324 page calls instead of 373 for the 100,000
    activities of issue 5's benchmark, 304 at best. Without heavy keys: groups in key order.
    """
    count = max(1, math.ceil(len(keys) / size))
    groups: List[List[str]] = [[] for _ in range(count)]
    loads = [0] * count
    for key in sorted(keys, key=lambda k: k not in heavy):  # heavy keys first, each kept in order
        target = min((g for g in range(count) if len(groups[g]) < size), key=loads.__getitem__)
        groups[target].append(key)
        loads[target] += key in heavy
    order = {key: n for n, key in enumerate(keys)}
    return [sorted(group, key=order.__getitem__) for group in groups if group]


def _position(
    cursor: Cursor, start: datetime, lookback: Optional[timedelta], recheck: bool, latest: Optional[datetime]
) -> Any:
    """(token, start of a fresh token, restart): where the cursor's chain starts this run."""
    restart = restart_point(cursor, lookback, recheck, latest)
    if restart is not None:
        return None, restart, restart
    return cursor.get("token"), _since(cursor, start), None


def _since(cursor: Cursor, start: datetime) -> datetime:
    return parse_timestamp(cursor["since"]) if cursor.get("since") else start


def _slices_key(cursor: Cursor) -> Tuple[Any, ...]:
    return tuple(
        (entry.get("token"), entry.get("since"), entry.get("keep_before"), entry.get("stop_at"))
        for entry in cursor.get("slices", ())
    )


def fetch_page(client: MarketoClient, tokens: PagingTokens, chain: Chain) -> Page:
    """Reads the chain's next page; falls back to a fresh token once if Marketo refuses a saved one."""
    if chain.token is None:
        chain.token, chain.token_is_fresh = tokens.since(chain.start, urgent=chain.urgent), True
    try:
        answer = client.get(chain.path, {**chain.params, "nextPageToken": chain.token}, urgent=chain.urgent)
    except MarketoRequestError as error:
        if error.code != "1003":
            raise
        if chain.token_is_fresh:
            raise _explain_1003(error, chain) from None
        logger.warning(
            "Marketo refused the saved paging token of %s (%s); restarting from %s. Rows read "
            "again are merged on marketo_guid.",
            chain.path, error, chain.fetched_newest or chain.start,
        )
        restart = chain.fetched_newest or chain.start
        # A slice has read past its bound into the overlap: what it keeps lies before the bound.
        chain.token, chain.start = None, min(restart, chain.keep_before) if chain.keep_before else restart
        return fetch_page(client, tokens, chain)
    records = answer.get("result") or []
    page = Page(chain, records, answer["nextPageToken"], bool(answer.get("moreResult")), _newest(records))
    if chain.rereading_until is not None:
        page.reread = _dated_until(records, chain.rereading_until)
        if page.reread < len(records):
            chain.rereading_until = None  # the pages after this one hold only activities new to this run
    chain.token, chain.token_is_fresh = page.next_token, False
    chain.fetched_newest = _later(chain.fetched_newest, page.newest)
    chain.pages_fetched += 1
    if chain.first_date is None:
        chain.first_date = page.newest
    else:
        chain.pages_since_first += 1
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


class PageScheduler:
    """Fetches the pages of every stream of a run concurrently, ahead of their consumers.

    Each chain has at most one call in flight, and its next call starts as soon as its page
    arrives, since the page carries the next token. A stream whose consumer lags holds at most
    `max_waiting_pages` pages; its chains wait until it catches up, which bounds memory.
    Cursors move only when the consumer takes a page, so state never runs ahead of the rows
    handed to dlt. A budget reached, the daily quota used up or a transient failure past its
    retries stops every stream cleanly; `stopped` says why.

    With `slice_overlap`, a chain that would outlast the rest of the run hands half of its range
    to a new slice (see `_split_if_worthwhile`). With `late_commit_window`, the cursors keep
    where the next run reads again for activities Marketo records late (see `late_commits`).
    """

    def __init__(
        self,
        client: MarketoClient,
        tokens: PagingTokens,
        max_workers: int,
        budget: RunBudget,
        max_waiting_pages: int,
        slice_overlap: Optional[timedelta] = None,
        late_commit_window: Optional[timedelta] = None,
    ) -> None:
        self._client = client
        self._tokens = tokens
        self._max_workers = max(1, max_workers)
        self._budget = budget
        self._max_waiting = max_waiting_pages
        self._slice_overlap = slice_overlap
        self._late_commit_window = late_commit_window
        self._started_at = datetime.now(timezone.utc)
        self._lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._open: List["StreamPages"] = []
        self.page_arrived = threading.Event()
        """Set whenever any stream gets a page or ends a chain."""
        self.stopped: Optional[StopReason] = None

    def pages(self, chains: Sequence[Chain]) -> "StreamPages":
        """Starts fetching a stream's chains; iterate the result to consume its pages."""
        stream = StreamPages(self)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="marketo")
            self._open.append(stream)
            for chain in chains:
                stream.live.append(chain)
                self._continue(stream, chain)
        return stream

    def recheck_floor(self) -> Optional[datetime]:
        """Where the chains this run finishes read again next run, or None without a late-commit window."""
        if self._late_commit_window is None:
            return None
        return recheck_floor(self._started_at, self._late_commit_window)

    def _continue(self, stream: "StreamPages", chain: Chain) -> None:
        """Starts the chain's next call, or ends the chain; called with the lock held."""
        self.stopped = self.stopped or self._budget.spent(self._client.calls_made())
        if self.stopped is not None or stream.failure is not None:
            self._end(stream, chain)
        elif stream.waiting() >= self._max_waiting:
            stream.parked.append(chain)
        else:
            assert self._pool is not None
            # Counted when the call starts, so that prefetching cannot carry a run past max_pages.
            self._budget.pages += 1
            self._pool.submit(self._fetch, stream, chain)

    def _end(self, stream: "StreamPages", chain: Chain) -> None:
        stream.live.remove(chain)
        stream.wake()

    def _fetch(self, stream: "StreamPages", chain: Chain) -> None:
        try:
            page = fetch_page(self._client, self._tokens, chain)
        except Exception as error:  # handed to the consumer, after the pages it already has
            with self._lock:
                reason = stop_reason_for(error)
                if reason is None:
                    stream.failure = stream.failure or error
                else:
                    self.stopped = self.stopped or reason
                self._end(stream, chain)
            return
        with self._lock:
            try:
                chain.bound(page)  # under the lock: a split changes the bounds of pages after it
                stream.put(page)
                if page.more:
                    self._continue(stream, chain)
                else:
                    self._end(stream, chain)
                self._plan()  # after _end: a chain past its last page is no candidate
            except Exception as error:  # a bug of ours: the pool would drop it, and the stream wait forever
                stream.failure = stream.failure or error
                if chain in stream.live:
                    self._end(stream, chain)
        stream.wake()

    def _plan(self) -> None:
        """Marks the chains the run waits for as urgent, and opens a time slice if one is worth it.

        The run cannot end before its remaining calls fit in the rate limit (`run_s`); a chain
        whose own calls, one after another, take about that long or longer is what the run
        waits for.
        """
        answer_s = self._client.answer_s
        if not answer_s:
            return
        live = [(stream, chain) for stream in self._open for chain in stream.live]
        left = {id(chain): chain.pages_left(self._range_end(chain)) for _, chain in live}
        limiter = self._client.limiter
        run_s = sum(left.values()) * limiter.period_s / limiter.calls
        for _, chain in live:
            chain.urgent = chain.blind() or left[id(chain)] * answer_s >= settings.URGENT_SHARE_OF_RUN * run_s
        if self._slice_overlap is not None and self.stopped is None:
            self._split_if_worthwhile(live, left, run_s, answer_s, self._slice_overlap)

    def _split_if_worthwhile(
        self,
        live: List[Tuple["StreamPages", Chain]],
        left: Dict[int, float],
        run_s: float,
        answer_s: float,
        overlap: timedelta,
    ) -> None:
        """Hands half of the range of a chain that would outlast the rest of the run to a new slice.

        Shorter chains are left whole: slicing them costs calls and saves no time.
        """
        if len(live) >= self._max_workers or any(stream.parked or stream.waiting() > 1 for stream in self._open):
            return  # no room for a call more, or the consumers are the bottleneck
        for stream, chain in sorted(live, key=lambda item: -left[id(item[1])]):
            pages = left[id(chain)]
            if pages < settings.SLICE_MIN_PAGES or pages * answer_s < max(settings.SLICE_MIN_SECONDS, run_s):
                return
            if not chain.paced():
                continue  # split a new slice once its own pace shows where its range lies
            at = self._slice_start(chain, overlap)
            if at is not None:
                self._open_slice(stream, chain, at, overlap, pages)
                return

    def _range_end(self, chain: Chain) -> datetime:
        """Where the chain's range ends: its slice's bound, or for the latest range this run's start."""
        return chain.keep_before or self._started_at

    def _slice_start(self, chain: Chain, overlap: timedelta) -> Optional[datetime]:
        """Where a new slice would take over the chain's range, or None if too near the chain's position."""
        assert chain.fetched_newest is not None
        position = chain.fetched_newest
        at = position + (self._range_end(chain) - position) / 2
        if chain.keep_before is None:
            # The new slice reads on into later runs with its start as the token's date filter: an
            # activity dated before it and committed after this run began is `overlap` late or more.
            at = min(at, self._started_at - overlap)
        at = at.replace(microsecond=0)
        return at if at - position >= settings.SLICE_MIN_SPAN_PER_OVERLAP * overlap else None

    def _open_slice(self, stream: "StreamPages", chain: Chain, at: datetime, overlap: timedelta, pages: float) -> None:
        new = Chain(chain.path, chain.params, [], at, owners=chain.owners, keep_before=chain.keep_before,
                    stop_at=chain.stop_at)
        chain.keep_before, chain.stop_at = at, at + overlap
        new.expected_pages = pages / 2
        stream.put(SliceSplit(chain, new, at, at + overlap))
        stream.slices_opened += 1
        logger.info("%s: reading from %s on in a new time slice, alongside the chain before it (%.0f pages to go)",
                    chain.path, at.isoformat(), pages)
        stream.live.append(new)
        self._continue(stream, new)

    def taken(self, stream: "StreamPages") -> None:
        """Restarts the chains that waited for room once the consumer took a page."""
        with self._lock:
            while stream.parked and stream.waiting() < self._max_waiting:
                self._continue(stream, stream.parked.pop(0))

    def finished(self, stream: "StreamPages") -> bool:
        """Whether the stream has nothing left to give."""
        with self._lock:
            return not stream.live and stream.waiting() == 0

    def pages_waiting_anywhere(self) -> bool:
        """Whether any stream holds a page its consumer has not taken."""
        with self._lock:
            return any(stream.waiting() for stream in self._open)

    def close(self, stream: "StreamPages") -> None:
        """Ends a consumer; the last one to end stops the workers."""
        with self._lock:
            self._open.remove(stream)
            if not self._open and self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


class StreamPages:
    """The pages of one stream, in the order each chain produced them.

    Iterating yields a page as soon as one is ready, and None when there is none, so that the
    consumer can hand control back to dlt and let another stream consume: it waits for a page
    only while no stream has one.
    """

    POLL_S = 0.05

    def __init__(self, scheduler: PageScheduler) -> None:
        self._scheduler = scheduler
        self._ready: "queue.Queue[Union[Page, SliceSplit]]" = queue.Queue()
        self.live: List[Chain] = []
        """Chains not yet ended: fetching, waiting for room, or parked."""
        self.parked: List[Chain] = []
        self.failure: Optional[BaseException] = None
        self.slices_opened = 0

    @property
    def stopped(self) -> Optional[StopReason]:
        return self._scheduler.stopped

    def put(self, item: Union[Page, SliceSplit]) -> None:
        self._ready.put(item)

    def waiting(self) -> int:
        return self._ready.qsize()

    def wake(self) -> None:
        self._scheduler.page_arrived.set()

    def __iter__(self) -> Iterator[Optional[Page]]:
        try:
            while True:
                try:
                    item = self._ready.get_nowait()
                except queue.Empty:
                    if self._scheduler.finished(self):
                        break
                    if not self._scheduler.pages_waiting_anywhere():
                        self._scheduler.page_arrived.wait(self.POLL_S)
                        self._scheduler.page_arrived.clear()
                    yield None
                    continue
                self._scheduler.taken(self)
                if isinstance(item, SliceSplit):
                    item.apply()
                    continue
                item.chain.advance(item, self._scheduler.recheck_floor())
                yield item
        finally:
            self._scheduler.close(self)
        if self.failure is not None:
            raise self.failure


def retention_gap(
    cursor: Cursor, start: datetime, retention_days: Optional[int], now: datetime
) -> Optional[Tuple[datetime, datetime]]:
    """The window Marketo may have purged before this cursor reads it again, or None.

    A cursor without a position starts at `start`; Marketo keeps `retention_days` of history.
    """
    if retention_days is None:
        return None
    position = earliest_position(cursor, start)
    if position is None:
        return None  # a position without its time: nothing to judge it by
    horizon = now - timedelta(days=retention_days)
    return (position, horizon) if position < horizon else None


def earliest_position(cursor: Cursor, start: Optional[datetime]) -> Optional[datetime]:
    """The time the cursor's least advanced part (itself or an unfinished slice) stands at.

    A part without a token stands at its "since" or at `start`; a slice with a token but no time
    yet (its pages were all empty) at least at its "since". None when no part tells.
    """
    positions = []
    for part in (cursor, *cursor.get("slices", ())):
        if part.get("position_at"):
            positions.append(parse_timestamp(part["position_at"]))
        elif part.get("since"):
            positions.append(parse_timestamp(part["since"]))
        elif not part.get("token"):
            positions.append(start)
    known = [p for p in positions if p is not None]
    return min(known, default=None)


def _activity_date(record: Dict[str, Any]) -> Optional[datetime]:
    try:
        return parse_timestamp(record.get("activityDate"))
    except (TypeError, ValueError):
        return None


def _newest(records: Sequence[Dict[str, Any]]) -> Optional[datetime]:
    """The newest activityDate of `records`; values that are not a datetime are skipped."""
    return _extreme_date(records, max)


def _earliest(records: Sequence[Dict[str, Any]]) -> Optional[datetime]:
    """The earliest activityDate of `records`; values that are not a datetime are skipped."""
    return _extreme_date(records, min)


def _extreme_date(records: Sequence[Dict[str, Any]], pick: Any) -> Optional[datetime]:
    """`pick` (min or max) of the activityDates of `records`.

    Marketo writes activityDate in whole seconds UTC, whose text sorts as the moments do: when
    every value has that form, only the one picked is parsed (half the cost of parsing each).
    """
    dates = [record.get("activityDate") for record in records]
    if dates and all(type(d) is str for d in dates) and all(map(_WHOLE_SECONDS_UTC.fullmatch, dates)):
        try:
            return parse_timestamp(pick(d[:19] for d in dates) + "Z")
        except ValueError:
            pass  # the one picked is no datetime (a 13th month, say): parse them one by one
    return pick(_timestamps(dates), default=None)


def _dated_until(records: Sequence[Dict[str, Any]], moment: datetime) -> int:
    """How many of `records` are dated at or before `moment`."""
    return sum(1 for record in records if (date := _activity_date(record)) is not None and date <= moment)


_WHOLE_SECONDS_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:Z|\+0000)")
"""The forms Marketo writes activityDate in: `2024-01-31T23:59:59Z` or `...+0000`."""


def _timestamps(values: Sequence[Any]) -> Iterator[datetime]:
    for value in values:
        try:
            yield parse_timestamp(value)
        except ValueError:
            continue


def _later(moment: Optional[datetime], other: Optional[datetime]) -> Optional[datetime]:
    if moment is None or (other is not None and other > moment):
        return other
    return moment


def _max_newest(cursors: Sequence[Cursor]) -> Optional[datetime]:
    moments = [parse_timestamp(c["newest"]) for c in cursors if c.get("newest")]
    return max(moments) if moments else None

