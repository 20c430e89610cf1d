"""Helpers of the source tests: the source pointed at a sandbox, reading loaded tables, and
comparing them with the sandbox's ground truth."""

from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List

import dlt

from marketo_source import marketo_source
from marketo_source.sandbox import MarketoSandbox
from marketo_source.settings import DEDICATED_STREAM_TYPE_IDS, RUN_REPORTS_TABLE

from tests.destinations import stored_tables
from tests.destinations import table_rows as table_rows  # re-exported: the tests read tables through helpers
from tests.expected import (
    REJECTED_TABLE,
    Keys,
    attribute_types,
    by_guid,
    expected_activity_type_row,
    expected_custom_attribute_rows,
    expected_custom_type_row,
    expected_keys,
    expected_rejects,
    expected_row,
    key_columns,
    key_differences,
    normalized,
    records_of_types,
    table_of,
    utc,
    whole_row_key,
)

SMALL_DATA: Dict[str, Any] = dict(seed=7, leads=80, activities=4000, days=20, start_date="2026-10-01T00:00:00Z")
FAST_CLIENT: Dict[str, Any] = dict(rate_limit_calls=1000, rate_limit_period_s=1.0, max_concurrency=5, max_attempts=4)


def source_for(sandbox: MarketoSandbox, **kwargs: Any) -> Any:
    """The Marketo source pointed at a sandbox, with limits loose enough for quick tests."""
    settings = dict(
        base_url=sandbox.base_url,
        client_id=sandbox.client_id,
        client_secret=sandbox.client_secret,
        start_date=SMALL_DATA["start_date"],
        **FAST_CLIENT,
    )
    return marketo_source(**{**settings, **kwargs})


def recent_start_date(days: int = 10) -> str:
    """Midnight UTC `days` ago: data from there is within every retention window (14 days for
    deleted leads), so that no run reports a retention gap, which would add a table of its own."""
    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def table_names(pipeline: dlt.Pipeline) -> List[str]:
    return [t for t in pipeline.default_schema.data_table_names() if not t.startswith("_dlt")]


def stored_table_names(pipeline: dlt.Pipeline) -> List[str]:
    """The data tables that exist in the destination, which after a failed or killed run may be
    fewer than the schema names: the schema is saved when extract ends, the tables made in load."""
    return stored_tables(pipeline, table_names(pipeline))


def loaded_keys(pipeline: dlt.Pipeline) -> Keys:
    """Per loaded table, the keys of its rows; fails on a key held by two rows (a duplicate).

    A table without its key columns (rejects, retention gaps) is keyed by its whole row, so that
    it shows up in a comparison with `expected_keys` instead of being skipped.
    """
    keys: Keys = {}
    duplicates: Dict[str, int] = {}
    if not pipeline.default_schema_name:
        return keys  # nothing was ever extracted
    for table in stored_table_names(pipeline):
        if table == RUN_REPORTS_TABLE:
            continue  # what the runs did, not Marketo's data: tests/test_run_report.py checks it
        rows = table_rows(pipeline, table)
        columns = key_columns(table)
        if rows and not set(columns) <= set(rows[0]):
            keys[table] = {whole_row_key(row) for row in rows}
            continue
        row_keys = [tuple(row[c] for c in columns) for row in rows]
        if len(row_keys) != len(set(row_keys)):
            duplicates[table] = len(row_keys) - len(set(row_keys))
        if row_keys:
            keys[table] = set(row_keys)
    assert not duplicates, f"rows loaded twice (duplicate keys per table): {duplicates}"
    return keys


def assert_nothing_lost_or_invented(before: Keys, now: Keys, truth: Dict[str, Any]) -> None:
    """Rows loaded earlier are still there, and every loaded row exists in Marketo.

    Holds after every run, finished or not: merge never removes a row, and a run cut short
    must neither lose what earlier runs loaded nor load anything Marketo does not hold.
    """
    lost = {table: len(keys - now.get(table, set())) for table, keys in before.items()}
    assert not any(lost.values()), f"rows loaded earlier are gone: { {t: n for t, n in lost.items() if n} }"
    possible = expected_keys(truth)
    invented = {table: sorted(keys - possible.get(table, set()))[:3] for table, keys in now.items()}
    assert not any(invented.values()), f"rows Marketo does not hold: { {t: k for t, k in invented.items() if k} }"


def assert_activities_match(pipeline: Any, truth: Dict[str, Any], type_ids: Any = None) -> int:
    """Every activity table holds exactly the ground truth's records of its type; returns rows compared."""
    types = {t["id"]: t for t in truth["activity_types"]}
    wanted = type_ids or [t for t in types if t not in DEDICATED_STREAM_TYPE_IDS]
    compared = 0
    for type_id in wanted:
        records = records_of_types(truth["activities"], [type_id])
        table = table_of(types[type_id]["name"])
        if not records:
            assert table not in table_names(pipeline)
            continue
        loaded = by_guid(table_rows(pipeline, table))
        assert set(loaded) == {r["marketoGUID"] for r in records}, table
        column_types = attribute_types(truth["activity_types"], [type_id])
        for record in records:
            assert normalized(loaded[record["marketoGUID"]]) == expected_row(record, column_types)
        compared += len(records)
    return compared


