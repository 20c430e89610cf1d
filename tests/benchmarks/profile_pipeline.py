"""Where one pipeline run spends its CPU: py-spy samples of every thread, summed by function and by stage.

    .venv/bin/pip install py-spy
    .venv/bin/python -m tests.benchmarks.profile_pipeline [--activities 200000] [--out benchmark-results/profile]

The sandbox runs in its own process without limits; the pipeline runs in a child process under
`py-spy record` (all threads, idle ones left out). Prints the top functions by own time, the
source's functions by inclusive time, and the share of each stage, and keeps the raw samples.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Counter, Dict, Iterator, List, Optional, Sequence, Tuple

from tests.benchmarks.bench_pipeline import UNLIMITED_CLIENT, run_pipeline, sandbox_options
from tests.benchmarks.pipeline_child import REPO_ROOT
from tests.benchmarks.sandbox_process import SandboxProcess

STAGES: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("source: records -> columns (TableRows.add)", ("TableRows.add (marketo_source/schema.py",)),
    ("source: columns -> Arrow (TableRows.to_arrow)", ("TableRows.to_arrow (marketo_source/schema.py",)),
    ("source: field changes -> Arrow", ("FieldChangeRows.", "field_changes_to_arrow (marketo_source/")),
    ("source: newest activityDate per page", ("_extreme_date (marketo_source/paging.py",)),
    ("JSON parsing of answers (orjson, in _read_answer)", ("MarketoClient._read_answer (marketo_source/",
                                                          "json/decoder.py", "simplejson/")),
    ("HTTP round trip (requests, urllib3, sockets)", ("requests/sessions.py",)),
    ("source: other (paging, client, resources)", ("marketo_source/",)),
    ("dlt extract: item writing (arrow -> parquet)", ("dlt/common/data_writers/",)),
    ("dlt extract: other", ("dlt/extract/",)),
    ("dlt normalize", ("dlt/normalize/",)),
    ("dlt load (DuckDB)", ("dlt/load/", "dlt/destinations/")),
)
"""Stage name and frames that mark it; a sample counts for the first stage any of whose frames is in its stack."""
IDLE_LEAVES = ("_worker (concurrent/futures/thread.py", "Condition.wait (threading.py", "_wait_for_tstate_lock (",
               "select (selectors.py", "_wait_for_window (marketo_source/client.py")
"""Leaf frames of threads that wait (py-spy cannot always tell idle threads in a container)."""

Sample = Tuple[List[str], int]


def read_samples(path: Path) -> Iterator[Sample]:
    """Stacks (root first) and their sample counts from py-spy's raw (collapsed) output, idle ones left out."""
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if stack and not frames[-1].startswith(IDLE_LEAVES):
            yield frames, int(count)


def function(frame: str) -> str:
    """"name (file.py:123)" -> "name (file.py)": one entry per function rather than per line."""
    name, _, where = frame.rpartition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if name else frame


def summarize(samples: Sequence[Sample], source_marker: str = "marketo_source/") -> Dict[str, Counter]:
    """Samples per stage, own samples per function and per source line, inclusive samples per source function."""
    counters: Dict[str, Counter] = {name: Counter() for name in ("stages", "own", "source_lines", "source_inclusive")}
    for frames, count in samples:
        counters["stages"][_stage(frames)] += count
        counters["own"][function(frames[-1])] += count
        source_frames = [f for f in frames if source_marker in f and "/sandbox/" not in f]
        if source_frames:
            counters["source_lines"][source_frames[-1]] += count
        for name in {function(f) for f in source_frames}:
            counters["source_inclusive"][name] += count
    return counters


def _stage(frames: List[str]) -> str:
    joined = ";".join(frames)
    return next((name for name, markers in STAGES if any(m in joined for m in markers)), "other")


TITLES = {"stages": "stages", "own": "functions by own time", "source_lines": "innermost source line of the stack",
          "source_inclusive": "source functions, inclusive"}


def print_summary(summary: Dict[str, Counter], top: int = 15) -> None:
    """Prints each ranking as shares of all busy samples."""
    total = sum(summary["stages"].values()) or 1
    for key, title in TITLES.items():
        print(f"\n{title} (share of {total} busy samples, all threads)")
        for name, count in summary[key].most_common(top):
            print(f"  {count / total:6.1%}  {name}")


def py_spy() -> str:
    """The py-spy executable next to this Python, or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    return found


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Profiles one run and prints where its time goes."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.profile_pipeline")
    parser.add_argument("--activities", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmark-results" / "profile")
    parser.add_argument("--gil", action="store_true",
                        help="only samples of the thread holding the GIL: the Python CPU the pipeline process spends, "
                             "without threads that wait for it")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    raw = (args.out / f"pipeline-{args.activities}.txt").resolve()
    wrapper = [py_spy(), "record", "--nonblocking", "--format", "raw", "--rate", str(args.rate), "--output", str(raw),
               *(["--gil"] if args.gil else []), "--"]
    with SandboxProcess(sandbox_options(args.activities)) as sandbox:
        result = run_pipeline(sandbox, UNLIMITED_CLIENT, wrapper=wrapper)
    print(f"{result['activity_rows']} activities; extract {result['extract_s']:.2f} s, normalize "
          f"{result['normalize_s']:.2f} s, load {result['load_s']:.2f} s (slowed by sampling); raw samples: {raw}")
    print_summary(summarize(list(read_samples(raw))))


if __name__ == "__main__":
    main()
