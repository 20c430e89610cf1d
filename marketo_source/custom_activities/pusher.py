"""The pusher: rows sent in calls of at most 300, each recorded in the ledger before and after its
call, and calls that may or may not have been applied reconciled by reading back from Marketo."""

import logging
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Union

from marketo_source import settings
from marketo_source.client import MarketoClient
from marketo_source.custom_activities.items import (
    LOCAL_REJECTION_CODE,
    MatchKey,
    _Activity,
    _ApprovedTypes,
    _match_key,
    _Rejected,
    _RowMapper,
)
from marketo_source.custom_activities.ledger import DEFAULT_LEDGER_PATH, ActivityLedger, _ledger_lock
from marketo_source.custom_activities.summary import PushSummary
from marketo_source.errors import MarketoError, MarketoTransientError, MarketoWriteUncertain
from marketo_source.paging import PagingTokens

logger = logging.getLogger("marketo_source")

DEFAULT_RECONCILE_AFTER_S = settings.ADD_CUSTOM_ACTIVITIES_SERVER_TIMEOUT_S
MAX_UNCERTAIN_ROUNDS = 3
"""Uncertain sends of the same rows in one push before it gives up (they stay `sending` and the
next push reconciles them)."""


class CustomActivityPusher:
    """Pushes rows into Marketo as custom activities, each row at most once (see the package docs).

    Pushes on the same ledger file never overlap within a process (the dlt destination's load
    jobs may run in parallel threads), and DuckDB's file lock keeps other processes out while
    one pushes.

    Args:
        client: The client to call with (its rate limit, retries and write timeout apply).
        ledger_path: The DuckDB file of the ledger.
        activity_type_api_name: The type of rows without an `activity_type_id` or
            `activity_type_api_name` column.
        reconcile_after_s: Seconds after a call was sent before its activities are read back.
            Marketo works on Add Custom Activities for up to 90 s; reading back sooner could miss
            a write still in progress and send it again.
    """

    def __init__(
        self,
        client: MarketoClient,
        ledger_path: Union[str, Path] = DEFAULT_LEDGER_PATH,
        activity_type_api_name: Optional[str] = None,
        reconcile_after_s: float = DEFAULT_RECONCILE_AFTER_S,
    ) -> None:
        self.client = client
        self.ledger_path = Path(ledger_path)
        self.reconcile_after_s = reconcile_after_s
        self._types = _ApprovedTypes(client)
        self._mapper = _RowMapper(self._types, activity_type_api_name)

    def push(self, rows: Union[Iterable[Mapping[str, Any]], Any], load_id: Optional[str] = None) -> PushSummary:
        """Pushes rows (dicts, or an Arrow table or record batch) in calls of at most 300.

        Rows found `sending` in the ledger (a push that died mid-call) are reconciled first.

        Args:
            rows: The rows; columns as described in the package docs.
            load_id: Recorded with each row in the ledger (the dlt destination passes its load id).

        Returns:
            What the push did.

        Raises:
            MarketoConfigurationError: No activity type for the rows, or columns that are not
                attributes of their type; nothing of the batch at hand was sent.
            MarketoError: Other failures; rows whose call may have been applied stay `sending` and
                the next push reconciles them.
        """
        with _ledger_lock(self.ledger_path), ActivityLedger(self.ledger_path) as ledger:
            self._types.expire()
            run = _PushRun(self.client, ledger, self._mapper, self.reconcile_after_s, load_id)
            run.finish_interrupted()
            for chunk in _chunks(_as_dicts(rows), settings.MAX_BATCH_SIZE):
                run.push_chunk(chunk)
            return run.summary


