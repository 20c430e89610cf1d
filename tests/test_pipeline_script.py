"""The README's first command, as a new user runs it: the pipeline against the bundled sandbox."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict

import duckdb
import pytest

from marketo_source.sandbox import DEMO_DATA, DataSpec, MarketoSandbox
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
    data = DataSpec(seed=77, leads=30, activities=3000, days=6, start_date="2026-10-10T00:00:00Z")
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


def _settings_of(sandbox: MarketoSandbox, tmp_path: Path) -> Dict[str, str]:
    """The environment of a script run reading `sandbox`, with nothing of the caller's settings,
    and output buffered as Python buffers it by default (not as PYTHONUNBUFFERED asks)."""
    return {
        **{name: value for name, value in os.environ.items()
           if not name.startswith("SOURCES__") and name != "PYTHONUNBUFFERED"},
        "DLT_DATA_DIR": str(tmp_path / "dlt"),
        "SOURCES__MARKETO__BASE_URL": sandbox.base_url,
        "SOURCES__MARKETO__CLIENT_ID": sandbox.client_id,
        "SOURCES__MARKETO__CLIENT_SECRET": sandbox.client_secret,
        "SOURCES__MARKETO__START_DATE": "2026-10-10T00:00:00Z",
    }


def test_a_run_logged_to_a_file_shows_its_progress_and_its_waits_as_they_happen(tmp_path: Path) -> None:
    data = DataSpec(seed=77, leads=30, activities=3000, days=6, start_date="2026-10-10T00:00:00Z")
    log = tmp_path / "run.log"
    with MarketoSandbox(data=data) as sandbox:
        # The run makes about 20 calls: the 11th waits most of a window, the later ones are paced, so
        # that counters are printed after the wait whatever the load on the machine.
        env = {**_settings_of(sandbox, tmp_path),
               "SOURCES__MARKETO__RATE_LIMIT_CALLS": "10", "SOURCES__MARKETO__RATE_LIMIT_PERIOD_S": "8"}
        with log.open("w") as output:  # stdout and stderr to one file, as `>run.log 2>&1` from cron
            result = subprocess.run(
                # Every 2 s stands for the minute of `auto`: the wait alone lasts longer.
                [sys.executable, str(REPO / "pipelines" / "marketo_pipeline.py"), "--progress", "log",
                 "--progress-every", "2"],
                cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT, timeout=300,
            )
        truth = sandbox.ground_truth()
    text = log.read_text()
    assert result.returncode == 0, text[-2000:]
    lines = text.splitlines()

    wait_line = r"waiting \d+ s for the rate limit \(10 calls per 8 s\)"
    waited = [n for n, line in enumerate(lines) if re.fullmatch(wait_line, line)]
    assert len(waited) == 1, "one wait for the rate limit, told once"
    # The counters printed when the extract started (to stdout) come before the wait's line (to
    # stderr): stdout is not held in a buffer until the run ends.
    assert lines.index(" Extract marketo ".center(80, "-")) < waited[0]
    # Counters printed after the wait, before the extract's last ones: progress while it runs.
    ended = next(n for n, line in enumerate(lines) if line.startswith("Loaded into"))
    calls_shown = [n for n, line in enumerate(lines[:ended]) if line.startswith("Marketo API calls: ")]
    during = [lines[n] for n in calls_shown[:-1] if n > waited[0]]
    assert during, "no progress between the wait and the end of the extract"
    assert re.match(r"Marketo API calls: \d+ .*\[rate limit waits: 1 \(\d+ s\)\]", during[0]), during[0]
    assert "psutil" not in text  # --progress log asks dlt for system stats only where psutil is installed
    with duckdb.connect(str(tmp_path / "marketo_pipeline.duckdb"), read_only=True) as db:
        loaded = {row[0] for row in db.sql("select marketo_guid from marketo.lead_changes").fetchall()}
    assert loaded == {r["marketoGUID"] for r in truth["lead_changes"]}


def test_progress_auto_prints_every_minute_when_its_output_is_not_a_terminal(tmp_path: Path) -> None:
    program = "from pipelines.marketo_pipeline import _progress; print(_progress('auto', None).log_period)"
    with (tmp_path / "out").open("w") as output:
        subprocess.run([sys.executable, "-c", program], cwd=REPO, stdout=output, check=True, timeout=120)
    assert (tmp_path / "out").read_text() == "60.0\n"


@pytest.mark.parametrize(("display", "package"), [
    ("tqdm", "tqdm"), ("enlighten", "enlighten"), ("alive_progress", "alive-progress"),
])
def test_a_display_without_its_package_is_one_line_before_the_run(display: str, package: str, tmp_path: Path) -> None:
    if importlib.util.find_spec(display) is not None:
        pytest.skip(f"{package} is installed here")
    result = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "marketo_pipeline.py"), "--sandbox", "--progress", display],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, "DLT_DATA_DIR": str(tmp_path)},
    )
    assert (result.returncode, result.stderr.splitlines()) == (1, [
        f"Run failed: --progress {display}: {package} is not installed; pip install {package}, or pip install -e "
        '".[progress]" for every display'
    ])
    assert result.stdout == "", "the sandbox started before the display was checked"
