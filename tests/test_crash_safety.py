"""Crash safety: the pipeline killed with SIGKILL in extract, normalize and load, then run
again, ends on exactly Marketo's data.

The pipeline runs in a child process (tests/crash_child.py) against a sandbox served by this
process; the child announces each dlt step as it starts and ends. Each round adds activities
to the sandbox, starts the child, waits for the step it aims at (the one hit least so far),
waits a random time into that step and kills the child. The step the kill really interrupted
is the last one the child announced; the longest delay into a step grows after a kill inside
it and shrinks after one that landed past it. After each kill no row loaded before may be gone
and no loaded row may be unknown to Marketo. Rounds go on until every step was interrupted at least once (more for a
longer run: MARKETO_CRASH_KILLS_PER_STEP=5); then the child runs to completion and every table
must equal the ground truth: no loss, no duplicates.

The rounds use seed 1; another seed: MARKETO_CRASH_SEED=7. The kills print at the end of the
session, under "figures" (-s adds one line per kill as it happens). The other tests reduce what
the kills found to deterministic reproductions, with failpoints in the child.
"""

import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from marketo_source.sandbox import DataSpec, Limits, MarketoSandbox

from tests.crash_child import DIE_AFTER_INSERT, DIE_AFTER_TRUNCATE, DIE_MID_CLEANUP, DIE_MID_MERGE, pipeline_for
from tests.expected import Keys, expected_keys
from tests.helpers import (
    assert_every_table_matches,
    assert_nothing_lost_or_invented,
    loaded_keys,
    recent_start_date,
)

REPO = Path(__file__).resolve().parent.parent
DUCKDB_FILE = "crash.duckdb"
"""Not named like the dataset: DuckDB refuses a catalog and a schema of the same name as ambiguous."""
PHASES = ("extract", "normalize", "load")
KILLS_PER_PHASE = int(os.environ.get("MARKETO_CRASH_KILLS_PER_STEP", "1"))
"""One per step keeps CI near 50 s; the failpoint tests pin the moments random kills found."""
MAX_ROUNDS = 6 + 5 * KILLS_PER_PHASE
"""Rounds also go to kills that land between steps and to runs that only finish a pending package."""
FIRST_DELAY_S = {"extract": 0.8, "normalize": 0.1, "load": 0.6}
"""The longest delay into each step of the first kill aimed at it: about the step's length with
this data on a quiet machine (KillAim adapts it)."""
STEP_TIMEOUT_S = 120
"""Generous: other jobs may share this machine's two cores."""


class Child:
    """One run of tests/crash_child.py, with the lines it prints read as they come."""

    def __init__(self, sandbox: MarketoSandbox, start_date: str, workdir: Path, number: int, *options: str,
                 settings: Optional[Dict[str, str]] = None) -> None:
        self.lines: List[str] = []
        self._changed = threading.Condition()
        self._stderr = open(workdir / f"child_{number}.stderr", "w")  # noqa: SIM115 (the child writes to it; end() closes it)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.crash_child", str(workdir / "pipelines"), str(workdir / DUCKDB_FILE),
             *options],
            cwd=workdir, env=child_environment(sandbox, start_date, workdir, settings or {}),
            stdout=subprocess.PIPE, stderr=self._stderr, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.strip())
                self._changed.notify_all()
        with self._changed:
            self.lines.append("EOF")
            self._changed.notify_all()

    def wait_for_phase(self, phase: str) -> bool:
        """Waits until the child starts `phase`; False if it ended first."""
        def seen() -> Optional[bool]:
            if any(phase_of(line) == phase for line in self.lines if line.startswith("PHASE ")):
                return True
            return False if "EOF" in self.lines else None

        with self._changed:
            outcome = self._changed.wait_for(lambda: seen() is not None, timeout=STEP_TIMEOUT_S)
        assert outcome is not None, f"the child neither reached {phase} nor ended: {self.lines}"
        return bool(seen())

    def kill(self) -> str:
        """SIGKILLs the child and returns where it was: a step, `after <step>`, or `finished`."""
        self.process.send_signal(signal.SIGKILL)
        self.end()
        return where_it_stopped(self.lines)

    def finish(self) -> List[str]:
        """Waits for the child to end by itself; fails if it did not end well."""
        returncode = self.end()
        assert returncode == 0 and "DONE" in self.lines, f"the child failed: {self.stderr()[-3000:]}"
        return self.lines

    def end(self) -> int:
        """Waits for the child to end; returns its exit code (-9 when SIGKILLed)."""
        returncode = self.process.wait(timeout=STEP_TIMEOUT_S * 3)
        self._reader.join(timeout=STEP_TIMEOUT_S)
        self._stderr.close()
        return returncode

    def stderr(self) -> str:
        return Path(self._stderr.name).read_text()


