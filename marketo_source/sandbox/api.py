"""The REST endpoints: parameter checks as Marketo makes them, then a call into the Store."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from .auth import SCOPE
from .bulk import BulkExports
from .errors import ApiError, blank, invalid
from .store import ReadQuery, Store, lead_fields, parse_datetime_ms

MAX_BATCH = 300
MAX_TYPE_IDS = 10
MAX_LEAD_IDS = 30
MAX_CUSTOM_ACTIVITIES = 300


@dataclass
class Request:
    """A REST request as the endpoints see it; POST `_method=GET` calls arrive here as GETs."""

    params: dict[str, list[str]]
    body: bytes = b""
    path_args: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case

    def first(self, name: str) -> str:
        """The first value of a query parameter, stripped ("" when absent)."""
        return (self.params.get(name) or [""])[0].strip()

    def values(self, name: str) -> list[str]:
        """All values of a list parameter, given comma separated or repeated."""
        return [part.strip() for value in self.params.get(name, []) for part in value.split(",") if part.strip()]

    def json(self) -> Any:
        """The JSON body.

        Raises:
            ApiError: 609 when the body is not JSON.
        """
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise ApiError("609") from None


@dataclass
class Answer:
    """A successful answer: result items (pre-rendered bytes or JSON values) and extra envelope keys."""

    result: list[Any] | None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class FileAnswer:
    """An answer outside Marketo's envelope, such as an export file or its plain-text 404."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """What endpoints need besides the request."""

    store: Store
    block_size: int
    quota_used: Callable[[], int]
    bulk: BulkExports


Endpoint = Callable[[Context, Request], Answer | FileAnswer]
RouteTable = tuple[tuple[str, str, str, Endpoint], ...]


def _required(request: Request, name: str) -> str:
    value = request.first(name)
    if not value:
        raise blank(name)
    return value


def _integers(request: Request, name: str, maximum: int | None = None) -> frozenset[int] | None:
    values = request.values(name)
    if not values:
        return None
    if maximum is not None and len(values) > maximum:
        raise invalid(f"{name} exceeds the maximum of {maximum} values")
    try:
        return frozenset(int(value) for value in values)
    except ValueError:
        raise invalid(f"Invalid value for {name}: {','.join(values)}") from None


def batch_size(request: Request) -> int:
    """The batchSize parameter, 1 to 300 (default 300).

    Raises:
        ApiError: 1003 for a value out of range.
    """
    text = request.first("batchSize")
    if not text:
        return MAX_BATCH
    if not text.isdigit() or not 1 <= int(text) <= MAX_BATCH:
        raise invalid(f"Invalid batchSize '{text}': must be between 1 and {MAX_BATCH}")
    return int(text)


def _lead_filter(context: Context, request: Request) -> frozenset[int] | None:
    lead_ids = _integers(request, "leadIds", MAX_LEAD_IDS)
    list_text = request.first("listId")
    if not list_text:
        return lead_ids
    if not list_text.isdigit():
        raise invalid(f"Invalid value for listId: {list_text}")
    members = context.store.list_members(int(list_text))
    return members if lead_ids is None else members & lead_ids


def _page(context: Context, request: Request, query: ReadQuery) -> Answer:
    token = _required(request, "nextPageToken")
    page = context.store.read(query, token, batch_size(request), context.block_size)
    return Answer(page.records, {"nextPageToken": page.next_page_token, "moreResult": page.more_result})


def activity_types(context: Context, request: Request) -> Answer:
    """GET /rest/v1/activities/types.json"""
    return Answer(context.store.activity_types())


def paging_token(context: Context, request: Request) -> Answer:
    """GET /rest/v1/activities/pagingtoken.json"""
    since_text = _required(request, "sinceDatetime")
    since_ms = parse_datetime_ms(since_text)
    if since_ms is None:
        raise ApiError("704", f"Invalid date value '{since_text}' for sinceDatetime")
    return Answer(None, {"nextPageToken": context.store.paging_token(since_ms)})


def activities(context: Context, request: Request) -> Answer:
    """GET /rest/v1/activities.json"""
    _required(request, "nextPageToken")
    type_ids = _integers(request, "activityTypeIds", MAX_TYPE_IDS)
    if type_ids is None:
        raise blank("activityTypeIds")
    unknown = sorted(type_ids - context.store.known_type_ids())
    if unknown:
        raise invalid(f"Invalid activityTypeIds: activity type id {unknown[0]} not found")
    asset_ids = _integers(request, "assetIds")
    if asset_ids is not None and len(type_ids) != 1:
        raise invalid("assetIds can only be used with exactly one activityTypeId")
    query = ReadQuery("activities", type_ids=type_ids, lead_ids=_lead_filter(context, request), asset_ids=asset_ids)
    return _page(context, request, query)


def lead_changes(context: Context, request: Request) -> Answer:
    """GET /rest/v1/activities/leadchanges.json; unknown field names are ignored, as Marketo does."""
    _required(request, "nextPageToken")
    fields = request.values("fields")
    if not fields:
        raise blank("fields")
    query = ReadQuery("lead_changes", lead_ids=_lead_filter(context, request), fields=tuple(dict.fromkeys(fields)))
    return _page(context, request, query)


