"""Which tables a stream's records go to, and how they are handed to dlt.

Activities go to one table per activity type, lead changes to `lead_changes` and one row per
changed field to `lead_field_changes`, deleted leads to `deleted_leads`; the catalogs to their
own tables. Records are gathered per table and made into Arrow in large batches; tables whose
key or write disposition differ from their resource's carry their own hints.
"""

from collections import defaultdict
from typing import Any, Dict, Iterable, Iterator, List, Tuple

import dlt
import pyarrow as pa
from dlt.common.typing import TDataItem

from marketo_source import settings
from marketo_source.run_report import REPORT_COLUMNS
from marketo_source.schema import (
    KEY_COLUMN,
    FieldChangeRows,
    Rejects,
    Rows,
    TableLayout,
    TableRows,
    activity_table_name,
    type_attributes,
)

Records = List[Dict[str, Any]]
LOAD_ID_COLUMN = "_dlt_load_id"


class StreamTables:
    """Which tables a stream's records go to, and how a table's records become rows."""

    def route(self, records: Records) -> Iterable[Tuple[str, Records]]:
        """(table name, records) for each table the records fill."""
        raise NotImplementedError

    def new_rows(self, table_name: str) -> Rows:
        """An empty batch of rows of `table_name`, to gather records into."""
        raise NotImplementedError


FIELD_CHANGES_TABLE = "lead_field_changes"
_HINTS_OF_TABLE: Dict[str, Dict[str, Any]] = {
    "activity_type_attributes": dict(primary_key=["activity_type_id", "name"]),
    "custom_activity_types": dict(
        columns={"created_at": {"data_type": "timestamp"}, "updated_at": {"data_type": "timestamp"}}
    ),
    "custom_activity_type_attributes": dict(primary_key=["activity_type_api_name", "api_name"]),
    FIELD_CHANGES_TABLE: dict(primary_key=["marketo_guid", "field_id"]),
    settings.REJECTED_TABLE: dict(write_disposition="append", primary_key=[]),
    settings.RETENTION_GAPS_TABLE: dict(write_disposition="append", primary_key=[]),
    settings.RUN_REPORTS_TABLE: dict(
        write_disposition="append",
        primary_key=[],
        columns=[{"name": name, "data_type": data_type} for name, data_type in REPORT_COLUMNS.items()],
    ),
}
"""Tables that do not share their resource's key or write disposition, and their hints."""
_TABLE_HINTS = {name: dlt.mark.make_hints(table_name=name, **hints) for name, hints in _HINTS_OF_TABLE.items()}


class OneTable(StreamTables):
    """Every record of the stream goes to one table."""

    def __init__(self, table_name: str, layout: TableLayout) -> None:
        self._table_name = table_name
        self._layout = layout

    def route(self, records: Records) -> Iterable[Tuple[str, Records]]:
        yield self._table_name, records

    def new_rows(self, table_name: str) -> Rows:
        return TableRows(self._layout)


class LeadChangeTables(StreamTables):
    """Each lead change goes to `lead_changes`, and each of its changed fields to `lead_field_changes`."""

    def __init__(self, layout: TableLayout) -> None:
        self._layout = layout

    def route(self, records: Records) -> Iterable[Tuple[str, Records]]:
        yield "lead_changes", records
        yield FIELD_CHANGES_TABLE, records

    def new_rows(self, table_name: str) -> Rows:
        return FieldChangeRows() if table_name == FIELD_CHANGES_TABLE else TableRows(self._layout)


class ActivityTables(StreamTables):
    """Each activity goes to its type's table."""

    def __init__(self, known_types: Dict[int, Dict[str, Any]]) -> None:
        self._known = known_types
        self._names = _unique_table_names(known_types)
        self._layouts: Dict[str, TableLayout] = {}

    def route(self, records: Records) -> Iterable[Tuple[str, Records]]:
        by_table: Dict[str, Records] = defaultdict(list)
        for record in records:
            by_table[self.table_of(record.get("activityTypeId"))[0]].append(record)
        return by_table.items()

    def new_rows(self, table_name: str) -> Rows:
        return TableRows(self._layouts[table_name])

    def table_of(self, type_id: Any) -> Tuple[str, TableLayout]:
        """The table of an activity type, and the layout its rows share across batches."""
        # A type missing from the metadata still lands, in a table named after its id.
        name = self._names.get(type_id) or activity_table_name(f"type {type_id}")
        if name not in self._layouts:
            self._layouts[name] = TableLayout(type_attributes(self._known.get(type_id, {})))
        return name, self._layouts[name]


