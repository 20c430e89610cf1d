"""Making dlt runs crash safe where dlt 1.31 is not, found by the crash-safety tests.

Use `duckdb_destination` for DuckDB (it also bounds DuckDB's memory) and call
`discard_superseded_packages` before each run.
"""

from typing import List, Optional

import dlt
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

DUCKDB_MEMORY_LIMIT = "128MB"
"""DuckDB's memory_limit while loading; past it DuckDB spills to disk. With its own default, 80 %
of RAM, loading a million activities took 650-730 MB, with this limit 260-270 MB (the load alone,
measured with the benchmark in tests/benchmarks). The cost shows on large loads: a table of 1.5
million rows loaded about 3 times slower than unbounded. Lower limits stop wide tables: at 64MB a
table of a million rows of about 800 bytes failed to load (DuckDB's Out of Memory, with 1 or 2 threads)."""
DUCKDB_THREADS = 1
"""DuckDB's threads. Each holds working memory of its own, and the load jobs already run beside
each other: loading a million activities (2 cores) peaked at 285 MB with one thread and 2 jobs,
at 299-303 MB with DuckDB's 2 threads and 2 or 4 jobs, and took 20-30 % less CPU. The price
shows on loads that spill to disk: one table of a million 800-byte rows took 417 s against 330 s
with 2 threads and 4 jobs; for such first loads pass threads=None or a larger memory_limit."""
DUCKDB_LOAD_JOBS = 2
"""Tables loaded at once. Each job running beside the others holds memory of its own: loading
100,000 activities took 250 MB with dlt's default of 20 jobs, 210 MB with 4 and 180 MB with 2
(with 2 DuckDB threads, 2 jobs loaded 100 tables 40 % slower than 4)."""


def duckdb_destination(
    path: str, memory_limit: Optional[str] = DUCKDB_MEMORY_LIMIT, load_jobs: int = DUCKDB_LOAD_JOBS,
    threads: Optional[int] = DUCKDB_THREADS,
) -> dlt.destinations.duckdb:
    """DuckDB with transactions, and with bounded memory.

    dlt 1.31 declares no transactions for DuckDB, so a merge runs its DELETE and its INSERT
    separately and a crash between them loses the rows being replaced until a later run reads
    them again.

    Args:
        path: The database file.
        memory_limit: DuckDB's memory_limit while loading; raise it (e.g. "1GB") for faster large
            loads. None leaves DuckDB's default (80 % of RAM).
        load_jobs: Tables loaded at once.
        threads: DuckDB's threads; None leaves DuckDB's default (one per core).
    """
    chosen = {"memory_limit": memory_limit, "threads": threads}
    global_config = {name: value for name, value in chosen.items() if value is not None}
    credentials = DuckDbCredentials(path, global_config=global_config or None)
    return dlt.destinations.duckdb(credentials, supports_transactions=True, max_parallel_load_jobs=load_jobs)


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
