"""From Marketo records to typed Arrow tables: table and column names, type mapping, flattening.

Each attribute of an activity becomes its own column, typed from the activity type's metadata.
Nothing is dropped: an attribute the metadata does not list lands as text (unless
UNDECLARED_ATTRIBUTE_TYPES knows it), and a value that does not fit its declared type lands as
text in `<column>__v_text` beside the typed column.
"""

from __future__ import annotations  # pa.Array[...] is a type for mypy only: Arrow's class takes no parameters

import json
from datetime import date, datetime, timezone
from typing import Any, Callable, ClassVar, Dict, Iterable, List, Optional, Sequence, Tuple, Union

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

TypedColumn = Tuple["pa.Array[Any]", Optional["pa.Array[Any]"]]
"""A typed column, and the text of the values that do not fit its type (None when all fit)."""


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

UNDECLARED_ATTRIBUTE_TYPES: Dict[str, str] = {"Lead ID": "integer"}
"""Marketo data types of attributes a record may carry without its type's metadata listing them.

"Lead ID" holds a lead's id, a whole number (Delete Lead's primary attribute bears the name). Records
of Get Lead Changes carry it beside Reason and Source, and Marketo's documentation lists no attributes
for Change Data Value, so whether Describe (types.json) declares it is not known. Metadata that lists
an attribute decides its type; this types the attribute when the metadata leaves it out.
"""

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
        """Returns the column of an attribute, adding one for an attribute the metadata lacks: typed
        by UNDECLARED_ATTRIBUTE_TYPES, else text."""
        column = self._attribute_columns.get(name)
        if column is not None:
            return column
        return self._add_attribute(name, dlt_type(UNDECLARED_ATTRIBUTE_TYPES.get(name)))

    def table(self, column_of: Callable[[str, str], TypedColumn]) -> pa.Table:
        """The Arrow table of this layout: each column as `column_of(column, dlt type)` types it,
        with the variants of values that did not fit beside their column."""
        arrays: Dict[str, pa.Array[Any]] = {}
        for column, data_type in self.column_types.items():
            typed, variants = column_of(column, data_type)
            arrays[column] = typed
            if variants is not None:
                arrays[column + settings.VARIANT_SUFFIX] = variants
        return _table(arrays, (KEY_COLUMN,))


Rejects = List[Tuple[Dict[str, Any], str]]
"""Records set aside, each with the reason."""


class TableRows:
    """The rows of one table, gathered page by page as columns of plain values, made into Arrow at once.

    Gathering each page as it arrives lets its records die young: records kept until a flush
    were walked by every full collection of Python's garbage collector, which then took 1.0 of
    the 4.3 CPU seconds an extract of 100,000 activities spends (0.4 since). Arrow then converts
    each whole column in one step.
    """

    def __init__(self, layout: TableLayout) -> None:
        self._layout = layout
        self._cells: Dict[str, List[Any]] = {column: [] for column in layout.base_columns}
        self._attribute_cells: List[List[Any]] = []
        self._cells_of_name: Dict[Any, List[Any]] = {}
        """Cells per attribute name, which spares each value the name-to-column lookup."""
        self._rows = 0

    def add(self, records: Sequence[Dict[str, Any]]) -> None:
        """Gathers the values of `records` into their columns."""
        first = self._rows
        self._rows += len(records)
        for column, (field, _) in self._layout.base_columns.items():
            self._cells[column] += [record.get(field) for record in records]
        padding = [None] * len(records)
        for attribute_cells in self._attribute_cells:
            attribute_cells += padding
        cells_of_name = self._cells_of_name
        for row, record in enumerate(records, first):
            for attribute in record.get("attributes") or ():
                name = attribute.get("name")
                cells = cells_of_name.get(name)
                if cells is None:
                    cells = cells_of_name[name] = self._attribute_column_cells(name)
                cells[row] = attribute.get("value")

    def _attribute_column_cells(self, name: Any) -> List[Any]:
        column = self._layout.attribute_column(name)
        cells = self._cells.get(column)
        if cells is None:
            cells = self._cells[column] = [None] * self._rows
            self._attribute_cells.append(cells)
        return cells

    def to_arrow(self) -> Tuple[pa.Table, Rejects]:
        """One Arrow table with every column of the layout, and no records set aside."""
        return self._layout.table(lambda column, data_type: typed_column(
            self._cells.get(column) or [None] * self._rows, data_type
        )), []


def typed_column(cells: List[Any], data_type: str) -> TypedColumn:
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
        typed = cast_text(_as_text_array(cells), data_type)
        if typed is not None:
            return typed, None
    return _typed_column_by_value(cells, data_type)


