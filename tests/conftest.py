"""Fixtures for the source tests: a sandbox on 127.0.0.1, a pipeline into a temporary DuckDB, and a
PostgreSQL server on 127.0.0.1 for the destination tests."""

import os
from pathlib import Path
from typing import Any, Iterator, List

import pytest

from marketo_source.sandbox import DataSpec, MarketoSandbox

from tests.destinations import pipeline_maker
from tests.helpers import SMALL_DATA
from tests.postgres_server import PostgresServer, PostgresUnavailable, server_binaries

# dlt sends anonymous telemetry by default; the tests, and the scripts they start, reach only 127.0.0.1.
os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"

_FIGURES = pytest.StashKey[List[str]]()


@pytest.fixture
def sandbox() -> Iterator[MarketoSandbox]:
    with MarketoSandbox(data=DataSpec(**SMALL_DATA), block_size=500) as instance:
        yield instance


@pytest.fixture
def make_pipeline(tmp_path: Path) -> Any:
    """Returns a function that builds a DuckDB pipeline in the test's temporary folder."""
    return pipeline_maker("duckdb", tmp_path)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server on 127.0.0.1 for the whole session, installed from Debian's packages
    when missing. Skipped where it cannot be had, except in CI, which must never skip it."""
    try:
        server = PostgresServer(server_binaries())
    except PostgresUnavailable as reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs PostgreSQL for the destination tests: {reason}")
        pytest.skip(f"no PostgreSQL server: {reason}")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def figures(pytestconfig: pytest.Config) -> List[str]:
    """Lines printed at the very end of the session, captured output or not.

    For figures a suite gathers across many tests (faults injected, kill phases): they belong
    in the CI log even when the tests pass, and printing from a test would hide them under -q.
    """
    return pytestconfig.stash.setdefault(_FIGURES, [])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(_FIGURES, [])
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(line)
