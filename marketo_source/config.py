"""The configuration: every setting declared once, with its type, default and meaning.

`MarketoConnection` holds what every user of Marketo's API needs (the instance, the LaunchPoint
credentials, limits, timeouts and retries) and builds the client; `MarketoSourceConfiguration`
adds what the source reads, `MarketoDestinationConfiguration` what the custom-activities
destination writes. dlt resolves them from arguments, `.dlt/config.toml`, `.dlt/secrets.toml`
and environment variables, under `sources.marketo` and `destination.marketo_custom_activities`
(`SOURCES__MARKETO__<NAME>`, `DESTINATION__MARKETO_CUSTOM_ACTIVITIES__<NAME>`). The source's and
the destination's signatures are made from them (`signature_of`), so that no setting is listed
twice.
"""

import inspect
import logging
from typing import Any, Callable, ClassVar, Dict, List, Optional, Type, TypeVar

from dlt.common.configuration import configspec
from dlt.common.configuration.specs import BaseConfiguration
from dlt.common.typing import TSecretStrValue
from dlt.destinations.impl.destination.configuration import CustomDestinationClientConfiguration

from marketo_source import settings
from marketo_source.errors import MarketoConfigurationError

logger = logging.getLogger("marketo_source")


@configspec
class MarketoConnection(BaseConfiguration):
    """The instance, its credentials, and how calls to it are made."""

    SECTION: ClassVar[str] = "sources.marketo"
    """Where users set these values; named in error messages."""

    base_url: Optional[str] = None
    """The instance's REST endpoint, e.g. `https://123-ABC-456.mktorest.com` (the `.../rest` URL
    shown under Admin > Web Services works too)."""
    client_id: Optional[TSecretStrValue] = None
    """Client id of the LaunchPoint service."""
    client_secret: Optional[TSecretStrValue] = None
    """Client secret of the LaunchPoint service."""
    rate_limit_calls: int = settings.DEFAULT_RATE_LIMIT_CALLS
    """Calls allowed per `rate_limit_period_s` (Marketo allows 100 per 20 s for the whole instance;
    Adobe asks one integration to use at most 50)."""
    rate_limit_period_s: float = settings.DEFAULT_RATE_LIMIT_PERIOD_S
    """The rate limit's window in seconds."""
    max_concurrency: int = settings.DEFAULT_MAX_CONCURRENCY
    """Calls in flight at once (Marketo allows 10 per instance)."""
    read_timeout_s: float = settings.DEFAULT_READ_TIMEOUT_S
    """Timeout of read calls."""
    paging_token_timeout_s: float = settings.DEFAULT_PAGING_TOKEN_TIMEOUT_S
    """Timeout of Get Paging Token, which Marketo allows 300 s."""
    write_timeout_s: float = settings.DEFAULT_WRITE_TIMEOUT_S
    """Timeout of Add Custom Activities, which Marketo allows 90 s."""
    max_attempts: int = settings.DEFAULT_MAX_ATTEMPTS
    """Attempts per call on transient failures."""
    backoff_base_s: float = settings.DEFAULT_BACKOFF_BASE_S
    """First wait between attempts; it doubles each attempt, with jitter."""
    backoff_max_s: float = settings.DEFAULT_BACKOFF_MAX_S
    """Longest wait between attempts."""

    def client_options(self) -> Dict[str, Any]:
        """The settings besides the instance and its credentials: limits, timeouts, retries."""
        names = MarketoConnection.get_resolvable_fields()
        return {name: getattr(self, name) for name in names if name not in _IDENTITY}

    def checked(self) -> "MarketoConnection":
        """This configuration, once every value is known to be usable; else a `MarketoConfigurationError`."""
        missing = [name for name in _IDENTITY if not (isinstance(value := getattr(self, name), str) and value)]
        if missing:
            variables = " and ".join(f"{self.SECTION.upper().replace('.', '__')}__{name.upper()}" for name in missing)
            files = ".dlt/config.toml" if missing == ["base_url"] else ".dlt/secrets.toml"
            raise MarketoConfigurationError.of(
                ", ".join(missing), "not set", f"put {'it' if len(missing) == 1 else 'them'} under [{self.SECTION}] "
                f"in {files} or set {variables}",
            )
        _check_positive_whole(
            self.rate_limit_calls, "rate_limit_calls", "give 50 or fewer per 20 s: Marketo allows the instance 100"
        )
        if not _is_number(self.rate_limit_period_s) or self.rate_limit_period_s <= 0:
            raise MarketoConfigurationError.of(
                "rate_limit_period_s", f"{self.rate_limit_period_s!r} is not a positive number of seconds",
                "give the window in seconds: Marketo's is 20",
            )
        if not isinstance(self.max_concurrency, int) or not 1 <= self.max_concurrency <= settings.MAX_CONCURRENCY:
            raise MarketoConfigurationError.of(
                "max_concurrency", f"{self.max_concurrency!r} is not between 1 and {settings.MAX_CONCURRENCY}",
                "give 5 or fewer: Marketo answers 615 past 10 calls at once",
            )
        _check_positive_whole(self.max_attempts, "max_attempts", "give 1 or more: 1 makes no retry")
        return self


