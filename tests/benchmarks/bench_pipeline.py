"""Pipeline benchmark: call efficiency, rate use, local overhead, memory and scale.

Run from the repository root (not part of the pytest run):

    .venv/bin/python -m tests.benchmarks.bench_pipeline --quick     # about 2 minutes
    .venv/bin/python -m tests.benchmarks.bench_pipeline             # the full run, about 9 minutes

It drives the real pipeline (marketo_source + dlt into DuckDB in a temporary folder) against the
sandbox on 127.0.0.1. The sandbox runs in its own process and each pipeline run in a fresh child
process, whose peak RSS (VmHWM) is the memory figure. It prints one table and writes it, with
every raw figure, as JSON (--json, default benchmark-results/pipeline.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tests.benchmarks import many_types
from tests.benchmarks.minimum import LogShape, minimum_calls
from tests.benchmarks.pipeline_child import MEMORY_LIMIT_VARIABLE, REPO_ROOT, run_in_child
from tests.benchmarks.plain_reader import PlainReader
from tests.benchmarks.sandbox_process import SandboxOptions, SandboxProcess

DAYS = 10
"""Span of the generated data; under the 14 days Marketo keeps Delete Lead, so no retention gap is reported."""
UNLIMITED_CLIENT = dict(rate_limit_calls=1_000_000, rate_limit_period_s=1.0, max_concurrency=10)
RATE_LIMITS = dict(calls_per_window=100, window_s=2.0, max_concurrent=10, latency_s=0.1)
"""Marketo's limits compressed in time: 100 calls per 2 s (not 20 s), 10 at once, 100 ms per answer."""
RATE_CLIENT = dict(rate_limit_calls=100, rate_limit_period_s=2.0, max_concurrency=10)
LIMIT_ERRORS = ("606", "615")
LINEAR_EXPONENT = 1.1
"""Time growing with at most size^1.1 between two sizes counts as linear (fixed costs make it less)."""
GOALS = {
    "calls": "no call beyond the minimum; grouping as good as the best found",
    "rate": ">= 90 % of the allowed rate, no 606/615",
    "overhead": "pipeline <= 1.3 x plain reader",
    "memory": "flat (largest <= 1.2 x smaller) and < 400 MB",
    "scale": "linear in activities (exponent ~1.0)",
}


@dataclass(frozen=True)
class Mode:
    """Sizes of one benchmark mode.

    Attributes:
        name: "quick" or "full".
        sizes: Activity counts of the size series (each: reader, pipeline, RSS, calls).
        repeats: Reader/pipeline pairs at `repeat_size`, for the key ratio.
        repeat_size: The size whose ratio is repeated.
        rate_activities: Activities of the rate run (enough for ~20 s at the allowed rate in full mode).
        rate_windows_s: The rate windows to run it with (Marketo's is 20 s); each with RATE_LIMITS' calls
            and latency.
        type_counts: Activity-type counts of the type series.
        types_activities: Activities of each type-series run.
        ground_truth_max: Largest log whose ground truth is fetched for the minimum calls.
    """

    name: str
    sizes: Tuple[int, ...]
    repeats: int
    repeat_size: int
    rate_activities: int
    rate_windows_s: Tuple[float, ...]
    type_counts: Tuple[int, ...]
    types_activities: int
    ground_truth_max: int = 300_000


QUICK = Mode("quick", sizes=(10_000, 30_000), repeats=2, repeat_size=30_000, rate_activities=50_000,
             rate_windows_s=(2.0,), type_counts=(10, 50, 100), types_activities=10_000)
FULL = Mode("full", sizes=(10_000, 100_000, 1_000_000), repeats=3, repeat_size=100_000, rate_activities=200_000,
            rate_windows_s=(2.0, 5.0), type_counts=(10, 50, 100), types_activities=100_000)


@dataclass
class Report:
    """The table rows and the raw figures behind them."""

    rows: List[Tuple[str, ...]] = field(default_factory=list)
    raw: Dict[str, Any] = field(default_factory=dict)

    def add(self, section: str, case: str, metric: str, value: str, target: str = "", verdict: str = "") -> None:
        """Adds a row, stamped with the 1-minute load average at this moment."""
        self.rows.append((section, case, metric, value, target, verdict, f"{os.getloadavg()[0]:.2f}"))

    def record(self, section: str, entry: Any) -> None:
        """Keeps a raw figure under `section` for the JSON."""
        self.raw.setdefault(section, []).append(entry)


