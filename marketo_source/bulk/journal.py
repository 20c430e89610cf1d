"""A durable journal of the bulk claims and their export jobs, beside the pipeline's own files.

dlt saves the claim and its progress (`HistoryClaim`) only with a load package, so a run killed
during extract loses both, while the export jobs it created go on at Marketo and can still
deliver. Marketo's job list does not show a job's filter, so the next run could not tell which
window a listed job exports. The reader therefore writes the claim's hand-over point and its jobs
to this journal before a call's result could be lost: the claim before the first job is created,
each exportId as soon as Create Export Job answered, and each change of a job's stage. The next
run takes the journal's hand-over point for the same stream, scope and start (it is earlier than
that run's own latest point, so late commits are still covered) and adopts the journal's jobs
that dlt's state does not know (`merged`).

dlt's state stays the record: the journal only bridges a kill. A job the journal holds as
downloaded or loaded is adopted as completed, since its rows reached dlt only if the state that
says so was committed. The journal holds no rows and no secrets: an entry is keyed by stream,
scope, start and the instance's base URL. It lives in the pipeline's working folder; without one
(no active pipeline, or a fresh worker, or a dropped pipeline) the reader goes without it and a
killed run's windows are exported again.
"""

import json
import logging
import os
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from dlt.common.configuration.container import Container
from dlt.common.pipeline import PipelineContext

from marketo_source.bulk.jobs import Job, Progress, Stage
from marketo_source.schema import parse_timestamp

logger = logging.getLogger("marketo_source")

FILE_NAME = "marketo_bulk_journal.json"
KEPT_AFTER_DONE = timedelta(days=7)
"""How long an entry outlives its claim: Marketo keeps an export's file 7 days, so after that the
jobs of the entry cannot deliver again."""


@dataclass(frozen=True)
class ClaimKey:
    """Which claim an entry is about."""

    stream: str
    scope: str
    start: datetime
    base_url: str

    def matches(self, saved: Mapping[str, Any]) -> bool:
        return (saved.get("stream"), saved.get("scope"), saved.get("base_url")) == (
            self.stream, self.scope, self.base_url) and parse_timestamp(saved["start"]) == self.start


@dataclass(frozen=True)
class Entry:
    """A claim as the journal last saw it."""

    until: datetime
    """The claim's hand-over point."""
    progress: Progress
    """Its progress, with the jobs of windows committed since kept as they were last seen."""
    done: bool


class Journal:
    """The journal file of a folder; None as the folder writes nothing and finds nothing.

    Args:
        folder: The pipeline's working folder.
    """

    def __init__(self, folder: Optional[Path]) -> None:
        self.path = None if folder is None else folder / FILE_NAME

    @classmethod
    def of_pipeline(cls) -> "Journal":
        """The journal of the pipeline that runs the source (dlt activates it for extract)."""
        context = Container()[PipelineContext]
        if not context.is_active():
            return cls(None)
        folder = Path(context.pipeline().working_dir)
        return cls(folder if folder.is_dir() else None)

    def find(self, key: ClaimKey) -> Optional[Entry]:
        """The entry of a claim, if the journal holds one."""
        for saved in self._entries():
            if key.matches(saved):
                return Entry(parse_timestamp(saved["until"]), Progress.from_json(saved["progress"]),
                             bool(saved.get("done")))
        return None

    def record(self, key: ClaimKey, until: datetime, progress: Progress, now: datetime) -> None:
        """Saves a claim's progress, durably, before this returns."""
        if self.path is None:
            return
        entries = self._entries()
        kept = [Job.from_json(job) for s in entries if key.matches(s) for job in s["progress"].get("jobs") or ()]
        recorded = replace(progress, jobs=_union(kept, progress.jobs))
        entry = {"stream": key.stream, "scope": key.scope, "start": key.start.isoformat(), "base_url": key.base_url,
                 "until": until.isoformat(), "done": progress.done, "written_at": now.isoformat(),
                 "progress": recorded.to_json()}
        entries = [s for s in entries if not key.matches(s) and not _outlived(s, now)] + [entry]
        self._write(entries)

    def forget(self, key: ClaimKey) -> None:
        """Drops a claim's entry: the claim was given up before it was saved."""
        entries = self._entries()
        if self.path is not None and any(key.matches(saved) for saved in entries):
            self._write([s for s in entries if not key.matches(s)])

    def _write(self, entries: List[Dict[str, Any]]) -> None:
        assert self.path is not None
        try:
            _write_atomically(self.path, json.dumps({"entries": entries}))
        except OSError as error:
            # The journal only spares export quota after a kill: the run goes on without it.
            logger.warning("bulk journal %s cannot be written (%s); a killed run's jobs would be created again",
                           self.path, error)

    def _entries(self) -> List[Dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return []
        try:
            entries: List[Dict[str, Any]] = json.loads(self.path.read_text())["entries"]
            return entries
        except (OSError, ValueError, KeyError, TypeError) as error:
            # Unreadable, the journal cannot help: the reader goes on as without one.
            logger.warning("bulk journal %s is unreadable (%s); it is written anew", self.path, error)
            return []


def merged(recorded: Progress, journaled: Progress) -> Progress:
    """The progress from dlt's state with the jobs of the journal that the state does not know.

    A journal job is taken for a window not committed in `recorded` when it was created at
    Marketo and the state holds no export of its window and types as late (its `attempts`);
    one that shares a type with another job of the state's is left out. A journal of another
    plan (other windows or types) is not used.
    """
    if (recorded.windows, recorded.type_ids) != (journaled.windows, journaled.type_ids):
        return recorded
    open_windows = set(recorded.windows[recorded.committed:])
    jobs = {job.key: job for job in recorded.jobs}
    for job in journaled.jobs:
        known = jobs.get(job.key)
        if job.window not in open_windows or job.export_id is None or (known and known.attempts >= job.attempts):
            continue
        if known is None and any(set(other.type_ids) & set(job.type_ids)
                                 for other in jobs.values() if other.window == job.window):
            continue
        jobs[job.key] = _completed(job)
    paused = [p for p in (recorded.paused_until, journaled.paused_until) if p is not None]
    return replace(recorded, jobs=tuple(jobs.values()), rates={**journaled.rates, **recorded.rates},
                   paused_until=max(paused, default=None))


def _completed(job: Job) -> Job:
    """A job the journal saw downloaded or loaded: its file is at Marketo still, its rows maybe not loaded."""
    return replace(job, stage=Stage.COMPLETED) if job.stage in {Stage.DOWNLOADED, Stage.LOADED} else job


def _union(kept: Iterable[Job], latest: Iterable[Job]) -> Tuple[Job, ...]:
    """The latest jobs, and those kept of windows the latest progress committed and dropped."""
    by_key = {job.key: job for job in kept}
    by_key.update({job.key: job for job in latest})
    return tuple(by_key.values())


def _outlived(saved: Mapping[str, Any], now: datetime) -> bool:
    written = saved.get("written_at")
    return bool(saved.get("done")) and written is not None and now - parse_timestamp(written) > KEPT_AFTER_DONE


def _write_atomically(path: Path, text: str) -> None:
    """Writes a temporary file beside `path`, flushes it to disk and renames it over `path`."""
    handle, temporary = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a crash of the machine
    finally:
        os.close(folder)
