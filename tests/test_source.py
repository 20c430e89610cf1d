"""The source against the sandbox over real HTTP: every table equals the sandbox's ground truth."""

import time
from typing import Any, Optional

import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from marketo_source import MarketoClient, MarketoConfigurationError
from marketo_source.sandbox import MarketoSandbox
from marketo_source.settings import DEDICATED_STREAM_TYPE_IDS

from tests.expected import by_guid, records_of_types, snake, table_of
from tests.helpers import (
    FAST_CLIENT,
    assert_activities_match,
    assert_catalog_matches,
    assert_everything_matches,
    source_for,
    table_names,
    table_rows,
)


def test_first_run_loads_exactly_the_sandbox_records(sandbox: MarketoSandbox, make_pipeline: Any) -> None:
    pipeline = make_pipeline()
    pipeline.run(source_for(sandbox))

    assert_everything_matches(pipeline, sandbox)
    assert_catalog_matches(pipeline, sandbox.ground_truth())


def test_typed_columns_follow_the_activity_type_metadata(sandbox: MarketoSandbox, make_pipeline: Any) -> None:
    pipeline = make_pipeline()
    pipeline.run(source_for(sandbox))
    schema = pipeline.default_schema
    expected_types = {"integer": "bigint", "float": "double", "currency": "double", "boolean": "bool",
                      "date": "date", "datetime": "timestamp", "string": "text", "text": "text"}
    checked = 0
    for activity_type in sandbox.ground_truth()["activity_types"]:
        table = table_of(activity_type["name"])
        if table not in schema.tables:
            continue
        columns = schema.get_table_columns(table)
        assert columns["marketo_guid"].get("primary_key") is True
        assert columns["activity_date"]["data_type"] == "timestamp"
        assert columns["id"]["data_type"] == "bigint"
        for attribute in activity_type["attributes"]:
            column = snake(attribute["name"])
            if column in columns and attribute["dataType"] in expected_types:
                assert columns[column]["data_type"] == expected_types[attribute["dataType"]], (table, column)
                checked += 1
    assert checked > 20


def test_second_run_loads_exactly_the_new_activities(sandbox: MarketoSandbox, make_pipeline: Any) -> None:
    pipeline = make_pipeline()
    pipeline.run(source_for(sandbox))
    added = sandbox.add_activities(new=120, late=30)

    pipeline.run(source_for(sandbox))

    assert_everything_matches(pipeline, sandbox)
    added_here = [r for r in added if r["activityTypeId"] not in DEDICATED_STREAM_TYPE_IDS]
    last_run = pipeline.state["sources"]["marketo"]["resources"]["activities"]["last_run"]
    read_anew = last_run["records"] - last_run["rows_reread"]
    assert read_anew == len(added_here), "the second run read more than the new activities"


def test_tokens_renewed_before_expiry_and_replaced_after_602_mid_run(make_pipeline: Any) -> None:
    from marketo_source.sandbox import DataSpec, Fault

    data = DataSpec(seed=3, leads=40, activities=3000, days=10, start_date="2026-10-01T00:00:00Z")
    with MarketoSandbox(data=data, block_size=300, token_ttl_s=0.3) as sandbox:
        sandbox.set_faults([Fault("602", calls=(6, 15))])
        sandbox.limits.latency_s = 0.02  # the run outlives several tokens
        pipeline = make_pipeline()
        pipeline.run(source_for(sandbox, max_concurrency=1))
        stats = sandbox.stats()
        assert stats["faults_injected"].get("602") == 2 and stats["errors"]["602"] >= 2
        assert stats["calls"]["identity"] >= 4
        assert_everything_matches(pipeline, sandbox)


def test_quota_exhausted_mid_run_keeps_what_was_read_and_the_next_run_completes(
    sandbox: MarketoSandbox, make_pipeline: Any
) -> None:
    sandbox.limits.daily_quota = 10
    pipeline = make_pipeline()
    pipeline.run(source_for(sandbox))  # must not raise

    state = pipeline.state["sources"]["marketo"]["resources"]
    assert any(r.get("last_run", {}).get("stopped") == "quota" for r in state.values())
    truth = sandbox.ground_truth()
    per_type_tables = [
        t for t in table_names(pipeline)
        if t.startswith("activity_") and t != "activity_types" and not t.startswith("activity_type_")
    ]
    partial = sum(len(table_rows(pipeline, t)) for t in per_type_tables)
    shared_stream_types = [t["id"] for t in truth["activity_types"] if t["id"] not in DEDICATED_STREAM_TYPE_IDS]
    assert 0 < partial < len(records_of_types(truth["activities"], shared_stream_types))

    sandbox.limits.daily_quota = None
    sandbox.reset_quota()
    pipeline.run(source_for(sandbox))
    assert_everything_matches(pipeline, sandbox)


