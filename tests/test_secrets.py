"""Secrets never leak: not in logs, errors, traces, state, load packages or the loaded tables.

The pipeline runs as a user would schedule it: a separate process configured only through
environment variables, with dlt logging at DEBUG, while the sandbox makes it retry and renew
its token. Then every output and every file the run wrote is searched for the secret values.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable, List

import duckdb
import pytest

from marketo_source import MarketoAuthError, MarketoClient
from marketo_source.sandbox import DataSpec, Fault, MarketoSandbox
from marketo_source.settings import ACTIVITY_TYPES_PATH

REPO = Path(__file__).resolve().parent.parent
SECRET = "sEcReT-7f3a9c41-never-print-me"


def files_containing(folder: Path, needles: Iterable[bytes]) -> List[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path} holds {needle!r}" for needle in needles if needle in data]
    return found


def rows_containing(database: Path, needles: Iterable[str]) -> List[str]:
    found = []
    with duckdb.connect(str(database), read_only=True) as db:
        tables = db.sql("select table_schema, table_name from information_schema.tables").fetchall()
        for schema, table in tables:
            for row in db.sql(f'select * from "{schema}"."{table}"').fetchall():
                text = repr(row)
                found += [f"{schema}.{table} holds a secret" for needle in needles if needle in text]
    return found


def test_secrets_never_reach_logs_traces_state_or_tables(tmp_path: Path) -> None:
    data = DataSpec(seed=31, leads=40, activities=2000, days=10, start_date="2026-10-01T00:00:00Z")
    faults = [Fault("606", calls=(4,)), Fault("602", calls=(7,)), Fault("http500", calls=(9,))]
    with MarketoSandbox(data=data, client_secret=SECRET, faults=faults, token_ttl_s=2) as sandbox:
        env = {
            **os.environ,
            "DLT_DATA_DIR": str(tmp_path / "dlt"),
            "RUNTIME__LOG_LEVEL": "DEBUG",
            "SOURCES__MARKETO__BASE_URL": sandbox.base_url,
            "SOURCES__MARKETO__CLIENT_ID": sandbox.client_id,
            "SOURCES__MARKETO__CLIENT_SECRET": SECRET,
            "SOURCES__MARKETO__START_DATE": "2026-10-01T00:00:00Z",
            "SOURCES__MARKETO__BACKOFF_BASE_S": "0.01",
        }
        run = subprocess.run(
            [sys.executable, str(REPO / "pipelines" / "marketo_pipeline.py"), "--pipeline-name", "secrets_check"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )
        tokens = sandbox.issued_tokens()
        injected = sandbox.stats()["faults_injected"]

    assert run.returncode == 0, run.stderr[-2000:]
    assert injected == {"606": 1, "602": 1, "http500": 1}, "the run should have retried and renewed its token"
    assert "DEBUG" in run.stderr, "the run should have logged at DEBUG"
    assert tokens, "the sandbox issued no token"
    needles = [SECRET, *tokens]
    output = run.stdout + run.stderr
    assert [n for n in needles if n in output] == []
    assert files_containing(tmp_path, [n.encode() for n in needles]) == []
    assert rows_containing(tmp_path / "secrets_check.duckdb", needles) == []


def test_errors_do_not_carry_the_secret(sandbox: MarketoSandbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    client = MarketoClient(sandbox.base_url, sandbox.client_id, SECRET, backoff_base_s=0.01)
    with pytest.raises(MarketoAuthError) as raised:
        client.get(ACTIVITY_TYPES_PATH)
    error = raised.value
    chain = [error, error.__cause__, error.__context__]
    assert all(SECRET not in repr(e) and SECRET not in str(e) for e in chain if e is not None)
    assert SECRET not in caplog.text
    assert SECRET not in repr(client.auth)
