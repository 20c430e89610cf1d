"""Fault injection: chosen REST calls fail the way Marketo and networks fail."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Sequence

MARKETO_FAULTS = ("601", "602", "603", "604", "606", "607", "608", "611", "615", "713")
TRANSPORT_FAULTS = ("http500", "http502", "slow", "reset", "truncated", "cut")


@dataclass(frozen=True)
class Fault:
    """One fault rule.

    Attributes:
        kind: A Marketo code ("601", "602", "603", "604", "606", "607", "608", "611", "615", "713") answered in the
            envelope, or "http500", "http502", "slow" (answer after slow_s), "reset" (TCP reset without
            an answer), "truncated" (a 200 answer whose JSON is cut in half) or "cut" (the connection closes
            after cut_bytes bytes of the body, while the headers announce all of it: a download cut short).
        probability: Chance to inject on each REST call (seeded, see MarketoSandbox fault_seed).
        calls: 1-based numbers of REST calls (counting every request to /rest and /bulk) to inject at.
        endpoint: Only inject on this endpoint name (see stats()["calls"]).
        times: Inject at most this many times.
        slow_s: Delay of a "slow" answer.
        cut_bytes: Bytes of the body a "cut" answer sends before the connection closes.
    """

    kind: str
    probability: float = 0.0
    calls: tuple[int, ...] = ()
    endpoint: str | None = None
    times: int | None = None
    slow_s: float = 35.0
    cut_bytes: int = 1024

    def __post_init__(self) -> None:
        if self.kind not in MARKETO_FAULTS + TRANSPORT_FAULTS:
            raise ValueError(f"unknown fault kind {self.kind!r}")


class FaultInjector:
    """Decides, per REST call, which fault (if any) to inject."""

    def __init__(self, faults: Sequence[Fault], seed: int) -> None:
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.set_faults(faults)

    def set_faults(self, faults: Sequence[Fault]) -> None:
        """Replace the rules; injection counts start again."""
        with self.lock:
            self.faults = list(faults)
            self.injected = [0] * len(self.faults)

    def pick(self, call_number: int, endpoint: str) -> Fault | None:
        """The first rule that fires on this call, counted as injected; None when none fires."""
        with self.lock:
            for index, fault in enumerate(self.faults):
                if fault.endpoint not in (None, endpoint):
                    continue
                if fault.times is not None and self.injected[index] >= fault.times:
                    continue
                # Draw for every probabilistic rule in scope, so the sequence does not depend on schedules.
                drawn = fault.probability > 0 and self.rng.random() < fault.probability
                if call_number in fault.calls or drawn:
                    self.injected[index] += 1
                    return fault
            return None
