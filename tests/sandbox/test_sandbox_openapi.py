"""Every endpoint's answers, successes and errors, validate against Adobe's OpenAPI (swagger 2.0) files.

The swagger definitions are used as a JSON Schema draft 4 document (refs are `#/definitions/...`).
Leniencies, each because Marketo itself answers that way (as Marketo documents it):
- `errors` and `warnings` may be absent (successful answers omit them);
- `result` may be absent from a failed answer (`success: false` answers carry only requestId, success, errors);
- `Attribute.value` may be any JSON scalar (swagger says `object`, real values are strings, numbers, booleans);
- `ActivityType.primaryAttribute` may be absent (New Lead, 12, has none);
- Add Custom Activities result items follow Marketo's documentation: `{id, marketoGUID, status: "added"}` or
  `{status: "skipped", errors}`. Swagger reuses the request's CustomActivity (leadId, activityDate, ...
  required) for them, which is not what Marketo answers.
- `date-time` accepts both `...Z` and the colon-free `...+0000` offset Marketo sends.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pytest
import requests

from marketo_source.sandbox import BulkSpec, Fault, Limits, MarketoSandbox

from sandbox_helpers import EXPORT, Api, BulkApi

SWAGGER_DIR = Path("/work/shared/marketo-api")
ADDED_OR_SKIPPED = {"oneOf": [
    {"type": "object", "required": ["id", "marketoGUID", "status"], "additionalProperties": False,
     "properties": {"id": {"type": "integer"}, "marketoGUID": {"type": "string"}, "status": {"enum": ["added"]}}},
    {"type": "object", "required": ["status", "errors"], "additionalProperties": False,
     "properties": {"status": {"enum": ["skipped"]}, "errors": {"type": "array", "minItems": 1,
                                                                 "items": {"$ref": "#/definitions/Reason"}}}},
]}
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})")
EXTERNAL = "/rest/v1/activities/external"


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    return bool(_DATE_TIME.fullmatch(value)) and datetime.fromisoformat(value) is not None


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("date-time")(_is_date_time)
    checker.checks("int32")(lambda v: not isinstance(v, int) or -(2**31) <= v < 2**31)
    checker.checks("int64")(lambda v: not isinstance(v, int) or -(2**63) <= v < 2**63)
    return checker


def _lenient(definitions: dict[str, Any]) -> dict[str, Any]:
    definitions = copy.deepcopy(definitions)
    for name, definition in definitions.items():
        if name.startswith("ResponseOf"):
            definition["required"] = [key for key in definition["required"] if key not in ("errors", "warnings")]
    del definitions["Attribute"]["properties"]["value"]["type"]
    definitions["ActivityType"]["required"].remove("primaryAttribute")
    definitions["ResponseOfCustomActivity"]["properties"]["result"]["items"] = ADDED_OR_SKIPPED
    return definitions


class SwaggerValidator:
    """Validates answers against the response schema swagger gives for an operation."""

    def __init__(self, swagger_file: str, lenient: bool) -> None:
        self.swagger = json.loads((SWAGGER_DIR / swagger_file).read_text())
        definitions = self.swagger["definitions"]
        self.definitions = _lenient(definitions) if lenient else definitions
        self.checker = _format_checker()

    def validate(self, method: str, path: str, answer: dict[str, Any]) -> None:
        """Validate `answer` of `method path` (a swagger path template); failed answers may omit `result`."""
        reference = self.swagger["paths"][path][method.lower()]["responses"]["200"]["schema"]["$ref"]
        definitions = self.definitions
        if answer.get("success") is False:
            definitions = copy.deepcopy(definitions)
            response = definitions[reference.rsplit("/", 1)[1]]
            response["required"] = [key for key in response["required"] if key != "result"]
            assert answer["errors"], "a failed answer must carry errors"
        schema = {"$ref": reference, "definitions": definitions}
        jsonschema.Draft4Validator(schema, format_checker=self.checker).validate(answer)


@pytest.fixture(scope="module")
def mapi() -> SwaggerValidator:
    return SwaggerValidator("swagger-mapi.json", lenient=True)


def _custom_type_body(api_name: str) -> dict[str, Any]:
    return {"apiName": api_name, "name": f"Type {api_name}", "triggerName": "Does it", "filterName": "Did it",
            "primaryAttribute": {"apiName": "thing", "name": "Thing", "dataType": "string"}}


def test_identity_answer_validates(api: Api) -> None:
    identity = SwaggerValidator("swagger-identity.json", lenient=False)
    for method in ("GET", "POST"):
        answer = api.identity(method)
        assert answer.status_code == 200
        identity.validate(method, "/identity/oauth/token", answer.json())


def test_read_endpoints_validate(ordered_api: Api, mapi: SwaggerValidator) -> None:
    api = ordered_api
    api.sandbox.add_activities(new=100, late=100)  # late commits, and New Leads of leads added since
    token = api.paging_token()
    mapi.validate("GET", "/rest/v1/activities/pagingtoken.json",
                  api.get("/rest/v1/activities/pagingtoken.json", sinceDatetime="2026-10-01T00:00:00+0000"))
    mapi.validate("GET", "/rest/v1/activities/types.json", api.get("/rest/v1/activities/types.json"))
    for first in range(0, 20, 10):
        type_ids = [t["id"] for t in api.sandbox.ground_truth()["activity_types"]][first:first + 10]
        for page in api.pages("/rest/v1/activities.json", token, activityTypeIds=",".join(map(str, type_ids))):
            mapi.validate("GET", "/rest/v1/activities.json", page)
    fields = ",".join(f["name"] for f in api.sandbox.ground_truth()["lead_fields"])
    for page in api.pages("/rest/v1/activities/leadchanges.json", token, fields=fields):
        mapi.validate("GET", "/rest/v1/activities/leadchanges.json", page)
    for page in api.pages("/rest/v1/activities/deletedleads.json", token):
        mapi.validate("GET", "/rest/v1/activities/deletedleads.json", page)
    mapi.validate("GET", "/rest/v1/leads/describe2.json", api.get("/rest/v1/leads/describe2.json"))
    mapi.validate("GET", "/rest/v1/stats/usage.json", api.get("/rest/v1/stats/usage.json"))


def test_read_errors_validate(api: Api, mapi: SwaggerValidator) -> None:
    token = api.paging_token()
    checks: list[tuple[str, dict[str, str]]] = [
        ("/rest/v1/activities/pagingtoken.json", {"sinceDatetime": ""}),
        ("/rest/v1/activities/pagingtoken.json", {"sinceDatetime": "never"}),
        ("/rest/v1/activities.json", {"nextPageToken": token, "activityTypeIds": "999"}),
        ("/rest/v1/activities.json", {"nextPageToken": token, "activityTypeIds": "1", "listId": "1"}),
        ("/rest/v1/activities/leadchanges.json", {"nextPageToken": token}),
        ("/rest/v1/activities/deletedleads.json", {"nextPageToken": "bad"}),
    ]
    for path, params in checks:
        answer = api.get(path, **params)
        assert answer["success"] is False
        mapi.validate("GET", path, answer)
    unauthenticated = requests.get(f"{api.base_url}/rest/v1/activities/types.json", timeout=10).json()
    mapi.validate("GET", "/rest/v1/activities/types.json", unauthenticated)


def test_custom_type_endpoints_validate(api: Api, mapi: SwaggerValidator) -> None:
    type_path = EXTERNAL + "/type/{apiName}"
    calls: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
        ("GET", EXTERNAL + "/types.json", lambda: api.get(f"{EXTERNAL}/types.json")),
        ("POST", EXTERNAL + "/type.json", lambda: api.post(f"{EXTERNAL}/type.json", _custom_type_body("checked"))),
        ("POST", EXTERNAL + "/type.json", lambda: api.post(f"{EXTERNAL}/type.json", _custom_type_body("checked"))),
        ("POST", EXTERNAL + "/type.json", lambda: api.post(f"{EXTERNAL}/type.json", {"apiName": "x"})),
        ("POST", type_path + ".json", lambda: api.post(f"{EXTERNAL}/type/checked.json", {"description": "d"})),
        ("POST", type_path + "/attributes/create.json", lambda: api.post(
            f"{EXTERNAL}/type/checked/attributes/create.json",
            {"attributes": [{"apiName": "size", "name": "Size", "dataType": "integer"}]})),
        ("POST", type_path + "/attributes/update.json", lambda: api.post(
            f"{EXTERNAL}/type/checked/attributes/update.json",
            {"attributes": [{"apiName": "size", "name": "Size", "dataType": "float"}]})),
        ("GET", type_path + "/describe.json", lambda: api.get(f"{EXTERNAL}/type/checked/describe.json", draft="true")),
        ("POST", type_path + "/approve.json", lambda: api.post(f"{EXTERNAL}/type/checked/approve.json", {})),
        ("POST", type_path + "/approve.json", lambda: api.post(f"{EXTERNAL}/type/checked/approve.json", {})),
        ("POST", type_path + "/attributes/delete.json", lambda: api.post(
            f"{EXTERNAL}/type/checked/attributes/delete.json", {"attributes": [{"apiName": "size"}]})),
        ("POST", type_path + "/discardDraft.json", lambda: api.post(f"{EXTERNAL}/type/checked/discardDraft.json", {})),
        ("POST", type_path + "/discardDraft.json", lambda: api.post(f"{EXTERNAL}/type/checked/discardDraft.json", {})),
        ("POST", type_path + "/delete.json", lambda: api.post(f"{EXTERNAL}/type/checked/delete.json", {})),
        ("GET", type_path + "/describe.json", lambda: api.get(f"{EXTERNAL}/type/checked/describe.json")),
    ]
    outcomes = []
    for method, path, call in calls:
        answer = call()
        outcomes.append(answer["success"])
        mapi.validate(method, path, answer)
    assert outcomes == [True, True, False, False, True, True, True, True, True, False, True, True, False, True, False]


def test_add_custom_activities_validates(api: Api, mapi: SwaggerValidator) -> None:
    item = {"leadId": 1001, "activityDate": "2026-11-01T00:00:00Z", "activityTypeId": 100001,
            "primaryAttributeValue": "Sandbox", "attributes": [{"apiName": "usageMinutes", "value": 3}]}
    answer = api.post(f"{EXTERNAL}.json", {"input": [item, {**item, "leadId": 1}]})
    assert [r["status"] for r in answer["result"]] == ["added", "skipped"]
    mapi.validate("POST", EXTERNAL + ".json", answer)
    for body in ({"input": [item] * 301}, {}):
        refused = api.post(f"{EXTERNAL}.json", body)
        assert refused["success"] is False
        mapi.validate("POST", EXTERNAL + ".json", refused)


@pytest.mark.parametrize("kind", ["601", "602", "604", "606", "607", "608", "611", "615", "713"])
def test_injected_marketo_errors_validate(start_sandbox: Callable[..., MarketoSandbox], mapi: SwaggerValidator,
                                          kind: str) -> None:
    api = Api(start_sandbox(faults=[Fault(kind, calls=(2,))]))  # call 1 fetches the paging token
    answer = api.get("/rest/v1/activities.json", nextPageToken=api.paging_token(), activityTypeIds="1")
    assert answer["success"] is False and answer["errors"][0]["code"] == kind
    mapi.validate("GET", "/rest/v1/activities.json", answer)


def test_limit_errors_validate(start_sandbox: Callable[..., MarketoSandbox], mapi: SwaggerValidator) -> None:
    api = Api(start_sandbox(limits=Limits(calls_per_window=1, window_s=5, daily_quota=None)))
    api.get("/rest/v1/activities/types.json")
    rate_limited = api.get("/rest/v1/activities/types.json")
    assert rate_limited["errors"][0]["code"] == "606"
    mapi.validate("GET", "/rest/v1/activities/types.json", rate_limited)


def test_validator_rejects_a_wrong_answer(mapi: SwaggerValidator) -> None:
    wrong = {"requestId": "1#1", "success": True, "result": [{"id": "not an integer", "name": "x", "attributes": []}]}
    with pytest.raises(jsonschema.ValidationError):
        mapi.validate("GET", "/rest/v1/activities/types.json", wrong)


def test_bulk_export_answers_validate(start_sandbox: Callable[..., MarketoSandbox], mapi: SwaggerValidator) -> None:
    bulk = BulkSpec(queue_s=0, processing_s=0.05, status_interval_s=0.01, fail_jobs=(2,), max_queued=2)
    api = BulkApi(start_sandbox(bulk=bulk))
    job = EXPORT + "/{exportId}"
    answers: list[tuple[str, str, dict[str, Any]]] = []

    def call(method: str, path: str, answer: dict[str, Any]) -> dict[str, Any]:
        answers.append((method, path, answer))
        return answer

    ids = [call("POST", EXPORT + "/create.json", api.create())["result"][0]["exportId"] for _ in range(4)]
    call("POST", EXPORT + "/create.json", api.create(activityTypeIds=[37]))
    call("POST", EXPORT + "/create.json", api.create(end="2026-12-01T00:00:00Z"))
    for export_id in ids[:2]:
        call("POST", job + "/enqueue.json", api.job("enqueue", export_id))
    call("POST", job + "/enqueue.json", api.job("enqueue", ids[0]))  # already queued
    call("POST", job + "/enqueue.json", api.job("enqueue", ids[2]))  # queue full
    call("POST", job + "/cancel.json", api.job("cancel", ids[3]))
    call("POST", job + "/cancel.json", api.job("cancel", "unknown"))
    for export_id in ids[:2]:
        api.wait(export_id, "Completed", "Failed")
    for export_id in ids:
        call("GET", job + "/status.json", api.job("status", export_id))
    call("GET", job + "/status.json", api.job("status", "unknown"))
    call("GET", EXPORT + ".json", api.get(f"{EXPORT}.json", batchSize=2))
    call("GET", EXPORT + ".json", api.get(f"{EXPORT}.json", status="completed,failed"))
    call("GET", EXPORT + ".json", api.get(f"{EXPORT}.json", status="never"))
    statuses = {status["status"] for _, path, answer in answers if path.endswith("status.json") and answer["success"]
                for status in answer["result"]}
    assert statuses == {"Completed", "Failed", "Created", "Cancelled"}
    assert [answer["success"] for _, _, answer in answers].count(False) == 7
    assert "nextPageToken" in answers[-3][2]
    for method, path, answer in answers:
        mapi.validate(method, path, answer)
    completed = next(answer for _, path, answer in answers
                     if path.endswith("status.json") and answer.get("result", [{}])[0].get("fileSize"))
    wrong = copy.deepcopy(completed)
    wrong["result"][0]["fileSize"] = str(wrong["result"][0]["fileSize"])
    with pytest.raises(jsonschema.ValidationError):
        mapi.validate("GET", job + "/status.json", wrong)
