"""Retention gaps: a position older than Marketo keeps a type is reported, loudly and in a table."""

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from marketo_source.retention import retention_gap, retention_gap_row
from marketo_source.sandbox import DataSpec, MarketoSandbox
from marketo_source.state import Cursor

from tests.helpers import source_for

NOW = datetime(2026, 11, 22, tzinfo=timezone.utc)


def test_a_first_run_from_further_back_than_retention_says_what_it_cannot_reach_but_reports_no_gap(
    make_pipeline: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """No schedule could have read what Marketo purged before the first run: that is information,
    not a gap to warn about."""
    start = (datetime.now(timezone.utc) - timedelta(days=100)).strftime("%Y-%m-%dT00:00:00Z")
    caplog.set_level(logging.INFO, logger="marketo_source")
    with MarketoSandbox(data=DataSpec(seed=11, leads=30, activities=1500, days=5, start_date=start)) as sandbox:
        pipeline = make_pipeline()
        pipeline.run(source_for(sandbox, start_date=start))

    assert "marketo_retention_gaps" not in pipeline.default_schema.tables
    assert "RETENTION GAP" not in caplog.text
    assert "deleted_leads (all): Marketo keeps Delete Lead 14 days, so this first run reads them from" in caplog.text


def test_a_saved_position_older_than_retention_is_reported_per_stream(caplog: pytest.LogCaptureFixture) -> None:
    saved = Cursor.from_json({"token": "t", "position_at": "2026-08-01T00:00:00+00:00"})
    names, start = {37: "Delete Lead", 2: "Fill Out Form"}, datetime(2026, 7, 1, tzinfo=timezone.utc)
    row = retention_gap_row("deleted_leads", "all", saved, [37], start, names, NOW)
    assert row is not None
    assert (row["retention_days"], row["may_be_lost_from"]) == (14, datetime(2026, 8, 1, tzinfo=timezone.utc))
    assert "RETENTION GAP in deleted_leads (all)" in caplog.text
    assert retention_gap_row("activities", "all", saved, [2], start, names, NOW) is None  # kept 25 months
    assert retention_gap_row("deleted_leads", "all", Cursor(), [37], start, names, NOW) is None  # a first run


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


def test_a_gap_names_only_the_types_marketo_keeps_that_short(caplog: pytest.LogCaptureFixture) -> None:
    start = NOW - timedelta(days=200)
    saved = Cursor.from_json({"token": "t", "position_at": (NOW - timedelta(days=100)).isoformat()})
    names = {12: "New Lead", 13: "Change Data Value"}
    row = retention_gap_row("lead_changes", "all", saved, [12, 13], start, names, NOW)
    assert row is not None
    assert (row["activity_type_ids"], row["activity_type_names"]) == ("13", "Change Data Value")
    assert row["retention_days"] == 90
    caplog.set_level(logging.INFO, logger="marketo_source")
    retention_gap_row("lead_changes", "all", Cursor(), [12, 13], start, names, NOW)
    assert "Marketo keeps Change Data Value 90 days, so this first run reads them from" in caplog.text
    assert "New Lead" not in caplog.text
