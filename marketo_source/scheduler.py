"""Moving pages: every stream's chains fetched concurrently, ahead of their consumers.

Each chain has at most one call in flight, and its next call starts as soon as its page arrives,
since the page carries the next token. A stream whose consumer lags holds at most
`max_waiting_pages` pages; its chains wait until it catches up, which bounds memory. Cursors move
only when the consumer takes a page, so state never runs ahead of the rows handed to dlt. A
budget reached, the daily quota used up or a transient failure past its retries stops every
stream cleanly; `stopped` says why.

When the rate limit makes calls wait, the calls of the chains the run waits for go first. A time
slicer (`time_slices`), when given, may hand part of a long chain's range to a new chain.
"""

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Deque, Iterator, List, Optional, Sequence, Union

from marketo_source import settings
from marketo_source.budget import RunBudget, StopReason, stop_reason_for
from marketo_source.client import MarketoClient
from marketo_source.late_commits import recheck_floor
from marketo_source.paging import Chain, Page, PagingTokens, fetch_page
from marketo_source.state import StreamState
from marketo_source.time_slices import SliceSplit, TimeSlicer, bound_to_slice

Item = Union[Page, SliceSplit]


class PageScheduler:
    """Fetches the pages of every stream of a run concurrently, ahead of their consumers."""

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
        self._late_commit_window = late_commit_window
        self._started_at = datetime.now(timezone.utc)
        self._slicer = None if slice_overlap is None else TimeSlicer(slice_overlap, self._started_at)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        """Notified whenever a stream gets an item or a chain ends."""
        self._pool: Optional[ThreadPoolExecutor] = None
        self._open: List[StreamPages] = []
        self.stopped: Optional[StopReason] = None

    def pages(self, chains: Sequence[Chain], state: StreamState) -> "StreamPages":
        """Starts fetching a stream's chains; iterate the result to consume its pages, which move `state`."""
        stream = StreamPages(self, state)
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

    # -- the fetching side (worker threads) ---------------------------------------------------

    def _continue(self, stream: "StreamPages", chain: Chain) -> None:
        """Starts the chain's next call, or ends the chain; called with the lock held."""
        self.stopped = self.stopped or self._budget.spent(self._client.calls_made())
        if self.stopped is not None or stream.failure is not None:
            self._end(stream, chain)
        elif len(stream.ready) >= self._max_waiting:
            stream.parked.append(chain)
        else:
            assert self._pool is not None
            # Counted when the call starts, so that prefetching cannot carry a run past max_pages.
            self._budget.page_started()
            self._pool.submit(self._fetch, stream, chain)

    def _end(self, stream: "StreamPages", chain: Chain) -> None:
        stream.live.remove(chain)
        self._changed.notify_all()

    def _put(self, stream: "StreamPages", item: Item) -> None:
        stream.ready.append(item)
        self._changed.notify_all()

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
                bound_to_slice(chain, page)  # under the lock: a split changes the bounds of pages after it
                self._put(stream, page)
                if page.more:
                    self._continue(stream, chain)
                else:
                    self._end(stream, chain)
                self._plan()  # after _end: a chain past its last page is no candidate
            except Exception as error:  # a bug of ours: the pool would drop it, and the stream wait forever
                stream.failure = stream.failure or error
                if chain in stream.live:
                    self._end(stream, chain)

    def _plan(self) -> None:
        """Marks the chains the run waits for as urgent, and opens a time slice if one is worth it.

        The run cannot end before its remaining calls fit in the rate limit (`run_s`); a chain
        whose own calls, one after another, take about that long or longer is what the run
        waits for. Called with the lock held.
        """
        answer_s = self._client.answer_s
        if not answer_s:
            return
        live = [chain for stream in self._open for chain in stream.live]
        left = {id(chain): chain.pace.pages_left(chain.range_end(self._started_at)) for chain in live}
        limiter = self._client.limiter
        run_s = sum(left.values()) * limiter.period_s / limiter.calls
        for chain in live:
            chain.urgent = chain.pace.blind() or left[id(chain)] * answer_s >= settings.URGENT_SHARE_OF_RUN * run_s
        if self._slicer is not None and self.stopped is None and self._room_for_a_slice(live):
            choice = self._slicer.choose(live, left, run_s, answer_s)
            if choice is not None:
                self._open_slice(*choice)

    def _room_for_a_slice(self, live: List[Chain]) -> bool:
        """Whether a call more can run, and the consumers keep up (otherwise they are the bottleneck)."""
        return len(live) < self._max_workers and not any(s.parked or len(s.ready) > 1 for s in self._open)

    def _open_slice(self, chain: Chain, at: datetime, pages: float) -> None:
        assert self._slicer is not None
        stream = next(stream for stream in self._open if chain in stream.live)
        split = self._slicer.open(chain, at, pages)
        self._put(stream, split)
        stream.slices_opened += 1
        stream.live.append(split.slice)
        self._continue(stream, split.slice)

    # -- the consuming side (dlt's extract thread) --------------------------------------------

    def next_item(self, stream: "StreamPages") -> Union[Item, "_Finished", None]:
        """The stream's next item; None when it has none but another stream has (let that one's
        consumer run); FINISHED when it has nothing left. Waits only while no stream has an item."""
        with self._changed:
            while True:
                if stream.ready:
                    item = stream.ready.popleft()
                    while stream.parked and len(stream.ready) < self._max_waiting:
                        self._continue(stream, stream.parked.pop(0))  # room again for the chains that waited
                    return item
                if not stream.live:
                    return FINISHED
                if any(other.ready for other in self._open):
                    return None
                self._changed.wait()

    def close(self, stream: "StreamPages") -> None:
        """Ends a consumer; the last one to end stops the workers."""
        with self._lock:
            self._open.remove(stream)
            if not self._open and self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


class _Finished:
    """What `next_item` answers for a stream with nothing left to give."""


FINISHED = _Finished()


class StreamPages:
    """The pages of one stream, in the order each chain produced them.

    Iterating yields a page as soon as one is ready, and None when another stream has one, so
    that the consumer can hand control back to dlt and let that stream consume.
    """

    def __init__(self, scheduler: PageScheduler, state: StreamState) -> None:
        self._scheduler = scheduler
        self._state = state
        self.ready: Deque[Item] = deque()
        """Pages (and time-slice splits) fetched and not yet taken; changed under the scheduler's lock."""
        self.live: List[Chain] = []
        """Chains not yet ended: fetching, waiting for room, or parked."""
        self.parked: List[Chain] = []
        self.failure: Optional[BaseException] = None
        self.slices_opened = 0

    @property
    def stopped(self) -> Optional[StopReason]:
        return self._scheduler.stopped

    def __iter__(self) -> Iterator[Optional[Page]]:
        try:
            while True:
                item = self._scheduler.next_item(self)
                if item is FINISHED:
                    break
                if item is None:
                    yield None
                elif isinstance(item, SliceSplit):
                    item.apply(self._state)
                else:
                    assert isinstance(item, Page)
                    now = datetime.now(timezone.utc)
                    item.chain.hand_on(item, self._state, self._scheduler.recheck_floor(), now)
                    yield item
        finally:
            self._scheduler.close(self)
        if self.failure is not None:
            raise self.failure