def child_environment(sandbox: MarketoSandbox, start_date: str, workdir: Path, extra: Dict[str, str]) -> Dict[str, str]:
    """The source's settings (and `extra` ones) as environment variables, and dlt's data kept in
    the test's folder."""
    settings = dict(
        BASE_URL=sandbox.base_url, CLIENT_ID=sandbox.client_id, CLIENT_SECRET=sandbox.client_secret,
        START_DATE=start_date, RATE_LIMIT_CALLS="1000", RATE_LIMIT_PERIOD_S="1", **extra,
    )
    return {
        **os.environ,
        **{f"SOURCES__MARKETO__{name}": value for name, value in settings.items()},
        "PYTHONPATH": str(REPO),
        "DLT_DATA_DIR": str(workdir / "dlt"),
        "RUNTIME__LOG_LEVEL": "WARNING",
    }


def phase_of(line: str) -> str:
    """`PHASE Normalize marketo in 1795...` -> `normalize`."""
    return line.split()[1].lower()


def where_it_stopped(lines: List[str]) -> str:
    """The step a killed child was in, from the last announcement it printed."""
    for line in reversed(lines):
        if line == "DONE":
            return "finished"
        if line.startswith("PHASE "):
            return phase_of(line)
        if line.startswith("ENDED "):
            return f"after {phase_of(line)}"
    return "starting"


@dataclass
class KillAim:
    """Chooses the step to aim at and how far into it, learning from where kills land."""

    rng: random.Random
    hits: Counter
    delay_s: Dict[str, float]

    def target(self) -> str:
        return min(PHASES, key=lambda phase: self.hits[phase])

    def delay(self, phase: str) -> float:
        return self.rng.uniform(0, self.delay_s[phase])

    def landed(self, target: str, where: str) -> None:
        """Counts the kill; aims deeper into a step it landed in, earlier into one it overshot,
        so that kills spread over the whole step (late in load: some tables merged, some not)."""
        self.hits[where] += 1
        self.delay_s[target] *= 1.5 if where == target else 0.5

    def done(self) -> bool:
        return all(self.hits[phase] >= KILLS_PER_PHASE for phase in PHASES)


@pytest.fixture
def crash_sandbox() -> Iterator[MarketoSandbox]:
    """Enough data that a run lasts a few seconds, dated within every retention window."""
    with MarketoSandbox(data=DataSpec(seed=5, leads=200, activities=6_000, days=10, start_date=recent_start_date()),
                        block_size=1000, limits=Limits(calls_per_window=None)) as sandbox:
        yield sandbox


