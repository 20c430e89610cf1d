"""The configuration is declared once, and every key users set keeps working.

The keys below are the ones earlier releases read (the source's and the destination's
arguments); each is set through an environment variable and through `.dlt/config.toml` and
must reach the resolved configuration, and the source and destination must take exactly the
declared settings.
"""

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Type

import pytest
from dlt.common.configuration import resolve_configuration
from dlt.common.configuration.specs import BaseConfiguration

from marketo_source import MarketoClient, MarketoConfigurationError, marketo_source
from marketo_source.config import MarketoConnection, MarketoDestinationConfiguration, MarketoSourceConfiguration
from marketo_source.custom_activities import marketo_custom_activities

CONNECTION_KEYS: Dict[str, Any] = {
    "base_url": "https://123-ABC-456.mktorest.com",
    "client_id": "an-id",
    "client_secret": "a-secret",
    "rate_limit_calls": 40,
    "write_timeout_s": 45.0,
    "max_attempts": 3,
    "backoff_base_s": 0.5,
    "rate_limit_period_s": 10.0,
    "max_concurrency": 4,
    "read_timeout_s": 20.0,
    "paging_token_timeout_s": 200.0,
    "backoff_max_s": 30.0,
}
"""Every setting of a connection (the destination lacked the last four before they were declared once)."""
SOURCE_KEYS: Dict[str, Any] = {
    **CONNECTION_KEYS,
    "start_date": "2024-01-01T00:00:00Z",
    "activity_type_ids": [1, 6],
    "lead_change_fields": ["email", "leadStatus"],
    "lead_ids": [1001, 1002],
    "list_id": 5001,
    "lookback_minutes": 15.0,
    "late_commit_minutes": 90.0,
    "max_calls_per_run": 1000,
    "max_pages_per_run": 500,
    "max_seconds_per_run": 600.0,
    "daily_call_limit": 40000,
    "time_slices": True,
    "time_slice_overlap_minutes": 90.0,
    "backfill": "bulk",
    "bulk_poll_interval_s": 300.0,
    "bulk_daily_mb_limit": 250.0,
}
"""Every setting of the source, each with a value other than its default."""
DESTINATION_KEYS: Dict[str, Any] = {
    **CONNECTION_KEYS,
    "activity_type_api_name": "webinarAttendance",
    "ledger_path": "ledger.duckdb",
    "reconcile_after_s": 30.0,
}
"""Every setting of the destination, each with a value other than its default."""
SECRETS = {"client_id", "client_secret"}
"""Kept in .dlt/secrets.toml: dlt refuses them in config.toml."""


def env_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).replace("'", '"') if isinstance(value, list) else str(value)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value).replace("'", '"') if isinstance(value, (str, list)) else repr(value)


RESOLVE = """
import json, sys
from dlt.common.configuration import resolve_configuration
from marketo_source import config
spec, section = getattr(config, sys.argv[1]), sys.argv[2]
resolved = resolve_configuration(spec(), sections=tuple(section.split(".")))
print(json.dumps({key: getattr(resolved, key) for key in json.loads(sys.argv[3])}))
"""
"""Resolves a spec as dlt does for a user's process, in a fresh one, in the working directory."""


@pytest.mark.parametrize(
    ("spec", "section", "keys"),
    [
        (MarketoSourceConfiguration, "sources.marketo", SOURCE_KEYS),
        (MarketoDestinationConfiguration, "destination.marketo_custom_activities", DESTINATION_KEYS),
    ],
)
@pytest.mark.parametrize("where", ["environment", ".dlt files"])
def test_every_key_users_set_reaches_the_configuration(
    spec: Type[BaseConfiguration], section: str, keys: Dict[str, Any], where: str, tmp_path: Path
) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("SOURCES__", "DESTINATION__"))}
    if where == "environment":
        prefix = section.upper().replace(".", "__")
        env.update({f"{prefix}__{key.upper()}": env_value(value) for key, value in keys.items()})
    else:
        (tmp_path / ".dlt").mkdir()
        for file, file_keys in (("secrets.toml", SECRETS), ("config.toml", set(keys) - SECRETS)):
            table = "\n".join(f"{key} = {toml_value(keys[key])}" for key in file_keys)
            (tmp_path / ".dlt" / file).write_text(f"[{section}]\n{table}\n")
    result = subprocess.run([sys.executable, "-c", RESOLVE, spec.__name__, section, json.dumps(list(keys))],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == keys


def test_the_source_and_the_destination_take_exactly_the_declared_settings() -> None:
    def settings_of(function: Any) -> set:
        return {p.name for p in inspect.signature(function).parameters.values() if p.kind == p.KEYWORD_ONLY}

    assert settings_of(marketo_source) == set(SOURCE_KEYS)
    assert settings_of(marketo_custom_activities) == set(DESTINATION_KEYS)
    # The connection's settings are one declaration that both extend.
    assert set(MarketoConnection.get_resolvable_fields()) <= set(SOURCE_KEYS) & set(DESTINATION_KEYS)


def test_settings_given_as_arguments_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCES__MARKETO__BASE_URL", "https://from-the-environment.mktorest.com")
    with pytest.raises(MarketoConfigurationError, match=r"client_secret: not set; put it under .sources.marketo."):
        marketo_source(client_id="an-id")
    with pytest.raises(MarketoConfigurationError, match="max_concurrency: 11 is not between 1 and 10"):
        marketo_source(client_id="an-id", client_secret="a-secret", max_concurrency=11)


def test_a_missing_destination_secret_is_named_in_the_destinations_own_section() -> None:
    config = MarketoDestinationConfiguration(base_url="https://123-ABC-456.mktorest.com", client_id="an-id")
    with pytest.raises(MarketoConfigurationError, match=r"put it under \[destination.marketo_custom_activities\]"
                       r" .*DESTINATION__MARKETO_CUSTOM_ACTIVITIES__CLIENT_SECRET"):
        MarketoClient.connect(config)


@pytest.mark.parametrize("backfill", ["rest", "bulk", "auto"])
def test_the_bulk_settings_reach_the_configuration_from_the_environment(
    backfill: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"BASE_URL": "https://123-ABC-456.mktorest.com", "CLIENT_ID": "an-id",
                        "CLIENT_SECRET": "a-secret", "BACKFILL": backfill, "BULK_POLL_INTERVAL_S": "120",
                        "BULK_DAILY_MB_LIMIT": "450.5"}.items():
        monkeypatch.setenv(f"SOURCES__MARKETO__{name}", value)
    resolved = resolve_configuration(MarketoSourceConfiguration(), sections=("sources", "marketo")).checked()
    assert (resolved.backfill, resolved.bulk_poll_interval_s, resolved.bulk_daily_mb_limit) == (backfill, 120.0, 450.5)


def test_the_bulk_settings_default_to_rest_polling_each_minute_and_400_mb_a_day() -> None:
    config = MarketoSourceConfiguration(base_url="https://123-ABC-456.mktorest.com", client_id="an-id",
                                        client_secret="a-secret").checked()
    assert (config.backfill, config.bulk_poll_interval_s, config.bulk_daily_mb_limit) == ("rest", 60.0, 400.0)
