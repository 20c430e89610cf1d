"""What each stream of a run does and did: progress while it reads, a report when it ends.

The report (`state.LastRun`) is one row per stream and run in `marketo_run_reports` (loaded with
the stream's data, so it is there exactly when the data is), and the stream's `last_run` in its
state, which the example pipeline prints as its summary.
"""

import logging
import math
import threading
import time
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional, Sequence, get_args

from dlt.common.pipeline import current_pipeline
from dlt.common.runtime.collector import NULL_COLLECTOR
from dlt.common.runtime.collector_base import Collector

from marketo_source import settings
from marketo_source.budget import RunBudget, StopReason
from marketo_source.client import MarketoClient
from marketo_source.state import LastRun

logger = logging.getLogger("marketo_source")

_COLUMN_TYPES = {str: "text", datetime: "timestamp", int: "bigint"}
REPORT_COLUMNS: Dict[str, str] = {
    item.name: _COLUMN_TYPES[next(t for t in (item.type, *get_args(item.type)) if t in _COLUMN_TYPES)]
    for item in fields(LastRun)
} | {
    # The bulk side's row (stream `activities_bulk`) only; null in the streams' rows.
    "bulk_jobs_created": "bigint", "bulk_jobs_adopted": "bigint", "bulk_jobs_recreated": "bigint",
    "bulk_bytes": "bigint", "bulk_wait_s": "double",
}
"""The columns of `marketo_run_reports`, declared so that a column empty in every row still exists."""


class RateLimitNotices:
    """Tells of the long waits for the client's rate limit (the client's `waits`, see `client.RateLimitWaits`).

    A wait of `notice_s` or more counts once however many calls wait for the same window: one
    that begins before the last counted one ends only lengthens it. Each is logged at INFO, at
    most one line per `every_s` (the next line says how many were not logged), and counted for
    `RunProgress`, which shows them beside the calls.
    """

    def __init__(
        self,
        notice_s: float = settings.RATE_LIMIT_NOTICE_S,
        every_s: float = settings.RATE_LIMIT_NOTICE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notice_s = notice_s
        self._every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._count = 0
        self._seconds = 0.0
        self._until = -math.inf
        """When the last counted wait ends."""
        self._next_line_at = -math.inf
        self._not_logged = 0

    def waiting(self, seconds: float, calls: int, period_s: float) -> None:
        """Counts a wait of `seconds` for the window of `calls` per `period_s`, and logs it when a line is due."""
        if seconds < self._notice_s:
            return
        with self._lock:
            now = self._clock()
            end = now + seconds
            if now < self._until:
                self._seconds += max(0.0, end - self._until)
                self._until = max(self._until, end)
                return
            self._count += 1
            self._seconds += seconds
            self._until = end
            if now < self._next_line_at:
                self._not_logged += 1
                return
            self._next_line_at = now + self._every_s
            not_logged, self._not_logged = self._not_logged, 0
        since = f"; {not_logged} more such wait(s) since the last line" if not_logged else ""
        logger.info("waiting %.0f s for the rate limit (%d calls per %g s)%s", seconds, calls, period_s, since)

    def summary(self) -> Optional[str]:
        """The waits so far and their length, or None before the first."""
        with self._lock:
            return f"rate limit waits: {self._count} ({self._seconds:.0f} s)" if self._count else None


class RunProgress:
    """Shows pages, records and calls through the pipeline's progress collector (dlt's `progress=`).

    Fed by the streams' consumers, which all run in dlt's extract thread. The calls counter's
    message says what is left of the budget and, once there were any, the long waits for the
    rate limit (`notices`).
    """

    def __init__(self, client: MarketoClient, budget: RunBudget, notices: RateLimitNotices) -> None:
        self._client = client
        self._budget = budget
        self._notices = notices
        self._calls_shown = 0

    def page(self, stream: str, records: int) -> None:
        collector = _collector()
        collector.update("Marketo pages", inc=1, label=stream)
        collector.update("Marketo records", inc=records, label=stream)
        calls = self._client.calls_made()
        allowed = self._budget.calls_allowed(calls)
        notes = [f"{allowed:,} calls left in the budget"] if allowed is not None else []
        notes += [waits] if (waits := self._notices.summary()) else []
        # dlt annotates message as str, but its default is None: no message.
        message = "; ".join(notes) or None
        collector.update("Marketo API calls", inc=calls - self._calls_shown, message=message)  # type: ignore[arg-type]
        self._calls_shown = calls


def _collector() -> Collector:
    # Outside a pipeline (a source iterated directly) there is nothing to show progress on.
    pipeline = current_pipeline()
    return pipeline.collector if pipeline is not None else NULL_COLLECTOR


@dataclass
class StreamReport:
    """Counts what one stream reads, from its first page to its last."""

    stream: str
    endpoint: Optional[str] = None
    """The API path whose calls are this stream's own (paging tokens are shared, so not counted)."""
    positions: Callable[[], Sequence[Optional[datetime]]] = lambda: ()
    """Where each of the stream's cursors and history claims stands: complete up to (None: unknown)."""
    newest: Callable[[], Optional[datetime]] = lambda: None
    """The newest activity date the stream has read."""
    retention_gaps: int = 0
    pages: int = 0
    records: int = 0
    set_aside: int = 0
    time_slices: int = 0
    """Time slices opened (see the source's `time_slices`)."""
    reread_calls: int = 0
    """Page calls that read again what earlier runs had read, for activities Marketo records late."""
    rows_reread: int = 0
    """Records those calls read that earlier runs had read (or that Marketo recorded late since)."""
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    position_from: Optional[datetime] = None

    def __post_init__(self) -> None:
        self.position_from = self._complete_until()

    def finish(self, client: MarketoClient, budget: RunBudget, stopped: Optional[StopReason]) -> LastRun:
        """The report of the run, with a warning if the stream stopped early."""
        if stopped is not None:
            logger.warning(
                "%s stopped early: %s. Everything read so far is loaded and the next run continues from there.",
                self.stream, stopped.message.rstrip("."),
            )
        return LastRun(
            stream=self.stream,
            started_at=self.started_at,
            ended_at=datetime.now(timezone.utc),
            pages=self.pages,
            records=self.records,
            rows_loaded=self.records - self.set_aside,
            rows_set_aside=self.set_aside,
            calls=client.calls[self.endpoint] if self.endpoint else 0,
            time_slices=self.time_slices,
            reread_calls=self.reread_calls,
            rows_reread=self.rows_reread,
            position_from=self.position_from,
            position_to=self._complete_until(),
            newest_activity_at=self.newest(),
            calls_left_today=budget.daily.calls_left() if budget.daily else None,
            stopped=None if stopped is None else stopped.kind,
            warnings="; ".join(self._warnings(stopped)) or None,
        )

    def _complete_until(self) -> Optional[datetime]:
        """Where the stream is complete up to: the least advanced of its positions, if all are known."""
        positions = list(self.positions())
        known = [p for p in positions if p is not None]
        return min(known) if known and len(known) == len(positions) else None

    def _warnings(self, stopped: Optional[StopReason]) -> List[str]:
        warnings = [f"stopped early: {stopped.message}"] if stopped else []
        if self.retention_gaps:
            warnings.append(f"{self.retention_gaps} retention gap(s), see {settings.RETENTION_GAPS_TABLE}")
        if self.set_aside:
            warnings.append(f"{self.set_aside} record(s) set aside, see {settings.REJECTED_TABLE}")
        return warnings
