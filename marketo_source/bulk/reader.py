"""The activities stream's history read through Bulk Activity Extract (a `history.HistoryReader`).

With `backfill = "bulk"` (or `"auto"` on a long history) the reader claims the activities of the
unfiltered scope from the first run's start up to the hand-over point; REST paging reads from
there on, in the same run and in every later one. The reader makes the calls the jobs' plan asks
for (`jobs`, `plan`, `quota`): it creates and enqueues the jobs of the windows, reads each job's
status at most once per `bulk_poll_interval_s`, downloads and checks each completed file
(`download`) and reads it into the activity tables (`csv_file`), keeping only the rows dated
before the hand-over point, which are the reader's (those at or after it are REST paging's).

The jobs cover createdAt up to the hand-over point plus the late-commit window: Marketo does not
document whether createdAt is an activity's activityDate or the time it recorded the activity,
and under either reading every activity dated before the hand-over point is then in some file.

The reader never waits: between two things to do it yields None, so that the stream hands REST
pages on meanwhile. Progress (`jobs.Progress`) is saved in the claim whenever it changes, so a run
that ends with jobs queued or processing leaves them to the next run, which adopts them. dlt saves
the claim only with a load package, so the claim and each job are also written to a journal in
the pipeline's working folder (`journal`) as they come, and a run that follows a killed one adopts
the killed run's jobs from there.
"""

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Generator, Iterator, List, Mapping, Optional, Tuple

import pyarrow.compute as pc

from marketo_source import settings
from marketo_source.budget import RunBudget, StopReason, stop_reason_for
from marketo_source.bulk import quota
from marketo_source.bulk.csv_file import read_export
from marketo_source.bulk.download import ExportFile, download_export
from marketo_source.bulk.jobs import AT_MARKETO, PLANNED_AGAIN, WAITING, Job, Progress, Stage, enqueue_slots
from marketo_source.bulk.journal import ClaimKey, Journal, merged
from marketo_source.bulk.plan import Window
from marketo_source.catalog import Catalog
from marketo_source.client import MarketoClient
from marketo_source.errors import (
    MarketoAuthError,
    MarketoBulkFileError,
    MarketoBulkFileGone,
    MarketoConfigurationError,
    MarketoError,
)
from marketo_source.history import HistoryBatch
from marketo_source.options import ReadOptions
from marketo_source.state import HistoryClaim, LastRun
from marketo_source.tables import ActivityTables

logger = logging.getLogger("marketo_source")

EXPORT_PATH = "/bulk/v1/activities/export"
JOBS_PATH = EXPORT_PATH + ".json"
CREATE_PATH = EXPORT_PATH + "/create.json"
JOB_PATH = EXPORT_PATH + "/{export_id}/{action}.json"
REPORT_STREAM = "activities_bulk"
"""The stream name of the bulk side's row in `marketo_run_reports`."""
MIN_HISTORY = {"bulk": timedelta(days=1), "auto": timedelta(days=7)}
"""How long a history must be for bulk export to read it: below, REST paging's few pages cost less
than a job's calls and waits."""
REFUSED_CODES = frozenset({"603", "1035"})
"""Marketo's refusals of Bulk Extract itself: access denied (the API user's role lacks "Read-Only
Activity") and unsupported filter type."""
MAX_FILE_ATTEMPTS = 3
"""Downloads of one file that did not match its job before the job is created again."""
MAX_EXPORTS_PER_WINDOW = 3
"""Exports of one window that may fail in a run before the bulk side stops for the run."""
_LIST_BATCH = 300
_DELIVERING = WAITING | {Stage.COMPLETED}
"""Stages of a job that delivers a file without another export call."""


