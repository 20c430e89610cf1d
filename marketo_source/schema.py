"""From Marketo records to typed Arrow tables: table and column names, type mapping, flattening.

Each attribute of an activity becomes its own column, typed from the activity type's metadata.
Nothing is dropped: an attribute the metadata does not list lands as text, and a value that does
not fit its declared type lands as text in `<column>__v_text` beside the typed column.
"""

import json
from datetime import date, datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.normalizers.naming.snake_case import NamingConvention

from marketo_source import settings

_naming = NamingConvention()

ARROW_TYPES: Dict[str, pa.DataType] = {
    "text": pa.string(),
    "bigint": pa.int64(),
    "double": pa.float64(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}

BASE_COLUMNS: Dict[str, Tuple[str, str]] = {
    "marketo_guid": ("marketoGUID", "text"),
    "id": ("id", "bigint"),
    "lead_id": ("leadId", "bigint"),
    "activity_date": ("activityDate", "timestamp"),
    "activity_type_id": ("activityTypeId", "bigint"),
    "campaign_id": ("campaignId", "bigint"),
    "primary_attribute_value_id": ("primaryAttributeValueId", "bigint"),
    "primary_attribute_value": ("primaryAttributeValue", "text"),
}
"""Columns every activity row carries: column -> (Marketo field, dlt data type)."""

KEY_COLUMN = "marketo_guid"
FIELD_CHANGE_KEY = ("marketo_guid", "field_id")

FIELD_CHANGE_COLUMNS: Dict[str, str] = {
    "marketo_guid": "text",
    "field_id": "bigint",
    "field_name": "text",
    "old_value": "text",
    "new_value": "text",
    "lead_id": "bigint",
    "activity_date": "timestamp",
}


def column_name(marketo_name: str) -> str:
    """Returns the column for a Marketo name: `Client IP Address` -> `client_ip_address`."""
    return _naming.normalize_identifier(marketo_name)


def activity_table_name(type_name: str) -> str:
    """Returns the table of an activity type: `Fill Out Form` -> `activity_fill_out_form`."""
    return settings.ACTIVITY_TABLE_PREFIX + _naming.normalize_table_identifier(type_name)


def dlt_type(marketo_data_type: Optional[str]) -> str:
    """Maps a Marketo attribute data type to a dlt data type; unknown types load as text."""
    return settings.MARKETO_TO_DLT_TYPE.get((marketo_data_type or "").lower(), "text")


def parse_timestamp(value: Any) -> datetime:
    """Parses Marketo's datetimes, `...Z` and `...+0000` alike, into an aware UTC datetime."""
    if not isinstance(value, str):
        raise ValueError(f"not a datetime string: {value!r}")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a boolean is not an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("not a whole number")
        return int(value)
    return int(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return float(value)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _to_date(value: Any) -> date:
    if not isinstance(value, str):
        raise ValueError(f"not a date string: {value!r}")
    if len(value) == 10:
        return date.fromisoformat(value)
    return parse_timestamp(value).date()


def as_text(value: Any) -> str:
    """Text form of any JSON value: strings as they are, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


_CONVERTERS: Dict[str, Callable[[Any], Any]] = {
    "text": as_text,
    "bigint": _to_int,
    "double": _to_float,
    "bool": _to_bool,
    "date": _to_date,
    "timestamp": parse_timestamp,
}


class TableLayout:
    """The columns of one table and how a record's values fill them.

    Args:
        attributes: (Marketo attribute name, Marketo data type) pairs from the type's metadata.
        base_columns: The record's top-level fields as column -> (Marketo field, dlt type).
    """

    def __init__(
        self,
        attributes: Iterable[Tuple[str, Optional[str]]],
        base_columns: Dict[str, Tuple[str, str]] = BASE_COLUMNS,
    ) -> None:
        self.base_columns = base_columns
        self.column_types: Dict[str, str] = {col: typ for col, (_, typ) in base_columns.items()}
        self._attribute_columns: Dict[str, str] = {}
        for name, data_type in attributes:
            self._add_attribute(name, dlt_type(data_type))

    def _add_attribute(self, name: str, data_type: str) -> str:
        column = column_name(name)
        if column in self.base_columns:
            column = settings.ATTRIBUTE_COLLISION_PREFIX + column
        self._attribute_columns[name] = column
        self.column_types.setdefault(column, data_type)
        return column

    def attribute_column(self, name: str) -> str:
        """Returns the column of an attribute, adding a text column for one the metadata lacks."""
        column = self._attribute_columns.get(name)
        return column if column is not None else self._add_attribute(name, "text")

    def to_arrow(self, records: Sequence[Dict[str, Any]]) -> pa.Table:
        """Flattens records into one Arrow table with every column of the layout."""
        rows = len(records)
        cells: Dict[str, List[Any]] = {
            column: [record.get(field) for record in records] for column, (field, _) in self.base_columns.items()
        }
        for row, record in enumerate(records):
            for attribute in record.get("attributes") or ():
                column = self.attribute_column(attribute.get("name"))
                column_cells = cells.get(column)
                if column_cells is None:
                    column_cells = cells[column] = [None] * rows
                column_cells[row] = attribute.get("value")
        arrays: Dict[str, pa.Array] = {}
        for column, data_type in self.column_types.items():
            typed, variants = typed_column(cells.get(column, [None] * rows), data_type)
            arrays[column] = typed
            if variants is not None:
                arrays[column + settings.VARIANT_SUFFIX] = variants
        return _table(arrays, (KEY_COLUMN,))


def typed_column(cells: List[Any], data_type: str) -> Tuple[pa.Array, Optional[pa.Array]]:
    """A column of `data_type` from raw JSON values, and the text of values that do not fit.

    Arrow converts a whole column at once when it can; only a column holding values Arrow
    cannot convert goes value by value, and its misfits land in the variants.
    """
    arrow_type = ARROW_TYPES[data_type]
    # Arrow takes True as 1.0 in a double column; the value-by-value path keeps it as a misfit.
    if data_type != "double" or not any(type(value) is bool for value in cells):
        try:
            return pa.array(cells, arrow_type), None
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
    if data_type != "text":
        try:
            return pc.cast(_as_text_array(cells), arrow_type), None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    return _typed_column_by_value(cells, data_type)


def _as_text_array(cells: List[Any]) -> pa.Array:
    try:
        return pa.array(cells, pa.string())  # all text already: no work per value
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if value is None else _text_of(value) for value in cells], pa.string())


def _text_of(value: Any) -> str:
    # Numbers print as JSON prints them; str() is several times cheaper than json.dumps.
    kind = type(value)
    if kind is str:
        return value
    if kind is int or kind is float:
        return repr(value)
    return as_text(value)


def _typed_column_by_value(cells: List[Any], data_type: str) -> Tuple[pa.Array, Optional[pa.Array]]:
    convert = _CONVERTERS[data_type]
    typed: List[Any] = [None] * len(cells)
    variants: List[Any] = [None] * len(cells)
    misfits = False
    for row, value in enumerate(cells):
        if value is None:
            continue
        try:
            typed[row] = convert(value)
        except (TypeError, ValueError, OverflowError):
            variants[row], misfits = as_text(value), True
    return pa.array(typed, ARROW_TYPES[data_type]), pa.array(variants, pa.string()) if misfits else None


Rejects = List[Tuple[Dict[str, Any], str]]
"""Records set aside, each with the reason."""


def field_changes_to_arrow(records: Sequence[Dict[str, Any]]) -> Tuple[pa.Table, Rejects]:
    """One row per changed field of the lead-change records (their `fields` lists).

    Returns:
        The rows, and the records holding a change without a field id, which cannot be keyed.
    """
    columns: Dict[str, List[Any]] = {column: [] for column in FIELD_CHANGE_COLUMNS}
    rejects: Rejects = []
    for record in records:
        activity_date = _timestamp_or_none(record.get("activityDate"))
        for change in record.get("fields") or ():
            if change.get("id") is None:
                rejects.append((record, "a changed field without its id"))
                continue
            columns["marketo_guid"].append(record.get("marketoGUID"))
            columns["field_id"].append(change.get("id"))
            columns["field_name"].append(change.get("name"))
            columns["old_value"].append(_text_or_none(change.get("oldValue")))
            columns["new_value"].append(_text_or_none(change.get("newValue")))
            columns["lead_id"].append(record.get("leadId"))
            columns["activity_date"].append(activity_date)
    arrays = {column: pa.array(cells, ARROW_TYPES[FIELD_CHANGE_COLUMNS[column]]) for column, cells in columns.items()}
    return _table(arrays, FIELD_CHANGE_KEY), rejects


def rejects_to_arrow(stream: str, rejects: Rejects) -> pa.Table:
    """Rows of the rejected-records table: the stream, the reason and the record as Marketo sent it."""
    return pa.table(
        {
            "stream": pa.array([stream] * len(rejects), pa.string()),
            "reason": pa.array([reason for _, reason in rejects], pa.string()),
            "record": pa.array([json.dumps(record, ensure_ascii=False) for record, _ in rejects], pa.string()),
        }
    )


def _table(arrays: Dict[str, pa.Array], key: Sequence[str]) -> pa.Table:
    # Key columns are declared non-nullable, as dlt declares primary keys.
    fields = [pa.field(name, array.type, nullable=name not in key) for name, array in arrays.items()]
    return pa.Table.from_arrays(list(arrays.values()), schema=pa.schema(fields))


def _timestamp_or_none(value: Any) -> Optional[datetime]:
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def _text_or_none(value: Any) -> Optional[str]:
    return None if value is None else as_text(value)


def type_attributes(activity_type: Dict[str, Any]) -> List[Tuple[str, Optional[str]]]:
    """(name, dataType) of an activity type's secondary attributes, from types.json."""
    return [(a["name"], a.get("dataType")) for a in activity_type.get("attributes") or () if a.get("name")]
