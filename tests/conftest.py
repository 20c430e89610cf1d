"""Fixtures for the source tests: a sandbox on 127.0.0.1 and a pipeline into a temporary DuckDB."""

import os
from pathlib import Path
from typing import Any, Iterator, List

import dlt
import pytest

from marketo_source import duckdb_destination
from marketo_source.sandbox import DataSpec, MarketoSandbox
from tests.helpers import SMALL_DATA

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

    def make(name: str = "marketo_test") -> dlt.Pipeline:
        return dlt.pipeline(
            pipeline_name=name,
            pipelines_dir=str(tmp_path / "pipelines"),
            destination=duckdb_destination(str(tmp_path / f"{name}.duckdb")),
            dataset_name="marketo",
        )

    return make


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
