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
from typing import Any, Dict, FrozenSet, Iterator, List, Optional, Sequence, cast

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
    cast_text,
    typed_column,
    typed_text_column,
)
from marketo_source.tables import UNKEYED_REASON, ActivityTables

ATTRIBUTES_FIELD = "attributes"
EXPORT_FIELDS = (*(field for field, _ in BASE_COLUMNS.values() if field != "id"), ATTRIBUTES_FIELD)
"""The columns read from an activity export file: Marketo's default fields under their own names (a job
asks for them without `columnHeaderNames`); `actionResult`, when asked for, is not read."""
NULL_TEXT = "null"
BLOCK_BYTES = 1 << 20
"""Bytes Arrow's CSV reader parses at a time (1 MiB: it reads the next block while one is parsed)."""
BLOCK_ROWS = 65_536
"""Rows taken into their tables at a time: memory holds this many rows of the file, whatever its size."""
NOT_AN_OBJECT = f"{ATTRIBUTES_FIELD} is not a JSON object"
_SCAN_ROWS = 8_192
"""Rows per chunk DuckDB scans, so that its threads share a query's rows."""
_ROWS = "marketo_export_rows"
"""The name DuckDB reads a block's rows by."""


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
    block_rows: int = BLOCK_ROWS,
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[FileBlock]:
    """Reads a checked activity export file, block by block.

    Args:
        path: The file (see `download.download_export`).
        tables: The activity tables and their layouts, as the activities stream has them: an
            attribute the metadata lacks adds a text column to its layout, as in REST paging.
        start: Keep only rows whose activityDate is at or after this, if given.
        until: Keep only rows whose activityDate is before this, if given.
        block_rows: Rows per block (a block may hold a few more).
        block_bytes: Bytes the CSV reader parses at a time.

    Raises:
        MarketoBulkFileError: The file is not a CSV export file.
    """
    with duckdb.connect() as connection:
        batches: List[pa.RecordBatch] = []
        for batch in _batches(path, EXPORT_FIELDS, block_bytes):
            batches.append(batch)
            if sum(b.num_rows for b in batches) >= block_rows:
                yield _Block(batches, tables, connection).read(start, until)
                batches = []
        if batches:
            yield _Block(batches, tables, connection).read(start, until)


def count_records(path: Path) -> int:
    """Rows of an export file under its header, read as a CSV reader reads them (quoted newlines
    do not count), in blocks."""
    return sum(batch.num_rows for batch in _batches(path, EXPORT_FIELDS[:1], BLOCK_BYTES))


def window_mask(activity_date: pa.Array[Any], start: Optional[datetime], until: Optional[datetime]) -> pa.Array[Any]:
    """Which rows lie in [start, until) by their activityDate; a row without one is kept.

    A row whose activityDate is missing cannot be placed before or after a hand-over point, so it
    is kept: REST paging may read it as well, and merging on marketo_guid keeps one row.
    """
    inside: Any = pa.repeat(True, len(activity_date))
    if start is not None:
        inside = pc.and_(inside, pc.greater_equal(activity_date, pa.scalar(start, activity_date.type)))
    if until is not None:
        inside = pc.and_(inside, pc.less(activity_date, pa.scalar(until, activity_date.type)))
    mask: pa.Array[Any] = pc.or_(pc.is_null(activity_date), pc.fill_null(inside, pa.scalar(False)))
    return mask


def in_window(table: pa.Table, start: Optional[datetime], until: Optional[datetime]) -> pa.Table:
    """The rows of an activity table whose `activity_date` lies in [start, until) (see `window_mask`)."""
    return table.filter(window_mask(table["activity_date"].combine_chunks(), start, until))


