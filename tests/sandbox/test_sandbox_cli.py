"""`python -m marketo_source.sandbox` from the shell (behaviour 10)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

import pytest
import requests

from marketo_source.sandbox.__main__ import argument_parser, build_sandbox, parse_args, read_source_settings

CREDENTIALS = ("--client-id", "cli-id", "--client-secret", "cli-secret")
DENSE_TYPES = (1, 2, 3, 6, 7, 10, 11, 12, 13, 22)
DENSE = ",".join(map(str, DENSE_TYPES))


SANDBOX = [sys.executable, "-m", "marketo_source.sandbox"]
SMALL = ("--leads", "20", "--activities", "300")


@contextmanager
def _serving(*options: str) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """A sandbox CLI process with small data on a free port, and the settings it printed for the source."""
    process = subprocess.Popen([*SANDBOX, "--port", "0", *SMALL, *CREDENTIALS, *options], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None  # a pipe, as asked
    try:
        printed = read_source_settings(process.stdout)
        assert set(printed) == {"base_url", "client_id", "client_secret"}
        assert printed["base_url"].startswith("http://127.0.0.1:")
        yield process, printed
    finally:
        process.kill()
        process.stdout.close()


def _session(printed: dict[str, str]) -> requests.Session:
    token = requests.get(f"{printed['base_url']}/identity/oauth/token", timeout=10, params={
        "grant_type": "client_credentials", "client_id": printed["client_id"],
        "client_secret": printed["client_secret"]}).json()
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token['access_token']}"
    return session


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_cli_prints_credentials_serves_and_stops_on_signal(stop_signal: signal.Signals) -> None:
    with _serving() as (process, printed):
        assert printed["client_id"] == "cli-id" and printed["client_secret"] == "cli-secret"
        assert printed["base_url"].startswith("http://127.0.0.1:")
        types = _session(printed).get(f"{printed['base_url']}/rest/v1/activities/types.json", timeout=10).json()
        assert types["success"]
        process.send_signal(stop_signal)
        assert process.wait(timeout=10) == 0
        assert process.stdout is not None and process.stdout.read().strip() == "stopped"


def _read_to_the_end(session: requests.Session, base_url: str, token: str) -> tuple[int, str]:
    """How many records a read from `token` returns, and its final token."""
    count = 0
    while True:
        page = session.get(f"{base_url}/rest/v1/activities.json", timeout=10,
                           params={"nextPageToken": token, "activityTypeIds": DENSE}).json()
        count, token = count + len(page["result"]), page["nextPageToken"]
        if not page["moreResult"]:
            return count, token


def test_cli_token_order_date_leaves_late_commits_behind_the_final_token() -> None:
    with _serving("--token-order", "date") as (_, printed):
        base_url, session = printed["base_url"], _session(printed)
        since = session.get(f"{base_url}/rest/v1/activities/pagingtoken.json", timeout=10,
                            params={"sinceDatetime": "2000-01-01T00:00:00Z"}).json()["nextPageToken"]
        _, final = _read_to_the_end(session, base_url, since)
        requests.post(f"{base_url}/_sandbox/add-activities", json={"new": 1}, timeout=10)
        _, final = _read_to_the_end(session, base_url, final)
        late = requests.post(f"{base_url}/_sandbox/add-activities", json={"late": 30, "lateness_s": 10800},
                             timeout=10).json()
        assert any(record["activityTypeId"] in DENSE_TYPES for record in late)
        assert _read_to_the_end(session, base_url, final)[0] == 0


def test_cli_token_order_defaults_to_commit_and_refuses_other_values() -> None:
    assert parse_args([]).token_order == "commit"
    assert parse_args(["--token-order", "date"]).token_order == "date"
    with pytest.raises(SystemExit):
        parse_args(["--token-order", "position"])


def test_cli_prints_settings_a_shell_reads_back_however_odd_the_secret() -> None:
    secret = "it's $HOME & \"more\""
    with _serving("--client-secret", secret) as (_, printed):
        assert printed["client_secret"] == secret
        assert _session(printed).get(f"{printed['base_url']}/rest/v1/activities/types.json", timeout=10).json()[
            "success"]


def test_cli_help_describes_every_option_and_shows_its_default() -> None:
    wide = {**os.environ, "COLUMNS": "1000"}  # no line breaks inside a default such as sandbox-client-id
    printed = subprocess.run([*SANDBOX, "--help"], capture_output=True, text=True, check=True, env=wide).stdout
    shown = " ".join(printed.split())
    options = [action for action in argument_parser()._actions if action.dest != "help"]
    assert len(options) == 24
    for action in options:
        assert action.help, action.option_strings
        described = f"{action.option_strings[0]} {action.metavar or action.dest.upper()} {action.help}"
        if action.nargs == 0:  # a flag: no value to show
            described = f"{action.option_strings[0]} {action.help}"
        elif action.choices:
            described = f"{action.option_strings[0]} {{{','.join(action.choices)}}} {action.help}"
        assert described in shown
        if action.default is not None and action.default is not False:
            assert f"{described} (default: {action.default})" in shown


def test_cli_listens_on_a_fixed_port_by_default() -> None:
    assert parse_args([]).port == 8765 and parse_args(["--port", "0"]).port == 0


def test_cli_names_port_in_one_line_when_the_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        finished = subprocess.run([*SANDBOX, "--port", str(port), *SMALL], capture_output=True, text=True, timeout=60)
    assert finished.returncode != 0 and finished.stdout == ""
    assert finished.stderr.startswith(f"--port: cannot listen on 127.0.0.1:{port} (")
    assert "--port 0 picks a free one" in finished.stderr and len(finished.stderr.splitlines()) == 1


def test_bulk_export_options_reach_the_sandbox() -> None:
    args = parse_args(["--bulk-queue", "1.5", "--bulk-processing", "2.5", "--bulk-status-interval", "3.5",
                       "--bulk-created-at", "recorded", "--activities", "10", "--leads", "5"])
    spec = build_sandbox(args).bulk_spec
    assert (spec.queue_s, spec.processing_s, spec.status_interval_s, spec.created_at) == (1.5, 2.5, 3.5, "recorded")