def test_sigkill_in_every_step_then_a_run_to_completion_loads_exactly_marketos_data(
    crash_sandbox: MarketoSandbox, tmp_path: Path, figures: List[str]
) -> None:
    seed = int(os.environ.get("MARKETO_CRASH_SEED", "1"))
    aim = KillAim(random.Random(seed), Counter(), dict(FIRST_DELAY_S))
    kills: List[str] = []
    keys: Keys = {}
    start = str(crash_sandbox.data.start_date)
    try:
        for round_number in range(MAX_ROUNDS):
            if aim.done():
                break
            crash_sandbox.add_activities(new=800, late=80)
            kills.append(kill_round(crash_sandbox, start, tmp_path, round_number, aim))
            print(kills[-1])
            keys = check_nothing_lost(tmp_path, crash_sandbox, keys)
            kills[-1] += f"; {rows_loaded(keys, crash_sandbox)}"
    finally:
        figures.append(f"crash safety (seed {seed}): {sum(aim.hits.values())} kills, by step {dict(aim.hits)}")
        figures.extend(f"  {kill}" for kill in kills)
    assert aim.done(), f"kills did not land {KILLS_PER_PHASE} times in every step: {dict(aim.hits)}"

    run_to_completion(crash_sandbox, start, tmp_path)
    pipeline = pipeline_for(str(tmp_path / "pipelines"), str(tmp_path / DUCKDB_FILE))
    assert not pipeline.has_pending_data
    assert_every_table_matches(pipeline, crash_sandbox)


def kill_round(sandbox: MarketoSandbox, start: str, workdir: Path, round_number: int, aim: KillAim) -> str:
    """Starts the child and kills it in the step aimed at; says where the kill landed.

    A run that finds packages an earlier kill left only loads those and ends (dlt's `run`
    finishes pending work first), so it may end before reaching the step: then it must end well.
    """
    target = aim.target()
    child = Child(sandbox, start, workdir, round_number)
    if not child.wait_for_phase(target):
        child.finish()
        return f"round {round_number}: aimed at {target}, not killed: the run ended first (it loaded a pending package)"
    delay = aim.delay(target)
    threading.Event().wait(delay)
    where = child.kill()
    aim.landed(target, where)
    return f"round {round_number}: aimed at {target} (+{delay:.2f} s), killed in {where}"


def check_nothing_lost(workdir: Path, sandbox: MarketoSandbox, before: Keys) -> Keys:
    """After a kill: what earlier runs loaded is still there and nothing unknown was loaded."""
    pipeline = pipeline_for(str(workdir / "pipelines"), str(workdir / DUCKDB_FILE))
    now = loaded_keys(pipeline)
    assert_nothing_lost_or_invented(before, now, sandbox.ground_truth())
    return now


def rows_loaded(keys: Keys, sandbox: MarketoSandbox) -> str:
    """`loaded/held` rows over every table: how much a kill left to do."""
    held = sum(len(rows) for rows in expected_keys(sandbox.ground_truth()).values())
    return f"{sum(len(rows) for rows in keys.values())}/{held} rows loaded"


def run_to_completion(sandbox: MarketoSandbox, start: str, workdir: Path) -> None:
    """Runs the child undisturbed until a run extracted and loaded: a run that finds packages
    a kill left behind only loads those (dlt's `run` finishes pending work first)."""
    for attempt in range(3):
        lines = Child(sandbox, start, workdir, MAX_ROUNDS + attempt).finish()
        if any(line.startswith("PHASE Extract") for line in lines):
            return
    pytest.fail("three undisturbed runs and none extracted")


def test_a_kill_right_after_dlt_truncates_the_catalog_tables_keeps_their_rows(tmp_path: Path) -> None:
    """The loss the kills in load find, reduced with a failpoint: the child kills itself right
    after dlt truncated the tables it replaces (activity_types, custom_activity_types and their
    attributes), before it inserts their new rows. dlt's default replace strategy for DuckDB,
    truncate-and-insert, commits the truncation on its own, so the tables stay empty until a
    later run finishes the package."""
    with small_crash_sandbox() as sandbox:
        loaded = loaded_then_killed(sandbox, tmp_path, DIE_AFTER_TRUNCATE, "TRUNCATED")
        check_nothing_lost(tmp_path, sandbox, loaded)


