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
from functools import cached_property
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import dlt
from dlt.common.typing import TDataItem

from marketo_source import settings
from marketo_source.catalog import Catalog
from marketo_source.client import MarketoClient
from marketo_source.options import ReadOptions
from marketo_source.schema import (
    KEY_COLUMN,
    FieldChangeRows,
    Rejects,
    Rows,
    TableLayout,
    TableRows,
    activity_table_name,
    rejects_to_arrow,
    type_attributes,
)
from marketo_source.budget import RunBudget, StopReason
from marketo_source.late_commits import adopt_cursor_without_recheck, latest_restart
from marketo_source.run_report import REPORT_COLUMNS, RunProgress, StreamReport
from marketo_source.schema import parse_timestamp
from marketo_source.streams import Chain, Cursor, PageScheduler, chains_for_cursors, retention_gap

logger = logging.getLogger("marketo_source")

Records = List[Dict[str, Any]]
_PAGE_SIZE = {"batchSize": str(settings.MAX_BATCH_SIZE)}


class StreamTables:
    """Which tables a stream's records go to, and how a table's records become rows."""

    def route(self, records: Records) -> Iterable[Tuple[str, Records]]:
        """(table name, records) for each table the records fill."""
        raise NotImplementedError

    def new_rows(self, table_name: str) -> Rows:
        """An empty batch of rows of `table_name`, to gather records into."""
        raise NotImplementedError

FIELD_CHANGES_TABLE = "lead_field_changes"
_TABLE_HINTS = {
    name: dlt.mark.make_hints(table_name=name, **hints)
    for name, hints in {
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
    }.items()
}
"""Tables that do not share their resource's key or write disposition."""


@dataclass
class MarketoRun:
    """What the resources of one source instance share: one client, catalog, scheduler and budget."""

    client: MarketoClient
    catalog: Catalog
    options: ReadOptions
    scheduler: PageScheduler
    budget: RunBudget
    progress: RunProgress

    def refresh_daily_usage(self) -> None:
        """Keeps the count behind `daily_call_limit` current, if one is set."""
        if self.budget.daily is not None:
            self.budget.daily.refresh_if_due()

    def saved_cursor(self, saved: Dict[str, Any], key: str, last_run: Dict[str, Any]) -> Cursor:
        """The cursor kept under `key` in `saved` (a new one if none), ready for this run.

        A cursor saved by a release that did not read late commits again gets the position to
        read again from, taken from its stream's last run.
        """
        cursor: Cursor = saved.setdefault(key, {})
        window = self.options.late_commit_window
        if window is not None:
            started = last_run.get("started_at")
            adopt_cursor_without_recheck(cursor, parse_timestamp(started) if started else None, window)
        return cursor

    @cached_property
    def latest_restart(self) -> Optional[datetime]:
        """The latest point a chain restarts from to read late commits again this run (see
        `late_commits.latest_restart`), from the newest activity any stream had read when the
        first stream started: one value for the whole run, so that its chains share a paging token."""
        window = self.options.late_commit_window
        newest = [
            parse_timestamp(resource["last_run"]["newest_activity_at"])
            for resource in dlt.current.source_state().get("resources", {}).values()
            if (resource.get("last_run") or {}).get("newest_activity_at")
        ]
        return latest_restart(max(newest, default=None), window) if window else None

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
    rows = _activity_type_rows(run.catalog.activity_types)
    yield from _catalog_tables(run, StreamReport("activity_types", settings.ACTIVITY_TYPES_PATH), rows)


def custom_activity_types(run: MarketoRun) -> Iterator[TDataItem]:
    """Rows of `custom_activity_types` and `custom_activity_type_attributes`."""
    rows = _custom_type_rows(run.catalog.custom_activity_types)
    yield from _catalog_tables(run, StreamReport("custom_activity_types", settings.CUSTOM_ACTIVITY_TYPES_PATH), rows)


def _catalog_tables(run: MarketoRun, report: StreamReport, tables: Dict[str, Records]) -> Iterator[TDataItem]:
    # The catalogs merge on their keys, so a run that cannot read them (stopped by the wrapper in
    # __init__) leaves their tables as they are.
    for table_name, rows in tables.items():
        report.records += len(rows)
        yield to_table(rows, table_name)
    yield from finish_stream(run, report, None)


