"""Bulk Activity Extract jobs: their queue, their stages in scaled time, their files, the export quota, retention.

Stages follow Marketo's documentation: Created, then Queued (enqueue), Processing, Completed or Failed;
Cancelled at any point before the end. Jobs move by themselves in scaled time (`BulkSpec`): a queued job
may start `queue_s` after it was enqueued, once fewer than `max_processing` jobs are processing, and ends
`processing_s` after it started. Stages are worked out from these times whenever the jobs are looked at,
so the outcome does not depend on when a client polls.

Days pass only with `BulkExports.new_day()`: it starts a new export quota day and ages jobs, files and the
job list by one day, so tests reach retention limits without waiting.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import Any, Literal, Mapping, get_args

from .errors import ApiError, invalid
from .export_file import export_csv
from .generator import format_date
from .store import Store

CREATED = "Created"
QUEUED = "Queued"
PROCESSING = "Processing"
COMPLETED = "Completed"
FAILED = "Failed"
# Marketo's cancel example and the list's status filter spell it "Cancelled", its schema "Canceled".
CANCELLED = "Cancelled"
STATUSES = (CREATED, QUEUED, PROCESSING, COMPLETED, FAILED, CANCELLED)
ACTIVE = frozenset({QUEUED, PROCESSING})
FAILED_MESSAGE = "Export failed"

CreatedAtReading = Literal["activity_date", "recorded"]
CREATED_AT_READINGS: tuple[str, ...] = get_args(CreatedAtReading)


@dataclass(frozen=True)
class BulkSpec:
    """How Bulk Activity Extract jobs behave.

    Attributes:
        queue_s: Seconds a job waits after enqueue before it may start processing.
        processing_s: Seconds a job processes before it completes (or fails).
        status_interval_s: Stages that jobs reach by themselves (Processing, Completed, Failed) show in
            status and list answers only at multiples of this many seconds (Marketo: every 60 s).
        created_at: What the createdAt filter compares, which Marketo does not document: "activity_date"
            (the activity's activityDate) or "recorded" (when the instance recorded it; late commits are
            recorded after their activityDate).
        max_processing: Jobs processing at once (Marketo: 2).
        max_queued: Jobs queued, processing ones included (Marketo: 10).
        daily_export_bytes: Bytes of files completed per day after which create and enqueue answer 1029
            (Marketo: 500 MB); None disables the quota.
        file_retention_days: Days after completion that a file can be downloaded (Marketo: 7, or 10).
        status_retention_days: Days after completion (or creation, for jobs never run) that a job's status
            is kept (Marketo: 30).
        list_days: The job list shows jobs created this many days back (Marketo: 7).
        fail_jobs: Numbers of the jobs (1-based, in creation order) that end Failed instead of Completed.
        file_content_type: The Content-Type of a file's answer, which Marketo does not document (its
            OpenAPI declares every bulk answer application/json).
    """

    queue_s: float = 0.5
    processing_s: float = 1.0
    status_interval_s: float = 0.5
    created_at: CreatedAtReading = "activity_date"
    max_processing: int = 2
    max_queued: int = 10
    daily_export_bytes: int | None = 500 * 1024 * 1024
    file_retention_days: int = 7
    status_retention_days: int = 30
    list_days: int = 7
    fail_jobs: tuple[int, ...] = ()
    file_content_type: str = "text/csv;charset=UTF-8"

    def __post_init__(self) -> None:
        if self.created_at not in CREATED_AT_READINGS:
            raise ValueError(f"created_at must be one of {', '.join(CREATED_AT_READINGS)}, not {self.created_at!r}")
        if self.status_interval_s <= 0:
            raise ValueError(f"status_interval_s must be positive, not {self.status_interval_s}")


@dataclass(frozen=True)
class ExportRequest:
    """A validated create request."""

    start_ms: int
    end_ms: int
    type_ids: frozenset[int] | None
    fields: tuple[str, ...]
    header_names: Mapping[str, str]
    format: str = "CSV"


@dataclass
class ExportFile:
    """A completed job's file, fixed at completion; kept compressed, as files of big instances are large."""

    compressed: bytes
    size: int
    records: int
    checksum: str
    expired: bool = False

    @classmethod
    def of(cls, content: bytes, records: int) -> ExportFile:
        """The file holding `content`, with its size and checksum."""
        return cls(zlib.compress(content, 1), len(content), records, "sha256:" + hashlib.sha256(content).hexdigest())

    def content(self) -> bytes:
        """The file's bytes."""
        return zlib.decompress(self.compressed)


