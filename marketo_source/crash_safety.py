"""Making dlt runs crash safe where dlt 1.31 is not, found by the crash-safety tests.

Use `duckdb_destination` for DuckDB and call `discard_superseded_packages` before each run.
"""

from typing import List

import dlt
from dlt.common.destination import Destination


def duckdb_destination(path: str) -> Destination:
    """DuckDB with transactions.

    dlt 1.31 declares none for DuckDB, so a merge runs its DELETE and its INSERT separately and a
    crash between them loses the rows being replaced until a later run reads them again.
    """
    return dlt.destinations.duckdb(path, supports_transactions=True)


def discard_superseded_packages(pipeline: dlt.Pipeline) -> List[str]:
    """Deletes extracted packages that dlt already normalized; returns their load ids.

    After normalizing a package dlt deletes its extracted copy. A crash in the middle of that
    leaves a half-deleted copy that makes every later run fail in normalize. Its rows are safe
    in the normalized (or loaded) package, so the copy can go.
    """
    done = set(pipeline.list_normalized_load_packages()) | set(pipeline.list_completed_load_packages())
    superseded = [load_id for load_id in pipeline.list_extracted_load_packages() if load_id in done]
    extracted = pipeline._get_normalize_storage().extracted_packages
    for load_id in superseded:
        extracted.delete_package(load_id, not_exists_ok=True)
    return superseded
