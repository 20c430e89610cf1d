"""Which chains of pages a stream reads in a run, and where each starts.

Cursors that stand at the same position and share the same filters read together, at most 10
activity types per call. A group keeps reading from its own position, so groups once read stay as
they are; only cursors that share a position (all of them on a first run) are grouped anew.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import AbstractSet, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from marketo_source import settings
from marketo_source.late_commits import Recheck, restart_point
from marketo_source.paging import Chain, ChainPace, SliceRef
from marketo_source.state import ChainStart, Cursor, CursorId, Position, Slice


@dataclass(frozen=True)
class StartRules:
    """How a run's chains start."""

    start: datetime
    """The first run's start (start_date): a cursor with no position begins there."""
    lookback: Optional[timedelta] = None
    """Restart each cursor this long before its newest activity."""
    recheck: bool = False
    """Whether a cursor that read to Marketo's end restarts where it reads late commits again (see
    `late_commits`), rather than from its token."""
    latest_restart: Optional[datetime] = None
    """With `recheck`, no cursor restarts later than this (see `late_commits.latest_restart`)."""

    def of(self, cursor: Cursor) -> Tuple[ChainStart, Optional[datetime]]:
        """Where the cursor's latest range starts this run, and the restart point if it restarts."""
        restart = restart_point(cursor, self.lookback, self.recheck, self.latest_restart)
        if restart is not None:
            return ChainStart(None, restart), restart
        return ChainStart(cursor.latest.token, cursor.latest.since or self.start), None


def chains_for_cursors(
    path: str,
    cursors: Mapping[str, Tuple[CursorId, Cursor]],
    params: Dict[str, str],
    rules: StartRules,
    group_param: Optional[str] = None,
    heavy: AbstractSet[str] = frozenset(),
) -> List[Chain]:
    """The chains that read these cursors this run: their latest ranges, and their unfinished slices.

    Args:
        path: The endpoint the chains read.
        cursors: (id, cursor) per key; with `group_param`, the key is the value sent in that
            parameter (an activity type id) and at most 10 keys share a chain.
        params: Filters every call of these chains sends.
        rules: Where chains start this run.
        group_param: The parameter listing the grouped keys (`activityTypeIds`), if any.
        heavy: Keys expected to hold many records, spread over the groups (see `groups_of`).
    """
    by_position: Dict[Tuple[ChainStart, Optional[datetime], Tuple[Any, ...]], List[str]] = {}
    for key, (_, cursor) in cursors.items():
        start, restart = rules.of(cursor)
        slices = tuple(_slice_key(part) for part in cursor.slices)
        by_position.setdefault((start, restart, slices), []).append(key)
    size = settings.MAX_TYPES_PER_CALL if group_param else max(1, len(cursors))
    chains = []
    for (start, restart, _), keys in by_position.items():
        for group in groups_of(keys, size, heavy):
            chain_params = {**params, group_param: ",".join(group)} if group_param else dict(params)
            ids = [cursors[key][0] for key in group]
            members = [cursors[key][1] for key in group]  # they stand at one position
            chains += [
                _slice_chain(path, chain_params, ids, [member.slices[index] for member in members], rules.start)
                for index in range(len(members[0].slices))
            ]
            # One newest activity for the chain, as its cursors record it, so that they stay together.
            newest = _newest(member.latest for member in members)
            chains.append(Chain(
                path, chain_params, ids, start, newest=newest,
                pace=ChainPace(reached=newest),
                recheck=Recheck.for_cursor(members[0], restart),
                rereading_until=newest if restart is not None else None,
            ))
    return chains


def _slice_chain(path: str, params: Dict[str, str], ids: List[CursorId], parts: List[Slice], start: datetime) -> Chain:
    """The chain of one unfinished slice of each of the cursors `ids`."""
    first = parts[0]
    newest = _newest(part.position for part in parts)
    return Chain(
        path, params, ids, ChainStart(first.position.token, first.position.since or start),
        slice=SliceRef(tuple(part.position.since for part in parts)), ends_before=first.keep_before,
        stop_at=first.stop_at, newest=newest, pace=ChainPace(reached=newest),
    )


def _slice_key(part: Slice) -> Tuple[Any, ...]:
    """What a chain reading the slice starts from and is bound by: its token, or without one where
    it starts, and its bounds. Cursors that split at different times share the first two."""
    position = part.position
    return position.token, position.since if position.token is None else None, part.keep_before, part.stop_at


def _newest(positions: Iterable[Position]) -> Optional[datetime]:
    return max((position.newest for position in positions if position.newest is not None), default=None)


def groups_of(keys: Sequence[str], size: int, heavy: AbstractSet[str] = frozenset()) -> List[List[str]]:
    """The fewest groups of at most `size` keys, with the heavy keys spread evenly over them.

    A page call scans a bounded stretch of Marketo's log and returns at most 300 records: a
    group of sparse types costs the scan's calls, and a group holding several high-volume types
    fills its pages before the stretch ends and needs more. Spread over the groups, the heavy
    types keep each group near the scan's cost (in the sandbox, 100,000 activities take 324
    page calls instead of 373 in id order). Without heavy keys: groups in key order.
    """
    count = max(1, math.ceil(len(keys) / size))
    groups: List[List[str]] = [[] for _ in range(count)]
    loads = [0] * count
    for key in sorted(keys, key=lambda k: k not in heavy):  # heavy keys first, each kept in order
        target = min((g for g in range(count) if len(groups[g]) < size), key=loads.__getitem__)
        groups[target].append(key)
        loads[target] += key in heavy
    order = {key: n for n, key in enumerate(keys)}
    return [sorted(group, key=order.__getitem__) for group in groups if group]
