"""Bad settings get one line that names the setting, says what is wrong and what to do.

Each is set as a user would, through an environment variable (or on the command line), and the
pipeline script must print exactly that line and exit 1, before calling anyone; from Python the
same message comes as a `MarketoConfigurationError` (dlt's own errors for a value it cannot
read as the setting's type through `marketo_error_behind`).
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from dlt.common.configuration.exceptions import ConfigValueCannotBeCoercedException

from marketo_source import MarketoConfigurationError, marketo_error_behind, marketo_source

SCRIPT = Path(__file__).resolve().parents[1] / "pipelines" / "marketo_pipeline.py"
UNREACHABLE = "http://127.0.0.1:9"
"""A base URL on this machine where nothing listens: a bad setting must fail before any call."""
GOOD = {"SOURCES__MARKETO__BASE_URL": UNREACHABLE, "SOURCES__MARKETO__CLIENT_ID": "an-id",
        "SOURCES__MARKETO__CLIENT_SECRET": "a-secret"}
ISO = "use an ISO 8601 date or datetime such as 2024-01-01 or 2024-01-01T00:00:00Z"
IDS = "list Marketo ids, e.g. [1, 2, 3] (JSON, in an environment variable too)"

CASES = [
    ({"SOURCES__MARKETO__BASE_URL": "htp://123-ABC-456.mktorest.com"}, [],
     "base_url: 'htp://123-ABC-456.mktorest.com' is not an http(s) URL; give your instance's REST endpoint, "
     "e.g. https://123-ABC-456.mktorest.com (Admin > Integration > Web Services)"),
    ({"SOURCES__MARKETO__START_DATE": "yesterday"}, [], f"start_date: 'yesterday' is not a date; {ISO}"),
    ({"SOURCES__MARKETO__START_DATE": "2024-13-45"}, [], f"start_date: '2024-13-45' is not a date; {ISO}"),
    ({}, ["--start-date", "yesterday"], f"--start-date: 'yesterday' is not a date; {ISO}"),
    ({"SOURCES__MARKETO__ACTIVITY_TYPE_IDS": '["abc"]'}, [],
     f"activity_type_ids: 'abc' is not a whole number; {IDS}"),
    ({"SOURCES__MARKETO__ACTIVITY_TYPE_IDS": "1,6"}, [],
     "activity_type_ids: '1,6' is not a list; give a list in JSON, e.g. [1, 6], in an environment variable too"),
    ({"SOURCES__MARKETO__RATE_LIMIT_CALLS": "-5"}, [],
     "rate_limit_calls: -5 is not a positive whole number; give 50 or fewer per 20 s: "
     "Marketo allows the instance 100"),
    ({"SOURCES__MARKETO__RATE_LIMIT_CALLS": "fifty"}, [],
     "rate_limit_calls: 'fifty' is not a whole number; give a whole number"),
    ({"SOURCES__MARKETO__MAX_CONCURRENCY": "11"}, [],
     "max_concurrency: 11 is not between 1 and 10; give 5 or fewer: Marketo answers 615 past 10 calls at once"),
    ({"SOURCES__MARKETO__LATE_COMMIT_MINUTES": "-1"}, [],
     "late_commit_minutes: -1.0 is not a number of minutes; give 0 or more"),
    ({"SOURCES__MARKETO__DAILY_CALL_LIMIT": "0"}, [],
     "daily_call_limit: 0 is not a positive whole number of calls; give one or leave it unset; 40000 leaves a "
     "fifth of the default quota to the instance's other integrations"),
    ({"SOURCES__MARKETO__BACKFILL": "sideways"}, [],
     "backfill: 'sideways' is not one of rest, bulk, auto; give rest (REST paging), bulk (Bulk Activity Extract) "
     "or auto"),
    ({"SOURCES__MARKETO__BULK_POLL_INTERVAL_S": "0"}, [],
     "bulk_poll_interval_s: 0.0 is not a positive number of seconds; give 60 or more: Marketo updates a job's "
     "status at most once a minute"),
    ({"SOURCES__MARKETO__BULK_DAILY_MB_LIMIT": "-5"}, [],
     "bulk_daily_mb_limit: -5.0 is not a positive number of MB; give the MB of export files a day the source may "
     "use, e.g. 400 of Marketo's default 500"),
    ({"SOURCES__MARKETO__CLIENT_SECRET": ""}, [],
     "client_secret: not set; put it under [sources.marketo] in .dlt/secrets.toml or set "
     "SOURCES__MARKETO__CLIENT_SECRET"),
]


@pytest.mark.parametrize(("settings", "arguments", "line"), CASES)
def test_the_pipeline_script_names_a_bad_setting_in_one_line(
    settings: Dict[str, str], arguments: List[str], line: str, tmp_path: Path
) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SOURCES__")}
    env.update({**GOOD, **settings, "DLT_DATA_DIR": str(tmp_path / "dlt")})
    result = subprocess.run([sys.executable, str(SCRIPT), *arguments], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stderr.strip().splitlines()) == (1, [f"Run failed: {line}"]), result.stdout


@pytest.mark.parametrize(("settings", "arguments", "line"), [case for case in CASES if not case[1]])
def test_from_python_a_bad_setting_is_a_configuration_error_with_the_same_message(
    settings: Dict[str, str], arguments: List[str], line: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {**GOOD, **settings}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises((MarketoConfigurationError, ConfigValueCannotBeCoercedException)) as raised:
        list(marketo_source())
    error = marketo_error_behind(raised.value)
    assert isinstance(error, MarketoConfigurationError)
    assert str(error) == line


def test_a_rate_above_marketos_limit_is_warned_of(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SOURCES__")}
    env.update({**GOOD, "SOURCES__MARKETO__RATE_LIMIT_CALLS": "500", "DLT_DATA_DIR": str(tmp_path / "dlt")})
    result = subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert "rate_limit_calls: 500 per 20 s is more than Marketo allows the whole instance (100 per 20 s)" in (
        result.stdout + result.stderr
    )
