"""Custom activity types: definitions checked before any call, every type call, and
`ensure_custom_activity_type` creating, extending and approving a type idempotently."""

from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from marketo_source.client import MarketoClient
from marketo_source.custom_activity_types import (
    AttributeDefinition,
    CustomActivityTypeDefinition,
    CustomActivityTypes,
    ensure_custom_activity_type,
)
from marketo_source.errors import MarketoConfigurationError, MarketoNotFound
from marketo_source.sandbox import DataSpec, Limits, MarketoSandbox

from tests.custom_activities_child import WEBINAR
from tests.helpers import FAST_CLIENT

TYPE_WRITE_CALLS = {
    "custom_type_create", "custom_type_update", "custom_type_approve", "custom_type_discard_draft",
    "custom_type_delete", "custom_type_attributes_create", "custom_type_attributes_update",
    "custom_type_attributes_delete",
}
WEBINAR_TOML = """
[activity_types.webinar]
api_name = "webinarAttendance"
name = "Attend Webinar"
trigger_name = "Attends Webinar"
filter_name = "Attended Webinar"
description = "Attended a webinar"
primary_attribute = { api_name = "webinarName", name = "Webinar Name", data_type = "string" }

[[activity_types.webinar.attributes]]
api_name = "minutesWatched"
name = "Minutes Watched"
data_type = "integer"

[[activity_types.webinar.attributes]]
api_name = "watchedAt"
name = "Watched At"
data_type = "datetime"

[[activity_types.webinar.attributes]]
api_name = "askedQuestion"
name = "Asked Question"
data_type = "boolean"

[[activity_types.webinar.attributes]]
api_name = "rating"
name = "Rating"
data_type = "float"
"""


@pytest.fixture
def sandbox() -> Iterator[MarketoSandbox]:
    data = DataSpec(seed=3, leads=20, activities=200)
    with MarketoSandbox(data=data, limits=Limits(calls_per_window=None)) as instance:
        yield instance


@pytest.fixture
def client(sandbox: MarketoSandbox) -> MarketoClient:
    return MarketoClient(sandbox.base_url, sandbox.client_id, sandbox.client_secret, **FAST_CLIENT)


def _as_dict(definition: CustomActivityTypeDefinition) -> Dict[str, Any]:
    return {
        "api_name": definition.api_name, "name": definition.name, "trigger_name": definition.trigger_name,
        "filter_name": definition.filter_name, "description": definition.description,
        "primary_attribute": vars(definition.primary_attribute).copy(),
        "attributes": [vars(a).copy() for a in definition.attributes],
    }


def _with(**changes: Any) -> Dict[str, Any]:
    return {**_as_dict(WEBINAR), **changes}


def _attribute(n: int) -> Dict[str, Any]:
    return {"api_name": f"extra{n}", "name": f"Extra {n}", "data_type": "string"}


@pytest.mark.parametrize(("data", "named"), [
    (_with(api_name="webinar attendance"), "api_name 'webinar attendance'"),
    (_with(api_name="2024"), "api_name '2024'"),
    (_with(api_name="a" * 256), "api_name"),
    ({k: v for k, v in _with().items() if k != "trigger_name"}, "trigger_name is required"),
    (_with(filter_name="  "), "filter_name is required"),
    (_with(name=""), "name is required"),
    (_with(primary_attribute={"api_name": "webinarName", "name": "Webinar Name", "data_type": "varchar"}),
     "data_type 'varchar'"),
    (_with(attributes=[{"api_name": "seats", "name": "", "data_type": "integer"}]), "attribute 'seats': name"),
    (_with(attributes=[{"api_name": "seats", "data_type": "integer"}]), "name is required"),
    (_with(attributes=[_attribute(n) for n in range(21)]), "at most 20"),
    (_with(attributes=[_attribute(1), _attribute(1)]), "['extra1'] appears more than once"),
    (_with(attributes=[{"api_name": "webinarName", "name": "Again", "data_type": "string"}]),
     "['webinarName'] appears more than once"),
    (_with(attributes=[{**_attribute(1), "is_primary": True}]), "set is_primary"),
    (_with(triggerName="Attends"), "unknown keys ['triggerName']"),
    (_with(attributes="minutesWatched"), "attributes must be a list"),
])
def test_definitions_marketo_would_refuse_fail_naming_the_field(data: Dict[str, Any], named: str) -> None:
    with pytest.raises(MarketoConfigurationError) as raised:
        CustomActivityTypeDefinition.from_dict(data)
    assert named in str(raised.value)


