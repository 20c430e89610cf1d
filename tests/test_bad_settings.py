"""Bad settings get one line that names the setting, says what is wrong and what to do.

Each is set as a user would, through an environment variable (or on the command line), and the
pipeline script must print exactly that line and exit 1, before calling anyone; from Python the
same message comes as a `MarketoConfigurationError` (dlt's own errors for a value it cannot
read as the setting's type through `marketo_error_behind`).

Settings that only Marketo's answer shows wrong (an unreachable host, refused credentials, a URL
that is not Marketo's) get the same one line, naming the setting in the section it came from;
the custom-activities script checks its inputs before it changes anything in Marketo.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Type

import duckdb
import pytest
from dlt.common.configuration.exceptions import ConfigValueCannotBeCoercedException
from dlt.extract.exceptions import ResourceExtractionError

from marketo_source import MarketoConfigurationError, MarketoError, marketo_error_behind, marketo_source
from marketo_source.errors import MarketoAuthError
from marketo_source.sandbox import DataSpec, MarketoSandbox

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
SCRIPT = PIPELINES / "marketo_pipeline.py"
WRITE_SCRIPT = PIPELINES / "custom_activities_pipeline.py"
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


SANDBOX = "{sandbox}"
"""Stands for the base URL of the sandbox the tests below start."""
REST_ENDPOINT = ("give your instance's REST endpoint, e.g. https://123-ABC-456.mktorest.com (Admin > Integration > "
                 "Web Services)")
UNREACHED = (f"cannot reach {UNREACHABLE} (connection refused); check the host, and that this machine can reach it: "
             "it should be your instance's REST endpoint, e.g. https://123-ABC-456.mktorest.com (Admin > Integration "
             "> Web Services)")
REFUSED = ("client_id/client_secret: Marketo refused them (HTTP 401); give the client id and secret of the API user's "
           "LaunchPoint service (Admin > Integration > LaunchPoint > View Details)")

CONNECTION_CASES = [
    ({}, MarketoConfigurationError, f"sources.marketo.base_url: {UNREACHED}"),
    ({"SOURCES__MARKETO__BASE_URL": SANDBOX}, MarketoAuthError, f"sources.marketo.{REFUSED}"),
    ({"SOURCES__MARKETO__BASE_URL": SANDBOX + "/marketo"}, MarketoConfigurationError,
     f"sources.marketo.base_url: {SANDBOX}/marketo/identity/oauth/token answered HTTP 404, not an access token; "
     f"{REST_ENDPOINT}"),
]
"""Settings that only the answer (or its absence) shows wrong: (settings, error, line)."""

DESTINATION = "DESTINATION__MARKETO_CUSTOM_ACTIVITIES__"
WEBINAR_COLUMNS = 'lead_id BIGINT, activity_date TIMESTAMPTZ, primary_attribute_value VARCHAR, "minutesWatched" INTEGER'
WRITE_CASES = [
    ({}, ["--database", "missing.duckdb"],
     "--database: missing.duckdb does not exist; give the DuckDB file that holds the table to push"),
    ({}, ["--table", "webinars"],
     "--table: warehouse.duckdb has no table or view 'webinars' (it has: no_dates, other_columns, webinar_events); "
     "give the table or view that holds the rows to push"),
    ({}, ["--table", "no_dates"],
     "--table: no_dates lacks the column(s) activity_date; give a table or view with lead_id, activity_date and "
     "primary_attribute_value, every other column named after an attribute of webinarAttendance"),
    ({}, ["--table", "other_columns"],
     "--table: the column(s) city, minutes of other_columns are not attributes of webinarAttendance (its attributes: "
     "minutesWatched, askedQuestion); rename them to attribute apiNames or leave them out"),
    ({}, ["--ledger", "ledgers/ledger.duckdb"],
     "--ledger: the folder {workdir}/ledgers does not exist; create it, or give a --ledger path in an existing folder"),
    ({f"{DESTINATION}CLIENT_SECRET": ""}, [],
     "client_secret: not set; put it under [destination.marketo_custom_activities] in .dlt/secrets.toml or set "
     "DESTINATION__MARKETO_CUSTOM_ACTIVITIES__CLIENT_SECRET"),
    ({f"{DESTINATION}CLIENT_SECRET": "not-the-secret"}, [], f"destination.marketo_custom_activities.{REFUSED}"),
    ({f"{DESTINATION}BASE_URL": UNREACHABLE}, [], f"destination.marketo_custom_activities.base_url: {UNREACHED}"),
]
"""The custom-activities script's inputs and settings: (settings, arguments, line)."""