def verdict(met: bool) -> str:
    """The verdict column's word."""
    return "met" if met else "NOT met"


def thousands(count: int) -> str:
    """10000 -> "10k", 1000000 -> "1M"."""
    return f"{count // 1_000_000}M" if count % 1_000_000 == 0 else f"{count // 1000}k"


def start_date(days: int = DAYS) -> str:
    """The span's start: midnight UTC `days` days ago, as the sandbox generates by default."""
    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def sandbox_options(activities: int, **overrides: Any) -> SandboxOptions:
    """Default data of `activities` records (one lead per 100 activities), no limits unless given."""
    base = SandboxOptions(activities=activities, leads=max(100, activities // 100), start_date=start_date(),
                          days=DAYS)
    return replace(base, **overrides)


# -- measuring ---------------------------------------------------------------------------------------


def run_pipeline(sandbox: SandboxProcess, client: Dict[str, Any], type_ids: Optional[List[int]] = None,
                 wrapper: Sequence[str] = ()) -> Dict[str, Any]:
    """One pipeline run in a fresh process against `sandbox`; adds the sandbox's counters of that run."""
    sandbox.reset_stats()
    sandbox_cpu = sandbox.cpu_s()
    with tempfile.TemporaryDirectory(prefix="marketo-bench-") as workdir:
        config = dict(base_url=sandbox.base_url, client_id=sandbox.client_id, client_secret=sandbox.client_secret,
                      start_date=sandbox.options.start_date, workdir=workdir, activity_type_ids=type_ids, **client)
        result = run_in_child(config, wrapper)
    return {**result, "sandbox": sandbox.stats(), "sandbox_cpu_s": sandbox.cpu_s() - sandbox_cpu,
            "load_avg": os.getloadavg()}


def run_reader(sandbox: SandboxProcess, type_ids: Optional[List[int]] = None) -> Dict[str, Any]:
    """One plain sequential read of the same pages from the same sandbox."""
    sandbox.reset_stats()
    reader = PlainReader(sandbox.rest_session(), sandbox.base_url, sandbox.options.start_date, type_ids)
    sandbox_cpu, cpu = sandbox.cpu_s(), time.process_time()
    result = reader.read_all().as_dict()
    return {**result, "cpu_s": time.process_time() - cpu, "sandbox_cpu_s": sandbox.cpu_s() - sandbox_cpu,
            "load_avg": os.getloadavg()}


def minimum_for(sandbox: SandboxProcess, mode: Mode, type_ids: Optional[List[int]] = None) -> Optional[dict]:
    """The minimum calls of this sandbox's data, or None when its ground truth is too large to fetch."""
    if sandbox.options.activities > mode.ground_truth_max:
        return None
    shape = LogShape.from_ground_truth(sandbox.ground_truth())
    return minimum_calls(shape, sandbox.options.block_size, type_ids)


def measure_pairs(sandbox: SandboxProcess, repeats: int, type_ids: Optional[List[int]] = None) -> List[dict]:
    """Alternating reader and pipeline runs: [{"reader": ..., "pipeline": ...}] per repeat."""
    return [{"reader": run_reader(sandbox, type_ids), "pipeline": run_pipeline(sandbox, UNLIMITED_CLIENT, type_ids)}
            for _ in range(repeats)]


# -- sections -------------------------------------------------------------------------------------


def report_calls(report: Report, case: str, pipeline: dict, minimum: Optional[dict]) -> None:
    """Rows of goal 1: calls per endpoint against the minimum the data requires."""
    used = {k: v for k, v in pipeline["sandbox"]["calls"].items() if k != "identity"}
    total = sum(used.values())
    if minimum is None:
        report.add("1 calls", case, "total REST calls", str(total), "minimum not computed (ground truth too big)")
        return
    least = minimum["per_endpoint"]
    others = [endpoint for endpoint in least if endpoint != "activities"]
    counts = ", ".join(f"{e} {used.get(e, 0)}/{least[e]}" for e in others)
    report.add("1 calls", case, "other endpoints: used/min", counts, "min",
               _call_verdict(sum(used.get(e, 0) for e in others), sum(least[e] for e in others)))
    groupings = minimum["activities"]
    report.add("1 calls", case, "activities.json page calls", str(used.get("activities", 0)),
               f"min {least['activities']} with the source's groups (id order: {groupings['calls']['id_order']}); "
               f"best grouping found {groupings['best_calls']} "
               f"({groupings['best']}); no grouping < {groupings['lower_bound']}",
               _call_verdict(used.get("activities", 0), least["activities"]))
    what_if = minimum["deleted_in_activities"]["total_best"]
    report.add("1 calls", case, "total calls", str(total),
               f"min {minimum['total_source']}; with the best grouping {minimum['total_best']}; and Delete Lead "
               f"read in activities.json groups {what_if}", verdict(total <= minimum["total_best"]))


def _call_verdict(actual: int, least: int) -> str:
    return "= min" if actual == least else f"{actual - least:+d} vs min"


def report_rows_loaded(report: Report, case: str, pair: dict) -> None:
    """A row checking that the pipeline loaded one row per record the reader read."""
    loaded, read = pair["pipeline"]["activity_rows"], pair["reader"]["records"]
    report.add("check", case, "rows loaded / records read", f"{loaded} / {read}", "equal", verdict(loaded == read))


def report_overhead(report: Report, case: str, pairs: List[dict]) -> List[float]:
    """Rows of goal 3: end-to-end time against the plain reader's; returns the ratios."""
    ratios = [p["pipeline"]["total_s"] / p["reader"]["seconds"] for p in pairs]
    for n, pair in enumerate(pairs, 1):
        pipeline, reader = pair["pipeline"], pair["reader"]
        records = reader["records"]
        report.add("3 overhead", f"{case} run {n}", "pipeline s (extract/normalize/load) | reader s",
                   f"{pipeline['total_s']:.2f} ({pipeline['extract_s']:.2f}/{pipeline['normalize_s']:.2f}/"
                   f"{pipeline['load_s']:.2f}) | {reader['seconds']:.2f}",
                   f"{records / pipeline['total_s']:,.0f} vs {records / reader['seconds']:,.0f} activities/s")
    report_cpu(report, case, pairs)
    median = statistics.median(ratios)
    report.add("3 overhead", case, "time ratio pipeline / reader", f"{median:.2f}" + (
        f" (runs: {', '.join(f'{r:.2f}' for r in ratios)})" if len(ratios) > 1 else ""), "<= 1.3",
        verdict(median <= 1.3))
    return ratios


def report_cpu(report: Report, case: str, pairs: List[dict]) -> None:
    """A row of goal 3 that the machine's other load disturbs less: CPU seconds per process (medians)."""
    def median(side: str, key: str) -> float:
        return statistics.median(p[side][key] for p in pairs)

    steps = {step: statistics.median(p["pipeline"]["cpu_s"][step] for p in pairs) for step in ("extract", "normalize",
                                                                                                 "load")}
    report.add("3 overhead", case, "CPU s: pipeline (extract/normalize/load) | reader; sandbox for each",
               f"{sum(steps.values()):.2f} ({steps['extract']:.2f}/{steps['normalize']:.2f}/{steps['load']:.2f}) | "
               f"{median('reader', 'cpu_s'):.2f}; sandbox {median('pipeline', 'sandbox_cpu_s'):.2f} | "
               f"{median('reader', 'sandbox_cpu_s'):.2f}",
               "the reader waits for the sandbox (wall ~ its CPU + the sandbox's); the pipeline overlaps them, "
               "its extract on one core (GIL), the sandbox on the other")


def size_series(report: Report, mode: Mode) -> List[dict]:
    """Goals 1, 3, 4 and 5 over the sizes of `mode`, without limits or latency."""
    results = []
    for size in mode.sizes:
        with SandboxProcess(sandbox_options(size)) as sandbox:
            minimum = minimum_for(sandbox, mode)
            pairs = measure_pairs(sandbox, mode.repeats if size == mode.repeat_size else 1)
        case = f"{thousands(size)} activities"
        report_calls(report, case, pairs[0]["pipeline"], minimum)
        report_rows_loaded(report, case, pairs[0])
        ratios = report_overhead(report, case, pairs)
        entry = {"activities": size, "sandbox_startup_s": sandbox.startup_s, "minimum": minimum, "runs": pairs,
                 "ratios": ratios}
        report.record("sizes", entry)
        results.append(entry)
    report_memory(report, results)
    report_scale(report, results)
    return results


def report_memory(report: Report, results: List[dict]) -> None:
    """Rows of goal 4: peak RSS per size (and per step), and how the largest compares with the one before."""
    peaks = []
    for result in results:
        run = max(result["runs"], key=lambda r: r["pipeline"]["peak_rss_mb"])["pipeline"]
        steps = run["step_peak_rss_mb"] or {}
        context = (f"< 400; Arrow allocator {run['arrow_allocator']}; after imports {run['baseline_rss_mb']:.0f}"
                   + "".join(f"; {step} {peak:.0f}" for step, peak in steps.items()))
        report.add("4 memory", f"{thousands(result['activities'])} activities", "peak RSS MB (VmHWM)",
                   f"{run['peak_rss_mb']:.0f}", context, verdict(run["peak_rss_mb"] < 400))
        peaks.append((result["activities"], run["peak_rss_mb"]))
    if len(peaks) > 1:
        (small, small_peak), (large, large_peak) = peaks[-2], peaks[-1]
        growth = large_peak / small_peak
        report.add("4 memory", f"{thousands(large)} vs {thousands(small)}", "peak RSS ratio", f"{growth:.2f}",
                   "<= 1.2", verdict(growth <= 1.2))


def report_scale(report: Report, results: List[dict]) -> None:
    """Rows of goal 5 (size): time per size and the growth exponent between neighbours."""
    times = [(r["activities"], statistics.median(run["pipeline"]["total_s"] for run in r["runs"])) for r in results]
    for n, (size, seconds) in enumerate(times):
        exponent = _exponent(times[n - 1], (size, seconds)) if n else None
        report.add("5 scale", f"{thousands(size)} activities", "pipeline s | s per 100k",
                   f"{seconds:.2f} | {seconds * 100_000 / size:.2f}",
                   "" if exponent is None else f"exponent vs previous size {exponent:.2f} (1 = linear)",
                   "" if exponent is None else verdict(exponent <= LINEAR_EXPONENT))


def _exponent(smaller: Tuple[int, float], larger: Tuple[int, float]) -> float:
    """k in time ~ size^k between two (size, seconds) points."""
    return math.log(larger[1] / smaller[1]) / math.log(larger[0] / smaller[0])


def critical_path_rate(minimum: dict, allowed: float) -> float:
    """The highest call rate the data allows: a chain's pages follow each other (each page's token comes
    from the one before), so no run ends before its longest chain, at one answer per latency."""
    calls = sum(minimum["per_endpoint"].values())
    return min(allowed, calls / (max(minimum["chain_calls"]) * RATE_LIMITS["latency_s"]))


def rate_run(report: Report, mode: Mode) -> List[dict]:
    """Goal 2 for each of the mode's rate windows."""
    return [rate_run_with_window(report, mode, window_s) for window_s in mode.rate_windows_s]


def rate_run_with_window(report: Report, mode: Mode, window_s: float) -> dict:
    """The sandbox enforcing Marketo's limits compressed into `window_s`, the source configured to match;
    read once as configured by default (the fewest calls) and once with time_slices."""
    limits, client = {**RATE_LIMITS, "window_s": window_s}, {**RATE_CLIENT, "rate_limit_period_s": window_s}
    with SandboxProcess(sandbox_options(mode.rate_activities, **limits)) as sandbox:
        minimum = minimum_for(sandbox, mode)
        runs = {slices: run_pipeline(sandbox, {**client, "time_slices": slices}) for slices in (False, True)}
    allowed = limits["calls_per_window"] / window_s
    ceiling = critical_path_rate(minimum, allowed) if minimum else None
    entry: Dict[str, Any] = {"activities": mode.rate_activities, "limits": limits, "client": client,
                             "allowed_calls_per_s": allowed, "ceiling_calls_per_s": ceiling, "minimum": minimum}
    for slices, pipeline in runs.items():
        case = f"{thousands(mode.rate_activities)} act., 100/{window_s:g} s, 10 conc., 100 ms" + (
            ", time_slices" if slices else ", default")
        entry["time_slices" if slices else "default"] = report_rate(report, case, pipeline, minimum, limits, ceiling)
    report.record("rate", entry)
    return entry


def report_rate(report: Report, case: str, pipeline: dict, minimum: Optional[dict], limits: Dict[str, Any],
                ceiling: Optional[float]) -> dict:
    """The rows of one rate run; returns its figures."""
    allowed = limits["calls_per_window"] / limits["window_s"]
    # The client counts a call until a window after its answer (Marketo counts it on arrival, in between).
    limiter_share = limits["window_s"] / (limits["window_s"] + limits["latency_s"])
    stats = pipeline["sandbox"]
    rejected = {code: stats["errors"].get(code, 0) for code in LIMIT_ERRORS}
    accepted = stats["rest_calls"] - sum(rejected.values())
    achieved = accepted / pipeline["extract_s"]
    sliced = pipeline["time_slices"] > 0
    chain_note = ""
    if minimum and not sliced:
        chain_note = (f"; the longest chain ({max(minimum['chain_calls'])} calls one after another, 100 ms each) "
                      f"caps it at {ceiling / allowed:.0%}")
    report.add("2 rate", case, "achieved calls/s (share of allowed)",
               f"{achieved:.1f}/s ({achieved / allowed:.0%}) over {pipeline['extract_s']:.1f} s, {accepted} calls"
               + (f"; {achieved / ceiling:.0%} of what the longest chain allows" if ceiling and not sliced else ""),
               f">= 90 % of {allowed:.0f}/s; the limiter allows {limiter_share:.0%}{chain_note}",
               verdict(achieved >= 0.9 * allowed))
    report.add("2 rate", case, "606 | 615 answers", f"{rejected['606']} | {rejected['615']}", "0 | 0",
               verdict(sum(rejected.values()) == 0))
    if minimum:
        report.add("2 rate", case, "REST calls | time slices opened",
                   f"{accepted} | {pipeline['time_slices']}",
                   f"min {minimum['total_source']}: {accepted - minimum['total_source']:+d} "
                   f"({(accepted - minimum['total_source']) / minimum['total_source']:+.1%})", "")
        report.add("check", case, "rows loaded / records in the log",
                   f"{pipeline['activity_rows']} / {minimum['records']}", "equal",
                   verdict(pipeline["activity_rows"] == minimum["records"]))
    report.add("2 rate", case, "max calls in flight (sandbox)", str(stats["max_concurrent_seen"]),
               f"<= 10; the data has {minimum['chains'] if minimum else '?'} chains (groups + lead changes + "
               "deleted leads) before slicing", "")
    report.add("2 rate", case, "pipeline CPU s during extract (share of its wall time)",
               f"{pipeline['cpu_s']['extract']:.1f} ({pipeline['cpu_s']['extract'] / pipeline['extract_s']:.0%})",
               "near 100 % would mean bound by the one core Python's GIL lets it use", "")
    return {"pipeline": pipeline, "accepted_calls": accepted, "achieved_calls_per_s": achieved, "rejected": rejected}


def types_series(report: Report, mode: Mode) -> List[dict]:
    """Goal 5 (types): the same number of activities spread over 10, 50, 100 custom types (Zipf)."""
    results = []
    leads = 1000
    for count in mode.type_counts:
        options = sandbox_options(leads, leads=leads, custom_types=False, max_custom_types=max(mode.type_counts))
        with SandboxProcess(options) as sandbox:
            started = time.perf_counter()
            type_ids = many_types.populate(sandbox.rest_session(), sandbox.base_url, count, mode.types_activities,
                                           leads, options.start_date, DAYS)
            populate_s = time.perf_counter() - started
            minimum = minimum_for(sandbox, mode, type_ids)
            pair = measure_pairs(sandbox, 1, type_ids)[0]
        case = f"{count} types, {thousands(mode.types_activities)} act."
        report_types_row(report, case, pair)
        report_calls(report, case, pair["pipeline"], minimum)
        report_rows_loaded(report, case, pair)
        entry = {"types": count, "activities": mode.types_activities, "populate_s": populate_s, "minimum": minimum,
                 **pair}
        report.record("types", entry)
        results.append(entry)
    return results


def report_types_row(report: Report, case: str, pair: dict) -> None:
    """The time, rate, ratio and memory row of one type-series run."""
    pipeline, reader = pair["pipeline"], pair["reader"]
    tables = sum(1 for table in pipeline["rows"] if table.startswith("activity_bench_type"))
    report.add("5 scale", case, "pipeline s | activities/s | / reader | peak RSS MB",
               f"{pipeline['total_s']:.2f} | {reader['records'] / pipeline['total_s']:,.0f} | "
               f"{pipeline['total_s'] / reader['seconds']:.2f} | {pipeline['peak_rss_mb']:.0f}",
               f"{tables} activity tables; extract/normalize/load {pipeline['extract_s']:.2f}/"
               f"{pipeline['normalize_s']:.2f}/{pipeline['load_s']:.2f} s", "")


# -- output ---------------------------------------------------------------------------------------

HEADER = ("section", "case", "metric", "value", "target / context", "verdict", "load")


def print_table(rows: Sequence[Tuple[str, ...]]) -> None:
    """Prints the rows as one aligned table."""
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    for n, row in enumerate([HEADER, *rows]):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * width for width in widths))


