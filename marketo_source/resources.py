"""What each resource reads: the two catalogs, and the three streams of activities.

Every stream follows the same path: its cursors from dlt state (`state`) grouped into chains
(`chains`), pages read concurrently (`scheduler`) beside what another reader of history hands
over (`history`), records routed to their tables (`tables`) and handed to dlt in batches. When
the daily quota runs out, a run bound is reached or a failure outlasts its retries, a stream
stops cleanly: what was read is loaded and the state points just after the last page read.
"""

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple, Union

import dlt
from dlt.common.typing import TDataItem

from marketo_source import settings
from marketo_source.budget import RunBudget, StopReason
from marketo_source.catalog import Catalog
from marketo_source.chains import StartRules, chains_for_cursors
from marketo_source.client import MarketoClient
from marketo_source.errors import MarketoConfigurationError
from marketo_source.history import HistoryBatch, HistoryReader
from marketo_source.late_commits import latest_restart, recheck_floor
from marketo_source.options import ReadOptions
from marketo_source.paging import Chain, Page
from marketo_source.retention import retention_gap_row
from marketo_source.run_report import RunProgress, StreamReport
from marketo_source.scheduler import PageScheduler
from marketo_source.schema import Rejects, Rows, TableLayout, rejects_to_arrow, type_attributes
from marketo_source.state import (
    Cursor,
    CursorId,
    HistoryClaim,
    StreamState,
    newest_read_anywhere,
    record_run_calls,
)
from marketo_source.tables import (
    ActivityTables,
    LeadChangeTables,
    OneTable,
    Records,
    RowBuffer,
    StreamTables,
    activity_type_rows,
    custom_type_rows,
    split_unkeyed,
    to_table,
)

logger = logging.getLogger("marketo_source")

_PAGE_SIZE = {"batchSize": str(settings.MAX_BATCH_SIZE)}
Scopes = Sequence[Tuple[str, Dict[str, str]]]


@dataclass
class MarketoRun:
    """What the resources of one source instance share: one client, catalog, scheduler and budget."""

    client: MarketoClient
    catalog: Catalog
    options: ReadOptions
    scheduler: PageScheduler
    budget: RunBudget
    progress: RunProgress
    history: Optional[HistoryReader] = None
    """Another reader of the history of scopes REST paging has not begun (see `history`)."""
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    open_streams: Set[str] = field(default_factory=set)
    """Streams of this run that have begun and not ended."""
    reports: List[Dict[str, Any]] = field(default_factory=list)
    """The rows of `marketo_run_reports` of the streams that ended."""
    gaps: List[Dict[str, Any]] = field(default_factory=list)
    """The rows of `marketo_retention_gaps` the streams found."""

    def refresh_daily_usage(self) -> None:
        """Keeps the count behind `daily_call_limit` current, if one is set."""
        if self.budget.daily is not None:
            self.budget.daily.refresh_if_due(self.client)

    @cached_property
    def start_rules(self) -> StartRules:
        """Where this run's chains start: one value for every stream, so that they share paging tokens.

        Late commits are read again no later than the window before the newest activity any
        stream had read when the first stream started (see `late_commits.latest_restart`).
        """
        window = self.options.late_commit_window
        newest = newest_read_anywhere(dlt.current.source_state())
        latest = latest_restart(newest, window) if window is not None else None
        return StartRules(self.options.start, self.options.lookback, window is not None, latest)

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
    rows = activity_type_rows(run.catalog.activity_types)
    yield from _catalog_tables(run, StreamReport("activity_types", settings.ACTIVITY_TYPES_PATH), rows)


def custom_activity_types(run: MarketoRun) -> Iterator[TDataItem]:
    """Rows of `custom_activity_types` and `custom_activity_type_attributes`."""
    rows = custom_type_rows(run.catalog.custom_activity_types)
    yield from _catalog_tables(run, StreamReport("custom_activity_types", settings.CUSTOM_ACTIVITY_TYPES_PATH), rows)


def _catalog_tables(run: MarketoRun, report: StreamReport, tables: Dict[str, Records]) -> Iterator[TDataItem]:
    # The catalogs merge on their keys, so a run that cannot read them (stopped by the wrapper in
    # __init__) leaves their tables as they are. Their report counts the types (the first table),
    # not their attributes.
    report.records = len(next(iter(tables.values())))
    for table_name, rows in tables.items():
        yield to_table(rows, table_name)
    finish_stream(run, report, None)


def activities(run: MarketoRun) -> Iterator[TDataItem]:
    """Every activity of the chosen types, one table per type."""
    type_ids = run.catalog.activity_type_ids_to_read(run.options.activity_type_ids)
    state = StreamState(dlt.current.resource_state(), per_type=True)
    stream = _Stream(run, "activities", settings.ACTIVITIES_PATH, state)
    stream.plan(
        run.scopes(), {}, {str(t): [t] for t in type_ids},
        group_param="activityTypeIds", heavy={str(t) for t in type_ids if t in settings.HIGH_VOLUME_TYPE_IDS},
    )
    yield from stream.read(ActivityTables(run.catalog.activity_types))


