"""Bulk export files: the download (streamed, resumed after a cut, checked against its job) and the
parsing of a file into the same tables REST paging fills, against the sandbox over HTTP.

REST's tables are built by the source's own code (the activities stream's routing and `TableRows`)
from the records the sandbox's endpoints render (`ground_truth()`); the file's tables must equal
them in table names, columns, Arrow types and values, `id` aside (export files carry none).
"""

import csv
import io
import json
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import dlt
import pyarrow as pa
import pytest
import requests

from marketo_source.bulk.csv_file import FileBlock, count_records, in_window, read_export
from marketo_source.bulk.download import ExportFile, download_export
from marketo_source.client import MarketoClient
from marketo_source.errors import MarketoBulkFileError, MarketoBulkFileGone
from marketo_source.sandbox import BulkSpec, DataSpec, Fault, MarketoSandbox
from marketo_source.sandbox.export_file import export_csv
from marketo_source.sandbox.hostile import HOSTILE_VALUES
from marketo_source.schema import parse_timestamp
from marketo_source.settings import DELETE_LEAD_TYPE_ID
from marketo_source.tables import UNKEYED_REASON, ActivityTables, split_unkeyed, to_table

from tests.helpers import FAST_CLIENT, source_for, table_names, table_rows

START = datetime(2026, 10, 1, tzinfo=timezone.utc)
DATA = DataSpec(seed=11, leads=60, activities=3000, days=20, start_date="2026-10-01T00:00:00Z", malformed=9, unkeyed=3)
FAST_JOBS = BulkSpec(queue_s=0.05, processing_s=0.05, status_interval_s=0.05)

Tables = Dict[str, pa.Table]


@pytest.fixture(scope="module")
def bulk_sandbox() -> Iterator[MarketoSandbox]:
    with MarketoSandbox(data=DATA) as instance:
        instance.bulk_spec = FAST_JOBS
        yield instance


@pytest.fixture(scope="module")
def exported(bulk_sandbox: MarketoSandbox) -> Tuple[Dict[str, Any], bytes]:
    """A completed job over the whole data (every type Bulk Extract takes), and its file as served."""
    type_ids = _exported_types(bulk_sandbox.ground_truth())
    return export(bulk_sandbox, START, START + timedelta(days=DATA.days + 1), type_ids)


def export(
    sandbox: MarketoSandbox, start: datetime, end: datetime, type_ids: List[int]
) -> Tuple[Dict[str, Any], bytes]:
    """Creates, enqueues and waits for an export job over HTTP; its Completed status and its file."""
    session = requests.Session()
    credentials = dict(grant_type="client_credentials", client_id=sandbox.client_id,
                       client_secret=sandbox.client_secret)
    token = session.get(f"{sandbox.base_url}/identity/oauth/token", params=credentials, timeout=10).json()
    session.headers["Authorization"] = f"Bearer {token['access_token']}"
    jobs = f"{sandbox.base_url}/bulk/v1/activities/export"

    def call(method: str, path: str, **body: Any) -> Dict[str, Any]:
        answer = session.request(method, jobs + path, timeout=10, **body).json()
        assert answer["success"], answer
        return dict(answer["result"][0])

    created_at = {"startAt": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "endAt": end.strftime("%Y-%m-%dT%H:%M:%SZ")}
    job = call("POST", "/create.json", json={"format": "CSV", "filter": {
        "createdAt": created_at, "activityTypeIds": type_ids}})
    call("POST", f"/{job['exportId']}/enqueue.json")
    deadline = time.monotonic() + 60
    while (status := call("GET", f"/{job['exportId']}/status.json"))["status"] != "Completed":
        assert time.monotonic() < deadline and status["status"] in ("Queued", "Processing"), status
        time.sleep(0.02)
    return status, session.get(f"{jobs}/{job['exportId']}/file.json", timeout=10).content


def _client(sandbox: MarketoSandbox) -> MarketoClient:
    return MarketoClient(sandbox.base_url, sandbox.client_id, sandbox.client_secret, **FAST_CLIENT)


def _known_types(truth: Dict[str, Any]) -> Dict[int, Dict[str, Any]]:
    return {t["id"]: t for t in truth["activity_types"]}


def rest_tables(records: List[Dict[str, Any]], known_types: Dict[int, Dict[str, Any]]) -> Tuple[Tables, int]:
    """The tables the activities stream makes of REST records, and how many records it sets aside."""
    tables = ActivityTables(known_types)
    keyed, rejects = split_unkeyed(records)
    made = {}
    for table_name, table_records in tables.route(keyed):
        rows = tables.new_rows(table_name)
        rows.add(table_records)
        made[table_name] = rows.to_arrow()[0]
    return made, len(rejects)