def _unique_table_names(known_types: Dict[int, Dict[str, Any]]) -> Dict[int, str]:
    """Table per type id; a later type whose name normalizes like an earlier one's gets its id appended."""
    names: Dict[int, str] = {}
    taken = set()
    for type_id in sorted(known_types):
        name = activity_table_name(known_types[type_id].get("name") or f"type {type_id}")
        if name in taken:
            name = f"{name}_{type_id}"
        taken.add(name)
        names[type_id] = name
    return names


def activity_type_rows(activity_types: Dict[int, Dict[str, Any]]) -> Dict[str, Records]:
    types, attributes = [], []
    for activity_type in activity_types.values():
        primary = activity_type.get("primaryAttribute") or {}
        types.append(
            {
                "id": activity_type["id"],
                "name": activity_type.get("name"),
                "description": activity_type.get("description"),
                "primary_attribute_name": primary.get("name"),
                "primary_attribute_data_type": primary.get("dataType"),
            }
        )
        attributes += [
            {"activity_type_id": activity_type["id"], "name": name, "data_type": data_type}
            for name, data_type in type_attributes(activity_type)
        ]
    return {"activity_types": types, "activity_type_attributes": attributes}


def custom_type_rows(custom_types: List[Dict[str, Any]]) -> Dict[str, Records]:
    types, attributes = [], []
    for custom_type in custom_types:
        primary = custom_type.get("primaryAttribute") or {}
        types.append(
            {
                "api_name": custom_type.get("apiName"),
                "id": custom_type.get("id"),
                "name": custom_type.get("name"),
                "description": custom_type.get("description"),
                "trigger_name": custom_type.get("triggerName"),
                "filter_name": custom_type.get("filterName"),
                "status": custom_type.get("status"),
                "created_at": custom_type.get("createdAt"),
                "updated_at": custom_type.get("updatedAt"),
                "primary_attribute_api_name": primary.get("apiName"),
                "primary_attribute_name": primary.get("name"),
                "primary_attribute_data_type": primary.get("dataType"),
            }
        )
        attributes += [
            {
                "activity_type_api_name": custom_type.get("apiName"),
                "api_name": attribute.get("apiName"),
                "name": attribute.get("name"),
                "data_type": attribute.get("dataType"),
                "description": attribute.get("description"),
            }
            for attribute in custom_type.get("attributes") or ()
        ]
    return {"custom_activity_types": types, "custom_activity_type_attributes": attributes}


UNKEYED_REASON = f"no {KEY_COLUMN} (marketoGUID)"
"""Why a record without marketoGUID is set aside: no merge can key it."""


def split_unkeyed(records: List[Dict[str, Any]]) -> Tuple[List[Dict[str, Any]], Rejects]:
    keyed: List[Dict[str, Any]] = []
    rejects: Rejects = []
    for record in records:
        guid = record.get("marketoGUID")
        if isinstance(guid, str) and guid:
            keyed.append(record)
        else:
            rejects.append((record, UNKEYED_REASON))
    return keyed, rejects


class RowBuffer:
    """Gathers each table's records as they arrive, so that each is made into Arrow in large batches.

    One row budget serves all tables of a stream: past it, the table holding most records is
    flushed, so memory stays flat however many tables a stream fills.
    """

    def __init__(self, max_rows: int, tables: StreamTables) -> None:
        self._max_rows = max_rows
        self._tables = tables
        self._rows: Dict[str, Rows] = {}
        self._records: Dict[str, int] = {}
        self._total = 0

    def add(self, table_name: str, records: Records) -> Iterator[Tuple[str, Rows]]:
        if table_name not in self._rows:
            self._rows[table_name] = self._tables.new_rows(table_name)
            self._records[table_name] = 0
        self._rows[table_name].add(records)
        self._records[table_name] += len(records)
        self._total += len(records)
        while self._total >= self._max_rows:
            yield self._take(max(self._records, key=self._records.__getitem__))

    def drain(self) -> Iterator[Tuple[str, Rows]]:
        for table_name in list(self._rows):
            yield self._take(table_name)

    def _take(self, table_name: str) -> Tuple[str, Rows]:
        self._total -= self._records.pop(table_name)
        return table_name, self._rows.pop(table_name)


def to_table(item: Any, table_name: str) -> TDataItem:
    """Sends rows to a table, with that table's own key and write disposition where it has them.

    An Arrow table gets the `_dlt_load_id` column that dlt gives rows it normalizes itself, so
    that every table ties its rows to their load (and to that load's `marketo_run_reports`).
    """
    if isinstance(item, pa.Table):
        load_id = dlt.current.load_package_state()["load_id"]
        item = item.append_column(LOAD_ID_COLUMN, pa.repeat(pa.scalar(load_id, pa.string()), item.num_rows))
    if table_name in _TABLE_HINTS:
        return dlt.mark.with_hints(item, _TABLE_HINTS[table_name], create_table_variant=True)
    return dlt.mark.with_table_name(item, table_name)