@configspec
class MarketoSourceConfiguration(MarketoConnection):
    """The settings of `marketo_source`: the connection, and what to read."""

    start_date: Optional[str] = None
    """Where the first run starts (ISO 8601, UTC if no offset); later runs resume from state.
    Default: midnight UTC 89 days ago, within Marketo's 90-day retention."""
    activity_type_ids: Optional[List[int]] = None
    """Activity types to read; None reads every type the instance lists except New Lead, Change
    Data Value and Delete Lead, which `lead_changes` and `deleted_leads` read."""
    lead_change_fields: Optional[List[str]] = None
    """Lead fields (REST names) whose changes to read; None reads every field."""
    lead_ids: Optional[List[int]] = None
    """Read only these leads' activities and changes (split into calls of 30)."""
    list_id: Optional[int] = None
    """Read only the activities and changes of this static list's leads (under 10,000 leads)."""
    lookback_minutes: float = 0
    """Also restart each run this many minutes before the newest activity read. Costs one
    paging-token call per position plus the pages of the window; for activities Marketo records
    late, `late_commit_minutes` is the setting to raise."""
    late_commit_minutes: float = settings.DEFAULT_LATE_COMMIT_MINUTES
    """How long after its activityDate Marketo may record an activity that is still read exactly
    once: each run reads again from this long before the previous one began, whatever Marketo's
    paging tokens mark. 0 resumes from the saved paging tokens instead, which reads late
    activities only if Marketo's tokens mark the order it records activities in (Marketo does not
    document it)."""
    max_calls_per_run: Optional[int] = None
    """Stop starting new page calls once this run made this many calls."""
    max_pages_per_run: Optional[int] = None
    """Read at most this many pages (page calls) this run."""
    max_seconds_per_run: Optional[float] = None
    """Stop starting new page calls after this many seconds. With any of the three run bounds, a
    long backfill loads in steps: each run keeps what it read and the next continues from there."""
    daily_call_limit: Optional[int] = None
    """Make no call once the instance has made this many calls today, counting every API user as
    Marketo's Get Daily Usage does (asked at the start and every 500 calls; each ask is one call).
    E.g. 40000, 80% of the default quota, leaves the rest to the instance's other integrations."""
    time_slices: bool = False
    """Read a long chain of pages in several time slices at once when its calls wait on the
    network, not on the rate limit: a large backfill finishes sooner, for about two more calls per
    slice (its paging token and the pages of the overlap). Off by default, which spends the
    fewest calls."""
    time_slice_overlap_minutes: float = settings.DEFAULT_TIME_SLICE_OVERLAP_MINUTES
    """With time_slices, how late (after its activityDate) an activity may be committed and still
    be read: each slice reads on this far past the next slice's start. At least `late_commit_minutes`."""
    backfill: str = settings.DEFAULT_BACKFILL
    """How the activities stream reads its history: "rest" (REST paging), "bulk" (Bulk Activity
    Extract, which spends an export quota of files rather than API calls, with REST paging reading
    the newest part) or "auto" (bulk for a history longer than 7 days, REST paging when Marketo refuses
    bulk export). Bulk reads only the unfiltered activities stream; see the README's "Backfill through
    Bulk Activity Extract"."""
    bulk_poll_interval_s: float = settings.DEFAULT_BULK_POLL_INTERVAL_S
    """With bulk reading, seconds between two status reads of one export job (Marketo updates a
    job's status at most once a minute and asks not to poll more often)."""
    bulk_daily_mb_limit: float = settings.DEFAULT_BULK_DAILY_MB_LIMIT
    """With bulk reading, MB of export files a day the source may use, counted in Marketo's day
    (midnight to midnight US Central). 400 of Marketo's default 500 leaves the instance's lead,
    program member and custom object exports, which share the quota, 100 MB a day."""

    def checked(self) -> "MarketoSourceConfiguration":
        """This configuration, once every value is known to be usable; else a `MarketoConfigurationError`."""
        super().checked()
        if self.backfill not in settings.BACKFILL_READERS:
            raise MarketoConfigurationError.of(
                "backfill", f"{self.backfill!r} is not one of {', '.join(settings.BACKFILL_READERS)}",
                "give rest (REST paging), bulk (Bulk Activity Extract) or auto",
            )
        if not _is_number(self.bulk_poll_interval_s) or self.bulk_poll_interval_s <= 0:
            raise MarketoConfigurationError.of(
                "bulk_poll_interval_s", f"{self.bulk_poll_interval_s!r} is not a positive number of seconds",
                "give 60 or more: Marketo updates a job's status at most once a minute",
            )
        if not _is_number(self.bulk_daily_mb_limit) or self.bulk_daily_mb_limit <= 0:
            raise MarketoConfigurationError.of(
                "bulk_daily_mb_limit", f"{self.bulk_daily_mb_limit!r} is not a positive number of MB",
                f"give the MB of export files a day the source may use, e.g. {settings.DEFAULT_BULK_DAILY_MB_LIMIT:g}"
                f" of Marketo's default {settings.BULK_QUOTA_MB}",
            )
        return self


