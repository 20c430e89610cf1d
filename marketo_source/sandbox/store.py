"""The instance state: one commit log of activities, leads, lists and custom types, behind one lock."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import zlib
from array import array
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Sequence

from .catalog import (
    CHANGE_DATA_VALUE,
    DELETE_LEAD,
    LEAD_FIELDS,
    LEAD_FIELDS_BY_NAME,
    NEW_LEAD,
    SEEDED_CUSTOM_TYPES,
    STANDARD_TYPES,
    custom_type_json,
    lead_field_json,
    standard_type_json,
)
from .custom_types import CustomTypeRegistry
from .errors import ApiError, invalid
from .generator import DataGenerator, DataSpec, format_date
from .hostile import make_hostile
from .paging import Block, TokenCodec, TokenOrder, paging_order
from .records import Activity, close_lead_change, field_entry, render_activity, render_lead_change_head

LEAD_CHANGE_TYPES = frozenset({NEW_LEAD, CHANGE_DATA_VALUE})
NO_ASSET = -1


@dataclass(frozen=True)
class ReadQuery:
    """Filters of one read call; None means "no filter"."""

    view: str  # "activities", "lead_changes" or "deleted_leads"
    type_ids: frozenset[int] | None = None
    lead_ids: frozenset[int] | None = None
    asset_ids: frozenset[int] | None = None
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Page:
    """One page of a read: rendered records plus the token and flag to continue."""

    records: list[bytes]
    next_page_token: str
    more_result: bool


class CompressedRecords:
    """Rendered records, zlib-compressed in chunks so a million activities fit in little memory.

    Records never contain a raw newline (JSON escapes it), so a chunk is the newline-joined records.
    Recently read chunks stay decompressed, because readers move through the log sequentially.
    """

    CHUNK = 256
    CACHED_CHUNKS = 32

    def __init__(self) -> None:
        self.sealed: list[bytes] = []
        self.open: list[bytes] = []
        self.cache: dict[int, list[bytes]] = {}

    def __len__(self) -> int:
        return len(self.sealed) * self.CHUNK + len(self.open)

    def append(self, record: bytes) -> None:
        """Add a record at the end."""
        self.open.append(record)
        if len(self.open) == self.CHUNK:
            self.sealed.append(zlib.compress(b"\n".join(self.open), 1))
            self.open = []

    def __getitem__(self, position: int) -> bytes:
        chunk, offset = divmod(position, self.CHUNK)
        if chunk == len(self.sealed):
            return self.open[offset]
        records = self.cache.get(chunk)
        if records is None:
            if len(self.cache) >= self.CACHED_CHUNKS:
                self.cache.pop(next(iter(self.cache)))
            records = self.cache[chunk] = zlib.decompress(self.sealed[chunk]).split(b"\n")
        return records[offset]

    def __iter__(self) -> Iterator[bytes]:
        return (self[position] for position in range(len(self)))


class ActivityLog:
    """Commit-ordered activities: filter columns in compact arrays and each record rendered once.

    `recorded` holds when each activity was committed (epoch ms): its activityDate for the initial log,
    the wall clock for activities added later (late ones are recorded after their activityDate).
    """

    def __init__(self) -> None:
        self.dates = array("q")
        self.recorded = array("q")
        self.type_ids = array("i")
        self.lead_ids = array("q")
        self.asset_ids = array("q")
        self.views = CompressedRecords()
        self.lead_change_views: dict[int, bytes] = {}  # complete for 13, without `fields` for 12
        self.changed_fields: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.dates)

    def append(self, activity: Activity, recorded_ms: int) -> bytes:
        """Commit one activity, recorded at `recorded_ms`; returns its activities-view rendering."""
        position = len(self.dates)
        self.dates.append(activity.date_ms)
        self.recorded.append(recorded_ms)
        self.type_ids.append(activity.type_id)
        self.lead_ids.append(activity.lead_id)
        self.asset_ids.append(NO_ASSET if activity.primary_id is None else activity.primary_id)
        view = render_activity(activity)
        self.views.append(view)
        if activity.type_id in LEAD_CHANGE_TYPES:
            head = render_lead_change_head(activity)
            change = activity.change
            if change is not None:
                head = close_lead_change(head, [field_entry(change.field, change.new_value, change.old_value)])
                self.changed_fields[position] = change.field.name
            self.lead_change_views[position] = head
        return view


class Store:
    """Everything the instance holds, thread safe through one lock."""

    def __init__(self, spec: DataSpec, token_secret: str, paging_token_ttl_s: float | None = None,
                 token_order: TokenOrder = "commit") -> None:
        """Generate the initial data.

        Args:
            spec: What to generate.
            token_secret: Secret the paging tokens are signed with (with the seed).
            paging_token_ttl_s: Age after which a paging token is refused; None keeps tokens valid forever.
            token_order: What a paging token marks: "commit" (a position in the commit log) or "date"
                (a key in activityDate order); see the paging module.

        Raises:
            ValueError: For an unknown token order.
        """
        self.lock = threading.Lock()
        self.spec = spec
        self.custom_types = CustomTypeRegistry(SEEDED_CUSTOM_TYPES if spec.custom_types else {}, spec.max_custom_types)
        seeded = {type_id: version for type_id, (_, version) in self.custom_types.approved().items()}
        self.generator = DataGenerator(spec, seeded)
        self.log = ActivityLog()
        self.token_order = token_order
        self.order = paging_order(token_order, self.log.dates)
        key = hashlib.sha256(f"{token_secret}:{spec.seed}".encode()).digest()
        self.codec = TokenCodec(key, self.order.token_fields, paging_token_ttl_s)
        for activity in self.generator.initial_activities():
            self._commit(activity, activity.date_ms)

    def _commit(self, activity: Activity, recorded_ms: int) -> bytes:
        """Append an activity to the log and the token order's index; returns its activities-view rendering."""
        view = self.log.append(activity, recorded_ms)
        self.order.committed(activity)
        return view

    # -- reads ---------------------------------------------------------------------------------

    def paging_token(self, since_ms: int) -> str:
        """Token for Get Paging Token: reads from it return records dated at or after since."""
        with self.lock:
            return self.codec.encode(self.order.start(since_ms))

    def read(self, query: ReadQuery, token: str, batch_size: int, block_size: int) -> Page:
        """Scan up to `block_size` entries after the token's mark in token order; return up to `batch_size` matches."""
        mark = self.codec.decode(token)
        with self.lock:
            block = self.order.block(mark, block_size)
            found, scanned = self._scan(block, self._predicate(query), batch_size)
            records = [self._render(query, position) for position in found]
            next_mark, more = self.order.after(mark, block, scanned)
        return Page(records, self.codec.encode(next_mark), more)

    def _scan(self, block: Block, accept: Callable[[int], bool], batch_size: int) -> tuple[list[int], int]:
        """The block's matching positions (at most `batch_size`) and how many entries were scanned to find them."""
        dates, since_ms, found = self.log.dates, block.since_ms, []
        for scanned, position in enumerate(block.positions, 1):
            if dates[position] >= since_ms and accept(position):
                found.append(position)
                if len(found) == batch_size:
                    return found, scanned
        return found, len(block.positions)

    def _predicate(self, query: ReadQuery) -> Callable[[int], bool]:
        log = self.log
        checks: list[Callable[[int], bool]] = []
        if query.view == "lead_changes":
            fields = frozenset(query.fields)
            checks.append(lambda p: log.type_ids[p] in LEAD_CHANGE_TYPES
                          and (log.type_ids[p] == NEW_LEAD or log.changed_fields[p] in fields))
        elif query.view == "deleted_leads":
            checks.append(lambda p: log.type_ids[p] == DELETE_LEAD)
        if (type_ids := query.type_ids) is not None:
            checks.append(lambda p: log.type_ids[p] in type_ids)
        if (lead_ids := query.lead_ids) is not None:
            checks.append(lambda p: log.lead_ids[p] in lead_ids)
        if (asset_ids := query.asset_ids) is not None:
            checks.append(lambda p: log.asset_ids[p] in asset_ids)
        if len(checks) == 1:
            return checks[0]
        return lambda p: all(check(p) for check in checks)

    def _render(self, query: ReadQuery, position: int) -> bytes:
        if query.view != "lead_changes":
            return self.log.views[position]
        view = self.log.lead_change_views[position]
        if self.log.type_ids[position] == NEW_LEAD:
            return close_lead_change(view, self._initial_fields(self.log.lead_ids[position], query.fields))
        return view

    def _initial_fields(self, lead_id: int, names: Iterable[str]) -> list[dict[str, Any]]:
        initial = self.generator.leads[lead_id].initial
        return [field_entry(LEAD_FIELDS_BY_NAME[name], initial[name]) for name in names if name in initial]

    def list_members(self, list_id: int) -> frozenset[int]:
        """Members of a static list.

        Raises:
            ApiError: 610 for an unknown list, 1003 for a list of 10,000 leads or more.
        """
        static_list = self.generator.lists.get(list_id)
        if static_list is None:
            raise ApiError("610", "List not found")
        if len(static_list.members) >= 10_000:
            raise invalid("listId: lists of 10,000 or more leads are not supported")
        return static_list.members

    def known_type_ids(self) -> set[int]:
        """Ids a read may filter on: standard types and approved custom types."""
        with self.lock:
            return {t.id for t in STANDARD_TYPES} | set(self.custom_types.approved())

    def activity_types(self) -> list[dict[str, Any]]:
        """Get Activity Types result: standard types, then the approved custom types."""
        with self.lock:
            approved = self.custom_types.approved()
            return [standard_type_json(t) for t in STANDARD_TYPES] + [
                custom_type_json(type_id, api_name, version) for type_id, (api_name, version) in approved.items()]

    def custom(self, operation: Callable[[CustomTypeRegistry], Any]) -> Any:
        """Run a custom-type operation under the lock."""
        with self.lock:
            return operation(self.custom_types)

    def export_activities(self, created_ms: tuple[int, int], type_ids: frozenset[int] | None,
                          on_recorded: bool, recorded_until_ms: int) -> list[dict[str, Any]]:
        """The activities a Bulk Activity Extract job exports, in commit order, as Get Lead Activities renders them.

        Delete Lead (37) activities are never exported, as on Marketo.

        Args:
            created_ms: The createdAt filter (start, end), epoch ms, both ends included.
            type_ids: The activityTypeIds filter; None for every type.
            on_recorded: Filter createdAt on when an activity was recorded instead of its activityDate.
            recorded_until_ms: Leave out activities recorded after this (the job processed before them).
        """
        log = self.log
        start_ms, end_ms = created_ms
        with self.lock:
            keys = log.recorded if on_recorded else log.dates
            found = [position for position in range(len(log))
                     if start_ms <= keys[position] <= end_ms and log.recorded[position] <= recorded_until_ms
                     and log.type_ids[position] != DELETE_LEAD
                     and (type_ids is None or log.type_ids[position] in type_ids)]
            return _parse(log.views[position] for position in found)

    # -- writes --------------------------------------------------------------------------------

    def add_activities(self, new: int, late: int, lateness_s: float | None = None,
                       hostile: bool = False) -> list[dict[str, Any]]:
        """Commit `new` activities dated now and `late` ones dated their lateness before now.

        See DataGenerator.more_activities; "now" is the wall clock in whole seconds. With `hostile`, their
        text values come from hostile.HOSTILE_VALUES (quotes, commas, line breaks, NUL bytes, non-ASCII).

        Raises:
            ValueError: For a negative `lateness_s`, which would date activities in the future.
        """
        if lateness_s is not None and lateness_s < 0:
            raise ValueError(f"lateness_s must not be negative, not {lateness_s}")
        with self.lock:
            now_ms = int(time.time()) * 1000  # truncated, so never ahead of the clock
            activities = self.generator.more_activities(new, late, now_ms, lateness_s)
            if hostile:
                activities = [make_hostile(activity, index) for index, activity in enumerate(activities)]
            recorded_ms = now_ms_precise()
            return [json.loads(self._commit(activity, recorded_ms)) for activity in activities]

    def add_custom_activities(self, items: Sequence[Any]) -> list[dict[str, Any]]:
        """Add Custom Activities: one result per item, added or skipped with the reason."""
        with self.lock:
            return [self._add_custom_activity(item) for item in items]

    def _add_custom_activity(self, item: Any) -> dict[str, Any]:
        try:
            activity = self._custom_activity(item)
        except ApiError as error:
            return {"status": "skipped", "errors": [{"code": error.code, "message": error.message}]}
        self._commit(activity, now_ms_precise())
        return {"id": activity.id, "marketoGUID": activity.guid, "status": "added"}

    def _custom_activity(self, item: Any) -> Activity:
        if not isinstance(item, dict):
            raise invalid("Invalid activity")
        type_id, api_name, version = self._approved_type(item)
        lead_id = item.get("leadId")
        lead = self.generator.leads.get(lead_id) if isinstance(lead_id, int) else None
        if lead is None or lead.deleted:
            raise ApiError("1004", "Lead not found")
        date_ms = parse_datetime_ms(str(item.get("activityDate", "")))
        if date_ms is None:
            raise invalid(f"Invalid activityDate '{item.get('activityDate')}'")
        primary_value = item.get("primaryAttributeValue")
        if primary_value in (None, ""):
            raise invalid("primaryAttributeValue cannot be blank")
        attributes = []
        for attribute in item.get("attributes") or []:
            if not isinstance(attribute, dict):
                raise invalid(f"Invalid attribute for activity type '{api_name}'")
            attribute_api_name = attribute.get("apiName") or attribute.get("name")
            definition = version.attributes.get(attribute_api_name)
            if definition is None:
                raise invalid(f"Invalid attribute '{attribute_api_name}' for activity type '{api_name}'")
            if attribute.get("value") not in (None, ""):
                attributes.append({"name": definition.name, "apiName": definition.api_name,
                                   "value": attribute["value"]})
        activity_id, guid = self.generator.next_identity()
        return Activity(activity_id, guid, lead.id, date_ms, format_date(date_ms, False), type_id,
                        tuple(attributes), primary_value=str(primary_value))

    def _approved_type(self, item: dict[str, Any]) -> tuple[int, str, Any]:
        approved = self.custom_types.approved()
        by_api_name = {api_name: (type_id, version) for type_id, (api_name, version) in approved.items()}
        if item.get("apiName") in by_api_name:
            type_id, version = by_api_name[item["apiName"]]
            return type_id, item["apiName"], version
        if item.get("activityTypeId") in approved:
            api_name, version = approved[item["activityTypeId"]]
            return item["activityTypeId"], api_name, version
        raise invalid(f"Invalid activityTypeId '{item.get('activityTypeId', item.get('apiName'))}': "
                      "not an approved custom activity type")

    # -- ground truth --------------------------------------------------------------------------

    def ground_truth(self) -> dict[str, Any]:
        """Every record the instance holds, rendered as the endpoints render them (parsed JSON), and
        "activity_recorded_ms": when each of "activities" was recorded (epoch ms, same order)."""
        all_fields = tuple(lead_field.name for lead_field in LEAD_FIELDS)
        lead_changes = ReadQuery("lead_changes", fields=all_fields)
        with self.lock:
            log = self.log
            activities = _parse(log.views)
            recorded = log.recorded.tolist()
            deleted = _parse(log.views[p] for p in range(len(log)) if log.type_ids[p] == DELETE_LEAD)
            changes = _parse(self._render(lead_changes, p) for p in range(len(log))
                             if log.type_ids[p] in LEAD_CHANGE_TYPES)
            custom_types = self.custom_types.render_all()
            lists = {static_list.id: sorted(static_list.members) for static_list in self.generator.lists.values()}
        return {
            "activities": activities, "activity_recorded_ms": recorded, "lead_changes": changes,
            "deleted_leads": deleted,
            "activity_types": self.activity_types(), "custom_activity_types": custom_types,
            "lead_fields": lead_fields(), "lists": lists,
        }


def _parse(rendered: Iterable[bytes]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(b"[" + b",".join(rendered) + b"]")
    return records


def lead_fields() -> list[dict[str, Any]]:
    """The Describe Lead2 field list."""
    return [lead_field_json(lead_field) for lead_field in LEAD_FIELDS]


def now_ms_precise() -> int:
    """The wall clock in epoch milliseconds."""
    return int(time.time() * 1000)


def parse_datetime_ms(text: str) -> int | None:
    """Parse an ISO date or datetime (`Z`, `+00:00`, `+0000`; naive means UTC) to epoch ms; None if invalid."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)
