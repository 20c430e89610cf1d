"""Time slices: a long chain hands the later half of its range to a new chain that runs alongside.

Every run here reads a sandbox whose calls take 50 ms, with the thresholds that make a chain
worth slicing lowered, so that small data opens many slices; the loaded tables must still
hold exactly the sandbox's ground truth, whether the runs finish or stop half way.
"""

from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator

import pytest

from marketo_source import settings
from marketo_source.errors import MarketoConfigurationError
from marketo_source.sandbox import DataSpec, Fault, Limits, MarketoSandbox
from marketo_source.sandbox.paging import TokenOrder

from tests.helpers import assert_everything_matches, source_for

SLICED = dict(time_slices=True, time_slice_overlap_minutes=30, late_commit_minutes=30, max_concurrency=10)


def slow_sandbox_of(token_order: TokenOrder) -> MarketoSandbox:
    """12,000 activities over the 12 days up to now, scanned 200 log positions per call, 50 ms per
    answer: slow enough that the calls, not the consumers, hold the runs back.

    The log runs up to now, as a live instance's does, so that activities the sandbox records
    late (dated up to an hour before now) lie behind what earlier runs have read.
    """
    span_start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=12)
    data = DataSpec(seed=11, leads=120, activities=12_000, days=12,
                    start_date=span_start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return MarketoSandbox(data=data, block_size=200, limits=Limits(calls_per_window=None, latency_s=0.05),
                          token_order=token_order)


@pytest.fixture
def slow_sandbox() -> Iterator[MarketoSandbox]:
    with slow_sandbox_of("commit") as sandbox:
        yield sandbox


@pytest.fixture
def eager_slicing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chains worth slicing after a few pages, as chains of thousands of pages are in production."""
    monkeypatch.setattr(settings, "SLICE_MIN_PAGES", 4)
    monkeypatch.setattr(settings, "SLICE_MIN_SECONDS", 0.05)


def _last_runs(pipeline: Any) -> Dict[str, Dict[str, Any]]:
    resources = pipeline.state["sources"]["marketo"]["resources"]
    return {name: state["last_run"] for name, state in resources.items() if "last_run" in state}


def _page_calls(sandbox: MarketoSandbox) -> int:
    calls = sandbox.stats()["calls"]
    return sum(calls.get(endpoint, 0) for endpoint in ("activities", "lead_changes", "deleted_leads", "paging_token"))


def test_sliced_run_loads_exactly_the_ground_truth_for_a_few_more_calls(
    slow_sandbox: MarketoSandbox, make_pipeline: Any, eager_slicing: None
) -> None:
    plain = make_pipeline("plain")
    plain.run(source_for(slow_sandbox, max_concurrency=10))
    plain_calls = _page_calls(slow_sandbox)
    assert all(run["time_slices"] == 0 for run in _last_runs(plain).values()), "slices opened without time_slices"

    slow_sandbox.reset_stats()
    sliced = make_pipeline("sliced")
    sliced.run(source_for(slow_sandbox, **SLICED))
    sliced_calls = _page_calls(slow_sandbox)
    slices = sum(run["time_slices"] for run in _last_runs(sliced).values())

    assert slices >= 3, "the thresholds were lowered so that slices open; none did"
    assert_everything_matches(sliced, slow_sandbox)
    # Each slice costs its paging token and the pages of its 30-minute overlap (one here).
    assert plain_calls < sliced_calls <= plain_calls + 3 * slices
    assert not any("slices" in cursor for cursor in _cursors(sliced)), "a finished run left a slice open"


def test_runs_stopped_mid_slice_resume_every_slice(
    slow_sandbox: MarketoSandbox, make_pipeline: Any, eager_slicing: None
) -> None:
    pipeline = make_pipeline()
    open_slices_seen = 0
    for _ in range(40):
        pipeline.run(source_for(slow_sandbox, max_pages_per_run=25, **SLICED))
        open_slices_seen += sum(len(cursor.get("slices", ())) for cursor in _cursors(pipeline))
        if not any(run["stopped"] for run in _last_runs(pipeline).values()):
            break
    else:
        pytest.fail("40 bounded runs did not finish reading")
    assert open_slices_seen > 0, "no run stopped while a slice was open: the resume of slices went untested"
    assert_everything_matches(pipeline, slow_sandbox)


@pytest.mark.parametrize("token_order", ["commit", "date"])
def test_sliced_runs_stopped_half_way_while_late_commits_arrive_end_exact(
    token_order: TokenOrder, make_pipeline: Any, eager_slicing: None
) -> None:
    """Slices stay exact for activities recorded up to the late-commit window late (an hour for
    Send Email and Email Delivered here), whichever way Marketo's tokens work."""
    with slow_sandbox_of(token_order) as sandbox:
        pipeline = make_pipeline()
        sliced = dict(time_slices=True, max_concurrency=10)  # the default overlap and late-commit window
        slices = 0
        for _ in range(40):
            pipeline.run(source_for(sandbox, max_pages_per_run=40, **sliced))
            slices += sum(report["time_slices"] for report in _last_runs(pipeline).values())
            sandbox.add_activities(new=20, late=40)
            if not any(report["stopped"] for report in _last_runs(pipeline).values()):
                break
        else:
            pytest.fail("40 bounded runs did not finish reading")
        pipeline.run(source_for(sandbox, **sliced))
        assert slices > 0, "the thresholds were lowered so that slices open; none did"
        assert_everything_matches(pipeline, sandbox)


def test_sliced_runs_through_faults_and_a_lasting_failure_lose_nothing(
    slow_sandbox: MarketoSandbox, make_pipeline: Any, eager_slicing: None
) -> None:
    pipeline = make_pipeline()
    slow_sandbox.set_faults([
        Fault("611", calls=tuple(range(60, 90)), endpoint="activities"),  # outlasts the retries: activities stop
        Fault("http502", probability=0.05),
        Fault("reset", probability=0.03),
    ])
    pipeline.run(source_for(slow_sandbox, max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.02, **SLICED))
    assert _last_runs(pipeline)["activities"]["stopped"] == "error"
    assert slow_sandbox.stats()["faults_injected"].get("reset", 0) > 0

    slow_sandbox.set_faults([Fault("http502", probability=0.05)])
    pipeline.run(source_for(slow_sandbox, backoff_base_s=0.01, backoff_max_s=0.02, **SLICED))

    assert not any(run["stopped"] for run in _last_runs(pipeline).values())
    assert sum(run["time_slices"] for run in _last_runs(pipeline).values()) > 0
    assert_everything_matches(pipeline, slow_sandbox)


def test_a_run_after_a_sliced_backfill_reads_only_what_is_new(
    slow_sandbox: MarketoSandbox, make_pipeline: Any, eager_slicing: None
) -> None:
    pipeline = make_pipeline()
    pipeline.run(source_for(slow_sandbox, **SLICED))
    added = slow_sandbox.add_activities(new=400)

    pipeline.run(source_for(slow_sandbox, **SLICED))

    assert_everything_matches(pipeline, slow_sandbox)
    runs = [
        run for name, run in _last_runs(pipeline).items() if name in ("activities", "lead_changes", "deleted_leads")
    ]
    assert sum(run["records"] - run["rows_reread"] for run in runs) == len(added)


@pytest.mark.parametrize(
    ("settings_given", "named"),
    [
        (dict(time_slices="yes"), "time_slices: 'yes' is not true or false"),
        (
            dict(time_slices=True, time_slice_overlap_minutes=0),
            "time_slice_overlap_minutes: must be more than 0 with time_slices",
        ),
        (
            dict(time_slices=True, time_slice_overlap_minutes="soon"),
            "time_slice_overlap_minutes: 'soon' is not a number",
        ),
        (
            dict(time_slices=True, time_slice_overlap_minutes=30),
            "time_slice_overlap_minutes: 30 is less than late_commit_minutes",
        ),
    ],
)
def test_bad_time_slice_settings_are_named(settings_given: Dict[str, Any], named: str) -> None:
    with (MarketoSandbox(data=DataSpec(seed=1, leads=5, activities=10, days=2)) as sandbox,
          pytest.raises(MarketoConfigurationError, match=named)):
        source_for(sandbox, **settings_given)


def _cursors(pipeline: Any) -> Iterator[Dict[str, Any]]:
    resources = pipeline.state["sources"]["marketo"]["resources"]
    for name in ("activities", "lead_changes", "deleted_leads"):
        for scope, saved in resources.get(name, {}).items():
            if scope == "last_run":
                continue
            if name == "activities":
                yield from saved.values()
            else:
                yield saved