def test_a_new_activity_type_is_read_from_start_without_rereading_the_others(
    sandbox: MarketoSandbox, make_pipeline: Any
) -> None:
    pipeline = make_pipeline()
    pipeline.run(source_for(sandbox))
    client = MarketoClient(sandbox.base_url, sandbox.client_id, sandbox.client_secret, **FAST_CLIENT)
    new_type = {
        "apiName": "webinarWatched",
        "name": "Watch Webinar",
        "triggerName": "Watches Webinar",
        "filterName": "Watched Webinar",
        "primaryAttribute": {"apiName": "webinarName", "name": "Webinar Name", "dataType": "string"},
    }
    client.post("/v1/activities/external/type.json", new_type)
    client.post("/v1/activities/external/type/webinarWatched/attributes/create.json",
                {"attributes": [{"apiName": "minutes", "name": "Minutes Watched", "dataType": "integer"}]})
    type_id = client.post("/v1/activities/external/type/webinarWatched/approve.json", {})["result"][0]["id"]
    leads = sorted({r["leadId"] for r in sandbox.ground_truth()["activities"]})[:10]
    pushed = client.post("/v1/activities/external.json", {"input": [
        {"leadId": lead, "activityDate": "2026-10-03T10:00:00Z", "activityTypeId": type_id,
         "primaryAttributeValue": f"Webinar {lead}", "attributes": [{"apiName": "minutes", "value": lead * 3}]}
        for lead in leads
    ]})["result"]
    added = [r for r in pushed if r["status"] == "added"]
    added_leads = [lead for lead, r in zip(leads, pushed, strict=True) if r["status"] == "added"]
    assert added

    pipeline.run(source_for(sandbox))

    assert_everything_matches(pipeline, sandbox)
    loaded = table_rows(pipeline, "activity_watch_webinar")
    assert {r["marketo_guid"] for r in loaded} == {r["marketoGUID"] for r in added}
    assert sorted(r["minutes_watched"] for r in loaded) == [lead * 3 for lead in added_leads]
    last_run = pipeline.state["sources"]["marketo"]["resources"]["activities"]["last_run"]
    assert last_run["records"] - last_run["rows_reread"] == len(added), "the other types were read again"


def test_more_than_30_lead_ids_are_split_and_kept_apart_from_unfiltered_state(
    sandbox: MarketoSandbox, make_pipeline: Any
) -> None:
    lead_ids = sorted({r["leadId"] for r in sandbox.ground_truth()["activities"]})[:45]
    assert len(lead_ids) == 45
    pipeline = make_pipeline()
    pipeline.run(source_for(sandbox, lead_ids=lead_ids))

    truth = sandbox.ground_truth()
    wanted = {t["id"] for t in truth["activity_types"] if t["id"] not in DEDICATED_STREAM_TYPE_IDS}
    expected = {
        r["marketoGUID"] for r in truth["activities"] if r["leadId"] in lead_ids and r["activityTypeId"] in wanted
    }
    loaded = set()
    for table in table_names(pipeline):
        if table.startswith("activity_") and not table.startswith("activity_type"):
            loaded |= set(by_guid(table_rows(pipeline, table)))
    assert loaded == expected
    changes = {r["marketoGUID"] for r in truth["lead_changes"] if r["leadId"] in lead_ids}
    assert set(by_guid(table_rows(pipeline, "lead_changes"))) == changes

    state = pipeline.state["sources"]["marketo"]["resources"]["activities"]
    assert "all" not in state and len([k for k in state if k.startswith("leads:")]) == 2

    pipeline.run(source_for(sandbox))  # an unfiltered run starts its own position and completes the set
    assert_everything_matches(pipeline, sandbox)


