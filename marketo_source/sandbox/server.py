"""HTTP transport: routing, the REST call pipeline (limits, faults, auth), the envelope and admin endpoints."""

from __future__ import annotations

import itertools
import json
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from .api import ROUTES, Answer, Context, Endpoint, FileAnswer, Request, find_route
from .auth import AccessTokens
from .bulk import BulkExports
from .bulk_api import BULK_ROUTES
from .errors import MESSAGES, ApiError
from .faults import Fault, FaultInjector
from .limits import LimitGate
from .records import dumps
from .stats import Stats
from .store import Store

MAX_URI_BYTES = 8192
MAX_BODY_BYTES = 1024 * 1024
JSON_TYPE = "application/json;charset=UTF-8"
FORM_TYPE = "application/x-www-form-urlencoded"
ALL_ROUTES = ROUTES + BULK_ROUTES


@dataclass
class Response:
    """What the handler writes; `reset` closes the connection with a TCP RST instead, `cut_after` closes it
    after that many bytes of the body (the headers announce the whole body)."""

    status: int = 200
    body: bytes = b""
    content_type: str = JSON_TYPE
    reset: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None


def plain(status: int, text: str) -> Response:
    """A non-Marketo answer, as the web tier in front of Marketo gives it."""
    return Response(status, text.encode(), "text/plain;charset=UTF-8")


class Envelope:
    """Builds Marketo's answer envelope; records may arrive pre-rendered as bytes."""

    def __init__(self) -> None:
        self.counter = itertools.count(1)

    def request_id(self) -> str:
        """A Marketo-looking request id ("<hex>#<hex>")."""
        return f"{next(self.counter):x}#{int(time.time() * 1000):x}"

    def success(self, answer: Answer) -> bytes:
        """Serialize a successful answer; `errors` and `warnings` are left out, as Marketo does."""
        parts = [b'{"requestId":' + dumps(self.request_id())]
        if answer.result is not None:
            items = (item if isinstance(item, bytes) else dumps(item) for item in answer.result)
            parts.append(b'"result":[' + b",".join(items) + b"]")
        parts.append(b'"success":true')
        parts += [dumps(key) + b":" + dumps(value) for key, value in answer.extra.items()]
        return b",".join(parts) + b"}"

    def failure(self, error: ApiError) -> bytes:
        """Serialize an error answer."""
        return dumps({"requestId": self.request_id(), "success": False,
                      "errors": [{"code": error.code, "message": error.message}]})


