"""Backfill benchmark: seven months read through Bulk Activity Extract against REST paging.

Run from the repository root (not part of the pytest run):

    .venv/bin/python -m tests.benchmarks.bench_bulk_backfill --quick   # 200k activities
    .venv/bin/python -m tests.benchmarks.bench_bulk_backfill           # 200k and 1M activities

For each size, one sandbox in its own process (`sandbox_process`) holds seven months of
activities; the pipeline (`bench_pipeline.run_pipeline`, a fresh child process) backfills them
into DuckDB once with `backfill = "rest"` and once with `backfill = "bulk"`. Time is scaled down
10 times: the rate limit is 100 calls per 2 s (Marketo: per 20 s), 10 at once, 100 ms per answer;
export jobs' stages show every 6 s (Marketo: 60 s) and the source polls every 6 s (its default:
60 s). How long Marketo queues and processes a job it does not document; the sandbox's jobs wait
3 s in the queue and process 6 s, whatever their size. Calls are the sandbox's counts per
endpoint. Each run's tables are counted after the load and compared with the sandbox's ground
truth (sizes above `GROUND_TRUTH_MAX`: with the log's size, and with each other).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from marketo_source.settings import RETENTION_GAPS_TABLE, RUN_REPORTS_TABLE

from tests.benchmarks.bench_pipeline import (
    RATE_CLIENT,
    RATE_LIMITS,
    run_pipeline,
    sandbox_options,
    start_date,
    thousands,
)
from tests.benchmarks.pipeline_child import _activity_rows
from tests.benchmarks.sandbox_process import SandboxProcess
from tests.expected import expected_keys

HISTORY_DAYS = 212
"""About seven months, as in tests/test_bulk_backfill.py."""
SCALE = 10
"""Marketo's seconds per benchmark second."""
BULK_JOBS = dict(bulk_queue_s=3.0, bulk_processing_s=6.0, bulk_status_interval_s=60.0 / SCALE)
POLL_INTERVAL_S = 60.0 / SCALE
QUICK_SIZES = (200_000,)
FULL_SIZES = (200_000, 1_000_000)
GROUND_TRUTH_MAX = 300_000
"""Largest log whose ground truth is fetched (about 600 bytes per activity)."""
BACKFILLS = ("rest", "bulk")
NOT_LOADED = (RUN_REPORTS_TABLE, RETENTION_GAPS_TABLE)
"""Tables that report on the run rather than hold Marketo's records."""
CALL_COLUMNS = (("activities", "activities"), ("tokens", "paging_token"), ("lead changes", "lead_changes"),
                ("deleted", "deleted_leads"), ("create", "bulk_create"),
                ("enqueue", "bulk_enqueue"), ("status", "bulk_status"), ("file", "bulk_file"),
                ("list", "bulk_jobs"))
"""(column, sandbox endpoint) of the calls table; the other endpoints are summed in "other"."""


def backfill(sandbox: SandboxProcess, reader: str) -> Dict[str, Any]:
    """One backfill of the whole span with `reader` ("rest" or "bulk"), under the scaled rate limit."""
    return run_pipeline(sandbox, {**RATE_CLIENT, "backfill": reader, "bulk_poll_interval_s": POLL_INTERVAL_S,
                                  "count_tables": True})


def held(run: Dict[str, Any]) -> Dict[str, int]:
    """Rows per table of Marketo's records after the run's load."""
    return {table: n for table, n in run["table_rows"].items() if n and table not in NOT_LOADED}


def truth_counts(sandbox: SandboxProcess) -> Optional[Dict[str, int]]:
    """Rows per table the ground truth asks for; None when the log is too large to fetch."""
    if sandbox.options.activities > GROUND_TRUTH_MAX:
        return None
    return {table: len(keys) for table, keys in expected_keys(sandbox.ground_truth()).items() if keys}


