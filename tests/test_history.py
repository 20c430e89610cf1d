"""The seam for a second reader of history: a stand-in reader hands REST paging a position.

The stand-in reads a scope's history from the sandbox's ground truth (as Marketo's Bulk
Activity Extract would from its files), up to a point it chooses; REST paging reads from there
on. Together they must read every record exactly once, in the same tables, whether the reader
finishes in one run or goes on over several.
"""

from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List, Optional

import dlt
import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from marketo_source import marketo_resources
from marketo_source.config import MarketoSourceConfiguration
from marketo_source.history import HistoryBatch
from marketo_source.sandbox import DataSpec, MarketoSandbox
from marketo_source.settings import DEDICATED_STREAM_TYPE_IDS
from marketo_source.state import HistoryClaim

from tests.expected import utc
from tests.helpers import FAST_CLIENT, assert_every_table_matches, recent_start_date, source_for

HANDED_OVER_DAYS_AGO = 2
"""The stand-in reads all but the last two days; REST paging reads those."""


class StandInReader:
    """Reads the history of `activities` and `lead_changes` from the sandbox's records, in batches;
    like Marketo's bulk export it cannot read Delete Lead, so `deleted_leads` stays with REST."""

    name = "stand-in"
    idle_s = 0.01

    def __init__(self, sandbox: MarketoSandbox, batch_size: int = 250, batches_per_run: Optional[int] = None) -> None:
        self.sandbox = sandbox
        self.batch_size = batch_size
        self.batches_per_run = batches_per_run
        self.handed: List[str] = []
        """The marketoGUID of every record handed over, over all runs."""
        self.reads = 0

    def claim(self, stream: str, scope: str, start: datetime, latest_until: datetime) -> Optional[datetime]:
        if stream == "deleted_leads":
            return None
        until = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=HANDED_OVER_DAYS_AGO)
        return min(until, latest_until)

    def read(self, stream: str, scope: str, claim: HistoryClaim) -> Iterator[Optional[HistoryBatch]]:
        self.reads += 1
        records = history_of(self.sandbox.ground_truth(), stream, claim.start, claim.until)
        offset = int(claim.progress.get("offset", 0))
        for batch, at in enumerate(range(offset, len(records), self.batch_size)):
            if self.batches_per_run is not None and batch >= self.batches_per_run:
                return  # stopped before the end: the next run goes on from the saved offset
            yield None  # nothing ready yet: REST pages go first
            chunk = records[at : at + self.batch_size]
            self.handed += [record["marketoGUID"] for record in chunk]
            end = at + len(chunk)
            yield HistoryBatch(chunk, progress={"offset": end}, done=end == len(records))
        if offset >= len(records):
            yield HistoryBatch([], progress={"offset": offset}, done=True)


def history_of(truth: Dict[str, Any], stream: str, start: datetime, until: datetime) -> List[Dict[str, Any]]:
    """The stream's records dated from `start` to before `until`, as REST renders them."""
    records = truth["lead_changes"] if stream == "lead_changes" else [
        r for r in truth["activities"] if r["activityTypeId"] not in DEDICATED_STREAM_TYPE_IDS
    ]
    return [r for r in records if start <= utc(r["activityDate"]) < until]


def source_with(reader: StandInReader, sandbox: MarketoSandbox) -> Any:
    config = MarketoSourceConfiguration(
        base_url=sandbox.base_url, client_id=sandbox.client_id, client_secret=sandbox.client_secret,
        start_date=recent_start_date(days=8), **FAST_CLIENT,
    )

    @dlt.source(name="marketo", max_table_nesting=0)
    def marketo() -> Any:
        return marketo_resources(config, history=reader)

    return marketo()


def sandbox_up_to_now() -> MarketoSandbox:
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=7)
    return MarketoSandbox(data=DataSpec(seed=31, leads=60, activities=3000, days=7,
                                        start_date=start.strftime("%Y-%m-%dT%H:%M:%SZ")), block_size=300)


def last_runs(pipeline: Any) -> Dict[str, Dict[str, Any]]:
    resources = pipeline.state["sources"]["marketo"]["resources"]
    return {name: state["last_run"] for name, state in resources.items() if "last_run" in state}


def test_rest_paging_reads_from_where_the_other_reader_hands_over_and_nothing_twice(make_pipeline: Any) -> None:
    with sandbox_up_to_now() as sandbox:
        reader = StandInReader(sandbox)
        pipeline = make_pipeline()
        pipeline.run(source_with(reader, sandbox))

        assert_every_table_matches(pipeline, sandbox)
        truth = sandbox.ground_truth()
        state = pipeline.state["sources"]["marketo"]["resources"]
        for stream in ("activities", "lead_changes"):
            claim = HistoryClaim.from_json(state[stream]["history"]["all"])
            handed = history_of(truth, stream, claim.start, claim.until)
            assert claim.done and claim.progress == {"offset": len(handed)} and handed
            # REST read the rest, from the hand-over on; each record came by one road only.
            everything = history_of(truth, stream, claim.start, datetime.now(timezone.utc) + timedelta(days=1))
            assert last_runs(pipeline)[stream]["records"] == len(everything)
        assert len(reader.handed) == len(set(reader.handed))
        assert "history" not in state["deleted_leads"]

        sandbox.add_activities(new=30, late=30)
        pipeline.run(source_with(reader, sandbox))
        assert_every_table_matches(pipeline, sandbox)
        assert reader.reads == 2, "a claim once done is not read again"


def test_a_reader_that_stops_half_way_goes_on_from_its_progress_the_next_run(make_pipeline: Any) -> None:
    with sandbox_up_to_now() as sandbox:
        reader = StandInReader(sandbox, batch_size=200, batches_per_run=2)
        pipeline = make_pipeline()
        complete_until = []
        for _ in range(20):
            pipeline.run(source_with(reader, sandbox))
            complete_until.append(last_runs(pipeline)["activities"]["position_to"])
            sandbox.add_activities(new=10, late=10)
            resources = pipeline.state["sources"]["marketo"]["resources"]
            claims = [resources[s]["history"]["all"] for s in ("activities", "lead_changes")]
            if all(claim["done"] for claim in claims):
                break
        assert len(complete_until) > 3, "the reader was meant to need several runs"
        # Until the reader is done, the stream is complete only up to where its history starts.
        assert complete_until[0] == recent_start_date(days=8).replace("Z", "+00:00")
        pipeline.run(source_with(reader, sandbox))
        assert_every_table_matches(pipeline, sandbox)
        assert len(reader.handed) == len(set(reader.handed)), "a batch was handed over twice"


def test_history_another_reader_claimed_is_not_left_unread_when_the_reader_is_not_given(make_pipeline: Any) -> None:
    with sandbox_up_to_now() as sandbox:
        pipeline = make_pipeline()
        pipeline.run(source_with(StandInReader(sandbox, batches_per_run=1), sandbox))
        with pytest.raises(PipelineStepFailed, match="is being read by stand-in, which this source was not given"):
            pipeline.run(source_for(sandbox, start_date=recent_start_date(days=8)))