def file_tables(path: Path, known_types: Dict[int, Dict[str, Any]], **read: Any) -> Tuple[Tables, List[FileBlock]]:
    """The tables read from an export file (its blocks put together per table), and the blocks."""
    blocks = list(read_export(path, ActivityTables(known_types), **read))
    parts: Dict[str, List[pa.Table]] = {}
    for block in blocks:
        for table_name, table in block.tables.items():
            parts.setdefault(table_name, []).append(table)
    # A column one block lacks (a variant, an attribute met later) is null in that block's rows.
    return {name: pa.concat_tables(tables, promote_options="permissive") for name, tables in parts.items()}, blocks


def assert_same_tables(rest: Tables, bulk: Tables) -> None:
    """Same table names, columns, types and values per marketo_guid; `id` is null in every bulk row."""
    assert sorted(bulk) == sorted(rest)
    for name, rest_table in rest.items():
        bulk_table = bulk[name]
        assert bulk_table["id"].null_count == bulk_table.num_rows, name
        expected = rest_table.drop_columns(["id"]).sort_by("marketo_guid")
        got = bulk_table.drop_columns(["id"]).sort_by("marketo_guid")
        assert got.schema == expected.schema, name
        for column in expected.column_names:
            assert got[column].to_pylist() == expected[column].to_pylist(), (name, column)


def test_file_tables_equal_rest_tables(bulk_sandbox: MarketoSandbox, exported: Tuple[Dict[str, Any], bytes],
                                       tmp_path: Path) -> None:
    status, _ = exported
    truth = bulk_sandbox.ground_truth()
    records = [r for r in truth["activities"] if r["activityTypeId"] != DELETE_LEAD_TYPE_ID]
    path = download_export(_client(bulk_sandbox), ExportFile.of_status(status), tmp_path / "export.csv")
    rest, set_aside = rest_tables(records, _known_types(truth))
    bulk, blocks = file_tables(path, _known_types(truth), block_rows=500, block_bytes=64 << 10)  # many blocks
    assert len(blocks) > 3
    assert_same_tables(rest, bulk)
    rejects = [reject for block in blocks for reject in block.rejects]
    assert [reason for _, reason in rejects] == [UNKEYED_REASON] * set_aside
    assert set_aside == DATA.unkeyed
    # The data holds every kind of value the typing meets: variants of misfits, rows without attributes.
    assert any(column.endswith("__v_text") for table in bulk.values() for column in table.column_names)


def test_loaded_rows_equal_those_rest_paging_loads(
    bulk_sandbox: MarketoSandbox, exported: Tuple[Dict[str, Any], bytes], make_pipeline: Any, tmp_path: Path
) -> None:
    """The file's tables, loaded by dlt as the activities stream's tables are, hold the rows the source's
    REST paging loads (read over HTTP), column for column but `id` and dlt's own columns."""
    _, file = exported
    truth = bulk_sandbox.ground_truth()
    path = tmp_path / "export.csv"
    path.write_bytes(file)
    rest = make_pipeline("rest")
    rest.run(source_for(bulk_sandbox, activity_type_ids=_exported_types(truth)).with_resources("activities"))
    bulk_tables, _ = file_tables(path, _known_types(truth))

    @dlt.resource(name="activities", write_disposition="merge", primary_key="marketo_guid")
    def from_file() -> Iterator[Any]:
        for table_name, table in bulk_tables.items():
            yield to_table(table, table_name)

    bulk = make_pipeline("bulk")
    bulk.run(from_file())
    names = sorted(bulk_tables)
    assert names == sorted(t for t in table_names(rest) if t.startswith("activity_") and t not in _CATALOGS)
    for name in names:
        rest_rows, bulk_rows = _loaded(rest, name), _loaded(bulk, name)
        assert bulk_rows == rest_rows, name
        assert all(row["id"] is None for row in table_rows(bulk, name))


_CATALOGS = ("activity_types", "activity_type_attributes")


def _exported_types(truth: Dict[str, Any]) -> List[int]:
    return sorted(t["id"] for t in truth["activity_types"] if t["id"] != DELETE_LEAD_TYPE_ID)


def _loaded(pipeline: dlt.Pipeline, table: str) -> Dict[str, Dict[str, Any]]:
    """Rows by marketo_guid, without `id` and dlt's columns."""
    return {
        row["marketo_guid"]: {k: v for k, v in row.items() if k != "id" and not k.startswith("_dlt")}
        for row in table_rows(pipeline, table)
    }