class SandboxApp:
    """Everything between a parsed HTTP request and its Response."""

    def __init__(self, store: Store, bulk: BulkExports, tokens: AccessTokens, gate: LimitGate,
                 faults: FaultInjector, stats: Stats, block_size: int, stopping: threading.Event) -> None:
        self.store = store
        self.tokens = tokens
        self.gate = gate
        self.faults = faults
        self.stats = stats
        self.stopping = stopping
        self.envelope = Envelope()
        self.context = Context(store, block_size, lambda: gate.quota_used, bulk)
        self.admin: dict[tuple[str, str], Callable[[bytes], Any]] = {}

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Response:
        """Answer one HTTP request."""
        url = urlsplit(target)
        params = parse_qs(url.query, keep_blank_values=True)
        if method == "POST" and headers.get("content-type", "").startswith(FORM_TYPE):
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
            if form.pop("_method", [""])[0].upper() == "GET":
                method, body = "GET", b""
            params.update(form)
        if url.path.startswith("/_sandbox/"):
            return self._admin(method, url.path, body)
        if url.path == "/identity/oauth/token":
            return self._identity(params)
        return self._rest(method, url.path, Request(params, body, headers=headers))

    def _identity(self, params: dict[str, list[str]]) -> Response:
        self.stats.call("identity", rest=False)
        answer = self.tokens.issue(*((params.get(name) or [""])[0] for name in
                                     ("client_id", "client_secret", "grant_type")))
        if answer is None:
            self.stats.error("http401")
            return Response(401, dumps({"error": "invalid_client", "error_description": "Bad client credentials"}))
        return Response(200, dumps(answer))

    def _admin(self, method: str, path: str, body: bytes) -> Response:
        action = self.admin.get((method, path))
        if action is None:
            return plain(404, "Not Found")
        try:
            return Response(200, dumps(action(body)))
        except (ValueError, TypeError) as error:
            return plain(400, str(error))

    def _rest(self, method: str, path: str, request: Request) -> Response:
        routes, path_args = find_route(path, ALL_ROUTES)
        route = next((candidate for candidate in routes if candidate.method == method), None)
        if route is None:
            status, text = (405, "Method Not Allowed") if routes else (404, "Not Found")
            self.stats.call("unknown", rest=False)
            self.stats.error(f"http{status}")
            return plain(status, text)
        request.path_args = path_args
        call_number = self.stats.call(route.name, rest=True)
        self._auto_add(call_number)
        try:
            self.gate.enter()
        except ApiError as error:
            return self._failure(error)
        try:
            return self._admitted(route.name, route.endpoint, call_number, request)
        finally:
            self.gate.leave()

    def _auto_add(self, call_number: int) -> None:
        auto_add = self.store.spec.auto_add
        if auto_add is not None and call_number % auto_add[0] == 0:
            self.store.add_activities(auto_add[1], auto_add[2])

    def _admitted(self, name: str, endpoint: Endpoint, call_number: int, request: Request) -> Response:
        try:
            self.gate.admit_rate()
        except ApiError as error:
            return self._failure(error)
        fault = self.faults.pick(call_number, name)
        if fault is not None:
            self.stats.fault(fault.kind)
            injected = self._inject(fault)
            if injected is not None:
                return injected
        try:
            # Only calls that reach the endpoint count against the quota: limit rejections, injected
            # faults (604, 608, 611, ...) and 601/602 do not, as Marketo documents.
            self.gate.check_quota()
            self._authenticate(request)
            self.stopping.wait(self.gate.latency_for(name))
            self.gate.count_quota()
            answer = endpoint(self.context, request)
            if isinstance(answer, FileAnswer):
                response = Response(answer.status, answer.body, answer.content_type, headers=answer.headers)
            else:
                response = Response(200, self.envelope.success(answer))
        except ApiError as error:
            response = self._failure(error)
        if fault is not None and fault.kind == "truncated":
            self.stats.error("truncated")
            response.body = response.body[: len(response.body) // 2]
        if fault is not None and fault.kind == "cut":
            self.stats.error("cut")
            response.cut_after = fault.cut_bytes
        return response

    def _authenticate(self, request: Request) -> None:
        # Marketo refuses the access_token query parameter since 2026-08-31, even with a valid token.
        if "access_token" in request.params:
            raise ApiError("601")
        authorization = request.headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        self.tokens.check(token.strip() if scheme.lower() == "bearer" else None)

    def _inject(self, fault: Fault) -> Response | None:
        """The injected answer, or None when the call proceeds (slow, truncated and cut answers)."""
        if fault.kind == "slow":
            self.stopping.wait(fault.slow_s)
        elif fault.kind == "reset":
            self.stats.error("reset")
            return Response(reset=True)
        elif fault.kind.startswith("http"):
            self.stats.error(fault.kind)
            status = int(fault.kind[4:])
            return Response(status, f"<html><body>{status} error</body></html>".encode(), "text/html")
        elif fault.kind not in ("truncated", "cut"):
            message = self.gate.rate_message() if fault.kind == "606" else MESSAGES[fault.kind]
            return self._failure(ApiError(fault.kind, message))
        return None

    def _failure(self, error: ApiError) -> Response:
        self.stats.error(error.code)
        return Response(200, self.envelope.failure(error))


class SandboxHandler(BaseHTTPRequestHandler):
    """Reads a request, lets the SandboxApp answer it, writes the answer (keep-alive, HTTP/1.1)."""

    protocol_version = "HTTP/1.1"
    server_version = "MarketoSandbox/1.0"
    timeout = 120  # idle keep-alive connections must not pin a thread forever
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would delay the second 40 ms
    server: SandboxHTTPServer

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the body is left unread, so the connection cannot be reused
            self.server.app.stats.error("http413")
            self._write(plain(413, "Request Entity Too Large"))
            return
        body = self.rfile.read(length) if length else b""
        if len(self.path.encode()) > MAX_URI_BYTES:
            self.server.app.stats.error("http414")
            self._write(plain(414, "Request-URI Too Long"))
            return
        headers = {key.lower(): value for key, value in self.headers.items()}
        response = self.server.app.handle(method, self.path, headers, body)
        if response.reset:
            self._reset()
        else:
            self._write(response)

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if response.cut_after is None:
            self.wfile.write(response.body)
        else:
            self.wfile.write(response.body[:response.cut_after])
            self.close_connection = True

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests and benchmarks make many calls."""


class SandboxHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with daemon threads that knows its SandboxApp."""

    daemon_threads = True
    server_address: tuple[str, int]  # once bound, the IPv4 (host, port) the socket reports

    def __init__(self, address: tuple[str, int], app: SandboxApp) -> None:
        super().__init__(address, SandboxHandler)
        self.app = app

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client went away (it gave up on a slow answer); report anything else."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, TimeoutError)):
            super().handle_error(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Close without the FIN of a graceful shutdown when the handler asked for a reset."""
        linger_on, _ = struct.unpack("ii", request.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))
        if linger_on:
            self.close_request(request)
        else:
            super().shutdown_request(request)


def admin_actions(stats: Callable[[], Any], reset_stats: Callable[[], None], ground_truth: Callable[[], Any],
                  add_activities: Callable[[int, int, float | None, bool], Any], bulk: BulkExports,
                  ) -> dict[tuple[str, str], Callable[[bytes], Any]]:
    """The /_sandbox/ endpoints, for tests and benchmarks that run the sandbox in another process.

    `POST /_sandbox/add-activities` takes `{"new": n, "late": m, "lateness_s": s, "hostile": b}`, each optional.
    `GET /_sandbox/bulk-jobs` lists the export jobs, `POST /_sandbox/bulk-new-day` starts a new export day,
    `POST /_sandbox/bulk-expire-file` with `{"exportId": id}` makes a job's file gone.
    """

    def add(body: bytes) -> Any:
        spec = json.loads(body or b"{}")
        lateness_s = spec.get("lateness_s")
        return add_activities(int(spec.get("new", 0)), int(spec.get("late", 0)),
                              None if lateness_s is None else float(lateness_s), bool(spec.get("hostile", False)))

    def reset(_: bytes) -> dict[str, bool]:
        reset_stats()
        return {"ok": True}

    def new_day(_: bytes) -> dict[str, bool]:
        bulk.new_day()
        return {"ok": True}

    def expire_file(body: bytes) -> dict[str, bool]:
        bulk.expire_file(str(json.loads(body or b"{}").get("exportId", "")))
        return {"ok": True}

    return {
        ("GET", "/_sandbox/stats"): lambda _: stats(),
        ("POST", "/_sandbox/reset-stats"): reset,
        ("GET", "/_sandbox/ground-truth"): lambda _: ground_truth(),
        ("POST", "/_sandbox/add-activities"): add,
        ("GET", "/_sandbox/bulk-jobs"): lambda _: bulk.snapshot(),
        ("POST", "/_sandbox/bulk-new-day"): new_day,
        ("POST", "/_sandbox/bulk-expire-file"): expire_file,
    }
