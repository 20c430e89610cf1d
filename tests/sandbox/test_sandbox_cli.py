"""`python -m marketo_source.sandbox` from the shell (behaviour 10)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import requests


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_cli_prints_credentials_serves_and_stops_on_signal(stop_signal: signal.Signals) -> None:
    command = [sys.executable, "-m", "marketo_source.sandbox", "--port", "0", "--leads", "20", "--activities", "300",
               "--client-id", "cli-id", "--client-secret", "cli-secret"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        printed = dict(process.stdout.readline().strip().split("=", 1) for _ in range(3))
        assert printed["client_id"] == "cli-id" and printed["client_secret"] == "cli-secret"
        assert printed["base_url"].startswith("http://127.0.0.1:")
        token = requests.get(f"{printed['base_url']}/identity/oauth/token", timeout=10, params={
            "grant_type": "client_credentials", "client_id": "cli-id", "client_secret": "cli-secret"}).json()
        types = requests.get(f"{printed['base_url']}/rest/v1/activities/types.json", timeout=10,
                             headers={"Authorization": f"Bearer {token['access_token']}"}).json()
        assert types["success"]
        process.send_signal(stop_signal)
        assert process.wait(timeout=10) == 0
        assert process.stdout.read().strip() == "stopped"
    finally:
        process.kill()
        process.stdout.close()
