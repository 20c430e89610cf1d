"""Add Custom Activities and reading them back (behaviour 3)."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox_helpers import Api, error_code

EXTERNAL = "/rest/v1/activities/external.json"


def _item(**overrides: Any) -> dict[str, Any]:
    item = {"leadId": 1001, "activityDate": "2026-11-02T10:00:00Z", "activityTypeId": 100000,
            "primaryAttributeValue": "Data Summit 東京",
            "attributes": [{"apiName": "seatsBooked", "value": 2}, {"name": "sessionTitle", "value": "Café ☕"}]}
    return {**item, **overrides}


def test_written_activities_are_read_back(api: Api) -> None:
    result = api.post(EXTERNAL, {"input": [_item(), _item(apiName="productUsage", activityTypeId=None,
                                                          attributes=[{"apiName": "usageMinutes", "value": 5}])]})
    assert [r["status"] for r in result["result"]] == ["added", "added"]
    assert all(isinstance(r["marketoGUID"], str) and isinstance(r["id"], int) for r in result["result"])
    records, _ = api.read_all("/rest/v1/activities.json", api.paging_token("2026-11-02"),
                              activityTypeIds="100000,100001", leadIds="1001")
    assert [r["marketoGUID"] for r in records] == [r["marketoGUID"] for r in result["result"]]
    assert records[0]["primaryAttributeValue"] == "Data Summit 東京"
    assert records[0]["attributes"] == [
        {"name": "Seats Booked", "apiName": "seatsBooked", "value": 2},
        {"name": "Session Title", "apiName": "sessionTitle", "value": "Café ☕"},
    ]


def test_sending_an_item_twice_makes_two_activities(api: Api) -> None:
    result = api.post(EXTERNAL, {"input": [_item(), _item()]})["result"]
    assert result[0]["marketoGUID"] != result[1]["marketoGUID"]


def _deleted_lead(api: Api) -> int:
    lead_id: int = api.sandbox.ground_truth()["deleted_leads"][0]["leadId"]
    return lead_id


@pytest.mark.parametrize(("overrides", "code"), [
    ({"leadId": 999_999}, "1004"),
    ({"leadId": "deleted"}, "1004"),
    ({"activityTypeId": 1}, "1003"),
    ({"activityDate": "not a date"}, "1003"),
    ({"primaryAttributeValue": ""}, "1003"),
    ({"attributes": [{"apiName": "noSuchAttribute", "value": 1}]}, "1003"),
])
def test_items_are_skipped_with_the_reason(api: Api, overrides: dict[str, Any], code: str) -> None:
    if overrides.get("leadId") == "deleted":
        overrides = {"leadId": _deleted_lead(api)}
    result = api.post(EXTERNAL, {"input": [_item(**overrides), _item()]})["result"]
    assert result[0]["status"] == "skipped" and result[0]["errors"][0]["code"] == code
    assert result[1]["status"] == "added"


def test_more_than_300_items_or_no_input_are_refused(api: Api) -> None:
    assert error_code(api.post(EXTERNAL, {"input": [_item()] * 301})) == "1003"
    assert error_code(api.post(EXTERNAL, {})) == "701"
