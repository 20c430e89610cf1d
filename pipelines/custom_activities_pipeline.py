"""Pushes the rows of a DuckDB table into Marketo as custom activities (reverse ETL).

    python pipelines/custom_activities_pipeline.py --sandbox     # the bundled Marketo sandbox, offline
    python pipelines/custom_activities_pipeline.py --database warehouse.duckdb --table webinar_events

First checks every input (the settings, the database, the table and its columns, the ledger's
folder), so that a wrong one changes nothing in Marketo; then makes the instance's "Attend
Webinar" custom activity type match WEBINAR below (created, extended and approved as needed),
then pushes every row of the table once: the table needs `lead_id`, `activity_date` and
`primary_attribute_value` columns, and every other column is an attribute of the type, by
apiName. Rows already pushed (the ledger says so) are not sent again, so the script can run on a
schedule over a growing table. It prints the rows added and the rows skipped, by reason.

The instance's settings come from `.dlt/` or the environment:
DESTINATION__MARKETO_CUSTOM_ACTIVITIES__BASE_URL, __CLIENT_ID and __CLIENT_SECRET.
"""

import argparse
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import List, Set

import dlt
import duckdb
import pyarrow as pa
from dlt.common.configuration import resolve_configuration

from marketo_source import marketo_error_behind
from marketo_source.client import MarketoClient
from marketo_source.config import MarketoDestinationConfiguration
from marketo_source.custom_activities import (
    DATE_COLUMN,
    DEFAULT_LEDGER_PATH,
    LEAD_ID_COLUMNS,
    PRIMARY_VALUE_COLUMN,
    ROW_KEY_COLUMN,
    ActivityLedger,
    marketo_custom_activities,
)
from marketo_source.custom_activity_types import (
    AttributeDefinition,
    CustomActivityTypeDefinition,
    ensure_custom_activity_type,
)
from marketo_source.errors import MarketoConfigurationError
from marketo_source.sandbox import DataSpec, MarketoSandbox
from marketo_source.sandbox.catalog import NEW_LEAD

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
"""Every 20th demo row names a lead id the sandbox never had: Marketo skips it (1004, Lead not
found). The other rows name the sandbox's leads that are not deleted, so Marketo adds them."""
SANDBOX_UNKNOWN_LEAD_ID = 900_000
"""Lead ids from here on are beyond any the sandbox gives out."""


def main() -> int:
    args = _arguments()
    try:
        if args.sandbox:
            return _run_against_sandbox(args)
        # The destination's own configuration, from where the destination reads it.
        return _push(args, resolve_configuration(MarketoDestinationConfiguration(), sections=("destination",
                                                                                                DESTINATION)))
    except Exception as error:  # dlt wraps the destination's errors; show the one that says what to do
        print(f"Run failed: {marketo_error_behind(error) or error}", file=sys.stderr)
        return 1


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
        _write_demo_table(Path(args.database), args.table, _leads_alive(sandbox))
        config = MarketoDestinationConfiguration(base_url=sandbox.base_url, client_id=sandbox.client_id,
                                                 client_secret=sandbox.client_secret)
        return _push(args, config)


def _leads_alive(sandbox: MarketoSandbox) -> List[int]:
    """The sandbox's leads that are not deleted: it deletes some of its leads, which Marketo
    would skip (1004) like leads it never had."""
    truth = sandbox.ground_truth()
    created = {activity["leadId"] for activity in truth["activities"] if activity["activityTypeId"] == NEW_LEAD}
    return sorted(created - {deletion["leadId"] for deletion in truth["deleted_leads"]})


def _write_demo_table(database: Path, table: str, leads: List[int]) -> None:
    """Webinar attendances of `leads`, every 20th row of a lead the sandbox never had."""
    first = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=2)
    rows = [
        (SANDBOX_UNKNOWN_LEAD_ID + n if n % SANDBOX_UNKNOWN_LEAD_EVERY == 0 else leads[n % len(leads)],
         first + timedelta(minutes=n), f"Data Pipelines {n % 4 + 1}", n % 60, n % 3 == 0)
        for n in range(SANDBOX_ROWS)
    ]
    with duckdb.connect(str(database)) as connection:
        connection.execute(
            f'CREATE OR REPLACE TABLE "{table}" (lead_id BIGINT, activity_date TIMESTAMPTZ, '
            'primary_attribute_value VARCHAR, "minutesWatched" INTEGER, "askedQuestion" BOOLEAN)'
        )
        connection.executemany(f'INSERT INTO "{table}" VALUES (?, ?, ?, ?, ?)', rows)
    unknown = sum(1 for row in rows if row[0] >= SANDBOX_UNKNOWN_LEAD_ID)
    print(f"Wrote {len(rows):,} demo rows to {database}, table {table}: {unknown:,} of them (every "
          f"{SANDBOX_UNKNOWN_LEAD_EVERY}th) for lead ids the sandbox never had, the rest for its {len(leads)} leads")


