"""One pipeline run (marketo_source + dlt into DuckDB) in a fresh process, measured from inside.

The parent calls `run_in_child(config, workdir)`; the child (`python -m tests.benchmarks.pipeline_child
CONFIG_JSON`) runs extract, normalize and load, then prints one JSON line with the timings, the rows
loaded, the calls the source counted and its peak RSS (VmHWM: the process's high-water mark).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, TypedDict

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULT_PREFIX = "BENCH_RESULT "
DATA_TABLES_PREFIX = "activity_"
DATA_TABLES = ("lead_changes", "deleted_leads")
METADATA_TABLES = ("activity_types", "activity_type_attributes")
"""Tables holding one row per activity record are activity_* (but the metadata tables) and DATA_TABLES;
lead_field_changes holds one row per changed field."""
BACKFILL_SETTINGS = ("backfill", "bulk_poll_interval_s")
"""Settings of the source's history reading that the config may give."""
REPORT_COLUMNS = ("stream", "records", "calls", "bulk_jobs_created", "bulk_bytes", "bulk_wait_s", "stopped")
"""The columns of marketo_run_reports the benchmarks read."""


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    """Resets VmHWM to the current RSS (Linux: 5 > /proc/self/clear_refs); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _activity_rows(row_counts: Dict[str, int]) -> int:
    return sum(n for table, n in row_counts.items() if table in DATA_TABLES
               or (table.startswith(DATA_TABLES_PREFIX) and table not in METADATA_TABLES))


def run_pipeline(config: Dict[str, Any]) -> Dict[str, Any]:
    """Runs the source into DuckDB under `config["workdir"]` and measures each step.

    Args:
        config: base_url, client_id, client_secret, start_date, rate_limit_calls,
            rate_limit_period_s, max_concurrency, workdir and, optionally, activity_type_ids,
            time_slices, backfill, bulk_poll_interval_s and count_tables (true: count the rows each
            table holds after the load).

    Returns:
        Seconds and CPU seconds per step, rows per table, activity rows, the source's calls per path,
        stops, Arrow's allocator, the RSS after imports and the peak RSS, overall and per step
        (VmHWM, reset after each step); with count_tables, `table_rows` (rows each table holds) and
        `run_reports` (the rows of marketo_run_reports).
    """
    # First, so that Arrow's allocator is the one the pipeline script chooses (unless the
    # environment names one: the benchmark's --arrow-allocator).
    import pipelines.marketo_pipeline  # noqa: F401
    # isort: split

    import dlt
    import pyarrow

    from marketo_source import duckdb_destination, marketo_source

    baseline_rss = _status_mb("VmRSS")
    workdir = Path(config["workdir"])
    source = marketo_source(
        base_url=config["base_url"], client_id=config["client_id"], client_secret=config["client_secret"],
        start_date=config["start_date"], rate_limit_calls=config["rate_limit_calls"],
        rate_limit_period_s=config["rate_limit_period_s"], max_concurrency=config["max_concurrency"],
        activity_type_ids=config.get("activity_type_ids"), time_slices=config.get("time_slices", False),
        **{name: config[name] for name in BACKFILL_SETTINGS if name in config},
    )
    pipeline = dlt.pipeline(pipeline_name="marketo_bench", pipelines_dir=str(workdir / "pipelines"),
                            destination=duckdb_destination(str(workdir / "bench.duckdb"), **_memory_limit()),
                            dataset_name="marketo")
    seconds, cpu_seconds, step_peaks = _run_steps(pipeline, source)
    per_step = step_peaks.pop("per_step")
    normalized = pipeline.last_trace.last_normalize_info if pipeline.last_trace else None
    row_counts = dict(normalized.row_counts) if normalized else {}
    state = pipeline.state.get("sources", {}).get("marketo", {})
    last_runs = {name: r["last_run"] for name, r in state.get("resources", {}).items() if "last_run" in r}
    stops = {name: run["stopped"] for name, run in last_runs.items() if run["stopped"]}
    held = _held_rows(pipeline) if config.get("count_tables") else {}
    return {
        **held, **{f"{step}_s": value for step, value in seconds.items()}, "total_s": sum(seconds.values()),
        "cpu_s": cpu_seconds, "total_cpu_s": sum(cpu_seconds.values()),
        "rows": row_counts, "activity_rows": _activity_rows(row_counts),
        "calls": state.get("last_run_calls", {}), "stops": stops, "baseline_rss_mb": baseline_rss,
        "arrow_allocator": pyarrow.default_memory_pool().backend_name,
        "time_slices": sum(run.get("time_slices") or 0 for run in last_runs.values()),
        "peak_rss_mb": max(step_peaks.values()) if per_step else step_peaks["load"],
        "step_peak_rss_mb": step_peaks if per_step else None,
    }


def _held_rows(pipeline: Any) -> Dict[str, Any]:
    """The rows each data table holds after the load (merge keeps one per key), and the run reports."""
    from marketo_source.settings import RUN_REPORTS_TABLE

    with pipeline.sql_client() as client:
        def query(sql: str, table: str) -> List[Tuple[Any, ...]]:
            return list(client.execute_sql(sql.format(client.make_qualified_table_name(table))))

        counts = {table: query("select count(*) from {}", table)[0][0]
                  for table in pipeline.default_schema.data_table_names()}
        reports = [dict(zip(REPORT_COLUMNS, row, strict=True))
                   for row in query(f"select {', '.join(REPORT_COLUMNS)} from {{}}", RUN_REPORTS_TABLE)]
    return {"table_rows": counts, "run_reports": reports}


MEMORY_LIMIT_VARIABLE = "MARKETO_BENCH_DUCKDB_MEMORY_LIMIT"
"""Set by the benchmark's --duckdb-memory-limit: DuckDB's memory_limit, or "none" for DuckDB's default."""