def lead_changes(run: MarketoRun) -> Iterator[TDataItem]:
    """New Lead and Change Data Value activities, and one row per changed field."""
    fields = ",".join(run.catalog.lead_change_fields_to_read(run.options.lead_change_fields))
    state = StreamState(dlt.current.resource_state(), per_type=False)
    stream = _Stream(run, "lead_changes", settings.LEAD_CHANGES_PATH, state)
    stream.plan(run.scopes(), {"fields": fields}, {None: settings.LEAD_CHANGE_TYPE_IDS})
    known = run.catalog.activity_types
    layout = TableLayout(
        attribute for type_id in settings.LEAD_CHANGE_TYPE_IDS for attribute in type_attributes(known.get(type_id, {}))
    )
    yield from stream.read(LeadChangeTables(layout))


def deleted_leads(run: MarketoRun) -> Iterator[TDataItem]:
    """Delete Lead activities. Marketo keeps them 14 days: run at least that often."""
    state = StreamState(dlt.current.resource_state(), per_type=False)
    stream = _Stream(run, "deleted_leads", settings.DELETED_LEADS_PATH, state)
    # Get Deleted Leads takes no lead or list filter: one position for every run.
    stream.plan([("all", {})], {}, {None: [settings.DELETE_LEAD_TYPE_ID]})
    metadata = run.catalog.activity_types.get(settings.DELETE_LEAD_TYPE_ID, {})
    yield from stream.read(OneTable("deleted_leads", TableLayout(type_attributes(metadata))))


class _Stream:
    """One stream's read of a run: its chains, its history claims, its report."""

    def __init__(self, run: MarketoRun, name: str, path: str, state: StreamState) -> None:
        self.run = run
        self.name = name
        self.path = path
        self.state = state
        self.cursor_ids: List[CursorId] = []
        self.chains: List[Chain] = []
        self.claims: Dict[str, HistoryClaim] = {}
        self.gaps: List[Dict[str, Any]] = []

    def plan(
        self,
        scopes: Scopes,
        params: Dict[str, str],
        types_by_key: Mapping[Optional[str], Sequence[int]],
        group_param: Optional[str] = None,
        heavy: Any = frozenset(),
    ) -> None:
        """Decides what the stream reads this run, scope by scope.

        Args:
            scopes: (state key, filters) per filter scope.
            params: Parameters every call sends.
            types_by_key: The activity types behind each cursor of a scope, by its key (an
                activity type id, or None for a stream with one cursor per scope).
            group_param: The parameter listing the grouped keys (`activityTypeIds`), if any.
            heavy: Keys expected to hold many records (see `chains.groups_of`).
        """
        now = datetime.now(timezone.utc)
        names = {type_id: t.get("name", str(type_id)) for type_id, t in self.run.catalog.activity_types.items()}
        for scope, filters in scopes:
            ids = {key: (scope, key) for key in types_by_key}
            self._prepare(scope, list(ids.values()))
            cursors = {key: (cursor_id, self.state.cursor(cursor_id)) for key, cursor_id in ids.items()}
            self.gaps += [
                row for key, types in types_by_key.items()
                if (row := retention_gap_row(
                    self.name, scope, cursors[key][1], types, self.run.options.start, names, now
                ))
            ]
            self.chains += chains_for_cursors(
                self.path,
                {key or scope: entry for key, entry in cursors.items()},
                {**filters, **params, **_PAGE_SIZE},
                self.run.start_rules,
                group_param=group_param,
                heavy=heavy,
            )
            self.cursor_ids += ids.values()
        self.claims = {scope: claim for scope, claim in self.state.claims().items() if not claim.done}
        readers = {claim.reader for claim in self.claims.values()}
        if readers and (self.run.history is None or readers != {self.run.history.name}):
            raise MarketoConfigurationError(
                f"{self.name}: history before {min(c.until for c in self.claims.values()).isoformat()} is being read "
                f"by {', '.join(sorted(readers))}, which this source was not given; REST paging reads only from "
                "there on. Run the source with that reader until it is done."
            )

    def _prepare(self, scope: str, cursor_ids: List[CursorId]) -> None:
        """Gives cursors saved before late commits were read again their point to read again from,
        and lets another reader of history claim a scope that REST paging has not begun."""
        window = self.run.options.late_commit_window
        if window is not None:
            started = self.state.last_run_started()
            self.state.change(cursor_ids, lambda cursor: cursor.with_recheck_point(started, window))
        history = self.run.history
        fresh = all(self.state.cursor(cursor_id) == Cursor() for cursor_id in cursor_ids)
        if history is None or not fresh or scope in self.state.claims():
            return
        latest_until = self.run.started_at if window is None else recheck_floor(self.run.started_at, window)
        until = history.claim(self.name, scope, self.run.options.start, latest_until)
        if until is not None:
            self.state.save_claim(scope, HistoryClaim(history.name, self.run.options.start, until))
            self.state.change(cursor_ids, lambda cursor: cursor.handed_over(until))

    def read(self, tables: StreamTables) -> Iterator[TDataItem]:
        """The stream's rows: its retention gaps, its records, and its row of `marketo_run_reports`."""
        run = self.run
        run.gaps += self.gaps
        report = StreamReport(
            self.name, endpoint=self.path, positions=self._positions, newest=self._newest,
            retention_gaps=len(self.gaps),
        )
        buffer = RowBuffer(settings.FLUSH_ROWS, tables)
        run.refresh_daily_usage()
        stream_pages = run.scheduler.pages(self.chains, self.state)
        # Handing control back to dlt after each page lets it start and drain the other streams,
        # so that their calls run alongside this one's. It is handed back with None, which dlt
        # skips: an empty list would be written to a table named after the resource, whose
        # counter in dlt's progress would stand at 0 beside the rows of the stream's real tables.
        yield None
        histories = [self._history(scope, claim) for scope, claim in self.claims.items()]
        paged: List[bool] = []
        for item in _alternate([_then_mark(stream_pages, paged), *histories]):
            if item is None:
                if paged and self.run.history is not None:  # only the other reader is left: not a busy loop
                    time.sleep(self.run.history.idle_s)
                yield None
                continue
            records_before = report.records
            records = self._account(report, item)
            run.progress.page(self.name, report.records - records_before)
            run.refresh_daily_usage()
            keyed, rejects = split_unkeyed(records)
            for table_name, table_records in tables.route(keyed):
                for full_table, full_rows in buffer.add(table_name, table_records):
                    yield from _rows(report, full_table, full_rows)
            yield from _set_aside(report, rejects)
            if isinstance(item, HistoryBatch):
                # Rows another reader hands over already in their tables go to dlt as they are.
                for table_name, table in item.tables.items():
                    yield to_table(table, table_name)
                yield from _set_aside(report, list(item.rejects))
            yield None
        for table_name, rows in buffer.drain():
            yield from _rows(report, table_name, rows)
        report.time_slices = stream_pages.slices_opened
        finish_stream(run, report, stream_pages.stopped, self.state)

    def _history(self, scope: str, claim: HistoryClaim) -> Iterator[Optional[HistoryBatch]]:
        """The claim's batches as the other reader hands them over; the claim is saved after each."""
        assert self.run.history is not None
        for batch in self.run.history.read(self.name, scope, claim):
            yield batch
            if batch is not None:
                claim = claim.read_on(batch.progress, batch.done)
                self.state.save_claim(scope, claim)

    def _account(self, report: StreamReport, item: Union[Page, HistoryBatch]) -> Records:
        report.records += len(item.records)
        if isinstance(item, HistoryBatch):
            report.records += sum(table.num_rows for table in item.tables.values()) + len(item.rejects)
        if isinstance(item, Page):
            report.pages += 1
            if item.reread is not None:
                report.reread_calls += 1
                report.rows_reread += item.reread
        return item.records

    def _positions(self) -> List[datetime]:
        start = self.run.options.start
        positions = [self.state.cursor(cursor_id).earliest(start) or start for cursor_id in self.cursor_ids]
        return positions + [claim.start for claim in self.state.claims().values() if not claim.done]

    def _newest(self) -> Optional[datetime]:
        newest = [n for cursor_id in self.cursor_ids if (n := self.state.cursor(cursor_id).latest.newest) is not None]
        return max(newest, default=None)


