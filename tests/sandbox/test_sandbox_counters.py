"""Counters, ground truth, add_activities and the admin endpoints (behaviours 6 and 9)."""

from __future__ import annotations

from typing import Any

import requests

from marketo_source.sandbox import DataSpec, MarketoSandbox

from sandbox_helpers import Api, StartSandbox, epoch_s, error_code

TYPES = "/rest/v1/activities/types.json"


def test_stats_count_calls_per_endpoint_and_errors(api: Api) -> None:
    api.get(TYPES)
    api.get("/rest/v1/activities/pagingtoken.json", sinceDatetime="")
    stats = api.sandbox.stats()
    assert stats["calls"] == {"identity": 1, "activity_types": 1, "paging_token": 1}
    assert stats["errors"] == {"701": 1}
    assert stats["rest_calls"] == 2 and stats["quota_used"] == 2 and stats["max_concurrent_seen"] == 1
    api.sandbox.reset_stats()
    assert api.sandbox.stats()["calls"] == {} and api.sandbox.stats()["rest_calls"] == 0


def test_ground_truth_has_every_collection(sandbox: MarketoSandbox) -> None:
    truth = sandbox.ground_truth()
    assert len(truth["activities"]) == sandbox.data.activities
    assert {r["activityTypeId"] for r in truth["lead_changes"]} == {12, 13}
    assert [r for r in truth["activities"] if r["activityTypeId"] == 37] == truth["deleted_leads"]
    assert {t["apiName"] for t in truth["custom_activity_types"]} == {"attendConference", "productUsage"}
    assert len(truth["activity_types"]) == 18 and len(truth["lead_fields"]) >= 30


def test_add_activities_appends_new_and_late_records(sandbox: MarketoSandbox) -> None:
    before = sandbox.ground_truth()["activities"]
    added = sandbox.add_activities(new=4, late=3, lateness_s=60)
    assert sandbox.ground_truth()["activities"] == before + added
    assert all(epoch_s(r) - epoch_s(added[0]) == -60 for r in added[4:])


def _without_dates(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records without what the wall clock decides: activityDate and New Lead's Created Date."""
    return [{**{key: value for key, value in r.items() if key != "activityDate"},
             "attributes": [a for a in r["attributes"] if a["name"] != "Created Date"]} for r in records]


def test_add_activities_is_deterministic_per_seed_apart_from_the_clock() -> None:
    data = DataSpec(seed=3, leads=20, activities=300, start_date="2026-10-01")
    first, second = MarketoSandbox(data=data), MarketoSandbox(data=data)
    assert _without_dates(first.add_activities(50, 50)) == _without_dates(second.add_activities(50, 50))


def test_auto_add_keeps_adding_while_serving(start_sandbox: StartSandbox) -> None:
    sandbox = start_sandbox(data=DataSpec(seed=3, leads=20, activities=300, start_date="2026-10-01",
                                          auto_add=(2, 3, 1)))
    api = Api(sandbox)
    for _ in range(4):
        api.get(TYPES)
    assert len(sandbox.ground_truth()["activities"]) == 300 + 2 * 4


def test_admin_endpoints_serve_other_processes(api: Api) -> None:
    admin = f"{api.base_url}/_sandbox"
    api.get(TYPES)
    assert requests.get(f"{admin}/stats", timeout=10).json()["calls"]["activity_types"] == 1
    added = requests.post(f"{admin}/add-activities", json={"new": 2, "late": 1, "lateness_s": 10800},
                          timeout=10).json()
    assert len(added) == 3 and epoch_s(added[2]) - epoch_s(added[0]) == -10800
    truth = requests.get(f"{admin}/ground-truth", timeout=10).json()
    assert truth["activities"][-3:] == added
    assert requests.post(f"{admin}/reset-stats", timeout=10).json() == {"ok": True}
    assert requests.get(f"{admin}/stats", timeout=10).json()["rest_calls"] == 0
    assert requests.get(f"{admin}/nothing", timeout=10).status_code == 404
    assert error_code(api.get("/rest/v1/activities.json", nextPageToken="x", activityTypeIds="1")) == "1003"
