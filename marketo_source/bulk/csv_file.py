"""A checked export file, read into the same typed tables REST paging fills.

The file is read in blocks of rows by Arrow's streaming CSV reader (quoted values may hold
commas, quotes, newlines, carriage returns and NUL bytes), so memory stays flat whatever the
file's size. Each block's rows go to their activity type's table. The base columns are typed
as whole columns; the `attributes` column (one JSON object per row) is taken apart by DuckDB's
JSON functions, one column per attribute, and typed by the same code as REST's rows
(`schema.typed_text_column` and `schema.typed_column`), into the same layouts
(`tables.ActivityTables`). Only `id` differs: export files carry none, so it is null.

The file writes an empty value as `null`; a quoted `"null"` is the text itself.
"""

from __future__ import annotations  # pa.Array[...] is a type for mypy only

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, FrozenSet, Iterator, List, Optional, Sequence

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from marketo_source.errors import MarketoBulkFileError
from marketo_source.schema import (
    BASE_COLUMNS,
    Rejects,
    TableLayout,
    TypedColumn,
    typed_column,
    typed_text_column,
)
from marketo_source.tables import UNKEYED_REASON, ActivityTables

ATTRIBUTES_FIELD = "attributes"
EXPORT_FIELDS = (*(field for field, _ in BASE_COLUMNS.values() if field != "id"), ATTRIBUTES_FIELD)
"""The columns of an activity export file (Marketo's defaults); `actionResult`, when asked for, is not read."""
NULL_TEXT = "null"
BLOCK_BYTES = 16 << 20
"""Bytes of the file parsed at a time: memory holds a few blocks, whatever the file's size."""
NOT_AN_OBJECT = f"{ATTRIBUTES_FIELD} is not a JSON object"

_PLAIN_KINDS: Dict[str, FrozenSet[str]] = {
    "text": frozenset({"VARCHAR"}),
    "bigint": frozenset({"BIGINT", "UBIGINT", "VARCHAR"}),
    "double": frozenset({"BIGINT", "UBIGINT", "DOUBLE", "VARCHAR"}),
    "bool": frozenset({"BOOLEAN", "VARCHAR"}),
    "date": frozenset({"VARCHAR"}),
    "timestamp": frozenset({"VARCHAR"}),
}
"""JSON kinds (DuckDB's `json_type`) whose text, typed as a whole column, is what `typed_column`
makes of the values themselves; a column holding another kind is typed from its values."""


@dataclass
class FileBlock:
    """The rows of one block of an export file, in their tables.

    Attributes:
        tables: Per activity table, this block's rows of it.
        rejects: Rows set aside (no marketoGUID; attributes that are not a JSON object), each as
            the file gives it (field -> text) with the reason.
        rows: Rows the block held, those outside the window included.
    """

    tables: Dict[str, pa.Table] = field(default_factory=dict)
    rejects: Rejects = field(default_factory=list)
    rows: int = 0