def test_a_definition_reads_the_same_from_toml_and_from_code(tmp_path: Path) -> None:
    path = tmp_path / "types.toml"
    path.write_text(WEBINAR_TOML)
    assert CustomActivityTypeDefinition.from_toml(path, table="activity_types.webinar") == WEBINAR
    with pytest.raises(MarketoConfigurationError, match=r"no table \[activity_types.seminar\]"):
        CustomActivityTypeDefinition.from_toml(path, table="activity_types.seminar")


def test_ensure_creates_then_changes_nothing(sandbox: MarketoSandbox, client: MarketoClient) -> None:
    changes = ensure_custom_activity_type(client, WEBINAR)
    assert changes == [
        "created type webinarAttendance",
        "created attributes minutesWatched, watchedAt, askedQuestion, rating",
        "approved",
    ]
    described = CustomActivityTypes(client).describe("webinarAttendance")
    assert described["status"] == "approved" and WEBINAR.differing_fields(described) == []
    assert [a["apiName"] for a in described["attributes"]] == [a.api_name for a in WEBINAR.attributes]

    sandbox.reset_stats()
    assert ensure_custom_activity_type(client, WEBINAR) == []
    assert not set(sandbox.stats()["calls"]) & TYPE_WRITE_CALLS, sandbox.stats()["calls"]


def test_ensure_extends_an_approved_type_and_approves_it(sandbox: MarketoSandbox, client: MarketoClient) -> None:
    ensure_custom_activity_type(client, WEBINAR)
    extended = replace(
        WEBINAR,
        description="Attended a webinar, live or recorded",
        attributes=(replace(WEBINAR.attributes[0], name="Minutes Watched Live"), *WEBINAR.attributes[1:],
                    AttributeDefinition("recording", "Recording", "boolean", description="Watched the recording")),
    )
    assert ensure_custom_activity_type(client, extended) == [
        "updated description", "created attributes recording", "updated attributes minutesWatched", "approved",
    ]
    described = CustomActivityTypes(client).describe("webinarAttendance")
    assert described["status"] == "approved" and extended.differing_fields(described) == []
    attributes = {a["apiName"]: a for a in described["attributes"]}
    assert attributes["minutesWatched"]["name"] == "Minutes Watched Live"
    assert attributes["recording"]["description"] == "Watched the recording"
    sandbox.reset_stats()
    assert ensure_custom_activity_type(client, extended) == []
    assert not set(sandbox.stats()["calls"]) & TYPE_WRITE_CALLS


def test_ensure_approves_a_pending_draft_that_matches(client: MarketoClient) -> None:
    types = CustomActivityTypes(client)
    ensure_custom_activity_type(client, WEBINAR)
    types.update_attributes("webinarAttendance", [replace(WEBINAR.attributes[3], data_type="integer")])
    assert {t["apiName"]: t["status"] for t in types.list()}["webinarAttendance"] == "approved with draft"
    in_line_with_draft = replace(
        WEBINAR, attributes=(*WEBINAR.attributes[:3], replace(WEBINAR.attributes[3], data_type="integer")))
    assert ensure_custom_activity_type(client, in_line_with_draft) == ["approved"]
    assert types.describe("webinarAttendance")["attributes"][3]["dataType"] == "integer"


