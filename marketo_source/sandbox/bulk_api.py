"""The Bulk Activity Extract endpoints under /bulk/v1/activities/export: checks as Marketo documents them.

Where Marketo documents a rule but not its error code (a createdAt span over 31 days, Delete Lead among
the activityTypeIds, milliseconds in a datetime), the sandbox answers 1003, Marketo's code for invalid data.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from .api import Answer, Context, FileAnswer, Request, RouteTable, batch_size, routes
from .bulk import CANCELLED, STATUSES, ExportRequest
from .catalog import DELETE_LEAD
from .errors import blank, invalid
from .export_file import DEFAULT_FIELDS, EXPORT_FIELDS
from .store import parse_datetime_ms

MAX_SPAN_MS = 31 * 86_400_000
FILE_TYPE = "text/csv;charset=UTF-8"
NOT_AVAILABLE = "text/plain;charset=UTF-8"
_MILLISECONDS = re.compile(r"T\d{2}:\d{2}:\d{2}[.,]\d")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
# The list's status filter: Marketo's swagger spells the values in lower case, "cancelled" included.
_STATUS_NAMES = {status.lower(): status for status in STATUSES} | {"canceled": CANCELLED}


def export_request(body: Any) -> ExportRequest:
    """Check a create request's body.

    Raises:
        ApiError: 701 for a missing filter or createdAt, 1003 for any other invalid value.
    """
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object")
    export_format = body.get("format", "CSV")
    if not isinstance(export_format, str) or export_format.upper() != "CSV":
        # Marketo also writes TSV and SSV; the sandbox writes CSV only.
        raise invalid(f"Invalid format '{export_format}': the sandbox exports CSV only")
    fields = body.get("fields") or list(DEFAULT_FIELDS)
    if not isinstance(fields, list) or not all(isinstance(name, str) and name in EXPORT_FIELDS for name in fields):
        raise invalid(f"Invalid fields {fields!r}: each must be one of {', '.join(sorted(EXPORT_FIELDS))}")
    header_names = body.get("columnHeaderNames") or {}
    if not isinstance(header_names, dict) or not all(isinstance(v, str) for v in header_names.values()):
        raise invalid("columnHeaderNames must map field names to header names")
    export_filter = body.get("filter")
    if not isinstance(export_filter, dict):
        raise blank("filter")
    start_ms, end_ms = _created_at(export_filter.get("createdAt"))
    if "primaryAttributeValueIds" in export_filter or "primaryAttributeValues" in export_filter:
        raise invalid("primaryAttributeValueIds and primaryAttributeValues are not supported by the sandbox")
    return ExportRequest(start_ms, end_ms, _type_ids(export_filter.get("activityTypeIds")), tuple(fields),
                         dict(header_names), export_format.upper())


def _created_at(created_at: Any) -> tuple[int, int]:
    if not isinstance(created_at, dict):
        raise blank("createdAt")
    bounds = []
    for name in ("startAt", "endAt"):
        text = created_at.get(name)
        if not isinstance(text, str) or not text:
            raise blank(f"createdAt.{name}")
        if _MILLISECONDS.search(text):
            raise invalid(f"Invalid createdAt.{name} '{text}': datetimes must not have milliseconds")
        parsed = parse_datetime_ms(text)
        if parsed is None:
            raise invalid(f"Invalid createdAt.{name} '{text}'")
        bounds.append(parsed)
    start_ms, end_ms = bounds
    if end_ms < start_ms:
        raise invalid("createdAt.endAt must not be before createdAt.startAt")
    if end_ms - start_ms > MAX_SPAN_MS:
        raise invalid("createdAt spans more than 31 days")
    return start_ms, end_ms


def _type_ids(type_ids: Any) -> frozenset[int] | None:
    if type_ids is None:
        return None
    if not isinstance(type_ids, list) or not type_ids or not all(type(i) is int for i in type_ids):
        raise invalid(f"Invalid activityTypeIds {type_ids!r}: a list of activity type ids")
    if DELETE_LEAD in type_ids:
        raise invalid(f"Invalid activityTypeIds: activity type id {DELETE_LEAD} (Delete Lead) is not supported; "
                      "use Get Deleted Leads")
    return frozenset(type_ids)


def create(context: Context, request: Request) -> Answer:
    """POST /bulk/v1/activities/export/create.json; type ids must be the instance's."""
    export = export_request(request.json())
    unknown = sorted((export.type_ids or frozenset()) - context.store.known_type_ids())
    if unknown:
        raise invalid(f"Invalid activityTypeIds: activity type id {unknown[0]} not found")
    return Answer([context.bulk.create(export)])