def test_both_date_styles_load_as_the_same_utc_instant(sandbox: MarketoSandbox, make_pipeline: Any) -> None:
    truth = sandbox.ground_truth()
    styles = {"Z" if r["activityDate"].endswith("Z") else "+0000" for r in truth["activities"]}
    assert styles == {"Z", "+0000"}, "the sandbox should serve both date styles"
    pipeline = make_pipeline()
    pipeline.run(source_for(sandbox))
    assert_activities_match(pipeline, truth)  # activity_date compared as UTC instants, both styles


def test_configured_only_through_environment_variables(make_pipeline: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from marketo_source import marketo_source
    from marketo_source.sandbox import DataSpec

    with MarketoSandbox(data=DataSpec(seed=99, leads=30, activities=1500, days=5, start_date="2026-09-01T00:00:00Z"),
                        client_id="another-id", client_secret="another-secret") as unseen:
        monkeypatch.setenv("SOURCES__MARKETO__BASE_URL", unseen.base_url + "/rest")
        monkeypatch.setenv("SOURCES__MARKETO__CLIENT_ID", unseen.client_id)
        monkeypatch.setenv("SOURCES__MARKETO__CLIENT_SECRET", unseen.client_secret)
        monkeypatch.setenv("SOURCES__MARKETO__START_DATE", "2026-09-01T00:00:00Z")
        monkeypatch.setenv("SOURCES__MARKETO__RATE_LIMIT_CALLS", "1000")
        monkeypatch.setenv("SOURCES__MARKETO__RATE_LIMIT_PERIOD_S", "1")
        pipeline = make_pipeline()
        pipeline.run(marketo_source())
        assert_everything_matches(pipeline, unseen)


def test_saved_token_refused_falls_back_to_the_saved_datetime(make_pipeline: Any) -> None:
    from marketo_source.sandbox import DataSpec

    data = DataSpec(seed=5, leads=40, activities=2000, days=10, start_date="2026-10-01T00:00:00Z")
    # Long enough that a fresh token is used well within it on a loaded machine.
    with MarketoSandbox(data=data, paging_token_ttl_s=4.0) as sandbox:
        pipeline = make_pipeline()
        pipeline.run(source_for(sandbox))
        time.sleep(4.2)  # every saved token is now too old for the sandbox
        sandbox.add_activities(new=40, late=0)
        pipeline.run(source_for(sandbox))
        assert_everything_matches(pipeline, sandbox)


def test_lead_change_fields_limit_the_changes_read(sandbox: MarketoSandbox, make_pipeline: Any) -> None:
    truth = sandbox.ground_truth()
    changed = sorted(
        {f["name"] for r in truth["lead_changes"] for f in r.get("fields") or [] if r["activityTypeId"] == 13}
    )
    chosen = changed[:2]
    pipeline = make_pipeline()
    pipeline.run(source_for(sandbox, lead_change_fields=chosen))
    loaded = table_rows(pipeline, "lead_changes")
    assert {r["activity_type_id"] for r in loaded} == {12, 13}
    field_names = {r["field_name"] for r in table_rows(pipeline, "lead_field_changes")}
    assert field_names and field_names <= set(chosen)
    expected_13 = {
        r["marketoGUID"] for r in truth["lead_changes"]
        if r["activityTypeId"] == 13 and any(f["name"] in chosen for f in r["fields"])
    }
    assert {r["marketo_guid"] for r in loaded if r["activity_type_id"] == 13} == expected_13


def test_unknown_activity_type_ids_are_named(sandbox: MarketoSandbox, make_pipeline: Any) -> None:
    with pytest.raises(PipelineStepFailed) as raised:
        make_pipeline().run(source_for(sandbox, activity_type_ids=[1, 424242]))
    error = _cause(raised.value, MarketoConfigurationError)
    assert str(error).startswith("activity_type_ids: [424242] are not activity types of this instance; ")


def test_a_bounded_run_commits_a_long_backfill_in_steps(sandbox: MarketoSandbox, make_pipeline: Any) -> None:
    pipeline = make_pipeline()
    runs = 0
    while True:
        runs += 1
        pipeline.run(source_for(sandbox, max_pages_per_run=6, max_concurrency=2))
        resources = pipeline.state["sources"]["marketo"]["resources"]
        if not any(r.get("last_run", {}).get("stopped") for r in resources.values()):
            break
        assert runs < 30, "a bounded backfill made no progress"
    assert runs > 2, "the bound never stopped a run"
    assert_everything_matches(pipeline, sandbox)


def test_a_lasting_failure_stops_the_stream_and_keeps_what_was_read(
    sandbox: MarketoSandbox, make_pipeline: Any
) -> None:
    from marketo_source.sandbox import Fault

    pipeline = make_pipeline()
    sandbox.set_faults([Fault("611", calls=tuple(range(8, 40)), endpoint="activities")])
    pipeline.run(source_for(sandbox, max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.02))
    last_run = pipeline.state["sources"]["marketo"]["resources"]["activities"]["last_run"]
    assert last_run["stopped"] == "error" and "611" in last_run["warnings"]
    assert len(table_rows(pipeline, "lead_changes")) > 0  # the other streams loaded

    sandbox.set_faults([])
    pipeline.run(source_for(sandbox))
    assert_everything_matches(pipeline, sandbox)


def test_unknown_lead_change_fields_are_named(sandbox: MarketoSandbox, make_pipeline: Any) -> None:
    with pytest.raises(PipelineStepFailed) as raised:
        make_pipeline().run(source_for(sandbox, lead_change_fields=["email", "favouriteColour"]))
    error = _cause(raised.value, MarketoConfigurationError)
    assert str(error).startswith("lead_change_fields: ['favouriteColour'] are not lead fields of this instance; ")


def test_malformed_records_still_land(make_pipeline: Any) -> None:
    from marketo_source.sandbox import DataSpec

    with MarketoSandbox(data=DataSpec(seed=21, leads=40, activities=2000, days=10,
                                      start_date="2026-10-01T00:00:00Z", malformed=9)) as sandbox:
        pipeline = make_pipeline()
        pipeline.run(source_for(sandbox))
        assert_everything_matches(pipeline, sandbox)
    visits = table_rows(pipeline, "activity_visit_webpage")
    assert sum(1 for r in visits if r["activity_date"] is None) == 3
    assert sum(1 for r in visits if r.get("personalized_url__v_text") == "n/a") == 3


def test_a_list_id_reads_only_that_lists_leads(sandbox: MarketoSandbox, make_pipeline: Any) -> None:
    truth = sandbox.ground_truth()
    members = set(truth["lists"][5001])
    pipeline = make_pipeline()
    pipeline.run(source_for(sandbox, list_id=5001))
    wanted = {t["id"] for t in truth["activity_types"] if t["id"] not in DEDICATED_STREAM_TYPE_IDS}
    expected = {
        r["marketoGUID"] for r in truth["activities"] if r["leadId"] in members and r["activityTypeId"] in wanted
    }
    loaded = set()
    for table in table_names(pipeline):
        if table.startswith("activity_") and not table.startswith("activity_type"):
            loaded |= set(by_guid(table_rows(pipeline, table)))
    assert loaded == expected and expected
    assert "list:5001" in pipeline.state["sources"]["marketo"]["resources"]["activities"]


def test_a_list_of_10000_leads_fails_with_advice_to_split_it(sandbox: MarketoSandbox, make_pipeline: Any) -> None:
    from marketo_source import MarketoListTooLarge

    with pytest.raises(PipelineStepFailed) as raised:
        make_pipeline().run(source_for(sandbox, list_id=5004))
    assert "Split the list" in str(_cause(raised.value, MarketoListTooLarge))


def test_access_denied_is_named(sandbox: MarketoSandbox, make_pipeline: Any) -> None:
    from marketo_source import MarketoAccessDenied
    from marketo_source.sandbox import Fault

    sandbox.set_faults([Fault("603", probability=1.0)])
    with pytest.raises(PipelineStepFailed) as raised:
        make_pipeline().run(source_for(sandbox))
    assert "Users & Roles" in str(_cause(raised.value, MarketoAccessDenied))


def _cause(error: BaseException, kind: type) -> BaseException:
    cause: Optional[BaseException] = error
    while cause is not None and not isinstance(cause, kind):
        cause = cause.__cause__ or cause.__context__
    assert cause is not None, f"no {kind.__name__} behind the failure"
    return cause
