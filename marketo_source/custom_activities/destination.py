"""The dlt destination `marketo_custom_activities`, and the pusher it keeps for each configuration."""

import hashlib
import inspect
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
from marketo_source.config import MarketoDestinationConfiguration, signature_of
from marketo_source.custom_activities.pusher import CustomActivityPusher
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


def _pusher_for(config: MarketoDestinationConfiguration) -> CustomActivityPusher:
    client_settings = config.client_options()
    fingerprint = _credentials_fingerprint(config.client_id or "", config.client_secret or "")
    key = _PusherKey(config.base_url or "", fingerprint, config.ledger_path, config.activity_type_api_name,
                     config.reconcile_after_s, tuple(sorted(client_settings.items())))
    with _PUSHERS_GUARD:
        if key not in _PUSHERS:
            client = MarketoClient.connect(config)
            _PUSHERS[key] = CustomActivityPusher(client, config.ledger_path, config.activity_type_api_name,
                                                 config.reconcile_after_s)
        return _PUSHERS[key]


def _positional(name: str, annotation: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation)


def _declared_by_package(function: _Function) -> _Function:
    # dlt names the destination's type after the module of its function and records that name in
    # each pipeline's state, where a pipeline attached without a destination looks it up; the
    # package is the module users import the destination from, so its name is the one recorded.
    function.__module__ = __name__.rpartition(".")[0]
    return function


@dlt.destination(batch_size=settings.MAX_BATCH_SIZE, naming_convention="direct", skip_dlt_columns_and_tables=True,
                 name="marketo_custom_activities", spec=MarketoDestinationConfiguration)
@signature_of(MarketoDestinationConfiguration, _positional("items", TDataItems), _positional("table", TTableSchema))
@_declared_by_package
def marketo_custom_activities(items: TDataItems, table: TTableSchema, /, **settings: Any) -> None:
    """A dlt destination that adds each row of any table to Marketo as a custom activity, once.

    Args:
        items: A batch of at most 300 rows (dlt passes it).
        table: The dlt table the rows belong to (dlt passes it).
        **settings: The fields of `marketo_source.config.MarketoDestinationConfiguration`, each
            documented there: `base_url`, `client_id`, `client_secret` (required),
            `activity_type_api_name`, `ledger_path`, and the client's limits. What is not given
            here comes from `[destination.marketo_custom_activities]` in `.dlt/config.toml` and
            `.dlt/secrets.toml`, or `DESTINATION__MARKETO_CUSTOM_ACTIVITIES__<NAME>` variables.

    Raises:
        DestinationTerminalException: Settings or data Marketo refuses (the message says what to
            fix); retrying would not help. Other failures are left to dlt's retries and the next run.
    """
    try:
        pusher = _pusher_for(MarketoDestinationConfiguration(**settings))
        summary = pusher.push(items, load_id=dlt.current.load_package_state()["load_id"])
    except (MarketoConfigurationError, MarketoAuthError, MarketoAccessDenied, MarketoRequestError) as error:
        raise DestinationTerminalException(f"{type(error).__name__}: {error}") from error
    logger.info("marketo_custom_activities %s: %s", table["name"], summary)
