"""A Marketo sandbox in its own process, so that its memory and CPU are not the pipeline's.

It runs `python -m marketo_source.sandbox` on 127.0.0.1 and is read through the sandbox's
admin endpoints (`/_sandbox/stats`, `/_sandbox/reset-stats`, `/_sandbox/ground-truth`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

import requests

from marketo_source.sandbox import BulkSpec
from marketo_source.sandbox.__main__ import read_source_settings

HOST = "127.0.0.1"


@dataclass(frozen=True)
class SandboxOptions:
    """What the sandbox process holds and enforces (None disables a limit).

    Attributes:
        activities: Records in the initial log, New Lead records included.
        leads: Leads; each has a New Lead record.
        start_date: ISO start of the generated span.
        days: Length of the span.
        seed: Seed of the generator.
        custom_types: Seed the two standard custom types and their activities.
        max_custom_types: Custom types the instance may hold.
        block_size: Log positions one read call scans at most.
        calls_per_window: Calls allowed per window.
        window_s: The rate window in seconds.
        max_concurrent: Calls allowed in flight.
        daily_quota: Calls allowed in total.
        latency_s: Delay of every REST answer.
        bulk_queue_s: Seconds an export job waits after enqueue.
        bulk_processing_s: Seconds an export job processes.
        bulk_status_interval_s: Export jobs' stages show at multiples of this many seconds.
    """

    activities: int
    leads: int
    start_date: str
    days: int = 10
    seed: int = 1
    custom_types: bool = True
    max_custom_types: int = 10
    block_size: int = 1000
    calls_per_window: Optional[int] = None
    window_s: Optional[float] = None
    max_concurrent: Optional[int] = None
    daily_quota: Optional[int] = None
    latency_s: float = 0.0
    bulk_queue_s: float = BulkSpec.queue_s
    bulk_processing_s: float = BulkSpec.processing_s
    bulk_status_interval_s: float = BulkSpec.status_interval_s

    def command(self) -> List[str]:
        """The command line that starts this sandbox."""
        limits = {
            "--calls-per-window": self.calls_per_window,
            "--window": self.window_s,
            "--max-concurrent": self.max_concurrent,
            "--daily-quota": self.daily_quota,
        }
        command = [
            sys.executable, "-m", "marketo_source.sandbox", "--host", HOST, "--port", "0",
            "--seed", str(self.seed), "--leads", str(self.leads), "--activities", str(self.activities),
            "--days", str(self.days), "--start-date", self.start_date, "--block-size", str(self.block_size),
            "--max-custom-types", str(self.max_custom_types), "--latency", str(self.latency_s),
            "--bulk-queue", str(self.bulk_queue_s), "--bulk-processing", str(self.bulk_processing_s),
            "--bulk-status-interval", str(self.bulk_status_interval_s),
        ]
        command += [part for flag, value in limits.items() for part in (flag, _limit_text(value))]
        return command + ([] if self.custom_types else ["--no-custom-types"])


def _limit_text(value: Optional[float]) -> str:
    return "none" if value is None else f"{value:g}"


class SandboxProcess:
    """A sandbox served by a child process; use as a context manager.

    Args:
        options: What to generate and which limits to enforce.
    """

    def __init__(self, options: SandboxOptions) -> None:
        self.options = options
        self.process: Optional[subprocess.Popen[str]] = None
        self.base_url = self.client_id = self.client_secret = ""
        self.startup_s = 0.0
        self.session = requests.Session()

    def __enter__(self) -> SandboxProcess:
        started = time.perf_counter()
        self.process = subprocess.Popen(self.options.command(), stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None  # a pipe, as asked
        try:
            printed = read_source_settings(self.process.stdout)
        except BaseException:
            self.__exit__()
            raise
        self.base_url, self.client_id, self.client_secret = (
            printed["base_url"], printed["client_id"], printed["client_secret"])
        self.startup_s = time.perf_counter() - started
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.session.close()

    def cpu_s(self) -> float:
        """CPU seconds the sandbox process has used so far (user + system, from /proc)."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stats(self) -> dict[str, Any]:
        """The sandbox's counters: calls per endpoint, errors per code, max concurrency seen."""
        return self._admin("GET", "stats")

    def reset_stats(self) -> None:
        """Zero the sandbox's counters."""
        self._admin("POST", "reset-stats")

    def ground_truth(self) -> dict[str, Any]:
        """Every record the sandbox holds, in commit order (large: about 600 bytes per activity)."""
        return self._admin("GET", "ground-truth")

    def _admin(self, method: str, action: str) -> Any:
        response = self.session.request(method, f"{self.base_url}/_sandbox/{action}", timeout=600)
        response.raise_for_status()
        return response.json()

    def rest_session(self) -> requests.Session:
        """A requests session holding a fresh access token of this sandbox."""
        session = requests.Session()
        answer = session.get(f"{self.base_url}/identity/oauth/token", timeout=30, params={
            "grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self.client_secret})
        answer.raise_for_status()
        session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        return session
