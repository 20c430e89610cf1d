"""The DuckDB scenarios again on PostgreSQL (a real server on 127.0.0.1) and on the filesystem
destination writing Parquet, plain or as Delta tables; and the types and keys every destination
ends up with.

Plain Parquet cannot merge: dlt appends instead, so rows read again repeat. Rows read again on
files have a test of their own, which also checks the README's query that reads each row once.
"""

import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import dlt
import pytest
from dlt.common.schema.typing import TColumnSchema

from marketo_source.sandbox import DEMO_DATA, DataSpec, MarketoSandbox

from tests import helpers, test_incremental, test_source
from tests.destinations import KINDS, native_columns, pipeline_maker, query_rows
from tests.expected import key_columns
from tests.helpers import (
    SMALL_DATA,
    assert_catalog_matches,
    assert_everything_matches,
    assert_rejects_match,
    source_for,
    table_names,
    table_rows,
)
from tests.test_pipeline_script import REPO

SCENARIOS = [
    test_source.test_first_run_loads_exactly_the_sandbox_records,
    test_source.test_second_run_loads_exactly_the_new_activities,
    test_source.test_malformed_records_still_land,
    test_incremental.test_lookback_rereads_the_window_and_merges_the_overlap,
]
"""DuckDB tests run as they are on the other destinations (pytest runs them on DuckDB already)."""

REREADING = {
    test_source.test_second_run_loads_exactly_the_new_activities,  # the late-commit window
    test_incremental.test_lookback_rereads_the_window_and_merges_the_overlap,
}
"""Scenarios that read rows again: on files, `test_rows_read_again_on_files` instead."""

OTHER_KINDS = [kind for kind in KINDS if kind != "duckdb"]
FILES = ("parquet", "delta")

FILE_TYPES = {"bigint": "int64", "double": "double", "bool": "bool", "date": "date32[day]",
              "timestamp": "timestamp[us, tz=UTC]", "text": "string"}
NATIVE_TYPES: Dict[str, Dict[str, str]] = {
    "duckdb": {"bigint": "bigint", "double": "double", "bool": "boolean", "date": "date",
               "timestamp": "timestamp with time zone", "text": "varchar"},
    "postgres": {"bigint": "bigint", "double": "double precision", "bool": "boolean", "date": "date",
                 "timestamp": "timestamp with time zone", "text": "character varying"},
    "parquet": FILE_TYPES,
    "delta": FILE_TYPES,
}
"""Per destination, the type it should itself hold for each column type of the README's table."""


@pytest.mark.parametrize(
    ("scenario", "kind"),
    [(s, k) for s in SCENARIOS for k in OTHER_KINDS if not (k in FILES and s in REREADING)],
    ids=lambda value: value.__name__.removeprefix("test_") if callable(value) else value,
)
def test_duckdb_scenario_on_another_destination(
    scenario: Callable[..., None], kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # Each scenario asks for what it needs by name, as pytest would give it.
    wanted = inspect.signature(scenario).parameters
    arguments: Dict[str, Any] = {"make_pipeline": _maker(kind, request, tmp_path)}
    if "sandbox" in wanted:
        arguments["sandbox"] = request.getfixturevalue("sandbox")
    scenario(**arguments)


def test_every_destination_gets_the_same_types_keys_and_rejected_records(request: pytest.FixtureRequest,
                                                                          tmp_path: Path) -> None:
    with MarketoSandbox(data=DataSpec(**SMALL_DATA, unkeyed=3), block_size=500) as sandbox:
        sandbox.limits.calls_per_window = None  # four full reads in a row
        pipelines = {kind: _maker(kind, request, tmp_path / kind)() for kind in KINDS}
        for pipeline in pipelines.values():
            pipeline.run(source_for(sandbox))
            assert assert_rejects_match(pipeline, sandbox.ground_truth()) == 3
    tables = {kind: _table_hints(pipeline) for kind, pipeline in pipelines.items()}
    native = {kind: native_columns(pipeline, list(tables[kind])) for kind, pipeline in pipelines.items()}
    for kind in OTHER_KINDS:
        assert tables[kind] == tables["duckdb"], f"dlt's schema on {kind} differs from DuckDB's"

    assert {"lead_changes", "lead_field_changes", "deleted_leads", "activity_types"} <= set(tables["duckdb"])
    checked = set()
    for table, (write_disposition, columns) in tables["duckdb"].items():
        keys = sorted(name for name, (_, primary_key, _) in columns.items() if primary_key)
        assert keys == sorted(key_columns(table) if write_disposition == "merge" else ()), table
        for name, data_type in (("activity_date", "timestamp"), ("id", "bigint"), ("lead_id", "bigint")):
            assert columns.get(name, (data_type,))[0] == data_type, f"{table}.{name}"
        for kind in KINDS:
            expected = {name: NATIVE_TYPES[kind][data_type] for name, (data_type, _, _) in columns.items()}
            held = {name: native_type for name, (native_type, _) in native[kind][table].items()}
            assert held == expected, f"{kind}: {table}"
            assert not any(native[kind][table][key][1] for key in keys), f"{kind}: {table} keys may be null"
        checked |= {data_type for data_type, _, _ in columns.values()}
    assert checked == set(FILE_TYPES), "the data should hold every column type"


@pytest.mark.parametrize("kind", ["postgres", "delta"])  # plain Parquet: the same, without --table-format
def test_the_pipeline_script_loads_into(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    make = _maker(kind, request, tmp_path)
    pipeline = make("marketo_sandbox")  # where the script should load: read back below
    # Configured as the README says: the destination's settings in the environment.
    if kind == "postgres":
        settings = {"DESTINATION__POSTGRES__CREDENTIALS": request.getfixturevalue("postgres_server").credentials}
        options = ["--destination", "postgres"]
    else:
        settings = {"DESTINATION__FILESYSTEM__BUCKET_URL": pipeline.destination.config_params["bucket_url"]}
        options = ["--destination", "filesystem", "--table-format", "delta"]
    result = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "marketo_pipeline.py"), "--sandbox",
         "--dataset", pipeline.dataset_name, *options],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, **settings, "DLT_DATA_DIR": str(tmp_path)},  # pipelines under tmp_path/pipelines, as make's
    )
    assert result.returncode == 0, result.stderr[-3000:]

    with MarketoSandbox(data=DEMO_DATA) as sandbox:  # the same activities the script's sandbox served
        assert_everything_matches(make("marketo_sandbox"), sandbox)  # as the script left it


