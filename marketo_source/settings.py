"""Constants of the Marketo API and the source's defaults."""

from typing import Dict, FrozenSet, Optional

REST_PREFIX = "/rest"
BULK_PREFIX = "/bulk/"
"""Bulk Extract's paths lie under the instance root, not under `REST_PREFIX`."""
IDENTITY_PATH = "/identity/oauth/token"

ACTIVITY_TYPES_PATH = "/v1/activities/types.json"
PAGING_TOKEN_PATH = "/v1/activities/pagingtoken.json"
ACTIVITIES_PATH = "/v1/activities.json"
LEAD_CHANGES_PATH = "/v1/activities/leadchanges.json"
DELETED_LEADS_PATH = "/v1/activities/deletedleads.json"
LEAD_DESCRIBE_PATH = "/v1/leads/describe2.json"
CUSTOM_ACTIVITY_TYPES_PATH = "/v1/activities/external/types.json"
CUSTOM_ACTIVITY_TYPE_PATH = "/v1/activities/external/type"
"""Create is `<this>.json`; the calls on one type are `<this>/{apiName}/...`."""
ADD_CUSTOM_ACTIVITIES_PATH = "/v1/activities/external.json"
USAGE_PATH = "/v1/stats/usage.json"

MAX_TYPES_PER_CALL = 10
MAX_LEAD_IDS_PER_CALL = 30
MAX_BATCH_SIZE = 300
MAX_CONCURRENCY = 10
"""Marketo answers 615 past 10 concurrent calls per instance."""
MAX_CUSTOM_ACTIVITY_TYPES = 10
"""Marketo answers 1027 past 10 custom activity types per instance."""
MAX_CUSTOM_ACTIVITY_ATTRIBUTES = 20
"""Marketo answers 1028 past 20 attributes per custom activity type (the primary one not counted)."""
MAX_CUSTOM_API_NAME_LENGTH = 255
CUSTOM_ATTRIBUTE_DATA_TYPES = (
    "string", "boolean", "integer", "float", "link", "email", "currency", "date", "datetime", "phone", "text",
)
"""Data types a custom activity type's attributes may have (the swagger enum)."""
MAX_GET_URL_BYTES = 8192
"""Marketo answers 414 past 8 KB; such calls go as POST with `_method=GET`."""

DEFAULT_RATE_LIMIT_CALLS = 50
DEFAULT_RATE_LIMIT_PERIOD_S = 20.0
"""Adobe asks one integration to stay under 50 calls per 20 s (the instance limit is 100)."""
DEFAULT_MAX_CONCURRENCY = 5
"""Adobe's advice for one integration; Marketo's hard limit is `MAX_CONCURRENCY`."""
RATE_LIMIT_NOTICE_S = 5.0
"""A wait for the client's rate limit this long or longer is told of (logged, and counted in the progress)."""
RATE_LIMIT_NOTICE_EVERY_S = 60.0
"""At most one log line per this long about such waits; the next line counts the ones not told of."""
DEFAULT_DAILY_QUOTA = 50_000
"""Marketo's default daily call quota per subscription (some subscriptions buy more)."""
USAGE_REFRESH_CALLS = 500
"""With a daily_call_limit, Get Daily Usage is asked again after this many of the run's calls."""
DEFAULT_READ_TIMEOUT_S = 30.0
DEFAULT_PAGING_TOKEN_TIMEOUT_S = 300.0
DEFAULT_WRITE_TIMEOUT_S = 90.0
DEFAULT_LEDGER_PATH = "marketo_custom_activities.duckdb"
"""Where the custom-activities destination keeps its ledger, in the working directory."""
ADD_CUSTOM_ACTIVITIES_SERVER_TIMEOUT_S = 90.0
"""How long Marketo works on an Add Custom Activities call before it gives up (its documented
endpoint timeout): a write not applied by then is taken as never applied."""
DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_BACKOFF_BASE_S = 1.0
DEFAULT_BACKOFF_MAX_S = 60.0
TOKEN_REFRESH_MARGIN_S = 60
"""Ask for a new access token this long before the current one expires."""
MAX_AUTH_REPLAYS = 3
"""New tokens tried in a row after 601/602 before the call gives up."""

TRANSIENT_ERROR_CODES: FrozenSet[str] = frozenset({"604", "606", "608", "611", "615", "713"})
TOKEN_ERROR_CODES: FrozenSet[str] = frozenset({"601", "602"})
REFUSED_BEFORE_PROCESSING_CODES: FrozenSet[str] = frozenset({"606", "615"})
"""Transient codes Marketo answers before it processes a call: a write refused with them is safe
to send again. Every other transient failure (604, 608, 611, 713, HTTP 5xx, timeouts, resets) may
come after a write was applied."""