class _PushRun:
    """One push: the ledger open, the summary being counted."""

    def __init__(self, client: MarketoClient, ledger: ActivityLedger, mapper: _RowMapper, reconcile_after_s: float,
                 load_id: Optional[str]) -> None:
        self.client = client
        self.ledger = ledger
        self.mapper = mapper
        self.reconcile_after_s = reconcile_after_s
        self.load_id = load_id
        self.summary = PushSummary()

    def finish_interrupted(self) -> None:
        """Reconciles rows a dead push left `sending` and sends again those Marketo does not hold."""
        activities, marked_at = self.ledger.in_flight()
        if activities:
            logger.warning("%d custom activities were being sent when a push stopped; reading them back",
                           len(activities))
            self.send(self.reconcile(activities, marked_at or _now()))

    def push_chunk(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Maps the rows, records those that cannot be sent and sends those not done yet."""
        mapped = [self.mapper.map(row) for row in rows]
        rejected = [m for m in mapped if isinstance(m, _Rejected)]
        activities = [m for m in mapped if isinstance(m, _Activity)]
        done = self.ledger.statuses([m.row_key for m in mapped])
        fresh = self._first_of_each_key(rejected, done)
        self.ledger.record_rejected(fresh, self.load_id)
        self._count_skipped([LOCAL_REJECTION_CODE] * len(fresh))
        self.send(self._first_of_each_key(activities, done))

    def _first_of_each_key(self, candidates: Sequence[Any], done: Mapping[str, str]) -> List[Any]:
        seen: Set[str] = set()
        first = []
        for candidate in candidates:
            if candidate.row_key in done or candidate.row_key in seen:
                self.summary.already_done += 1
            else:
                seen.add(candidate.row_key)
                first.append(candidate)
        return first

    def send(self, activities: Sequence[_Activity]) -> None:
        """Sends in calls of at most 300; uncertain calls are reconciled and what is missing resent."""
        for batch in _chunks(activities, settings.MAX_BATCH_SIZE):
            for _ in range(MAX_UNCERTAIN_ROUNDS):
                batch = self._send_once(batch)
                if not batch:
                    break
            else:
                raise MarketoTransientError(
                    f"Add Custom Activities stayed uncertain {MAX_UNCERTAIN_ROUNDS} times for {len(batch)} rows; "
                    "they stay 'sending' in the ledger and the next push reads them back before sending."
                )

    def _send_once(self, batch: List[_Activity]) -> List[_Activity]:
        """Sends one call; returns the activities still to send (after an uncertain call)."""
        self.ledger.mark_sending(batch, self.load_id)
        sent_at = _now()
        try:
            answer = self.client.post(settings.ADD_CUSTOM_ACTIVITIES_PATH, {"input": [a.item for a in batch]},
                                      timeout=self.client.write_timeout_s, idempotent=False)
        except MarketoWriteUncertain as error:
            logger.warning("Add Custom Activities may or may not have been applied (%s); reading back %d rows",
                           error, len(batch))
            return self.reconcile(batch, sent_at)
        except MarketoError:
            # Every other error is answered before Marketo processes the items.
            self.ledger.forget(batch)
            raise
        results = answer.get("result") or []
        if len(results) != len(batch):
            logger.warning("Add Custom Activities answered %d results for %d items; reading back",
                           len(results), len(batch))
            return self.reconcile(batch, sent_at)
        self._record(batch, results)
        return []

    def _record(self, batch: Sequence[_Activity], results: Sequence[Mapping[str, Any]]) -> None:
        added = [(a, r) for a, r in zip(batch, results, strict=True) if r.get("status") == "added"]
        skipped = [(a, r.get("errors") or [{"code": "unknown", "message": f"status {r.get('status')!r}"}])
                   for a, r in zip(batch, results, strict=True) if r.get("status") != "added"]
        self.ledger.record_added(added, self.load_id)
        self.ledger.record_skipped(skipped, self.load_id)
        self.summary.added += len(added)
        self._count_skipped([_error_code(errors) for _, errors in skipped])

    def _count_skipped(self, codes: Sequence[str]) -> None:
        self.summary.skipped += len(codes)
        self.summary.skipped_by_code.update(codes)

    def reconcile(self, activities: Sequence[_Activity], sent_at: datetime) -> List[_Activity]:
        """Records as added the activities Marketo holds; returns the others, to be sent again.

        Reads back every activity of their types and leads since the earliest of their dates, and
        matches on (leadId, activityTypeId, activityDate, primaryAttributeValue) as a multiset.
        Activities the ledger already has as added are left out of the candidates, so a row never
        claims another row's activity.
        """
        _sleep_until(sent_at.timestamp() + self.reconcile_after_s)
        records = self._read_back(activities)
        known = self.ledger.known_guids(r["marketoGUID"] for r in records)
        candidates: Dict[MatchKey, List[Mapping[str, Any]]] = defaultdict(list)
        for record in records:
            if record["marketoGUID"] not in known:
                candidates[_match_key(record)].append(record)
        found, missing = [], []
        for activity in activities:
            matches = candidates.get(activity.match_key)
            if matches:
                found.append((activity, matches.pop(0)))
            else:
                missing.append(activity)
        self.ledger.record_added(found, self.load_id)
        self.summary.added += len(found)
        self.summary.reconciled += len(found)
        logger.warning("Read back %d rows: %d found in Marketo, %d to send again", len(activities),
                       len(found), len(missing))
        return missing

    def _read_back(self, activities: Sequence[_Activity]) -> List[Dict[str, Any]]:
        since = min(a.match_key[2] for a in activities)
        token = PagingTokens(self.client).since(since)  # a fresh one: this may run long after the last
        type_ids = sorted({a.item["activityTypeId"] for a in activities})
        lead_ids = sorted({a.item["leadId"] for a in activities})
        records: List[Dict[str, Any]] = []
        for type_chunk in _chunks(type_ids, settings.MAX_TYPES_PER_CALL):
            for lead_chunk in _chunks(lead_ids, settings.MAX_LEAD_IDS_PER_CALL):
                records += self._read_pages(token, type_chunk, lead_chunk)
        return records

    def _read_pages(self, token: str, type_ids: Sequence[int], lead_ids: Sequence[int]) -> List[Dict[str, Any]]:
        params = {"activityTypeIds": ",".join(map(str, type_ids)), "leadIds": ",".join(map(str, lead_ids)),
                  "batchSize": str(settings.MAX_BATCH_SIZE)}
        records: List[Dict[str, Any]] = []
        while True:
            page = self.client.get(settings.ACTIVITIES_PATH, {**params, "nextPageToken": token})
            records += page.get("result") or []
            token = page.get("nextPageToken") or token
            if not page.get("moreResult"):
                return records


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _sleep_until(moment_s: float) -> None:
    wait_s = moment_s - time.time()
    if wait_s > 0:
        logger.info("Waiting %.1f s for Marketo to finish an uncertain call before reading back", wait_s)
        time.sleep(wait_s)


def _as_dicts(rows: Any) -> Iterable[Mapping[str, Any]]:
    # dlt hands the destination Arrow record batches when the pipeline loaded Arrow or pandas data.
    dicts: Iterable[Mapping[str, Any]] = rows.to_pylist() if hasattr(rows, "to_pylist") else rows
    return dicts


def _chunks(items: Iterable[Any], size: int) -> Iterator[List[Any]]:
    chunk: List[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _error_code(errors: Sequence[Any]) -> str:
    """The code of the first of Marketo's per-item errors ("unknown" when there is none)."""
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    return str(first.get("code", "unknown"))

