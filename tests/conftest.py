"""Fixtures for the source tests: a sandbox on 127.0.0.1 and a pipeline into a temporary DuckDB."""

from pathlib import Path
from typing import Any, Iterator

import dlt
import pytest

from marketo_source.sandbox import DataSpec, MarketoSandbox
from tests.helpers import SMALL_DATA


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
            destination=dlt.destinations.duckdb(str(tmp_path / f"{name}.duckdb")),
            dataset_name="marketo",
        )

    return make