def cast_text(text: pa.Array[Any], data_type: str) -> Optional[pa.Array[Any]]:
    """A text column cast to `data_type` as a whole, or None when a value does not parse.

    This is what `typed_column` makes of values that are all text (Arrow converts no text in
    its first step), and of numbers and booleans given as their JSON text, when they all parse.
    """
    try:
        return pc.cast(text, ARROW_TYPES[data_type])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def typed_text_column(text: pa.Array[Any], data_type: str) -> TypedColumn:
    """`typed_column` of text values (a CSV's), cast as a whole column unless a value does not fit."""
    if data_type == "text":
        return text, None
    typed = cast_text(text, data_type)
    # Where the whole-column cast failed, typed_column's own two whole-column steps would fail too.
    return (typed, None) if typed is not None else _typed_column_by_value(text.to_pylist(), data_type)


def _as_text_array(cells: List[Any]) -> pa.Array[Any]:
    try:
        return pa.array(cells, pa.string())  # all text already: no work per value
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if value is None else _text_of(value) for value in cells], pa.string())


def _text_of(value: Any) -> str:
    # Numbers print as JSON prints them; str() is several times cheaper than json.dumps.
    if type(value) is str:
        return value
    kind = type(value)
    if kind is int or kind is float:
        return repr(value)
    return as_text(value)


def _typed_column_by_value(cells: List[Any], data_type: str) -> TypedColumn:
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


class FieldChangeRows:
    """One row per changed field of lead-change records (their `fields` lists), gathered page by page.

    Values are kept as Marketo sent them and converted by whole columns in `to_arrow`.
    """

    _FIELDS: ClassVar[Dict[str, str]] = {
        "field_id": "id", "field_name": "name", "old_value": "oldValue", "new_value": "newValue",
    }

    def __init__(self) -> None:
        self._cells: Dict[str, List[Any]] = {column: [] for column in FIELD_CHANGE_COLUMNS}
        self._rejects: Rejects = []

    def add(self, records: Sequence[Dict[str, Any]]) -> None:
        """Gathers a row per changed field; a change without a field id cannot be keyed and is set aside."""
        cells = self._cells
        for record in records:
            for change in record.get("fields") or ():
                if change.get("id") is None:
                    self._rejects.append((record, "a changed field without its id"))
                    continue
                cells["marketo_guid"].append(record.get("marketoGUID"))
                cells["lead_id"].append(record.get("leadId"))
                cells["activity_date"].append(record.get("activityDate"))
                for column, field in self._FIELDS.items():
                    cells[column].append(change.get(field))

    def to_arrow(self) -> Tuple[pa.Table, Rejects]:
        """The rows, and the records set aside with their reasons."""
        arrays: Dict[str, pa.Array[Any]] = {}
        for column, cells in self._cells.items():
            if column in ("old_value", "new_value"):
                arrays[column] = _as_text_array(cells)
            elif column == "activity_date":
                arrays[column] = typed_column(cells, "timestamp")[0]  # a date that is not one stays empty
            else:
                arrays[column] = pa.array(cells, ARROW_TYPES[FIELD_CHANGE_COLUMNS[column]])
        return _table(arrays, FIELD_CHANGE_KEY), self._rejects


Rows = Union[TableRows, FieldChangeRows]
"""A batch of one table's rows being gathered."""


def rejects_to_arrow(stream: str, rejects: Rejects) -> pa.Table:
    """Rows of the rejected-records table: the stream, the reason and the record as Marketo sent it."""
    return pa.table(
        {
            "stream": pa.array([stream] * len(rejects), pa.string()),
            "reason": pa.array([reason for _, reason in rejects], pa.string()),
            "record": pa.array([json.dumps(record, ensure_ascii=False) for record, _ in rejects], pa.string()),
        }
    )


def _table(arrays: Dict[str, pa.Array[Any]], key: Sequence[str]) -> pa.Table:
    # Key columns are declared non-nullable, as dlt declares primary keys.
    fields = [pa.field(name, array.type, nullable=name not in key) for name, array in arrays.items()]
    return pa.Table.from_arrays(list(arrays.values()), schema=pa.schema(fields))


def type_attributes(activity_type: Dict[str, Any]) -> List[Tuple[str, Optional[str]]]:
    """(name, dataType) of an activity type's secondary attributes, from types.json."""
    return [(a["name"], a.get("dataType")) for a in activity_type.get("attributes") or () if a.get("name")]