def _activity_type_rows(activity_types: Dict[int, Dict[str, Any]]) -> Dict[str, Records]:
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


def _custom_type_rows(custom_types: List[Dict[str, Any]]) -> Dict[str, Records]:
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


def activities(run: MarketoRun) -> Iterator[TDataItem]:
    """Every activity of the chosen types, one table per type."""
    type_ids = run.catalog.activity_type_ids_to_read(run.options.activity_type_ids)
    state = dlt.current.resource_state()
    chains, gaps = [], []
    for scope, filters in run.scopes():
        saved = state.setdefault(scope, {})
        cursors = {str(t): run.saved_cursor(saved, str(t), state.get("last_run", {})) for t in type_ids}
        gaps += [
            gap
            for t in type_ids
            if (gap := _retention_gap(run, "activities", scope, cursors[str(t)], [t])) is not None
        ]
        chains += chains_for_cursors(
            settings.ACTIVITIES_PATH,
            cursors,
            {**filters, **_PAGE_SIZE},
            run.options.start,
            run.options.lookback,
            run.options.late_commit_window is not None,
            run.latest_restart,
            group_param="activityTypeIds",
            heavy={str(t) for t in type_ids if t in settings.HIGH_VOLUME_TYPE_IDS},
        )
    yield from _read_stream(run, "activities", chains, _ActivityTables(run.catalog.activity_types), gaps)


def lead_changes(run: MarketoRun) -> Iterator[TDataItem]:
    """New Lead and Change Data Value activities, and one row per changed field."""
    fields = ",".join(run.catalog.lead_change_fields_to_read(run.options.lead_change_fields))
    chains, gaps = _one_cursor_per_scope(
        run, "lead_changes", settings.LEAD_CHANGES_PATH, run.scopes(), {"fields": fields}, settings.LEAD_CHANGE_TYPE_IDS
    )
    known = run.catalog.activity_types
    layout = TableLayout(
        attribute for type_id in settings.LEAD_CHANGE_TYPE_IDS for attribute in type_attributes(known.get(type_id, {}))
    )
    yield from _read_stream(run, "lead_changes", chains, _LeadChangeTables(layout), gaps)


def deleted_leads(run: MarketoRun) -> Iterator[TDataItem]:
    """Delete Lead activities. Marketo keeps them 14 days: run at least that often."""
    # Get Deleted Leads takes no lead or list filter: one position for every run.
    chains, gaps = _one_cursor_per_scope(
        run, "deleted_leads", settings.DELETED_LEADS_PATH, [("all", {})], {}, [settings.DELETE_LEAD_TYPE_ID]
    )
    metadata = run.catalog.activity_types.get(settings.DELETE_LEAD_TYPE_ID, {})
    tables = _OneTable("deleted_leads", TableLayout(type_attributes(metadata)))
    yield from _read_stream(run, "deleted_leads", chains, tables, gaps)


def _one_cursor_per_scope(
    run: MarketoRun,
    stream: str,
    path: str,
    scopes: Sequence[Tuple[str, Dict[str, str]]],
    params: Dict[str, str],
    type_ids: Sequence[int],
) -> Tuple[List[Chain], List[Dict[str, Any]]]:
    """Chains and retention gaps of a stream that keeps one cursor per filter scope."""
    state = dlt.current.resource_state()
    chains: List[Chain] = []
    gaps = []
    for scope, filters in scopes:
        cursor = run.saved_cursor(state, scope, state.get("last_run", {}))
        gap = _retention_gap(run, stream, scope, cursor, type_ids)
        gaps += [gap] if gap else []
        chains += chains_for_cursors(
            path,
            {scope: cursor},
            {**filters, **params, **_PAGE_SIZE},
            run.options.start,
            run.options.lookback,
            run.options.late_commit_window is not None,
            run.latest_restart,
        )
    return chains, gaps


class _OneTable(StreamTables):
    """Every record of the stream goes to one table."""

    def __init__(self, table_name: str, layout: TableLayout) -> None:
        self._table_name = table_name
        self._layout = layout

    def route(self, records: Records) -> Iterable[Tuple[str, Records]]:
        yield self._table_name, records

    def new_rows(self, table_name: str) -> Rows:
        return TableRows(self._layout)