@dataclass
class Job:
    """One export job; the times are epoch seconds, None until reached."""

    export_id: str
    number: int
    request: ExportRequest
    created_at: float
    created_day: int
    fails: bool
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    cancelled_at: float | None = None
    finished_day: int | None = None
    file: ExportFile | None = None

    def status(self, at: float) -> str:
        """The job's stage at time `at`; enqueue and cancel show at once, the other stages from `at` on."""
        if self.cancelled_at is not None:
            return CANCELLED
        if self.finished_at is not None and self.finished_at <= at:
            return FAILED if self.fails else COMPLETED
        if self.started_at is not None and self.started_at <= at:
            return PROCESSING
        return QUEUED if self.queued_at is not None else CREATED

    def end(self) -> float:
        """When the job stops taking a processing slot (finish or cancel), infinity when neither is known."""
        ends = [t for t in (self.finished_at, self.cancelled_at) if t is not None]
        return min(ends) if ends else math.inf

    def render(self, at: float) -> dict[str, Any]:
        """The job as status, create, enqueue, cancel and list answers show it at time `at`."""
        status = self.status(at)
        shown: dict[str, Any] = {"exportId": self.export_id, "format": self.request.format, "status": status,
                                 "createdAt": _iso(self.created_at)}
        if self.queued_at is not None:
            shown["queuedAt"] = _iso(self.queued_at)
        if self.started_at is not None and self.started_at <= min(at, self.end()):
            shown["startedAt"] = _iso(self.started_at)
        if status in (COMPLETED, FAILED) and self.finished_at is not None:
            shown["finishedAt"] = _iso(self.finished_at)
        if status == COMPLETED and self.file is not None:
            shown |= {"numberOfRecords": self.file.records, "fileSize": self.file.size,
                      "fileChecksum": self.file.checksum}
        if status == FAILED:
            shown["errorMsg"] = FAILED_MESSAGE
        return shown


def _iso(epoch_s: float) -> str:
    return format_date(int(epoch_s * 1000), False)


