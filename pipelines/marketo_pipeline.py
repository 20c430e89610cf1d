"""Loads Marketo activities, lead changes and deleted leads into DuckDB or any dlt destination.

    python pipelines/marketo_pipeline.py             # the instance set in .dlt/ or the environment
    python pipelines/marketo_pipeline.py --sandbox   # the bundled Marketo sandbox, offline

Run it on a schedule: each run resumes where the last one stopped.
"""

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict

import dlt

from marketo_source import discard_superseded_packages, duckdb_destination, marketo_error_behind, marketo_source
from marketo_source.sandbox import DataSpec, MarketoSandbox

SANDBOX_DATA = DataSpec(days=13)
"""The demo's data: 13 days, within every retention window, so a first run reports no gap."""


def main() -> int:
    args = _arguments()
    if args.sandbox:
        return _run_against_sandbox(args)
    return _run(args, marketo_source(**_overrides(args)))


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sandbox", action="store_true", help="start the bundled Marketo sandbox and read it")
    parser.add_argument("--destination", default="duckdb", help="any dlt destination (default: duckdb)")
    parser.add_argument("--dataset", default="marketo", help="dataset (schema) name (default: marketo)")
    parser.add_argument("--pipeline-name", help="default: marketo_pipeline, or marketo_sandbox with --sandbox")
    parser.add_argument("--start-date", help="first run's start, e.g. 2024-01-01T00:00:00Z")
    return parser.parse_args()


def _overrides(args: argparse.Namespace) -> Dict[str, Any]:
    return {"start_date": args.start_date} if args.start_date else {}


def _run_against_sandbox(args: argparse.Namespace) -> int:

    data = SANDBOX_DATA
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
    destination: Any = args.destination
    if destination == "duckdb":
        # Named after the pipeline, not the dataset: DuckDB cannot tell a database file called
        # marketo.duckdb from a dataset (schema) called marketo.
        destination = duckdb_destination(str(Path.cwd() / f"{name}.duckdb"))
    pipeline = dlt.pipeline(pipeline_name=name, destination=destination, dataset_name=args.dataset)
    discard_superseded_packages(pipeline)
    try:
        pipeline.run(source, refresh=refresh)
    except Exception as error:  # dlt wraps the source's errors; show the one that says what to do
        print(f"Run failed: {marketo_error_behind(error) or error}", file=sys.stderr)
        return 1
    return _print_summary(pipeline)


def _print_summary(pipeline: dlt.Pipeline) -> int:
    """Prints what the run loaded and spent; returns 1 if a stream stopped on a lasting failure."""
    rows = pipeline.last_trace.last_normalize_info.row_counts if pipeline.last_trace else {}
    state = pipeline.state.get("sources", {}).get("marketo", {})
    print(f"\nLoaded into {pipeline.destination.destination_name} dataset '{pipeline.dataset_name}':")
    for table, count in sorted(rows.items()):
        if not table.startswith("_dlt"):
            print(f"  {table:<45} {count:>9,} rows")
    calls = state.get("last_run_calls", {})
    print(f"Marketo API calls this run: {sum(calls.values()):,}")
    for path, count in sorted(calls.items()):
        print(f"  {path:<45} {count:>9,}")
    stopped = {
        name: resource["last_run"]["stopped"]
        for name, resource in state.get("resources", {}).items()
        if resource.get("last_run", {}).get("stopped")
    }
    for name, reason in sorted(stopped.items()):
        print(f"{name} stopped early: {reason['message']}. What it read is loaded; the next run continues.")
    return 1 if any(reason["kind"] == "error" for reason in stopped.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