def read_export(
    path: Path,
    tables: ActivityTables,
    start: Optional[datetime] = None,
    until: Optional[datetime] = None,
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[FileBlock]:
    """Reads a checked activity export file, block by block.

    Args:
        path: The file (see `download.download_export`).
        tables: The activity tables and their layouts, as the activities stream has them: an
            attribute the metadata lacks adds a text column to its layout, as in REST paging.
        start: Keep only rows whose activityDate is at or after this, if given.
        until: Keep only rows whose activityDate is before this, if given.
        block_bytes: Bytes parsed at a time.

    Raises:
        MarketoBulkFileError: The file is not a CSV export file.
    """
    with duckdb.connect() as connection:
        for batch in _blocks(path, EXPORT_FIELDS, block_bytes):
            yield _Block(batch, tables, connection).read(start, until)


def count_records(path: Path) -> int:
    """Rows of an export file under its header, read as a CSV reader reads them (quoted newlines
    do not count), in blocks."""
    return sum(batch.num_rows for batch in _blocks(path, EXPORT_FIELDS[:1], BLOCK_BYTES))


def window_mask(activity_date: pa.Array[Any], start: Optional[datetime], until: Optional[datetime]) -> pa.Array[Any]:
    """Which rows lie in [start, until) by their activityDate; a row without one is kept.

    A row whose activityDate is missing cannot be placed before or after a hand-over point, so it
    is kept: REST paging may read it as well, and merging on marketo_guid keeps one row.
    """
    mask = pc.is_null(activity_date)
    inside = pa.repeat(True, len(activity_date))
    if start is not None:
        inside = pc.greater_equal(activity_date, pa.scalar(start, activity_date.type))
    if until is not None:
        before = pc.less(activity_date, pa.scalar(until, activity_date.type))
        inside = pc.and_(inside, before)
    return pc.or_(mask, pc.fill_null(inside, False))


def in_window(table: pa.Table, start: Optional[datetime], until: Optional[datetime]) -> pa.Table:
    """The rows of an activity table whose `activity_date` lies in [start, until) (see `window_mask`)."""
    return table.filter(window_mask(table["activity_date"].combine_chunks(), start, until))


def _blocks(path: Path, columns: Sequence[str], block_bytes: int) -> Iterator[pa.RecordBatch]:
    try:
        reader = pcsv.open_csv(
            path,
            read_options=pcsv.ReadOptions(block_size=block_bytes),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(
                include_columns=list(columns),
                include_missing_columns=True,
                column_types=dict.fromkeys(columns, pa.string()),
                null_values=[NULL_TEXT],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        yield from reader
    except (pa.ArrowInvalid, OSError) as error:
        raise MarketoBulkFileError(f"{path.name} cannot be read as an export file: {error}") from None


class _Block:
    """One block of rows on its way into its tables."""

    def __init__(self, batch: pa.RecordBatch, tables: ActivityTables, connection: duckdb.DuckDBPyConnection) -> None:
        self.fields: Dict[str, pa.Array[Any]] = dict(zip(batch.schema.names, batch.columns, strict=True))
        self.rows = batch.num_rows
        self.tables = tables
        self.connection = connection
        self.base: Dict[str, TypedColumn] = {
            column: typed_text_column(self.fields.get(field, pa.nulls(self.rows, pa.string())), data_type)
            for column, (field, data_type) in BASE_COLUMNS.items()
        }

    def read(self, start: Optional[datetime], until: Optional[datetime]) -> FileBlock:
        block = FileBlock(rows=self.rows)
        if start is not None or until is not None:
            self._keep(window_mask(self.base["activity_date"][0], start, until))
        guid = self.fields[EXPORT_FIELDS[0]]
        unkeyed = pc.fill_null(pc.equal(pc.utf8_length(guid), 0), True)
        block.rejects += self._set_aside(unkeyed, UNKEYED_REASON)
        attributes = self.fields[ATTRIBUTES_FIELD]
        block.rejects += self._set_aside(self._not_objects(attributes), NOT_AN_OBJECT)
        type_ids = self.base["activity_type_id"][0]
        order = pc.sort_indices(type_ids)  # stable: each table keeps the file's order
        runs = pc.run_end_encode(type_ids.take(order))
        keys = self._attribute_names()
        begin = 0
        for end, type_id in zip(runs.run_ends.to_pylist(), runs.values.to_pylist(), strict=True):
            table_name, layout = self.tables.table_of(type_id)
            rows = order[begin:end]
            block.tables[table_name] = _TypeRows(self, rows, layout).table(keys.get(type_id, []))
            begin = end
        return block

    def _keep(self, mask: pa.Array[Any]) -> None:
        self.fields = {name: array.filter(mask) for name, array in self.fields.items()}
        self.base = {column: _filtered(typed, mask) for column, typed in self.base.items()}
        self.rows = len(self.base["activity_date"][0])

    def _set_aside(self, mask: pa.Array[Any], reason: str) -> Rejects:
        if not pc.any(mask).as_py():
            return []
        set_aside = pa.Table.from_pydict(self.fields).filter(mask).to_pylist()
        self._keep(pc.invert(mask))
        return [(row, reason) for row in set_aside]

    def _not_objects(self, attributes: pa.Array[Any]) -> pa.Array[Any]:
        """Rows whose attributes are neither empty nor a JSON object (a row without any has none)."""
        query = "SELECT coalesce(json_type(try_cast(a AS JSON)) <> 'OBJECT', a IS NOT NULL) AS bad FROM rows"
        return self._query(query, pa.table({"a": attributes}))["bad"].combine_chunks()

    def _attribute_names(self) -> Dict[Any, List[str]]:
        """Per activity type id, the attribute names its rows carry, in the order met."""
        found = self._query(
            "SELECT t, k FROM (SELECT t, unnest(ks) AS k, i * 65536 + generate_subscripts(ks, 1) AS first "
            "FROM (SELECT t, i, json_keys(a) AS ks FROM rows)) GROUP BY t, k ORDER BY min(first)",
            pa.table({
                "t": self.base["activity_type_id"][0], "a": self.fields[ATTRIBUTES_FIELD],
                "i": pa.array(range(self.rows), pa.int64()),
            }),
        )
        names: Dict[Any, List[str]] = {}
        for type_id, name in zip(found["t"].to_pylist(), found["k"].to_pylist(), strict=True):
            names.setdefault(type_id, []).append(name)
        return names

    def _query(self, sql: str, rows: pa.Table) -> pa.Table:
        """The answer of DuckDB to `sql` over `rows`, an Arrow table it reads in place."""
        self.connection.register("rows", rows)
        try:
            answer: pa.Table = self.connection.sql(sql).to_arrow_table()
        finally:
            self.connection.unregister("rows")
        return answer


class _TypeRows:
    """The rows of one activity type in a block, typed into its table's layout."""

    def __init__(self, block: _Block, rows: pa.Array[Any], layout: TableLayout) -> None:
        self.block = block
        self.rows = rows
        self.layout = layout
        self.attributes = block.fields[ATTRIBUTES_FIELD].take(rows)
        self.columns: Dict[str, TypedColumn] = {}

    def table(self, names: List[str]) -> pa.Table:
        """This type's rows in its layout, with the attributes `names` (those its rows carry)."""
        columns = [self.layout.attribute_column(name) for name in names]
        self._type_attributes(names, columns)
        return self.layout.table(self._column)

    def _column(self, column: str, data_type: str) -> TypedColumn:
        if column in self.columns:
            return self.columns[column]
        if column in BASE_COLUMNS:
            typed, variants = self.block.base[column]
            return typed.take(self.rows), _some(variants.take(self.rows) if variants is not None else None)
        return typed_text_column(pa.nulls(len(self.rows), pa.string()), data_type)

    def _type_attributes(self, names: List[str], columns: List[str]) -> None:
        if not names:
            return
        pointers = _sql_list([_pointer(name) for name in names])
        extracted = self._query(f"SELECT json_extract_string(a, {pointers}) AS v, json_type(a, {pointers}) AS k")
        texts, kinds = extracted["v"].combine_chunks(), extracted["k"].combine_chunks()
        # Names that normalize to one column fill it together, the later name's value winning as in REST paging.
        for index in reversed(range(len(names))):
            column = columns[index]
            data_type = self.layout.column_types[column]
            found = set(pc.unique(pc.list_element(kinds, index)).to_pylist()) - {None, "NULL"}
            if found <= _PLAIN_KINDS[data_type]:
                typed = typed_text_column(pc.list_element(texts, index), data_type)
            else:
                typed = typed_column(self._values(names[index]), data_type)
            self.columns[column] = _coalesced(self.columns.get(column), typed)

    def _values(self, name: str) -> List[Any]:
        """The attribute's values as JSON gives them, for a column whose text alone cannot type it."""
        raw = self._query(f"SELECT json_extract(a, {_sql_text(_pointer(name))})::VARCHAR AS v")["v"].to_pylist()
        return [None if value is None else orjson.loads(value) for value in raw]

    def _query(self, select: str) -> pa.Table:
        return self.block._query(f"{select} FROM rows", pa.table({"a": self.attributes}))


def _coalesced(later: Optional[TypedColumn], earlier: TypedColumn) -> TypedColumn:
    if later is None:
        return earlier
    typed = pc.coalesce(later[0], earlier[0])
    variants = [v for v in (later[1], earlier[1]) if v is not None]
    return typed, (pc.coalesce(*variants) if len(variants) > 1 else variants[0] if variants else None)


def _filtered(typed: TypedColumn, mask: pa.Array[Any]) -> TypedColumn:
    return typed[0].filter(mask), _some(typed[1].filter(mask) if typed[1] is not None else None)


def _some(variants: Optional[pa.Array[Any]]) -> Optional[pa.Array[Any]]:
    """The variants, or None when none of the rows has one (REST adds the column only then)."""
    return variants if variants is not None and variants.null_count < len(variants) else None


def _pointer(name: str) -> str:
    """The JSON pointer of a top-level key (RFC 6901: `~` and `/` escaped)."""
    return "/" + name.replace("~", "~0").replace("/", "~1")


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_list(texts: List[str]) -> str:
    return "[" + ", ".join(_sql_text(text) for text in texts) + "]"


