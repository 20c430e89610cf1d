"""Paging and state: where each stream resumes, and how its pages are fetched.

A *cursor* is the saved position of one activity type (or of a whole stream) in dlt state:
the last `nextPageToken` and the newest activityDate seen. A *chain* is one sequence of page
calls: cursors that share a position and the same filters are read together, at most 10 types
per call. Chains run concurrently up to the client's concurrency; within a chain pages follow
each other, because each page's token comes from the one before.
"""

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from marketo_source import settings
from marketo_source.client import MarketoClient
from marketo_source.errors import (
    MarketoConfigurationError,
    MarketoListTooLarge,
    MarketoQuotaExceeded,
    MarketoRequestError,
    MarketoTransientError,
)
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
    """One sequence of page calls and the cursors it advances."""

    path: str
    params: Dict[str, str]
    cursors: List[Cursor]
    start: datetime
    """Where a fresh token starts: the first run's start, or the lookback's restart."""
    token: Optional[str] = None
    token_is_fresh: bool = False
    newest: Optional[datetime] = None

    def __post_init__(self) -> None:
        self.newest = _max_newest(self.cursors)

    def advance(self, page: "Page") -> None:
        """Moves the chain and its cursors past `page`."""
        self.token, self.token_is_fresh = page.next_token, False
        if page.newest is not None and (self.newest is None or page.newest > self.newest):
            self.newest = page.newest
        # A chain at its end stands at "now"; in the middle, near the newest activity it read.
        position = datetime.now(timezone.utc) if not page.more else self.newest
        for cursor in self.cursors:
            cursor["token"] = self.token
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
) -> List[Chain]:
    """Groups cursors that stand at the same position into chains.

    Args:
        path: The endpoint the chains read.
        cursors: Cursor per key; with `group_param`, the key is the value sent in that parameter
            (an activity type id) and at most 10 keys share a chain.
        params: Filters every call of these chains sends.
        start: The first run's start; cursors with no token begin there.
        lookback: With a lookback, cursors restart from their newest activityDate minus it.
        group_param: The parameter listing the grouped keys (`activityTypeIds`), if any.
    """
    by_position: Dict[Any, List[str]] = {}
    for key, cursor in cursors.items():
        by_position.setdefault(_position(cursor, start, lookback), []).append(key)
    size = settings.MAX_TYPES_PER_CALL if group_param else max(1, len(cursors))
    chains = []
    for (token, chain_start), keys in by_position.items():
        for first in range(0, len(keys), size):
            group = keys[first : first + size]
            chain_params = {**params, group_param: ",".join(group)} if group_param else dict(params)
            chains.append(Chain(path, chain_params, [cursors[k] for k in group], chain_start, token))
    return chains


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
            chain.path, error, chain.newest or chain.start,
        )
        chain.token, chain.start = None, chain.newest or chain.start
        return fetch_page(client, tokens, chain)
    records = answer.get("result") or []
    return Page(chain, records, answer["nextPageToken"], bool(answer.get("moreResult")), _newest(records))


def _explain_1003(error: MarketoRequestError, chain: Chain) -> MarketoRequestError:
    if "listId" in chain.params:
        return MarketoListTooLarge(
            f"{error} Marketo refuses a list_id whose list holds 10,000 or more leads. Split the "
            "list into smaller static lists, or pass lead_ids instead.",
            code=error.code,
            endpoint=error.endpoint,
        )
    return error


@dataclass
class StopReason:
    """Why a stream ended before reading everything: it keeps what it read and resumes next run."""

    kind: str
    """"quota" (607), "budget" (a run bound reached) or "error" (a transient failure outlasted its retries)."""
    message: str


def stop_reason_for(error: BaseException) -> Optional[StopReason]:
    """The clean stop an error calls for, or None if the run must fail."""
    if isinstance(error, MarketoQuotaExceeded):
        return StopReason("quota", "Marketo's daily API quota is used up (607); it resets at midnight US Central")
    if isinstance(error, MarketoTransientError):
        return StopReason("error", str(error))
    return None


@dataclass
class RunBudget:
    """Bounds one run, so that a long backfill commits in steps.

    Checked before each new page call; calls already in flight still finish.
    """

    max_calls: Optional[int] = None
    max_pages: Optional[int] = None
    max_seconds: Optional[float] = None
    pages: int = 0
    started: Optional[float] = None

    def __post_init__(self) -> None:
        for setting, value in (
            ("max_calls_per_run", self.max_calls),
            ("max_pages_per_run", self.max_pages),
            ("max_seconds_per_run", self.max_seconds),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise MarketoConfigurationError(f"{setting} must be a positive number or unset (got {value!r}).")

    def spent(self, calls: int) -> Optional[StopReason]:
        """The bound this run has reached, if any; the clock starts at the first page call."""
        self.started = self.started or time.monotonic()
        if self.max_calls is not None and calls >= self.max_calls:
            return StopReason("budget", f"max_calls_per_run ({self.max_calls}) reached")
        if self.max_pages is not None and self.pages >= self.max_pages:
            return StopReason("budget", f"max_pages_per_run ({self.max_pages}) reached")
        if self.max_seconds is not None and time.monotonic() - self.started >= self.max_seconds:
            return StopReason("budget", f"max_seconds_per_run ({self.max_seconds:g}) reached")
        return None


class PageReader:
    """Reads every page of the chains, running chains concurrently.

    Pages come in the order they arrive. A budget reached, the daily quota used up or a transient
    failure past its retries stops the reading cleanly: pages in flight are still yielded, the
    chains stay where they are and `stopped` says why. Any other error is raised once the pages
    in flight are yielded.
    """

    def __init__(
        self, client: MarketoClient, tokens: PagingTokens, chains: Sequence[Chain], max_workers: int, budget: RunBudget
    ) -> None:
        self._client = client
        self._fetch = partial(fetch_page, client, tokens)
        self._chains = chains
        self._max_workers = max(1, max_workers)
        self._budget = budget
        self.stopped: Optional[StopReason] = None

    def __iter__(self) -> Iterator[Page]:
        failure: Optional[BaseException] = None
        with ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="marketo") as pool:
            running: Dict["Future[Page]", Chain] = {}
            for chain in self._chains:
                self._submit(pool, running, chain)
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    chain = running.pop(future)
                    try:
                        page = future.result()
                    except Exception as error:  # kept until the pages in flight are yielded
                        reason = stop_reason_for(error)
                        if reason is None:
                            failure = failure or error
                        else:
                            self.stopped = self.stopped or reason
                        continue
                    chain.advance(page)
                    self._budget.pages += 1
                    yield page
                    if page.more and failure is None:
                        self._submit(pool, running, chain)
        if failure is not None:
            raise failure

    def _submit(self, pool: ThreadPoolExecutor, running: Dict["Future[Page]", Chain], chain: Chain) -> None:
        self.stopped = self.stopped or self._budget.spent(sum(self._client.calls.values()))
        if self.stopped is None:
            running[pool.submit(self._fetch, chain)] = chain


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
    newest = None
    for record in records:
        try:
            moment = parse_timestamp(record.get("activityDate"))
        except ValueError:
            continue
        if newest is None or moment > newest:
            newest = moment
    return newest


def _max_newest(cursors: Sequence[Cursor]) -> Optional[datetime]:
    moments = [parse_timestamp(c["newest"]) for c in cursors if c.get("newest")]
    return max(moments) if moments else None

