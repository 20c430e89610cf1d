"""Another reader of a stream's history, and where it hands the stream over to REST paging.

REST paging reads every stream from its saved position. Another reader (such as Marketo's Bulk
Activity Extract, which spends an export quota rather than API calls) may read the history of a
filter scope that REST paging has not begun: from the first run's start up to a point it
chooses, no later than `latest_until`. REST paging then reads the scope from that point on, in
the same run (alongside the reader) and in every later one, so that the two meet without a gap;
merge on marketoGUID keeps one row of an activity both read at the point itself.

The other reader reads its range once. So `latest_until` lies the late-commit window before the
run began: an activity dated before the hand-over point and recorded after the reader read its
range is recorded that late or later (see `late_commits`).

The claim is saved in the stream's state (`state.HistoryClaim`) before anything is read, with the
reader's own progress, which only the reader reads, saved as each batch is handed on. A reader
that stops before it is done (a run bound, a quota) goes on from that progress the next run; a
batch marked `done` ends the claim.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, Iterator, List, Mapping, Optional, Protocol

import pyarrow as pa

from marketo_source.schema import Rejects
from marketo_source.state import HistoryClaim


@dataclass
class HistoryBatch:
    """What another reader read, and how far it got: records rendered as Get Lead Activities renders
    them, or rows already in their tables (as a bulk export file is read, without a record each)."""

    records: List[Dict[str, Any]]
    tables: Mapping[str, pa.Table] = field(default_factory=dict)
    """Rows in the stream's tables, by table name, typed as the stream types its records."""
    rejects: Rejects = field(default_factory=list)
    """Rows set aside as they were read (see `schema.Rejects`)."""
    progress: Mapping[str, Any] = field(default_factory=dict)
    """The reader's progress once this batch is handed on."""
    done: bool = False
    """Whether this batch ends the claimed history."""


class HistoryReader(Protocol):
    """Reads the history of a stream's filter scope by another road than REST paging."""

    name: str
    idle_s: float
    """How long a stream with nothing else to read pauses when this reader had nothing ready."""

    def claim(self, stream: str, scope: str, start: datetime, latest_until: datetime) -> Optional[datetime]:
        """Where REST paging takes over if this reader reads the scope's history from `start`
        up to there; None leaves the whole scope to REST paging."""

    def read(self, stream: str, scope: str, claim: HistoryClaim) -> Iterator[Optional[HistoryBatch]]:
        """The claimed history not read yet (after `claim.progress`), in batches; None when no
        batch is ready yet, so that the stream hands REST pages on meanwhile. It may end before
        the history does, and goes on from the saved progress the next run."""
