"""The read endpoints, their filters and their errors (issue behaviours 3 and 4)."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox_helpers import DENSE_TYPES, Api, error_code

ACTIVITIES = "/rest/v1/activities.json"
LEAD_CHANGES = "/rest/v1/activities/leadchanges.json"
DELETED = "/rest/v1/activities/deletedleads.json"
PAGING = "/rest/v1/activities/pagingtoken.json"
TOKEN = "<a token from Get Paging Token>"
STANDARD_IDS = {1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 22, 24, 37, 46, 104}


def test_activity_types_lists_standard_and_approved_custom_types(api: Api) -> None:
    types = {t["id"]: t for t in api.get("/rest/v1/activities/types.json")["result"]}
    assert STANDARD_IDS | {100000, 100001} <= set(types)
    assert "primaryAttribute" not in types[12]
    assert types[1]["primaryAttribute"] == {"name": "Webpage ID", "dataType": "integer"}
    assert {"name": "Attended At", "dataType": "datetime", "apiName": "attendedAt"} in types[100000]["attributes"]


@pytest.mark.parametrize("since", ["2026-10-05T00:00:00Z", "2026-10-05T00:00:00+00:00",
                                   "2026-10-05T00:00:00+0000", "2026-10-05"])
def test_paging_token_accepts_every_date_style(api: Api, since: str) -> None:
    first_page = api.get(ACTIVITIES, nextPageToken=api.paging_token(since), activityTypeIds="1", batchSize=5)
    expected = [a for a in api.sandbox.ground_truth()["activities"]
                if a["activityTypeId"] == 1 and a["activityDate"][:10] >= "2026-10-05"][:5]
    assert first_page["result"] == expected


@pytest.mark.parametrize(("since", "code"), [("", "701"), ("yesterday", "704"), ("2026-13-45T00:00:00Z", "704")])
def test_paging_token_rejects_blank_and_bad_dates(api: Api, since: str, code: str) -> None:
    assert error_code(api.get(PAGING, sinceDatetime=since)) == code


@pytest.mark.parametrize(("params", "code", "message_part"), [
    ({"activityTypeIds": "1"}, "701", "nextPageToken"),
    ({"nextPageToken": TOKEN}, "701", "activityTypeIds"),
    ({"nextPageToken": TOKEN, "activityTypeIds": ",".join(map(str, range(1, 12)))}, "1003", "activityTypeIds"),
    ({"nextPageToken": TOKEN, "activityTypeIds": "1,999"}, "1003", "999"),
    ({"nextPageToken": TOKEN, "activityTypeIds": "1", "leadIds": ",".join(map(str, range(1001, 1032)))},
     "1003", "leadIds"),
    ({"nextPageToken": TOKEN, "activityTypeIds": "1", "leadIds": "abc"}, "1003", "leadIds"),
    ({"nextPageToken": TOKEN, "activityTypeIds": "1", "listId": "999"}, "610", "List not found"),
    ({"nextPageToken": TOKEN, "activityTypeIds": "1", "listId": "5004"}, "1003", "10,000 or more"),
    ({"nextPageToken": TOKEN, "activityTypeIds": "1,2", "assetIds": "5"}, "1003", "assetIds"),
    ({"nextPageToken": TOKEN, "activityTypeIds": "1", "batchSize": "301"}, "1003", "batchSize"),
    ({"nextPageToken": TOKEN, "activityTypeIds": "1", "batchSize": "0"}, "1003", "batchSize"),
])
def test_activities_parameter_errors(api: Api, params: dict[str, str], code: str, message_part: str) -> None:
    token = api.paging_token()
    answer = api.get(ACTIVITIES, **{key: token if value is TOKEN else value for key, value in params.items()})
    assert error_code(answer) == code
    assert message_part in answer["errors"][0]["message"]


def _read(api: Api, path: str, **params: Any) -> list[dict[str, Any]]:
    return api.read_all(path, api.paging_token(), **params)[0]


def test_activities_filter_by_lead_ids(api: Api) -> None:
    records = _read(api, ACTIVITIES, activityTypeIds=",".join(map(str, DENSE_TYPES)), leadIds="1001,1002")
    expected = [a for a in api.sandbox.ground_truth()["activities"]
                if a["leadId"] in (1001, 1002) and a["activityTypeId"] in DENSE_TYPES]
    assert records == expected and records


def test_activities_filter_by_static_list(api: Api) -> None:
    members = api.sandbox.store.generator.lists[5001].members
    records = _read(api, ACTIVITIES, activityTypeIds="1,6,7", listId="5001")
    expected = [a for a in api.sandbox.ground_truth()["activities"]
                if a["leadId"] in members and a["activityTypeId"] in (1, 6, 7)]
    assert records == expected and records


def test_activities_filter_by_asset_ids(api: Api) -> None:
    visits = [a for a in api.sandbox.ground_truth()["activities"] if a["activityTypeId"] == 1]
    asset = visits[0]["primaryAttributeValueId"]
    records = _read(api, ACTIVITIES, activityTypeIds="1", assetIds=str(asset))
    assert records == [a for a in visits if a["primaryAttributeValueId"] == asset]


def test_lead_changes_return_new_leads_and_changes_of_requested_fields(api: Api) -> None:
    records = _read(api, LEAD_CHANGES, fields="city,title,noSuchField")
    assert {r["activityTypeId"] for r in records} == {12, 13}
    changes = [r for r in records if r["activityTypeId"] == 13]
    assert changes and all(len(r["fields"]) == 1 and r["fields"][0]["name"] in ("city", "title") for r in changes)
    assert all({a["name"] for a in r["attributes"]} == {"Reason", "Source", "Lead ID"} for r in changes)
    new_leads = [r for r in records if r["activityTypeId"] == 12]
    assert len(new_leads) == api.sandbox.data.leads
    assert all(f["name"] == "city" for r in new_leads for f in r["fields"])


def test_lead_changes_match_ground_truth_for_all_fields(api: Api) -> None:
    all_fields = ",".join(f["name"] for f in api.sandbox.ground_truth()["lead_fields"])
    assert _read(api, LEAD_CHANGES, fields=all_fields) == api.sandbox.ground_truth()["lead_changes"]


def test_lead_changes_require_fields(api: Api) -> None:
    assert error_code(api.get(LEAD_CHANGES, nextPageToken=api.paging_token())) == "701"


def test_deleted_leads_match_ground_truth(api: Api) -> None:
    records = _read(api, DELETED)
    assert records and records == api.sandbox.ground_truth()["deleted_leads"]
    assert {r["activityTypeId"] for r in records} == {37}


def test_describe_lead_lists_field_names(api: Api) -> None:
    result = api.get("/rest/v1/leads/describe2.json")["result"][0]
    names = {f["name"] for f in result["fields"]}
    assert result["name"] == "API Lead" and {"email", "firstName", "city", "leadScore"} <= names
    assert len(result["fields"]) >= 30


def test_usage_counts_todays_calls(api: Api) -> None:
    api.get("/rest/v1/activities/types.json")
    usage = api.get("/rest/v1/stats/usage.json")["result"][0]
    assert usage["total"] == 2 == usage["users"][0]["count"]