@dataclass
class BulkReport:
    """What the bulk side did in a run: its row of `marketo_run_reports`."""

    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    position_from: Optional[datetime] = None
    calls_from: int = 0
    """Bulk calls the client had made when the bulk side began."""
    jobs_created: int = 0
    jobs_adopted: int = 0
    jobs_recreated: int = 0
    bytes: int = 0
    records: int = 0
    set_aside: int = 0
    wait_s: float = 0.0
    """Seconds during which a job was queued or processing at Marketo."""
    stopped: Optional[StopReason] = None

    def row(self, calls: int, position_to: Optional[datetime]) -> Dict[str, Any]:
        last = LastRun(
            stream=REPORT_STREAM, started_at=self.started_at, ended_at=datetime.now(timezone.utc),
            records=self.records, rows_loaded=self.records - self.set_aside, rows_set_aside=self.set_aside,
            calls=calls, position_from=self.position_from, position_to=position_to,
            stopped=None if self.stopped is None else self.stopped.kind,
            warnings=None if self.stopped is None else f"stopped early: {self.stopped.message}",
        )
        return {**last.row(), "bulk_jobs_created": self.jobs_created, "bulk_jobs_adopted": self.jobs_adopted,
                "bulk_jobs_recreated": self.jobs_recreated, "bulk_bytes": self.bytes,
                "bulk_wait_s": round(self.wait_s, 3)}


class _Stop(Exception):
    """Ends the bulk side for this run; REST paging goes on."""

    def __init__(self, reason: StopReason) -> None:
        super().__init__(reason.message)
        self.reason = reason

    @classmethod
    def or_raise(cls, error: MarketoError) -> "_Stop":
        """The stop a lasting failure or the daily call quota calls for (see `budget.stop_reason_for`);
        any other error is raised again, for the run to fail."""
        reason = stop_reason_for(error)
        if reason is None:
            raise error
        return cls(reason)


