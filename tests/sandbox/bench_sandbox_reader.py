"""Benchmark (not collected by pytest): activities per second a plain sequential reader gets.

Run: python tests/sandbox/bench_sandbox_reader.py [activities] [commit|date]  (the token order, default commit)
"""

from __future__ import annotations

import sys
import time
from typing import cast

import requests

from marketo_source.sandbox import DataSpec, Limits, MarketoSandbox
from marketo_source.sandbox.paging import TokenOrder

BATCH_SIZE = 300


def read_everything(sandbox: MarketoSandbox) -> int:
    """Read every activity of ten types, page by page, as a plain client would; returns the count."""
    session = requests.Session()
    token = session.get(f"{sandbox.base_url}/identity/oauth/token", timeout=30, params={
        "grant_type": "client_credentials", "client_id": sandbox.client_id,
        "client_secret": sandbox.client_secret}).json()["access_token"]
    session.headers["Authorization"] = f"Bearer {token}"
    rest = f"{sandbox.base_url}/rest/v1/activities"
    page_token = session.get(f"{rest}/pagingtoken.json", params={"sinceDatetime": "2000-01-01T00:00:00Z"},
                             timeout=30).json()["nextPageToken"]
    type_ids = ",".join(str(t["id"]) for t in session.get(f"{rest}/types.json", timeout=30).json()["result"][:10])
    count = 0
    while True:
        page = session.get(f"{rest}.json", timeout=30, params={
            "nextPageToken": page_token, "activityTypeIds": type_ids, "batchSize": BATCH_SIZE}).json()
        count += len(page["result"])
        page_token = page["nextPageToken"]
        if not page["moreResult"]:
            return count


def main(activities: int, token_order: TokenOrder) -> None:
    """Generate, read, print the figures."""
    started = time.perf_counter()
    sandbox = MarketoSandbox(data=DataSpec(seed=1, leads=2000, activities=activities),
                             limits=Limits(calls_per_window=None, max_concurrent=None, daily_quota=None),
                             token_order=token_order)
    print(f"generated {activities} activities ({token_order} tokens) in {time.perf_counter() - started:.1f} s")
    with sandbox:
        started = time.perf_counter()
        count = read_everything(sandbox)
        elapsed = time.perf_counter() - started
    calls = sandbox.stats()["calls"]["activities"]
    print(f"read {count} activities (of 10 types) in {calls} calls, {elapsed:.2f} s: "
          f"{count / elapsed:,.0f} activities/s")


if __name__ == "__main__":
    token_order = cast(TokenOrder, sys.argv[2] if len(sys.argv) > 2 else "commit")  # the sandbox refuses others
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, token_order)