class BulkExports:
    """Every export job of the instance, thread safe through one lock."""

    def __init__(self, store: Store, spec: BulkSpec, seed: int) -> None:
        self.store = store
        self.spec = spec
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.jobs: dict[str, Job] = {}
        self.day = 0

    # -- calls ---------------------------------------------------------------------------------

    def create(self, request: ExportRequest) -> dict[str, Any]:
        """Create a job (status Created).

        Raises:
            ApiError: 1029 when today's export quota is used up.
        """
        with self.lock:
            now = self._advance()
            self._check_quota()
            export_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
            number = len(self.jobs) + 1
            job = Job(export_id, number, request, now, self.day, number in self.spec.fail_jobs)
            self.jobs[export_id] = job
            return job.render(now)

    def enqueue(self, export_id: str) -> dict[str, Any]:
        """Queue a Created job.

        Raises:
            ApiError: 1029 for a job already queued, a full queue or a used-up export quota; 1003 for an
                unknown job or one that has ended.
        """
        with self.lock:
            now = self._advance()
            job = self._job(export_id)
            status = job.status(now)
            if status in ACTIVE:
                raise ApiError("1029", "Job already queued")
            if status != CREATED:
                raise invalid(f"Export job {export_id} is {status}; only a Created job can be enqueued")
            if sum(other.status(now) in ACTIVE for other in self.jobs.values()) >= self.spec.max_queued:
                raise ApiError("1029", "Too many jobs in queue")
            self._check_quota()
            job.queued_at = now
            return job.render(self._visible(now))

    def status(self, export_id: str) -> dict[str, Any]:
        """A job's status answer.

        Raises:
            ApiError: 1003 for an unknown job (or one whose status is no longer kept).
        """
        with self.lock:
            now = self._advance()
            return self._job(export_id).render(self._visible(now))

    def cancel(self, export_id: str) -> dict[str, Any]:
        """Cancel a job that has not ended.

        Raises:
            ApiError: 1003 for an unknown job or one that has ended.
        """
        with self.lock:
            now = self._advance()
            job = self._job(export_id)
            status = job.status(now)
            if status not in (CREATED, *ACTIVE):
                raise invalid(f"Export job {export_id} is {status} and cannot be cancelled")
            job.cancelled_at = now
            return job.render(self._visible(now))

    def file(self, export_id: str) -> bytes | None:
        """A Completed job's file; None when the job is unknown, not completed, or its file expired."""
        with self.lock:
            now = self._advance()
            job = self.jobs.get(export_id)
            if job is None or job.status(now) != COMPLETED or job.file is None or self._expired(job):
                return None
            file = job.file
        return file.content()  # decompressed outside the lock

    def listed(self, statuses: frozenset[str] | None) -> list[dict[str, Any]]:
        """The jobs created in the last `list_days` days, oldest first, optionally only those of some statuses."""
        with self.lock:
            visible = self._visible(self._advance())
            shown = (job.render(visible) for job in self.jobs.values()
                     if self.day - job.created_day < self.spec.list_days)
            return [job for job in shown if statuses is None or job["status"] in statuses]

    # -- admin ---------------------------------------------------------------------------------

    def new_day(self) -> None:
        """Start a new day: the export quota starts again; jobs, files and the list age by one day."""
        with self.lock:
            self._advance()
            self.day += 1
            kept = self.spec.status_retention_days
            self.jobs = {export_id: job for export_id, job in self.jobs.items()
                         if self.day - (job.finished_day if job.finished_day is not None else job.created_day) < kept}

    def expire_file(self, export_id: str) -> None:
        """Make a completed job's file gone now, as if its retention had passed.

        Raises:
            ValueError: When the job has no file (unknown, or not completed yet).
        """
        with self.lock:
            self._advance()
            job = self.jobs.get(export_id)
            if job is None or job.file is None:
                raise ValueError(f"export job {export_id!r} has no file to expire")
            job.file.expired = True

    def snapshot(self) -> list[dict[str, Any]]:
        """Every job kept, oldest first, with its true stage (not delayed by status_interval_s) and more."""
        with self.lock:
            now = self._advance()
            return [{**job.render(now), "number": job.number, "createdDay": job.created_day,
                     "finishedDay": job.finished_day, "fileExpired": job.file is not None and self._expired(job),
                     "filter": {"createdAt": [job.request.start_ms, job.request.end_ms],
                                "activityTypeIds": None if job.request.type_ids is None
                                else sorted(job.request.type_ids)}}
                    for job in self.jobs.values()]

    def export_bytes_today(self) -> int:
        """Bytes of the files completed today, which count against the export quota."""
        with self.lock:
            self._advance()
            return self._bytes_today()

    # -- the queue -----------------------------------------------------------------------------

    def _advance(self) -> float:
        """Start and finish jobs as scaled time has passed up to now; returns now. Called under the lock."""
        now = time.time()
        while (start := self._next_start()) is not None and start[1] <= now:
            job, started_at = start
            job.started_at, job.finished_at = started_at, started_at + self.spec.processing_s
        for job in self.jobs.values():
            if job.finished_at is not None and job.finished_at <= now and job.finished_day is None \
                    and job.cancelled_at is None:
                self._finish(job)
        return now

    def _next_start(self) -> tuple[Job, float] | None:
        """The next queued job to start and when it may start: FIFO, `queue_s` after enqueue, on a free slot."""
        waiting = [job for job in self.jobs.values()
                   if job.queued_at is not None and job.started_at is None and job.cancelled_at is None]
        if not waiting:
            return None
        job = min(waiting, key=lambda candidate: (candidate.queued_at or 0.0, candidate.number))
        started = [other for other in self.jobs.values() if other.started_at is not None]
        # Jobs start in queue order: never before the last start, so every started job has begun by then.
        earliest = max([(job.queued_at or 0.0) + self.spec.queue_s, *(other.started_at or 0.0 for other in started)])
        ends = sorted(end for other in started if (end := other.end()) > earliest)
        slots = self.spec.max_processing
        return job, earliest if len(ends) < slots else ends[len(ends) - slots]

    def _finish(self, job: Job) -> None:
        """Write a job's file: the activities that matched when it started processing."""
        job.finished_day = self.day
        if job.fails:
            return
        request = job.request
        activities = self.store.export_activities(
            (request.start_ms, request.end_ms), request.type_ids, self.spec.created_at == "recorded",
            int((job.started_at or 0.0) * 1000))
        job.file = ExportFile.of(export_csv(activities, request.fields, request.header_names), len(activities))

    # -- helpers -------------------------------------------------------------------------------

    def _visible(self, now: float) -> float:
        """The latest status update time at or before now."""
        interval = self.spec.status_interval_s
        return math.floor(now / interval) * interval

    def _job(self, export_id: str) -> Job:
        job = self.jobs.get(export_id)
        if job is None:
            raise invalid(f"Export job {export_id} not found")
        return job

    def _expired(self, job: Job) -> bool:
        assert job.file is not None and job.finished_day is not None
        return job.file.expired or self.day - job.finished_day >= self.spec.file_retention_days

    def _bytes_today(self) -> int:
        return sum(job.file.size for job in self.jobs.values()
                   if job.file is not None and job.finished_day == self.day)

    def _check_quota(self) -> None:
        quota = self.spec.daily_export_bytes
        if quota is not None and self._bytes_today() >= quota:
            raise ApiError("1029", "Export daily quota exceeded")

