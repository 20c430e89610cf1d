"""Which Bulk Activity Extract jobs read a claimed history: its windows, and the types of each job.

A job's createdAt filter spans at most 31 days, so the claimed range, from the claim's start up
to the hand-over point plus the late-commit window (an activity dated before the hand-over point
may be recorded that much later, and Marketo does not say whether createdAt is the activityDate
or the time it recorded the activity), is cut into windows of 31 days, the last one shorter.
Windows meet at one second: Marketo does not say whether `endAt` is inclusive, so an activity at
a boundary may be in two files, and merge on marketoGUID keeps one row of it.

Each window's types go in one job, which spends the fewest calls and queue places. Files count
against a daily export quota, so a job is only planned while its estimated file fits what is left
of the day's export budget (`quota`):

- the estimate of a window is the sum, over its types, of what a day of each type took in files
  so far (`rates`), times the window's days;
- a window whose types do not all fit gets one job for those that do, in id order, and the rest
  waits for a later day; later windows wait too, since windows are committed in order;
- a type whose size is not known yet (no file has shown it) makes its window the only job in
  flight: its file teaches the size before more of the budget is promised;
- a type that alone needs more than a whole day's budget is planned alone on a day nothing else
  was spent or promised, since no later day has more room.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from marketo_source import settings
from marketo_source.schema import parse_timestamp

TypeIds = Tuple[int, ...]
Rates = Mapping[int, float]
"""Per activity type id, the bytes of export file a day of its activities took so far."""
_SECOND = timedelta(seconds=1)
_DAY_S = 86_400.0


@dataclass(frozen=True)
class Window:
    """The createdAt range of a job: from `start` to `end`, whole seconds, UTC."""

    start: datetime
    end: datetime

    @property
    def days(self) -> float:
        return (self.end - self.start).total_seconds() / _DAY_S

    def created_at_filter(self) -> Dict[str, str]:
        """The job's `createdAt` filter: ISO 8601 without milliseconds, as Marketo asks."""
        return {"startAt": _iso(self.start), "endAt": _iso(self.end)}

    def to_json(self) -> Dict[str, str]:
        return {"start": _iso(self.start), "end": _iso(self.end)}

    @classmethod
    def from_json(cls, saved: Mapping[str, Any]) -> "Window":
        return cls(parse_timestamp(saved["start"]), parse_timestamp(saved["end"]))


def windows(start: datetime, hand_over: datetime, late_window: Optional[timedelta]) -> Tuple[Window, ...]:
    """The windows of at most 31 days covering [start, hand_over + late_window), oldest first."""
    first = _whole_second(start, up=False)
    end = _whole_second(hand_over + (late_window or timedelta(0)), up=True)
    span = timedelta(days=settings.BULK_MAX_WINDOW_DAYS)
    cuts: List[Window] = []
    while first < end:
        cuts.append(Window(first, min(first + span, end)))
        first = cuts[-1].end
    return tuple(cuts)


def bulk_type_ids(type_ids: Iterable[int]) -> TypeIds:
    """The types a job may export, in id order: Marketo refuses Delete Lead (37)."""
    return tuple(sorted(set(type_ids) - settings.BULK_UNSUPPORTED_TYPE_IDS))


def estimate(window: Window, type_ids: Sequence[int], rates: Rates) -> Optional[int]:
    """The bytes a job's file may take, or None while no type's size is known.

    A type not seen yet is taken to be as large as the largest type seen, so that the estimate
    errs towards fewer jobs at once rather than an overdrawn budget.
    """
    largest = max(rates.values(), default=0.0)
    if not largest and any(type_id not in rates for type_id in type_ids):
        return None
    return round(sum(rates.get(type_id, largest) for type_id in type_ids) * window.days)


def next_jobs(
    pending: Sequence[Tuple[Window, TypeIds]], rates: Rates, remaining: int, daily_limit: int, in_flight: bool
) -> List[Tuple[Window, TypeIds]]:
    """The jobs to plan now (see the module's rules).

    Args:
        pending: Per window not committed, oldest first, the types no job covers yet.
        rates: What a day of each type takes in files (`Rates`).
        remaining: Bytes of today's export budget neither spent nor promised to jobs in flight.
        daily_limit: Bytes of a whole day's export budget.
        in_flight: Whether jobs planned before are not loaded yet.
    """
    planned: List[Tuple[Window, TypeIds]] = []
    for window, type_ids in pending:
        if not type_ids:
            continue
        size = estimate(window, type_ids, rates)
        if size is None:
            if not (in_flight or planned):
                planned.append((window, type_ids))
            break
        if size <= remaining:
            planned.append((window, type_ids))
            remaining -= size
            continue
        planned.extend(_what_fits(window, type_ids, rates, remaining, daily_limit, in_flight or bool(planned)))
        break
    return planned


def _what_fits(
    window: Window, type_ids: TypeIds, rates: Rates, remaining: int, daily_limit: int, busy: bool
) -> List[Tuple[Window, TypeIds]]:
    fitting: List[int] = []
    for type_id in type_ids:
        size = estimate(window, (type_id,), rates) or 0
        if size <= remaining:
            fitting.append(type_id)
            remaining -= size
    if fitting:
        return [(window, tuple(fitting))]
    oversized = next((t for t in type_ids if (estimate(window, (t,), rates) or 0) > daily_limit), None)
    if oversized is not None and not busy and remaining >= daily_limit:
        return [(window, (oversized,))]
    return []


def _whole_second(moment: datetime, up: bool) -> datetime:
    down = moment.astimezone(timezone.utc).replace(microsecond=0)
    return down + _SECOND if up and down < moment else down


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
