"""Loads Marketo activities, lead changes and deleted leads into DuckDB or any dlt destination.

    python pipelines/marketo_pipeline.py             # the instance set in .dlt/ or the environment
    python pipelines/marketo_pipeline.py --sandbox   # the bundled Marketo sandbox, offline

Run it on a schedule: each run resumes where the last one stopped.
"""

import argparse
import importlib.util
import io
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Optional

ARROW_ALLOCATOR = "system"
"""Arrow's allocator for this process, unless ARROW_DEFAULT_MEMORY_POOL is already set. Arrow's
own (mimalloc) keeps the memory dlt's extract freed, and DuckDB's load then comes on top of it;
the C library's allocator gives it back. Peak RSS of a whole run (tests/benchmarks, 2 cores):
100k activities 243 MB instead of 276-299, 1M 339 MB instead of 387-395, and no slower. Arrow
reads the setting once, when pyarrow is first imported, so it is set before anything imports it."""
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", ARROW_ALLOCATOR)
REPOSITORY = Path(__file__).resolve().parent.parent
if not Path(".dlt").is_dir() and (REPOSITORY / ".dlt").is_dir():
    # dlt reads .dlt/ in the working directory; run from pipelines/ (as `dlt deploy`'s workflow
    # does), the script still reads the repository's. A DLT_PROJECT_DIR set by the user wins.
    os.environ.setdefault("DLT_PROJECT_DIR", str(REPOSITORY))

import dlt  # noqa: E402 (after the allocator is chosen)

from marketo_source import (  # noqa: E402 (after the allocator is chosen)
    MarketoConfigurationError,
    discard_superseded_packages,
    duckdb_destination,
    marketo_error_behind,
    marketo_source,
)
from marketo_source.destinations import filesystem_destination  # noqa: E402
from marketo_source.sandbox import DEMO_DATA, MarketoSandbox  # noqa: E402

_unlisted_pipeline = dlt.pipeline
"""dlt.pipeline under a name that `dlt deploy` does not read (see _pipeline)."""


DISPLAY_PACKAGES = {"tqdm": "tqdm", "enlighten": "enlighten", "alive_progress": "alive-progress"}
"""dlt's displays that need a package of their own (the `progress` extra installs all three): choice -> package.
Each display's module is named as the choice."""


def main() -> int:
    args = _arguments()
    _print_as_it_happens()
    try:
        _check_display(args.progress, args.progress_every)  # before the sandbox starts or any call is made
        if args.sandbox:
            return _run_against_sandbox(args)
        return _run(args, marketo_source(**_overrides(args)))
    except Exception as error:  # a setting found wrong while the source is built
        return _failed(args, error)


def _failed(args: argparse.Namespace, error: BaseException) -> int:
    """Prints why the run failed in one line where the error is Marketo's or a setting's; returns 1."""
    behind = marketo_error_behind(error)
    message = str(behind or error)
    if isinstance(behind, MarketoConfigurationError) and behind.setting == "start_date" and args.start_date:
        message = message.replace("start_date:", "--start-date:", 1)  # the user gave it on the command line
    print(f"Run failed: {message}", file=sys.stderr)
    return 1


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sandbox", action="store_true", help="start the bundled Marketo sandbox and read it")
    parser.add_argument(
        "--destination", help="any dlt destination (default: destination_type in dlt's config, else duckdb)"
    )
    parser.add_argument("--dataset", default="marketo", help="dataset (schema) name (default: marketo)")
    parser.add_argument("--table-format", choices=["parquet", "delta"], default="parquet",
                        help="with --destination filesystem: plain Parquet files (rows read again repeat) or "
                             "Delta tables, which merge (needs deltalake); default: parquet")
    parser.add_argument("--pipeline-name", help="default: marketo_pipeline, or marketo_sandbox with --sandbox")
    parser.add_argument("--start-date", help="first run's start, e.g. 2024-01-01T00:00:00Z")
    parser.add_argument(
        "--progress",
        default="auto",
        choices=["auto", "log", *DISPLAY_PACKAGES, "none"],
        help="dlt's progress display (default: counters every 5 s in a terminal, every 60 s in a log file); "
             "tqdm, enlighten and alive_progress need their package",
    )
    parser.add_argument("--progress-every", type=float, metavar="SECONDS",
                        help="with --progress auto or log: print the counters this often (default: auto 5 s in "
                             "a terminal, 60 s otherwise; log 1 s)")
    return parser.parse_args()


def _print_as_it_happens() -> None:
    """Sends progress, and the source's log lines, out as they are written.

    Python buffers stdout in 8 KB blocks when it is not a terminal, so a log file would get a
    long extract's progress late, at the end, after the lines written to stderr. The source logs
    at INFO what a user waits on (a wait for the rate limit, a time slice opened), which Python
    would not show without a handler.
    """
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    handler = logging.StreamHandler()  # stderr, beside Run failed and dlt's own log
    handler.setFormatter(logging.Formatter("%(message)s"))
    source_logger = logging.getLogger("marketo_source")
    source_logger.addHandler(handler)
    source_logger.setLevel(logging.INFO)
    source_logger.propagate = False  # once, should dlt give the root logger a handler


def _check_display(choice: str, every: Optional[float]) -> None:
    """Raises MarketoConfigurationError for a display whose package is missing, or a period below 0."""
    package = DISPLAY_PACKAGES.get(choice)
    if package is not None and importlib.util.find_spec(choice) is None:
        raise MarketoConfigurationError.of(
            f"--progress {choice}", f"{package} is not installed",
            f'pip install {package}, or pip install -e ".[progress]" for every display',
        )
    if every is not None and not every >= 0:
        raise MarketoConfigurationError.of("--progress-every", f"{every:g} is below 0", "give 0 or more seconds")


