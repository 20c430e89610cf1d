"""Late commits: where a chain of pages restarts so that activities Marketo records late are read.

Marketo records some activities after their activityDate: Send Email once the mail has left its
servers, minutes to an hour later. Marketo does not document what a saved `nextPageToken` does
with an activity recorded after the reader passed its date. A token may mark a place in the order
Marketo recorded activities, and then resuming from it returns the late activity; or a place in
activityDate order, and then the late activity lies behind the token and it never returns it.

To be exact under both, a chain that has read to Marketo's end restarts on its next run from a
date token `window` before that run began: an activity recorded at most `window` after its
activityDate, after the chain's scan passed its date, is dated after that restart point, since
the scan passed it no earlier than the run began. Activities read before are read again, and
merge on marketoGUID keeps one row of each.

Marketo's clock may lag this machine's, or a test server's data may lie in the past: a restart
point after the newest activity anyone has read would then skip what Marketo records next. So a
restart is never later than `window` before the newest activityDate any stream has read.

A cursor carries this from run to run in `recheck_from` (activities dated from here on may still
be recorded late) and `caught_up` (whether its latest range read to Marketo's end). Only a range
that read to the end restarts at `recheck_from`: one stopped half way (a run bound, the quota)
resumes from its saved token, since a date token from its newest activity could skip what its
token's scan had passed, and carries `recheck_from` until it reaches the end.

A chain that resumes from a saved token learns where that token stood from its first activity:
under either reading, nothing it returns is dated before the token's place in activityDate
order, unless recorded late. If that first activity is dated at or before `recheck_from`, the
earlier runs stopped before their scans reached it, and there is nothing to read again.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

from marketo_source.state import Cursor, to_minute


def recheck_floor(run_started: datetime, window: timedelta) -> datetime:
    """Where a chain that a run started at `run_started` reads has to be read again from.

    Rounded down to the minute: a restart point shared by the chains of a run costs one Get
    Paging Token call.
    """
    return to_minute(run_started - window)


def latest_restart(newest_read: Optional[datetime], window: timedelta) -> Optional[datetime]:
    """The latest restart point that reads what Marketo records after the newest activity read."""
    return None if newest_read is None else to_minute(newest_read - window)


def restart_point(
    cursor: Cursor, lookback: Optional[timedelta], recheck: bool, latest: Optional[datetime]
) -> Optional[datetime]:
    """Where the cursor's latest range restarts from a date token this run, or None to resume from its token.

    With `recheck`, it restarts at `recheck_from` (no later than `latest`, see `latest_restart`)
    once it has read to Marketo's end; with a `lookback`, that long before its newest activity;
    whichever is earlier.
    """
    candidates = []
    if recheck and cursor.caught_up and cursor.recheck_from is not None:
        candidates.append(cursor.recheck_from if latest is None else min(cursor.recheck_from, latest))
    if lookback and cursor.latest.newest is not None:
        candidates.append(cursor.latest.newest - lookback)
    return min(candidates, default=None)


@dataclass
class Recheck:
    """What a chain owes to late commits, from its first page of a run to its last.

    `pending` is the `recheck_from` its cursors brought into the run and this run does not read
    again (None once settled); `awaiting_first_activity` is set while a chain that resumed from a
    saved token has not yet seen an activity that tells where that token stood.
    """

    pending: Optional[datetime] = None
    awaiting_first_activity: bool = False

    @classmethod
    def for_cursor(cls, cursor: Cursor, restart: Optional[datetime]) -> "Recheck":
        """The recheck of a chain that starts at `restart` (None: from the cursor's saved token)."""
        carried = cursor.recheck_from
        if carried is None or (restart is not None and restart <= carried):
            return cls()  # nothing carried, or this run reads it again from a date token
        return cls(carried, awaiting_first_activity=restart is None and bool(cursor.latest.token))

    def after_page(self, earliest: Optional[datetime], floor: datetime) -> datetime:
        """The `recheck_from` to save once a page whose earliest activity is dated `earliest` is handed on."""
        if self.awaiting_first_activity and earliest is not None:
            if self.pending is not None and earliest <= self.pending:
                self.pending = None
            self.awaiting_first_activity = False
        return floor if self.pending is None else min(self.pending, floor)
