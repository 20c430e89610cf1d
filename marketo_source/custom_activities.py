"""Pushing custom activities into Marketo exactly once, from Python or as a dlt destination.

Rows have the columns `lead_id` (or `leadId`), `activity_date`, `activity_type_id` or
`activity_type_api_name` (or else the pusher's default type), `primary_attribute_value` and
optionally `row_key`; every other column is an attribute of the type, by apiName. A row's key is
its `row_key`, else a hash of the item it makes, so identical rows without one count once.

Custom activities are write-once: Marketo adds an item sent twice twice. So every row gets a key
and a line in a local ledger (a DuckDB file) before it is sent, and the ledger decides:

- a row whose key is already `added` or `skipped` is not sent again;
- a batch is marked `sending` (and committed) before its call, and each item's result is
  recorded right after;
- a call that may or may not have been applied (a timeout, a reset, a 5xx, 604/608/611/713:
  the client raises `MarketoWriteUncertain` instead of resending) and rows found `sending`
  when a push starts (the process died mid-call) are reconciled: their activities are read back
  from Marketo and matched by (leadId, activityTypeId, activityDate, primaryAttributeValue);
  matches are recorded as `added`, the rest is sent again.

dlt's custom destination keeps, per load file, the offset of the last batch the destination
function returned from, so after a crash it delivers the unfinished batch again; the ledger is
what turns that at-least-once delivery into exactly once.

    import dlt
    from marketo_source.custom_activities import marketo_custom_activities

    pipeline = dlt.pipeline("usage_to_marketo", destination=marketo_custom_activities(
        activity_type_api_name="productUsage"))
    pipeline.run(rows, table_name="product_usage")  # base_url and secrets from destination.marketo_custom_activities
"""

import hashlib
import json
import logging
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple, Union

import dlt
import duckdb
import pyarrow as pa
from dlt.common.destination.exceptions import DestinationTerminalException
from dlt.common.schema import TTableSchema
from dlt.common.typing import TDataItems

from marketo_source import settings
from marketo_source.client import MarketoClient
from marketo_source.custom_activity_types import CustomActivityTypes
from marketo_source.errors import (
    MarketoAccessDenied,
    MarketoAuthError,
    MarketoConfigurationError,
    MarketoError,
    MarketoRequestError,
    MarketoTransientError,
    MarketoWriteUncertain,
)
from marketo_source.schema import parse_timestamp
from marketo_source.paging import PagingTokens

logger = logging.getLogger("marketo_source")

DEFAULT_LEDGER_PATH = "marketo_custom_activities.duckdb"
LEDGER_TABLE = "custom_activity_results"
LOCAL_REJECTION_CODE = "invalid_row"
"""Error code of rows skipped before sending because they cannot make a valid item."""
DEFAULT_RECONCILE_AFTER_S = settings.ADD_CUSTOM_ACTIVITIES_SERVER_TIMEOUT_S
MAX_UNCERTAIN_ROUNDS = 3
"""Uncertain sends of the same rows in one push before it gives up (they stay `sending` and the
next push reconciles them)."""

LEAD_ID_COLUMNS = ("lead_id", "leadId")
DATE_COLUMN = "activity_date"
TYPE_ID_COLUMN = "activity_type_id"
TYPE_API_NAME_COLUMN = "activity_type_api_name"
PRIMARY_VALUE_COLUMN = "primary_attribute_value"
ROW_KEY_COLUMN = "row_key"
_RESERVED_COLUMNS = frozenset({*LEAD_ID_COLUMNS, DATE_COLUMN, TYPE_ID_COLUMN, TYPE_API_NAME_COLUMN,
                               PRIMARY_VALUE_COLUMN, ROW_KEY_COLUMN})
_APPROVED_STATUSES = frozenset({"approved", "approved with draft"})

MatchKey = Tuple[int, int, datetime, str]
"""What reconciliation matches on: leadId, activityTypeId, activityDate (UTC instant), primaryAttributeValue."""


# -- results ----------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class _Activity:
    """A row mapped to an Add Custom Activities item, with its ledger key."""

    row_key: str
    item: Dict[str, Any]

    @property
    def match_key(self) -> MatchKey:
        return _match_key(self.item)


def _match_key(record: Mapping[str, Any]) -> MatchKey:
    return (int(record["leadId"]), int(record["activityTypeId"]), parse_timestamp(record["activityDate"]),
            str(record.get("primaryAttributeValue")))


