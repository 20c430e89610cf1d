"""Bulk Activity Extract jobs and a claim's progress: declared types, and every change made to them.

A `Job` exports some activity types of one window (`plan`). It is planned, then created at
Marketo (it has an exportId), queued, processing, completed; its file is then downloaded and
loaded. A job that failed, was canceled, or whose job or file Marketo no longer holds (files are
kept 7 days), is planned again as a new export of the same window and types. The transitions are
the methods below; each returns the new value and makes no call, so the reader makes the calls
and saves the result.

`Progress` is what a claim's reader keeps in `HistoryClaim.progress`: the windows, how many of
them are committed (loaded in order: a window is committed once every type of it is loaded, and
what was loaded stays loaded), the jobs of the windows not committed, what a day of each type
takes in files, and until when the export quota holds the bulk side back. A run that finds
jobs at Marketo adopts them from the job list; Marketo's queue (10 jobs queued, 2 of them
processing, shared with the instance's other exports) is respected as the list shows it, and a
job's status is asked at most once per `bulk_poll_interval_s`, with `next_poll_at` telling the
reader when, so that it does REST work in between.
"""

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from marketo_source import settings
from marketo_source.bulk import plan
from marketo_source.bulk.plan import TypeIds, Window
from marketo_source.bulk.quota import ExportPause
from marketo_source.errors import MarketoRequestError
from marketo_source.schema import parse_timestamp

ALREADY_QUEUED = "Job already queued"
"""Messages of Marketo's 1029 on enqueue (the third, the export quota, is in `quota`)."""


class Stage(StrEnum):
    """Where a job stands: Marketo's status from created to completed, failed and canceled; the reader's
    own work for the others."""

    PLANNED = "planned"
    CREATED = "created"
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    DOWNLOADED = "downloaded"
    LOADED = "loaded"
    FAILED = "failed"
    EXPIRED = "expired"
    """Marketo no longer holds the job or its file."""
    CANCELED = "canceled"


