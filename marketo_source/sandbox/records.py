"""Activity records and their JSON renderings for the two read views Marketo offers.

Records are rendered once, when committed, so serving a page is a join of ready bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from .catalog import LeadField


@dataclass(frozen=True, slots=True)
class FieldChange:
    """The lead field a Change Data Value (13) activity changed."""

    field: LeadField
    new_value: str
    old_value: str | None
    reason: str
    source: str


@dataclass(frozen=True, slots=True)
class Activity:
    """One activity of the instance, with everything both read views need.

    Attributes:
        attributes: Rendered attribute dicts ({"name", "value"} plus "apiName" for custom types),
            empty ones already left out.
        change: Set on Change Data Value (13) records only.
        malformed: How the record breaks Marketo's own schema, if it does: "no_activity_date",
            "no_attributes" or "no_guid" (a wrongly typed value needs no flag: it sits in `attributes`).
    """

    id: int
    guid: str
    lead_id: int
    date_ms: int
    date_text: str
    type_id: int
    attributes: tuple[dict[str, Any], ...]
    campaign_id: int | None = None
    primary_id: int | None = None
    primary_value: str | None = None
    change: FieldChange | None = None
    malformed: str | None = None


# One encoder for all calls: json.dumps with non-default options builds a new encoder each time.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(value: Any) -> bytes:
    """Serialize as Marketo does: compact UTF-8 JSON without ASCII escaping."""
    return _ENCODER.encode(value).encode()


def _base(activity: Activity) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": activity.id,
        "marketoGUID": activity.guid,
        "leadId": activity.lead_id,
        "activityDate": activity.date_text,
        "activityTypeId": activity.type_id,
    }
    if activity.campaign_id is not None:
        record["campaignId"] = activity.campaign_id
    if activity.malformed == "no_activity_date":
        del record["activityDate"]
    if activity.malformed == "no_guid":
        del record["marketoGUID"]
    return record


def render_activity(activity: Activity) -> bytes:
    """Render the record as Get Lead Activities (and Get Deleted Leads) shows it."""
    record = _base(activity)
    if activity.primary_id is not None:
        record["primaryAttributeValueId"] = activity.primary_id
    if activity.primary_value is not None:
        record["primaryAttributeValue"] = activity.primary_value
    if activity.malformed != "no_attributes":
        record["attributes"] = list(activity.attributes)
    return dumps(record)


def render_lead_change_head(activity: Activity) -> bytes:
    """Render the Get Lead Changes view without its closing brace, so `fields` can follow.

    Change Data Value records there carry Reason, Source and a "Lead ID" attribute instead of
    the New Value / Old Value attributes, which move into `fields`.
    """
    record = _base(activity)
    change = activity.change
    if change is None:
        record["attributes"] = list(activity.attributes)
    else:
        record["attributes"] = [
            {"name": "Reason", "value": change.reason},
            {"name": "Source", "value": change.source},
            {"name": "Lead ID", "value": activity.lead_id},
        ]
    return dumps(record)[:-1]


def field_entry(lead_field: LeadField, new_value: str, old_value: str | None = None) -> dict[str, Any]:
    """One entry of a lead change's `fields` list; oldValue left out when there was none."""
    entry: dict[str, Any] = {"id": lead_field.id, "name": lead_field.name, "newValue": new_value}
    if old_value is not None:
        entry["oldValue"] = old_value
    return entry


def close_lead_change(head: bytes, fields: Iterable[dict[str, Any]]) -> bytes:
    """Complete a lead change head with its `fields` list."""
    return head + b',"fields":' + dumps(list(fields)) + b"}"