class _MemoryLimit(TypedDict, total=False):
    memory_limit: Optional[str]


def _memory_limit() -> _MemoryLimit:
    """duckdb_destination's memory_limit argument, if the benchmark sets one."""
    limit = os.environ.get(MEMORY_LIMIT_VARIABLE)
    if limit is None:
        return {}
    return {"memory_limit": None if limit == "none" else limit}


def _run_steps(pipeline: Any, source: Any) -> Tuple[Dict[str, float], Dict[str, float], Dict[str, Any]]:
    """Runs extract, normalize and load; returns seconds, CPU seconds (all threads) and peak RSS per step.

    The peaks are per step when VmHWM can be reset ("per_step": True), else cumulative.
    """
    seconds: Dict[str, float] = {}
    cpu_seconds: Dict[str, float] = {}
    peaks: Dict[str, Any] = {}
    steps = (("extract", lambda: pipeline.extract(source)), ("normalize", pipeline.normalize), ("load", pipeline.load))
    for name, step in steps:
        started, cpu_started = time.perf_counter(), time.process_time()
        step()
        seconds[name] = time.perf_counter() - started
        cpu_seconds[name] = time.process_time() - cpu_started
        peaks[name] = _status_mb("VmHWM")
        peaks["per_step"] = _reset_peak()
    return seconds, cpu_seconds, peaks


def run_in_child(config: Dict[str, Any], wrapper: Sequence[str] = ()) -> Dict[str, Any]:
    """Runs `run_pipeline(config)` in a fresh Python process and returns its result.

    Args:
        config: As for `run_pipeline`; `workdir` is also the child's working directory, so the
            repository's .dlt/ settings do not apply.
        wrapper: A command to run the child under, e.g. a profiler's `py-spy record ... --`.

    Returns:
        The child's result plus `wall_s`, the child's whole life (imports included).
    """
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "RUNTIME__DLTHUB_TELEMETRY": "false",
           "RUNTIME__LOG_LEVEL": "ERROR"}
    command: List[str] = [*wrapper, sys.executable, "-m", "tests.benchmarks.pipeline_child", json.dumps(config)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=config["workdir"], env=env, capture_output=True, text=True)
    wall_s = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"pipeline child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return {**json.loads(lines[-1][len(RESULT_PREFIX):]), "wall_s": wall_s, "stderr_tail": _tail(done.stderr)}


def _tail(text: str, lines: int = 5) -> Optional[str]:
    kept = [line for line in text.splitlines() if line.strip() and not line.startswith("py-spy>")]
    return "\n".join(kept[-lines:]) or None


def main(argv: Sequence[str]) -> None:
    """Child entry: run the pipeline described by the JSON in argv[1], print the result line."""
    result = run_pipeline(json.loads(argv[1]))
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv)
