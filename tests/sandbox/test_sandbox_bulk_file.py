"""The export file writer: Marketo's CSV layout, and hostile values that survive a standard CSV reader."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from marketo_source.sandbox import MarketoSandbox
from marketo_source.sandbox.export_file import DEFAULT_FIELDS, export_csv
from marketo_source.sandbox.hostile import HOSTILE_VALUES

from sandbox_helpers import TEST_DATA


def _read(file: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(file.decode(), newline="")))


def _expected_cell(activity: dict[str, Any], field: str) -> str:
    """A cell of any column but `attributes`, as the reader should give it back."""
    value = activity.get(field)
    return "null" if value in (None, "") else str(value)


@pytest.fixture(scope="module")
def hostile_activities() -> list[dict[str, Any]]:
    """Activities added with hostile text values (the sandbox is not started: the store alone adds them)."""
    return MarketoSandbox(data=TEST_DATA).add_activities(new=60, late=20, hostile=True)


def test_hostile_values_are_in_the_added_activities(hostile_activities: list[dict[str, Any]]) -> None:
    texts = {a.get("primaryAttributeValue") for a in hostile_activities}
    texts |= {attribute["value"] for a in hostile_activities for attribute in a["attributes"]}
    assert set(HOSTILE_VALUES) <= texts


def test_hostile_values_round_trip_through_a_csv_reader(hostile_activities: list[dict[str, Any]]) -> None:
    rows = _read(export_csv(hostile_activities))
    assert rows[0] == list(DEFAULT_FIELDS)
    assert len(rows) == len(hostile_activities) + 1
    for activity, row in zip(hostile_activities, rows[1:], strict=True):
        cells = dict(zip(DEFAULT_FIELDS, row, strict=True))
        for field in DEFAULT_FIELDS:
            if field == "attributes":
                attributes = {a["name"]: a["value"] for a in activity["attributes"]} or None
                assert json.loads(cells[field]) == attributes
            else:
                assert cells[field] == _expected_cell(activity, field)


def test_fields_choose_and_order_columns_and_headers_rename_them(hostile_activities: list[dict[str, Any]]) -> None:
    fields = ("activityDate", "primaryAttributeValue", "marketoGUID")
    rows = _read(export_csv(hostile_activities, fields, {"marketoGUID": "GUID, quoted", "activityDate": "When"}))
    assert rows[0] == ["When", "primaryAttributeValue", "GUID, quoted"]
    assert rows[1:] == [[_expected_cell(a, f) for f in fields] for a in hostile_activities]


def test_empty_values_are_written_null() -> None:
    activity = {"marketoGUID": "g", "leadId": 1, "activityDate": "2026-10-01T00:00:00Z", "activityTypeId": 1,
                "primaryAttributeValue": "", "attributes": []}
    file = export_csv([activity])
    assert file.decode().splitlines()[1] == "g,1,2026-10-01T00:00:00Z,1,null,null,null,null"


def test_unknown_field_is_refused() -> None:
    with pytest.raises(ValueError, match="'id'"):
        export_csv([], ("marketoGUID", "id"))