LEAD_CHANGE_TYPE_IDS = (12, 13)
DELETE_LEAD_TYPE_ID = 37
DEDICATED_STREAM_TYPE_IDS: FrozenSet[int] = frozenset({*LEAD_CHANGE_TYPE_IDS, DELETE_LEAD_TYPE_ID})
"""Types read by `lead_changes` and `deleted_leads`; `activities` skips them unless asked by id."""

RETENTION_DAYS: Dict[int, Optional[int]] = {
    37: 14,  # Delete Lead
    **dict.fromkeys((1, 3, 6, 7, 13, 19, 22, 24, 47), 90),
    12: None,  # New Lead is kept forever
}
"""Days Marketo keeps each activity type (its activity log policy); None: forever."""
DEFAULT_RETENTION_DAYS = 760
"""25 months, what Marketo keeps of most other types."""
HIGH_VOLUME_TYPE_IDS: FrozenSet[int] = frozenset(t for t, days in RETENTION_DAYS.items() if days == 90)
"""Types Marketo keeps only 90 days because they come in bulk (web visits, email sends and
deliveries, link clicks, score changes, ...): the activities stream spreads them over its groups."""

ACTIVITY_TABLE_PREFIX = "activity_"
ATTRIBUTE_COLLISION_PREFIX = "attribute_"
"""An attribute whose column name equals a base column is loaded as `attribute_<name>`."""
VARIANT_SUFFIX = "__v_text"
"""A value that does not fit its declared type lands as text in `<column>__v_text` (dlt's variant naming)."""

MARKETO_TO_DLT_TYPE: Dict[str, str] = {
    "integer": "bigint",
    "score": "bigint",
    "float": "double",
    "currency": "double",
    "percent": "double",
    "boolean": "bool",
    "date": "date",
    "datetime": "timestamp",
}
"""Marketo attribute data types with a typed column; every other type loads as text."""

REJECTED_TABLE = "marketo_rejected_records"
RETENTION_GAPS_TABLE = "marketo_retention_gaps"
RUN_REPORTS_TABLE = "marketo_run_reports"

FLUSH_ROWS = 10_000
"""Records a stream buffers, across its tables, before its largest table goes to dlt as one Arrow table."""
MAX_WAITING_PAGES = 8
"""Pages a stream may hold ahead of its consumer; past that its chains wait, which bounds memory."""

URGENT_SHARE_OF_RUN = 0.8
"""A chain whose calls, one after another, take this share of what the run's remaining calls take
at the allowed rate, or more, is one the run waits for: its calls go first when calls wait."""
PAGING_TOKEN_SHARED_S = 600
"""How long a run shares one Get Paging Token answer among the chains starting at its datetime."""
DEFAULT_LATE_COMMIT_MINUTES = 60.0
"""How late after its activityDate Marketo may record an activity that a run still reads: Marketo
records Send Email once the mail has left its servers, minutes and up to about an hour late."""
DEFAULT_TIME_SLICE_OVERLAP_MINUTES = 60.0
SLICE_MIN_PAGES = 20
"""A chain opens a time slice only with at least this many pages to go: the slice's paging token
and the overlap it reads cost about two calls."""
SLICE_MIN_SECONDS = 4.0
"""... and at least this many seconds of calls to go, at the pace of its calls so far."""
SLICE_MIN_SPAN_PER_OVERLAP = 5
"""... and, before the new slice's start, a time range at least this many times the overlap,
which bounds what reading the overlap costs against what the chain still reads."""

BACKFILL_READERS = ("rest", "bulk", "auto")
"""Values of `backfill`: how the activities stream reads its history (see `config`)."""
DEFAULT_BACKFILL = "rest"
BULK_MAX_WINDOW_DAYS = 31
"""Marketo refuses a job whose createdAt filter spans more than 31 days."""
BULK_UNSUPPORTED_TYPE_IDS: FrozenSet[int] = frozenset({DELETE_LEAD_TYPE_ID})
"""Marketo's bulk export refuses Delete Lead; `deleted_leads` reads it through Get Deleted Leads."""
BULK_MAX_QUEUED = 10
"""Jobs Marketo holds queued, processing ones included, across the instance's exports; past it,
enqueue answers 1029 "Too many jobs in queue"."""
DEFAULT_BULK_POLL_INTERVAL_S = 60.0
"""Marketo updates a job's status at most once a minute and asks not to poll more often."""
BULK_QUOTA_MB = 500
"""Marketo's default export quota: 500 MB of files a day (subscriptions may buy more)."""
DEFAULT_BULK_DAILY_MB_LIMIT = 400.0
"""Our share of the export quota: four fifths of Marketo's default, so that the instance's lead,
program member and custom object exports, which draw on the same quota, keep 100 MB a day."""
BYTES_PER_MB = 1_000_000
"""Marketo does not say whether its MB is 10^6 or 2^20 bytes: the smaller keeps a limit within either."""
MARKETO_DAY_ZONE = "America/Chicago"
"""Marketo's quota days end at midnight US Central."""
