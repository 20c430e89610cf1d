"""What each resource reads and how its pages become tables.

Every stream follows the same path: cursors from dlt state grouped into chains, pages read
concurrently, records flattened into Arrow tables per destination table and handed to dlt in
batches. When the daily quota runs out, a run bound is reached or a failure outlasts its
retries, a stream stops cleanly: what was read is loaded and the state points just after the
last page read.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import dlt
import pyarrow as pa
from dlt.common.typing import TDataItem

from marketo_source import settings
from marketo_source.catalog import Catalog
from marketo_source.client import MarketoClient
from marketo_source.options import ReadOptions
from marketo_source.schema import (
    KEY_COLUMN,
    Rejects,
    TableLayout,
    activity_table_name,
    field_changes_to_arrow,
    rejects_to_arrow,
    timestamp_or_none,
    type_attributes,
)
from marketo_source.streams import (
    Cursor,
    PageReader,
    PagingTokens,
    RunBudget,
    StopReason,
    chains_for_cursors,
    retention_gap,
)

logger = logging.getLogger("marketo_source")

TablesOfPage = Callable[[List[Dict[str, Any]], Rejects], Iterable[Tuple[str, pa.Table]]]
"""Turns a page's records into (table name, rows) and adds what it sets aside to the rejects."""

FIELD_CHANGES_TABLE = "lead_field_changes"
REJECTED_TABLE = "marketo_rejected_records"
RETENTION_GAPS_TABLE = "marketo_retention_gaps"
_TABLE_HINTS = {
    name: dlt.mark.make_hints(table_name=name, **hints)
    for name, hints in {
        "activity_type_attributes": dict(primary_key=["activity_type_id", "name"]),
        "custom_activity_type_attributes": dict(primary_key=["activity_type_api_name", "api_name"]),
        FIELD_CHANGES_TABLE: dict(primary_key=["marketo_guid", "field_id"]),
        REJECTED_TABLE: dict(write_disposition="append", primary_key=[]),
        RETENTION_GAPS_TABLE: dict(write_disposition="append", primary_key=[]),
    }.items()
}
"""Tables that do not share their resource's key or write disposition."""


@dataclass
class MarketoRun:
    """What the resources of one source instance share: one client, one catalog, one token cache."""

    client: MarketoClient
    catalog: Catalog
    tokens: PagingTokens
    options: ReadOptions
    max_concurrency: int
    budget: RunBudget

    def scopes(self) -> List[Tuple[str, Dict[str, str]]]:
        """(state key, filter parameters) per filter chunk: more than 30 lead ids take several."""
        if self.options.list_id is not None:
            return [(self.options.scope, {"listId": str(self.options.list_id)})]
        lead_ids = self.options.lead_ids
        if not lead_ids:
            return [(self.options.scope, {})]
        size = settings.MAX_LEAD_IDS_PER_CALL
        chunks = [lead_ids[i : i + size] for i in range(0, len(lead_ids), size)]
        return [(f"{self.options.scope}:{n}", {"leadIds": ",".join(map(str, c))}) for n, c in enumerate(chunks)]


def activity_types(run: MarketoRun) -> Iterator[TDataItem]:
    """Rows of `activity_types` and `activity_type_attributes`."""
    types, attributes = [], []
    for activity_type in run.catalog.activity_types.values():
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
    yield to_table(types, "activity_types")
    yield to_table(attributes, "activity_type_attributes")


def custom_activity_types(run: MarketoRun) -> Iterator[TDataItem]:
    """Rows of `custom_activity_types` and `custom_activity_type_attributes`."""
    types, attributes = [], []
    for custom_type in run.catalog.custom_activity_types:
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
                "created_at": timestamp_or_none(custom_type.get("createdAt")),
                "updated_at": timestamp_or_none(custom_type.get("updatedAt")),
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
    yield to_table(types, "custom_activity_types")
    yield to_table(attributes, "custom_activity_type_attributes")


def activities(run: MarketoRun) -> Iterator[TDataItem]:
    """Every activity of the chosen types, one table per type."""
    type_ids = run.catalog.activity_type_ids_to_read(run.options.activity_type_ids)
    state = dlt.current.resource_state()
    chains, gaps = [], []
    for scope, filters in run.scopes():
        saved = state.setdefault(scope, {})
        cursors = {str(t): saved.setdefault(str(t), {}) for t in type_ids}
        gaps += [
            gap
            for t in type_ids
            if (gap := _retention_gap(run, "activities", scope, cursors[str(t)], [t])) is not None
        ]
        chains += chains_for_cursors(
            settings.ACTIVITIES_PATH,
            cursors,
            {**filters, "batchSize": str(settings.MAX_BATCH_SIZE)},
            run.options.start,
            run.options.lookback,
            group_param="activityTypeIds",
        )
    tables = _ActivityTables(run.catalog.activity_types)
    yield from _read_stream(run, "activities", chains, tables.of_page, gaps)


