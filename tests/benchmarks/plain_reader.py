"""The baseline: a plain sequential reader of the pages the source reads (requests + json.loads, nothing else)."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

import requests

from tests.benchmarks.minimum import BATCH_SIZE, DELETE_LEAD, LEAD_CHANGE_TYPES, source_groups

REST = "/rest/v1"


@dataclass
class ReaderResult:
    """What one plain read did."""

    seconds: float
    records: int
    calls: Dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Plain data for the JSON report."""
        return {"seconds": round(self.seconds, 3), "records": self.records, "calls": self.calls,
                "records_per_s": round(self.records / self.seconds) if self.seconds else None}


class PlainReader:
    """Reads every activity the source reads, one call after the other, parsing each answer with json.loads.

    Args:
        session: A session holding an access token (see SandboxProcess.rest_session).
        base_url: The sandbox's base URL.
        start_date: Where the paging token starts (the source's start_date).
        type_ids: Types of the activities stream, as the source's activity_type_ids; None: its default.
    """

    def __init__(self, session: requests.Session, base_url: str, start_date: str,
                 type_ids: Optional[Sequence[int]] = None) -> None:
        self.session = session
        self.type_ids = type_ids
        self.rest = base_url + REST
        self.start_date = start_date
        self.calls: Counter[str] = Counter()
        self.records = 0

    def get(self, endpoint: str, path: str, params: Dict[str, str]) -> dict:
        """One GET, counted per endpoint, parsed with json.loads."""
        self.calls[endpoint] += 1
        response = self.session.get(self.rest + path, params=params, timeout=120)
        answer = json.loads(response.content)
        if not answer.get("success"):
            raise RuntimeError(f"{path} failed: {answer.get('errors')}")
        return answer

    def chain(self, endpoint: str, path: str, params: Dict[str, str], token: str) -> Iterator[dict]:
        """Every page of one chain, until moreResult is false."""
        while True:
            page = self.get(endpoint, path, {**params, "nextPageToken": token, "batchSize": str(BATCH_SIZE)})
            self.records += len(page.get("result") or ())
            yield page
            token = page["nextPageToken"]
            if not page.get("moreResult"):
                return

    def read_all(self) -> ReaderResult:
        """Reads metadata, then every chain the source reads, sequentially."""
        started = time.perf_counter()
        types = [t["id"] for t in self.get("activity_types", "/activities/types.json", {})["result"]]
        self.get("custom_types", "/activities/external/types.json", {})
        described = self.get("describe_leads", "/leads/describe2.json", {})["result"]
        fields = ",".join(sorted(f["name"] for entry in described for f in entry["fields"]))
        token = self.get("paging_token", "/activities/pagingtoken.json", {"sinceDatetime": self.start_date})
        token = token["nextPageToken"]
        stream_types = self.type_ids or [t for t in types if t not in (*LEAD_CHANGE_TYPES, DELETE_LEAD)]
        for group in source_groups(stream_types):  # the source's grouping, so that both read the same pages
            _drain(self.chain("activities", "/activities.json", {"activityTypeIds": _ids(group)}, token))
        _drain(self.chain("lead_changes", "/activities/leadchanges.json", {"fields": fields}, token))
        _drain(self.chain("deleted_leads", "/activities/deletedleads.json", {}, token))
        return ReaderResult(time.perf_counter() - started, self.records, dict(self.calls))


def _ids(group: List[int]) -> str:
    return ",".join(map(str, group))


def _drain(pages: Iterator[dict]) -> None:
    for _ in pages:
        pass
