"""The pipeline in a process of its own, for tests/test_crash_safety.py to kill with SIGKILL.

    python -m tests.crash_child PIPELINES_DIR DUCKDB_PATH [FAILPOINT]

Takes the source's settings from SOURCES__MARKETO__* environment variables, as a scheduled
deployment would, and runs one `pipeline.run()` into DuckDB. It prints `PHASE <dlt step>` as dlt
starts a step, `ENDED <dlt step>` as it ends one and `DONE` when the run returned, each flushed
at once, so that the test can tell what a kill interrupted: the last line before the kill.

FAILPOINT places a kill at a moment a random kill rarely hits: the process SIGKILLs itself
right after dlt truncated tables in load (`--die-after-truncate`), right after the load job
that inserts a table's rows committed, before dlt recorded the job as done
(`--die-after-insert=TABLE`), between the DELETE and the INSERT of a table's merge
(`--die-mid-merge=TABLE`: it runs the DELETE alone, then dies), or while normalize deletes the
extracted package it has just committed as a normalized one (`--die-mid-cleanup`: it deletes the
package's new_jobs folder, then dies).
"""

import os
import shutil
import signal
import sys
from typing import Any, Callable, Dict, List

import dlt
from dlt.common.destination.client import RunnableLoadJob
from dlt.common.runtime.collector_base import Collector
from dlt.common.storages.load_package import PackageStorage
from dlt.destinations.impl.duckdb.sql_client import DuckDbSqlClient
from dlt.destinations.sql_client import SqlClientBase

from marketo_source import discard_superseded_packages, duckdb_destination, marketo_source

PIPELINE_NAME = "marketo_crash"
DATASET_NAME = "marketo"
DIE_AFTER_TRUNCATE = "--die-after-truncate"
DIE_AFTER_INSERT = "--die-after-insert="
DIE_MID_MERGE = "--die-mid-merge="
DIE_MID_CLEANUP = "--die-mid-cleanup"


class PhasePrinter(Collector):
    """A dlt progress collector that only announces where each step starts and ends."""

    def update(self, name: str, inc: int = 1, total: Any = None, inc_total: Any = None,
               message: Any = None, label: Any = None) -> None:
        pass

    def _start(self, step: str) -> None:
        print(f"PHASE {step}", flush=True)

    def _stop(self) -> None:
        print(f"ENDED {self.step}", flush=True)


def pipeline_for(pipelines_dir: str, duckdb_path: str, progress: Any = None) -> dlt.Pipeline:
    """The pipeline the child runs; the test builds the same one to read what was loaded."""
    return dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        pipelines_dir=pipelines_dir,
        destination=duckdb_destination(duckdb_path),
        dataset_name=DATASET_NAME,
        progress=progress,
    )


def die_after_truncate() -> None:
    """Makes dlt's SQL client kill this process as soon as it has truncated tables."""
    truncate = SqlClientBase.truncate_tables

    def truncate_then_die(client: SqlClientBase, *tables: str) -> None:
        truncate(client, *tables)
        if tables:
            print(f"TRUNCATED {' '.join(tables)}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    # The failpoint: dlt's method replaced on purpose, which mypy does not allow.
    SqlClientBase.truncate_tables = truncate_then_die  # type: ignore[method-assign, assignment]


def die_after_insert(table: str) -> None:
    """Makes dlt kill this process once the load job of `table` committed its rows, before the
    loader marks the job done."""
    run_managed = RunnableLoadJob.run_managed

    def run_managed_then_die(job: RunnableLoadJob, *args: Any) -> None:
        if job.load_table_name == table:
            run = job.run

            def run_then_die() -> None:
                run()
                print(f"INSERTED {table}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

            # The failpoint: dlt's method replaced on purpose, which mypy does not allow.
            job.run = run_then_die  # type: ignore[method-assign]
        run_managed(job, *args)

    # The failpoint: dlt's method replaced on purpose, which mypy does not allow.
    RunnableLoadJob.run_managed = run_managed_then_die  # type: ignore[method-assign]


def die_mid_merge(table: str) -> None:
    """Makes dlt's DuckDB client run only the DELETE of `table`'s merge, then kill this process."""
    execute_sql = DuckDbSqlClient.execute_sql

    def delete_then_die(client: DuckDbSqlClient, sql: Any, *args: Any, **kwargs: Any) -> Any:
        delete, _, rest = str(sql).partition(";")
        if delete.lstrip().startswith("DELETE FROM") and f'."{table}"' in delete and "INSERT INTO" in rest:
            execute_sql(client, delete, *args, **kwargs)
            print(f"DELETED {table}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return execute_sql(client, sql, *args, **kwargs)

    # The failpoint: dlt's method replaced on purpose, which mypy does not allow.
    DuckDbSqlClient.execute_sql = delete_then_die  # type: ignore[method-assign, assignment]


def die_mid_cleanup() -> None:
    """Makes normalize's deletion of a processed extracted package stop halfway, killed."""
    delete_package = PackageStorage.delete_package

    def delete_halfway_then_die(packages: PackageStorage, load_id: str, not_exists_ok: bool = False) -> None:
        new_jobs = os.path.join(packages.storage.storage_path, load_id, PackageStorage.NEW_JOBS_FOLDER)
        if "extracted" in packages.storage.storage_path and os.path.isdir(new_jobs):
            shutil.rmtree(new_jobs)
            print(f"HALF-DELETED {load_id}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        delete_package(packages, load_id, not_exists_ok)

    # The failpoint: dlt's method replaced on purpose, which mypy does not allow.
    PackageStorage.delete_package = delete_halfway_then_die  # type: ignore[method-assign, assignment]


FAILPOINTS: Dict[str, Callable[[str], None]] = {
    DIE_AFTER_TRUNCATE: lambda _: die_after_truncate(),
    DIE_AFTER_INSERT: die_after_insert,
    DIE_MID_MERGE: die_mid_merge,
    DIE_MID_CLEANUP: lambda _: die_mid_cleanup(),
}
"""Option (or option prefix, before the table name) -> what installs the failpoint."""


def install_failpoint(option: str) -> None:
    for prefix, install in FAILPOINTS.items():
        if option.startswith(prefix):
            install(option[len(prefix):])
            return
    raise SystemExit(f"unknown option {option!r}; known: {', '.join(FAILPOINTS)}")


def main(argv: List[str]) -> None:
    pipelines_dir, duckdb_path, *options = argv
    for option in options:
        install_failpoint(option)
    pipeline = pipeline_for(pipelines_dir, duckdb_path, PhasePrinter())
    discard_superseded_packages(pipeline)  # as pipelines/marketo_pipeline.py does before each run
    pipeline.run(marketo_source())
    print("DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
