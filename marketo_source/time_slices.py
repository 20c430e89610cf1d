"""Time slices: a long chain hands the later half of its time range to a new chain beside it.

A chain's pages follow one another, so one dense group of types can keep a run going long after
the rate limit would let it end. With `time_slices`, a chain that would outlast the rest of the
run hands the later part of its range to a new chain, a *slice*, that starts from a date token
and runs alongside. Tokens keep their start date as a filter, so a slice never sees activities
dated before its start: the earlier chain keeps every activity dated before that start and reads
on until a page lies wholly `overlap` past it, so that activities Marketo records up to
`overlap` late are still read once. Slices not finished when a run stops are saved in their
cursors' `slices` (`state`) and read on by the next run, with or without `time_slices`.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Dict, List, Optional, Tuple

from marketo_source import settings
from marketo_source.late_commits import Recheck
from marketo_source.paging import Chain, ChainPace, Page, SliceRef, activity_date, newest_date
from marketo_source.state import ChainStart, StreamState

logger = logging.getLogger("marketo_source")


def bound_to_slice(chain: Chain, page: Page) -> None:
    """Keeps only the activities of a time slice, and ends it once a whole page lies past its overlap.

    A record without a readable activityDate stays: the next slice may read it too, and merge
    on marketo_guid keeps one. A single activity dated in the future does not end the slice.
    """
    if chain.ends_before is None:
        return
    dates = [activity_date(record) for record in page.records]
    known = [date for date in dates if date is not None]
    if chain.stop_at is not None and known and min(known) >= chain.stop_at:
        page.more = False
    kept = [
        record for record, date in zip(page.records, dates, strict=True) if date is None or date < chain.ends_before
    ]
    if len(kept) < len(page.records):
        page.records, page.newest = kept, newest_date(kept)


@dataclass
class SliceSplit:
    """Stands in a stream's queue where `chain` handed its range from `at` on to `slice`.

    Applied when the consumer reaches it, after the chain's pages fetched before the split and
    before any page bounded by it, so that the saved cursors always describe what was handed on.
    """

    chain: Chain
    slice: Chain
    at: datetime
    stop_at: datetime

    def apply(self, state: StreamState) -> None:
        chain, new, at, stop_at = self.chain, self.slice, self.at, self.stop_at
        ids = chain.cursor_ids
        if chain.slice is None:  # the chain read the latest range: it becomes the last slice, the new chain the latest
            chain.slice = SliceRef(tuple(state.cursor(cursor_id).latest.since for cursor_id in ids))
            state.change(ids, lambda cursor: cursor.split(at, stop_at))
            new.recheck, chain.recheck = chain.recheck, Recheck()
            new.newest = chain.newest
        else:
            chain.slice.change(state, ids, lambda cursor, since: cursor.split_slice(since, at, stop_at))
            new.slice = SliceRef((at,) * len(ids))


class TimeSlicer:
    """Decides when a chain hands half of its range to a new slice, and opens it."""

    def __init__(self, overlap: timedelta, run_started: datetime) -> None:
        self.overlap = overlap
        self._run_started = run_started

    def choose(
        self, live: List[Chain], left: Dict[int, float], run_s: float, answer_s: float
    ) -> Optional[Tuple[Chain, datetime, float]]:
        """(chain, where its new slice starts, its pages left) of a chain that would outlast the
        rest of the run, or None. Shorter chains are left whole: slicing them costs calls and
        saves no time."""
        for chain in sorted(live, key=lambda chain: -left[id(chain)]):
            pages = left[id(chain)]
            if pages < settings.SLICE_MIN_PAGES or pages * answer_s < max(settings.SLICE_MIN_SECONDS, run_s):
                return None
            if not chain.pace.paced():
                continue  # split a new slice once its own pace shows where its range lies
            at = self._slice_start(chain)
            if at is not None:
                return chain, at, pages
        return None

    def open(self, chain: Chain, at: datetime, pages: float) -> SliceSplit:
        """Bounds `chain` at `at` and makes the slice that reads on from there; the split to queue."""
        new = Chain(chain.path, chain.params, chain.cursor_ids, ChainStart(None, at), slice=chain.slice,
                    ends_before=chain.ends_before, stop_at=chain.stop_at, pace=ChainPace(expected_pages=pages / 2))
        chain.ends_before, chain.stop_at = at, at + self.overlap
        logger.info("%s: reading from %s on in a new time slice, alongside the chain before it (%.0f pages to go)",
                    chain.path, at.isoformat(), pages)
        return SliceSplit(chain, new, at, at + self.overlap)

    def _slice_start(self, chain: Chain) -> Optional[datetime]:
        """Where a new slice would take over the chain's range, or None if too near the chain's position."""
        position = chain.pace.reached
        assert position is not None
        at = position + (chain.range_end(self._run_started) - position) / 2
        if chain.ends_before is None:
            # The new slice reads on into later runs with its start as the token's date filter: an
            # activity dated before it and committed after this run began is `overlap` late or more.
            at = min(at, self._run_started - self.overlap)
        at = at.replace(microsecond=0)
        return at if at - position >= settings.SLICE_MIN_SPAN_PER_OVERLAP * self.overlap else None
