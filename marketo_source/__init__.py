"""A dlt source for Marketo Engage activities, lead changes and deleted leads.

    import dlt
    from marketo_source import marketo_source

    pipeline = dlt.pipeline(pipeline_name="marketo_pipeline", destination="duckdb", dataset_name="marketo")
    pipeline.run(marketo_source(start_date="2024-01-01T00:00:00Z"))

Settings come from the arguments, `.dlt/config.toml` and `.dlt/secrets.toml` under
`[sources.marketo]`, or environment variables such as `SOURCES__MARKETO__CLIENT_SECRET`.
"""

import logging
from typing import Any, Callable, Dict, Iterator, List, Optional

import dlt
from dlt.common.typing import TDataItem
from dlt.sources import DltResource

from marketo_source import resources, settings
from marketo_source.budget import RunBudget, daily_usage, stop_reason_for
from marketo_source.bulk.reader import BulkHistoryReader
from marketo_source.catalog import Catalog
from marketo_source.client import MarketoClient
from marketo_source.config import MarketoSourceConfiguration, signature_of
from marketo_source.crash_safety import discard_superseded_packages, duckdb_destination
from marketo_source.custom_activities import (
    ActivityLedger,
    CustomActivityPusher,
    PushSummary,
    marketo_custom_activities,
)
from marketo_source.custom_activity_types import (
    AttributeDefinition,
    CustomActivityTypeDefinition,
    CustomActivityTypes,
    ensure_custom_activity_type,
)
from marketo_source.errors import (
    MarketoAccessDenied,
    MarketoAuthError,
    MarketoConfigurationError,
    MarketoDailyLimitReached,
    MarketoError,
    MarketoListTooLarge,
    MarketoNotFound,
    MarketoQuotaExceeded,
    MarketoRequestError,
    MarketoTransientError,
    MarketoWriteUncertain,
    marketo_error_behind,
)
from marketo_source.history import HistoryReader
from marketo_source.options import parse_read_options, parse_time_slices
from marketo_source.paging import PagingTokens
from marketo_source.run_report import RateLimitNotices, RunProgress, StreamReport
from marketo_source.scheduler import PageScheduler

logger = logging.getLogger("marketo_source")


def marketo_resources(config: MarketoSourceConfiguration, history: Optional[HistoryReader] = None) -> List[DltResource]:
    """The resources of `marketo_source` for a resolved configuration.

    Args:
        config: The source's settings.
        history: Another reader of the history of scopes REST paging has not begun (see
            `marketo_source.history`); None takes the one `backfill` asks for (Bulk Activity
            Extract for "bulk" and "auto"), or reads everything through REST paging.
    """
    options = parse_read_options(config)
    daily = daily_usage(config.daily_call_limit)
    notices = RateLimitNotices()
    client = MarketoClient.connect(config, gate=daily, waits=notices)
    budget = RunBudget(config.max_calls_per_run, config.max_pages_per_run, config.max_seconds_per_run, daily=daily)
    scheduler = PageScheduler(
        client,
        PagingTokens(client),
        config.max_concurrency,
        budget,
        max_waiting_pages=settings.MAX_WAITING_PAGES,
        slice_overlap=parse_time_slices(
            config.time_slices, config.time_slice_overlap_minutes, options.late_commit_window
        ),
        late_commit_window=options.late_commit_window,
    )
    catalog = Catalog(client)
    reports: List[Dict[str, Any]] = []
    if history is None and config.backfill != settings.DEFAULT_BACKFILL:
        history = BulkHistoryReader(
            client, catalog, options, config.backfill, config.bulk_poll_interval_s, config.bulk_daily_mb_limit,
            budget, reports,
        )
    run = resources.MarketoRun(
        client, catalog, options, scheduler, budget, RunProgress(client, budget, notices), history=history,
        reports=reports,
    )

    def resource(read: Callable[[resources.MarketoRun], Iterator[TDataItem]], **hints: Any) -> DltResource:
        made: DltResource = dlt.resource(_stop_cleanly(read, run), name=read.__name__, **hints)
        return made

    incremental = dict(write_disposition="merge", primary_key="marketo_guid")
    # The catalogs merge rather than replace: dlt's replace on DuckDB truncates and inserts outside
    # one transaction, so a crash between the two left the tables empty or doubled.
    # dlt starts the resources in this order and waits for each one's first call. The streams
    # need the activity types, not the custom types, whose call therefore runs while pages flow.
    return [
        resource(resources.activity_types, write_disposition="merge", primary_key="id"),
        resource(resources.activities, **incremental),
        resource(resources.lead_changes, **incremental),
        resource(resources.deleted_leads, **incremental),
        resource(resources.custom_activity_types, write_disposition="merge", primary_key="api_name"),
        dlt.resource(resources.run_reports(run), name="run_reports", write_disposition="append"),
    ]


@dlt.source(name="marketo", section="marketo", max_table_nesting=0, spec=MarketoSourceConfiguration)
@signature_of(MarketoSourceConfiguration)
def marketo_source(**settings: Any) -> List[DltResource]:
    """Marketo activity types, activities, lead changes and deleted leads, read incrementally.

    Args:
        **settings: The fields of `marketo_source.config.MarketoSourceConfiguration`, each
            documented there: `base_url`, `client_id` and `client_secret` (required), what to
            read (`start_date`, `activity_type_ids`, ...), and how (`rate_limit_calls`,
            `late_commit_minutes`, ...). What is not given here comes from `[sources.marketo]` in
            `.dlt/config.toml` and `.dlt/secrets.toml`, or `SOURCES__MARKETO__<NAME>` variables.

    Returns:
        The resources `activity_types`, `activities`, `lead_changes`, `deleted_leads`,
        `custom_activity_types`, and `run_reports`, which loads each one's row for the run into
        `marketo_run_reports` (and retention gaps into `marketo_retention_gaps`).

    Raises:
        MarketoConfigurationError: A setting is missing or unusable; the message names it.
    """
    return marketo_resources(MarketoSourceConfiguration(**settings))


def _stop_cleanly(
    read: Callable[[resources.MarketoRun], Iterator[TDataItem]], run: resources.MarketoRun
) -> Iterator[TDataItem]:
    # A stream stops by itself when paging meets the quota or a lasting failure; this covers
    # its first calls (metadata), so that the other streams' data is still loaded.
    run.open_streams.add(read.__name__)
    try:
        yield from read(run)
    except (MarketoQuotaExceeded, MarketoDailyLimitReached, MarketoTransientError) as error:
        resources.finish_stream(run, StreamReport(read.__name__), stop_reason_for(error))


__all__ = [
    "marketo_source",
    "marketo_resources",
    "duckdb_destination",
    "discard_superseded_packages",
    "marketo_custom_activities",
    "ensure_custom_activity_type",
    "marketo_error_behind",
    "ActivityLedger",
    "AttributeDefinition",
    "CustomActivityPusher",
    "CustomActivityTypeDefinition",
    "CustomActivityTypes",
    "PushSummary",
    "MarketoClient",
    "MarketoError",
    "MarketoAccessDenied",
    "MarketoAuthError",
    "MarketoConfigurationError",
    "MarketoDailyLimitReached",
    "MarketoListTooLarge",
    "MarketoNotFound",
    "MarketoQuotaExceeded",
    "MarketoRequestError",
    "MarketoTransientError",
    "MarketoWriteUncertain",
]
