"""Lead changes' "Lead ID" attribute loads as a whole number, declared by the metadata or not."""

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from marketo_source.sandbox import MarketoSandbox
from marketo_source.schema import TableLayout, TableRows

from tests.helpers import source_for


def test_lead_id_attribute_of_lead_changes_loads_as_bigint_equal_to_the_ground_truth(
    sandbox: MarketoSandbox, make_pipeline: Any, tmp_path: Path
) -> None:
    declared = {a["name"] for t in sandbox.ground_truth()["activity_types"] if t["id"] == 13 for a in t["attributes"]}
    assert "Lead ID" not in declared, "the sandbox leaves it out of Change Data Value's metadata, as Marketo may"
    make_pipeline("lead_change_types").run(source_for(sandbox).with_resources("lead_changes"))
    truth = {r["marketoGUID"]: a["value"] for r in sandbox.ground_truth()["lead_changes"]
             for a in r["attributes"] if a["name"] == "Lead ID"}
    assert truth

    with duckdb.connect(str(tmp_path / "lead_change_types.duckdb"), read_only=True) as db:
        column_type = db.execute(
            "select data_type from information_schema.columns where table_schema = 'marketo' "
            "and table_name = 'lead_changes' and column_name = 'attribute_lead_id'").fetchone()
        loaded = dict(db.execute("select marketo_guid, attribute_lead_id from marketo.lead_changes "
                                 "where attribute_lead_id is not null").fetchall())
    assert column_type == ("BIGINT",)
    assert loaded == truth


@pytest.mark.parametrize(("declared", "arrow_type"), [
    ([], pa.int64()), ([("Lead ID", "integer")], pa.int64()), ([("Lead ID", "string")], pa.string()),
])
def test_metadata_that_lists_lead_id_decides_its_type(declared: list[tuple[str, str]], arrow_type: pa.DataType) -> None:
    rows = TableRows(TableLayout(declared))
    rows.add([{"marketoGUID": "g1", "attributes": [{"name": "Lead ID", "value": 1001}]}])
    table, _ = rows.to_arrow()
    assert table.schema.field("attribute_lead_id").type == arrow_type
    assert table.column("attribute_lead_id").to_pylist() == [1001 if arrow_type == pa.int64() else "1001"]
