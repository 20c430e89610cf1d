"""Export files: Marketo's CSV layout, hostile values that survive a standard CSV reader, and what a job's
file holds (the filter, both readings of createdAt, what was recorded before the job processed)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from marketo_source.sandbox import BulkSpec, MarketoSandbox
from marketo_source.sandbox.bulk import CreatedAtReading
from marketo_source.sandbox.export_file import DEFAULT_FIELDS, export_csv
from marketo_source.sandbox.hostile import HOSTILE_VALUES

from sandbox_helpers import START, TEST_DATA, BulkApi, StartSandbox, epoch_s, guids, iso


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


# -- files served over HTTP ------------------------------------------------------------------------

FAST = BulkSpec(queue_s=0, processing_s=0.05, status_interval_s=0.01)


def _bulk(start_sandbox: StartSandbox, created_at: CreatedAtReading = "activity_date") -> BulkApi:
    return BulkApi(start_sandbox(bulk=replace(FAST, created_at=created_at)))


def _rows(file: bytes) -> dict[str, dict[str, str]]:
    """The file's rows by marketoGUID, as a standard CSV reader gives them."""
    header, *rows = _read(file)
    assert header == list(DEFAULT_FIELDS)
    by_guid = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert len(by_guid) == len(rows)
    return by_guid


def _expected(sandbox: MarketoSandbox, start: str, end: str, type_ids: set[int] | None = None,
              on_recorded: bool = False) -> dict[str, dict[str, Any]]:
    """Ground truth: the activities a job over [start, end] exports, by marketoGUID."""
    truth = sandbox.ground_truth()
    low, high = (datetime.fromisoformat(bound).timestamp() * 1000 for bound in (start, end))
    expected = {}
    for activity, recorded_ms in zip(truth["activities"], truth["activity_recorded_ms"], strict=True):
        created_ms = recorded_ms if on_recorded else epoch_s(activity) * 1000
        if low <= created_ms <= high and activity["activityTypeId"] != 37 \
                and (type_ids is None or activity["activityTypeId"] in type_ids):
            expected[activity["marketoGUID"]] = activity
    return expected


def _assert_rows_match(rows: dict[str, dict[str, str]], expected: dict[str, dict[str, Any]]) -> None:
    assert rows.keys() == expected.keys()
    for guid, row in rows.items():
        activity = expected[guid]
        for field in DEFAULT_FIELDS[:-1]:
            assert row[field] == _expected_cell(activity, field), (guid, field)
        attributes = {a["name"]: a["value"] for a in activity.get("attributes", [])} or None
        assert json.loads(row["attributes"]) == attributes


def test_file_holds_the_filtered_activities_but_never_delete_lead(start_sandbox: StartSandbox) -> None:
    api = _bulk(start_sandbox)
    end = "2026-10-20T12:00:00Z"
    status, file = api.export(end=end)
    expected = _expected(api.sandbox, START, end)
    assert any(a["activityTypeId"] == 37 for a in api.sandbox.ground_truth()["activities"])
    _assert_rows_match(_rows(file), expected)
    assert status["numberOfRecords"] == len(expected)
    _, typed = api.export(end=end, activityTypeIds=[1, 12, 100001])
    _assert_rows_match(_rows(typed), _expected(api.sandbox, START, end, {1, 12, 100001}))


@pytest.mark.parametrize("created_at", ["activity_date", "recorded"])
def test_created_at_reading(start_sandbox: StartSandbox, created_at: CreatedAtReading) -> None:
    api = _bulk(start_sandbox, created_at)
    late = api.sandbox.add_activities(late=30, lateness_s=3 * 3600)
    on_time = api.sandbox.add_activities(new=30)
    now = time.time()
    start, end = iso(now - 3600), iso(now + 60)
    rows = _rows(api.export(start=start, end=end)[1])
    _assert_rows_match(rows, _expected(api.sandbox, start, end, on_recorded=created_at == "recorded"))
    late_guids = {a["marketoGUID"] for a in late if a["activityTypeId"] != 37}
    assert (late_guids <= rows.keys()) == (created_at == "recorded") and late_guids
    assert late_guids.isdisjoint(rows) == (created_at == "activity_date")
    assert {a["marketoGUID"] for a in on_time if a["activityTypeId"] != 37} <= rows.keys()


def test_file_holds_what_was_recorded_before_processing_and_stays_fixed(start_sandbox: StartSandbox) -> None:
    api = BulkApi(start_sandbox(bulk=BulkSpec(queue_s=0, processing_s=1, status_interval_s=0.01)))
    before = api.sandbox.add_activities(new=20)
    now = time.time()
    start, end = iso(now - 60), iso(now + 3600)
    export_id = api.created(start=start, end=end)
    api.job("enqueue", export_id)
    api.wait(export_id, "Processing")
    during = api.sandbox.add_activities(new=20)
    status = api.wait(export_id, "Completed")
    after = api.sandbox.add_activities(new=20)
    rows = _rows(api.file(export_id).content)
    assert guids(a for a in before if a["activityTypeId"] != 37) == rows.keys()
    assert guids(during + after).isdisjoint(rows)
    assert "sha256:" + hashlib.sha256(api.file(export_id).content).hexdigest() == status["fileChecksum"]


def test_hostile_values_round_trip_over_http(start_sandbox: StartSandbox) -> None:
    api = _bulk(start_sandbox)
    added = api.sandbox.add_activities(new=80, hostile=True)
    now = time.time()
    start, end = iso(now - 60), iso(now + 60)
    _, file = api.export(start=start, end=end)
    assert b"\x00" in file and b"\r" in file
    expected = _expected(api.sandbox, start, end)
    assert guids(a for a in added if a["activityTypeId"] != 37) == expected.keys()
    _assert_rows_match(_rows(file), expected)


def test_fields_and_column_header_names_over_http(start_sandbox: StartSandbox) -> None:
    api = _bulk(start_sandbox)
    fields = ["leadId", "marketoGUID", "attributes"]
    _, file = api.export(fields=fields, columnHeaderNames={"leadId": "Lead", "attributes": "Secondary Attributes"})
    header, *rows = _read(file)
    assert header == ["Lead", "marketoGUID", "Secondary Attributes"]
    by_guid = {a["marketoGUID"]: a for a in _expected(api.sandbox, START, "2026-10-31T00:00:00Z").values()}
    assert {row[1] for row in rows} == by_guid.keys()
    assert all(row[0] == str(by_guid[row[1]]["leadId"]) for row in rows)


def test_records_that_break_marketos_schema_are_written_with_nulls(start_sandbox: StartSandbox) -> None:
    api = BulkApi(start_sandbox(data=replace(TEST_DATA, malformed=6), bulk=FAST))
    rows = _rows(api.export()[1])  # the whole span of the test data
    expected = {a["marketoGUID"]: a for a in api.sandbox.ground_truth()["activities"] if a["activityTypeId"] != 37}
    _assert_rows_match(rows, expected)
    broken = [row for row in rows.values() if "null" in (row["activityDate"], row["attributes"])]
    assert len(broken) == 4  # two without activityDate, two without attributes
