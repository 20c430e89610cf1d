"""What a push did: counted by the pusher, or read from the ledger."""

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class PushSummary:
    """What a push did.

    Attributes:
        added: Rows Marketo now holds because of this push, `reconciled` ones included.
        skipped: Rows Marketo (or the local check, code `invalid_row`) refused; kept in the ledger.
        already_done: Rows not sent because their key was already added or skipped, by an earlier
            push or by an identical row earlier in this one.
        reconciled: Rows found in Marketo by reading back after an uncertain call or a crash.
        skipped_by_code: Skipped rows per error code, e.g. {"1004": 12}.
    """

    added: int = 0
    skipped: int = 0
    already_done: int = 0
    reconciled: int = 0
    skipped_by_code: Counter[str] = field(default_factory=Counter)

    def __str__(self) -> str:
        reasons = ", ".join(f"{code}: {count:,}" for code, count in sorted(self.skipped_by_code.items()))
        return (f"added {self.added:,} ({self.reconciled:,} found by reading back), skipped {self.skipped:,}"
                f"{f' ({reasons})' if reasons else ''}, already done {self.already_done:,}")
