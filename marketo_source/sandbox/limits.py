"""Marketo's call limits: rate window (606), concurrency (615), daily quota (607) and latency."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from .errors import MESSAGES, ApiError


@dataclass
class Limits:
    """Limit settings; None disables a limit. Change fields, or assign a new Limits, while serving.

    Attributes:
        calls_per_window: REST calls allowed per sliding window (Marketo: 100 per 20 s).
        window_s: Length of the sliding window in seconds.
        max_concurrent: REST calls allowed in flight at once (Marketo: 10).
        daily_quota: REST calls allowed until reset_quota() (Marketo: 50,000 a day).
        latency_s: Delay of every REST answer, spent while the call counts as in flight.
        endpoint_latency_s: Delay per endpoint name, replacing latency_s for that endpoint.
    """

    calls_per_window: int | None = 100
    window_s: float | None = 20.0
    max_concurrent: int | None = 10
    daily_quota: int | None = 50_000
    latency_s: float = 0.0
    endpoint_latency_s: dict[str, float] = field(default_factory=dict)


class LimitGate:
    """Applies the current Limits to REST calls and keeps the counters they need."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.lock = threading.Lock()
        self.window: deque[float] = deque()
        self.in_flight = 0
        self.max_concurrent_seen = 0
        self.quota_used = 0

    def enter(self) -> None:
        """Count a call as in flight.

        Raises:
            ApiError: 615 when max_concurrent calls are already in flight (the call is not counted).
        """
        limit = self.limits.max_concurrent
        with self.lock:
            if limit is not None and self.in_flight >= limit:
                raise ApiError("615")
            self.in_flight += 1
            self.max_concurrent_seen = max(self.max_concurrent_seen, self.in_flight)

    def leave(self) -> None:
        """End an in-flight call."""
        with self.lock:
            self.in_flight -= 1

    def admit_rate(self) -> None:
        """Record the call in the sliding window.

        Raises:
            ApiError: 606 when the window is full; a rejected call does not enter the window.
        """
        limits = self.limits
        if limits.calls_per_window is None or limits.window_s is None:
            return
        with self.lock:
            now = time.monotonic()
            while self.window and self.window[0] <= now - limits.window_s:
                self.window.popleft()
            if len(self.window) >= limits.calls_per_window:
                raise ApiError("606", self.rate_message())
            self.window.append(now)

    def rate_message(self) -> str:
        """The 606 message, naming the configured limit as Marketo does."""
        window = self.limits.window_s
        window_text = f"{window:g}" if window is not None else "20"
        return MESSAGES["606"].format(calls=self.limits.calls_per_window, window=window_text)

    def check_quota(self) -> None:
        """Raises ApiError 607 once the daily quota is used up."""
        quota = self.limits.daily_quota
        with self.lock:
            if quota is not None and self.quota_used >= quota:
                raise ApiError("607")

    def count_quota(self) -> None:
        """Count one call against the daily quota."""
        with self.lock:
            self.quota_used += 1

    def reset_quota(self) -> None:
        """Start a new quota day."""
        with self.lock:
            self.quota_used = 0

    def latency_for(self, endpoint: str) -> float:
        """Seconds to delay an answer of `endpoint`."""
        return self.limits.endpoint_latency_s.get(endpoint, self.limits.latency_s)