def test_window_keeps_rows_dated_in_it(bulk_sandbox: MarketoSandbox, exported: Tuple[Dict[str, Any], bytes],
                                       tmp_path: Path) -> None:
    _, file = exported
    path = tmp_path / "export.csv"
    path.write_bytes(file)
    truth = bulk_sandbox.ground_truth()
    start, until = START + timedelta(days=5), START + timedelta(days=9, seconds=1)
    bulk, _ = file_tables(path, _known_types(truth), start=start, until=until)
    kept = {guid for table in bulk.values() for guid in table["marketo_guid"].to_pylist()}
    dated = {
        r["marketoGUID"] for r in truth["activities"]
        if r["activityTypeId"] != DELETE_LEAD_TYPE_ID and r.get("marketoGUID")
        and ("activityDate" not in r or start <= parse_timestamp(r["activityDate"]) < until)
    }
    assert kept == dated
    everything, _ = file_tables(path, _known_types(truth))
    filtered = {name: in_window(table, start, until) for name, table in everything.items()}
    assert {g for t in filtered.values() for g in t["marketo_guid"].to_pylist()} == dated


def test_hostile_values_round_trip(tmp_path: Path) -> None:
    sandbox = MarketoSandbox(data=DataSpec(seed=5, leads=20, activities=200, days=5))
    records = sandbox.add_activities(new=120, late=40, hostile=True)
    path = tmp_path / "hostile.csv"
    path.write_bytes(export_csv(records))
    known = _known_types(sandbox.ground_truth())
    bulk, _ = file_tables(path, known)
    assert_same_tables(rest_tables(records, known)[0], bulk)
    texts = set()
    for table in bulk.values():
        for field in table.schema:
            if field.type == pa.string():
                texts |= set(table[field.name].to_pylist())
    assert set(HOSTILE_VALUES) <= texts


def test_unreadable_attributes_are_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    # Two rows as a broken export would hold them: attributes cut mid-JSON, and a JSON list.
    path.write_bytes(
        b"marketoGUID,leadId,activityDate,activityTypeId,campaignId,primaryAttributeValueId,primaryAttributeValue,"
        b"attributes\n"
        b'g-1,1,2026-10-01T00:00:00Z,1,null,null,null,"{""Webpage ID"":"\n'
        b'g-2,1,2026-10-01T00:00:00Z,1,null,null,null,"[1,2]"\n'
        b'g-3,1,2026-10-01T00:00:00Z,1,null,null,null,"{""Webpage ID"":7}"\n'
    )
    bulk, blocks = file_tables(path, {})
    assert sorted((row["marketoGUID"], reason) for block in blocks for row, reason in block.rejects) == [
        ("g-1", "attributes is not a JSON object"), ("g-2", "attributes is not a JSON object"),
    ]
    assert bulk["activity_type_1"].to_pydict()["webpage_id"] == ["7"]