@dataclass(frozen=True)
class _Rejected:
    """A row that cannot make a valid item: skipped before sending, kept in the ledger."""

    row_key: str
    message: str
    row: Mapping[str, Any]


class _RowError(ValueError):
    """A row value that cannot go into an item; the message names the column."""


# -- rows to items ----------------------------------------------------------------------------


class _ApprovedTypes:
    """The instance's approved custom activity types, listed when first needed.

    A type or attribute missing from the list may have been created or approved since; the list
    is then read again, at most once per push, so a table full of a wrong type name costs one call.
    """

    def __init__(self, client: MarketoClient) -> None:
        self._types = CustomActivityTypes(client)
        self._by_id: Dict[int, Dict[str, Any]] = {}
        self._by_api_name: Dict[str, Dict[str, Any]] = {}
        self._stale = True

    def expire(self) -> None:
        """Lets the next miss read the list again."""
        self._stale = True

    def refresh_if_stale(self) -> bool:
        """Reads the list again unless it was read since `expire`; returns whether it did."""
        if not self._stale:
            return False
        approved = [t for t in self._types.list() if t.get("status") in _APPROVED_STATUSES]
        self._by_id = {t["id"]: t for t in approved}
        self._by_api_name = {t["apiName"]: t for t in approved}
        self._stale = False
        return True

    def find(self, type_id: Optional[int] = None, api_name: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """The approved type with this id (or else this apiName), or None."""
        found = self._lookup(type_id, api_name)
        if found is None and self.refresh_if_stale():
            found = self._lookup(type_id, api_name)
        return found

    def _lookup(self, type_id: Optional[int], api_name: Optional[str]) -> Optional[Dict[str, Any]]:
        return self._by_id.get(type_id) if type_id is not None else self._by_api_name.get(api_name or "")

    def api_names(self) -> List[str]:
        """apiNames of the approved types, for error messages."""
        return sorted(self._by_api_name)


class _RowMapper:
    """Turns table rows into Add Custom Activities items (the columns are in the module docs)."""

    def __init__(self, types: _ApprovedTypes, default_type_api_name: Optional[str]) -> None:
        self._types = types
        self._default_type_api_name = default_type_api_name

    def map(self, row: Mapping[str, Any]) -> Union[_Activity, _Rejected]:
        """The row's item, or why it cannot be sent.

        Raises:
            MarketoConfigurationError: The row names no type and no default is set, the default
                type is not approved, or a column is not an attribute of its type: problems of the
                whole table, fixed in the settings or the query rather than row by row.
        """
        try:
            activity_type = self._activity_type(row)
            item = self._item(row, activity_type)
        except _RowError as error:
            return _Rejected(_explicit_key(row) or _content_key(row), str(error), row)
        return _Activity(_explicit_key(row) or _content_key(item), item)

    def _activity_type(self, row: Mapping[str, Any]) -> Dict[str, Any]:
        if row.get(TYPE_ID_COLUMN) is not None:
            column, value = TYPE_ID_COLUMN, _whole_number(row[TYPE_ID_COLUMN], TYPE_ID_COLUMN)
            found = self._types.find(type_id=value)
        elif row.get(TYPE_API_NAME_COLUMN) is not None:
            column, value = TYPE_API_NAME_COLUMN, str(row[TYPE_API_NAME_COLUMN])
            found = self._types.find(api_name=value)
        else:
            return self._default_type()
        if found is None:
            raise _RowError(f"{column} {value!r} is not an approved custom activity type "
                            f"(approved: {self._types.api_names()})")
        return found

    def _default_type(self) -> Dict[str, Any]:
        if not self._default_type_api_name:
            raise MarketoConfigurationError(
                f"Rows need an {TYPE_ID_COLUMN} or {TYPE_API_NAME_COLUMN} column, or set activity_type_api_name "
                "(destination.marketo_custom_activities.activity_type_api_name) for the whole table."
            )
        found = self._types.find(api_name=self._default_type_api_name)
        if found is None:
            raise MarketoConfigurationError(
                f"activity_type_api_name {self._default_type_api_name!r} is not an approved custom activity type "
                f"of this instance (approved: {self._types.api_names()}). Create and approve it first, e.g. with "
                "ensure_custom_activity_type."
            )
        return found

    def _item(self, row: Mapping[str, Any], activity_type: Mapping[str, Any]) -> Dict[str, Any]:
        lead_column = next((c for c in LEAD_ID_COLUMNS if row.get(c) is not None), LEAD_ID_COLUMNS[0])
        primary_value = row.get(PRIMARY_VALUE_COLUMN)
        if primary_value is None or primary_value == "":
            raise _RowError(f"{PRIMARY_VALUE_COLUMN} is empty; Marketo requires it")
        return {
            "leadId": _whole_number(row.get(lead_column), lead_column),
            "activityTypeId": activity_type["id"],
            "activityDate": _utc_text(_timestamp(row.get(DATE_COLUMN), DATE_COLUMN)),
            "primaryAttributeValue": str(_json_value(primary_value, PRIMARY_VALUE_COLUMN)),
            "attributes": self._attributes(row, activity_type),
        }

    def _attributes(self, row: Mapping[str, Any], activity_type: Mapping[str, Any]) -> List[Dict[str, Any]]:
        given = {column: value for column, value in row.items()
                 if column not in _RESERVED_COLUMNS and value is not None}
        if set(given) - _attribute_names(activity_type) and self._types.refresh_if_stale():
            # The type may have gained attributes since it was listed.
            activity_type = self._types.find(type_id=activity_type["id"]) or activity_type
        unknown = sorted(set(given) - _attribute_names(activity_type))
        if unknown:
            raise MarketoConfigurationError(
                f"Columns {unknown} are not attributes of custom activity type {activity_type.get('apiName')!r} "
                f"(its attributes: {sorted(_attribute_names(activity_type))}). Rename them to attribute apiNames, "
                "drop them from the query, or add the attributes to the type."
            )
        return [{"apiName": column, "value": _json_value(given[column], column)} for column in sorted(given)]


def _attribute_names(activity_type: Mapping[str, Any]) -> Set[str]:
    return {a["apiName"] for a in activity_type.get("attributes") or [] if a.get("apiName")}


def _explicit_key(row: Mapping[str, Any]) -> Optional[str]:
    value = row.get(ROW_KEY_COLUMN)
    return None if value is None or value == "" else str(value)


def _content_key(content: Mapping[str, Any]) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _whole_number(value: Any, column: str) -> int:
    if isinstance(value, bool):
        raise _RowError(f"{column} is {value!r}, not a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, (float, Decimal)) and value == int(value):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise _RowError(f"{column} is {'missing' if value is None else repr(value)}; a whole number is required")


def _timestamp(value: Any, column: str) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if isinstance(value, str):
        try:
            return parse_timestamp(value.strip())
        except ValueError:
            pass
    raise _RowError(f"{column} is {'missing' if value is None else repr(value)}; an ISO 8601 date or datetime "
                    "is required")


def _utc_text(moment: datetime) -> str:
    # Whole seconds: Marketo keeps activity dates to the second, and reconciliation compares
    # what it reads back with what was sent.
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_value(value: Any, column: str) -> Any:
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, datetime):
        return _utc_text(_timestamp(value, column))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise _RowError(f"{column} holds {type(value).__name__} {value!r}, which cannot be sent as JSON") from None
    return value


# -- the ledger -------------------------------------------------------------------------------

_LEDGER_SCHEMA = pa.schema([
    ("row_key", pa.string()),
    ("status", pa.string()),
    ("marketo_guid", pa.string()),
    ("activity_id", pa.int64()),
    ("errors", pa.string()),
    ("lead_id", pa.int64()),
    ("activity_type_id", pa.int64()),
    ("activity_date", pa.timestamp("us")),
    ("primary_attribute_value", pa.string()),
    ("payload", pa.string()),
    ("load_id", pa.string()),
    ("updated_at", pa.timestamp("us")),
])
_CREATE_LEDGER = f"""
CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (
    row_key VARCHAR PRIMARY KEY,
    status VARCHAR NOT NULL,       -- 'sending', 'added' or 'skipped'
    marketo_guid VARCHAR,
    activity_id BIGINT,
    errors VARCHAR,                -- JSON: [{{"code": "1004", "message": "Lead not found"}}]
    lead_id BIGINT,
    activity_type_id BIGINT,
    activity_date TIMESTAMP,       -- UTC
    primary_attribute_value VARCHAR,
    payload VARCHAR,               -- JSON: the item sent, or the row that could not make one
    load_id VARCHAR,
    updated_at TIMESTAMP           -- UTC
)"""


class ActivityLedger:
    """The DuckDB file that records, per row key, what became of each row pushed.

    Table `custom_activity_results`: row_key (primary key), status ('sending', 'added' or
    'skipped'), marketo_guid, activity_id, errors (JSON text), lead_id, activity_type_id,
    activity_date (UTC), primary_attribute_value, payload (JSON text: the item sent, or the row
    that could not make one), load_id (the dlt load, when pushed by the destination) and
    updated_at (UTC). Read it with `summary` and `results` (or SQL); the other methods are the
    pusher's.

    Args:
        path: The DuckDB file; created when missing.
    """

    def __init__(self, path: Union[str, Path] = DEFAULT_LEDGER_PATH) -> None:
        self.path = Path(path)
        self._connection = duckdb.connect(str(self.path))
        self._connection.execute(_CREATE_LEDGER)

    def close(self) -> None:
        """Closes the file."""
        self._connection.close()

    def __enter__(self) -> "ActivityLedger":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def summary(self, load_ids: Optional[Sequence[str]] = None) -> PushSummary:
        """Added and skipped rows (by error code), of the given dlt loads or of every push.

        `already_done` and `reconciled` are not kept in the ledger and stay 0.
        """
        where, params = _filters(load_ids, status=None)
        counts = self._connection.execute(
            f"SELECT status, coalesce(json_extract_string(errors, '$[0].code'), 'unknown'), count(*) "
            f"FROM {LEDGER_TABLE} WHERE {where} GROUP BY ALL", params
        ).fetchall()
        summary = PushSummary()
        for status, code, count in counts:
            if status == "added":
                summary.added += count
            elif status == "skipped":
                summary.skipped += count
                summary.skipped_by_code[code] += count
        return summary

    def results(self, load_ids: Optional[Sequence[str]] = None, status: Optional[str] = None) -> List[Dict[str, Any]]:
        """Ledger rows as dicts, optionally only of the given dlt loads and with one status."""
        where, params = _filters(load_ids, status)
        cursor = self._connection.execute(f"SELECT * FROM {LEDGER_TABLE} WHERE {where} ORDER BY updated_at, row_key",
                                          params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def statuses(self, row_keys: Iterable[str]) -> Dict[str, str]:
        """Status of each key the ledger knows."""
        found = self._with_values("row_key", row_keys, f"SELECT row_key, status FROM {LEDGER_TABLE} "
                                  "WHERE row_key IN (SELECT row_key FROM wanted)")
        return dict(found)

    def known_guids(self, guids: Iterable[str]) -> Set[str]:
        """The marketoGUIDs among `guids` that the ledger has recorded as added."""
        found = self._with_values("marketo_guid", guids, f"SELECT marketo_guid FROM {LEDGER_TABLE} "
                                  "WHERE marketo_guid IN (SELECT marketo_guid FROM wanted)")
        return {guid for (guid,) in found}

    def in_flight(self) -> Tuple[List[_Activity], Optional[datetime]]:
        """Rows marked `sending` (a push died during their call) and when the last was marked (UTC)."""
        rows = self._connection.execute(
            f"SELECT row_key, payload, updated_at FROM {LEDGER_TABLE} WHERE status = 'sending'"
        ).fetchall()
        latest = max((updated_at for _, _, updated_at in rows), default=None)
        activities = [_Activity(row_key, json.loads(payload)) for row_key, payload, _ in rows]
        return activities, latest.replace(tzinfo=timezone.utc) if latest else None

    def mark_sending(self, activities: Sequence[_Activity], load_id: Optional[str]) -> None:
        """Records `activities` as about to be sent; committed when this returns."""
        self._write([_entry(a.row_key, "sending", load_id, item=a.item) for a in activities])

    def record_added(self, added: Sequence[Tuple[_Activity, Mapping[str, Any]]], load_id: Optional[str]) -> None:
        """Records activities Marketo added, each with its result (marketoGUID and id)."""
        self._write([_entry(a.row_key, "added", load_id, item=a.item, guid=result.get("marketoGUID"),
                            activity_id=result.get("id")) for a, result in added])

    def record_skipped(self, skipped: Sequence[Tuple[_Activity, Sequence[Any]]], load_id: Optional[str]) -> None:
        """Records activities Marketo skipped, each with its errors."""
        self._write([_entry(a.row_key, "skipped", load_id, item=a.item, errors=errors) for a, errors in skipped])

    def record_rejected(self, rejected: Sequence[_Rejected], load_id: Optional[str]) -> None:
        """Records rows that could not make an item as skipped with code `invalid_row`."""
        self._write([
            _entry(r.row_key, "skipped", load_id, row=r.row,
                   errors=[{"code": LOCAL_REJECTION_CODE, "message": r.message}])
            for r in rejected
        ])

    def forget(self, activities: Sequence[_Activity]) -> None:
        """Drops the `sending` marks of activities whose call Marketo refused before processing it."""
        self._with_values("row_key", [a.row_key for a in activities], f"DELETE FROM {LEDGER_TABLE} "
                          "WHERE status = 'sending' AND row_key IN (SELECT row_key FROM wanted)")

    def _write(self, entries: List[Dict[str, Any]]) -> None:
        if entries:
            self._with_table(pa.Table.from_pylist(entries, schema=_LEDGER_SCHEMA),
                             f"INSERT OR REPLACE INTO {LEDGER_TABLE} BY NAME SELECT * FROM wanted")

    def _with_values(self, column: str, values: Iterable[str], sql: str) -> List[Tuple[Any, ...]]:
        return self._with_table(pa.table({column: pa.array(list(values), pa.string())}), sql)

    def _with_table(self, table: pa.Table, sql: str) -> List[Tuple[Any, ...]]:
        """Runs `sql` with `table` visible as `wanted` (one statement, so one transaction)."""
        self._connection.register("wanted", table)
        try:
            cursor = self._connection.execute(sql)
            return cursor.fetchall() if cursor.description else []
        finally:
            self._connection.unregister("wanted")


def _entry(
    row_key: str,
    status: str,
    load_id: Optional[str],
    item: Optional[Mapping[str, Any]] = None,
    row: Optional[Mapping[str, Any]] = None,
    guid: Optional[str] = None,
    activity_id: Optional[int] = None,
    errors: Optional[Sequence[Any]] = None,
) -> Dict[str, Any]:
    source = item or {}
    return {
        "row_key": row_key,
        "status": status,
        "marketo_guid": guid,
        "activity_id": activity_id,
        "errors": json.dumps(list(errors)) if errors is not None else None,
        "lead_id": source.get("leadId"),
        "activity_type_id": source.get("activityTypeId"),
        "activity_date": _naive_utc(source.get("activityDate")),
        "primary_attribute_value": source.get("primaryAttributeValue"),
        "payload": json.dumps(item if item is not None else row, default=str),
        "load_id": load_id,
        "updated_at": datetime.now(timezone.utc).replace(tzinfo=None),
    }


def _filters(load_ids: Optional[Sequence[str]], status: Optional[str]) -> Tuple[str, List[Any]]:
    conditions, params = ["TRUE"], []
    if load_ids is not None:
        conditions.append("list_contains(?, load_id)")
        params.append(list(load_ids))
    if status is not None:
        conditions.append("status = ?")
        params.append(status)
    return " AND ".join(conditions), params


def _naive_utc(text: Optional[str]) -> Optional[datetime]:
    return parse_timestamp(text).replace(tzinfo=None) if text else None


def _error_code(errors: Sequence[Any]) -> str:
    """The code of the first of Marketo's per-item errors ("unknown" when there is none)."""
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    return str(first.get("code", "unknown"))


# -- pushing ----------------------------------------------------------------------------------


class CustomActivityPusher:
    """Pushes rows into Marketo as custom activities, each row at most once (see the module docs).

    Pushes on the same ledger file never overlap within a process (the dlt destination's load
    jobs may run in parallel threads), and DuckDB's file lock keeps other processes out while
    one pushes.

    Args:
        client: The client to call with (its rate limit, retries and write timeout apply).
        ledger_path: The DuckDB file of the ledger.
        activity_type_api_name: The type of rows without an `activity_type_id` or
            `activity_type_api_name` column.
        reconcile_after_s: Seconds after a call was sent before its activities are read back.
            Marketo works on Add Custom Activities for up to 90 s; reading back sooner could miss
            a write still in progress and send it again.
    """

    def __init__(
        self,
        client: MarketoClient,
        ledger_path: Union[str, Path] = DEFAULT_LEDGER_PATH,
        activity_type_api_name: Optional[str] = None,
        reconcile_after_s: float = DEFAULT_RECONCILE_AFTER_S,
    ) -> None:
        self.client = client
        self.ledger_path = Path(ledger_path)
        self.reconcile_after_s = reconcile_after_s
        self._types = _ApprovedTypes(client)
        self._mapper = _RowMapper(self._types, activity_type_api_name)

    def push(self, rows: Union[Iterable[Mapping[str, Any]], Any], load_id: Optional[str] = None) -> PushSummary:
        """Pushes rows (dicts, or an Arrow table or record batch) in calls of at most 300.

        Rows found `sending` in the ledger (a push that died mid-call) are reconciled first.

        Args:
            rows: The rows; columns as described in the module docs.
            load_id: Recorded with each row in the ledger (the dlt destination passes its load id).

        Returns:
            What the push did.

        Raises:
            MarketoConfigurationError: No activity type for the rows, or columns that are not
                attributes of their type; nothing of the batch at hand was sent.
            MarketoError: Other failures; rows whose call may have been applied stay `sending` and
                the next push reconciles them.
        """
        with _ledger_lock(self.ledger_path), ActivityLedger(self.ledger_path) as ledger:
            self._types.expire()
            run = _PushRun(self.client, ledger, self._mapper, self.reconcile_after_s, load_id)
            run.finish_interrupted()
            for chunk in _chunks(_as_dicts(rows), settings.MAX_BATCH_SIZE):
                run.push_chunk(chunk)
            return run.summary


_LEDGER_LOCKS: Dict[Path, threading.Lock] = {}
_LEDGER_LOCKS_GUARD = threading.Lock()


def _ledger_lock(path: Path) -> threading.Lock:
    with _LEDGER_LOCKS_GUARD:
        return _LEDGER_LOCKS.setdefault(path.resolve(), threading.Lock())


class _PushRun:
    """One push: the ledger open, the summary being counted."""

    def __init__(self, client: MarketoClient, ledger: ActivityLedger, mapper: _RowMapper, reconcile_after_s: float,
                 load_id: Optional[str]) -> None:
        self.client = client
        self.ledger = ledger
        self.mapper = mapper
        self.reconcile_after_s = reconcile_after_s
        self.load_id = load_id
        self.summary = PushSummary()

    def finish_interrupted(self) -> None:
        """Reconciles rows a dead push left `sending` and sends again those Marketo does not hold."""
        activities, marked_at = self.ledger.in_flight()
        if activities:
            logger.warning("%d custom activities were being sent when a push stopped; reading them back",
                           len(activities))
            self.send(self.reconcile(activities, marked_at or _now()))

    def push_chunk(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Maps the rows, records those that cannot be sent and sends those not done yet."""
        mapped = [self.mapper.map(row) for row in rows]
        rejected = [m for m in mapped if isinstance(m, _Rejected)]
        activities = [m for m in mapped if isinstance(m, _Activity)]
        done = self.ledger.statuses([m.row_key for m in mapped])
        fresh = self._first_of_each_key(rejected, done)
        self.ledger.record_rejected(fresh, self.load_id)
        self._count_skipped([LOCAL_REJECTION_CODE] * len(fresh))
        self.send(self._first_of_each_key(activities, done))

    def _first_of_each_key(self, candidates: Sequence[Any], done: Mapping[str, str]) -> List[Any]:
        seen: Set[str] = set()
        first = []
        for candidate in candidates:
            if candidate.row_key in done or candidate.row_key in seen:
                self.summary.already_done += 1
            else:
                seen.add(candidate.row_key)
                first.append(candidate)
        return first

    def send(self, activities: Sequence[_Activity]) -> None:
        """Sends in calls of at most 300; uncertain calls are reconciled and what is missing resent."""
        for batch in _chunks(activities, settings.MAX_BATCH_SIZE):
            for _ in range(MAX_UNCERTAIN_ROUNDS):
                batch = self._send_once(batch)
                if not batch:
                    break
            else:
                raise MarketoTransientError(
                    f"Add Custom Activities stayed uncertain {MAX_UNCERTAIN_ROUNDS} times for {len(batch)} rows; "
                    "they stay 'sending' in the ledger and the next push reads them back before sending."
                )

    def _send_once(self, batch: List[_Activity]) -> List[_Activity]:
        """Sends one call; returns the activities still to send (after an uncertain call)."""
        self.ledger.mark_sending(batch, self.load_id)
        sent_at = _now()
        try:
            answer = self.client.post(settings.ADD_CUSTOM_ACTIVITIES_PATH, {"input": [a.item for a in batch]},
                                      timeout=self.client.write_timeout_s, idempotent=False)
        except MarketoWriteUncertain as error:
            logger.warning("Add Custom Activities may or may not have been applied (%s); reading back %d rows",
                           error, len(batch))
            return self.reconcile(batch, sent_at)
        except MarketoError:
            # Every other error is answered before Marketo processes the items.
            self.ledger.forget(batch)
            raise
        results = answer.get("result") or []
        if len(results) != len(batch):
            logger.warning("Add Custom Activities answered %d results for %d items; reading back",
                           len(results), len(batch))
            return self.reconcile(batch, sent_at)
        self._record(batch, results)
        return []

    def _record(self, batch: Sequence[_Activity], results: Sequence[Mapping[str, Any]]) -> None:
        added = [(a, r) for a, r in zip(batch, results) if r.get("status") == "added"]
        skipped = [(a, r.get("errors") or [{"code": "unknown", "message": f"status {r.get('status')!r}"}])
                   for a, r in zip(batch, results) if r.get("status") != "added"]
        self.ledger.record_added(added, self.load_id)
        self.ledger.record_skipped(skipped, self.load_id)
        self.summary.added += len(added)
        self._count_skipped([_error_code(errors) for _, errors in skipped])

    def _count_skipped(self, codes: Sequence[str]) -> None:
        self.summary.skipped += len(codes)
        self.summary.skipped_by_code.update(codes)

    def reconcile(self, activities: Sequence[_Activity], sent_at: datetime) -> List[_Activity]:
        """Records as added the activities Marketo holds; returns the others, to be sent again.

        Reads back every activity of their types and leads since the earliest of their dates, and
        matches on (leadId, activityTypeId, activityDate, primaryAttributeValue) as a multiset.
        Activities the ledger already has as added are left out of the candidates, so a row never
        claims another row's activity.
        """
        _sleep_until(sent_at.timestamp() + self.reconcile_after_s)
        records = self._read_back(activities)
        known = self.ledger.known_guids(r["marketoGUID"] for r in records)
        candidates: Dict[MatchKey, List[Mapping[str, Any]]] = defaultdict(list)
        for record in records:
            if record["marketoGUID"] not in known:
                candidates[_match_key(record)].append(record)
        found, missing = [], []
        for activity in activities:
            matches = candidates.get(activity.match_key)
            if matches:
                found.append((activity, matches.pop(0)))
            else:
                missing.append(activity)
        self.ledger.record_added(found, self.load_id)
        self.summary.added += len(found)
        self.summary.reconciled += len(found)
        logger.warning("Read back %d rows: %d found in Marketo, %d to send again", len(activities),
                       len(found), len(missing))
        return missing

    def _read_back(self, activities: Sequence[_Activity]) -> List[Dict[str, Any]]:
        since = min(a.match_key[2] for a in activities)
        token = PagingTokens(self.client).since(since)  # a fresh one: this may run long after the last
        type_ids = sorted({a.item["activityTypeId"] for a in activities})
        lead_ids = sorted({a.item["leadId"] for a in activities})
        records: List[Dict[str, Any]] = []
        for type_chunk in _chunks(type_ids, settings.MAX_TYPES_PER_CALL):
            for lead_chunk in _chunks(lead_ids, settings.MAX_LEAD_IDS_PER_CALL):
                records += self._read_pages(token, type_chunk, lead_chunk)
        return records

    def _read_pages(self, token: str, type_ids: Sequence[int], lead_ids: Sequence[int]) -> List[Dict[str, Any]]:
        params = {"activityTypeIds": ",".join(map(str, type_ids)), "leadIds": ",".join(map(str, lead_ids)),
                  "batchSize": str(settings.MAX_BATCH_SIZE)}
        records: List[Dict[str, Any]] = []
        while True:
            page = self.client.get(settings.ACTIVITIES_PATH, {**params, "nextPageToken": token})
            records += page.get("result") or []
            token = page.get("nextPageToken") or token
            if not page.get("moreResult"):
                return records


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _sleep_until(moment_s: float) -> None:
    wait_s = moment_s - time.time()
    if wait_s > 0:
        logger.info("Waiting %.1f s for Marketo to finish an uncertain call before reading back", wait_s)
        time.sleep(wait_s)


def _as_dicts(rows: Any) -> Iterable[Mapping[str, Any]]:
    # dlt hands the destination Arrow record batches when the pipeline loaded Arrow or pandas data.
    return rows.to_pylist() if hasattr(rows, "to_pylist") else rows


def _chunks(items: Iterable[Any], size: int) -> Iterator[List[Any]]:
    chunk: List[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# -- the dlt destination ----------------------------------------------------------------------


_PUSHERS: Dict[Tuple[Any, ...], CustomActivityPusher] = {}
_PUSHERS_GUARD = threading.Lock()


def _pusher_for(
    connection: Tuple[str, str, str],
    ledger_path: str,
    activity_type_api_name: Optional[str],
    reconcile_after_s: float,
    client_settings: Dict[str, Any],
) -> CustomActivityPusher:
    # One pusher per configuration for the whole process: dlt calls the destination once per
    # batch, and one client keeps the rate limit, the access token and the type list across them.
    key = (connection, ledger_path, activity_type_api_name, reconcile_after_s, tuple(sorted(client_settings.items())))
    with _PUSHERS_GUARD:
        if key not in _PUSHERS:
            client = MarketoClient(*connection, **client_settings)
            _PUSHERS[key] = CustomActivityPusher(client, ledger_path, activity_type_api_name, reconcile_after_s)
        return _PUSHERS[key]


@dlt.destination(batch_size=settings.MAX_BATCH_SIZE, naming_convention="direct", skip_dlt_columns_and_tables=True,
                 name="marketo_custom_activities")
def marketo_custom_activities(
    items: TDataItems,
    table: TTableSchema,
    base_url: str = dlt.config.value,
    client_id: str = dlt.secrets.value,
    client_secret: str = dlt.secrets.value,
    activity_type_api_name: Optional[str] = None,
    ledger_path: str = DEFAULT_LEDGER_PATH,
    reconcile_after_s: float = DEFAULT_RECONCILE_AFTER_S,
    rate_limit_calls: int = settings.DEFAULT_RATE_LIMIT_CALLS,
    rate_limit_period_s: float = settings.DEFAULT_RATE_LIMIT_PERIOD_S,
    write_timeout_s: float = settings.DEFAULT_WRITE_TIMEOUT_S,
    max_attempts: int = settings.DEFAULT_MAX_ATTEMPTS,
    backoff_base_s: float = settings.DEFAULT_BACKOFF_BASE_S,
) -> None:
    """A dlt destination that adds each row of any table to Marketo as a custom activity, once.

    Settings come from the arguments or `destination.marketo_custom_activities.*` (config files
    or `DESTINATION__MARKETO_CUSTOM_ACTIVITIES__*` variables).

    Args:
        items: A batch of at most 300 rows (dlt passes it).
        table: The dlt table the rows belong to (dlt passes it).
        base_url: The instance's REST endpoint, e.g. `https://123-ABC-456.mktorest.com`.
        client_id: The LaunchPoint service's client id (a secret).
        client_secret: The LaunchPoint service's client secret (a secret).
        activity_type_api_name: The custom activity type of rows that name none.
        ledger_path: The ledger's DuckDB file (default `marketo_custom_activities.duckdb` in the
            working directory). Keep it with the pipeline: it is what prevents duplicates.
        reconcile_after_s: Seconds after an uncertain call before reading its activities back.
        rate_limit_calls: Calls allowed per `rate_limit_period_s`.
        rate_limit_period_s: Length of the rate limit window.
        write_timeout_s: Timeout of Add Custom Activities calls.
        max_attempts: Attempts per call on failures Marketo answers before processing.
        backoff_base_s: First wait between attempts.

    Raises:
        DestinationTerminalException: Settings or data Marketo refuses (the message says what to
            fix); retrying would not help. Other failures are left to dlt's retries and the next run.
    """
    client_settings = dict(rate_limit_calls=rate_limit_calls, rate_limit_period_s=rate_limit_period_s,
                           write_timeout_s=write_timeout_s, max_attempts=max_attempts, backoff_base_s=backoff_base_s)
    try:
        pusher = _pusher_for((base_url, client_id, client_secret), ledger_path, activity_type_api_name,
                             reconcile_after_s, client_settings)
        summary = pusher.push(items, load_id=dlt.current.load_package_state()["load_id"])
    except (MarketoConfigurationError, MarketoAuthError, MarketoAccessDenied, MarketoRequestError) as error:
        raise DestinationTerminalException(f"{type(error).__name__}: {error}") from error
    logger.info("marketo_custom_activities %s: %s", table["name"], summary)