@pytest.fixture(scope="module")
def sandbox() -> Iterator[MarketoSandbox]:
    with MarketoSandbox(data=DataSpec(leads=5, activities=20)) as instance:
        yield instance


def _run(script: Path, settings: Dict[str, str], arguments: List[str], workdir: Path) -> List[str]:
    """Runs `script` with only `settings` among the Marketo variables; returns its stderr's lines
    after checking that it exited 1."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("SOURCES__", "DESTINATION__"))}
    env.update({**settings, "DLT_DATA_DIR": str(workdir / "dlt")})
    result = subprocess.run([sys.executable, str(script), *arguments], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    return result.stderr.strip().splitlines()


@pytest.mark.parametrize(("settings", "arguments", "line"), CASES)
def test_the_pipeline_script_names_a_bad_setting_in_one_line(
    settings: Dict[str, str], arguments: List[str], line: str, tmp_path: Path
) -> None:
    assert _run(SCRIPT, {**GOOD, **settings}, arguments, tmp_path) == [f"Run failed: {line}"]


@pytest.mark.parametrize(("settings", "error_type", "line"), CONNECTION_CASES)
def test_a_setting_marketo_shows_wrong_is_named_in_its_section_in_one_line(
    settings: Dict[str, str], error_type: Type[MarketoError], line: str, sandbox: MarketoSandbox, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = {**GOOD, **{name: value.format(sandbox=sandbox.base_url) for name, value in settings.items()}}
    line = line.format(sandbox=sandbox.base_url)
    assert _run(SCRIPT, settings, [], tmp_path) == [f"Run failed: {line}"]

    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ResourceExtractionError) as raised:  # the first call is the activity_types resource's
        list(marketo_source())
    error = marketo_error_behind(raised.value)
    assert type(error) is error_type and str(error) == line
    assert GOOD["SOURCES__MARKETO__CLIENT_SECRET"] not in repr(error)


@pytest.mark.parametrize(("settings", "arguments", "line"), WRITE_CASES)
def test_the_custom_activities_script_checks_every_input_before_changing_marketo(
    settings: Dict[str, str], arguments: List[str], line: str, sandbox: MarketoSandbox, tmp_path: Path
) -> None:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as warehouse:
        warehouse.execute(f"CREATE TABLE webinar_events ({WEBINAR_COLUMNS})")
        warehouse.execute("CREATE TABLE no_dates (lead_id BIGINT, primary_attribute_value VARCHAR)")
        warehouse.execute(f"CREATE TABLE other_columns ({WEBINAR_COLUMNS}, city VARCHAR, minutes INTEGER)")
        warehouse.execute("INSERT INTO webinar_events VALUES (1001, now(), 'Data Pipelines', 30)")
    connection = {f"{DESTINATION}BASE_URL": sandbox.base_url, f"{DESTINATION}CLIENT_ID": sandbox.client_id,
                  f"{DESTINATION}CLIENT_SECRET": sandbox.client_secret}
    rest_calls = sandbox.stats()["rest_calls"]

    lines = _run(WRITE_SCRIPT, {**connection, **settings}, arguments, tmp_path)

    assert lines == [f"Run failed: {line.format(workdir=tmp_path)}"]
    assert sandbox.stats()["rest_calls"] == rest_calls  # no type created, nothing written
    assert "webinarAttendance" not in [t["apiName"] for t in sandbox.ground_truth()["custom_activity_types"]]
    assert not (tmp_path / "missing.duckdb").exists()


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
