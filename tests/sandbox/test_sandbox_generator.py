"""The deterministic data generator and the shape of its data (behaviour 6)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from marketo_source.sandbox import DataSpec, MarketoSandbox

SPEC = DataSpec(seed=11, leads=100, activities=6000, start_date="2026-10-01T00:00:00Z")


@pytest.fixture(scope="module")
def truth() -> dict[str, Any]:
    return MarketoSandbox(data=SPEC).ground_truth()


def _values(truth: dict[str, Any]) -> list[Any]:
    return [a["value"] for record in truth["activities"] for a in record["attributes"]]


def test_same_spec_gives_identical_data_and_another_seed_does_not(truth: dict[str, Any]) -> None:
    assert MarketoSandbox(data=SPEC).ground_truth()["activities"] == truth["activities"]
    other = MarketoSandbox(data=DataSpec(seed=12, leads=100, activities=6000, start_date=SPEC.start_date))
    assert other.ground_truth()["activities"] != truth["activities"]


def test_records_are_in_activity_date_order_and_span_the_days(truth: dict[str, Any]) -> None:
    dates = [a["activityDate"][:19] for a in truth["activities"]]
    keys = [(a["activityDate"][:19], a["id"]) for a in truth["activities"]]
    assert keys == sorted(keys), "date tokens' index starts in commit order only if ids grow with dates"
    assert dates[0] >= "2026-10-01T00:00:00" and dates[-1] < "2026-10-31T00:00:00"


def test_ids_exceed_int32_are_not_unique_and_guids_are_distinct_strings(truth: dict[str, Any]) -> None:
    ids = [a["id"] for a in truth["activities"]]
    assert min(ids) > 2**31
    assert len(set(ids)) < len(ids)
    guids = [a["marketoGUID"] for a in truth["activities"]]
    assert len(set(guids)) == len(guids) and all(isinstance(g, str) and not g.isdigit() for g in guids)


def test_both_date_styles_and_campaign_ids_appear(truth: dict[str, Any]) -> None:
    styles = Counter(a["activityDate"][19:] for a in truth["activities"])
    assert set(styles) == {"Z", "+0000"}
    with_campaign = [a for a in truth["activities"] if "campaignId" in a]
    assert 0 < len(with_campaign) < len(truth["activities"])


def test_every_standard_and_custom_type_is_covered(truth: dict[str, Any]) -> None:
    seen = {a["activityTypeId"] for a in truth["activities"]}
    assert {1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 22, 24, 37, 46, 104, 100000, 100001} <= seen


def test_values_are_varied_like_real_marketo(truth: dict[str, Any]) -> None:
    values = _values(truth)
    assert all(v not in (None, "") for v in values), "empty attributes must be left out"
    assert any(isinstance(v, str) and not v.isascii() for v in values)
    integers = [a["value"] for r in truth["activities"] for a in r["attributes"] if a["name"] == "Webpage ID"]
    assert {type(v) for v in integers} == {int, str}


def test_each_lead_has_one_new_lead_record_early(truth: dict[str, Any]) -> None:
    new_leads = [a for a in truth["activities"] if a["activityTypeId"] == 12]
    assert sorted(a["leadId"] for a in new_leads) == list(range(1001, 1101))
    assert all(a["activityDate"] < "2026-10-04" for a in new_leads)


def test_deleted_leads_have_no_later_activities(truth: dict[str, Any]) -> None:
    deleted_at = {a["leadId"]: a["activityDate"][:19] for a in truth["deleted_leads"]}
    assert len(deleted_at) == SPEC.deleted_lead_count()
    later = [a for a in truth["activities"]
             if a["leadId"] in deleted_at and a["activityDate"][:19] > deleted_at[a["leadId"]]]
    assert later == []


def test_change_data_value_names_the_changed_field(truth: dict[str, Any]) -> None:
    fields = {f["name"]: f for f in truth["lead_fields"]}
    changes = [a for a in truth["lead_changes"] if a["activityTypeId"] == 13]
    assert changes
    for change in changes:
        (changed,) = change["fields"]
        assert changed["name"] in fields and isinstance(changed["newValue"], str)
    by_guid = {a["marketoGUID"]: a for a in truth["activities"]}
    first = by_guid[changes[0]["marketoGUID"]]
    assert first["primaryAttributeValue"] == fields[changes[0]["fields"][0]["name"]]["displayName"]
    assert {"New Value", "Reason", "Source"} <= {a["name"] for a in first["attributes"]}