def assert_lead_changes_match(pipeline: Any, truth: Dict[str, Any]) -> None:
    records = truth["lead_changes"]
    loaded = by_guid(table_rows(pipeline, "lead_changes"))
    assert set(loaded) == {r["marketoGUID"] for r in records}
    column_types = attribute_types(truth["activity_types"], [12, 13])
    for record in records:
        assert normalized(loaded[record["marketoGUID"]]) == expected_row(record, column_types)
    expected_fields = {
        (r["marketoGUID"], f["id"]): (
            f["name"], f.get("oldValue"), f.get("newValue"), r["leadId"], utc(r["activityDate"])
        )
        for r in records
        for f in r.get("fields") or []
    }
    loaded_fields = {
        (row["marketo_guid"], row["field_id"]): (
            row["field_name"], row["old_value"], row["new_value"], row["lead_id"],
            normalized(row)["activity_date"],
        )
        for row in table_rows(pipeline, "lead_field_changes")
    }
    assert loaded_fields == expected_fields
    assert len(table_rows(pipeline, "lead_field_changes")) == len(expected_fields)


def assert_deleted_leads_match(pipeline: Any, truth: Dict[str, Any]) -> None:
    records = truth["deleted_leads"]
    loaded = by_guid(table_rows(pipeline, "deleted_leads"))
    assert set(loaded) == {r["marketoGUID"] for r in records}
    column_types = attribute_types(truth["activity_types"], [37])
    for record in records:
        assert normalized(loaded[record["marketoGUID"]]) == expected_row(record, column_types)


def assert_rejects_match(pipeline: Any, truth: Dict[str, Any]) -> int:
    """The rejected-records table holds each record Marketo sent without a key once, as sent; returns their number."""
    loaded = sorted((normalized(row) for row in table_rows(pipeline, REJECTED_TABLE)), key=repr)
    expected = sorted(expected_rejects(truth), key=repr)
    assert loaded == expected, "the rejected records differ from Marketo's unkeyed records"
    return len(loaded)


def assert_catalog_matches(pipeline: Any, truth: Dict[str, Any]) -> None:
    """The activity types, custom types and their attributes equal Marketo's, value for value."""
    loaded_types = {row["id"]: normalized(row) for row in table_rows(pipeline, "activity_types")}
    assert loaded_types == {t["id"]: expected_activity_type_row(t) for t in truth["activity_types"]}
    attributes = {
        (r["activity_type_id"], r["name"]): r["data_type"] for r in table_rows(pipeline, "activity_type_attributes")
    }
    assert attributes == {(t["id"], a["name"]): a["dataType"] for t in truth["activity_types"] for a in t["attributes"]}
    custom = {row["api_name"]: normalized(row) for row in table_rows(pipeline, "custom_activity_types")}
    assert custom == {t["apiName"]: expected_custom_type_row(t) for t in truth["custom_activity_types"]}
    custom_attributes = sorted(
        (normalized(row) for row in table_rows(pipeline, "custom_activity_type_attributes")),
        key=lambda row: (row["activity_type_api_name"], row["api_name"]),
    )
    expected_attributes = sorted(
        (row for t in truth["custom_activity_types"] for row in expected_custom_attribute_rows(t)),
        key=lambda row: (row["activity_type_api_name"], row["api_name"]),
    )
    assert custom_attributes == expected_attributes


def assert_everything_matches(pipeline: Any, sandbox: MarketoSandbox) -> None:
    """The activity, lead change and deleted lead tables equal the sandbox's records."""
    _assert_streams_match(pipeline, sandbox.ground_truth())


def assert_every_table_matches(pipeline: Any, sandbox: MarketoSandbox) -> int:
    """Exactly the tables Marketo's data calls for, each with exactly its rows and values.

    Stricter than `assert_everything_matches`: it also compares the type catalog tables and
    fails on any extra table. Returns the number of rows compared.
    """
    truth = sandbox.ground_truth()
    expected = expected_keys(truth)
    differences = key_differences(loaded_keys(pipeline), expected)
    assert not differences, f"tables differ from Marketo: {differences}"
    _assert_streams_match(pipeline, truth)
    assert_catalog_matches(pipeline, truth)
    return sum(len(keys) for keys in expected.values())


def _assert_streams_match(pipeline: Any, truth: Dict[str, Any]) -> None:
    assert assert_activities_match(pipeline, truth) > 0
    assert_lead_changes_match(pipeline, truth)
    assert_deleted_leads_match(pipeline, truth)