AT_MARKETO = frozenset({Stage.CREATED, Stage.QUEUED, Stage.PROCESSING, Stage.COMPLETED})
"""Stages of a job whose export Marketo holds and the reader has not downloaded yet."""
WAITING = frozenset({Stage.QUEUED, Stage.PROCESSING})
"""Stages whose next change only polling the status tells."""
PLANNED_AGAIN = frozenset({Stage.FAILED, Stage.EXPIRED, Stage.CANCELED})
_STATUS = {
    "Created": Stage.CREATED, "Queued": Stage.QUEUED, "Processing": Stage.PROCESSING, "Completed": Stage.COMPLETED,
    "Failed": Stage.FAILED, "Canceled": Stage.CANCELED, "Cancelled": Stage.CANCELED,
}
"""Marketo's status values; its cancel example spells Canceled "Cancelled"."""
_NEVER = datetime.min.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Job:
    """An export of some activity types of one window."""

    window: Window
    type_ids: TypeIds
    export_id: Optional[str] = None
    """Marketo's exportId; None until the job is created."""
    stage: Stage = Stage.PLANNED
    file_size: Optional[int] = None
    file_checksum: Optional[str] = None
    """`sha256:<hex>`, as Marketo gives it."""
    records: Optional[int] = None
    attempts: int = 0
    """Exports created for this window and these types so far."""
    polled_at: Optional[datetime] = None
    """When Marketo's status of the job was last read."""
    error: Optional[str] = None
    """Why the last export of this window and these types was planned again."""

    @property
    def key(self) -> Tuple[Window, TypeIds]:
        """A job is known by its window and types: a window's jobs never share a type."""
        return self.window, self.type_ids

    def created(self, export_id: str) -> "Job":
        """Marketo created the export."""
        return replace(self, export_id=export_id, stage=Stage.CREATED, attempts=self.attempts + 1)

    def enqueue_answered(self, now: datetime, code: Optional[str] = None, message: str = "") -> "Job":
        """After Enqueue Export Job answered at `now`: Marketo's refusal code and message, if it refused.

        A full queue (1029 "Too many jobs in queue") or a used-up export quota leaves the job
        created, to enqueue later; "Job already queued" means a previous enqueue went through.
        The answer tells the status, so the next status read waits a poll interval.

        Raises:
            MarketoRequestError: Any other refusal.
        """
        if code is None or (code == "1029" and ALREADY_QUEUED.lower() in message.lower()):
            return replace(self, stage=Stage.QUEUED, polled_at=now)
        if code == "1029":  # a full queue or the quota, whatever the wording: the job waits to be enqueued
            return self
        raise MarketoRequestError(f"Marketo refused to enqueue export {self.export_id} ({code} {message})", code)

    def observed(self, status: Mapping[str, Any], now: datetime) -> "Job":
        """Marketo's status of the job (a status answer or a job list entry), read at `now`.

        A job already downloaded keeps its stage: its file is the reader's now.
        """
        if self.stage not in AT_MARKETO:
            return self
        stage = _STATUS.get(str(status.get("status")))
        if stage is None:  # a status Marketo does not document: read again at the next poll
            return replace(self, polled_at=now)
        observed = replace(self, stage=stage, polled_at=now)
        if stage is Stage.COMPLETED:
            return replace(observed, file_size=_count(status.get("fileSize")),
                           file_checksum=status.get("fileChecksum"), records=_count(status.get("numberOfRecords")))
        if stage in PLANNED_AGAIN:
            reason = f": {status['errorMsg']}" if status.get("errorMsg") else ""
            return replace(observed, error=f"Marketo's status {status.get('status')}{reason}")
        return observed

    def downloaded(self) -> "Job":
        """The file is on disk and matches its size, checksum and records."""
        return replace(self, stage=Stage.DOWNLOADED)

    def loaded(self) -> "Job":
        """The file's rows are loaded."""
        return replace(self, stage=Stage.LOADED)

    def lost(self) -> "Job":
        """Marketo no longer holds the job or its file (unknown exportId, 404 on the file)."""
        return replace(self, stage=Stage.EXPIRED, error="Marketo no longer holds the export or its file")

    def again(self) -> "Job":
        """Planned again: a new export of the same window and types."""
        return Job(self.window, self.type_ids, attempts=self.attempts, error=self.error)

    def poll_at(self, interval: timedelta) -> datetime:
        """When the job's status may be read next."""
        return _NEVER if self.polled_at is None else self.polled_at + interval

    def to_json(self) -> Dict[str, Any]:
        saved = {"window": self.window.to_json(), "type_ids": list(self.type_ids), "export_id": self.export_id,
                 "stage": self.stage.value, "file_size": self.file_size, "file_checksum": self.file_checksum,
                 "records": self.records, "attempts": self.attempts,
                 "polled_at": self.polled_at.isoformat() if self.polled_at else None, "error": self.error}
        return {key: value for key, value in saved.items() if value is not None}

    @classmethod
    def from_json(cls, saved: Mapping[str, Any]) -> "Job":
        return cls(
            Window.from_json(saved["window"]), tuple(saved.get("type_ids") or ()), saved.get("export_id"),
            Stage(saved.get("stage") or Stage.PLANNED.value), saved.get("file_size"), saved.get("file_checksum"),
            saved.get("records"), int(saved.get("attempts") or 0),
            parse_timestamp(saved["polled_at"]) if saved.get("polled_at") else None, saved.get("error"),
        )


