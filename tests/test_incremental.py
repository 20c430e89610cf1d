"""Incremental details: one paging token per start time, and the lookback window."""

from typing import Any

from marketo_source.sandbox import MarketoSandbox

from tests.helpers import assert_everything_matches, source_for


def test_one_paging_token_serves_every_group_and_endpoint(sandbox: MarketoSandbox, make_pipeline: Any) -> None:
    pipeline = make_pipeline()
    pipeline.run(source_for(sandbox))
    calls = sandbox.stats()["calls"]
    assert calls["activities"] > 2, "several type groups should have been read"
    assert calls["lead_changes"] >= 1 and calls["deleted_leads"] >= 1
    assert calls["paging_token"] == 1

    sandbox.reset_stats()
    sandbox.add_activities(new=30)
    pipeline.run(source_for(sandbox))
    # Every chain restarts a late-commit window before the first run: one token serves them all.
    assert sandbox.stats()["calls"].get("paging_token", 0) == 1
    assert_everything_matches(pipeline, sandbox)

    sandbox.reset_stats()
    sandbox.add_activities(new=30)
    pipeline.run(source_for(sandbox, late_commit_minutes=0))
    assert sandbox.stats()["calls"].get("paging_token", 0) == 0, "without the window a run resumes from its tokens"
    assert_everything_matches(pipeline, sandbox)


def test_lookback_rereads_the_window_and_merges_the_overlap(sandbox: MarketoSandbox, make_pipeline: Any) -> None:
    pipeline = make_pipeline()
    pipeline.run(source_for(sandbox))
    sandbox.add_activities(new=40)
    sandbox.reset_stats()

    pipeline.run(source_for(sandbox, lookback_minutes=24 * 60))

    resources = pipeline.state["sources"]["marketo"]["resources"]
    reread = resources["activities"]["last_run"]["records"]
    assert reread > 40, "the lookback should have read the day before the saved position again"
    assert sandbox.stats()["calls"]["paging_token"] >= 1
    assert_everything_matches(pipeline, sandbox)  # and no duplicates
