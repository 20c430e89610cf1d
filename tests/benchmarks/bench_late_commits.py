"""What reading late commits again costs: calls per run on an hourly and a daily schedule.

Run from the repository root (not part of the pytest run), about 5 minutes:

    .venv/bin/python -m tests.benchmarks.bench_late_commits
    .venv/bin/python -m tests.benchmarks.bench_late_commits --per-day 22000 --hours 4 --days 2

A sandbox in this process holds a day of history and keeps recording activities at a steady rate
(`--per-day`, default 222,000: 20 million in Marketo's 90 days). Its activities are dated on a
simulated timeline that ends in the past, so that simulated hours pass between runs that are
seconds apart: runs restart a window before the newest activity read (the source's bound for a
Marketo whose clock lies behind this machine's), which on a live instance is where the previous
run began. After each simulated hour (or day) one pipeline per `late_commit_minutes` of
`--windows` (default 60, the default, 5 and 0: resume from the saved tokens) reads the same
sandbox. The table gives each one's calls per run by endpoint, the calls and rows the run report
counts as read again, and each window's extra calls against 0, a day, as a share of Marketo's
default 50,000-call quota.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List

import dlt

from marketo_source import duckdb_destination, marketo_source
from marketo_source.sandbox import DataSpec, Limits, MarketoSandbox
from marketo_source.settings import DEFAULT_DAILY_QUOTA

ENDPOINTS = ("activities", "lead_changes", "deleted_leads", "paging_token")
PAGED_STREAMS = ("activities", "lead_changes", "deleted_leads")


@dataclass
class Schedule:
    name: str
    step: timedelta
    runs: int


def record(sandbox: MarketoSandbox, count: int, dated_from: datetime, span: timedelta) -> None:
    """Records `count` activities dated evenly over `span` from `dated_from` (a minute at a time)."""
    minutes = max(1, int(span.total_seconds() // 60))
    for minute in range(minutes):
        share = count * (minute + 1) // minutes - count * minute // minutes
        if share:
            date = dated_from + timedelta(minutes=minute)
            sandbox.add_activities(late=share, lateness_s=max(0.0, time.time() - date.timestamp()))


def run_once(sandbox: MarketoSandbox, pipeline: dlt.Pipeline, start: str, minutes: int) -> Dict[str, Any]:
    """One run of one pipeline; its calls per endpoint (from the sandbox) and its run reports."""
    sandbox.reset_stats()
    pipeline.run(marketo_source(
        base_url=sandbox.base_url, client_id=sandbox.client_id, client_secret=sandbox.client_secret,
        start_date=start, late_commit_minutes=minutes,
        rate_limit_calls=1_000_000, rate_limit_period_s=1.0, max_concurrency=5,
    ))
    calls = sandbox.stats()["calls"]
    reports = pipeline.state["sources"]["marketo"]["resources"]
    return {
        "calls": {endpoint: calls.get(endpoint, 0) for endpoint in ENDPOINTS},
        "reread_calls": sum(reports[s]["last_run"]["reread_calls"] for s in PAGED_STREAMS),
        "rows_reread": sum(reports[s]["last_run"]["rows_reread"] for s in PAGED_STREAMS),
        "records": sum(reports[s]["last_run"]["records"] for s in PAGED_STREAMS),
    }


def measure(
    schedule: Schedule, windows: List[int], per_day: int, block_size: int, workdir: Path
) -> Dict[int, List[Dict[str, Any]]]:
    """Runs one pipeline per window after each simulated step; their figures per run, the backfill left out."""
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    timeline_end = now - timedelta(days=1)
    first = timeline_end - schedule.runs * schedule.step
    history = DataSpec(seed=5, leads=5000, activities=per_day, days=1,
                       start_date=(first - timedelta(days=1)).isoformat(), custom_types=True)
    start = (first - timedelta(days=1)).isoformat()
    results: Dict[int, List[Dict[str, Any]]] = {minutes: [] for minutes in windows}
    with MarketoSandbox(data=history, block_size=block_size, limits=Limits(calls_per_window=None)) as sandbox:
        pipelines = {
            minutes: dlt.pipeline(pipeline_name=f"late_{schedule.name}_{minutes}", pipelines_dir=str(workdir),
                                  destination=duckdb_destination(str(workdir / f"{schedule.name}_{minutes}.duckdb")),
                                  dataset_name="marketo")
            for minutes in windows
        }
        for minutes, pipeline in pipelines.items():
            run_once(sandbox, pipeline, start, minutes)  # the backfill
        per_step = round(per_day * schedule.step / timedelta(days=1))
        for step in range(schedule.runs):
            record(sandbox, per_step, first + step * schedule.step, schedule.step)
            for minutes, pipeline in pipelines.items():
                results[minutes].append(run_once(sandbox, pipeline, start, minutes))
            calls = ", ".join(
                f"{minutes} min: {sum(results[minutes][-1]['calls'].values())} calls" for minutes in windows
            )
            print(f"  {schedule.name} step {step + 1}/{schedule.runs}: {calls}", flush=True)
    return results


def summary(schedule: Schedule, results: Dict[int, List[Dict[str, Any]]]) -> List[str]:
    runs_a_day = timedelta(days=1) / schedule.step
    lines = [f"{schedule.name} ({runs_a_day:g} runs a day), median of {schedule.runs} runs after the backfill:",
             f"  {'':<20}{'activities':>11}{'leadchanges':>12}{'deleted':>9}{'token':>7}{'total':>7}"
             f"{'reread calls':>14}{'rows reread':>13}{'records':>9}"]
    totals = {}
    for minutes, runs in results.items():
        median = {e: statistics.median(r["calls"][e] for r in runs) for e in ENDPOINTS}
        totals[minutes] = sum(median.values())
        name = f"window {minutes} min" if minutes else "no window (tokens)"
        lines.append(
            f"  {name:<20}{median['activities']:>11g}{median['lead_changes']:>12g}{median['deleted_leads']:>9g}"
            f"{median['paging_token']:>7g}{totals[minutes]:>7g}"
            f"{statistics.median(r['reread_calls'] for r in runs):>14g}"
            f"{statistics.median(r['rows_reread'] for r in runs):>13g}"
            f"{statistics.median(r['records'] for r in runs):>9g}"
        )
    for minutes in (m for m in results if m and 0 in results):
        extra = totals[minutes] - totals[0]
        lines.append(
            f"  window {minutes} min: {extra:g} calls a run more than none (+{100 * extra / totals[0]:.0f} %), "
            f"{extra * runs_a_day:g} a day = {100 * extra * runs_a_day / DEFAULT_DAILY_QUOTA:.2f} % of the "
            f"default {DEFAULT_DAILY_QUOTA:,}-call daily quota"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-day", type=int, default=222_000, help="activities recorded a day (default 222,000)")
    parser.add_argument("--hours", type=int, default=6, help="hourly runs measured (default 6)")
    parser.add_argument("--days", type=int, default=3, help="daily runs measured (default 3)")
    parser.add_argument("--windows", default="60,5,0", help="late_commit_minutes to compare (default 60,5,0)")
    parser.add_argument("--block-size", type=int, default=1000,
                        help="log positions the sandbox scans per call (Marketo's is not documented; default 1000)")
    args = parser.parse_args()
    schedules = [Schedule("hourly", timedelta(hours=1), args.hours), Schedule("daily", timedelta(days=1), args.days)]
    lines = [f"late-commit window cost: {args.per_day:,} activities a day, sandbox block size {args.block_size}"]
    with tempfile.TemporaryDirectory() as workdir:
        for schedule in schedules:
            if schedule.runs:
                windows = [int(minutes) for minutes in args.windows.split(",")]
                lines += summary(schedule, measure(schedule, windows, args.per_day, args.block_size, Path(workdir)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
