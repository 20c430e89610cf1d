"""`python -m marketo_source.sandbox` from the shell (behaviour 10)."""

from __future__ import annotations

import signal
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

import pytest
import requests

from marketo_source.sandbox.__main__ import parse_args

CREDENTIALS = ("--client-id", "cli-id", "--client-secret", "cli-secret")
DENSE_TYPES = (1, 2, 3, 6, 7, 10, 11, 12, 13, 22)
DENSE = ",".join(map(str, DENSE_TYPES))


@contextmanager
def _serving(*options: str) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """A sandbox CLI process with small data, and the base_url and credentials it printed."""
    command = [sys.executable, "-m", "marketo_source.sandbox", "--port", "0", "--leads", "20", "--activities", "300",
               *CREDENTIALS, *options]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None  # a pipe, as asked
    try:
        yield process, dict(process.stdout.readline().strip().split("=", 1) for _ in range(3))
    finally:
        process.kill()
        process.stdout.close()


def _session(printed: dict[str, str]) -> requests.Session:
    token = requests.get(f"{printed['base_url']}/identity/oauth/token", timeout=10, params={
        "grant_type": "client_credentials", "client_id": "cli-id", "client_secret": "cli-secret"}).json()
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
