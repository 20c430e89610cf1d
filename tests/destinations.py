"""The destinations the tests load into, and reading back what a pipeline loaded, whichever it is.

DuckDB and PostgreSQL are read through dlt's SQL client; so is the filesystem destination's
plain Parquet (dlt puts DuckDB views over the files). Delta tables are read with the
`deltalake` package instead: DuckDB reads Delta only through an extension it would download,
and the tests reach nothing but 127.0.0.1.
"""

import secrets
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import dlt
import pyarrow as pa
import pyarrow.parquet as pq
from dlt.common.destination import Destination
from dlt.common.destination.exceptions import DestinationUndefinedEntity

from marketo_source import duckdb_destination
from marketo_source.destinations import filesystem_destination

KINDS = ("duckdb", "postgres", "parquet", "delta")
"""duckdb, postgres, and the filesystem destination writing plain Parquet or Delta tables."""


def pipeline_maker(kind: str, folder: Path, postgres_credentials: Optional[str] = None) -> Callable[..., dlt.Pipeline]:
    """A function that builds a pipeline into `kind` with its files under `folder`, as the
    `make_pipeline` fixture does: one dataset per pipeline name, apart from every other test's."""
    # One PostgreSQL database serves the whole session: each test gets datasets of its own, or
    # dlt would restore another test's state from the destination.
    suffix = secrets.token_hex(4)

    def make(name: str = "marketo_test") -> dlt.Pipeline:
        dataset = f"marketo_{suffix}_{name}" if kind == "postgres" else "marketo"
        return dlt.pipeline(pipeline_name=name, pipelines_dir=str(folder / "pipelines"),
                            destination=_destination(kind, folder, name, postgres_credentials), dataset_name=dataset)

    return make


def _destination(kind: str, folder: Path, name: str, postgres_credentials: Optional[str]) -> Destination:
    if kind == "duckdb":
        return duckdb_destination(str(folder / f"{name}.duckdb"))
    if kind == "postgres":
        assert postgres_credentials, "the postgres destination needs the postgres_server fixture"
        return dlt.destinations.postgres(postgres_credentials)
    return filesystem_destination((folder / f"{name}_bucket").as_uri(), "delta" if kind == "delta" else None)


def is_delta(pipeline: dlt.Pipeline) -> bool:
    """Whether the pipeline writes Delta tables: asked of the destination, or of `run(table_format=...)`."""
    return pipeline.destination.caps_params.get("preferred_table_format") == "delta" or any(
        t.get("table_format") == "delta" for t in pipeline.default_schema.data_tables()
    )


def table_rows(pipeline: dlt.Pipeline, table: str) -> List[Dict[str, Any]]:
    if is_delta(pipeline):
        return _delta_table(pipeline, table).to_pylist()
    return query_rows(pipeline, f"SELECT * FROM {table}")


def query_rows(pipeline: dlt.Pipeline, query: str) -> List[Dict[str, Any]]:
    with pipeline.sql_client() as client, client.execute_query(query) as cursor:
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def stored_tables(pipeline: dlt.Pipeline, tables: List[str]) -> List[str]:
    """Those of `tables` that exist in the destination."""
    if pipeline.destination.destination_name == "filesystem":
        with pipeline.destination_client() as client:
            return [table for table in tables if _files_of(client, table)]
    with pipeline.sql_client() as client:
        found = client.execute_sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", client.dataset_name
        )
    existing = {row[0] for row in found or []}
    return [table for table in tables if table in existing]


def native_columns(pipeline: dlt.Pipeline, tables: List[str]) -> Dict[str, Dict[str, Tuple[str, bool]]]:
    """Per table, per column, the type the destination itself holds (the database's type name, or
    the Arrow type of the files) and whether it may be null. Every Parquet file must agree."""
    if pipeline.destination.destination_name != "filesystem":
        rows = query_rows(pipeline, (
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
            f"WHERE table_schema = '{pipeline.dataset_name}'"
        ))
        columns: Dict[str, Dict[str, Tuple[str, bool]]] = {table: {} for table in tables}
        for row in rows:
            if row["table_name"] in columns:
                columns[row["table_name"]][row["column_name"]] = (row["data_type"].lower(), row["is_nullable"] == "YES")
        return columns
    if is_delta(pipeline):
        from dlt.common.libs.deltalake import get_delta_tables

        return {name: _arrow_columns(table.to_pyarrow_table().schema)
                for name, table in get_delta_tables(pipeline, *tables).items()}
    with pipeline.destination_client() as client:
        return {table: _agreed_columns(table, [pq.read_schema(path) for path in _files_of(client, table)])
                for table in tables}


def _agreed_columns(table: str, schemas: List[pa.Schema]) -> Dict[str, Tuple[str, bool]]:
    columns: Dict[str, Tuple[str, bool]] = {}
    for schema in schemas:
        for name, column in _arrow_columns(schema).items():
            assert columns.setdefault(name, column) == column, (
                f"{table}.{name}: {column} in one file, {columns[name]} in another"
            )
    return columns


def _delta_table(pipeline: dlt.Pipeline, table: str) -> pa.Table:
    from dlt.common.libs.deltalake import get_delta_tables  # needs the deltalake package

    return get_delta_tables(pipeline, table)[table].to_pyarrow_table()


def _files_of(client: Any, table: str) -> List[str]:
    try:
        return [path for path in client.list_table_files(table) if path.endswith(".parquet")]
    except DestinationUndefinedEntity:  # the table's folder was never written
        return []


def _arrow_columns(schema: pa.Schema) -> Dict[str, Tuple[str, bool]]:
    return {field.name: (str(field.type), field.nullable) for field in schema}
