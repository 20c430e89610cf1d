"""The deterministic data generator and the shape of its data (behaviour 6)."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from marketo_source.sandbox import DataSpec, MarketoSandbox

from sandbox_helpers import StartSandbox

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


EMAIL_STEPS = (6, 7, 10, 11)  # Send Email, Email Delivered, Open Email, Click Email


def _utc(activity_date: str) -> datetime:
    return datetime.fromisoformat(activity_date).astimezone(timezone.utc)


def _week(activity_date: str) -> date:
    """The Monday (UTC) starting the week of an activityDate."""
    day = _utc(activity_date).date()
    return day - timedelta(days=day.weekday())


def _funnel_breaks(activities: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Each point where an email step outnumbers the step before it, for one email, lead and week.

    Walking each (lead, Mailing ID, week)'s steps in date order, a later step first among equal dates,
    every Email Delivered needs an earlier Send Email not yet delivered, and so on down the funnel.
    """
    by_email: dict[tuple[Any, ...], list[tuple[datetime, int]]] = defaultdict(list)
    for record in activities:
        if record["activityTypeId"] in EMAIL_STEPS:
            key = (record["leadId"], record["primaryAttributeValueId"], _week(record["activityDate"]))
            by_email[key].append((_utc(record["activityDate"]), -EMAIL_STEPS.index(record["activityTypeId"])))
    breaks = []
    for key, steps in by_email.items():
        counts = [0] * len(EMAIL_STEPS)
        for when, negative_rank in sorted(steps):
            counts[-negative_rank] += 1
            if any(later > earlier for earlier, later in itertools.pairwise(counts)):
                breaks.append((key, when, tuple(counts)))
    return breaks


@pytest.mark.parametrize("seed", [1, 2, 3, 11, 29])
def test_email_steps_follow_their_send_for_the_same_email_and_lead_in_its_week(seed: int) -> None:
    truth = MarketoSandbox(data=replace(SPEC, seed=seed)).ground_truth()
    assert _funnel_breaks(truth["activities"]) == []
    weeks: Counter[tuple[date, int]] = Counter(
        (_week(r["activityDate"]), r["activityTypeId"]) for r in truth["activities"]
        if r["activityTypeId"] in EMAIL_STEPS)
    for week in {week for week, _ in weeks}:
        counts = [weeks[(week, step)] for step in EMAIL_STEPS]
        assert counts == sorted(counts, reverse=True), (week, counts)
    assert all(weeks[(week, 11)] for week, _ in weeks if weeks[(week, 6)] > 50), "every full week has clicks"


def test_added_email_steps_keep_the_funnel(start_sandbox: StartSandbox) -> None:
    sandbox = start_sandbox(data=replace(SPEC, start_date=None, days=3))
    for _ in range(5):
        sandbox.add_activities(new=200, late=200)
    activities = sandbox.ground_truth()["activities"]
    added = Counter(r["activityTypeId"] for r in activities[SPEC.activities:])  # the log is in commit order
    assert all(added[step] for step in EMAIL_STEPS), added
    assert _funnel_breaks(activities) == []
