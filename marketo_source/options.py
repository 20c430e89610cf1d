"""The source's options, parsed and checked once, with errors that name the setting."""

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, List, Optional, Sequence

import pendulum

from marketo_source.config import MarketoSourceConfiguration
from marketo_source.errors import MarketoConfigurationError

DEFAULT_START_DAYS_AGO = 89
"""Without a start_date the first run reads from midnight 89 days ago: all that Marketo still keeps
of its 90-day types (so no retention gap is reported), and more than it keeps of Delete Lead."""


_ISO_DATE = "use an ISO 8601 date or datetime such as 2024-01-01 or 2024-01-01T00:00:00Z"
_IDS = "list Marketo ids, e.g. [1, 2, 3] (JSON, in an environment variable too)"

@dataclass(frozen=True)
class ReadOptions:
    """What to read and from when, as the resources need it."""

    start: datetime
    activity_type_ids: Optional[List[int]]
    lead_change_fields: Optional[List[str]]
    lead_ids: Optional[List[int]]
    list_id: Optional[int]
    lookback: Optional[timedelta]
    late_commit_window: Optional[timedelta]
    """How late after its activityDate Marketo may record an activity that is still read; None
    resumes from the saved tokens (see `late_commits`)."""

    @property
    def scope(self) -> str:
        """The state key of this filter: filtered runs keep positions apart from unfiltered ones."""
        if self.list_id is not None:
            return f"list:{self.list_id}"
        if self.lead_ids:
            digest = hashlib.sha1(",".join(map(str, self.lead_ids)).encode()).hexdigest()[:12]
            return f"leads:{digest}"
        return "all"


def parse_read_options(config: MarketoSourceConfiguration) -> ReadOptions:
    """Checks what the source is to read, and returns it parsed."""
    return ReadOptions(
        start=parse_start_date(config.start_date),
        activity_type_ids=_int_list(config.activity_type_ids, "activity_type_ids"),
        lead_change_fields=_str_list(config.lead_change_fields, "lead_change_fields"),
        lead_ids=_int_list(config.lead_ids, "lead_ids"),
        list_id=_optional_int(config.list_id, "list_id"),
        lookback=_minutes(config.lookback_minutes, "lookback_minutes"),
        late_commit_window=_minutes(config.late_commit_minutes, "late_commit_minutes"),
    )


def parse_start_date(value: Any) -> datetime:
    """Parses start_date (ISO 8601 date or datetime, UTC when no offset is given)."""
    if value is None or value == "":
        return _plain(pendulum.now("UTC").subtract(days=DEFAULT_START_DAYS_AGO).start_of("day"))
    try:
        parsed = value if isinstance(value, datetime) else pendulum.parse(str(value), tz="UTC")
    except (ValueError, TypeError, pendulum.parsing.exceptions.ParserError):
        raise MarketoConfigurationError.of("start_date", f"{value!r} is not a date", _ISO_DATE) from None
    if not isinstance(parsed, datetime):
        raise MarketoConfigurationError.of("start_date", f"{value!r} is not a date or datetime", _ISO_DATE)
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    if parsed > datetime.now(timezone.utc):
        raise MarketoConfigurationError.of(
            "start_date", f"{value!r} lies in the future", "give the earliest activity date the first run should read"
        )
    return _plain(parsed)


def _plain(moment: datetime) -> datetime:
    """The moment as Python's own aware UTC datetime: pendulum's lose their offset in some arithmetic."""
    return datetime.fromisoformat(moment.astimezone(timezone.utc).isoformat())


def _int_list(value: Any, setting: str) -> Optional[List[int]]:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, Sequence) or isinstance(items, (bytes, bytearray)):
        raise MarketoConfigurationError.of(setting, f"{value!r} is not a list of whole numbers", _IDS)
    parsed = [_whole_number(item, setting) for item in items]
    if not parsed:
        raise MarketoConfigurationError.of(setting, "the list is empty", "leave it unset to read everything")
    return sorted(set(parsed))


def _whole_number(item: Any, setting: str) -> int:
    if isinstance(item, bool):
        raise MarketoConfigurationError.of(setting, f"{item!r} is not a whole number", _IDS)
    try:
        number = int(str(item).strip())
    except ValueError:
        raise MarketoConfigurationError.of(setting, f"{item!r} is not a whole number", _IDS) from None
    if number <= 0:
        raise MarketoConfigurationError.of(setting, f"{item!r} is not positive", _IDS)
    return number


def _optional_int(value: Any, setting: str) -> Optional[int]:
    return None if value is None else _whole_number(value, setting)


def _str_list(value: Any, setting: str) -> Optional[List[str]]:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    names = [str(item).strip() for item in items if str(item).strip()]
    if not names:
        raise MarketoConfigurationError.of(setting, "the list is empty", "leave it unset to read every lead field")
    return sorted(set(names))


def parse_time_slices(
    enabled: Any, overlap_minutes: Any, late_commit_window: Optional[timedelta]
) -> Optional[timedelta]:
    """The overlap of time slices, or None when `time_slices` is off."""
    if not isinstance(enabled, bool):
        raise MarketoConfigurationError.of("time_slices", f"{enabled!r} is not true or false", "give true or false")
    overlap = _minutes(overlap_minutes, "time_slice_overlap_minutes")
    if enabled and overlap is None:
        raise MarketoConfigurationError.of(
            "time_slice_overlap_minutes", "must be more than 0 with time_slices: it is how late an activity may "
            "be recorded and still be read", "leave it at its default, 60",
        )
    if enabled and overlap is not None and late_commit_window is not None and overlap < late_commit_window:
        raise MarketoConfigurationError.of(
            "time_slice_overlap_minutes", f"{overlap_minutes} is less than late_commit_minutes "
            f"({late_commit_window.total_seconds() / 60:g}), so slices would miss activities recorded that late",
            "set it to at least late_commit_minutes",
        )
    return overlap if enabled else None


def _minutes(minutes: Any, setting: str) -> Optional[timedelta]:
    try:
        value = float(minutes or 0)
    except (TypeError, ValueError):
        problem = f"{minutes!r} is not a number of minutes"
        raise MarketoConfigurationError.of(setting, problem, "give 0 or more") from None
    if value < 0:
        raise MarketoConfigurationError.of(setting, f"{minutes!r} is negative", "give 0 or more minutes")
    return timedelta(minutes=value) if value else None