def test_a_kill_right_after_a_replace_table_was_inserted_leaves_no_duplicates(tmp_path: Path) -> None:
    """The duplicates the kills in load find, reduced with a failpoint: the child kills itself
    right after the job inserting `activity_type_attributes` committed, before dlt recorded the
    job as done. The next run finishes the package: it runs the job again, but dlt truncates a
    package's tables only once, so every attribute row is there twice (and so are the rows of
    any other replace table whose job had committed unrecorded)."""
    with small_crash_sandbox() as sandbox:
        loaded_then_killed(sandbox, tmp_path, DIE_AFTER_INSERT + "activity_type_attributes", "INSERTED")
        Child(sandbox, str(sandbox.data.start_date), tmp_path, 2).finish()  # finishes the package

        assert_every_table_matches(pipeline_for(str(tmp_path / "pipelines"), str(tmp_path / DUCKDB_FILE)), sandbox)


def test_a_kill_between_the_delete_and_the_insert_of_a_merge_keeps_the_rows(tmp_path: Path) -> None:
    """A transient loss on DuckDB, reduced with a failpoint: a merge deletes the rows whose keys
    it loads again, then inserts the new versions. dlt (1.31) leaves supports_transactions unset
    in DuckDB's capabilities, so the merge job runs without a transaction and the DELETE commits
    on its own: a kill between the two loses every row the run read again until a later run
    finishes the package. Here lookback_minutes makes the run read every activity again."""
    with small_crash_sandbox() as sandbox:
        rereads = {"LOOKBACK_MINUTES": str(60 * 24 * 30)}
        loaded = loaded_then_killed(sandbox, tmp_path, DIE_MID_MERGE + "activity_visit_webpage", "DELETED", rereads)
        check_nothing_lost(tmp_path, sandbox, loaded)


def test_a_kill_while_normalize_deletes_the_extracted_package_does_not_stop_later_runs(tmp_path: Path) -> None:
    """A pipeline left unable to run, reduced with a failpoint: normalize commits the normalized
    package, then deletes the extracted one; dlt warns "do not kill this process" there. A kill
    halfway through the deletion leaves an extracted package without its new_jobs folder, and
    every later run fails in normalize on it (FileNotFoundError), while the committed package
    waits unloaded. Dropping the pending packages, dlt's advice, would lose its rows for good:
    the state already points past them."""
    with small_crash_sandbox() as sandbox:
        loaded_then_killed(sandbox, tmp_path, DIE_MID_CLEANUP, "HALF-DELETED")
        for number in (2, 3):  # the first finishes the committed package, the second reads on
            Child(sandbox, str(sandbox.data.start_date), tmp_path, number).finish()

        assert_every_table_matches(pipeline_for(str(tmp_path / "pipelines"), str(tmp_path / DUCKDB_FILE)), sandbox)


def small_crash_sandbox() -> MarketoSandbox:
    """Data for one quick run: the failpoint tests need no long steps."""
    data = DataSpec(seed=6, leads=30, activities=1000, days=5, start_date=recent_start_date())
    return MarketoSandbox(data=data, limits=Limits(calls_per_window=None))


def loaded_then_killed(sandbox: MarketoSandbox, workdir: Path, failpoint: str, announcement: str,
                       settings: Optional[Dict[str, str]] = None) -> Keys:
    """One complete run, new activities, then a run that kills itself at `failpoint`.

    Returns the keys loaded by the complete run.
    """
    start = str(sandbox.data.start_date)
    Child(sandbox, start, workdir, 0, settings=settings).finish()
    loaded = check_nothing_lost(workdir, sandbox, {})
    sandbox.add_activities(new=50)
    died = Child(sandbox, start, workdir, 1, failpoint, settings=settings)
    assert died.end() == -signal.SIGKILL, died.stderr()[-3000:]
    assert any(line.startswith(announcement) for line in died.lines), f"the failpoint was not reached: {died.lines}"
    return loaded