def test_no_room_for_another_type_fails_before_any_write(sandbox: MarketoSandbox, client: MarketoClient) -> None:
    seeded = len(CustomActivityTypes(client).list())
    for n in range(10 - seeded):
        ensure_custom_activity_type(client, replace(WEBINAR, api_name=f"filler{n}", name=f"Filler {n}"))
    sandbox.reset_stats()
    with pytest.raises(MarketoConfigurationError, match=r"Marketo allows 10 \(1027\)"):
        ensure_custom_activity_type(client, WEBINAR)
    assert not set(sandbox.stats()["calls"]) & TYPE_WRITE_CALLS


def test_no_room_for_the_attributes_fails_naming_those_the_definition_lacks(
    sandbox: MarketoSandbox, client: MarketoClient
) -> None:
    seeded = CustomActivityTypes(client).describe("attendConference")
    more = tuple(AttributeDefinition(f"extra{n}", f"Extra {n}", "string") for n in range(15))
    definition = CustomActivityTypeDefinition(
        "attendConference", seeded["name"], seeded["triggerName"], seeded["filterName"],
        AttributeDefinition("conferenceName", "Conference Name", "string", description="Name of the conference"),
        attributes=more, description=seeded["description"],
    )
    sandbox.reset_stats()
    with pytest.raises(MarketoConfigurationError, match=r"'badgeScanned'.*'sessionTitle'"):
        ensure_custom_activity_type(client, definition)
    assert not set(sandbox.stats()["calls"]) & TYPE_WRITE_CALLS


def test_a_display_name_another_type_uses_is_refused(client: MarketoClient) -> None:
    with pytest.raises(MarketoConfigurationError, match="already used by type 'attendConference'"):
        ensure_custom_activity_type(client, replace(WEBINAR, name="Attend Conference"))


def test_every_type_call(client: MarketoClient) -> None:
    types = CustomActivityTypes(client)
    created = types.create(WEBINAR)
    assert created["status"] == "draft" and created["primaryAttribute"]["apiName"] == "webinarName"
    types.create_attributes("webinarAttendance", WEBINAR.attributes[:2])
    assert types.approve("webinarAttendance")["status"] == "approved"
    types.update(replace(WEBINAR, name="Attend Webinar Live"))
    types.delete_attributes("webinarAttendance", ["watchedAt"])
    draft = types.describe("webinarAttendance", draft=True)
    assert draft["name"] == "Attend Webinar Live" and [a["apiName"] for a in draft["attributes"]] == ["minutesWatched"]
    assert types.describe("webinarAttendance")["name"] == "Attend Webinar"
    assert types.discard_draft("webinarAttendance")["status"] == "approved"
    assert "webinarAttendance" in {t["apiName"] for t in types.list()}
    types.delete("webinarAttendance")
    assert "webinarAttendance" not in {t["apiName"] for t in types.list()}
    with pytest.raises(MarketoNotFound):
        types.describe("webinarAttendance")
    with pytest.raises(MarketoConfigurationError, match=r"api_name '\.\./leads'"):
        types.approve("../leads")


def test_descriptions_left_out_of_a_definition_are_not_changed(sandbox: MarketoSandbox, client: MarketoClient) -> None:
    seeded = CustomActivityTypes(client).describe("attendConference")
    definition = CustomActivityTypeDefinition(
        "attendConference", seeded["name"], seeded["triggerName"], seeded["filterName"],
        AttributeDefinition("conferenceName", "Conference Name", "string"),
        attributes=tuple(AttributeDefinition(a["apiName"], a["name"], a["dataType"]) for a in seeded["attributes"]),
    )
    sandbox.reset_stats()
    assert ensure_custom_activity_type(client, definition) == []
    assert not set(sandbox.stats()["calls"]) & TYPE_WRITE_CALLS
    assert CustomActivityTypes(client).describe("attendConference")["description"] == seeded["description"] != ""