@dataclass(frozen=True)
class Progress:
    """How far a claim's bulk reading got: what `HistoryClaim.progress` holds."""

    windows: Tuple[Window, ...] = ()
    type_ids: TypeIds = ()
    """The types every window exports."""
    committed: int = 0
    """Windows loaded, in order: the first `committed` windows are done."""
    jobs: Tuple[Job, ...] = ()
    """The jobs of the windows not committed."""
    rates: Mapping[int, float] = field(default_factory=dict)
    """What a day of each type took in files so far (`plan.Rates`)."""
    paused_until: Optional[datetime] = None
    """No export call before this: the export quota is used up for Marketo's day."""

    @classmethod
    def begin(
        cls, start: datetime, hand_over: datetime, late_window: Optional[timedelta], type_ids: Iterable[int]
    ) -> "Progress":
        """The progress of a claim not read yet (see `plan.windows`)."""
        return cls(plan.windows(start, hand_over, late_window), plan.bulk_type_ids(type_ids))

    @property
    def done(self) -> bool:
        """Whether every window is committed."""
        return self.committed >= len(self.windows)

    @property
    def committed_until(self) -> Optional[datetime]:
        """The createdAt up to which every window is loaded; None before the first."""
        return self.windows[self.committed - 1].end if self.committed else None

    def job(self, export_id: str) -> Job:
        """The job of an export.

        Raises:
            KeyError: No job of this progress has that exportId.
        """
        for job in self.jobs:
            if job.export_id == export_id:
                return job
        raise KeyError(export_id)

    # -- planning ---------------------------------------------------------------------------

    def planned_more(self, remaining: int, daily_limit: int) -> "Progress":
        """Plans the jobs that fit `remaining` bytes of today's export budget (see `plan`).

        Args:
            remaining: Bytes of today's budget not spent (`quota.remaining`); the estimated files
                of jobs not completed yet are taken from it here.
            daily_limit: Bytes of a whole day's budget (`quota.daily_limit_bytes`).
        """
        # Completed files count in what today spent; those not loaded yet have not taught their sizes.
        unfinished = [job for job in self.jobs if job.stage in {Stage.PLANNED, Stage.CREATED} | WAITING]
        promised = sum(plan.estimate(job.window, job.type_ids, self.rates) or 0 for job in unfinished)
        in_flight = any(job.stage is not Stage.LOADED for job in self.jobs)
        covered: Dict[Window, set[int]] = {}
        for job in self.jobs:
            covered.setdefault(job.window, set()).update(job.type_ids)
        pending = [
            (window, tuple(t for t in self.type_ids if t not in covered.get(window, set())))
            for window in self.windows[self.committed:]
        ]
        new = plan.next_jobs(pending, self.rates, max(remaining - promised, 0), daily_limit, in_flight)
        return replace(self, jobs=(*self.jobs, *(Job(window, type_ids) for window, type_ids in new)))

    def learned(self, job: Job, rows_by_type: Mapping[int, int]) -> "Progress":
        """What a day of each of the job's types takes, from its file: its bytes shared by rows.

        A type without rows in the file stays unknown rather than free: the window may lie before
        Marketo's retention of that type, and later windows may hold many. A rate only grows.
        """
        per_row = job.file_size / job.records if job.file_size and job.records else 0.0
        learned = {t: max(self.rates.get(t, 0.0), rows * per_row / job.window.days)
                   for t in job.type_ids if (rows := rows_by_type.get(t, 0))}
        return replace(self, rates={**self.rates, **learned})

    # -- transitions ------------------------------------------------------------------------

    def with_job(self, changed: Job) -> "Progress":
        """The progress with `changed` in place of the job of its window and types.

        A job that failed, was canceled or lost is planned again; the windows whose every type
        is loaded are committed, in order, and their jobs dropped.
        """
        job = changed.again() if changed.stage in PLANNED_AGAIN else changed
        jobs = tuple(job if old.key == job.key else old for old in self.jobs)
        return replace(self, jobs=jobs)._committing()

    def lost(self, export_id: str) -> "Progress":
        """Marketo no longer holds the export or its file: planned again."""
        return self.with_job(self.job(export_id).lost())

    def adopted(self, listed: Iterable[Mapping[str, Any]], now: datetime) -> "Progress":
        """The jobs of an earlier run as Marketo's job list shows them.

        Jobs the list does not show are left as they are: ask their status (`unlisted`), and
        call `lost` for those Marketo no longer knows.
        """
        by_id = {str(entry.get("exportId")): entry for entry in listed}
        progress = self
        for job in self.jobs:
            if job.export_id in by_id:
                progress = progress.with_job(job.observed(by_id[job.export_id], now))
        return progress

    def unlisted(self, listed: Iterable[Mapping[str, Any]]) -> List[str]:
        """The exportIds of jobs at Marketo that the job list does not show."""
        shown = {str(entry.get("exportId")) for entry in listed}
        return [job.export_id for job in self.jobs if job.export_id and job.stage in AT_MARKETO
                and job.export_id not in shown]

    def paused(self, pause: ExportPause) -> "Progress":
        return replace(self, paused_until=pause.resumes_at)

    def may_export(self, now: datetime) -> bool:
        """Whether export calls may be made: the export quota holds them back until its reset."""
        return self.paused_until is None or now >= self.paused_until

    # -- Marketo's queue and the poll schedule ----------------------------------------------

    def to_create(self, slots: int) -> List[Job]:
        """Planned jobs to create now: as many as the queue can take beside those created already."""
        waiting = sum(1 for job in self.jobs if job.stage is Stage.CREATED)
        return [job for job in self.jobs if job.stage is Stage.PLANNED][: max(slots - waiting, 0)]

    def to_enqueue(self, slots: int) -> List[Job]:
        """Created jobs to enqueue now, oldest window first."""
        return [job for job in self.jobs if job.stage is Stage.CREATED][:slots]

    def due(self, now: datetime, interval: timedelta) -> List[Job]:
        """Queued and processing jobs whose status may be read now."""
        return [job for job in self.jobs if job.stage in WAITING and job.poll_at(interval) <= now]

    def next_poll_at(self, interval: timedelta) -> Optional[datetime]:
        """When a status is next worth reading; None when no job waits on Marketo."""
        return min((job.poll_at(interval) for job in self.jobs if job.stage in WAITING), default=None)

    # -- JSON in HistoryClaim.progress ------------------------------------------------------

    def to_json(self) -> Dict[str, Any]:
        saved: Dict[str, Any] = {
            "windows": [window.to_json() for window in self.windows], "type_ids": list(self.type_ids),
            "committed": self.committed, "jobs": [job.to_json() for job in self.jobs],
            "rates": {str(type_id): rate for type_id, rate in self.rates.items()},
        }
        if self.paused_until is not None:
            saved["paused_until"] = self.paused_until.isoformat()
        return saved

    @classmethod
    def from_json(cls, saved: Mapping[str, Any]) -> "Progress":
        """The progress saved by `to_json`; an empty mapping is a claim not begun."""
        return cls(
            tuple(Window.from_json(window) for window in saved.get("windows") or ()),
            tuple(saved.get("type_ids") or ()), int(saved.get("committed") or 0),
            tuple(Job.from_json(job) for job in saved.get("jobs") or ()),
            {int(type_id): float(rate) for type_id, rate in (saved.get("rates") or {}).items()},
            parse_timestamp(saved["paused_until"]) if saved.get("paused_until") else None,
        )

    def _committing(self) -> "Progress":
        committed = self.committed
        while committed < len(self.windows) and self._loaded(self.windows[committed]):
            committed += 1
        done = set(self.windows[:committed])
        return replace(self, committed=committed, jobs=tuple(job for job in self.jobs if job.window not in done))

    def _loaded(self, window: Window) -> bool:
        loaded = {t for job in self.jobs if job.window == window and job.stage is Stage.LOADED for t in job.type_ids}
        return loaded >= set(self.type_ids)


def enqueue_slots(listed: Iterable[Mapping[str, Any]]) -> int:
    """Jobs Marketo's queue takes now: 10 queued or processing, less those the job list shows.

    The list shows only the API user's activity exports; a queue full of other exports shows
    as 1029 "Too many jobs in queue" on enqueue, which leaves the job created for later.
    Marketo itself processes 2 at once and keeps the rest queued.
    """
    busy = sum(1 for entry in listed if entry.get("status") in {"Queued", "Processing"})
    return max(settings.BULK_MAX_QUEUED - busy, 0)


def _count(value: Any) -> Optional[int]:
    return None if value is None else int(value)
