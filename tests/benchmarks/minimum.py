"""The fewest calls the sandbox's data requires, from its ground truth and its block scanning rule.

The rule (marketo_source/sandbox/store.py, `Store.read`): a page call starts at its token's log
position, scans at most `block_size` positions and stops early after `batch_size` matches; the
next token points just after the last position scanned, and `moreResult` is false once that is
the end of the log. So a chain of page calls over a set of types costs a fixed number of calls,
which `page_calls` computes exactly, and the only freedom a reader has is how it groups the types
(at most 10 per call) and which endpoint reads which type.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from marketo_source.chains import groups_of
from marketo_source.settings import HIGH_VOLUME_TYPE_IDS

MAX_TYPES_PER_CALL = 10
BATCH_SIZE = 300
LEAD_CHANGE_TYPES = (12, 13)
DELETE_LEAD = 37
METADATA_CALLS = {"activity_types": 1, "custom_types": 1, "describe_leads": 1}
"""One call each: activity types, custom activity types, lead fields (Describe Lead2)."""

Grouping = List[List[int]]


@dataclass
class LogShape:
    """Where each activity type sits in the commit log.

    Attributes:
        length: Records in the log.
        positions: Sorted log positions per activity type id.
        type_ids: Every type the instance lists (types.json), with or without records.
    """

    length: int
    positions: Dict[int, List[int]]
    type_ids: List[int]

    @classmethod
    def from_ground_truth(cls, truth: dict) -> LogShape:
        """Builds the shape from the sandbox's ground truth (activities in commit order)."""
        positions: Dict[int, List[int]] = {}
        for position, record in enumerate(truth["activities"]):
            positions.setdefault(record["activityTypeId"], []).append(position)
        type_ids = sorted(t["id"] for t in truth["activity_types"])
        return cls(len(truth["activities"]), positions, type_ids)

    def matches(self, type_ids: Sequence[int]) -> List[int]:
        """Sorted log positions of the records of any of `type_ids`."""
        return sorted(p for t in type_ids for p in self.positions.get(t, ()))

    def count(self, type_ids: Sequence[int]) -> int:
        """Records of any of `type_ids`."""
        return sum(len(self.positions.get(t, ())) for t in type_ids)


def page_calls(matches: Sequence[int], length: int, block_size: int, start: int = 0,
               batch_size: int = BATCH_SIZE) -> int:
    """Calls one chain needs to read `matches` (sorted positions) from `start` to the end of the log.

    Args:
        matches: Sorted log positions the chain's filter accepts.
        length: Records in the log.
        block_size: Positions one call scans at most.
        start: The paging token's first position.
        batch_size: Records one call returns at most.

    Returns:
        The number of calls until the sandbox answers `moreResult: false`.
    """
    calls, position = 0, start
    while True:
        calls += 1
        end = min(length, position + block_size)
        first = bisect_left(matches, position)
        last = first + batch_size - 1
        position = matches[last] + 1 if last < len(matches) and matches[last] < end else end
        if position >= length:
            return calls


def group_calls(shape: LogShape, grouping: Grouping, block_size: int) -> int:
    """Page calls of every group of a grouping, one chain per group."""
    return sum(page_calls(shape.matches(group), shape.length, block_size) for group in grouping)


def chunks(type_ids: Sequence[int]) -> Grouping:
    """Consecutive groups of at most 10 types, in the given order."""
    return [list(type_ids[i : i + MAX_TYPES_PER_CALL]) for i in range(0, len(type_ids), MAX_TYPES_PER_CALL)]


def id_order(shape: LogShape, type_ids: Sequence[int]) -> Grouping:
    """Groups of 10 in id order: what the source did when this benchmark was written."""
    return chunks(sorted(type_ids))


def source_groups(type_ids: Sequence[int]) -> Grouping:
    """The source's groups on a first run: Marketo's high-volume types spread over the fewest groups of 10."""
    keys = [str(t) for t in sorted(type_ids)]
    heavy = {str(t) for t in type_ids if t in HIGH_VOLUME_TYPE_IDS}
    return [[int(key) for key in group] for group in groups_of(keys, MAX_TYPES_PER_CALL, heavy)]


def source(shape: LogShape, type_ids: Sequence[int]) -> Grouping:
    """What the source does (`source_groups`); it knows no record counts, only Marketo's list of high-volume types."""
    return source_groups(type_ids)


def dense_first(shape: LogShape, type_ids: Sequence[int]) -> Grouping:
    """Groups of 10 by falling record count: dense types together, sparse types together."""
    return chunks(sorted(type_ids, key=lambda t: -shape.count([t])))