def lead_changes(run: MarketoRun) -> Iterator[TDataItem]:
    """New Lead and Change Data Value activities, and one row per changed field."""
    fields = ",".join(run.catalog.lead_change_fields_to_read(run.options.lead_change_fields))
    state = dlt.current.resource_state()
    chains, gaps = [], []
    for scope, filters in run.scopes():
        params = {**filters, "fields": fields, "batchSize": str(settings.MAX_BATCH_SIZE)}
        cursors: Dict[str, Cursor] = {scope: state.setdefault(scope, {})}
        gap = _retention_gap(run, "lead_changes", scope, cursors[scope], settings.LEAD_CHANGE_TYPE_IDS)
        gaps += [gap] if gap else []
        chains += chains_for_cursors(
            settings.LEAD_CHANGES_PATH, cursors, params, run.options.start, run.options.lookback
        )
    known = run.catalog.activity_types
    layout = TableLayout(
        attribute for type_id in settings.LEAD_CHANGE_TYPE_IDS for attribute in type_attributes(known.get(type_id, {}))
    )

    def of_page(records: List[Dict[str, Any]], rejects: Rejects) -> Iterable[Tuple[str, pa.Table]]:
        yield "lead_changes", layout.to_arrow(records)
        field_changes, unkeyed = field_changes_to_arrow(records)
        rejects += unkeyed
        yield FIELD_CHANGES_TABLE, field_changes

    yield from _read_stream(run, "lead_changes", chains, of_page, gaps)


def deleted_leads(run: MarketoRun) -> Iterator[TDataItem]:
    """Delete Lead activities. Marketo keeps them 14 days: run at least that often."""
    state = dlt.current.resource_state()
    cursors: Dict[str, Cursor] = {"all": state.setdefault("all", {})}
    gap = _retention_gap(run, "deleted_leads", "all", cursors["all"], [settings.DELETE_LEAD_TYPE_ID])
    params = {"batchSize": str(settings.MAX_BATCH_SIZE)}
    chains = chains_for_cursors(
        settings.DELETED_LEADS_PATH, cursors, params, run.options.start, run.options.lookback
    )
    metadata = run.catalog.activity_types.get(settings.DELETE_LEAD_TYPE_ID, {})
    layout = TableLayout(type_attributes(metadata))
    yield from _read_stream(
        run, "deleted_leads", chains, lambda records, _: [("deleted_leads", layout.to_arrow(records))], [gap] if gap else []
    )


class _ActivityTables:
    """Splits an activities page by type into that type's table."""

    def __init__(self, known_types: Dict[int, Dict[str, Any]]) -> None:
        self._known = known_types
        self._layouts: Dict[Any, Tuple[str, TableLayout]] = {}
        self._names = _unique_table_names(known_types)

    def of_page(self, records: List[Dict[str, Any]], rejects: Rejects) -> Iterable[Tuple[str, pa.Table]]:
        by_type: Dict[Any, List[Dict[str, Any]]] = defaultdict(list)
        for record in records:
            by_type[record.get("activityTypeId")].append(record)
        for type_id, typed_records in by_type.items():
            table_name, layout = self._layout(type_id)
            yield table_name, layout.to_arrow(typed_records)

    def _layout(self, type_id: Any) -> Tuple[str, TableLayout]:
        if type_id not in self._layouts:
            # A type missing from the metadata still lands, in a table named after its id.
            name = self._names.get(type_id) or activity_table_name(f"type {type_id}")
            self._layouts[type_id] = (name, TableLayout(type_attributes(self._known.get(type_id, {}))))
        return self._layouts[type_id]


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


