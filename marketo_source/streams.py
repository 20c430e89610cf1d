"""Paging and state: where each stream resumes, and how its pages are fetched.

A *cursor* is the saved position of one activity type (or of a whole stream) in dlt state:
the last `nextPageToken` and the newest activityDate seen. A *chain* is one sequence of page
calls: cursors that share a position and the same filters are read together, at most 10 types
per call. Chains run concurrently up to the client's concurrency; within a chain pages follow
each other, because each page's token comes from the one before.
"""

import logging
import math
import queue
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import AbstractSet, Any, Dict, Iterator, List, Optional, Sequence, Tuple

from marketo_source import settings
from marketo_source.client import MarketoClient
from marketo_source.budget import RunBudget, StopReason, stop_reason_for
from marketo_source.errors import MarketoListTooLarge, MarketoRequestError
from marketo_source.schema import parse_timestamp

logger = logging.getLogger("marketo_source")

Cursor = Dict[str, Any]
"""A saved position in dlt state: "token" (the last nextPageToken), "newest" (the newest
activityDate read) and "position_at" (the time the position stands at), datetimes in ISO 8601."""


class PagingTokens:
    """Asks Get Paging Token once per distinct start time and shares the answer.

    A date-based token depends only on its datetime, so one serves every endpoint and every
    type filter that starts there.
    """

    def __init__(self, client: MarketoClient) -> None:
        self._client = client
        self._tokens: Dict[str, str] = {}
        self._lock = threading.Lock()

    def since(self, moment: datetime) -> str:
        key = moment.isoformat()
        with self._lock:
            if key not in self._tokens:
                answer = self._client.get(
                    settings.PAGING_TOKEN_PATH,
                    {"sinceDatetime": key},
                    timeout=self._client.paging_token_timeout_s,
                )
                self._tokens[key] = answer["nextPageToken"]
            return self._tokens[key]


@dataclass
class Chain:
    """One sequence of page calls and the cursors it advances.

    The fetching side (`token`, `start`, `fetched_newest`) runs ahead of the consuming side
    (`newest` and the cursors), which moves only when a page's rows are handed to dlt.
    """

    path: str
    params: Dict[str, str]
    cursors: List[Cursor]
    start: datetime
    """Where a fresh token starts: the first run's start, or the lookback's restart."""
    token: Optional[str] = None
    """The token of the next page to fetch."""
    token_is_fresh: bool = False
    newest: Optional[datetime] = None
    """The newest activityDate handed on, as the cursors record it."""
    fetched_newest: Optional[datetime] = None
    """The newest activityDate fetched, where a refused token falls back to."""

    def __post_init__(self) -> None:
        self.newest = self.fetched_newest = _max_newest(self.cursors)

    def advance(self, page: "Page") -> None:
        """Moves the cursors past `page`, once its rows are handed on."""
        self.newest = _later(self.newest, page.newest)
        # A chain at its end stands at "now"; in the middle, near the newest activity it read.
        position = datetime.now(timezone.utc) if not page.more else self.newest
        for cursor in self.cursors:
            cursor["token"] = page.next_token
            if self.newest is not None:
                cursor["newest"] = self.newest.isoformat()
            if position is not None:
                cursor["position_at"] = position.isoformat()


@dataclass
class Page:
    chain: Chain
    records: List[Dict[str, Any]]
    next_token: str
    more: bool
    newest: Optional[datetime] = field(default=None)


