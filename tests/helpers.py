"""Helpers of the source tests: the source pointed at a sandbox, and reading loaded tables."""

from typing import Any, Dict, List

import dlt

from marketo_source import marketo_source
from marketo_source.sandbox import MarketoSandbox

SMALL_DATA = dict(seed=7, leads=80, activities=4000, days=20, start_date="2026-10-01T00:00:00Z")
FAST_CLIENT = dict(rate_limit_calls=1000, rate_limit_period_s=1.0, max_concurrency=5, max_attempts=4)


def source_for(sandbox: MarketoSandbox, **kwargs: Any) -> Any:
    """The Marketo source pointed at a sandbox, with limits loose enough for quick tests."""
    settings = dict(
        base_url=sandbox.base_url,
        client_id=sandbox.client_id,
        client_secret=sandbox.client_secret,
        start_date=SMALL_DATA["start_date"],
        **FAST_CLIENT,
    )
    return marketo_source(**{**settings, **kwargs})


def table_rows(pipeline: dlt.Pipeline, table: str) -> List[Dict[str, Any]]:
    with pipeline.sql_client() as client:
        with client.execute_query(f"SELECT * FROM {table}") as cursor:
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]


def table_names(pipeline: dlt.Pipeline) -> List[str]:
    return [t for t in pipeline.default_schema.data_table_names() if not t.startswith("_dlt")]
