"""What the tables should hold, worked out from the sandbox's ground truth.

Written apart from the source's own flattening code on purpose: a test that compared the
source with itself could not fail.
"""

import json
import re
from datetime import date, datetime, timedelta, timezone
from typing import Any, Dict, Iterable, List, Optional

from marketo_source.settings import DEDICATED_STREAM_TYPE_IDS

BASE_FIELDS = {
    "marketoGUID": "marketo_guid",
    "id": "id",
    "leadId": "lead_id",
    "activityDate": "activity_date",
    "activityTypeId": "activity_type_id",
    "campaignId": "campaign_id",
    "primaryAttributeValueId": "primary_attribute_value_id",
    "primaryAttributeValue": "primary_attribute_value",
}


def snake(name: str) -> str:
    """`Client IP Address` -> `client_ip_address`."""
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9]+", "_", name.lower())).strip("_")


def table_of(type_name: str) -> str:
    return "activity_" + snake(type_name)


def utc(text: str) -> datetime:
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:?\d\d)", text)
    assert match, f"unexpected datetime {text!r}"
    moment = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    offset = match.group(2).replace(":", "")
    if offset != "Z":
        sign = 1 if offset[0] == "+" else -1
        minutes = sign * (int(offset[1:3]) * 60 + int(offset[3:5]))
        moment -= timedelta(minutes=minutes)
    return moment


def typed(value: Any, data_type: Optional[str]) -> Any:
    """The value as the typed column should hold it."""
    kind = (data_type or "string").lower()
    if kind in ("integer", "score"):
        return int(value)
    if kind in ("float", "currency", "percent"):
        return float(value)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if str(value).lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"not a boolean: {value!r}")
        return str(value).lower() in ("true", "1")
    if kind == "date":
        return date.fromisoformat(value[:10])
    if kind == "datetime":
        return utc(value)
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def expected_row(record: Dict[str, Any], attribute_types: Dict[str, str]) -> Dict[str, Any]:
    """The row the source should load for one record (only the columns the record fills)."""
    row: Dict[str, Any] = {}
    for field, column in BASE_FIELDS.items():
        if record.get(field) is not None:
            value = record[field]
            row[column] = utc(value) if field == "activityDate" else value
    for attribute in record.get("attributes") or []:
        column = snake(attribute["name"])
        if column in row or column in BASE_FIELDS.values():
            column = "attribute_" + column
        try:
            row[column] = typed(attribute["value"], attribute_types.get(attribute["name"]))
        except ValueError:  # a value that does not fit lands as text beside the typed column
            value = attribute["value"]
            row[column + "__v_text"] = value if isinstance(value, str) else json.dumps(value)
    return row


def attribute_types(activity_types: Iterable[Dict[str, Any]], type_ids: Iterable[int]) -> Dict[str, str]:
    """Marketo data type per attribute name: the metadata's, and "Lead ID" as a whole number where it is silent."""
    wanted = set(type_ids)
    declared = {
        a["name"]: a["dataType"]
        for t in activity_types
        if t["id"] in wanted
        for a in t.get("attributes") or []
    }
    return {"Lead ID": "integer", **declared}


def normalized(row: Dict[str, Any]) -> Dict[str, Any]:
    """A loaded row with DuckDB's values made comparable (aware datetimes, no dlt columns)."""
    clean = {}
    for column, value in row.items():
        if column.startswith("_dlt") or value is None:
            continue
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        if isinstance(value, datetime):
            value = value.astimezone(timezone.utc)
        clean[column] = value
    return clean