def check(runs: Dict[str, Dict[str, Any]], truth: Optional[Dict[str, int]], activities: int) -> Dict[str, str]:
    """Per backfill: "ok", or what differs from the ground truth (or, without it, from the log and REST)."""
    verdicts = {}
    for reader, run in runs.items():
        loaded = held(run)
        if truth is not None:
            wrong = {t: (loaded.get(t, 0), truth.get(t, 0)) for t in truth.keys() | loaded.keys()
                     if loaded.get(t, 0) != truth.get(t, 0)}
        else:
            wrong = {t: (n, held(runs["rest"]).get(t, 0)) for t, n in loaded.items()
                     if n != held(runs["rest"]).get(t, 0)}
            if _activity_rows(loaded) != activities:
                wrong["activity rows"] = (_activity_rows(loaded), activities)
        verdicts[reader] = "ok" if not wrong else f"DIFFERS (loaded, expected): {wrong}"
    return verdicts


def bulk_report(run: Dict[str, Any]) -> Dict[str, Any]:
    """The run's activities_bulk row of marketo_run_reports (empty for a REST backfill)."""
    return next((row for row in run["run_reports"] if row["stream"] == "activities_bulk"), {})


def measure(size: int) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, str]]:
    """Both backfills of `size` activities over seven months, and their row checks."""
    options = sandbox_options(size, days=HISTORY_DAYS, start_date=start_date(HISTORY_DAYS), **RATE_LIMITS,
                              **BULK_JOBS)
    with SandboxProcess(options) as sandbox:
        truth = truth_counts(sandbox)
        runs = {reader: backfill(sandbox, reader) for reader in BACKFILLS}
    return runs, check(runs, truth, size)


def row(size: int, reader: str, run: Dict[str, Any], verdict: str) -> List[str]:
    """One line of the table."""
    calls = {k: v for k, v in run["sandbox"]["calls"].items() if k != "identity"}
    shown = [calls.get(endpoint, 0) for _, endpoint in CALL_COLUMNS]
    bulk = bulk_report(run)
    export_mb = f"{bulk['bulk_bytes'] / 1e6:.1f}" if bulk.get("bulk_bytes") is not None else "-"
    jobs = str(bulk.get("bulk_jobs_created") or "-")
    errors = ",".join(f"{code}:{n}" for code, n in sorted(run["sandbox"]["errors"].items())) or "-"
    return [thousands(size), reader, f"{run['total_s']:.1f}", f"{run['extract_s']:.1f}", str(sum(calls.values())),
            *map(str, shown), str(sum(calls.values()) - sum(shown)), jobs, export_mb, errors,
            f"{_activity_rows(held(run)):,}", verdict]


HEADER = ["size", "backfill", "wall s", "extract s", "calls", *(name for name, _ in CALL_COLUMNS), "other", "jobs",
          "export MB", "errors", "activity rows", "rows vs truth"]


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """The rows under HEADER, each column as wide as its widest cell."""
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    for line in [HEADER, *rows]:
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {thousands(QUICK_SIZES[0])} activities")
    parser.add_argument("--sizes", type=int, nargs="+", help="activity counts to run (default: 200k and 1M)")
    options = parser.parse_args(argv)
    sizes = options.sizes or (QUICK_SIZES if options.quick else FULL_SIZES)
    print(f"{HISTORY_DAYS} days of activities; time scaled 1/{SCALE}: {RATE_LIMITS['calls_per_window']} calls per "
          f"{RATE_LIMITS['window_s']:g} s, {RATE_LIMITS['max_concurrent']} at once, {RATE_LIMITS['latency_s']:g} s "
          f"per answer; export jobs queue {BULK_JOBS['bulk_queue_s']:g} s, process "
          f"{BULK_JOBS['bulk_processing_s']:g} s, status every {BULK_JOBS['bulk_status_interval_s']:g} s; "
          f"poll interval {POLL_INTERVAL_S:g} s")
    rows = []
    for size in sizes:
        runs, verdicts = measure(size)
        rows += [row(size, reader, runs[reader], verdicts[reader]) for reader in BACKFILLS]
    print_table(rows)
    print("wall s: extract + normalize + load; calls: the sandbox's count, identity excluded; rows vs truth: rows "
          f"per table equal to the ground truth (above {thousands(GROUND_TRUTH_MAX)}: to REST's, and activity rows "
          "to the log's size)")


if __name__ == "__main__":
    main(sys.argv[1:])
