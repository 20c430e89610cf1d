"""Custom activity types: life cycle and validation (behaviours 3 and 4)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import pytest

from marketo_source.sandbox import MarketoSandbox
from marketo_source.sandbox.__main__ import build_sandbox, parse_args

from sandbox_helpers import TEST_DATA, Api, error_code

EXTERNAL = "/rest/v1/activities/external"


def _type_body(api_name: str = "webinarJoin", name: str = "Join Webinar", **overrides: Any) -> dict[str, Any]:
    body = {"apiName": api_name, "name": name, "triggerName": "Joins Webinar", "filterName": "Joined Webinar",
            "description": "Joined a webinar", "primaryAttribute": {"apiName": "webinarName", "name": "Webinar",
                                                                     "dataType": "string"}}
    return {**body, **overrides}


def _attribute(api_name: str, data_type: str = "string") -> dict[str, str]:
    return {"apiName": api_name, "name": api_name.title(), "dataType": data_type}


def _type_call(api: Api, api_name: str, action: str, body: Any = None) -> dict[str, Any]:
    return api.post(f"{EXTERNAL}/type/{api_name}/{action}.json", body or {})


def test_custom_type_life_cycle(api: Api) -> None:
    created = api.post(f"{EXTERNAL}/type.json", _type_body())["result"][0]
    assert created["status"] == "draft" and created["id"] >= 100000
    assert "webinarJoin" not in {t.get("apiName") for t in api.get("/rest/v1/activities/types.json")["result"]}
    _type_call(api, "webinarJoin", "attributes/create", {"attributes": [_attribute("seat", "integer")]})
    approved = _type_call(api, "webinarJoin", "approve")["result"][0]
    assert approved["status"] == "approved" and approved["attributes"][0]["apiName"] == "seat"
    types = {t["id"]: t for t in api.get("/rest/v1/activities/types.json")["result"]}
    assert types[created["id"]]["name"] == "Join Webinar"
    updated = api.post(f"{EXTERNAL}/type/webinarJoin.json", {"name": "Joined Webinar Live"})["result"][0]
    assert updated["status"] == "approved with draft" and updated["name"] == "Joined Webinar Live"
    described = api.get(f"{EXTERNAL}/type/webinarJoin/describe.json")["result"][0]
    draft = api.get(f"{EXTERNAL}/type/webinarJoin/describe.json", draft="true")["result"][0]
    assert (described["name"], draft["name"]) == ("Join Webinar", "Joined Webinar Live")
    assert _type_call(api, "webinarJoin", "discardDraft")["result"][0]["status"] == "approved"
    assert _type_call(api, "webinarJoin", "delete")["success"]
    assert error_code(api.get(f"{EXTERNAL}/type/webinarJoin/describe.json")) == "610"


def test_attribute_update_and_delete_change_the_draft(api: Api) -> None:
    _type_call(api, "attendConference", "attributes/update",
               {"attributes": [{"apiName": "seatsBooked", "name": "Seats", "dataType": "float"}]})
    _type_call(api, "attendConference", "attributes/delete", {"attributes": [{"apiName": "badgeScanned"}]})
    draft = api.get(f"{EXTERNAL}/type/attendConference/describe.json", draft="true")["result"][0]
    attributes = {a["apiName"]: a for a in draft["attributes"]}
    assert attributes["seatsBooked"]["dataType"] == "float" and "badgeScanned" not in attributes
    assert error_code(_type_call(api, "attendConference", "attributes/delete",
                                 {"attributes": [{"apiName": "nope"}]})) == "1003"


def test_external_types_lists_every_custom_type_with_status(api: Api) -> None:
    api.post(f"{EXTERNAL}/type.json", _type_body())
    statuses = {t["apiName"]: t["status"] for t in api.get(f"{EXTERNAL}/types.json")["result"]}
    assert statuses == {"attendConference": "approved", "productUsage": "approved", "webinarJoin": "draft"}


@pytest.mark.parametrize("missing", ["apiName", "name", "triggerName", "filterName", "primaryAttribute"])
def test_create_requires_fields(api: Api, missing: str) -> None:
    body = _type_body()
    del body[missing]
    answer = api.post(f"{EXTERNAL}/type.json", body)
    assert error_code(answer) == "701" and missing in answer["errors"][0]["message"]


@pytest.mark.parametrize(("body", "code"), [
    (_type_body(api_name="has space"), "1003"),
    (_type_body(api_name="12345"), "1003"),
    (_type_body(api_name="a" * 256), "1003"),
    (_type_body(api_name="attendConference"), "709"),
    (_type_body(name="Attend Conference"), "709"),
    (_type_body(primaryAttribute={"apiName": "x", "name": "X", "dataType": "blob"}), "1003"),
])
def test_create_validation(api: Api, body: dict[str, Any], code: str) -> None:
    assert error_code(api.post(f"{EXTERNAL}/type.json", body)) == code


def test_at_most_ten_custom_types(api: Api) -> None:
    answers = [api.post(f"{EXTERNAL}/type.json", _type_body(f"type{n}", f"Type {n}")) for n in range(9)]
    assert [a["success"] for a in answers] == [True] * 8 + [False]
    assert error_code(answers[-1]) == "1027"


def test_max_custom_types_raises_the_cap(start_sandbox: Callable[..., MarketoSandbox]) -> None:
    api = Api(start_sandbox(data=replace(TEST_DATA, max_custom_types=12)))
    answers = [api.post(f"{EXTERNAL}/type.json", _type_body(f"type{n}", f"Type {n}")) for n in range(11)]
    assert [a["success"] for a in answers] == [True] * 10 + [False]
    assert "(12)" in answers[-1]["errors"][0]["message"]


def test_cli_passes_max_custom_types() -> None:
    small = ["--leads", "20", "--activities", "300"]
    assert build_sandbox(parse_args([*small, "--max-custom-types", "100"])).data.max_custom_types == 100
    assert build_sandbox(parse_args(small)).data.max_custom_types == 10


def test_at_most_twenty_attributes(api: Api) -> None:
    existing = len(api.get(f"{EXTERNAL}/type/productUsage/describe.json")["result"][0]["attributes"])
    fits = [_attribute(f"extra{n}") for n in range(20 - existing)]
    assert _type_call(api, "productUsage", "attributes/create", {"attributes": fits})["success"]
    answer = _type_call(api, "productUsage", "attributes/create", {"attributes": [_attribute("oneTooMany")]})
    assert error_code(answer) == "1028"


@pytest.mark.parametrize(("api_name", "action", "code"), [
    ("attendConference", "approve", "709"),
    ("attendConference", "discardDraft", "709"),
    ("noSuchType", "approve", "610"),
    ("noSuchType", "delete", "610"),
])
def test_life_cycle_errors(api: Api, api_name: str, action: str, code: str) -> None:
    assert error_code(_type_call(api, api_name, action)) == code


def test_bad_json_body_gets_609(api: Api) -> None:
    answer = api.raw("POST", f"{EXTERNAL}/type.json", data=b"{not json",
                     headers={"Content-Type": "application/json"}).json()
    assert error_code(answer) == "609"