def by_guid(rows: Iterable[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    result: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        assert row["marketo_guid"] not in result, f"duplicate marketo_guid {row['marketo_guid']}"
        result[row["marketo_guid"]] = row
    return result


def records_of_types(records: List[Dict[str, Any]], type_ids: Iterable[int]) -> List[Dict[str, Any]]:
    """The records of these types that land in their type's table: all but those without a marketoGUID."""
    wanted = set(type_ids)
    return [r for r in records if r["activityTypeId"] in wanted and r.get("marketoGUID")]


REJECTED_TABLE = "marketo_rejected_records"


def expected_rejects(truth: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The rows of the rejected-records table: every activity Marketo sent without a marketoGUID."""
    return [
        {"stream": "activities", "reason": "no marketo_guid (marketoGUID)", "record": json.dumps(r, ensure_ascii=False)}
        for r in truth["activities"]
        if not r.get("marketoGUID")
    ]


def whole_row_key(row: Dict[str, Any]) -> tuple:
    """The key of a row in a table that has no key columns: the whole row, dlt's columns left out."""
    return (repr(sorted(normalized(row).items())),)


KEY_COLUMNS: Dict[str, tuple] = {
    "activity_types": ("id",),
    "activity_type_attributes": ("activity_type_id", "name"),
    "custom_activity_types": ("api_name",),
    "custom_activity_type_attributes": ("activity_type_api_name", "api_name"),
    "lead_field_changes": ("marketo_guid", "field_id"),
}
"""Key columns of the tables not keyed by marketo_guid alone."""

Keys = Dict[str, set]
"""Per table, the set of its rows' keys (tuples in the order of `key_columns`)."""


def key_columns(table: str) -> tuple:
    """The columns that identify a row of `table`: at most one row may hold each key."""
    return KEY_COLUMNS.get(table, ("marketo_guid",))


def expected_keys(truth: Dict[str, Any]) -> Keys:
    """Every table the source should create from `truth`, with the keys of the rows it should hold.

    Tables that should stay empty are left out, so comparing with the loaded keys also catches
    tables that should not exist (a rejects or retention-gaps table, a table per unknown type).
    """
    names = {t["id"]: t["name"] for t in truth["activity_types"]}
    keys: Keys = {}
    for record in truth["activities"]:
        if record["activityTypeId"] not in DEDICATED_STREAM_TYPE_IDS and record.get("marketoGUID"):
            type_id = record["activityTypeId"]
            keys.setdefault(table_of(names.get(type_id, f"type {type_id}")), set()).add((record["marketoGUID"],))
    keys[REJECTED_TABLE] = {whole_row_key(row) for row in expected_rejects(truth)}
    keys["lead_changes"] = {(r["marketoGUID"],) for r in truth["lead_changes"]}
    keys["lead_field_changes"] = {
        (r["marketoGUID"], f["id"]) for r in truth["lead_changes"] for f in r.get("fields") or []
    }
    keys["deleted_leads"] = {(r["marketoGUID"],) for r in truth["deleted_leads"]}
    keys["activity_types"] = {(t["id"],) for t in truth["activity_types"]}
    keys["activity_type_attributes"] = {
        (t["id"], a["name"]) for t in truth["activity_types"] for a in t.get("attributes") or []
    }
    keys["custom_activity_types"] = {(t["apiName"],) for t in truth["custom_activity_types"]}
    keys["custom_activity_type_attributes"] = {
        (t["apiName"], a["apiName"]) for t in truth["custom_activity_types"] for a in t.get("attributes") or []
    }
    return {table: rows for table, rows in keys.items() if rows}


def key_differences(loaded: Keys, expected: Keys) -> Dict[str, str]:
    """Per table whose keys differ, how: rows missing, rows extra (with a few examples)."""
    differences = {}
    for table in sorted(set(loaded) | set(expected)):
        missing = expected.get(table, set()) - loaded.get(table, set())
        extra = loaded.get(table, set()) - expected.get(table, set())
        if missing or extra:
            differences[table] = (
                f"{len(missing)} missing {sorted(missing)[:3]}, {len(extra)} not in Marketo {sorted(extra)[:3]}"
            )
    return differences


def expected_activity_type_row(activity_type: Dict[str, Any]) -> Dict[str, Any]:
    """The `activity_types` row of one type (only the columns it fills)."""
    primary = activity_type.get("primaryAttribute") or {}
    row = {
        "id": activity_type["id"],
        "name": activity_type.get("name"),
        "description": activity_type.get("description"),
        "primary_attribute_name": primary.get("name"),
        "primary_attribute_data_type": primary.get("dataType"),
    }
    return {column: value for column, value in row.items() if value is not None}


def expected_custom_type_row(custom_type: Dict[str, Any]) -> Dict[str, Any]:
    """The `custom_activity_types` row of one custom type; dlt types the ISO dates as timestamps."""
    primary = custom_type.get("primaryAttribute") or {}
    row = {
        "api_name": custom_type.get("apiName"),
        "id": custom_type.get("id"),
        "name": custom_type.get("name"),
        "description": custom_type.get("description"),
        "trigger_name": custom_type.get("triggerName"),
        "filter_name": custom_type.get("filterName"),
        "status": custom_type.get("status"),
        "created_at": utc(custom_type["createdAt"]) if custom_type.get("createdAt") else None,
        "updated_at": utc(custom_type["updatedAt"]) if custom_type.get("updatedAt") else None,
        "primary_attribute_api_name": primary.get("apiName"),
        "primary_attribute_name": primary.get("name"),
        "primary_attribute_data_type": primary.get("dataType"),
    }
    return {column: value for column, value in row.items() if value is not None}


def expected_custom_attribute_rows(custom_type: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The `custom_activity_type_attributes` rows of one custom type."""
    rows = [
        {
            "activity_type_api_name": custom_type.get("apiName"),
            "api_name": attribute.get("apiName"),
            "name": attribute.get("name"),
            "data_type": attribute.get("dataType"),
            "description": attribute.get("description"),
        }
        for attribute in custom_type.get("attributes") or ()
    ]
    return [{column: value for column, value in row.items() if value is not None} for row in rows]
