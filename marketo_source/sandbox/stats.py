"""Counters of calls, errors and injected faults, readable by tests and benchmarks."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class Stats:
    """Thread-safe counters; the limit counters live in LimitGate and are merged into snapshots."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Zero every counter (the REST call numbering used by fault schedules included)."""
        with self.lock:
            self.calls: Counter[str] = Counter()
            self.errors: Counter[str] = Counter()
            self.faults: Counter[str] = Counter()
            self.rest_calls = 0

    def call(self, endpoint: str, rest: bool) -> int:
        """Count a call; returns its 1-based number among REST calls (0 for others)."""
        with self.lock:
            self.calls[endpoint] += 1
            if rest:
                self.rest_calls += 1
                return self.rest_calls
            return 0

    def error(self, code: str) -> None:
        """Count an error answer: a Marketo code, or a transport kind such as "http500" or "reset"."""
        with self.lock:
            self.errors[code] += 1

    def fault(self, kind: str) -> None:
        """Count an injected fault."""
        with self.lock:
            self.faults[kind] += 1

    def snapshot(self, quota_used: int, max_concurrent_seen: int) -> dict[str, Any]:
        """The stats() dict."""
        with self.lock:
            return {"calls": dict(self.calls), "errors": dict(self.errors), "rest_calls": self.rest_calls,
                    "quota_used": quota_used, "max_concurrent_seen": max_concurrent_seen,
                    "faults_injected": dict(self.faults)}
