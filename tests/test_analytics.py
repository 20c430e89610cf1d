"""The analytics example answers from the loaded tables what the sandbox's ground truth says."""

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb

from marketo_source.sandbox import MarketoSandbox

from pipelines.analytics import email_engagement_by_week, field_history
from tests.expected import utc
from tests.helpers import source_for

EMAIL_EVENTS = {6: "sent", 7: "delivered", 10: "opened", 11: "clicked"}


def test_field_history_and_weekly_email_engagement_match_the_ground_truth(
    sandbox: MarketoSandbox, make_pipeline: Any, tmp_path: Path
) -> None:
    pipeline = make_pipeline("analytics")
    pipeline.run(source_for(sandbox))
    truth = sandbox.ground_truth()

    with duckdb.connect(str(tmp_path / "analytics.duckdb"), read_only=True) as db:
        changes_per_lead = Counter(r["leadId"] for r in truth["lead_changes"] for _ in r.get("fields") or [])
        busiest = changes_per_lead.most_common(1)[0][0]
        history = [(field, old, new) for _, field, old, new in field_history(db, busiest)]
        weeks = {row[0]: row[1:5] for row in email_engagement_by_week(db)}

    changes = sorted(
        (utc(r["activityDate"]), f["id"], f["name"], f.get("oldValue"), f["newValue"])
        for r in truth["lead_changes"] if r["leadId"] == busiest for f in r.get("fields") or []
    )
    assert history == [(name, old, new) for _, _, name, old, new in changes]

    expected: Counter = Counter()
    for record in truth["activities"]:
        event = EMAIL_EVENTS.get(record["activityTypeId"])
        if event:
            day = utc(record["activityDate"]).date()
            expected[(day - timedelta(days=day.weekday()), event)] += 1
    assert set(weeks) == {week for week, _ in expected}
    for week, counts in weeks.items():
        assert counts == tuple(expected[(week, event)] for event in ("sent", "delivered", "opened", "clicked"))