def _push(args: argparse.Namespace, config: MarketoDestinationConfiguration) -> int:
    """Checks every input, then makes the type match WEBINAR and pushes the table's rows."""
    config.checked()
    rows = _read_table(args.database, args.table)
    ledger_folder = Path(args.ledger).resolve().parent
    if not ledger_folder.is_dir():
        raise MarketoConfigurationError.of("--ledger", f"the folder {ledger_folder} does not exist",
                                           "create it, or give a --ledger path in an existing folder")
    changes = ensure_custom_activity_type(MarketoClient.connect(config), WEBINAR)
    print(f"Custom activity type {WEBINAR.api_name}: {', '.join(changes) or 'already up to date'}")
    destination = marketo_custom_activities(activity_type_api_name=WEBINAR.api_name, ledger_path=args.ledger,
                                            base_url=config.base_url, client_id=config.client_id,
                                            client_secret=config.client_secret)
    pipeline = dlt.pipeline(pipeline_name=args.pipeline_name, destination=destination)
    info = pipeline.run(rows, table_name=args.table)
    with ActivityLedger(args.ledger) as ledger:
        summary = ledger.summary(info.loads_ids)
        reasons = ledger.skip_reasons(info.loads_ids)
    print(f"Pushed {rows.num_rows:,} rows of {args.table}: {summary.added:,} added, {summary.skipped:,} skipped")
    for (code, message), count in sorted(reasons.items()):
        print(f"  skipped with {code} ({message}): {count:,}")
    print(f"Rows not sent again (pushed by an earlier run, or identical to another row): "
          f"{rows.num_rows - summary.added - summary.skipped:,}")
    print(f"Skipped rows and their reasons: SELECT * FROM custom_activity_results WHERE status = 'skipped' "
          f"in {args.ledger}")
    return 0


def _read_table(database: str, table: str) -> pa.Table:
    """The rows of `table`, once the file, the table and its columns are known to be usable."""
    if not Path(database).is_file():
        raise MarketoConfigurationError.of("--database", f"{database} does not exist",
                                           "give the DuckDB file that holds the table to push")
    with duckdb.connect(database, read_only=True) as connection:
        names = {name for (name,) in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
        if table not in names:
            raise MarketoConfigurationError.of(
                "--table", f"{database} has no table or view {table!r} (it has: {', '.join(sorted(names)) or 'none'})",
                "give the table or view that holds the rows to push",
            )
        rows: pa.Table = connection.sql(f'SELECT * FROM "{table}"').to_arrow_table()
    _check_columns(set(rows.column_names), table)
    return rows


def _check_columns(columns: Set[str], table: str) -> None:
    missing = [column for column in (DATE_COLUMN, PRIMARY_VALUE_COLUMN) if column not in columns]
    if not columns & set(LEAD_ID_COLUMNS):
        missing.insert(0, LEAD_ID_COLUMNS[0])
    if missing:
        raise MarketoConfigurationError.of(
            "--table", f"{table} lacks the column(s) {', '.join(missing)}",
            f"give a table or view with {LEAD_ID_COLUMNS[0]}, {DATE_COLUMN} and {PRIMARY_VALUE_COLUMN}, every other "
            f"column named after an attribute of {WEBINAR.api_name}",
        )
    attributes = [attribute.api_name for attribute in WEBINAR.attributes]
    unknown = sorted(columns - {*LEAD_ID_COLUMNS, DATE_COLUMN, PRIMARY_VALUE_COLUMN, ROW_KEY_COLUMN, *attributes})
    if unknown:
        raise MarketoConfigurationError.of(
            "--table", f"the column(s) {', '.join(unknown)} of {table} are not attributes of {WEBINAR.api_name} "
            f"(its attributes: {', '.join(attributes)})", "rename them to attribute apiNames or leave them out",
        )


if __name__ == "__main__":
    sys.exit(main())
