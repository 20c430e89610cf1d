"""add_activities: activities committed on time or late by a lateness per type, new leads and deleted leads."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable

import pytest
import requests

from marketo_source.sandbox import DataSpec, Lateness, MarketoSandbox

from sandbox_helpers import DELETED, LEAD_CHANGES, TEST_DATA, Api, epoch_s, guids, in_token_order

THREE_HOURS_S = 3 * 3600


def _added_with_clock(sandbox: MarketoSandbox, **counts: Any) -> tuple[list[dict[str, Any]], int, float]:
    """The added records, and the wall clock in whole seconds before and after adding them."""
    before = int(time.time())
    added = sandbox.add_activities(**counts)
    return added, before, time.time()


def test_new_activities_are_dated_at_commit(sandbox: MarketoSandbox) -> None:
    added, before, after = _added_with_clock(sandbox, new=50)
    assert all(before <= epoch_s(record) <= after for record in added)


def test_late_activities_lie_within_their_types_lateness_range(start_sandbox: Callable[..., MarketoSandbox]) -> None:
    lateness = Lateness(default=(100, 200), by_type=((6, (5000, 6000)), (1, (0, 0))))
    sandbox = start_sandbox(data=replace(TEST_DATA, lateness=lateness))
    added, before, after = _added_with_clock(sandbox, late=300)
    assert {1, 6, 12} <= {record["activityTypeId"] for record in added}
    for record in added:
        low, high = lateness.range_for(record["activityTypeId"])
        assert before - high <= epoch_s(record) <= after - low, record


def test_default_lateness_sends_email_up_to_an_hour_late_and_other_types_seconds_late(sandbox: MarketoSandbox) -> None:
    added, before, after = _added_with_clock(sandbox, late=400)
    mail = [record for record in added if record["activityTypeId"] in (6, 7)]
    others = [record for record in added if record["activityTypeId"] not in (6, 7)]
    assert all(before - 3600 <= epoch_s(record) <= after for record in mail)
    assert any(epoch_s(record) < before - 60 for record in mail)
    assert all(before - 5 <= epoch_s(record) <= after for record in others)


def test_lateness_s_dates_every_late_activity_exactly_that_long_ago(sandbox: MarketoSandbox) -> None:
    added, before, after = _added_with_clock(sandbox, new=5, late=30, lateness_s=THREE_HOURS_S)
    assert all(before <= epoch_s(record) <= after for record in added[:5])
    assert all(before - THREE_HOURS_S <= epoch_s(record) <= after - THREE_HOURS_S for record in added[5:])


def test_negative_lateness_and_bad_ranges_are_refused(api: Api) -> None:
    with pytest.raises(ValueError, match="lateness_s must not be negative"):
        api.sandbox.add_activities(late=1, lateness_s=-1)
    answer = requests.post(f"{api.base_url}/_sandbox/add-activities", json={"late": 1, "lateness_s": -1}, timeout=10)
    assert answer.status_code == 400
    for bad in ((5, 1), (-1, 5)):
        with pytest.raises(ValueError, match="a lateness range needs 0 <= min_s <= max_s"):
            Lateness(default=bad)
    assert hash(DataSpec(lateness=Lateness(by_type=((6, (0, 10)),)))) is not None


def test_added_new_and_deleted_leads_reach_lead_changes_deleted_leads_and_ground_truth(
        start_sandbox: Callable[..., MarketoSandbox], token_order: str) -> None:
    api = Api(start_sandbox(token_order=token_order))
    added = api.sandbox.add_activities(new=200, late=200)
    new_leads = [record for record in added if record["activityTypeId"] == 12]
    deletions = [record for record in added if record["activityTypeId"] == 37]
    assert new_leads and deletions
    first_new_lead = 1001 + TEST_DATA.leads
    assert sorted(record["leadId"] for record in new_leads) == list(range(first_new_lead,
                                                                          first_new_lead + len(new_leads)))
    truth = api.sandbox.ground_truth()
    assert truth["activities"][-len(added):] == added
    fields = ",".join(field["name"] for field in truth["lead_fields"])
    changes, _ = api.read_all(LEAD_CHANGES, api.paging_token(), fields=fields)
    assert changes == in_token_order(truth["lead_changes"], token_order)
    assert guids(new_leads) <= guids(changes)
    leads = api.sandbox.store.generator.leads
    for change in changes:
        if change["marketoGUID"] in guids(new_leads):
            assert {field["name"]: field["newValue"] for field in change["fields"]} == leads[change["leadId"]].initial
    deleted, _ = api.read_all(DELETED, api.paging_token())
    assert deleted == in_token_order(truth["deleted_leads"], token_order)
    assert guids(deletions) <= guids(deleted)


def test_no_activity_is_added_for_a_lead_once_it_is_deleted(sandbox: MarketoSandbox) -> None:
    gone = {record["leadId"] for record in sandbox.ground_truth()["deleted_leads"]}
    for record in sandbox.add_activities(new=300, late=300):
        assert record["leadId"] not in gone, record
        if record["activityTypeId"] == 37:
            gone.add(record["leadId"])


def test_the_last_alive_lead_is_never_deleted() -> None:
    sandbox = MarketoSandbox(data=DataSpec(seed=3, leads=2, activities=50, start_date="2026-10-01"))
    alive = sandbox.store.generator.alive
    assert len(alive) == 1  # one of the two leads is deleted in the initial log
    sizes = []
    for _ in range(2000):
        sandbox.add_activities(new=1)
        sizes.append(len(alive))
    assert min(sizes) == 1 and max(sizes) > 1