def test_a_file_without_rows_holds_no_tables(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(export_csv([]))
    assert count_records(path) == 0
    assert [block.tables for block in read_export(path, ActivityTables({}))] == []


def test_a_file_without_the_default_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "renamed.csv"
    activity = {"marketoGUID": "g-1", "leadId": 1, "activityDate": "2026-10-01T00:00:00Z", "activityTypeId": 1,
                "attributes": []}
    path.write_bytes(export_csv([activity], header_names={"marketoGUID": "GUID"}))
    with pytest.raises(MarketoBulkFileError, match=r"renamed\.csv cannot be read as an export file: .*marketoGUID"):
        list(read_export(path, ActivityTables({})))


def test_cut_download_resumes_to_the_exact_bytes(bulk_sandbox: MarketoSandbox,
                                                 exported: Tuple[Dict[str, Any], bytes], tmp_path: Path) -> None:
    status, file = exported
    bulk_sandbox.set_faults([Fault("cut", probability=1.0, endpoint="bulk_file", times=3, cut_bytes=len(file) // 5)])
    bulk_sandbox.reset_stats()
    try:
        path = download_export(_client(bulk_sandbox), ExportFile.of_status(status), tmp_path / "export.csv")
    finally:
        bulk_sandbox.set_faults([])
    assert path.read_bytes() == file
    stats = bulk_sandbox.stats()
    assert stats["errors"]["cut"] == 3
    assert stats["calls"]["bulk_file"] == 4
    assert not (tmp_path / "export.csv.part").exists()


@pytest.mark.parametrize(
    "wrong",
    [
        {"fileSize": 1},
        {"fileChecksum": "sha256:" + "0" * 64},
        {"numberOfRecords": 1},
    ],
    ids=["size", "checksum", "records"],
)
def test_a_file_that_does_not_match_its_job_is_refused_and_dropped(
    bulk_sandbox: MarketoSandbox, exported: Tuple[Dict[str, Any], bytes], tmp_path: Path, wrong: Dict[str, Any]
) -> None:
    status, _ = exported
    target = tmp_path / "export.csv"
    with pytest.raises(MarketoBulkFileError, match=f"its job says {next(iter(wrong))}"):
        download_export(_client(bulk_sandbox), ExportFile.of_status({**status, **wrong}), target)
    assert list(tmp_path.iterdir()) == []


def test_a_gone_file_raises_its_own_error(bulk_sandbox: MarketoSandbox, tmp_path: Path) -> None:
    status, _ = export(bulk_sandbox, START, START + timedelta(days=4), [1])
    bulk_sandbox.expire_bulk_file(status["exportId"])
    with pytest.raises(MarketoBulkFileGone, match="create the export job again"):
        download_export(_client(bulk_sandbox), ExportFile.of_status(status), tmp_path / "export.csv")
    assert list(tmp_path.iterdir()) == []


def test_a_status_without_a_sha256_checksum_is_refused() -> None:
    status = {"exportId": "x", "fileSize": 10, "numberOfRecords": 1, "fileChecksum": "md5:abc"}
    with pytest.raises(MarketoBulkFileError, match="fileChecksum 'md5:abc' is not sha256"):
        ExportFile.of_status(status)


def test_window_of_an_activity_date_column() -> None:
    dates = pa.array([START, START + timedelta(hours=1), None, START - timedelta(seconds=1)],
                     pa.timestamp("us", tz="UTC"))
    table = pa.table({"activity_date": dates, "n": [0, 1, 2, 3]})
    kept = in_window(table, START, START + timedelta(hours=1))
    assert kept["n"].to_pylist() == [0, 2]


def test_blocks_whose_rows_all_lie_outside_the_window_or_are_set_aside_hold_no_tables(tmp_path: Path) -> None:
    path = tmp_path / "outside.csv"
    path.write_bytes(
        b"marketoGUID,leadId,activityDate,activityTypeId,campaignId,primaryAttributeValueId,primaryAttributeValue,"
        b"attributes\n"
        b'g-1,1,2026-10-01T00:00:00Z,1,null,null,null,"{""Webpage ID"":7}"\n'
        b'g-2,1,2026-10-02T00:00:00Z,1,null,null,null,"[1,2]"\n'
    )
    after = datetime(2026, 10, 1, 12, tzinfo=timezone.utc)
    blocks = list(read_export(path, ActivityTables({}), start=after, until=after + timedelta(days=10)))
    assert [block.tables for block in blocks] == [{}]
    assert [row["marketoGUID"] for block in blocks for row, _ in block.rejects] == ["g-2"]
    later = list(read_export(path, ActivityTables({}), start=after + timedelta(days=5)))
    assert [block.tables for block in later] == [{}]


@pytest.mark.parametrize("content_type", ["application/json", "application/json;charset=UTF-8"])
def test_a_file_served_as_json_is_still_read_as_the_file(
    bulk_sandbox: MarketoSandbox, exported: Tuple[Dict[str, Any], bytes], tmp_path: Path, content_type: str
) -> None:
    """Marketo's OpenAPI declares the file's answer application/json: it is told from an error by its content."""
    status, file = exported
    spec = bulk_sandbox.bulk_spec
    bulk_sandbox.bulk_spec = replace(spec, file_content_type=content_type)
    bulk_sandbox.set_faults([Fault("cut", probability=1.0, endpoint="bulk_file", times=1, cut_bytes=len(file) // 3)])
    try:
        path = download_export(_client(bulk_sandbox), ExportFile.of_status(status), tmp_path / "export.csv")
    finally:
        bulk_sandbox.bulk_spec = spec
        bulk_sandbox.set_faults([])
    assert path.read_bytes() == file


def test_attributes_given_as_name_value_pairs_load_as_an_objects_do(
    bulk_sandbox: MarketoSandbox, exported: Tuple[Dict[str, Any], bytes], tmp_path: Path
) -> None:
    """Marketo's OpenAPI shows a file's attributes as a list of {"name", "value"} pairs; its
    documentation as one object. Both give the same tables."""
    _, file = exported
    rows = list(csv.reader(io.StringIO(file.decode("utf-8"), newline="")))
    column = rows[0].index("attributes")
    for row in rows[1:]:
        if row[column] != "null":
            row[column] = json.dumps([{"name": k, "value": v} for k, v in json.loads(row[column]).items()])
    listed = io.StringIO(newline="")
    csv.writer(listed, lineterminator="\n").writerows(rows)
    (tmp_path / "objects.csv").write_bytes(file)
    (tmp_path / "pairs.csv").write_text(listed.getvalue(), encoding="utf-8", newline="")
    known = _known_types(bulk_sandbox.ground_truth())
    objects, object_blocks = file_tables(tmp_path / "objects.csv", known)
    pairs, pair_blocks = file_tables(tmp_path / "pairs.csv", known)
    assert [reason for block in pair_blocks for _, reason in block.rejects] == [
        reason for block in object_blocks for _, reason in block.rejects]  # the rows without a marketoGUID
    assert_same_tables(objects, pairs)
