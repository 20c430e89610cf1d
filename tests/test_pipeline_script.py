"""The README's first command, as a new user runs it: the pipeline against the bundled sandbox."""

import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb

from marketo_source.sandbox import DEMO_DATA, MarketoSandbox
from marketo_source.settings import DEDICATED_STREAM_TYPE_IDS

from tests.expected import table_of

REPO = Path(__file__).resolve().parent.parent


def test_sandbox_run_loads_the_sandbox_data_and_prints_a_summary(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "marketo_pipeline.py"), "--sandbox"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "DLT_DATA_DIR": str(tmp_path / "dlt")},
    )
    assert result.returncode == 0, result.stderr
    assert "Marketo API calls this run:" in result.stdout

    printed = dict(re.findall(r"^  (\w+)\s+([\d,]+) rows$", result.stdout, re.MULTILINE))
    streams = dict(re.findall(r"^  (\w+)\s+([\d,]+)\s+[\d,]+\s+[\d,]+  \d{4}-", result.stdout, re.MULTILINE))
    assert "RETENTION GAP" not in result.stderr + result.stdout
    with MarketoSandbox(data=DEMO_DATA) as sandbox:
        truth = sandbox.ground_truth()
    types = {t["id"]: t["name"] for t in truth["activity_types"]}
    # Progress goes to stdout (every 60 s when it is not a terminal, and when each step ends).
    assert re.search(r"^Marketo pages \(activities\): \d+", result.stdout, re.MULTILINE)
    assert int(streams["lead_changes"].replace(",", "")) == len(truth["lead_changes"])
    assert int(streams["deleted_leads"].replace(",", "")) == len(truth["deleted_leads"])
    other = [r for r in truth["activities"] if r["activityTypeId"] not in DEDICATED_STREAM_TYPE_IDS]
    assert int(streams["activities"].replace(",", "")) == len(other)
    with duckdb.connect(str(tmp_path / "marketo_sandbox.duckdb"), read_only=True) as db:
        for type_id, name in types.items():
            if type_id in DEDICATED_STREAM_TYPE_IDS:
                continue
            expected = {r["marketoGUID"] for r in truth["activities"] if r["activityTypeId"] == type_id}
            if not expected:
                continue
            table = table_of(name)
            loaded = {row[0] for row in db.sql(f"select marketo_guid from marketo.{table}").fetchall()}
            assert loaded == expected, table
            assert int(printed[table].replace(",", "")) == len(expected)


def test_a_run_configured_only_through_dlt_files(tmp_path: Path) -> None:
    from marketo_source.sandbox import DataSpec

    data = DataSpec(seed=77, leads=30, activities=1200, days=6, start_date="2026-10-10T00:00:00Z")
    with MarketoSandbox(data=data, client_id="files-id", client_secret="files-secret") as unseen:
        (tmp_path / ".dlt").mkdir()
        (tmp_path / ".dlt" / "config.toml").write_text(
            f'[sources.marketo]\nbase_url = "{unseen.base_url}/rest/"\nstart_date = "2026-10-10T00:00:00Z"\n'
        )
        (tmp_path / ".dlt" / "secrets.toml").write_text(
            '[sources.marketo]\nclient_id = "files-id"\nclient_secret = "files-secret"\n'
        )
        result = subprocess.run(
            [sys.executable, str(REPO / "pipelines" / "marketo_pipeline.py")],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
            env={k: v for k, v in {**os.environ, "DLT_DATA_DIR": str(tmp_path / "dlt")}.items()
                 if not k.startswith("SOURCES__")},
        )
        assert result.returncode == 0, result.stderr[-2000:]
        truth = unseen.ground_truth()
    with duckdb.connect(str(tmp_path / "marketo_pipeline.duckdb"), read_only=True) as db:
        loaded = {row[0] for row in db.sql("select marketo_guid from marketo.lead_changes").fetchall()}
        deleted = {row[0] for row in db.sql("select marketo_guid from marketo.deleted_leads").fetchall()}
    assert loaded == {r["marketoGUID"] for r in truth["lead_changes"]}
    assert deleted == {r["marketoGUID"] for r in truth["deleted_leads"]}
