"""The dlt destination `marketo_custom_activities`, and the pusher it keeps for each configuration."""

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar

import dlt
from dlt.common.destination.exceptions import DestinationTerminalException
from dlt.common.schema import TTableSchema
from dlt.common.typing import TDataItems

from marketo_source import settings
from marketo_source.client import MarketoClient
from marketo_source.custom_activities.ledger import DEFAULT_LEDGER_PATH
from marketo_source.custom_activities.pusher import DEFAULT_RECONCILE_AFTER_S, CustomActivityPusher
from marketo_source.errors import (
    MarketoAccessDenied,
    MarketoAuthError,
    MarketoConfigurationError,
    MarketoRequestError,
)

logger = logging.getLogger("marketo_source")

_Function = TypeVar("_Function", bound=Callable[..., Any])


@dataclass(frozen=True)
class _PusherKey:
    """A configuration of the destination, as the pusher registry tells configurations apart.

    It names a configuration only by what is safe to show in a log, a debugger or a dump of the
    registry. The client id and secret are in it as a SHA-256 fingerprint, which tells two pairs
    apart (a rotated secret gets a client of its own) and cannot be turned back into either; the
    secret itself stays with the one object that uses it, the pusher's client.
    """

    base_url: str
    credentials_fingerprint: str
    ledger_path: str
    activity_type_api_name: Optional[str]
    reconcile_after_s: float
    client_settings: Tuple[Tuple[str, Any], ...]


def _credentials_fingerprint(client_id: str, client_secret: str) -> str:
    return hashlib.sha256(json.dumps([client_id, client_secret]).encode()).hexdigest()


# One pusher per configuration for the whole process: dlt calls the destination once per batch of
# 300 rows, and one client keeps the rate limit, the access token and the type list across batches
# and loads. dlt keeps no live objects between those calls (its load package state is written to
# disk as JSON), so the registry is the process's.
_PUSHERS: Dict[_PusherKey, CustomActivityPusher] = {}
_PUSHERS_GUARD = threading.Lock()


def _pusher_for(
    connection: Tuple[str, str, str],
    ledger_path: str,
    activity_type_api_name: Optional[str],
    reconcile_after_s: float,
    client_settings: Dict[str, Any],
) -> CustomActivityPusher:
    base_url, client_id, client_secret = connection
    key = _PusherKey(base_url, _credentials_fingerprint(client_id, client_secret), ledger_path,
                     activity_type_api_name, reconcile_after_s, tuple(sorted(client_settings.items())))
    with _PUSHERS_GUARD:
        if key not in _PUSHERS:
            client = MarketoClient(*connection, **client_settings)
            _PUSHERS[key] = CustomActivityPusher(client, ledger_path, activity_type_api_name, reconcile_after_s)
        return _PUSHERS[key]


def _declared_by_package(function: _Function) -> _Function:
    # dlt names the destination's type after the module of its function and records that name in
    # each pipeline's state, where a pipeline attached without a destination looks it up; the
    # package is the module users import the destination from, so its name is the one recorded.
    function.__module__ = __name__.rpartition(".")[0]
    return function


@dlt.destination(batch_size=settings.MAX_BATCH_SIZE, naming_convention="direct", skip_dlt_columns_and_tables=True,
                 name="marketo_custom_activities")
@_declared_by_package
def marketo_custom_activities(
    items: TDataItems,
    table: TTableSchema,
    base_url: str = dlt.config.value,
    client_id: str = dlt.secrets.value,
    client_secret: str = dlt.secrets.value,
    activity_type_api_name: Optional[str] = None,
    ledger_path: str = DEFAULT_LEDGER_PATH,
    reconcile_after_s: float = DEFAULT_RECONCILE_AFTER_S,
    rate_limit_calls: int = settings.DEFAULT_RATE_LIMIT_CALLS,
    rate_limit_period_s: float = settings.DEFAULT_RATE_LIMIT_PERIOD_S,
    write_timeout_s: float = settings.DEFAULT_WRITE_TIMEOUT_S,
    max_attempts: int = settings.DEFAULT_MAX_ATTEMPTS,
    backoff_base_s: float = settings.DEFAULT_BACKOFF_BASE_S,
) -> None:
    """A dlt destination that adds each row of any table to Marketo as a custom activity, once.

    Settings come from the arguments or `destination.marketo_custom_activities.*` (config files
    or `DESTINATION__MARKETO_CUSTOM_ACTIVITIES__*` variables).

    Args:
        items: A batch of at most 300 rows (dlt passes it).
        table: The dlt table the rows belong to (dlt passes it).
        base_url: The instance's REST endpoint, e.g. `https://123-ABC-456.mktorest.com`.
        client_id: The LaunchPoint service's client id (a secret).
        client_secret: The LaunchPoint service's client secret (a secret).
        activity_type_api_name: The custom activity type of rows that name none.
        ledger_path: The ledger's DuckDB file (default `marketo_custom_activities.duckdb` in the
            working directory). Keep it with the pipeline: it is what prevents duplicates.
        reconcile_after_s: Seconds after an uncertain call before reading its activities back.
        rate_limit_calls: Calls allowed per `rate_limit_period_s`.
        rate_limit_period_s: Length of the rate limit window.
        write_timeout_s: Timeout of Add Custom Activities calls.
        max_attempts: Attempts per call on failures Marketo answers before processing.
        backoff_base_s: First wait between attempts.

    Raises:
        DestinationTerminalException: Settings or data Marketo refuses (the message says what to
            fix); retrying would not help. Other failures are left to dlt's retries and the next run.
    """
    client_settings = dict(rate_limit_calls=rate_limit_calls, rate_limit_period_s=rate_limit_period_s,
                           write_timeout_s=write_timeout_s, max_attempts=max_attempts, backoff_base_s=backoff_base_s)
    try:
        pusher = _pusher_for((base_url, client_id, client_secret), ledger_path, activity_type_api_name,
                             reconcile_after_s, client_settings)
        summary = pusher.push(items, load_id=dlt.current.load_package_state()["load_id"])
    except (MarketoConfigurationError, MarketoAuthError, MarketoAccessDenied, MarketoRequestError) as error:
        raise DestinationTerminalException(f"{type(error).__name__}: {error}") from error
    logger.info("marketo_custom_activities %s: %s", table["name"], summary)
