"""Shared pieces of the sandbox tests: fixed test data and a small HTTP client.

Every test talks to the sandbox over real HTTP on 127.0.0.1; nothing is mocked.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator

import requests

from marketo_source.sandbox import DataSpec, MarketoSandbox

START = "2026-10-01T00:00:00Z"
TEST_DATA = DataSpec(seed=7, leads=60, activities=2000, days=30, start_date=START)
# Ten standard ids: a single activities.json call may filter on at most ten types.
DENSE_TYPES = (1, 2, 3, 6, 7, 10, 11, 12, 13, 22)
ACTIVITIES = "/rest/v1/activities.json"
LEAD_CHANGES = "/rest/v1/activities/leadchanges.json"
DELETED = "/rest/v1/activities/deletedleads.json"

StartSandbox = Callable[..., MarketoSandbox]
"""The start_sandbox fixture: starts a sandbox with the test data, given other settings."""


class Api:
    """A minimal Marketo client for tests: fetches a token, sends it as a Bearer header."""

    def __init__(self, sandbox: MarketoSandbox) -> None:
        self.sandbox = sandbox
        self.base_url = sandbox.base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.token()}"

    def token(self) -> str:
        """A fresh access token from the identity service."""
        return self.identity().json()["access_token"]

    def identity(self, method: str = "GET", **overrides: str) -> requests.Response:
        """Call the identity service with the sandbox credentials, some of them overridden."""
        params = {"grant_type": "client_credentials", "client_id": self.sandbox.client_id,
                  "client_secret": self.sandbox.client_secret, **overrides}
        return requests.request(method, f"{self.base_url}/identity/oauth/token", params=params, timeout=10)

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        """GET a REST path; returns the parsed envelope."""
        return self.raw("GET", path, params=params).json()

    def post(self, path: str, body: Any) -> dict[str, Any]:
        """POST a JSON body to a REST path; returns the parsed envelope."""
        return self.raw("POST", path, json=body).json()

    def raw(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Any request with the token header; returns the raw response."""
        return self.session.request(method, f"{self.base_url}{path}", timeout=10, **kwargs)

    def paging_token(self, since: str = START) -> str:
        """A date token from Get Paging Token."""
        return self.get("/rest/v1/activities/pagingtoken.json", sinceDatetime=since)["nextPageToken"]

    def pages(self, path: str, token: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every page of a read endpoint, following nextPageToken while moreResult is true."""
        while True:
            page = self.get(path, nextPageToken=token, **params)
            assert page["success"], page
            yield page
            token = page["nextPageToken"]
            if not page["moreResult"]:
                return

    def read_all(self, path: str, token: str, **params: Any) -> tuple[list[dict[str, Any]], str]:
        """All records of a read endpoint and the final token."""
        records: list[dict[str, Any]] = []
        final = token
        for page in self.pages(path, token, **params):
            records += page["result"]
            final = page["nextPageToken"]
        return records, final


def error_code(envelope: dict[str, Any]) -> str:
    """The one error code of a failed envelope."""
    assert envelope["success"] is False, f"expected an error answer, got success with {envelope.keys()}"
    return envelope["errors"][0]["code"]


def dense(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of DENSE_TYPES."""
    return [record for record in records if record["activityTypeId"] in DENSE_TYPES]


def date_key(record: dict[str, Any]) -> tuple[str, int]:
    """(activityDate, id): the order of date tokens. Both date styles share their first 19 characters."""
    return record["activityDate"][:19], record["id"]


def in_token_order(records: list[dict[str, Any]], token_order: str) -> list[dict[str, Any]]:
    """Commit-ordered records (as ground_truth() lists them) in the order reads return them.

    Sorting is stable, so records with the same date and id keep commit order, as date tokens do.
    """
    return sorted(records, key=date_key) if token_order == "date" else records


def epoch_s(record: dict[str, Any]) -> float:
    """A record's activityDate in epoch seconds."""
    return datetime.fromisoformat(record["activityDate"]).timestamp()


def iso(epoch_seconds: float) -> str:
    """An epoch time as a sinceDatetime value."""
    return datetime.fromtimestamp(epoch_seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def guids(records: Iterable[dict[str, Any]]) -> set[str]:
    """The marketoGUIDs of some records."""
    return {record["marketoGUID"] for record in records}


EXPORT = "/bulk/v1/activities/export"


class BulkApi(Api):
    """Api plus the Bulk Activity Extract calls."""

    def create(self, start: str = START, end: str = "2026-10-31T00:00:00Z", **body: Any) -> dict[str, Any]:
        """Create Export Activity Job over [start, end]; other body keys (`fields`, `format`, ...) as given,
        `activityTypeIds` moved into the filter."""
        export_filter: dict[str, Any] = {"createdAt": {"startAt": start, "endAt": end}}
        if "activityTypeIds" in body:
            export_filter["activityTypeIds"] = body.pop("activityTypeIds")
        return self.post(f"{EXPORT}/create.json", {"format": "CSV", "filter": export_filter, **body})

    def job(self, action: str, export_id: str) -> dict[str, Any]:
        """POST enqueue/cancel or GET status of a job; returns the envelope."""
        path = f"{EXPORT}/{export_id}/{action}.json"
        return self.get(path) if action == "status" else self.post(path, None)

    def created(self, **create: Any) -> str:
        """Create a job (see create()) and return its exportId."""
        answer = self.create(**create)
        assert answer["success"], answer
        export_id: str = answer["result"][0]["exportId"]
        return export_id

    def wait(self, export_id: str, *wanted: str, timeout_s: float = 60) -> dict[str, Any]:
        """Poll status.json until the job shows one of `wanted`; returns that status result."""
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self.job("status", export_id)
            assert answer["success"], answer
            if answer["result"][0]["status"] in wanted:
                result: dict[str, Any] = answer["result"][0]
                return result
            assert time.monotonic() < deadline, f"job {export_id} never reached {wanted}: {answer}"
            time.sleep(0.01)

    def export(self, **create: Any) -> tuple[dict[str, Any], bytes]:
        """Create, enqueue and wait for a job; returns its Completed status and its file."""
        export_id = self.created(**create)
        assert self.job("enqueue", export_id)["success"]
        status = self.wait(export_id, "Completed")
        file = self.file(export_id)
        assert file.status_code == 200, file.text
        return status, file.content

    def file(self, export_id: str, byte_range: str | None = None) -> requests.Response:
        """GET the job's file, with a Range header when given."""
        headers = {"Range": byte_range} if byte_range else {}
        return self.raw("GET", f"{EXPORT}/{export_id}/file.json", headers=headers)


def wait_until(condition: Callable[[], bool], timeout_s: float = 60) -> None:
    """Poll until `condition()` holds; fails the test when it never does."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)