def machine() -> Dict[str, Any]:
    """Where and on what code the figures were taken."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "commit": git("rev-parse", "HEAD"), "source_changes_uncommitted": bool(git("status", "--porcelain",
                                                                                          "marketo_source"))}


def write_json(path: Path, report: Report, meta: Dict[str, Any]) -> None:
    """Writes the table and the raw figures."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [dict(zip(HEADER, row, strict=True)) for row in report.rows]
    path.write_text(json.dumps({"meta": meta, "goals": GOALS, "table": rows, "raw": report.raw}, indent=1,
                               default=str))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, about 2 minutes")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "benchmark-results" / "pipeline.json",
                        help="where to write the JSON (default: benchmark-results/pipeline.json)")
    parser.add_argument("--only", choices=("sizes", "rate", "types"), action="append",
                        help="run only these sections (repeatable; default: all)")
    parser.add_argument("--sizes", type=lambda text: tuple(int(n) for n in text.split(",")),
                        help="activity counts of the size series, e.g. 100000,1000000 (default: the mode's)")
    parser.add_argument("--arrow-allocator", choices=("system", "mimalloc", "jemalloc"),
                        help="Arrow's allocator in the pipeline (ARROW_DEFAULT_MEMORY_POOL); default: the one "
                             "pipelines/marketo_pipeline.py chooses")
    parser.add_argument("--duckdb-memory-limit", metavar="LIMIT",
                        help="DuckDB's memory_limit for the load, e.g. 1GB, or none for DuckDB's default "
                             "(80%% of RAM); default: duckdb_destination's")
    return parser.parse_args(argv)


