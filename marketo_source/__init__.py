"""A dlt source for Marketo Engage activities, lead changes and deleted leads.

    import dlt
    from marketo_source import marketo_source

    pipeline = dlt.pipeline(pipeline_name="marketo_pipeline", destination="duckdb", dataset_name="marketo")
    pipeline.run(marketo_source(start_date="2024-01-01T00:00:00Z"))

Settings come from the arguments, `.dlt/config.toml` and `.dlt/secrets.toml` under
`[sources.marketo]`, or environment variables such as `SOURCES__MARKETO__CLIENT_SECRET`.
"""

import logging
from typing import Any, Callable, Iterator, List, Optional

import dlt
from dlt.common.typing import TDataItem
from dlt.sources import DltResource

from marketo_source import resources, settings
from marketo_source.catalog import Catalog
from marketo_source.crash_safety import discard_superseded_packages, duckdb_destination
from marketo_source.client import MarketoClient
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
from marketo_source.options import parse_read_options, parse_time_slices
from marketo_source.budget import RunBudget, daily_usage, stop_reason_for
from marketo_source.paging import PagingTokens
from marketo_source.run_report import RunProgress, StreamReport
from marketo_source.scheduler import PageScheduler

logger = logging.getLogger("marketo_source")


@dlt.source(name="marketo", section="marketo", max_table_nesting=0)
def marketo_source(
    base_url: str = dlt.config.value,
    client_id: str = dlt.secrets.value,
    client_secret: str = dlt.secrets.value,
    start_date: Optional[str] = None,
    activity_type_ids: Optional[List[int]] = None,
    lead_change_fields: Optional[List[str]] = None,
    lead_ids: Optional[List[int]] = None,
    list_id: Optional[int] = None,
    lookback_minutes: float = 0,
    late_commit_minutes: float = settings.DEFAULT_LATE_COMMIT_MINUTES,
    rate_limit_calls: int = settings.DEFAULT_RATE_LIMIT_CALLS,
    rate_limit_period_s: float = settings.DEFAULT_RATE_LIMIT_PERIOD_S,
    max_concurrency: int = settings.DEFAULT_MAX_CONCURRENCY,
    read_timeout_s: float = settings.DEFAULT_READ_TIMEOUT_S,
    paging_token_timeout_s: float = settings.DEFAULT_PAGING_TOKEN_TIMEOUT_S,
    write_timeout_s: float = settings.DEFAULT_WRITE_TIMEOUT_S,
    max_attempts: int = settings.DEFAULT_MAX_ATTEMPTS,
    backoff_base_s: float = settings.DEFAULT_BACKOFF_BASE_S,
    backoff_max_s: float = settings.DEFAULT_BACKOFF_MAX_S,
    max_calls_per_run: Optional[int] = None,
    max_pages_per_run: Optional[int] = None,
    max_seconds_per_run: Optional[float] = None,
    daily_call_limit: Optional[int] = None,
    time_slices: bool = False,
    time_slice_overlap_minutes: float = settings.DEFAULT_TIME_SLICE_OVERLAP_MINUTES,
) -> List[DltResource]:
    """Marketo activity types, activities, lead changes and deleted leads, read incrementally.

    Args:
        base_url: The instance's REST endpoint, e.g. `https://123-ABC-456.mktorest.com`
            (the `.../rest` URL shown under Admin > Web Services works too).
        client_id: Client id of the LaunchPoint service.
        client_secret: Client secret of the LaunchPoint service.
        start_date: Where the first run starts (ISO 8601, UTC if no offset); later runs resume
            from state. Default: midnight UTC 89 days ago, within Marketo's 90-day retention.
        activity_type_ids: Activity types to read; None reads every type the instance lists
            except New Lead, Change Data Value and Delete Lead, which `lead_changes` and
            `deleted_leads` read.
        lead_change_fields: Lead fields (REST names) whose changes to read; None reads every field.
        lead_ids: Read only these leads' activities and changes (split into calls of 30).
        list_id: Read only the activities and changes of this static list's leads (under 10,000 leads).
        lookback_minutes: Also restart each run this many minutes before the newest activity
            read. Costs one paging-token call per position plus the pages of the window; for
            activities Marketo records late, `late_commit_minutes` is the setting to raise.
        late_commit_minutes: How long after its activityDate Marketo may record an activity
            that is still read exactly once: each run reads again from this long before the
            previous one began, whatever Marketo's paging tokens mark. 0 resumes from the saved
            paging tokens instead, which reads late activities only if Marketo's tokens mark
            the order it records activities in (Marketo does not document it).
        rate_limit_calls: Calls per `rate_limit_period_s` this source may make (Marketo allows 100
            per 20 s for the whole instance; Adobe asks one integration to use at most 50).
        rate_limit_period_s: The rate limit's window in seconds.
        max_concurrency: Calls in flight at once (Marketo allows 10 per instance).
        read_timeout_s: Timeout of read calls.
        paging_token_timeout_s: Timeout of Get Paging Token.
        write_timeout_s: Timeout of Add Custom Activities.
        max_attempts: Attempts per call on transient failures.
        backoff_base_s: First wait between attempts; it doubles each attempt, with jitter.
        backoff_max_s: Longest wait between attempts.
        max_calls_per_run: Stop starting new page calls once this run made this many calls.
        max_pages_per_run: Read at most this many pages (page calls) this run.
        max_seconds_per_run: Stop starting new page calls after this many seconds. With any of
            the three, a long backfill loads in steps: each run keeps what it read and the next
            continues from there.
        daily_call_limit: Make no call once the instance has made this many calls
            today, counting every API user as Marketo's Get Daily Usage does (asked at the start
            and every 500 calls; each ask is one call). E.g. 40000, 80% of the default quota,
            leaves the rest to the instance's other integrations.
        time_slices: Read a long chain of pages in several time slices at once when its calls
            wait on the network, not on the rate limit: a large backfill finishes sooner, for
            about two more calls per slice (its paging token and the pages of the overlap).
            Off by default, which spends the fewest calls.
        time_slice_overlap_minutes: With time_slices, how late (after its activityDate) an
            activity may be committed and still be read: each slice reads on this far past
            the next slice's start. At least `late_commit_minutes`.

    Returns:
        The resources `activity_types`, `activities`, `lead_changes`, `deleted_leads` and
        `custom_activity_types`. Each also adds its row for the run to `marketo_run_reports`.
    """
    options = parse_read_options(
        start_date, activity_type_ids, lead_change_fields, lead_ids, list_id, lookback_minutes, late_commit_minutes
    )
    daily = daily_usage(daily_call_limit)
    client = MarketoClient(
        base_url,
        client_id,
        client_secret,
        rate_limit_calls=rate_limit_calls,
        rate_limit_period_s=rate_limit_period_s,
        max_concurrency=max_concurrency,
        read_timeout_s=read_timeout_s,
        paging_token_timeout_s=paging_token_timeout_s,
        write_timeout_s=write_timeout_s,
        max_attempts=max_attempts,
        backoff_base_s=backoff_base_s,
        backoff_max_s=backoff_max_s,
        gate=daily,
    )
    budget = RunBudget(max_calls_per_run, max_pages_per_run, max_seconds_per_run, daily=daily)
    scheduler = PageScheduler(
        client,
        PagingTokens(client),
        max_concurrency,
        budget,
        max_waiting_pages=settings.MAX_WAITING_PAGES,
        slice_overlap=parse_time_slices(time_slices, time_slice_overlap_minutes, options.late_commit_window),
        late_commit_window=options.late_commit_window,
    )
    run = resources.MarketoRun(client, Catalog(client), options, scheduler, budget, RunProgress(client, budget))

    def resource(read: Callable[[resources.MarketoRun], Iterator[TDataItem]], **hints: Any) -> DltResource:
        return dlt.resource(_stop_cleanly(read, run), name=read.__name__, **hints)

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
    ]


def _stop_cleanly(
    read: Callable[[resources.MarketoRun], Iterator[TDataItem]], run: resources.MarketoRun
) -> Iterator[TDataItem]:
    # A stream stops by itself when paging meets the quota or a lasting failure; this covers
    # its first calls (metadata), so that the other streams' data is still loaded.
    try:
        yield from read(run)
    except (MarketoQuotaExceeded, MarketoDailyLimitReached, MarketoTransientError) as error:
        yield from resources.finish_stream(run, StreamReport(read.__name__), stop_reason_for(error))


__all__ = [
    "marketo_source",
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