@pytest.mark.parametrize("kind", FILES)
def test_rows_read_again_on_files(kind: str, sandbox: MarketoSandbox, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = pipeline_maker(kind, tmp_path)()
    pipeline.run(source_for(sandbox))
    sandbox.add_activities(new=40)
    pipeline.run(source_for(sandbox, lookback_minutes=24 * 60))
    truth = sandbox.ground_truth()
    catalog_rows = len(table_rows(pipeline, "activity_types"))
    activities_repeated = sum(_repeated_keys(pipeline, table) for table in _merged_tables(pipeline)
                              if table.startswith("activity_") and not table.startswith("activity_type"))
    if kind == "delta":  # Delta tables merge: nothing repeats
        assert (catalog_rows, activities_repeated) == (len(truth["activity_types"]), 0)
    else:
        # What the README says of plain Parquet: each run adds the catalog again, and the
        # lookback's re-read activities are there twice; and what to do: read each key once.
        assert catalog_rows == 2 * len(truth["activity_types"]) and activities_repeated > 0
        monkeypatch.setattr(helpers, "table_rows", newest_rows)
    assert_everything_matches(pipeline, sandbox)
    assert_catalog_matches(pipeline, truth)
    assert all(_repeated_keys(pipeline, table, helpers.table_rows) == 0 for table in _merged_tables(pipeline))


def newest_rows(pipeline: dlt.Pipeline, table: str) -> List[Dict[str, Any]]:
    """The README's query for plain Parquet: one row per key, from the newest load where rows can change."""
    if table not in _merged_tables(pipeline):
        return table_rows(pipeline, table)  # appended on every destination: rejects, retention gaps
    # Activities never change, so any copy will do (their Arrow rows carry no load id); the
    # catalog tables' rows can, and carry it.
    newest = " ORDER BY _dlt_load_id DESC" if "_dlt_load_id" in pipeline.default_schema.get_table_columns(table) else ""
    keys = ", ".join(key_columns(table))
    return query_rows(pipeline, f"SELECT * FROM {table} QUALIFY row_number() OVER (PARTITION BY {keys}{newest}) = 1")


def _merged_tables(pipeline: dlt.Pipeline) -> List[str]:
    tables = pipeline.default_schema.tables
    return [table for table in table_names(pipeline) if tables[table].get("write_disposition") == "merge"]


def _repeated_keys(pipeline: dlt.Pipeline, table: str, read: Callable[..., List[Dict[str, Any]]] = table_rows) -> int:
    rows = read(pipeline, table)
    return len(rows) - len({tuple(row.get(c) for c in key_columns(table)) for row in rows})


def _maker(kind: str, request: pytest.FixtureRequest, folder: Path) -> Callable[..., dlt.Pipeline]:
    credentials = request.getfixturevalue("postgres_server").credentials if kind == "postgres" else None
    return pipeline_maker(kind, folder, credentials)


def _table_hints(pipeline: dlt.Pipeline) -> Dict[str, Tuple[Optional[str], Dict[str, Tuple[str, bool, bool]]]]:
    """Per data table, its write disposition and, per column, dlt's data type, primary key, merge key."""
    schema = pipeline.default_schema
    return {
        table: (schema.tables[table]["write_disposition"], {
            name: (_data_type(column), bool(column.get("primary_key")), bool(column.get("merge_key")))
            for name, column in schema.get_table_columns(table).items()
        })
        for table in table_names(pipeline)
    }


def _data_type(column: TColumnSchema) -> str:
    """dlt's data type of a loaded column, which every loaded column has."""
    data_type = column.get("data_type")
    assert data_type is not None, f"column {column.get('name')} has no data type"
    return data_type