class BulkHistoryReader:
    """Reads the activities stream's history through Bulk Activity Extract (see the module).

    Args:
        client: The run's client: bulk calls count in the same rate limit and daily quota.
        catalog: The instance's activity types.
        options: What the source reads (the types, the filters, the late-commit window).
        mode: `backfill`: "bulk" or "auto".
        poll_interval_s: `bulk_poll_interval_s`.
        daily_mb_limit: `bulk_daily_mb_limit`.
        budget: The run's bounds; the bulk side stops with the run.
        reports: Where the bulk side's row of `marketo_run_reports` goes when it ends.
    """

    name = "bulk"

    def __init__(
        self, client: MarketoClient, catalog: Catalog, options: ReadOptions, mode: str, poll_interval_s: float,
        daily_mb_limit: float, budget: RunBudget, reports: List[Dict[str, Any]],
    ) -> None:
        self.client = client
        self.catalog = catalog
        self.options = options
        self.mode = mode
        self.interval = timedelta(seconds=poll_interval_s)
        # Between polls there is nothing to do once REST paging has ended: wake a few times per interval.
        self.idle_s = min(poll_interval_s / 4, 1.0)
        self.daily_mb_limit = daily_mb_limit
        self.budget = budget
        self.reports = reports
        self._begun: Dict[Tuple[str, str], Tuple[Progress, BulkReport]] = {}
        """The claims of this run, with the jobs created as they were claimed."""
        self._listed: List[Dict[str, Any]] = []
        self._listed_at: Optional[datetime] = None
        self._failures: Dict[Window, int] = {}
        """Exports per window that could not deliver, this run."""
        self._bad_files: Dict[str, int] = {}
        """Downloads per export that did not match its job."""
        self._last_saved: Optional[Dict[str, Any]] = None
        """The progress last handed over to be saved in the claim."""
        self._pause_message: Optional[str] = None
        self._enqueue_refused_at: Optional[datetime] = None
        """When Marketo last answered that its queue is full."""
        self._journal: Optional[Journal] = None

    # -- HistoryReader ----------------------------------------------------------------------

    def claim(self, stream: str, scope: str, start: datetime, latest_until: datetime) -> Optional[datetime]:
        """Claims [start, latest_until) of the unfiltered activities when it is long enough (`MIN_HISTORY`).

        The first job is created here: a Marketo that refuses Bulk Extract (603, 1035) leaves the
        history to REST paging with `auto`, and is a configuration error with `bulk`. A claim the
        journal holds from a run that did not end is taken as it was, hand-over point included.
        """
        if stream != "activities":
            return None  # deleted leads: Marketo cannot export Delete Lead; lead changes: REST paging
        if self.options.list_id is not None or self.options.lead_ids:
            logger.info("backfill: bulk export takes no lead or list filter; REST paging reads %s", scope)
            return None
        unexported = set(self._type_ids()) & settings.BULK_UNSUPPORTED_TYPE_IDS
        if unexported:
            # Every cursor of the scope is handed over, and Marketo cannot export these types.
            logger.info("backfill: bulk export cannot read types %s; REST paging reads %s", sorted(unexported), scope)
            return None
        key = self._key(stream, scope, start)
        entry = self.journal.find(key)
        if entry is not None and entry.until <= latest_until:
            # A killed run claimed this history: its hand-over point keeps its jobs' windows.
            logger.info("backfill: bulk export goes on with the claim of a run that did not end, up to %s",
                        entry.until.isoformat())
            return entry.until
        if latest_until - start <= MIN_HISTORY[self.mode]:
            logger.info("backfill: the history from %s is %s or shorter; REST paging reads it",
                        start.isoformat(), MIN_HISTORY[self.mode])
            return None
        progress = self._begin(start, latest_until)
        if not progress.type_ids:
            return None
        report = BulkReport(position_from=start, calls_from=self._bulk_calls())
        journaled = _Journaled(self.journal, key, latest_until)
        journaled.note(progress)
        try:
            progress = self._plan_and_create(progress, report, journaled)
        except _Stop as stop:  # a run bound or a lasting failure: the jobs are created by the reads to come
            logger.warning("%s: no job created yet: %s", REPORT_STREAM, stop.reason.message)
        except MarketoError as error:
            if error.code not in REFUSED_CODES:
                raise
            self.journal.forget(key)  # nothing was created: the next run asks Marketo again
            if self.mode == "bulk":
                raise MarketoConfigurationError.of(
                    "backfill", f"Marketo refused Bulk Activity Extract ({error})",
                    "give the API user's role the Read-Only Activity permission, or set backfill to auto or rest",
                ) from None
            logger.warning("backfill: Marketo refused Bulk Activity Extract (%s); REST paging reads the history",
                           error)
            return None
        logger.info("backfill: bulk export reads the activities from %s to %s; REST paging from there on",
                    start.isoformat(), latest_until.isoformat())
        self._begun[(stream, scope)] = progress, report
        return latest_until

    def read(self, stream: str, scope: str, claim: HistoryClaim) -> Iterator[Optional[HistoryBatch]]:
        """The claim's windows as their files are loaded; None while nothing is ready."""
        saved = bool(claim.progress)
        begun = self._begun.pop((stream, scope), None)
        if begun is not None and not saved:
            progress, report = begun
        else:
            progress = Progress.from_json(claim.progress) if saved else self._begin(claim.start, claim.until)
            report = BulkReport(position_from=_position(progress, claim), calls_from=self._bulk_calls())
        journaled = _Journaled(self.journal, self._key(stream, scope, claim.start), claim.until)
        entry = self.journal.find(journaled.key)
        if entry is not None and entry.until == claim.until:
            progress = merged(progress, entry.progress)
        adopt = any(job.export_id for job in progress.jobs) and begun is None
        work_dir = Path(tempfile.mkdtemp(prefix="marketo-bulk-"))
        try:
            yield from self._reading(progress, claim, report, adopt, journaled, work_dir)
        except _Stop as stop:
            report.stopped = stop.reason
            logger.warning("%s stopped for this run: %s", REPORT_STREAM, stop.reason.message)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
        latest = Progress.from_json(self._last_saved) if self._last_saved is not None else progress
        self.reports.append(report.row(self._bulk_calls() - report.calls_from, _position(latest, claim)))

    @property
    def journal(self) -> Journal:
        """The journal of the running pipeline, found when first needed: dlt activates it for extract."""
        if self._journal is None:
            self._journal = Journal.of_pipeline()
        return self._journal

    def _key(self, stream: str, scope: str, start: datetime) -> ClaimKey:
        return ClaimKey(stream, scope, start, self.client.base_url)

    def _begin(self, start: datetime, hand_over: datetime) -> Progress:
        """The progress of a claim not read yet: its windows and the stream's types."""
        return Progress.begin(start, hand_over, self.options.late_commit_window, self._type_ids())

    def _type_ids(self) -> List[int]:
        return list(self.catalog.activity_type_ids_to_read(self.options.activity_type_ids))

    # -- the loop ---------------------------------------------------------------------------

    def _reading(
        self, progress: Progress, claim: HistoryClaim, report: BulkReport, adopt: bool, journaled: "_Journaled",
        work_dir: Path,
    ) -> Iterator[Optional[HistoryBatch]]:
        tables = ActivityTables(self.catalog.activity_types)
        now = _now()
        if adopt:
            progress = self._adopted(progress, now, report)
        yield self._saved(progress, journaled)
        ticked = time.monotonic()
        while not progress.done:
            self._check_budget()
            now = _now()
            if any(job.stage in WAITING for job in progress.jobs):
                report.wait_s += time.monotonic() - ticked
            ticked = time.monotonic()
            before = progress
            if progress.may_export(now):
                progress = self._plan_and_create(progress, report, journaled)
            for job in progress.due(now, self.interval):
                progress = self._polled(progress, job, now, report)
            completed = next((job for job in progress.jobs if job.stage is Stage.COMPLETED), None)
            if completed is not None:
                progress = yield from self._loaded(progress, completed, claim, tables, report, work_dir)
            elif not progress.may_export(now) and not any(job.stage in _DELIVERING for job in progress.jobs):
                raise _Stop(StopReason("quota", self._pause_message or quota.quota_exceeded(now).message))
            if progress != before:
                yield self._saved(progress, journaled)
            else:
                yield None

    def _saved(self, progress: Progress, journaled: "_Journaled") -> HistoryBatch:
        """A batch without rows that saves `progress` in the claim (and in the journal first)."""
        journaled.note(progress)
        self._last_saved = progress.to_json()
        return HistoryBatch([], progress=self._last_saved, done=progress.done)

    def _adopted(self, progress: Progress, now: datetime, report: BulkReport) -> Progress:
        """The jobs an earlier run created, as Marketo shows them now."""
        listed = self._job_list(now, fresh=True)
        progress = progress.adopted(listed, now)
        for export_id in progress.unlisted(listed):
            try:
                status = self._call("GET", JOB_PATH.format(export_id=export_id, action="status"))
            except MarketoError as error:
                _raise_unless_lost(error)
                progress = self._recreated(progress, progress.job(export_id).lost(), export_id)
                continue
            progress = progress.with_job(progress.job(export_id).observed(status, now))
        report.jobs_adopted = sum(1 for job in progress.jobs if job.export_id and job.stage in AT_MARKETO)
        return progress

    def _plan_and_create(self, progress: Progress, report: BulkReport, journaled: "_Journaled") -> Progress:
        """Plans what today's budget allows, creates the planned jobs and enqueues the created ones.

        Each created job is journaled as soon as Marketo answered, before anything else may fail."""
        now = _now()
        if not _wants_queue(progress):
            return progress
        listed = self._job_list(now)
        spent = quota.spent_today(listed, now)
        remaining = quota.remaining(self.daily_mb_limit, spent)
        progress = progress.planned_more(remaining, quota.daily_limit_bytes(self.daily_mb_limit))
        if not any(job.stage is not Stage.LOADED for job in progress.jobs):
            # Nothing in flight and nothing fits what is left of today's budget.
            return self._paused(progress, quota.limit_reached(self.daily_mb_limit, spent, now))
        slots = self._slots(progress, listed)
        for job in progress.to_create(slots):
            try:
                answer = self._call("POST", CREATE_PATH, {
                    "format": "CSV", "filter": {"createdAt": job.window.created_at_filter(),
                                                "activityTypeIds": list(job.type_ids)}})
            except MarketoError as error:
                if not quota.is_quota_refusal(error.code, str(error)):
                    raise
                return self._paused(progress, quota.quota_exceeded(now))
            progress = progress.with_job(job.created(str(answer["exportId"])))
            journaled.note(progress)
            report.jobs_created += 1
            report.jobs_recreated += 1 if job.attempts else 0
        refused = self._enqueue_refused_at
        if refused is not None and now - refused < self.interval:
            return progress  # Marketo's queue was full: asked again a poll interval later
        for job in progress.to_enqueue(self._slots(progress, listed)):
            try:
                self._call("POST", JOB_PATH.format(export_id=job.export_id, action="enqueue"))
                progress = progress.with_job(job.enqueue_answered(now))
            except MarketoError as error:
                progress = progress.with_job(job.enqueue_answered(now, error.code, str(error)))
                if quota.is_quota_refusal(error.code, str(error)):
                    return self._paused(progress, quota.quota_exceeded(now))
                self._enqueue_refused_at = now  # the queue is full: the job stays created until a place frees
                break
        return progress

    def _paused(self, progress: Progress, pause: quota.ExportPause) -> Progress:
        if self._pause_message is None:
            logger.warning("%s: %s", REPORT_STREAM, pause.message)
        self._pause_message = pause.message
        return progress.paused(pause)

    def _slots(self, progress: Progress, listed: List[Dict[str, Any]]) -> int:
        """Places in Marketo's queue: the listed exports of others, and ours as they stand now."""
        ours = {job.export_id for job in progress.jobs if job.export_id}
        others = [entry for entry in listed if str(entry.get("exportId")) not in ours]
        return max(enqueue_slots(others) - sum(1 for job in progress.jobs if job.stage in WAITING), 0)

    def _polled(self, progress: Progress, job: Job, now: datetime, report: BulkReport) -> Progress:
        assert job.export_id is not None
        try:
            status = self._call("GET", JOB_PATH.format(export_id=job.export_id, action="status"))
        except MarketoError as error:
            _raise_unless_lost(error)
            return self._recreated(progress, job.lost(), job.export_id)
        observed = job.observed(status, now)
        if observed.stage in PLANNED_AGAIN:
            return self._recreated(progress, observed, job.export_id)
        return progress.with_job(observed)

    def _recreated(self, progress: Progress, ended: Job, export_id: str) -> Progress:
        """The progress with an export that cannot deliver planned again (counted when created).

        A window whose exports keep failing ends the bulk side for the run, so that a run does not
        spend the export quota over and over; the next run tries again."""
        failures = self._failures[ended.window] = self._failures.get(ended.window, 0) + 1
        if failures > MAX_EXPORTS_PER_WINDOW:
            raise _Stop(StopReason("error", f"the exports of {ended.window.to_json()} failed {failures} times this "
                                            f"run, the last: {ended.error}; the next run tries again"))
        logger.warning("%s: export %s of %s is created again: %s", REPORT_STREAM, export_id,
                       ended.window.to_json(), ended.error)
        return progress.with_job(ended)

    def _loaded(
        self, progress: Progress, job: Job, claim: HistoryClaim, tables: ActivityTables, report: BulkReport,
        work_dir: Path,
    ) -> Generator[Optional[HistoryBatch], None, Progress]:
        """Downloads a completed job's file and hands its rows over; returns the progress after it."""
        assert job.export_id is not None
        export = ExportFile.of_status({"exportId": job.export_id, "fileSize": job.file_size,
                                       "fileChecksum": job.file_checksum, "numberOfRecords": job.records})
        self._check_budget()
        try:
            path = download_export(self.client, export, work_dir / f"{job.export_id}.csv")
        except MarketoBulkFileGone:
            return self._recreated(progress, job.lost(), job.export_id)
        except MarketoBulkFileError as error:
            tries = self._bad_files[job.export_id] = self._bad_files.get(job.export_id, 0) + 1
            logger.warning("%s: %s", REPORT_STREAM, error)
            if tries < MAX_FILE_ATTEMPTS:
                return progress
            return self._recreated(progress, job.lost(), job.export_id)
        except MarketoError as error:
            raise _Stop.or_raise(error) from None
        report.bytes += export.size
        by_type: Dict[int, int] = {}
        for block in _blocks_or_stop(path, tables, claim):
            for table in block.tables.values():
                counts: Any = pc.value_counts(table["activity_type_id"].combine_chunks())
                for type_id, count in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(),
                                          strict=True):
                    by_type[type_id] = by_type.get(type_id, 0) + count
            rows = sum(table.num_rows for table in block.tables.values())
            report.records += rows + len(block.rejects)
            report.set_aside += len(block.rejects)
            yield HistoryBatch([], tables=dict(block.tables), rejects=block.rejects,
                               progress=self._last_saved or progress.to_json())
        path.unlink(missing_ok=True)
        return progress.learned(job, by_type).with_job(job.downloaded().loaded())

    # -- calls ------------------------------------------------------------------------------

    def _job_list(self, now: datetime, fresh: bool = False) -> List[Dict[str, Any]]:
        """Marketo's list of the API user's exports, read at most once per poll interval."""
        if fresh or self._listed_at is None or now - self._listed_at >= self.interval:
            listed: List[Dict[str, Any]] = []
            token: Optional[str] = None
            while True:
                answer = self._call("GET", JOBS_PATH, {"batchSize": _LIST_BATCH, "nextPageToken": token})
                page = answer.get("result") or []
                listed += page
                # Marketo documents no moreResult here: a short page or a token seen before ends the list too.
                token, seen = answer.get("nextPageToken"), token
                if not token or token == seen or len(page) < _LIST_BATCH:
                    break
            self._listed, self._listed_at = listed, now
        return self._listed

    def _call(self, method: str, path: str, body: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """A bulk call's first result (the job list's whole answer); the run's bounds end the bulk side."""
        self._check_budget()
        try:
            answer = self.client.get(path, body) if method == "GET" else self.client.post(path, body or {})
        except MarketoError as error:
            raise _Stop.or_raise(error) from None
        if path == JOBS_PATH:
            return answer
        result: Dict[str, Any] = (answer.get("result") or [{}])[0]
        return result

    def _check_budget(self) -> None:
        stopped = self.budget.spent(self.client.calls_made())
        if stopped is not None:
            raise _Stop(stopped)

    def _bulk_calls(self) -> int:
        return sum(count for path, count in self.client.calls.items() if path.startswith(settings.BULK_PREFIX))


def _blocks_or_stop(path: Path, tables: ActivityTables, claim: HistoryClaim) -> Iterator[Any]:
    """The file's blocks; a file that matched its job but cannot be read ends the bulk side for the run."""
    try:
        yield from read_export(path, tables, start=claim.start, until=claim.until)
    except MarketoBulkFileError as error:
        raise _Stop(StopReason("error", f"{error}; the next run reads the file again")) from None


def _raise_unless_lost(error: MarketoError) -> None:
    """Raises what a refused status read of a saved export means for every call; any other refusal
    (Marketo keeps a job's status 30 days and documents no code for one it no longer holds) means
    the export cannot deliver, and its window is exported again."""
    if isinstance(error, (MarketoAuthError, MarketoConfigurationError)):
        raise error


@dataclass(frozen=True)
class _Journaled:
    """Where a claim's progress is journaled."""

    journal: Journal
    key: ClaimKey
    until: datetime

    def note(self, progress: Progress) -> None:
        self.journal.record(self.key, self.until, progress, _now())


def _wants_queue(progress: Progress) -> bool:
    """Whether jobs wait to be planned, created or enqueued."""
    covered = {(job.window, t) for job in progress.jobs for t in job.type_ids}
    uncovered = any((window, t) not in covered for window in progress.windows[progress.committed:]
                    for t in progress.type_ids)
    return uncovered or any(job.stage in {Stage.PLANNED, Stage.CREATED} for job in progress.jobs)


def _position(progress: Progress, claim: HistoryClaim) -> datetime:
    """Where the claimed history is complete up to: its start, or the end of the committed windows."""
    committed = progress.committed_until
    return claim.start if committed is None else min(committed, claim.until)


def _now() -> datetime:
    return datetime.now(timezone.utc)
