"""Pushing custom activities: rows to items, the dlt destination, and exactly once through
uncertain calls and a SIGKILL in the middle of a push, checked against the sandbox's ground truth."""

import os
import re
import runpy
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Tuple

import dlt
import duckdb
import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from marketo_source.client import MarketoClient
from marketo_source.custom_activities import (
    LOCAL_REJECTION_CODE,
    ActivityLedger,
    CustomActivityPusher,
    marketo_custom_activities,
)
from marketo_source.custom_activities.destination import _PUSHERS
from marketo_source.custom_activity_types import ensure_custom_activity_type
from marketo_source.errors import MarketoConfigurationError
from marketo_source.sandbox import DataSpec, Fault, Limits, MarketoSandbox
from marketo_source.sandbox.catalog import NEW_LEAD

from tests.custom_activities_child import TABLE_NAME, WEBINAR, webinar_rows
from tests.helpers import FAST_CLIENT, SMALL_DATA, source_for, table_rows

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
EXAMPLE = REPO / "pipelines" / "custom_activities_pipeline.py"
CHILD_TIMEOUT_S = 180
"""Generous: other jobs may share this machine's two cores."""
RowKey = Tuple[int, str, str]


@pytest.fixture
def sandbox() -> Iterator[MarketoSandbox]:
    with MarketoSandbox(data=DataSpec(**SMALL_DATA), limits=Limits(calls_per_window=None), block_size=500) as instance:
        yield instance


@pytest.fixture
def client(sandbox: MarketoSandbox) -> MarketoClient:
    return MarketoClient(sandbox.base_url, sandbox.client_id, sandbox.client_secret, **FAST_CLIENT)


@pytest.fixture
def type_id(client: MarketoClient) -> int:
    ensure_custom_activity_type(client, WEBINAR)
    return next(t["id"] for t in client.get("/v1/activities/external/types.json")["result"]
                if t["apiName"] == WEBINAR.api_name)


def _pusher(client: MarketoClient, tmp_path: Path, reconcile_after_s: float = 0.0) -> CustomActivityPusher:
    return CustomActivityPusher(client, tmp_path / "ledger.duckdb", WEBINAR.api_name, reconcile_after_s)


def _destination(sandbox: MarketoSandbox, ledger_path: Path, **settings: Any) -> Any:
    return marketo_custom_activities(
        base_url=sandbox.base_url, client_id=sandbox.client_id, client_secret=sandbox.client_secret,
        activity_type_api_name=WEBINAR.api_name, ledger_path=str(ledger_path),
        rate_limit_calls=1000, rate_limit_period_s=1.0, **settings,
    )


def _key(lead_id: Any, moment: Any, primary: Any) -> RowKey:
    text = moment if isinstance(moment, str) else moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return int(lead_id), text.replace("+0000", "Z"), str(primary)


def _row_key(row: Mapping[str, Any]) -> RowKey:
    return _key(row["lead_id"], row["activity_date"], row["primary_attribute_value"])


def _live_leads(sandbox: MarketoSandbox) -> set:
    deleted = {record["leadId"] for record in sandbox.ground_truth()["deleted_leads"]}
    return set(range(1001, 1001 + SMALL_DATA["leads"])) - deleted


def _records_of(sandbox: MarketoSandbox, type_id: int) -> List[Dict[str, Any]]:
    return [r for r in sandbox.ground_truth()["activities"] if r["activityTypeId"] == type_id]


def assert_each_row_once(sandbox: MarketoSandbox, type_id: int, ledger_path: Path, rows: List[Dict[str, Any]]) -> int:
    """Marketo holds exactly the rows of live leads, each once, and the ledger says so; returns how many."""
    live = _live_leads(sandbox)
    records = _records_of(sandbox, type_id)
    held = Counter(_key(r["leadId"], r["activityDate"], r["primaryAttributeValue"]) for r in records)
    assert held == Counter(_row_key(row) for row in rows if row["lead_id"] in live)
    with ActivityLedger(ledger_path) as ledger:
        results = ledger.results()
    assert Counter(r["status"] for r in results) == {"added": len(records), "skipped": len(rows) - len(records)}
    assert {r["marketo_guid"] for r in results if r["status"] == "added"} == {r["marketoGUID"] for r in records}
    return len(records)


