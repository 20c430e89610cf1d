"""The export budget: bytes of Bulk Activity Extract files a day, under Marketo's export quota.

Marketo counts the files of completed export jobs against a daily quota (500 MB by default),
shared with the instance's lead, program member and custom object exports, and resets it at
midnight US Central. The bulk side keeps under `bulk_daily_mb_limit` of it (default 400 MB, a
fifth of the default quota left to those other exports). What is spent today is summed from the
job list: the `fileSize` of the Completed jobs that finished since Marketo's day began. The list
shows only the API user's own activity exports, so the room kept for the other exports is what
protects them. Past Marketo's quota, create and enqueue answer 1029 "Export daily quota
exceeded": the bulk side then waits for the reset, and REST paging goes on.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping, Optional
from zoneinfo import ZoneInfo

from marketo_source import settings
from marketo_source.schema import parse_timestamp

QUOTA_EXCEEDED = "Export daily quota exceeded"
"""The message of Marketo's 1029 once the day's export quota is used up."""
_MARKETO_DAY = ZoneInfo(settings.MARKETO_DAY_ZONE)


@dataclass(frozen=True)
class ExportPause:
    """The bulk side makes no export call before `resumes_at`; REST paging goes on meanwhile."""

    resumes_at: datetime
    message: str


def marketo_day_began(now: datetime) -> datetime:
    """When Marketo's quota day holding `now` began (midnight US Central), in UTC."""
    local = now.astimezone(_MARKETO_DAY)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(timezone.utc)


def next_reset(now: datetime) -> datetime:
    """The next midnight US Central after `now`, in UTC (a day of 23 or 25 hours on DST changes)."""
    local_today = now.astimezone(_MARKETO_DAY).date()
    midnight = datetime.combine(local_today + timedelta(days=1), datetime.min.time(), tzinfo=_MARKETO_DAY)
    return midnight.astimezone(timezone.utc)


def spent_today(listed: Iterable[Mapping[str, Any]], now: datetime) -> int:
    """Bytes of export files completed since Marketo's day began, from the job list's entries."""
    began = marketo_day_began(now)
    return sum(
        int(job.get("fileSize") or 0)
        for job in listed
        if job.get("status") == "Completed" and job.get("finishedAt") and parse_timestamp(job["finishedAt"]) >= began
    )


def daily_limit_bytes(limit_mb: float) -> int:
    """`bulk_daily_mb_limit` in bytes."""
    return int(limit_mb * settings.BYTES_PER_MB)


def remaining(limit_mb: float, spent: int) -> int:
    """Bytes of today's export budget not spent yet."""
    return max(daily_limit_bytes(limit_mb) - spent, 0)


def is_quota_refusal(code: Optional[str], message: str) -> bool:
    """Whether a refused create or enqueue means the day's export quota is used up."""
    # Marketo's documentation writes "Export daily quota exceeded"; its answers are reported to
    # name the quota too ("Export daily quota 500MB exceeded"): either reads as the quota.
    return code == "1029" and "quota" in message.lower()


def quota_exceeded(now: datetime) -> ExportPause:
    """The pause after Marketo's 1029 "Export daily quota exceeded"."""
    resets = next_reset(now)
    return ExportPause(resets, f"Marketo's daily export quota is used up (1029 {QUOTA_EXCEEDED}): bulk exports "
                               f"wait until it resets at midnight US Central ({_iso(resets)}); REST paging goes on")


def limit_reached(limit_mb: float, spent: int, now: datetime) -> ExportPause:
    """The pause once today's files reach `bulk_daily_mb_limit`."""
    resets = next_reset(now)
    return ExportPause(resets, f"bulk_daily_mb_limit ({limit_mb:g} MB) reached: export files took "
                               f"{spent / settings.BYTES_PER_MB:,.1f} MB today; bulk exports wait until Marketo's "
                               f"quota day ends at midnight US Central ({_iso(resets)}); REST paging goes on")


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
