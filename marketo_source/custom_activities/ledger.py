"""The ledger: a DuckDB file that records, per row key, what became of each row pushed, and the
lock that keeps two pushes of one process off the same file."""

import json
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

import duckdb
import pyarrow as pa

from marketo_source import settings
from marketo_source.custom_activities.items import LOCAL_REJECTION_CODE, _Activity, _Rejected
from marketo_source.custom_activities.summary import PushSummary
from marketo_source.schema import parse_timestamp

DEFAULT_LEDGER_PATH = settings.DEFAULT_LEDGER_PATH
LEDGER_TABLE = "custom_activity_results"

_LEDGER_COLUMNS: List[Tuple[str, pa.DataType]] = [
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
]
_LEDGER_SCHEMA = pa.schema(_LEDGER_COLUMNS)
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
            f"SELECT status, {_FIRST_CODE}, count(*) "
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

    def skip_reasons(self, load_ids: Optional[Sequence[str]] = None) -> Dict[Tuple[str, str], int]:
        """Skipped rows per reason, (code, message) of the first error, of the given dlt loads or of
        every push: e.g. {("1004", "Lead not found"): 50}."""
        where, params = _filters(load_ids, status="skipped")
        counts = self._connection.execute(
            f"SELECT {_FIRST_CODE}, coalesce(json_extract_string(errors, '$[0].message'), 'no reason given'), "
            "count(*) "
            f"FROM {LEDGER_TABLE} WHERE {where} GROUP BY ALL", params
        ).fetchall()
        return {(code, message): count for code, message, count in counts}

    def results(self, load_ids: Optional[Sequence[str]] = None, status: Optional[str] = None) -> List[Dict[str, Any]]:
        """Ledger rows as dicts, optionally only of the given dlt loads and with one status."""
        where, params = _filters(load_ids, status)
        cursor = self._connection.execute(f"SELECT * FROM {LEDGER_TABLE} WHERE {where} ORDER BY updated_at, row_key",
                                          params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

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


_FIRST_CODE = "coalesce(json_extract_string(errors, '$[0].code'), 'unknown')"
"""SQL: a row's code, that of its first error."""


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
    conditions = ["TRUE"]
    params: List[Any] = []
    if load_ids is not None:
        conditions.append("list_contains(?, load_id)")
        params.append(list(load_ids))
    if status is not None:
        conditions.append("status = ?")
        params.append(status)
    return " AND ".join(conditions), params


def _naive_utc(text: Optional[str]) -> Optional[datetime]:
    return parse_timestamp(text).replace(tzinfo=None) if text else None


# One lock per ledger file for the whole process, keyed on its resolved path: the dlt
# destination's load jobs may push in parallel threads, and each push opens a connection of its own.
_LEDGER_LOCKS: Dict[Path, threading.Lock] = {}
_LEDGER_LOCKS_GUARD = threading.Lock()


def _ledger_lock(path: Path) -> threading.Lock:
    with _LEDGER_LOCKS_GUARD:
        return _LEDGER_LOCKS.setdefault(path.resolve(), threading.Lock())