def test_ten_thousand_rows_through_the_destination_are_added_once_and_read_back(
    sandbox: MarketoSandbox, type_id: int, tmp_path: Path, make_pipeline: Any, figures: List[str]
) -> None:
    rows = webinar_rows(10_000)
    ledger_path = tmp_path / "ledger.duckdb"
    push = dlt.pipeline("webinar_push", pipelines_dir=str(tmp_path / "pipelines"),
                        destination=_destination(sandbox, ledger_path))
    sandbox.reset_stats()
    started = time.monotonic()
    push.run(rows, table_name=TABLE_NAME)
    elapsed_s = time.monotonic() - started
    calls = sandbox.stats()["calls"]

    added = assert_each_row_once(sandbox, type_id, ledger_path, rows)
    assert calls["add_custom_activities"] == 34  # ceil(10,000 / 300)
    live = _live_leads(sandbox)
    dead = [row for row in rows if row["lead_id"] not in live]
    assert dead and any(row["lead_id"] < 900_000 for row in dead)  # unknown and deleted leads both
    with ActivityLedger(ledger_path) as ledger:
        skipped = ledger.results(status="skipped")
        summary = ledger.summary()
    assert (summary.added, summary.skipped, dict(summary.skipped_by_code)) == (added, len(dead), {"1004": len(dead)})
    assert sorted((r["lead_id"], r["activity_date"]) for r in skipped) == sorted(
        (row["lead_id"], row["activity_date"].replace(tzinfo=None)) for row in dead)
    assert all('"code": "1004"' in r["errors"] and r["payload"] for r in skipped)

    _assert_read_back_through_the_source(sandbox, type_id, make_pipeline, rows, ledger_path)

    sandbox.reset_stats()
    push.run(rows, table_name=TABLE_NAME)
    assert "add_custom_activities" not in sandbox.stats()["calls"]
    assert len(_records_of(sandbox, type_id)) == added
    figures.append(
        f"custom activities: 10,000 rows through the dlt destination in {elapsed_s:.1f} s: {added:,} added, "
        f"{len(dead):,} skipped (1004), {calls['add_custom_activities']} Add Custom Activities calls, "
        f"{sum(calls.values()) - calls.get('identity', 0)} REST calls; a second run: 0 calls to add"
    )


def test_the_destinations_pusher_registry_keys_hold_no_secret(tmp_path: Path) -> None:
    """The destination keeps one pusher per configuration for the process; the registry's keys name
    the configuration without the client id or secret."""
    client_id, client_secret = "registry-client-id-5c2e", "registry-sEcReT-9b41"
    with MarketoSandbox(data=DataSpec(**SMALL_DATA), limits=Limits(calls_per_window=None),
                        client_id=client_id, client_secret=client_secret) as sandbox:
        ensure_custom_activity_type(MarketoClient(sandbox.base_url, client_id, client_secret, **FAST_CLIENT), WEBINAR)
        ledger_path = tmp_path / "ledger.duckdb"
        push = dlt.pipeline("registry_push", pipelines_dir=str(tmp_path / "pipelines"),
                            destination=_destination(sandbox, ledger_path))
        push.run(webinar_rows(600), table_name=TABLE_NAME)
        base_url = sandbox.base_url

    with ActivityLedger(ledger_path) as ledger:
        assert ledger.summary().added > 0
    assert len([key for key in _PUSHERS if key.base_url == base_url]) == 1  # one pusher for both batches
    for key in list(_PUSHERS):
        assert client_secret not in repr(key) and client_id not in repr(key)


def _assert_read_back_through_the_source(
    sandbox: MarketoSandbox, type_id: int, make_pipeline: Any, rows: List[Dict[str, Any]], ledger_path: Path
) -> None:
    """Every added row, read back by the source's activities resource, has the values pushed."""
    pipeline = make_pipeline("read_back")
    pipeline.run(source_for(sandbox, activity_type_ids=[type_id]).with_resources("activities"))
    loaded = {row["marketo_guid"]: row for row in table_rows(pipeline, "activity_attend_webinar")}
    pushed = {_row_key(row): row for row in rows}
    with ActivityLedger(ledger_path) as ledger:
        added = ledger.results(status="added")
    assert len(loaded) == len(added)
    for result in added:
        got = loaded[result["marketo_guid"]]
        sent = pushed[_key(got["lead_id"], got["activity_date"], got["primary_attribute_value"])]
        assert (got["lead_id"], got["activity_date"], got["primary_attribute_value"], got["minutes_watched"],
                got["watched_at"], got["asked_question"], got["rating"]) == (
            sent["lead_id"], sent["activity_date"], sent["primary_attribute_value"], sent["minutesWatched"],
            sent["watchedAt"], sent["askedQuestion"], sent["rating"])


