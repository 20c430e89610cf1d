"""The analytics example answers from the loaded tables what the sandbox's ground truth says."""

import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import duckdb
import pytest

from marketo_source.sandbox import DataSpec, MarketoSandbox

from pipelines.analytics import email_engagement_by_week, field_history
from tests.expected import utc
from tests.helpers import SMALL_DATA, source_for

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


def _engagement_rows(printed: str) -> list[list[str]]:
    """The rows of the script's "Email engagement by week" table: week, counts, open rate, CTOR."""
    table = printed.split("Email engagement by week", 1)[1].splitlines()[2:]
    return [line.split() for line in table if line.strip()]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_script_prints_a_funnel_every_week_with_rates_at_most_one(
    marketo_sandbox_factory: Callable[..., MarketoSandbox], make_pipeline: Any, tmp_path: Path, seed: int
) -> None:
    sandbox = marketo_sandbox_factory(data=DataSpec(**{**SMALL_DATA, "seed": seed}))
    make_pipeline("analytics").run(source_for(sandbox))
    printed = subprocess.run(
        [sys.executable, "pipelines/analytics.py", "--database", str(tmp_path / "analytics.duckdb")],
        capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1],
    ).stdout

    rows = _engagement_rows(printed)
    sent_weeks = {utc(r["activityDate"]).date() for r in sandbox.ground_truth()["activities"]
                  if r["activityTypeId"] == 6}
    assert [row[0] for row in rows] == sorted({str(d - timedelta(days=d.weekday())) for d in sent_weeks})
    for week, sent, delivered, opened, clicked, open_rate, click_to_open in rows:
        counts = [int(sent), int(delivered), int(opened), int(clicked)]
        assert counts == sorted(counts, reverse=True), (week, counts)
        assert 0 < float(open_rate) <= 1 and 0 < float(click_to_open) <= 1, (week, open_rate, click_to_open)