def _batches(path: Path, columns: Sequence[str], block_bytes: int) -> Iterator[pa.RecordBatch]:
    try:
        reader = pcsv.open_csv(
            path,
            read_options=pcsv.ReadOptions(block_size=block_bytes),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(
                include_columns=list(columns),
                column_types=dict.fromkeys(columns, pa.string()),
                null_values=[NULL_TEXT],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        yield from reader
    except (pa.ArrowInvalid, pa.ArrowKeyError, OSError) as error:
        raise MarketoBulkFileError(f"{path.name} cannot be read as an export file: {error}") from None


class _Block:
    """One block of rows on its way into its tables."""

    def __init__(
        self, batches: List[pa.RecordBatch], tables: ActivityTables, connection: duckdb.DuckDBPyConnection
    ) -> None:
        rows = pa.Table.from_batches(batches)
        self.fields: Dict[str, Any] = {name: rows[name].combine_chunks() for name in rows.column_names}
        self.rows = rows.num_rows
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
        unkeyed = pc.fill_null(pc.equal(pc.utf8_length(guid), pa.scalar(0, pa.int32())), pa.scalar(True))
        block.rejects += self._set_aside(unkeyed, UNKEYED_REASON)
        # Marketo's documentation shows attributes as an object; its OpenAPI's example, as a list of
        # {"name", "value"} pairs, as Get Lead Activities gives them: such lists are made objects.
        listed = pc.fill_null(pc.starts_with(pc.utf8_ltrim_whitespace(self.fields[ATTRIBUTES_FIELD]), "["), False)
        if pc.any(listed).as_py():
            self._objects_from_lists(listed)
        # Cheap to tell without parsing: attributes that do not even begin as an object.
        attributes = pc.utf8_ltrim_whitespace(self.fields[ATTRIBUTES_FIELD])
        not_objects = pc.invert(pc.fill_null(pc.starts_with(attributes, "{"), pa.scalar(True)))
        block.rejects += self._set_aside(not_objects, NOT_AN_OBJECT)
        if self.rows == 0:  # every row lay outside the window or was set aside
            return block
        try:
            names = self._attribute_names()
        except duckdb.Error:  # a row's attributes begin as a JSON object but are not one
            block.rejects += self._set_aside(self._not_objects(), NOT_AN_OBJECT)
            if self.rows == 0:
                return block
            names = self._attribute_names()
        # The rows of a type side by side (a stable sort keeps the file's order), so that each table
        # takes a slice of the block's columns and of the attribute values DuckDB extracts.
        self._take(pc.sort_indices(self.base["activity_type_id"][0]))
        values = self._attribute_values(names)
        runs = pc.value_counts(self.base["activity_type_id"][0])  # of sorted ids: in their order
        begin = 0
        counts: List[Any] = runs.field("counts").to_pylist()
        for type_id, count in zip(runs.field("values").to_pylist(), counts, strict=True):
            table_name, layout = self.tables.table_of(type_id)
            rows = _TypeRows(self, begin, count, layout)
            block.tables[table_name] = rows.table(names.get(type_id, []), values.slice(begin, count))
            begin += count
        return block

    def _keep(self, mask: Any) -> None:
        self.fields = {name: array.filter(mask) for name, array in self.fields.items()}
        self.base = {column: (typed.filter(mask), _some(variants.filter(mask) if variants is not None else None))
                     for column, (typed, variants) in self.base.items()}
        self.rows = len(self.base["activity_date"][0])

    def _take(self, indices: Any) -> None:
        self.fields = {name: array.take(indices) for name, array in self.fields.items()}
        self.base = {column: (typed.take(indices), variants.take(indices) if variants is not None else None)
                     for column, (typed, variants) in self.base.items()}

    def _set_aside(self, mask: Any, reason: str) -> Rejects:
        if not pc.any(mask).as_py():
            return []
        set_aside = pa.Table.from_pydict(self.fields).filter(mask).to_pylist()
        self._keep(pc.invert(mask))
        return [(row, reason) for row in set_aside]

    def _scan_table(self) -> pa.Table:
        """The block's type ids (t), attributes (a) and row numbers (i), in chunks DuckDB's threads share."""
        columns = {
            "t": self.base["activity_type_id"][0], "a": self.fields[ATTRIBUTES_FIELD],
            "i": pa.array(range(self.rows), pa.int64()),
        }
        return pa.Table.from_batches(pa.table(columns).to_batches(max_chunksize=_SCAN_ROWS))

    def _not_objects(self) -> Any:
        """Rows whose attributes are neither empty nor a JSON object."""
        query = f"SELECT coalesce(json_type(try_cast(a AS JSON)) <> 'OBJECT', a IS NOT NULL) AS bad FROM {_ROWS}"
        return self._query(query)["bad"].combine_chunks()

    def _objects_from_lists(self, listed: Any) -> None:
        """Attributes given as a list of name/value pairs, as the object of those names and values;
        other lists are left to be set aside."""
        try:
            found = self._query(
                "SELECT i, json_group_object(e->>'$.name', e->'$.value') AS o FROM (SELECT i, "
                f"unnest(from_json(a, '[\"json\"]')) AS e FROM {_ROWS} WHERE starts_with(ltrim(a), '[')) "
                "GROUP BY i HAVING bool_and(json_type(e) = 'OBJECT' AND e->>'$.name' IS NOT NULL)"
            )
        except duckdb.Error:  # not JSON lists: set aside as not objects, below
            return
        texts: List[Optional[str]] = self.fields[ATTRIBUTES_FIELD].to_pylist()
        for row, is_list in enumerate(listed.to_pylist()):
            if is_list and (texts[row] or "").strip() == "[]":
                texts[row] = "{}"
        for index, pairs in zip(cast(List[int], found["i"].to_pylist()), found["o"].to_pylist(), strict=True):
            texts[index] = pairs
        self.fields[ATTRIBUTES_FIELD] = pa.array(texts, pa.string())

    def _attribute_names(self) -> Dict[Any, List[str]]:
        """Per activity type id, the attribute names its rows carry, in the order met."""
        found = self._query(
            "SELECT t, k FROM (SELECT t, unnest(ks) AS k, i * 65536 + generate_subscripts(ks, 1) AS first "
            f"FROM (SELECT t, i, json_keys(a) AS ks FROM {_ROWS})) GROUP BY t, k ORDER BY min(first)"
        )
        names: Dict[Any, List[str]] = {}
        for type_id, name in zip(found["t"].to_pylist(), found["k"].to_pylist(), strict=True):
            names.setdefault(type_id, []).append(str(name))
        return names

    def _attribute_values(self, names: Dict[Any, List[str]]) -> Any:
        """Per row, the JSON text of each attribute its type carries in this block (`names`), null
        where the row lacks it."""
        extracts = " ".join(
            f"WHEN {'t IS NULL' if type_id is None else f't = {int(type_id)}'} THEN json_extract(a, "
            f"[{', '.join(_sql_text(_pointer(name)) for name in type_names)}])"
            for type_id, type_names in names.items()
        )
        if not extracts:
            return pa.nulls(self.rows, pa.list_(pa.string()))
        # DuckDB keeps the rows' order (preserve_insertion_order); sorting them again, were it not so,
        # is cheaper than an ORDER BY that would move the values along.
        answer = self._query(f"SELECT i, CASE {extracts} END AS v FROM {_ROWS}")
        if not pc.all(pc.equal(answer["i"], pa.array(range(self.rows), pa.int64()))).as_py():
            answer = answer.take(pc.sort_indices(answer["i"]))
        return answer["v"].combine_chunks()

    def _query(self, sql: str) -> pa.Table:
        """DuckDB's answer to `sql` over the block's rows, which it reads in place (see `_scan_table`)."""
        self.connection.register(_ROWS, self._scan_table())
        try:
            answer: pa.Table = self.connection.sql(sql).to_arrow_table()
        finally:
            self.connection.unregister(_ROWS)
        return answer


class _TypeRows:
    """The rows of one activity type in a block, typed into its table's layout."""

    def __init__(self, block: _Block, begin: int, count: int, layout: TableLayout) -> None:
        self.block = block
        self.begin = begin
        self.count = count
        self.layout = layout
        self.columns: Dict[str, TypedColumn] = {}

    def table(self, names: List[str], values: Any) -> pa.Table:
        """This type's rows in its layout, with the attributes `names` (those its rows carry), whose
        values are the JSON texts `values` (per row, one per name)."""
        columns = [self.layout.attribute_column(name) for name in names]
        # Names that normalize to one column fill it together, the later name's value winning as in REST paging.
        for index in reversed(range(len(names))):
            data_type = self.layout.column_types[columns[index]]
            typed = _JsonColumn(pc.list_element(values, index)).typed(data_type)
            self.columns[columns[index]] = _coalesced(self.columns.get(columns[index]), typed)
        return self.layout.table(self._column)

    def _column(self, column: str, data_type: str) -> TypedColumn:
        if column in self.columns:
            return self.columns[column]
        if column in BASE_COLUMNS:
            typed, variants = self.block.base[column]
            return self._slice(typed), _some(self._slice(variants) if variants is not None else None)
        return typed_text_column(pa.nulls(self.count, pa.string()), data_type)

    def _slice(self, array: Any) -> Any:
        return array.slice(self.begin, self.count)


class _JsonColumn:
    """One attribute's values as JSON text (`"a \\"b\\""`, `12`, `true`, `null`), typed as REST types them."""

    def __init__(self, json: Any) -> None:
        self.json = json
        self.first = pc.utf8_slice_codeunits(json, 0, 1)
        self.kinds = {_KIND_OF_FIRST.get(first, "other") for first in pc.unique(self.first).to_pylist() if first}
        if "null" in self.kinds:
            self.json = pc.if_else(pc.equal(self.first, pa.scalar("n")), pa.scalar(None, pa.string()), json)
            self.kinds.remove("null")

    def typed(self, data_type: str) -> TypedColumn:
        """`typed_column` of the values: their text typed as a whole column where their kinds allow it
        and it parses, else the values themselves, one by one (an object, a fraction where an integer
        is due, a number that does not fit, ...)."""
        if self.kinds <= {"string"} or (data_type == "bool" and self.kinds <= {"string", "boolean"}):
            # typed_column makes of these values what it makes of their text, value by value included.
            return typed_text_column(self._text(), data_type)
        if self.kinds <= _PLAIN_KINDS[data_type]:
            typed = cast_text(self._text(), data_type)
            if typed is not None:
                return typed, None
        return typed_column([None if value is None else orjson.loads(value) for value in self.json.to_pylist()],
                            data_type)

    def _text(self) -> Any:
        """Strings without their quotes and escapes; numbers and booleans as written."""
        if "string" not in self.kinds:
            return self.json
        text = pc.utf8_slice_codeunits(self.json, 1, -1)
        if self.kinds != {"string"}:
            text = pc.if_else(pc.equal(self.first, pa.scalar('"')), text, self.json)
        escaped = pc.match_substring(text, "\\")
        if not pc.any(escaped).as_py():
            return text
        unescaped = [orjson.loads(value) for value in self.json.filter(escaped).to_pylist()]
        return pc.replace_with_mask(text, escaped, pa.array(unescaped, pa.string()))


_KIND_OF_FIRST = {
    '"': "string", "t": "boolean", "f": "boolean", "n": "null", **dict.fromkeys("-0123456789", "number"),
}
_PLAIN_KINDS: Dict[str, FrozenSet[str]] = {
    "text": frozenset({"string"}),
    "bigint": frozenset({"string", "number"}),
    "double": frozenset({"string", "number"}),
    "bool": frozenset({"string", "boolean"}),
    "date": frozenset({"string"}),
    "timestamp": frozenset({"string"}),
}
"""Kinds of JSON values whose text, when it casts as a whole column, gives what `typed_column` makes
of the values themselves: Arrow's first step takes such values as they are, its second casts their
text (a fraction where an integer is due does not cast, and goes value by value as in REST paging)."""


def _coalesced(later: Optional[TypedColumn], earlier: TypedColumn) -> TypedColumn:
    if later is None:
        return earlier
    variants = [v for v in (later[1], earlier[1]) if v is not None]
    return pc.coalesce(later[0], earlier[0]), (pc.coalesce(*variants) if variants else None)


def _some(variants: Optional[Any]) -> Optional[Any]:
    """The variants, or None when none of the rows has one (REST adds the column only then)."""
    return variants if variants is not None and variants.null_count < len(variants) else None


def _pointer(name: str) -> str:
    """The JSON pointer of a top-level key (RFC 6901: `~` and `/` escaped)."""
    return "/" + name.replace("~", "~0").replace("/", "~1")


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