@pytest.mark.parametrize(("kind", "applied"), [
    ("615", False),     # refused before processing: the client sends it again by itself
    ("http502", False),  # uncertain, and the sandbox answers before applying: read back, nothing found, resent
    ("reset", False),
    ("604", False),
    ("truncated", True),  # applied, the answer lost: read back, the added found, only the skipped resent
    ("slow", True),      # applied after the client's write timeout: read back once Marketo is done
])
def test_an_uncertain_call_is_read_back_and_no_row_is_added_twice(
    sandbox: MarketoSandbox, type_id: int, tmp_path: Path, kind: str, applied: bool
) -> None:
    rows = webinar_rows(900)
    slow = kind == "slow"
    client = MarketoClient(sandbox.base_url, sandbox.client_id, sandbox.client_secret,
                           **{**FAST_CLIENT, "backoff_base_s": 0.05, "write_timeout_s": 0.5 if slow else 30})
    sandbox.set_faults([Fault(kind, probability=1.0, times=1, endpoint="add_custom_activities", slow_s=1.0)])
    sandbox.reset_stats()
    summary = _pusher(client, tmp_path, reconcile_after_s=4.0 if slow else 0.0).push(rows)

    assert_each_row_once(sandbox, type_id, tmp_path / "ledger.duckdb", rows)
    live = _live_leads(sandbox)
    live_in_first_call = sum(row["lead_id"] in live for row in rows[:300])
    assert summary.reconciled == (live_in_first_call if applied else 0)
    assert summary.added + summary.skipped == 900 and summary.already_done == 0
    calls = sandbox.stats()["calls"]
    # Applied or not, one more call: items Marketo skipped leave no trace to read back, so they go again.
    assert calls["add_custom_activities"] == 4
    assert ("activities" in calls) == (kind != "615")


def test_reading_back_never_claims_an_activity_another_row_added(
    sandbox: MarketoSandbox, type_id: int, client: MarketoClient, tmp_path: Path
) -> None:
    live = _live_leads(sandbox)
    row = {**next(row for row in webinar_rows(10) if row["lead_id"] in live), "row_key": "first"}
    pusher = _pusher(client, tmp_path)
    assert pusher.push([row]).added == 1
    sandbox.set_faults([Fault("http502", probability=1.0, times=1, endpoint="add_custom_activities")])
    summary = pusher.push([{**row, "row_key": "second"}])
    assert (summary.added, summary.reconciled) == (1, 0)
    guids = {r["marketoGUID"] for r in _records_of(sandbox, type_id)}
    with ActivityLedger(tmp_path / "ledger.duckdb") as ledger:
        assert {r["row_key"]: r["marketo_guid"] in guids for r in ledger.results()} == {"first": True, "second": True}
    assert len(guids) == 2


def test_rows_map_to_items_and_rows_that_cannot_are_kept_with_the_reason(
    sandbox: MarketoSandbox, type_id: int, client: MarketoClient, tmp_path: Path
) -> None:
    base = {"lead_id": 1003, "activity_date": "2026-10-03T08:00:00+0200", "primary_attribute_value": "Data 101"}
    rows = [
        {**base, "minutesWatched": 30, "rating": 4.5},
        {**base, "minutesWatched": 30, "rating": 4.5},  # identical: counted once
        {"leadId": 1004, "activity_date": "2026-10-04", "primary_attribute_value": 7, "activity_type_id": type_id},
        {**base, "row_key": "a", "activity_type_api_name": WEBINAR.api_name},
        {**base, "row_key": "b"},  # same content, own key: a second activity
        {**base, "lead_id": None},
        {**base, "activity_date": "yesterday"},
        {**base, "primary_attribute_value": ""},
        {**base, "minutesWatched": b"\x00"},
        {**base, "activity_type_api_name": "noSuchType"},
    ]
    summary = _pusher(client, tmp_path).push(rows)

    assert (summary.added, summary.skipped, summary.already_done) == (4, 5, 1)
    assert summary.skipped_by_code == {LOCAL_REJECTION_CODE: 5}
    with ActivityLedger(tmp_path / "ledger.duckdb") as ledger:
        reasons = sorted(r["errors"] for r in ledger.results(status="skipped"))
    for column in ("lead_id is missing", "activity_date is 'yesterday'", "primary_attribute_value is empty",
                   "minutesWatched holds bytes", "activity_type_api_name 'noSuchType'"):
        assert sum(column in reason for reason in reasons) == 1, (column, reasons)
    records = sorted((r["leadId"], r["activityDate"], r["primaryAttributeValue"], r["attributes"])
                     for r in _records_of(sandbox, type_id))
    minutes = {"name": "Minutes Watched", "apiName": "minutesWatched", "value": 30}
    rating = {"name": "Rating", "apiName": "rating", "value": 4.5}
    assert records == [
        (1003, "2026-10-03T06:00:00Z", "Data 101", []),
        (1003, "2026-10-03T06:00:00Z", "Data 101", []),
        (1003, "2026-10-03T06:00:00Z", "Data 101", [minutes, rating]),
        (1004, "2026-10-04T00:00:00Z", "7", []),
    ]