def _retention_gap(
    run: MarketoRun, stream: str, scope: str, cursor: Cursor, type_ids: Sequence[int]
) -> Optional[Dict[str, Any]]:
    """A row for `marketo_retention_gaps` if Marketo may have purged data this cursor has not read."""
    kept = [settings.RETENTION_DAYS.get(t, settings.DEFAULT_RETENTION_DAYS) for t in type_ids]
    retention_days = min((days for days in kept if days is not None), default=None)
    now = datetime.now(timezone.utc)
    window = retention_gap(cursor, run.options.start, retention_days, now)
    if window is None:
        return None
    names = [run.catalog.activity_types.get(t, {}).get("name", str(t)) for t in type_ids]
    logger.warning(
        "RETENTION GAP in %s (%s): the saved position (%s) is older than the %d days Marketo keeps "
        "%s; activities from %s to %s may be lost for good. Run the pipeline more often than that.",
        stream, scope, window[0].isoformat(), retention_days, ", ".join(names),
        window[0].isoformat(), window[1].isoformat(),
    )
    return {
        "detected_at": now,
        "stream": stream,
        "scope": scope,
        "activity_type_ids": ",".join(map(str, type_ids)),
        "activity_type_names": ", ".join(names),
        "retention_days": retention_days,
        "may_be_lost_from": window[0],
        "may_be_lost_until": window[1],
    }


def _read_stream(
    run: MarketoRun,
    stream: str,
    chains: Sequence[Any],
    tables_of_page: TablesOfPage,
    retention_gaps: List[Dict[str, Any]],
) -> Iterator[TDataItem]:
    if retention_gaps:
        yield to_table(retention_gaps, RETENTION_GAPS_TABLE)
    buffer = _TableBuffer()
    pages = records = 0
    reader = PageReader(run.client, run.tokens, chains, run.max_concurrency, run.budget)
    for page in reader:
        pages += 1
        records += len(page.records)
        keyed, rejects = _split_unkeyed(page.records)
        if keyed:
            for table_name, table in tables_of_page(keyed, rejects):
                yield from buffer.add(table_name, table)
        if rejects:
            logger.warning("%s: %d records set aside in %s", stream, len(rejects), REJECTED_TABLE)
            yield from buffer.add(REJECTED_TABLE, rejects_to_arrow(stream, rejects))
    yield from buffer.flush()
    record_outcome(run, stream, pages, records, reader.stopped)


def record_outcome(run: MarketoRun, stream: str, pages: int, records: int, stopped: Optional[StopReason]) -> None:
    """Keeps what a stream did in its state (`last_run`), and warns when it stopped early."""
    if stopped is not None:
        logger.warning(
            "%s stopped early: %s. Everything read so far is loaded and the next run continues from there.",
            stream, stopped.message,
        )
    dlt.current.resource_state()["last_run"] = {
        "pages": pages,
        "records": records,
        "stopped": None if stopped is None else {"kind": stopped.kind, "message": stopped.message},
    }
    dlt.current.source_state()["last_run_calls"] = dict(run.client.calls)


def _split_unkeyed(records: List[Dict[str, Any]]) -> Tuple[List[Dict[str, Any]], Rejects]:
    keyed: List[Dict[str, Any]] = []
    rejects: Rejects = []
    for record in records:
        guid = record.get("marketoGUID")
        if isinstance(guid, str) and guid:
            keyed.append(record)
        else:
            rejects.append((record, f"no {KEY_COLUMN} (marketoGUID)"))
    return keyed, rejects


class _TableBuffer:
    """Gathers small per-page tables into larger ones: fewer, bigger files for dlt to load."""

    def __init__(self) -> None:
        self._tables: Dict[str, List[pa.Table]] = defaultdict(list)
        self._rows: Dict[str, int] = defaultdict(int)

    def add(self, table_name: str, table: pa.Table) -> Iterator[TDataItem]:
        if table.num_rows == 0:
            return
        self._tables[table_name].append(table)
        self._rows[table_name] += table.num_rows
        if self._rows[table_name] >= settings.FLUSH_ROWS:
            yield self._take(table_name)

    def flush(self) -> Iterator[TDataItem]:
        for table_name in list(self._tables):
            yield self._take(table_name)

    def _take(self, table_name: str) -> TDataItem:
        table = pa.concat_tables(self._tables.pop(table_name), promote_options="default")
        self._rows.pop(table_name)
        return to_table(table, table_name)


def to_table(item: Any, table_name: str) -> TDataItem:
    """Sends rows to a table, with that table's own key and write disposition where it has them."""
    if table_name in _TABLE_HINTS:
        return dlt.mark.with_hints(item, _TABLE_HINTS[table_name], create_table_variant=True)
    return dlt.mark.with_table_name(item, table_name)