class _LeadChangeTables(StreamTables):
    """Each lead change goes to `lead_changes`, and each of its changed fields to `lead_field_changes`."""

    def __init__(self, layout: TableLayout) -> None:
        self._layout = layout

    def route(self, records: Records) -> Iterable[Tuple[str, Records]]:
        yield "lead_changes", records
        yield FIELD_CHANGES_TABLE, records

    def new_rows(self, table_name: str) -> Rows:
        return FieldChangeRows() if table_name == FIELD_CHANGES_TABLE else TableRows(self._layout)


class _ActivityTables(StreamTables):
    """Each activity goes to its type's table."""

    def __init__(self, known_types: Dict[int, Dict[str, Any]]) -> None:
        self._known = known_types
        self._names = _unique_table_names(known_types)
        self._layouts: Dict[str, TableLayout] = {}

    def route(self, records: Records) -> Iterable[Tuple[str, Records]]:
        by_table: Dict[str, Records] = defaultdict(list)
        for record in records:
            by_table[self._table_of(record.get("activityTypeId"))].append(record)
        return by_table.items()

    def new_rows(self, table_name: str) -> Rows:
        return TableRows(self._layouts[table_name])

    def _table_of(self, type_id: Any) -> str:
        # A type missing from the metadata still lands, in a table named after its id.
        name = self._names.get(type_id) or activity_table_name(f"type {type_id}")
        if name not in self._layouts:
            self._layouts[name] = TableLayout(type_attributes(self._known.get(type_id, {})))
        return name


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
    chains: Sequence[Chain],
    tables: StreamTables,
    retention_gaps: List[Dict[str, Any]],
) -> Iterator[TDataItem]:
    if retention_gaps:
        yield to_table(retention_gaps, settings.RETENTION_GAPS_TABLE)
    report = StreamReport(
        stream,
        endpoint=chains[0].path if chains else None,
        cursors=list({id(cursor): cursor for chain in chains for cursor in chain.owners}.values()),
        default_start=run.options.start,
        retention_gaps=len(retention_gaps),
    )
    buffer = _RowBuffer(settings.FLUSH_ROWS, tables)
    run.refresh_daily_usage()
    stream_pages = run.scheduler.pages(chains)
    # Handing control back to dlt after each page lets it start and drain the other streams,
    # so that their calls run alongside this one's.
    yield []
    for page in stream_pages:
        if page is None:
            yield []
            continue
        report.pages += 1
        report.records += len(page.records)
        if page.reread is not None:
            report.reread_calls += 1
            report.rows_reread += page.reread
        run.progress.page(stream, len(page.records))
        run.refresh_daily_usage()
        keyed, rejects = _split_unkeyed(page.records)
        for table_name, table_records in tables.route(keyed):
            for full_table, full_rows in buffer.add(table_name, table_records):
                yield from _rows(report, full_table, full_rows)
        yield from _set_aside(report, rejects)
        yield []
    for table_name, rows in buffer.drain():
        yield from _rows(report, table_name, rows)
    report.time_slices = stream_pages.slices_opened
    yield from finish_stream(run, report, stream_pages.stopped)


def finish_stream(run: MarketoRun, report: StreamReport, stopped: Optional[StopReason]) -> Iterator[TDataItem]:
    """The stream's row of `marketo_run_reports`, after all its data."""
    yield to_table([report.finish(run.client, run.budget, stopped)], settings.RUN_REPORTS_TABLE)


def _rows(report: StreamReport, table_name: str, rows: Rows) -> Iterator[TDataItem]:
    table, rejects = rows.to_arrow()
    yield to_table(table, table_name)
    yield from _set_aside(report, rejects)


def _set_aside(report: StreamReport, rejects: Rejects) -> Iterator[TDataItem]:
    if not rejects:
        return
    report.set_aside += len(rejects)
    logger.warning("%s: %d records set aside in %s", report.stream, len(rejects), settings.REJECTED_TABLE)
    yield to_table(rejects_to_arrow(report.stream, rejects), settings.REJECTED_TABLE)


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


class _RowBuffer:
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
    """Sends rows to a table, with that table's own key and write disposition where it has them."""
    if table_name in _TABLE_HINTS:
        return dlt.mark.with_hints(item, _TABLE_HINTS[table_name], create_table_variant=True)
    return dlt.mark.with_table_name(item, table_name)
