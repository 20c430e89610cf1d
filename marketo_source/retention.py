"""Retention gaps: windows of history Marketo may have purged before a stream read them.

Marketo keeps Delete Lead 14 days, its high-volume types 90 days and most others 25 months. A
cursor whose saved position lies further back than its types are kept may have lost what lay in
between for good: a more frequent schedule would have read it, so each such window gets a warning
and a row of `marketo_retention_gaps`. A first run from a start further back cannot reach what
Marketo no longer keeps, whatever the schedule: that is logged once, as information.
"""

import logging
from datetime import datetime, timedelta
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from marketo_source import settings
from marketo_source.state import Cursor

logger = logging.getLogger("marketo_source")


def retention_gap(
    cursor: Cursor, start: datetime, retention_days: Optional[int], now: datetime
) -> Optional[Tuple[datetime, datetime]]:
    """The window Marketo may have purged before this cursor reads it again, or None.

    A cursor without a position starts at `start`; Marketo keeps `retention_days` of history.
    """
    if retention_days is None:
        return None
    position = cursor.earliest(start)
    if position is None:
        return None  # a position without its time: nothing to judge it by
    horizon = now - timedelta(days=retention_days)
    return (position, horizon) if position < horizon else None


def retention_gap_row(
    stream: str,
    scope: str,
    cursor: Cursor,
    type_ids: Sequence[int],
    start: datetime,
    type_names: Mapping[int, str],
    now: datetime,
) -> Optional[Dict[str, Any]]:
    """A row of `marketo_retention_gaps` if Marketo may have purged what this cursor has not read, logged."""
    kept = [settings.RETENTION_DAYS.get(t, settings.DEFAULT_RETENTION_DAYS) for t in type_ids]
    retention_days = min((days for days in kept if days is not None), default=None)
    window = retention_gap(cursor, start, retention_days, now)
    if window is None:
        return None
    # Named: the types kept that short, whose history before the horizon Marketo may have purged.
    short_kept = [t for t, days in zip(type_ids, kept, strict=True) if days == retention_days]
    names = [type_names.get(t, str(t)) for t in short_kept]
    if cursor == Cursor():
        logger.info(
            "%s (%s): Marketo keeps %s %d days, so this first run reads them from %s on, not from %s.",
            stream, scope, ", ".join(names), retention_days, _second(window[1]), _second(window[0]),
        )
        return None
    logger.warning(
        "RETENTION GAP in %s (%s): the saved position (%s) is older than the %d days Marketo keeps "
        "%s; activities from %s to %s may be lost for good. Run the pipeline more often than that.",
        stream, scope, _second(window[0]), retention_days, ", ".join(names), _second(window[0]), _second(window[1]),
    )
    return {
        "detected_at": now,
        "stream": stream,
        "scope": scope,
        "activity_type_ids": ",".join(map(str, short_kept)),
        "activity_type_names": ", ".join(names),
        "retention_days": retention_days,
        "may_be_lost_from": window[0],
        "may_be_lost_until": window[1],
    }


def _second(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
