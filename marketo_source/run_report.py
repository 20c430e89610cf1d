"""What each stream of a run does and did: progress while it reads, a report when it ends.

The report is one row per stream and run in `marketo_run_reports` (loaded with the stream's data,
so it is there exactly when the data is) and the same dict in the stream's state as `last_run`,
which the example pipeline prints as its summary.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence

import dlt
from dlt.common.pipeline import current_pipeline
from dlt.common.runtime.collector import NULL_COLLECTOR, Collector

from marketo_source import settings
from marketo_source.budget import RunBudget, StopReason
from marketo_source.client import MarketoClient
from marketo_source.schema import parse_timestamp
from marketo_source.streams import Cursor, earliest_position

logger = logging.getLogger("marketo_source")

REPORT_COLUMNS: Dict[str, str] = {
    "stream": "text",
    "started_at": "timestamp",
    "ended_at": "timestamp",
    "pages": "bigint",
    "records": "bigint",
    "rows_loaded": "bigint",
    "rows_set_aside": "bigint",
    "calls": "bigint",
    "time_slices": "bigint",
    "reread_calls": "bigint",
    "rows_reread": "bigint",
    "position_from": "timestamp",
    "position_to": "timestamp",
    "newest_activity_at": "timestamp",
    "calls_left_today": "bigint",
    "stopped": "text",
    "warnings": "text",
}
"""The columns of `marketo_run_reports`, declared so that a column empty in every row still exists."""


class RunProgress:
    """Shows pages, records and calls through the pipeline's progress collector (dlt's `progress=`).

    Fed by the streams' consumers, which all run in dlt's extract thread.
    """

    def __init__(self, client: MarketoClient, budget: RunBudget) -> None:
        self._client = client
        self._budget = budget
        self._calls_shown = 0

    def page(self, stream: str, records: int) -> None:
        collector = _collector()
        collector.update("Marketo pages", inc=1, label=stream)
        collector.update("Marketo records", inc=records, label=stream)
        calls = self._client.calls_made()
        allowed = self._budget.calls_allowed(calls)
        message = None if allowed is None else f"{allowed:,} calls left in the budget"
        collector.update("Marketo API calls", inc=calls - self._calls_shown, message=message)
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
    cursors: Sequence[Cursor] = ()
    default_start: Optional[datetime] = None
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
        self.position_from = _complete_until(self.cursors, self.default_start)

    def finish(self, client: MarketoClient, budget: RunBudget, stopped: Optional[StopReason]) -> Dict[str, Any]:
        """The report row; also kept in the stream's state as `last_run`, with a warning if it stopped early."""
        if stopped is not None:
            logger.warning(
                "%s stopped early: %s. Everything read so far is loaded and the next run continues from there.",
                self.stream, stopped.message.rstrip("."),
            )
        row = {
            "stream": self.stream,
            "started_at": self.started_at,
            "ended_at": datetime.now(timezone.utc),
            "pages": self.pages,
            "records": self.records,
            "rows_loaded": self.records - self.set_aside,
            "rows_set_aside": self.set_aside,
            "calls": client.calls[self.endpoint] if self.endpoint else 0,
            "time_slices": self.time_slices,
            "reread_calls": self.reread_calls,
            "rows_reread": self.rows_reread,
            "position_from": self.position_from,
            "position_to": _complete_until(self.cursors, self.default_start),
            "newest_activity_at": _newest_activity(self.cursors),
            "calls_left_today": budget.daily.calls_left() if budget.daily else None,
            "stopped": None if stopped is None else stopped.kind,
            "warnings": "; ".join(self._warnings(stopped)) or None,
        }
        dlt.current.resource_state()["last_run"] = {
            key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()
        }
        dlt.current.source_state()["last_run_calls"] = dict(client.calls)
        return row

    def _warnings(self, stopped: Optional[StopReason]) -> List[str]:
        warnings = [f"stopped early: {stopped.message}"] if stopped else []
        if self.retention_gaps:
            warnings.append(f"{self.retention_gaps} retention gap(s), see {settings.RETENTION_GAPS_TABLE}")
        if self.set_aside:
            warnings.append(f"{self.set_aside} record(s) set aside, see {settings.REJECTED_TABLE}")
        return warnings


def _complete_until(cursors: Sequence[Cursor], default_start: Optional[datetime]) -> Optional[datetime]:
    """Where the stream is complete up to: the least advanced of its cursors."""
    positions = [earliest_position(c, default_start) or default_start for c in cursors]
    known = [p for p in positions if p is not None]
    return min(known) if known and len(known) == len(positions) else None


def _newest_activity(cursors: Sequence[Cursor]) -> Optional[datetime]:
    newest = [parse_timestamp(c["newest"]) for c in cursors if c.get("newest")]
    return max(newest, default=None)