def _progress(choice: str, every: Optional[float]) -> Any:
    """dlt's progress collector; "auto" suits both a terminal and a log file."""
    if choice == "none":
        return None
    if choice in DISPLAY_PACKAGES:
        return choice
    period = every if every is not None else 1.0 if choice == "log" else 5.0 if sys.stdout.isatty() else 60.0
    # dlt's own "log" asks for memory and CPU figures, and warns when psutil is not there to give them.
    stats = choice == "log" and importlib.util.find_spec("psutil") is not None
    # dlt documents dlt.progress.log, which its module imports under that name without re-exporting it.
    return dlt.progress.log(log_period=period, logger="stdout", dump_system_stats=stats)  # type: ignore[attr-defined]


def _overrides(args: argparse.Namespace) -> Dict[str, Any]:
    return {"start_date": args.start_date} if args.start_date else {}


def _run_against_sandbox(args: argparse.Namespace) -> int:

    data = DEMO_DATA
    start = datetime.fromtimestamp(data.start_ms() / 1000, timezone.utc).isoformat()
    with MarketoSandbox(data=data) as sandbox:
        print(f"Marketo sandbox serving at {sandbox.base_url}")
        source = marketo_source(
            base_url=sandbox.base_url,
            client_id=sandbox.client_id,
            client_secret=sandbox.client_secret,
            **({"start_date": start} | _overrides(args)),
        )
        # Each start is a new instance: its tokens mean nothing to state saved from another one.
        return _run(args, source, default_name="marketo_sandbox", refresh="drop_sources")


def _run(args: argparse.Namespace, source: Any, default_name: str = "marketo_pipeline", refresh: Any = None) -> int:
    name = args.pipeline_name or default_name
    # From dlt's config when not given (DESTINATION_TYPE): `dlt deploy` copies what a run read
    # from the environment into the deployment, so a deployed run loads where the local one did.
    destination: Any = args.destination or dlt.config.get("destination_type", str) or "duckdb"
    if destination == "duckdb":
        # Named after the pipeline, not the dataset: DuckDB cannot tell a database file called
        # marketo.duckdb from a dataset (schema) called marketo.
        destination = duckdb_destination(str(Path.cwd() / f"{name}.duckdb"))
    elif destination == "filesystem":
        destination = filesystem_destination(table_format=None if args.table_format == "parquet" else args.table_format)
    pipeline = _pipeline(
        name, destination=destination, dataset_name=args.dataset, progress=_progress(args.progress, args.progress_every)
    )
    discard_superseded_packages(pipeline)
    try:
        pipeline.run(source, refresh=refresh)
    except Exception as error:  # dlt wraps the source's errors; show the one that says what to do
        return _failed(args, error)
    return _print_summary(pipeline)


def _pipeline(name: str, **settings: Any) -> dlt.Pipeline:
    """`dlt deploy` finds the pipeline to deploy by reading this file: it takes the name from the
    dlt.pipeline(...) calls it sees and fails when one is computed. So the default pipeline, the
    one to deploy, gets a call with its name spelled out; the sandbox's and --pipeline-name's
    go through an alias that dlt deploy does not read."""
    pipeline: dlt.Pipeline
    if name == "marketo_pipeline":
        pipeline = dlt.pipeline(pipeline_name="marketo_pipeline", **settings)
    else:
        pipeline = _unlisted_pipeline(pipeline_name=name, **settings)
    return pipeline


def _print_summary(pipeline: dlt.Pipeline) -> int:
    """Prints what the run loaded and spent; returns 1 if a stream stopped on a lasting failure."""
    normalized = pipeline.last_trace.last_normalize_info if pipeline.last_trace else None
    rows = normalized.row_counts if normalized else {}
    state = pipeline.state.get("sources", {}).get("marketo", {})
    print(f"\nLoaded into {pipeline.destination.destination_name} dataset '{pipeline.dataset_name}':")
    for table, count in sorted(rows.items()):
        if not table.startswith("_dlt"):
            print(f"  {table:<45} {count:>9,} rows")
    calls = state.get("last_run_calls", {})
    print(f"Marketo API calls this run: {sum(calls.values()):,}")
    for path, count in sorted(calls.items()):
        print(f"  {path:<45} {count:>9,}")
    reports = {
        name: resource["last_run"] for name, resource in state.get("resources", {}).items() if "last_run" in resource
    }
    _print_streams(reports)
    return 1 if any(report["stopped"] == "error" for report in reports.values()) else 0


def _print_streams(reports: Dict[str, Dict[str, Any]]) -> None:
    """The run's rows of marketo_run_reports: what each stream loaded, spent and still has to do."""
    print("Streams this run (the table marketo_run_reports keeps every run):")
    print(f"  {'stream':<24}{'rows':>10}{'calls':>8}{'read again':>12}  complete until")
    for name, report in sorted(reports.items()):
        until = f"{report['position_to'][:19].replace('T', ' ')} UTC" if report["position_to"] else "-"
        again = report.get("rows_reread", 0)
        print(f"  {name:<24}{report['rows_loaded']:>10,}{report['calls']:>8,}{again:>12,}  {until}")
        if report["warnings"]:
            print(f"    {report['warnings']}")
    left = [r["calls_left_today"] for r in reports.values() if r.get("calls_left_today") is not None]
    if left:
        print(f"Calls left today under daily_call_limit: {min(left):,}")


if __name__ == "__main__":
    sys.exit(main())
