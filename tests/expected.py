"""What the tables should hold, worked out from the sandbox's ground truth.

Written apart from the source's own flattening code on purpose: a test that compared the
source with itself could not fail.
"""

import json
import re
from datetime import date, datetime, timedelta, timezone
from typing import Any, Dict, Iterable, List, Optional

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
    moment = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")
    offset = match.group(2).replace(":", "")
    if offset != "Z":
        sign = 1 if offset[0] == "+" else -1
        minutes = sign * (int(offset[1:3]) * 60 + int(offset[3:5]))
        moment -= timedelta(minutes=minutes)
    return moment.replace(tzinfo=timezone.utc)


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
            row[column + "__v_text"] = attribute["value"] if isinstance(attribute["value"], str) else json.dumps(attribute["value"])
    return row


def attribute_types(activity_types: Iterable[Dict[str, Any]], type_ids: Iterable[int]) -> Dict[str, str]:
    wanted = set(type_ids)
    return {
        a["name"]: a["dataType"]
        for t in activity_types
        if t["id"] in wanted
        for a in t.get("attributes") or []
    }


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
    wanted = set(type_ids)
    return [r for r in records if r["activityTypeId"] in wanted]