def test_columns_that_are_not_attributes_of_the_type_fail_before_any_row_is_sent(
    sandbox: MarketoSandbox, type_id: int, client: MarketoClient, tmp_path: Path
) -> None:
    row = {**webinar_rows(2)[1], "minutes_watched": 3}
    sandbox.reset_stats()
    with pytest.raises(MarketoConfigurationError, match=r"Columns \['minutes_watched'\] are not attributes"):
        _pusher(client, tmp_path).push([row])
    with pytest.raises(MarketoConfigurationError, match="set activity_type_api_name"):
        CustomActivityPusher(client, tmp_path / "ledger.duckdb").push([webinar_rows(2)[1]])
    pipeline = dlt.pipeline("bad_columns", pipelines_dir=str(tmp_path / "pipelines"),
                            destination=_destination(sandbox, tmp_path / "ledger.duckdb"))
    with pytest.raises(PipelineStepFailed, match=r"DestinationTerminalException.*minutes_watched"):
        pipeline.run([row], table_name=TABLE_NAME)
    assert "add_custom_activities" not in sandbox.stats()["calls"]


def _child_environment(sandbox: MarketoSandbox, workdir: Path, reconcile_after_s: float) -> Dict[str, str]:
    settings = dict(
        BASE_URL=sandbox.base_url, CLIENT_ID=sandbox.client_id, CLIENT_SECRET=sandbox.client_secret,
        ACTIVITY_TYPE_API_NAME=WEBINAR.api_name, LEDGER_PATH=str(workdir / "ledger.duckdb"),
        RECONCILE_AFTER_S=str(reconcile_after_s), RATE_LIMIT_CALLS="1000", RATE_LIMIT_PERIOD_S="1",
    )
    return {
        **os.environ,
        **{f"DESTINATION__MARKETO_CUSTOM_ACTIVITIES__{name}": value for name, value in settings.items()},
        "PYTHONPATH": str(REPO),
        "DLT_DATA_DIR": str(workdir / "dlt"),
        "RUNTIME__LOG_LEVEL": "WARNING",
    }


def _start_child(workdir: Path, environment: Dict[str, str], rows: int, run: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.custom_activities_child", str(workdir / "pipelines"), str(rows)],
        cwd=workdir, env=environment, stdout=subprocess.PIPE, stderr=open(workdir / f"{run}.stderr", "w"), text=True,
    )


def _wait_for(condition: Any, child: subprocess.Popen) -> None:
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while not condition():
        assert child.poll() is None, "the child ended before the kill"
        assert time.monotonic() < deadline, "the child never reached the kill point"
        time.sleep(0.005)


def test_a_push_killed_mid_call_and_run_again_adds_each_row_once(
    sandbox: MarketoSandbox, type_id: int, tmp_path: Path, figures: List[str]
) -> None:
    """The child is killed while Marketo holds its 4th call (a slow answer); Marketo applies that
    call after the child died. The second run must find those rows by reading back, not send them
    again, and send the batches never sent."""
    rows, batches, killed_at = 3000, 10, 4
    environment = _child_environment(sandbox, tmp_path, reconcile_after_s=5.0)
    # REST call 1 lists the custom types; calls 2.. add batches, so call killed_at + 1 is batch killed_at.
    sandbox.set_faults([Fault("slow", calls=(killed_at + 1,), endpoint="add_custom_activities", times=1, slow_s=2.0)])
    sandbox.reset_stats()
    first = _start_child(tmp_path, environment, rows, "first")
    _wait_for(lambda: sandbox.stats()["faults_injected"].get("slow"), first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=CHILD_TIMEOUT_S)
    with ActivityLedger(tmp_path / "ledger.duckdb") as ledger:
        at_kill = Counter(r["status"] for r in ledger.results())
    assert at_kill["sending"] == 300 and at_kill["added"] + at_kill["skipped"] == 300 * (killed_at - 1)

    sandbox.reset_stats()
    second = _start_child(tmp_path, environment, rows, "second")
    output, _ = second.communicate(timeout=CHILD_TIMEOUT_S)
    assert second.returncode == 0 and "DONE" in output, (tmp_path / "second.stderr").read_text()[-3000:]

    added = assert_each_row_once(sandbox, type_id, tmp_path / "ledger.duckdb", webinar_rows(rows))
    # The batches never sent, and the items of the killed one that Marketo skipped (they leave no trace).
    assert sandbox.stats()["calls"]["add_custom_activities"] == batches - killed_at + 1
    figures.append(
        f"custom activities crash: killed during call {killed_at} of {batches} (300 rows 'sending', applied by "
        f"Marketo after the kill); the re-run read them back and sent {batches - killed_at} more calls plus one "
        f"for the killed call's skipped items: {added:,} of {rows:,} rows added, each once"
    )


