"""When a run stops early on purpose: the run bounds, the daily call limit and the quota.

A stop is never a failure: every stream keeps what it read and the next run continues from there.
"""

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

from marketo_source import settings
from marketo_source.client import MarketoClient
from marketo_source.errors import (
    MarketoConfigurationError,
    MarketoDailyLimitReached,
    MarketoError,
    MarketoQuotaExceeded,
    MarketoTransientError,
)

logger = logging.getLogger("marketo_source")


@dataclass
class StopReason:
    """Why a stream ended before reading everything: it keeps what it read and resumes next run."""

    kind: str
    """"quota" (607), "budget" (a run bound or the daily call limit reached) or "error" (a
    transient failure outlasted its retries)."""
    message: str


def stop_reason_for(error: BaseException) -> Optional[StopReason]:
    """The clean stop an error calls for, or None if the run must fail."""
    if isinstance(error, MarketoQuotaExceeded):
        return StopReason("quota", "Marketo's daily API quota is used up (607); it resets at midnight US Central")
    if isinstance(error, MarketoDailyLimitReached):
        return StopReason("budget", str(error))
    if isinstance(error, MarketoTransientError):
        return StopReason("error", str(error))
    return None


class DailyUsage:
    """Holds the instance's calls today under `daily_call_limit`, counting every API user.

    Marketo's Get Daily Usage is asked when the run starts and again every
    `settings.USAGE_REFRESH_CALLS` of this run's calls, so that the other integrations' calls
    are seen too; in between, each call the client is about to make is added to the last answer.
    It is the client's gate (`MarketoClient(gate=...)`), asked before every attempt, so the
    limit holds for every call, not just the page calls, and for calls made at once by several
    threads.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._reported: Optional[int] = None
        self._admitted = 0
        """Calls admitted since the last answer."""

    def admit(self, path: str) -> None:
        """Counts a call about to be made, or raises `MarketoDailyLimitReached` if it would pass the limit."""
        if path == settings.USAGE_PATH:
            return
        with self._lock:
            today = (self._reported or 0) + self._admitted
            if today >= self.limit:
                raise MarketoDailyLimitReached(
                    f"daily_call_limit ({self.limit:,}) reached: the instance has made {today:,} calls today. "
                    "Raise it or wait for Marketo's quota day to end (midnight US Central)."
                )
            self._admitted += 1

    def refresh_if_due(self, client: MarketoClient) -> None:
        """Asks Marketo through `client` again if the last answer is missing or old; keeps the old one if it cannot."""
        with self._lock:
            if self._reported is not None and self._admitted < settings.USAGE_REFRESH_CALLS:
                return
        try:
            answer = client.get(settings.USAGE_PATH)
        except MarketoError as error:
            # The limit must not cost the data already read: stopping here would drop buffered rows.
            logger.warning("Could not read Marketo's daily usage (%s); counting this run's own calls only.", error)
            reported = None
        else:
            reported = sum(_calls_on(day) for day in answer.get("result") or ())
        with self._lock:
            # Without an answer, the run's own calls count from where they stood, and Marketo is
            # asked again only after another USAGE_REFRESH_CALLS, not on every page.
            self._reported = reported if reported is not None else (self._reported or 0) + self._admitted
            self._admitted = 0

    def calls_left(self) -> Optional[int]:
        """Calls left under the limit today, or None before Marketo's first answer."""
        with self._lock:
            if self._reported is None:
                return None
            return max(0, self.limit - self._reported - self._admitted)


def _calls_on(day: Dict[str, Any]) -> int:
    if day.get("total") is not None:
        return int(day["total"])
    return sum(int(user.get("count") or 0) for user in day.get("users") or ())


@dataclass
class RunBudget:
    """Bounds one run, so that a long backfill commits in steps and the instance keeps quota for others.

    The run bounds are checked before each new page call, and calls already in flight still
    finish; the daily call limit (`daily`) is held by the client on every call.
    """

    max_calls: Optional[int] = None
    max_pages: Optional[int] = None
    max_seconds: Optional[float] = None
    daily: Optional[DailyUsage] = None
    pages: int = 0
    """Page calls started."""
    started: Optional[float] = None

    def page_started(self) -> None:
        """Counts a page call as it starts, so that calls fetched ahead cannot pass `max_pages`."""
        self.pages += 1

    def __post_init__(self) -> None:
        for setting, value in (
            ("max_calls_per_run", self.max_calls),
            ("max_pages_per_run", self.max_pages),
            ("max_seconds_per_run", self.max_seconds),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise MarketoConfigurationError.of(
                    setting, f"{value!r} is not a positive number", "give one, or leave it unset"
                )

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

    def calls_allowed(self, calls: int) -> Optional[int]:
        """Calls this run may still make under its bounds, if any bound counts calls."""
        left = [self.max_calls - calls] if self.max_calls is not None else []
        daily_left = self.daily.calls_left() if self.daily else None
        left += [daily_left] if daily_left is not None else []
        return max(0, min(left)) if left else None


def daily_usage(daily_call_limit: Optional[int]) -> Optional[DailyUsage]:
    """The daily usage to hold calls under, if `daily_call_limit` is set; checks the setting."""
    if daily_call_limit is None:
        return None
    if isinstance(daily_call_limit, bool) or not isinstance(daily_call_limit, int) or daily_call_limit <= 0:
        raise MarketoConfigurationError.of(
            "daily_call_limit", f"{daily_call_limit!r} is not a positive whole number of calls",
            f"give one or leave it unset; {int(settings.DEFAULT_DAILY_QUOTA * 0.8)} leaves a fifth of the default "
            "quota to the instance's other integrations",
        )
    return DailyUsage(daily_call_limit)