def chains_for_cursors(
    path: str,
    cursors: Dict[str, Cursor],
    params: Dict[str, str],
    start: datetime,
    lookback: Optional[timedelta] = None,
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
        lookback: With a lookback, cursors restart from their newest activityDate minus it.
        group_param: The parameter listing the grouped keys (`activityTypeIds`), if any.
        heavy: Keys expected to hold many records, spread over the groups (see `groups_of`).
    """
    by_position: Dict[Any, List[str]] = {}
    for key, cursor in cursors.items():
        by_position.setdefault(_position(cursor, start, lookback), []).append(key)
    size = settings.MAX_TYPES_PER_CALL if group_param else max(1, len(cursors))
    chains = []
    for (token, chain_start), keys in by_position.items():
        for group in groups_of(keys, size, heavy):
            chain_params = {**params, group_param: ",".join(group)} if group_param else dict(params)
            chains.append(Chain(path, chain_params, [cursors[k] for k in group], chain_start, token))
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


def _position(cursor: Cursor, start: datetime, lookback: Optional[timedelta]) -> Any:
    if lookback and cursor.get("newest"):
        return None, parse_timestamp(cursor["newest"]) - lookback
    return cursor.get("token"), start


def fetch_page(client: MarketoClient, tokens: PagingTokens, chain: Chain) -> Page:
    """Reads the chain's next page; falls back to a fresh token once if Marketo refuses a saved one."""
    if chain.token is None:
        chain.token, chain.token_is_fresh = tokens.since(chain.start), True
    try:
        answer = client.get(chain.path, {**chain.params, "nextPageToken": chain.token})
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
        chain.token, chain.start = None, chain.fetched_newest or chain.start
        return fetch_page(client, tokens, chain)
    records = answer.get("result") or []
    page = Page(chain, records, answer["nextPageToken"], bool(answer.get("moreResult")), _newest(records))
    chain.token, chain.token_is_fresh = page.next_token, False
    chain.fetched_newest = _later(chain.fetched_newest, page.newest)
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
    """

    def __init__(
        self, client: MarketoClient, tokens: PagingTokens, max_workers: int, budget: RunBudget, max_waiting_pages: int
    ) -> None:
        self._client = client
        self._tokens = tokens
        self._max_workers = max(1, max_workers)
        self._budget = budget
        self._max_waiting = max_waiting_pages
        self._lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._open: List["StreamPages"] = []
        self.page_arrived = threading.Event()
        """Set whenever any stream gets a page or ends a chain."""
        self.stopped: Optional[StopReason] = None

    def pages(self, chains: Sequence[Chain]) -> "StreamPages":
        """Starts fetching a stream's chains; iterate the result to consume its pages."""
        stream = StreamPages(self, len(chains))
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="marketo")
            self._open.append(stream)
            for chain in chains:
                self._continue(stream, chain)
        return stream

    def _continue(self, stream: "StreamPages", chain: Chain) -> None:
        """Starts the chain's next call, or ends the chain; called with the lock held."""
        self.stopped = self.stopped or self._budget.spent(self._client.calls_made())
        if self.stopped is not None or stream.failure is not None:
            stream.chains_running -= 1
            stream.wake()
        elif stream.waiting() >= self._max_waiting:
            stream.parked.append(chain)
        else:
            assert self._pool is not None
            # Counted when the call starts, so that prefetching cannot carry a run past max_pages.
            self._budget.pages += 1
            self._pool.submit(self._fetch, stream, chain)

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
                stream.chains_running -= 1
            stream.wake()
            return
        stream.put(page)
        stream.wake()
        with self._lock:
            if page.more:
                self._continue(stream, chain)
            else:
                stream.chains_running -= 1
        stream.wake()

    def taken(self, stream: "StreamPages") -> None:
        """Restarts the chains that waited for room once the consumer took a page."""
        with self._lock:
            while stream.parked and stream.waiting() < self._max_waiting:
                self._continue(stream, stream.parked.pop(0))

    def finished(self, stream: "StreamPages") -> bool:
        """Whether the stream has nothing left to give."""
        with self._lock:
            return stream.chains_running == 0 and not stream.parked and stream.waiting() == 0

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

    def __init__(self, scheduler: PageScheduler, chains: int) -> None:
        self._scheduler = scheduler
        self._ready: "queue.Queue[Page]" = queue.Queue()
        self.chains_running = chains
        self.parked: List[Chain] = []
        self.failure: Optional[BaseException] = None

    @property
    def stopped(self) -> Optional[StopReason]:
        return self._scheduler.stopped

    def put(self, page: Page) -> None:
        self._ready.put(page)

    def waiting(self) -> int:
        return self._ready.qsize()

    def wake(self) -> None:
        self._scheduler.page_arrived.set()

    def __iter__(self) -> Iterator[Optional[Page]]:
        try:
            while True:
                try:
                    page = self._ready.get_nowait()
                except queue.Empty:
                    if self._scheduler.finished(self):
                        break
                    if not self._scheduler.pages_waiting_anywhere():
                        self._scheduler.page_arrived.wait(self.POLL_S)
                        self._scheduler.page_arrived.clear()
                    yield None
                    continue
                page.chain.advance(page)
                self._scheduler.taken(self)
                yield page
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
    if cursor.get("position_at"):
        position = parse_timestamp(cursor["position_at"])
    elif cursor.get("token"):
        return None  # a position without its time: nothing to judge it by
    else:
        position = start
    horizon = now - timedelta(days=retention_days)
    return (position, horizon) if position < horizon else None


def _newest(records: Sequence[Dict[str, Any]]) -> Optional[datetime]:
    """The newest activityDate of `records`; values that are not a datetime are skipped.

    Marketo writes activityDate in whole seconds UTC, whose text sorts as the moments do: when
    every value has that form, only the greatest is parsed (half the cost of parsing each).
    """
    dates = [record.get("activityDate") for record in records]
    if dates and all(type(d) is str for d in dates) and all(map(_WHOLE_SECONDS_UTC.fullmatch, dates)):
        try:
            return parse_timestamp(max(d[:19] for d in dates) + "Z")
        except ValueError:
            pass  # the greatest is no datetime (a 13th month, say): parse them one by one
    return max(_timestamps(dates), default=None)


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