def deleted_leads(context: Context, request: Request) -> Answer:
    """GET /rest/v1/activities/deletedleads.json"""
    return _page(context, request, ReadQuery("deleted_leads"))


def custom_types(context: Context, request: Request) -> Answer:
    """GET /rest/v1/activities/external/types.json"""
    return Answer(context.store.custom(lambda registry: registry.render_all()))


def custom_type_describe(context: Context, request: Request) -> Answer:
    """GET .../external/type/{apiName}/describe.json[?draft=true]"""
    draft = request.first("draft").lower() == "true"
    return Answer([context.store.custom(lambda registry: registry.describe(request.path_args[0], draft))])


def custom_type_create(context: Context, request: Request) -> Answer:
    """POST .../external/type.json"""
    body = request.json()
    return Answer([context.store.custom(lambda registry: registry.create(body))])


def _type_operation(operation: str, with_body: bool) -> Endpoint:
    """An endpoint running registry.<operation>(apiName[, body]) for one of the POST .../type/{apiName} calls."""

    def endpoint(context: Context, request: Request) -> Answer:
        arguments = (request.path_args[0], request.json()) if with_body else (request.path_args[0],)
        return Answer([context.store.custom(lambda registry: getattr(registry, operation)(*arguments))])

    endpoint.__doc__ = f"POST custom activity type: {operation}"
    return endpoint


def add_custom_activities(context: Context, request: Request) -> Answer:
    """POST /rest/v1/activities/external.json"""
    body = request.json()
    items = body.get("input") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise blank("input")
    if len(items) > MAX_CUSTOM_ACTIVITIES:
        raise invalid(f"input exceeds the maximum of {MAX_CUSTOM_ACTIVITIES} activities")
    return Answer(context.store.add_custom_activities(items))


def describe_leads(context: Context, request: Request) -> Answer:
    """GET /rest/v1/leads/describe2.json"""
    return Answer([{"name": "API Lead", "searchableFields": [["email"], ["id"]], "fields": lead_fields()}])


def usage(context: Context, request: Request) -> Answer:
    """GET /rest/v1/stats/usage.json: today's calls of the API user."""
    today = datetime.now(timezone.utc).strftime("%Y-%m-%dT00:00:00Z")
    used = context.quota_used()
    return Answer([{"date": today, "total": used, "users": [{"userId": SCOPE, "count": used}]}])


@dataclass(frozen=True)
class Route:
    """A REST path pattern, its method, its endpoint name (used in stats) and its function."""

    method: str
    pattern: re.Pattern[str]
    name: str
    endpoint: Endpoint


_TYPE = "/rest/v1/activities/external/type/([^/]+)"
_ROUTE_TABLE: RouteTable = (
    ("GET", "/rest/v1/activities/types.json", "activity_types", activity_types),
    ("GET", "/rest/v1/activities/pagingtoken.json", "paging_token", paging_token),
    ("GET", "/rest/v1/activities.json", "activities", activities),
    ("GET", "/rest/v1/activities/leadchanges.json", "lead_changes", lead_changes),
    ("GET", "/rest/v1/activities/deletedleads.json", "deleted_leads", deleted_leads),
    ("GET", "/rest/v1/activities/external/types.json", "custom_types", custom_types),
    ("GET", _TYPE + "/describe.json", "custom_type_describe", custom_type_describe),
    ("POST", "/rest/v1/activities/external/type.json", "custom_type_create", custom_type_create),
    ("POST", _TYPE + "/approve.json", "custom_type_approve", _type_operation("approve", False)),
    ("POST", _TYPE + "/discardDraft.json", "custom_type_discard_draft", _type_operation("discard_draft", False)),
    ("POST", _TYPE + "/delete.json", "custom_type_delete", _type_operation("delete", False)),
    ("POST", _TYPE + "/attributes/create.json", "custom_type_attributes_create",
     _type_operation("create_attributes", True)),
    ("POST", _TYPE + "/attributes/update.json", "custom_type_attributes_update",
     _type_operation("update_attributes", True)),
    ("POST", _TYPE + "/attributes/delete.json", "custom_type_attributes_delete",
     _type_operation("delete_attributes", True)),
    ("POST", _TYPE + ".json", "custom_type_update", _type_operation("update", True)),
    ("POST", "/rest/v1/activities/external.json", "add_custom_activities", add_custom_activities),
    ("GET", "/rest/v1/leads/describe2.json", "describe_leads", describe_leads),
    ("GET", "/rest/v1/stats/usage.json", "usage", usage),
)


def routes(table: RouteTable) -> tuple[Route, ...]:
    """Routes of (method, path pattern, name, endpoint) rows; the dot of ".json" matches only a dot."""
    return tuple(Route(method, re.compile(path.replace(".json", r"\.json")), name, endpoint)
                 for method, path, name, endpoint in table)


ROUTES = routes(_ROUTE_TABLE)


def find_route(path: str, candidates: tuple[Route, ...]) -> tuple[list[Route], tuple[str, ...]]:
    """The candidates whose pattern matches `path` (any method) and the captured path arguments."""
    for route in candidates:
        match = route.pattern.fullmatch(path)
        if match:
            same_path = [other for other in candidates if other.pattern.pattern == route.pattern.pattern]
            return same_path, match.groups()
    return [], ()