def _write_side_commands() -> List[str]:
    """The shell commands of README's write-side section, in order."""
    section = README.read_text().split("\n## Write side: custom activities")[1].split("\n## ")[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, List[str]]:
    """Runs the write side's README commands as written, in a fresh folder (the repository's
    `.venv/bin/python` and `pipelines/` made absolute); returns the folder and each command's output."""
    workdir = tmp_path_factory.mktemp("readme")
    outputs = []
    for command in _write_side_commands():
        command = command.replace(".venv/bin/python", sys.executable).replace("pipelines/", f"{REPO}/pipelines/")
        result = subprocess.run(["bash", "-c", command], cwd=workdir, capture_output=True, text=True,
                                timeout=CHILD_TIMEOUT_S, env={**os.environ, "DLT_DATA_DIR": str(workdir / "dlt")})
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        outputs.append(result.stdout)
    return workdir, outputs


def test_the_example_skips_exactly_the_rows_the_readme_says_and_prints_each_reason(
    readme_run: Tuple[Path, List[str]],
) -> None:
    workdir, (printed, *_) = readme_run
    assert "created type webinarAttendance" in printed
    with ActivityLedger(workdir / "marketo_custom_activities_sandbox.duckdb") as ledger:
        summary, reasons = ledger.summary(), ledger.skip_reasons()
        skipped = {(row["lead_id"], row["activity_date"]) for row in ledger.results(status="skipped")}
    with duckdb.connect(str(workdir / "webinar_events_sandbox.duckdb"), read_only=True) as demo:
        rows = demo.sql("SELECT lead_id, timezone('UTC', activity_date) FROM webinar_events").fetchall()
    # The rows Marketo must skip are those naming no lead of the sandbox the example started.
    with MarketoSandbox(data=runpy.run_path(str(EXAMPLE))["SANDBOX_DATA"]) as same_instance:
        truth = same_instance.ground_truth()
    created = {a["leadId"] for a in truth["activities"] if a["activityTypeId"] == NEW_LEAD}
    leads = created - {deletion["leadId"] for deletion in truth["deleted_leads"]}
    assert skipped == {(lead, date) for lead, date in rows if lead not in leads}
    # As the README says, every row skipped names a lead the sandbox never had, none a deleted one.
    assert not {lead for lead, _ in rows if lead in created} - leads
    assert summary.added == len(rows) - len(skipped) and summary.skipped == len(skipped)

    lines = printed.splitlines()
    assert f"Pushed {len(rows):,} rows of webinar_events: {summary.added:,} added, {summary.skipped:,} skipped" in lines
    assert [line for line in lines if line.startswith("  skipped with")] == [
        f"  skipped with {code} ({message}): {count:,}" for (code, message), count in sorted(reasons.items())
    ]
    readme_output = README.read_text().split("It prints:\n\n```\n")[1].split("```")[0].splitlines()
    assert readme_output == [line for line in lines if line.startswith(("Pushed", "  skipped with"))]


def test_the_readmes_ledger_query_reads_the_ledger_the_example_wrote(readme_run: Tuple[Path, List[str]]) -> None:
    workdir, (_, *query_outputs) = readme_run
    assert len(query_outputs) == 1
    with ActivityLedger(workdir / "marketo_custom_activities_sandbox.duckdb") as ledger:
        reasons = ledger.skip_reasons()
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in query_outputs[0].splitlines()]
    assert [(code, message, count) for (code, message), count in reasons.items()] == [
        (row[0], row[1], int(row[2])) for row in cells if row and row[0].isdigit()
    ]
    assert sorted(path.name for path in workdir.glob("*.duckdb")) == [
        "marketo_custom_activities_sandbox.duckdb", "webinar_events_sandbox.duckdb"
    ]
    sql = README.read_text().split("\n### The ledger, and rows Marketo skipped")[1].split("```sql\n")[1].split("```")[0]
    with duckdb.connect(str(workdir / "marketo_custom_activities_sandbox.duckdb"), read_only=True) as connection:
        assert len(connection.sql(sql).fetchall()) == sum(reasons.values())
