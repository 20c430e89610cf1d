"""Paging: the order in which reads move through the activities, and the opaque signed tokens that mark a place.

Marketo does not document what a continuation token marks, so the sandbox plays two readings:

- commit order: a token marks (since, position in the commit log). Resuming returns everything committed
  after the position and dated at or after since, so activities committed late are found.
- date order: a token marks a key (activityDate, id, commit position) in activityDate order. An activity
  committed after a token passed its activityDate lies behind the token and is never returned from it,
  nor from any continuation of it; only a new date token from before its activityDate finds it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time
from array import array
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass
from typing import Literal, Sequence, get_args

from .errors import invalid
from .records import Activity

TokenOrder = Literal["commit", "date"]
TOKEN_ORDERS: tuple[TokenOrder, ...] = get_args(TokenOrder)
Mark = tuple[int, ...]
"""What a token carries besides its issue time; its fields depend on the token order."""

_MAC_BYTES = 8
_INT64_MIN = -(2**63)


@dataclass(frozen=True)
class Block:
    """What one read call scans: log positions in token order, starting at index `first` of that order.

    Attributes:
        first: Index of the block's first entry in the token order (a commit position or a date-index slot).
        positions: Commit-log positions to scan, in token order; at most `block_size` of them.
        since_ms: Records dated before it are skipped.
    """

    first: int
    positions: Sequence[int]
    since_ms: int

    def end(self, scanned: int) -> int:
        """Index in the token order just after the last of `scanned` entries."""
        return self.first + scanned


class CommitOrder:
    """Tokens mark (since ms, position in the commit log); records come in commit order."""

    token_fields = "qQ"

    def __init__(self) -> None:
        self.prefix_max = array("q")  # running max of dates, so a since-date maps to a position by bisection

    def committed(self, activity: Activity) -> None:
        """Index an activity the log has just appended."""
        previous = self.prefix_max[-1] if self.prefix_max else activity.date_ms
        self.prefix_max.append(max(activity.date_ms, previous))

    def start(self, since_ms: int) -> Mark:
        """Get Paging Token: the first position that may hold a record at or after since."""
        return since_ms, bisect_left(self.prefix_max, since_ms)

    def block(self, mark: Mark, block_size: int) -> Block:
        """The positions a read from `mark` scans."""
        since_ms, position = mark
        return Block(position, range(position, min(len(self.prefix_max), position + block_size)), since_ms)

    def after(self, mark: Mark, block: Block, scanned: int) -> tuple[Mark, bool]:
        """The mark after `scanned` entries of the block, and whether entries remain after it."""
        end = block.end(scanned)
        return (mark[0], end), end < len(self.prefix_max)


class DateOrder:
    """Tokens mark a key (activityDate ms, id, commit position); records come in that key order.

    The index holds commit positions sorted by key. The log is generated in date order, so the initial
    activities are appended at the end; an activity committed late is inserted in its place.
    """

    token_fields = "qqq"

    def __init__(self, dates: array[int]) -> None:
        self.dates = dates  # the log's activityDate column, which the log appends to before `committed`
        self.ids = array("q")
        self.order = array("q")

    def key(self, position: int) -> Mark:
        """The key of the activity at a commit position."""
        return self.dates[position], self.ids[position], position

    def committed(self, activity: Activity) -> None:
        """Index an activity the log has just appended."""
        position = len(self.ids)
        self.ids.append(activity.id)
        if not self.order or self.key(self.order[-1]) < self.key(position):
            self.order.append(position)
        else:
            insort(self.order, position, key=self.key)

    @staticmethod
    def start(since_ms: int) -> Mark:
        """Get Paging Token: a mark just before every key dated at or after since."""
        return since_ms, _INT64_MIN, -1

    def block(self, mark: Mark, block_size: int) -> Block:
        """The positions a read from `mark` scans: the entries whose key is greater than the mark."""
        first = bisect_right(self.order, mark, key=self.key)
        return Block(first, self.order[first:first + block_size], mark[0])

    def after(self, mark: Mark, block: Block, scanned: int) -> tuple[Mark, bool]:
        """The key of the last entry scanned (the old mark when none was), and whether entries remain after it."""
        next_mark = self.key(block.positions[scanned - 1]) if scanned else mark
        return next_mark, block.end(scanned) < len(self.order)


class TokenCodec:
    """Encodes marks as base32 tokens (Marketo's look) and rejects tampered or stale ones.

    A token holds the mark's fields (signed 'q' or unsigned 'Q' 64-bit integers) and its issue time.
    """

    def __init__(self, key: bytes, fields: str, ttl_s: float | None = None) -> None:
        self.key = key
        self.layout = struct.Struct(f">{fields}q")
        self.ttl_s = ttl_s

    def encode(self, mark: Mark) -> str:
        """Sign and encode a mark, stamped with the current time."""
        payload = self.layout.pack(*mark, int(time.time()))
        raw = payload + self._mac(payload)
        return base64.b32encode(raw).decode().rstrip("=")

    def decode(self, token: str) -> Mark:
        """Decode a token.

        Raises:
            ApiError: 1003 when the token is not one of ours (tokens of the other order have another
                length), or is older than the paging token TTL.
        """
        try:
            raw = base64.b32decode(token + "=" * (-len(token) % 8))
        except ValueError:
            raise invalid("Invalid value for nextPageToken") from None
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(payload) != self.layout.size or not hmac.compare_digest(mac, self._mac(payload)):
            raise invalid("Invalid value for nextPageToken")
        *mark, issued_s = self.layout.unpack(payload)
        if self.ttl_s is not None and time.time() - issued_s > self.ttl_s:
            raise invalid("nextPageToken expired")
        return tuple(mark)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.key, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def paging_order(name: TokenOrder, dates: array[int]) -> CommitOrder | DateOrder:
    """The paging order called `name` over the log's activityDate column.

    Raises:
        ValueError: For a name other than "commit" or "date".
    """
    if name == "commit":
        return CommitOrder()
    if name == "date":
        return DateOrder(dates)
    raise ValueError(f"token_order must be one of {', '.join(TOKEN_ORDERS)}, not {name!r}")