def _alternate(sources: List[Iterator[Any]]) -> Iterator[Any]:
    """Items of every source in turn, until all are exhausted; None once a round brought nothing."""
    live = list(sources)
    while live:
        brought = False
        for source in list(live):
            item = next(source, _EXHAUSTED)
            if item is _EXHAUSTED:
                live.remove(source)
            elif item is not None:
                brought = True
                yield item
        if live and not brought:
            yield None


_EXHAUSTED = object()


def _then_mark(source: Iterable[Any], ended: List[bool]) -> Iterator[Any]:
    """The items of `source`; once it is exhausted, `ended` holds True."""
    yield from source
    ended.append(True)


def finish_stream(
    run: MarketoRun, report: StreamReport, stopped: Optional[StopReason], state: Optional[StreamState] = None
) -> None:
    """Ends a stream: its report becomes its `last_run`, and its row of `marketo_run_reports`."""
    last_run = report.finish(run.client, run.budget, stopped)
    (state or StreamState(dlt.current.resource_state(), per_type=False)).record_last_run(last_run)
    record_run_calls(dlt.current.source_state(), run.client.calls)
    run.reports.append(last_run.row())
    run.open_streams.discard(report.stream)


def run_reports(run: MarketoRun) -> Iterator[TDataItem]:
    """Rows of `marketo_run_reports` and `marketo_retention_gaps`, once every stream of the run has ended.

    One resource writes both tables, so that they belong to no stream: resetting a stream (dlt's
    `drop` of its resource) keeps every stream's history of runs. dlt goes round every resource
    before it comes back to this one, so after its first item every stream of the run has begun.
    """
    yield None
    while run.open_streams:
        yield None
    if run.gaps:
        yield to_table(run.gaps, settings.RETENTION_GAPS_TABLE)
    if run.reports:
        yield to_table(run.reports, settings.RUN_REPORTS_TABLE)


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