SECTIONS = {"sizes": size_series, "rate": rate_run, "types": types_series}


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Runs the chosen sections, prints the table, writes the JSON."""
    args = parse_args(argv)
    mode = QUICK if args.quick else FULL
    if args.sizes:
        mode = replace(mode, sizes=args.sizes)
    if args.duckdb_memory_limit:
        os.environ[MEMORY_LIMIT_VARIABLE] = args.duckdb_memory_limit
    if args.arrow_allocator:
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = args.arrow_allocator
    report = Report()
    meta = {"mode": mode.name, "started": datetime.now(timezone.utc).isoformat(), "load_avg_start": os.getloadavg(),
            "duckdb_memory_limit": args.duckdb_memory_limit or "duckdb_destination's default", **machine()}
    started = time.perf_counter()
    for name in args.only or SECTIONS:
        SECTIONS[name](report, mode)
    meta.update(load_avg_end=os.getloadavg(), seconds=round(time.perf_counter() - started, 1))
    print(f"mode {mode.name}; DuckDB memory_limit {meta['duckdb_memory_limit']}; {meta['cpus']} CPUs; "
          f"load average at start {'/'.join(f'{x:.2f}' for x in meta['load_avg_start'])}, at end "
          f"{'/'.join(f'{x:.2f}' for x in meta['load_avg_end'])}; {meta['seconds']} s; commit {meta['commit'][:10]}"
          f"{' + uncommitted source changes' if meta['source_changes_uncommitted'] else ''}")
    print("load = 1-minute load average when the row was taken; it includes this benchmark's own sandbox and "
          "pipeline processes (up to ~2)")
    print_table(report.rows)
    write_json(args.json, report, meta)
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
