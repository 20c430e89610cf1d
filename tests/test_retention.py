"""Retention gaps: a position older than Marketo keeps a type is reported, loudly and in a table."""

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from marketo_source.retention import retention_gap
from marketo_source.sandbox import DataSpec, MarketoSandbox
from marketo_source.state import Cursor

from tests.helpers import source_for, table_rows

NOW = datetime(2026, 11, 22, tzinfo=timezone.utc)


def test_a_start_date_older_than_retention_is_reported_per_stream(
    make_pipeline: Any, caplog: pytest.LogCaptureFixture
) -> None:
    start = (datetime.now(timezone.utc) - timedelta(days=100)).strftime("%Y-%m-%dT00:00:00Z")
    with MarketoSandbox(data=DataSpec(seed=11, leads=30, activities=1500, days=5, start_date=start)) as sandbox:
        pipeline = make_pipeline()
        pipeline.run(source_for(sandbox, start_date=start))

    gaps = table_rows(pipeline, "marketo_retention_gaps")
    by_stream = {(g["stream"], g["activity_type_ids"]): g for g in gaps}
    assert by_stream[("deleted_leads", "37")]["retention_days"] == 14
    assert by_stream[("lead_changes", "12,13")]["retention_days"] == 90
    ninety_day_types = {"1", "3", "6", "7", "22", "24"}
    reported = {ids for stream, ids in by_stream if stream == "activities"}
    assert ninety_day_types <= reported
    assert not reported & {"2", "10", "11", "46"}, "25-month types are not at risk after 100 days"
    assert "RETENTION GAP in deleted_leads" in caplog.text


def test_no_gap_when_the_position_is_within_retention(make_pipeline: Any) -> None:
    start = (datetime.now(timezone.utc) - timedelta(days=5)).strftime("%Y-%m-%dT00:00:00Z")
    with MarketoSandbox(data=DataSpec(seed=12, leads=30, activities=1000, days=4, start_date=start)) as sandbox:
        pipeline = make_pipeline()
        pipeline.run(source_for(sandbox, start_date=start))
    assert "marketo_retention_gaps" not in pipeline.default_schema.tables


@pytest.mark.parametrize(
    ("cursor", "days", "expected"),
    [
        (
            {"token": "t", "position_at": "2026-11-01T00:00:00+00:00"}, 14,
            (datetime(2026, 11, 1, tzinfo=timezone.utc), NOW - timedelta(days=14)),
        ),
        ({"token": "t", "position_at": "2026-11-10T00:00:00+00:00"}, 14, None),
        ({}, 90, None),  # a first run from a start within 90 days
        ({}, 30, (datetime(2026, 10, 1, tzinfo=timezone.utc), NOW - timedelta(days=30))),
        ({"token": "t", "position_at": "2020-01-01T00:00:00+00:00"}, None, None),  # kept forever
    ],
)
def test_retention_gap_of_a_saved_position(cursor: Any, days: Any, expected: Any) -> None:
    start = datetime(2026, 10, 1, tzinfo=timezone.utc)
    assert retention_gap(Cursor.from_json(cursor), start, days, NOW) == expected
