"""A dlt pipeline pushing webinar rows into Marketo through the `marketo_custom_activities`
destination, in a process of its own, for tests/test_custom_activities.py to kill with SIGKILL
in the middle of the push.

    python -m tests.custom_activities_child PIPELINES_DIR ROW_COUNT

The destination's settings come from DESTINATION__MARKETO_CUSTOM_ACTIVITIES__* environment
variables, as a scheduled deployment would set them. Prints `DONE` when the run returned.
"""

import sys
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List

import dlt

from marketo_source.custom_activities import marketo_custom_activities
from marketo_source.custom_activity_types import AttributeDefinition, CustomActivityTypeDefinition

PIPELINE_NAME = "webinar_push"
TABLE_NAME = "webinar_events"
UNKNOWN_LEAD_FROM = 900_000
"""Rows for leads from here on name leads the sandbox does not have: Marketo skips them (1004)."""
FIRST_DATE = datetime(2026, 10, 2, tzinfo=timezone.utc)

WEBINAR = CustomActivityTypeDefinition(
    api_name="webinarAttendance",
    name="Attend Webinar",
    trigger_name="Attends Webinar",
    filter_name="Attended Webinar",
    description="Attended a webinar",
    primary_attribute=AttributeDefinition("webinarName", "Webinar Name", "string"),
    attributes=(
        AttributeDefinition("minutesWatched", "Minutes Watched", "integer"),
        AttributeDefinition("watchedAt", "Watched At", "datetime"),
        AttributeDefinition("askedQuestion", "Asked Question", "boolean"),
        AttributeDefinition("rating", "Rating", "float"),
    ),
)


def webinar_rows(count: int, leads: int = 80, unknown_every: int = 25) -> List[Dict[str, Any]]:
    """`count` distinct rows for the sandbox's leads 1001..1000+leads; every `unknown_every`-th
    row names an unknown lead."""
    rows = []
    for n in range(count):
        moment = FIRST_DATE + timedelta(minutes=n)
        lead_id = UNKNOWN_LEAD_FROM + n if n % unknown_every == 0 else 1001 + (n * 7) % leads
        rows.append({
            "lead_id": lead_id,
            "activity_date": moment,
            "primary_attribute_value": f"Webinar {n % 13}",
            "minutesWatched": n % 120,
            "watchedAt": moment + timedelta(minutes=5),
            "askedQuestion": n % 3 == 0,
            "rating": (n % 10) / 2,
        })
    return rows


def main(argv: List[str]) -> None:
    pipelines_dir, row_count = argv
    pipeline = dlt.pipeline(pipeline_name=PIPELINE_NAME, pipelines_dir=pipelines_dir,
                            destination=marketo_custom_activities())
    pipeline.run(webinar_rows(int(row_count)), table_name=TABLE_NAME)
    print("DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