def enqueue(context: Context, request: Request) -> Answer:
    """POST /bulk/v1/activities/export/{exportId}/enqueue.json"""
    return Answer([context.bulk.enqueue(request.path_args[0])])


def status(context: Context, request: Request) -> Answer:
    """GET /bulk/v1/activities/export/{exportId}/status.json"""
    return Answer([context.bulk.status(request.path_args[0])])


def cancel(context: Context, request: Request) -> Answer:
    """POST /bulk/v1/activities/export/{exportId}/cancel.json"""
    return Answer([context.bulk.cancel(request.path_args[0])])


def file(context: Context, request: Request) -> FileAnswer:
    """GET /bulk/v1/activities/export/{exportId}/file.json: the file, or part of it with a Range header."""
    content = context.bulk.file(request.path_args[0])
    if content is None:
        return FileAnswer(404, b"Export file not available", NOT_AVAILABLE)
    return ranged(content, request.headers.get("range", ""), context.bulk.spec.file_content_type)


def ranged(content: bytes, range_header: str, file_type: str = FILE_TYPE) -> FileAnswer:
    """The answer to a GET with this Range header: 200 for no (or an unreadable) range, 206 for one
    satisfiable byte range (`bytes=a-b`, `bytes=a-`, `bytes=-n`), 416 for an unsatisfiable one."""
    size = len(content)
    match = _RANGE.fullmatch(range_header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return FileAnswer(200, content, file_type)
    first_text, last_text = match.groups()
    if first_text:
        first, last = int(first_text), min(int(last_text) if last_text else size - 1, size - 1)
    else:
        first, last = max(0, size - int(last_text)), size - 1
    if first >= size or first > last:
        return FileAnswer(416, b"", file_type, {"Content-Range": f"bytes */{size}"})
    return FileAnswer(206, content[first:last + 1], file_type, {"Content-Range": f"bytes {first}-{last}/{size}"})


def jobs(context: Context, request: Request) -> Answer:
    """GET /bulk/v1/activities/export.json: jobs of the last 7 days, optionally of some statuses, paged."""
    names = request.values("status")
    unknown = [name for name in names if name.lower() not in _STATUS_NAMES]
    if unknown:
        raise invalid(f"Invalid status '{unknown[0]}'")
    statuses = frozenset(_STATUS_NAMES[name.lower()] for name in names) or None
    size = batch_size(request)
    offset = _offset(request.first("nextPageToken"))
    listed = context.bulk.listed(statuses)
    extra = {"nextPageToken": _token(offset + size)} if offset + size < len(listed) else {}
    return Answer(listed[offset:offset + size], extra)


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"jobs:{offset}".encode()).decode()


def _offset(token: str) -> int:
    if not token:
        return 0
    try:
        prefix, _, offset = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if prefix == "jobs" and offset.isdigit():
            return int(offset)
    except ValueError:
        pass
    raise invalid(f"Invalid nextPageToken '{token}'")


_EXPORT = "/bulk/v1/activities/export"
_JOB = _EXPORT + "/([^/]+)"
BULK_ROUTE_TABLE: RouteTable = (
    ("POST", _EXPORT + "/create.json", "bulk_create", create),
    ("POST", _JOB + "/enqueue.json", "bulk_enqueue", enqueue),
    ("GET", _JOB + "/status.json", "bulk_status", status),
    ("GET", _JOB + "/file.json", "bulk_file", file),
    ("POST", _JOB + "/cancel.json", "bulk_cancel", cancel),
    ("GET", _EXPORT + ".json", "bulk_jobs", jobs),
)
BULK_ROUTES = routes(BULK_ROUTE_TABLE)