@configspec
class MarketoDestinationConfiguration(CustomDestinationClientConfiguration, MarketoConnection):
    """The settings of the `marketo_custom_activities` destination: the connection, and what to write."""

    SECTION: ClassVar[str] = "destination.marketo_custom_activities"

    activity_type_api_name: Optional[str] = None
    """The custom activity type of rows that name none."""
    ledger_path: str = settings.DEFAULT_LEDGER_PATH
    """The ledger's DuckDB file (default `marketo_custom_activities.duckdb` in the working
    directory). Keep it with the pipeline: it is what prevents duplicates."""
    reconcile_after_s: float = settings.ADD_CUSTOM_ACTIVITIES_SERVER_TIMEOUT_S
    """Seconds after an uncertain call before reading its activities back."""


_MARKETO_CALLS, _MARKETO_WINDOW_S = 100, 20.0
"""Marketo's rate limit for a whole instance."""


def warn_of_a_rate_above_marketos(calls: int, period_s: float) -> None:
    """Logs a warning when `calls` per `period_s` is more than Marketo allows the whole instance."""
    if calls / period_s > _MARKETO_CALLS / _MARKETO_WINDOW_S:
        logger.warning(
            "rate_limit_calls: %d per %g s is more than Marketo allows the whole instance (100 per 20 s); "
            "expect 606 answers and retries, and set it to 50 per 20 s or less", calls, period_s,
        )


_IDENTITY = ("base_url", "client_id", "client_secret")
"""The instance and its credentials: required, and not among a client's options."""
_Function = TypeVar("_Function", bound=Callable[..., Any])


def signature_of(spec: Type[BaseConfiguration], *leading: inspect.Parameter) -> Callable[[_Function], _Function]:
    """Gives a function taking `**settings` the signature of `spec`'s fields, after `leading`.

    dlt reads the signature to know which arguments to resolve, so the settings are declared
    once, in `spec`, and still passed by name: `marketo_source(start_date="2024-01-01")`.
    """
    defaults = spec()
    fields = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=getattr(defaults, name), annotation=hint)
        for name, hint in spec.get_resolvable_fields().items()
        if name in _own_fields(spec)
    ]

    def give(function: _Function) -> _Function:
        # inspect.signature reads __signature__, which the type of functions does not declare.
        function.__signature__ = inspect.Signature([*leading, *fields])  # type: ignore[attr-defined]
        return function

    return give


def _own_fields(spec: Type[BaseConfiguration]) -> List[str]:
    """The fields declared by our own classes, not by dlt's (a destination's type, name, ...)."""
    own = [cls for cls in spec.__mro__ if cls.__module__ == __name__]
    return [name for cls in own for name in getattr(cls, "__annotations__", {}) if not name.isupper()]


def _check_positive_whole(value: Any, setting: str, advice: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MarketoConfigurationError.of(setting, f"{value!r} is not a positive whole number", advice)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
