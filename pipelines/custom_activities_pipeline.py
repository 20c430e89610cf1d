"""Pushes the rows of a DuckDB table into Marketo as custom activities (reverse ETL).

    python pipelines/custom_activities_pipeline.py --sandbox     # the bundled Marketo sandbox, offline
    python pipelines/custom_activities_pipeline.py --database warehouse.duckdb --table webinar_events

First makes the instance's "Attend Webinar" custom activity type match WEBINAR below (created,
extended and approved as needed), then pushes every row of the table once: the table needs
`lead_id`, `activity_date` and `primary_attribute_value` columns, and every other column is an
attribute of the type, by apiName. Rows already pushed (the ledger says so) are not sent again,
so the script can run on a schedule over a growing table.

The instance's settings come from `.dlt/` or the environment:
DESTINATION__MARKETO_CUSTOM_ACTIVITIES__BASE_URL, __CLIENT_ID and __CLIENT_SECRET.
"""

import argparse
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict

import dlt
import duckdb
from dlt.common.configuration import resolve_configuration

from marketo_source import marketo_error_behind
from marketo_source.client import MarketoClient
from marketo_source.config import MarketoDestinationConfiguration
from marketo_source.custom_activities import DEFAULT_LEDGER_PATH, ActivityLedger, marketo_custom_activities
from marketo_source.custom_activity_types import (
    AttributeDefinition,
    CustomActivityTypeDefinition,
    ensure_custom_activity_type,
)
from marketo_source.sandbox import DataSpec, MarketoSandbox

WEBINAR = CustomActivityTypeDefinition(
    api_name="webinarAttendance",
    name="Attend Webinar",
    trigger_name="Attends Webinar",
    filter_name="Attended Webinar",
    description="Attended one of our webinars",
    primary_attribute=AttributeDefinition("webinarName", "Webinar Name", "string"),
    attributes=(
        AttributeDefinition("minutesWatched", "Minutes Watched", "integer"),
        AttributeDefinition("askedQuestion", "Asked Question", "boolean"),
    ),
)
DESTINATION = "marketo_custom_activities"
SANDBOX_DATA = DataSpec(leads=50, activities=500, days=13)
SANDBOX_ROWS = 1000
SANDBOX_UNKNOWN_LEAD_EVERY = 20
"""Every 20th demo row names a lead the sandbox does not have: Marketo skips it (1004)."""


def main() -> int:
    args = _arguments()
    if args.sandbox:
        return _run_against_sandbox(args)
    # The destination's own configuration, from where the destination reads it.
    config = resolve_configuration(MarketoDestinationConfiguration(), sections=("destination", DESTINATION))
    return _push(args, {name: getattr(config, name) for name in ("base_url", "client_id", "client_secret")})


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sandbox", action="store_true", help="start the bundled sandbox and push demo rows to it")
    parser.add_argument("--database", default="warehouse.duckdb", help="the DuckDB file holding the table")
    parser.add_argument("--table", default="webinar_events", help="the table (or view) whose rows to push")
    parser.add_argument("--ledger", default=DEFAULT_LEDGER_PATH, help="the ledger's DuckDB file")
    parser.add_argument("--pipeline-name", default="webinar_events_to_marketo")
    return parser.parse_args()


def _run_against_sandbox(args: argparse.Namespace) -> int:
    with MarketoSandbox(data=SANDBOX_DATA) as sandbox:
        print(f"Marketo sandbox serving at {sandbox.base_url}")
        args.database = "webinar_events_sandbox.duckdb"
        args.ledger = "marketo_custom_activities_sandbox.duckdb"
        args.pipeline_name += "_sandbox"
        # Each start is a new instance: what the ledger and dlt kept of the last one means nothing here.
        Path(args.ledger).unlink(missing_ok=True)
        dlt.pipeline(pipeline_name=args.pipeline_name).drop()
        _write_demo_table(Path(args.database), args.table)
        connection = {"base_url": sandbox.base_url, "client_id": sandbox.client_id,
                      "client_secret": sandbox.client_secret}
        return _push(args, connection)


def _write_demo_table(database: Path, table: str) -> None:
    """Webinar attendances of the sandbox's leads, some of leads it does not have."""
    first = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=2)
    rows = [
        (900_000 + n if n % SANDBOX_UNKNOWN_LEAD_EVERY == 0 else 1001 + n % SANDBOX_DATA.leads,
         first + timedelta(minutes=n), f"Data Pipelines {n % 4 + 1}", n % 60, n % 3 == 0)
        for n in range(SANDBOX_ROWS)
    ]
    with duckdb.connect(str(database)) as connection:
        connection.execute(
            f'CREATE OR REPLACE TABLE "{table}" (lead_id BIGINT, activity_date TIMESTAMPTZ, '
            'primary_attribute_value VARCHAR, "minutesWatched" INTEGER, "askedQuestion" BOOLEAN)'
        )
        connection.executemany(f'INSERT INTO "{table}" VALUES (?, ?, ?, ?, ?)', rows)
    print(f"Wrote {len(rows):,} demo rows to {database}, table {table}")


def _push(args: argparse.Namespace, connection: Dict[str, Any]) -> int:
    try:
        changes = ensure_custom_activity_type(MarketoClient(**connection), WEBINAR)
        print(f"Custom activity type {WEBINAR.api_name}: {', '.join(changes) or 'already up to date'}")
        with duckdb.connect(args.database, read_only=True) as database:
            rows = database.sql(f'SELECT * FROM "{args.table}"').to_arrow_table()
        destination = marketo_custom_activities(activity_type_api_name=WEBINAR.api_name, ledger_path=args.ledger,
                                                **connection)
        pipeline = dlt.pipeline(pipeline_name=args.pipeline_name, destination=destination)
        info = pipeline.run(rows, table_name=args.table)
    except Exception as error:  # dlt wraps the destination's errors; show the one that says what to do
        print(f"Push failed: {marketo_error_behind(error) or error}", file=sys.stderr)
        return 1
    with ActivityLedger(args.ledger) as ledger:
        summary = ledger.summary(info.loads_ids)
    print(f"Pushed {rows.num_rows:,} rows of {args.table}: {summary.added:,} added, {summary.skipped:,} skipped")
    for code, count in sorted(summary.skipped_by_code.items()):
        print(f"  skipped with {code}: {count:,}")
    print(f"Rows not sent again (pushed by an earlier run, or identical to another row): "
          f"{rows.num_rows - summary.added - summary.skipped:,}")
    print(f"Skipped rows and their reasons: SELECT * FROM custom_activity_results WHERE status = 'skipped' "
          f"in {args.ledger}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
