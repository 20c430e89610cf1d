"""Bulk export file benchmark: parsing and flattening a file into typed tables, beside REST's cost.

Run from the repository root (not part of the pytest run):

    .venv/bin/python -m tests.benchmarks.bench_bulk_parse                  # 200k and 1M activities
    .venv/bin/python -m tests.benchmarks.bench_bulk_parse --sizes 200000   # one size

The sandbox generates the activities (every standard and custom type, as Get Lead Activities
renders them); its export writer (`sandbox.export_file`) writes them as a Bulk Extract file; the
larger sizes repeat the activities with other marketoGUIDs. Each file is read into its tables
(`bulk.csv_file.read_export`) in a fresh child process, whose peak RSS (VmHWM) shows whether
memory grows with the file. REST's figures, per activity: what the activities stream does with
the same activities after the HTTP call (parse each page's JSON, route the records, build the
tables), and the extract step of the whole pipeline against the sandbox in its own process
(`bench_pipeline`'s run, without rate limits: calls, pages, tables and dlt's extract).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import orjson

from marketo_source import settings
from marketo_source.sandbox import DataSpec, MarketoSandbox
from marketo_source.sandbox.export_file import export_csv
from marketo_source.tables import ActivityTables, RowBuffer, split_unkeyed

from tests.benchmarks.bench_pipeline import UNLIMITED_CLIENT, run_pipeline, sandbox_options
from tests.benchmarks.pipeline_child import REPO_ROOT, RESULT_PREFIX, _status_mb
from tests.benchmarks.sandbox_process import SandboxProcess

BASE_ACTIVITIES = 200_000
GOAL_SPEEDUP = 5.0
WRITE_CHUNK = 20_000
"""Activities written to the file at a time."""


def write_file(records: List[Dict[str, Any]], activities: int, path: Path) -> None:
    """Writes `activities` rows: the records, then copies of them with other marketoGUIDs."""
    with open(path, "wb") as file:
        written = 0
        while written < activities:
            copy, offset = divmod(written, len(records))
            chunk = records[offset:offset + min(WRITE_CHUNK, activities - written)]
            if copy:
                chunk = [{**r, "marketoGUID": f"{copy:08x}{r['marketoGUID'][8:]}"} if r.get("marketoGUID") else r
                         for r in chunk]
            text = export_csv(chunk)
            file.write(text if written == 0 else text[text.index(b"\n") + 1:])
            written += len(chunk)


def rest_seconds(records: List[Dict[str, Any]], known_types: Dict[int, Dict[str, Any]]) -> float:
    """Seconds the activities stream spends on the records once their pages arrived."""
    pages = [orjson.dumps({"success": True, "result": records[i:i + settings.MAX_BATCH_SIZE]})
             for i in range(0, len(records), settings.MAX_BATCH_SIZE)]
    began = time.perf_counter()
    tables = ActivityTables(known_types)
    buffer = RowBuffer(settings.FLUSH_ROWS, tables)
    for page in pages:
        keyed, _ = split_unkeyed(orjson.loads(page)["result"])
        for table_name, table_records in tables.route(keyed):
            for _, rows in buffer.add(table_name, table_records):
                rows.to_arrow()
    for _, rows in buffer.drain():
        rows.to_arrow()
    return time.perf_counter() - began


def rest_extract_us(activities: int) -> float:
    """Microseconds per activity of the pipeline's extract step, REST paging from the sandbox."""
    with SandboxProcess(sandbox_options(activities)) as sandbox:
        run = run_pipeline(sandbox, UNLIMITED_CLIENT)
    return float(run["extract_s"]) / run["activity_rows"] * 1e6


def parse_in_child(path: Path, types_path: Path) -> Dict[str, Any]:
    """Reads the file into its tables in a fresh process; its timings and peak RSS."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.bench_bulk_parse", "--child", str(path), str(types_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX))
    result: Dict[str, Any] = json.loads(line[len(RESULT_PREFIX):])
    return result


def child(path: Path, types_path: Path) -> None:
    """The child: reads the file, prints one result line."""
    from marketo_source.bulk.csv_file import read_export  # after the RSS of the imports above is taken

    known = {int(k): v for k, v in json.loads(types_path.read_text()).items()}
    imported_mb = _status_mb("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    rows = sum(table.num_rows for block in read_export(path, ActivityTables(known)) for table in block.tables.values())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(RESULT_PREFIX + json.dumps({
        "rows": rows, "seconds": wall, "cpu_s": cpu, "imported_mb": imported_mb, "peak_mb": _status_mb("VmHWM"),
    }))


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[BASE_ACTIVITIES, 1_000_000])
    parser.add_argument("--no-pipeline", action="store_true", help="skip the REST pipeline's extract figure")
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        child(*options.child)
        return
    truth = MarketoSandbox(data=DataSpec(seed=3, leads=2000, activities=min(options.sizes), days=20)).ground_truth()
    records, known = truth["activities"], {t["id"]: t for t in truth["activity_types"]}
    rest_us = rest_seconds(records, known) / len(records) * 1e6
    print(f"REST, pages to tables: {rest_us:.2f} us per activity ({1e6 / rest_us:,.0f} activities/s), "
          f"{len(records):,} activities of {len(known)} types")
    extract_us = None
    if not options.no_pipeline:
        try:
            extract_us = rest_extract_us(min(options.sizes))
        except (RuntimeError, ValueError) as error:  # the sandbox process did not start as bench_pipeline expects
            print(f"REST, the pipeline's extract step: not measured ({error})")
    if extract_us is not None:
        print(f"REST, the pipeline's extract step: {extract_us:.2f} us per activity ({1e6 / extract_us:,.0f} "
              f"activities/s), {min(options.sizes):,} activities")
    with tempfile.TemporaryDirectory() as folder:
        types_path = Path(folder) / "types.json"
        types_path.write_text(json.dumps(known))
        print(f"{'activities':>10} {'MB':>7} {'s':>6} {'cpu s':>6} {'activities/s':>13} {'MB/s':>6} "
              f"{'us/activity':>11} {'x tables':>8} {'x extract':>9} {'peak MB':>8} {'over imports':>12}")
        for size in options.sizes:
            path = Path(folder) / f"export-{size}.csv"
            write_file(records, size, path)
            result = parse_in_child(path, types_path)
            megabytes = path.stat().st_size / 1e6
            per_activity_us = result["seconds"] / result["rows"] * 1e6
            versus_extract = f"{extract_us / per_activity_us:.1f}" if extract_us is not None else "-"
            print(f"{result['rows']:>10,} {megabytes:>7.1f} {result['seconds']:>6.2f} {result['cpu_s']:>6.2f} "
                  f"{result['rows'] / result['seconds']:>13,.0f} {megabytes / result['seconds']:>6.1f} "
                  f"{per_activity_us:>11.2f} {rest_us / per_activity_us:>8.1f} {versus_extract:>9} "
                  f"{result['peak_mb']:>8.0f} {result['peak_mb'] - result['imported_mb']:>12.0f}")
            path.unlink()
    print(f"goal: parsing at least {GOAL_SPEEDUP:.0f}x faster per activity than REST (x tables: than REST's pages to "
          "tables, in process; x extract: than the pipeline's extract step); peak memory flat in file size")


if __name__ == "__main__":
    main(sys.argv[1:])