def balanced(shape: LogShape, type_ids: Sequence[int]) -> Grouping:
    """The fewest groups, each type (densest first) put in the group with the fewest records so far."""
    groups: Grouping = [[] for _ in range(math.ceil(len(type_ids) / MAX_TYPES_PER_CALL))]
    loads = [0] * len(groups)
    for type_id in sorted(type_ids, key=lambda t: -shape.count([t])):
        open_groups = [g for g in range(len(groups)) if len(groups[g]) < MAX_TYPES_PER_CALL]
        target = min(open_groups, key=lambda g: loads[g])
        groups[target].append(type_id)
        loads[target] += shape.count([type_id])
    return groups


STRATEGIES: Dict[str, Callable[[LogShape, Sequence[int]], Grouping]] = {
    "source": source, "id_order": id_order, "dense_first": dense_first, "balanced": balanced,
}


def lower_bound(shape: LogShape, type_ids: Sequence[int], block_size: int) -> int:
    """No grouping of `type_ids` needs fewer page calls: each group scans the whole log, each call returns <= 300."""
    groups = math.ceil(len(type_ids) / MAX_TYPES_PER_CALL)
    return max(groups * math.ceil(shape.length / block_size), math.ceil(shape.count(type_ids) / BATCH_SIZE))


@dataclass
class GroupingResult:
    """Page calls of the activities stream under each grouping strategy."""

    calls: Dict[str, int]
    best: str
    lower_bound: int
    groups: int

    def as_dict(self) -> dict:
        """Plain data for the JSON report."""
        return {"calls": self.calls, "best": self.best, "best_calls": self.calls[self.best],
                "lower_bound": self.lower_bound, "groups": self.groups}


def compare_groupings(shape: LogShape, type_ids: Sequence[int], block_size: int) -> GroupingResult:
    """Exact page calls of each strategy, the best of them and the lower bound over all groupings."""
    calls = {name: group_calls(shape, strategy(shape, type_ids), block_size) for name, strategy in STRATEGIES.items()}
    best = min(calls, key=lambda name: calls[name])
    groups = math.ceil(len(type_ids) / MAX_TYPES_PER_CALL)
    return GroupingResult(calls, best, lower_bound(shape, type_ids, block_size), groups)


def activity_stream_types(shape: LogShape) -> List[int]:
    """Types the source's activities stream reads by default: all but New Lead, Change Data Value, Delete Lead."""
    return [t for t in shape.type_ids if t not in (*LEAD_CHANGE_TYPES, DELETE_LEAD)]


def minimum_calls(shape: LogShape, block_size: int, type_ids: Optional[Sequence[int]] = None) -> dict:
    """The fewest calls per endpoint for the source's streams over this log, and what-ifs.

    Args:
        shape: The log.
        block_size: The sandbox's block size.
        type_ids: Types of the activities stream (the source's activity_type_ids); None: its default.

    Returns:
        "per_endpoint" (minimum with the source's grouping), "activities" (each grouping's page
        calls and the lower bound), "total_source", "total_best", "deleted_in_activities": the
        activities stream's best page calls if Delete Lead (37) were read through activities.json
        with the other types instead of its own endpoint, and "chain_calls": the page calls of
        each chain the source runs (its groups, lead changes, deleted leads).
    """
    types = list(type_ids) if type_ids else activity_stream_types(shape)
    grouping = compare_groupings(shape, types, block_size)
    per_endpoint = {
        **METADATA_CALLS,
        "paging_token": 1,
        "activities": grouping.calls["source"],
        "lead_changes": page_calls(shape.matches(LEAD_CHANGE_TYPES), shape.length, block_size),
        "deleted_leads": page_calls(shape.matches([DELETE_LEAD]), shape.length, block_size),
    }
    total = sum(per_endpoint.values())
    merged = compare_groupings(shape, [*types, DELETE_LEAD], block_size)
    best_total = total - grouping.calls["source"] + grouping.calls[grouping.best]
    return {
        "per_endpoint": per_endpoint,
        "activities": grouping.as_dict(),
        "total_source": total,
        "total_best": best_total,
        "deleted_in_activities": {
            **merged.as_dict(),
            "total_best": best_total - grouping.calls[grouping.best] - per_endpoint["deleted_leads"]
            + merged.calls[merged.best],
        },
        "chains": grouping.groups + 2,
        "chain_calls": [page_calls(shape.matches(group), shape.length, block_size) for group in source_groups(types)]
        + [per_endpoint["lead_changes"], per_endpoint["deleted_leads"]],
        "records": shape.length,
    }
