"""One HTTP client for every Marketo call: bearer auth, client-side limits, retries and typed errors.

It stands on dlt's helpers: requests go through dlt's `requests` Session, and the access token
comes from dlt's `OAuth2ClientCredentials`. The retry loop is ours because Marketo reports most
errors inside HTTP 200 answers and needs a new token and a replay on 601/602, which dlt's
send-level retry (it resends the same prepared request, old token included) cannot do.
"""

import json
import logging
import random
import re
import threading
import time
from collections import Counter, deque
from contextlib import contextmanager
from typing import Any, Callable, Deque, Dict, Iterator, List, Mapping, Optional, Protocol, Set, TypeVar
from urllib.parse import urlencode, urlsplit

import orjson
import pendulum
import requests
from dlt.common.configuration import configspec
from dlt.sources.helpers.requests import Session
from dlt.sources.helpers.rest_client.auth import OAuth2ClientCredentials
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase

from marketo_source import settings
from marketo_source.config import MarketoConnection, warn_of_a_rate_above_marketos
from marketo_source.errors import (
    MarketoAccessDenied,
    MarketoAuthError,
    MarketoConfigurationError,
    MarketoNotFound,
    MarketoQuotaExceeded,
    MarketoRequestError,
    MarketoTransientError,
    MarketoWriteUncertain,
)

logger = logging.getLogger("marketo_source")

_T = TypeVar("_T")
_TRANSIENT_NETWORK_ERRORS = (
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
)
_CODED_ERRORS = {
    "603": MarketoAccessDenied,
    "607": MarketoQuotaExceeded,
    "610": MarketoNotFound,
}


def normalize_base_url(base_url: str) -> str:
    """Returns the instance root for any of the URLs Marketo's admin shows.

    Accepts `https://123-ABC-456.mktorest.com`, the REST endpoint `.../rest` and the identity
    endpoint `.../identity`, with or without a trailing slash.
    """
    parts = urlsplit(base_url.strip()) if isinstance(base_url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise MarketoConfigurationError.of("base_url", f"{base_url!r} is not an http(s) URL", _BASE_URL_ADVICE)
    path = parts.path.rstrip("/")
    for suffix in (settings.REST_PREFIX, "/identity"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    return f"{parts.scheme}://{parts.netloc}{path}"


_BASE_URL_ADVICE = (
    "give your instance's REST endpoint, e.g. https://123-ABC-456.mktorest.com (Admin > Integration > Web Services)"
)
_CREDENTIALS = "client_id/client_secret"
"""The credentials' settings, named together: Marketo's refusal does not tell which one is wrong."""


@configspec
class MarketoAuth(OAuth2ClientCredentials):
    """dlt's client-credentials flow, made thread safe, renewed before expiry and on 601/602."""

    refresh_margin_s: int = settings.TOKEN_REFRESH_MARGIN_S
    settings_section: str = MarketoConnection.SECTION
    """Where the instance and credentials were set (`sources.marketo`, ...): errors name it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._lock = threading.Lock()
        self._refresh_at = pendulum.now()

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.current_token()}"
        return request

    def current_token(self) -> str:
        """Returns a token with some life left, asking for a new one when needed."""
        with self._lock:
            if self.access_token is None or pendulum.now() >= self._refresh_at:
                self.obtain_token()
            return str(self.access_token)

    def invalidate(self, token: str) -> None:
        """Drops `token` after Marketo refused it, unless another thread already replaced it."""
        with self._lock:
            if self.access_token == token:
                self.access_token = None

    def obtain_token(self) -> None:
        """Asks the identity service for a token; a refusal or an answer that is not Marketo's
        raises an error naming the setting to fix, in the section it came from."""
        base_url = f"{self.settings_section}.base_url"
        try:
            super().obtain_token()
        except requests.HTTPError as error:
            status = error.response.status_code if error.response is not None else None
            if status == 401:
                raise MarketoAuthError.of(
                    f"{self.settings_section}.{_CREDENTIALS}", "Marketo refused them (HTTP 401)",
                    "give the client id and secret of the API user's LaunchPoint service (Admin > Integration > "
                    "LaunchPoint > View Details)", code="401",
                ) from None
            raise MarketoConfigurationError.of(
                base_url, f"{self.access_token_url} answered HTTP {status}, not an access token", _BASE_URL_ADVICE,
                code=str(status),
            ) from None
        except (requests.ConnectionError, requests.Timeout) as error:
            raise MarketoConfigurationError.of(
                base_url, f"cannot reach {self.access_token_url.removesuffix(settings.IDENTITY_PATH)} "
                f"({_network_reason(error)})", "check the host, and that this machine can reach it: it should be "
                "your instance's REST endpoint, e.g. https://123-ABC-456.mktorest.com (Admin > Integration > Web "
                "Services)",
            ) from None
        except ValueError:
            raise MarketoConfigurationError.of(
                base_url, f"{self.access_token_url} did not answer as Marketo's identity service does",
                _BASE_URL_ADVICE,
            ) from None
        if not self.access_token or self.access_token == "None":
            raise MarketoConfigurationError.of(
                base_url, f"{self.access_token_url} answered without an access token", _BASE_URL_ADVICE
            )
        self._refresh_at = self._refresh_time()

    def _refresh_time(self) -> pendulum.DateTime:
        # Marketo hands out the same token until it expires, so a token with less life than
        # the margin is used to its end rather than asked for again and again.
        life_s = (self.token_expiry - pendulum.now()).total_seconds()
        if life_s > self.refresh_margin_s:
            return self.token_expiry.subtract(seconds=self.refresh_margin_s)
        return self.token_expiry


def _network_reason(error: requests.RequestException) -> str:
    """What the network answered, e.g. "connection refused": the OS error that requests and
    urllib3 wrap, else "timed out" or the error's type."""
    pending: List[BaseException] = [error]
    seen: Set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror.lower()
        linked = (getattr(current, "reason", None), current.__cause__, current.__context__, *current.args)
        pending.extend(link for link in linked if isinstance(link, BaseException))
    return "timed out" if isinstance(error, requests.Timeout) else type(error).__name__


_ANSWER_TIME_WEIGHT = 0.05
"""Weight of the newest call in `answer_s`: about the last 20 calls count."""


class RateLimitWaits(Protocol):
    """Told when a call waits for the rate limit, so that a run can say why its calls stand still."""

    def waiting(self, seconds: float, calls: int, period_s: float) -> None:
        """A call waits `seconds` for a place in the window of `calls` per `period_s`.

        Called before every wait whose length the clock alone decides, by each waiting thread and
        again after each wake-up, with the limiter's lock held: it must return at once.
        """


class CallLimiter:
    """Keeps calls within a sliding window and caps the calls in flight.

    A call counts against the window from the moment it starts until `period_s` after it ends.
    Marketo counts it when it arrives, which lies between the two, so however the network
    delays calls, Marketo never sees more than `calls` in a window. Every attempt passes
    through `slot()`, retries included, because Marketo counts each one.

    Once the window has been full, calls start at most one per `period_s / calls` until it
    empties again: otherwise the calls of one window would free their places together a window
    later, and the run would go on in bursts and pauses, with every chain of pages stalled in the
    pauses. A run that never fills the window is not paced.

    When calls wait, urgent calls (those of the chain of pages a run waits for) take the places
    that free up before the others, though not from a call that has waited a whole window.
    `waits`, when given, is told of each wait (see `RateLimitWaits`).
    """

    def __init__(
        self, calls: int, period_s: float, max_concurrency: int, waits: Optional[RateLimitWaits] = None
    ) -> None:
        self.calls = calls
        self.period_s = period_s
        self._waits = waits
        self._in_flight = threading.BoundedSemaphore(max_concurrency)
        self._ended: Deque[float] = deque()
        self._started = 0
        self._urgent_waiting = 0
        self._paced = False
        self._next_start = 0.0
        self._changed = threading.Condition()
        """Notified when a call ends or an urgent call stops waiting: either may let a waiting call start."""

    @contextmanager
    def slot(self, urgent: bool = False) -> Iterator[None]:
        with self._in_flight:
            self._wait_for_window(urgent)
            try:
                yield
            finally:
                with self._changed:
                    self._started -= 1
                    self._ended.append(time.monotonic())
                    self._changed.notify_all()

    def _wait_for_window(self, urgent: bool) -> None:
        waiting, since = False, time.monotonic()
        with self._changed:
            try:
                while True:
                    now = time.monotonic()
                    while self._ended and self._ended[0] <= now - self.period_s:
                        self._ended.popleft()
                    free = self.calls - len(self._ended) - self._started
                    # Paced from the first full window until the window empties again.
                    self._paced = free < self.calls and (self._paced or free <= 0)
                    if self._may_start(urgent, free, now, now - since):
                        self._started += 1
                        if waiting:
                            self._urgent_waiting -= 1
                            waiting = False
                            self._changed.notify_all()
                        if self._paced:
                            self._next_start = max(self._next_start, now) + self.period_s / self.calls
                        return
                    if urgent and not waiting:
                        self._urgent_waiting, waiting = self._urgent_waiting + 1, True
                    wait_s = self._wait_s(free, now)
                    if wait_s is not None and self._waits is not None:
                        self._waits.waiting(wait_s, self.calls, self.period_s)
                    self._changed.wait(wait_s)
            finally:
                if waiting:  # left by an exception (an interrupt in the wait)
                    self._urgent_waiting -= 1
                    self._changed.notify_all()

    def _wait_s(self, free: int, now: float) -> Optional[float]:
        """How long until a call may start, if time alone decides it; None to wait for a call to end."""
        if self._paced and free > 0:
            return max(self._next_start - now, 0.001)
        return self._ended[0] + self.period_s - now if self._ended else None

    def _may_start(self, urgent: bool, free: int, now: float, waited_s: float) -> bool:
        urgent_ahead = 0 if urgent else self._urgent_waiting
        if self._paced:
            # One start per interval: an urgent call waiting takes it, unless another call has
            # waited a whole window already, so that calls never urgent (the catalog's) still go.
            return free > 0 and now >= self._next_start and (not urgent_ahead or waited_s >= self.period_s)
        return free > urgent_ahead


class CallGate(Protocol):
    """Decides, before each attempt, whether a call may be made."""

    def admit(self, path: str) -> None:
        """Counts a call to `path` about to be made, or raises to refuse it."""


class _Retry(Exception):
    """An attempt failed in a way worth another try."""

    def __init__(self, reason: str, code: Optional[str] = None) -> None:
        super().__init__(reason)
        self.code = code


class _TokenRefused(Exception):
    """601/602: the call is replayed with a new token."""


class _BearerToken(AuthBase):
    """Sends an access token in the Authorization header.

    Given as the request's auth rather than as a header, it also keeps requests from reading
    ~/.netrc on every call (5 % of the extract's CPU in the benchmark's profile), whose entry for the
    host would replace the token.
    """

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


class MarketoClient:
    """Calls the Marketo REST API within its limits and turns its answers into results or errors.

    Args:
        base_url: The instance's REST endpoint, e.g. `https://123-ABC-456.mktorest.com`.
        client_id: The LaunchPoint service's client id.
        client_secret: The LaunchPoint service's client secret.
        gate: Asked before every attempt, retries included, whether the call may be made; it
            raises to refuse it (the daily call limit, `budget.DailyUsage`).
        waits: Told when a call waits for the rate limit (`run_report.RateLimitNotices` logs it).
        section: Where the instance and credentials were set, e.g. `destination.marketo_custom_activities`:
            errors about them name the setting there.
        **options: Any other setting of `config.MarketoConnection` (limits, timeouts, retries),
            e.g. `rate_limit_calls=50`; what is not given keeps its default.
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        gate: Optional["CallGate"] = None,
        waits: Optional[RateLimitWaits] = None,
        section: str = MarketoConnection.SECTION,
        **options: Any,
    ) -> None:
        connection = MarketoConnection(base_url=base_url, client_id=client_id, client_secret=client_secret, **options)
        connection.checked()
        # Warned of here rather than in checked(), which `connect` calls too: once per client.
        warn_of_a_rate_above_marketos(connection.rate_limit_calls, connection.rate_limit_period_s)
        self.base_url = normalize_base_url(base_url)
        self.rest_url = self.base_url + settings.REST_PREFIX
        self.section = section
        self.read_timeout_s = connection.read_timeout_s
        self.paging_token_timeout_s = connection.paging_token_timeout_s
        self.write_timeout_s = connection.write_timeout_s
        self.max_attempts = connection.max_attempts
        self.backoff_base_s = connection.backoff_base_s
        self.backoff_max_s = connection.backoff_max_s
        self.limiter = CallLimiter(
            connection.rate_limit_calls, connection.rate_limit_period_s, connection.max_concurrency, waits
        )
        self._adapter = HTTPAdapter(pool_connections=1, pool_maxsize=connection.max_concurrency + 2)
        self._local = threading.local()
        self.auth = MarketoAuth(
            access_token_url=self.base_url + settings.IDENTITY_PATH,
            client_id=client_id,
            client_secret=client_secret,
            session=self._session(),
            settings_section=section,
        )
        self._counts_lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        """Calls sent per API path, retries included: what this client spent of the quota."""
        self.retries: Counter[str] = Counter()
        """Failed attempts per reason (a Marketo code, an HTTP status or a network error)."""
        self.answer_s: Optional[float] = None
        """How long Marketo takes to answer, lately: a moving mean over the last calls, waits for the
        rate limit left out."""
        self._gate = gate

    @classmethod
    def connect(
        cls, connection: MarketoConnection, gate: Optional["CallGate"] = None, waits: Optional[RateLimitWaits] = None
    ) -> "MarketoClient":
        """A client for a resolved configuration (the source's, the destination's, or a connection);
        a setting that is missing or unusable is named where that configuration is read from."""
        connection.checked()
        return cls(
            connection.base_url or "", connection.client_id or "", connection.client_secret or "", gate=gate,
            waits=waits, section=connection.SECTION, **connection.client_options(),
        )

    def get(
        self,
        path: str,
        params: Optional[Mapping[str, Any]] = None,
        timeout: Optional[float] = None,
        urgent: bool = False,
    ) -> Dict[str, Any]:
        """Calls a read endpoint and returns Marketo's answer (the whole envelope).

        A query that would pass Marketo's 8 KB URL limit goes as POST with `_method=GET`. An
        urgent call goes first when the rate limit makes calls wait.
        """
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None})
        url = self.url_of(path)
        if len(url) + 1 + len(query) > settings.MAX_GET_URL_BYTES:
            return self._call("POST", path, timeout, data=f"{query}&_method=GET", content_type=_FORM, urgent=urgent)
        return self._call("GET", path, timeout, params=query, urgent=urgent)

    def post(
        self, path: str, body: Mapping[str, Any], timeout: Optional[float] = None, idempotent: bool = True
    ) -> Dict[str, Any]:
        """Calls a write endpoint with a JSON body and returns Marketo's answer.

        Args:
            path: The API path under /rest.
            body: The JSON body.
            timeout: Seconds to wait for the answer; default `read_timeout_s`.
            idempotent: False for calls that must not be applied twice (Add Custom Activities):
                such a call is sent again only after answers Marketo gives before processing
                (601, 602, 606, 615); any other transient failure raises `MarketoWriteUncertain`.
        """
        return self._call("POST", path, timeout, data=json.dumps(body), content_type=_JSON, idempotent=idempotent)

    def url_of(self, path: str) -> str:
        """The URL of an API path: Bulk Extract's paths (`/bulk/...`) lie under the instance root, the
        others under `/rest`."""
        return f"{self.base_url}{path}" if path.startswith(settings.BULK_PREFIX) else f"{self.rest_url}{path}"

    def _call(
        self,
        method: str,
        path: str,
        timeout: Optional[float],
        params: Optional[str] = None,
        data: Optional[str] = None,
        content_type: Optional[str] = None,
        idempotent: bool = True,
        urgent: bool = False,
    ) -> Dict[str, Any]:
        headers = {"Content-Type": content_type} if content_type else {}
        request = dict(params=params, data=data, timeout=timeout or self.read_timeout_s)
        return self._retrying(
            path, idempotent,
            lambda token: self._attempt(method, path, headers, {**request, "auth": _BearerToken(token)}, urgent),
        )

    def _retrying(self, path: str, idempotent: bool, attempt_with: Callable[[str], _T]) -> _T:
        """`attempt_with(access token)`, again with a new token after 601/602 and again after a
        transient failure, as long as attempts are left."""
        attempt, auth_replays = 1, 0
        while True:
            token = self.auth.current_token()
            try:
                return attempt_with(token)
            except _TokenRefused:
                self.auth.invalidate(token)
                auth_replays += 1
                if auth_replays > settings.MAX_AUTH_REPLAYS:
                    raise MarketoAuthError.of(
                        f"{self.section}.{_CREDENTIALS}", f"Marketo kept refusing new access tokens on {path}",
                        "check that the API user's LaunchPoint service is active (Admin > Integration > LaunchPoint)",
                        endpoint=path,
                    ) from None
            except _Retry as failure:
                self._count(self.retries, failure.code or str(failure))
                if not idempotent and failure.code not in settings.REFUSED_BEFORE_PROCESSING_CODES:
                    raise MarketoWriteUncertain(
                        f"{path} failed ({failure}) and Marketo may have applied it; not sent again.",
                        code=failure.code,
                        endpoint=path,
                    ) from None
                if attempt >= self.max_attempts:
                    raise MarketoTransientError(
                        f"{path} still failed after {attempt} attempts: {failure}. The saved "
                        "position is kept; run the pipeline again later.",
                        code=failure.code,
                        endpoint=path,
                    ) from None
                delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)
                logger.warning("Marketo %s failed (%s); retry %d in %.1f s", path, failure, attempt, delay)
                time.sleep(delay)
                attempt += 1

    def _attempt(
        self, method: str, path: str, headers: Dict[str, str], request: Dict[str, Any], urgent: bool
    ) -> Dict[str, Any]:
        return self._read_answer(self._send(method, path, urgent, headers=headers, **request), path)

    def _send(self, method: str, path: str, urgent: bool = False, **request: Any) -> requests.Response:
        """One attempt of a call: admitted by the gate, counted, within the rate limit, timed."""
        if self._gate is not None:
            self._gate.admit(path)
        self._count(self.calls, _endpoint_of(path))
        try:
            with self.limiter.slot(urgent):
                response = self._session().request(method, self.url_of(path), **request)
        except _TRANSIENT_NETWORK_ERRORS as error:
            raise _Retry(type(error).__name__) from None
        self._time_answer(response.elapsed.total_seconds())
        return response

    def _time_answer(self, seconds: float) -> None:
        with self._counts_lock:
            last = self.answer_s
            self.answer_s = seconds if last is None else last + _ANSWER_TIME_WEIGHT * (seconds - last)

    def _read_answer(self, response: requests.Response, path: str) -> Dict[str, Any]:
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retry(f"HTTP {response.status_code}", str(response.status_code))
        if response.status_code != 200:
            raise self._not_marketo(path, f"answered HTTP {response.status_code}", code=str(response.status_code))
        try:
            answer = orjson.loads(response.content)
        except ValueError:
            if response.text.lstrip().startswith("{"):
                raise _Retry("truncated JSON") from None
            raise self._not_marketo(path, "did not answer JSON") from None
        if not isinstance(answer, dict) or "success" not in answer:
            raise self._not_marketo(path, "did not answer as Marketo does")
        if not answer["success"]:
            _raise_for_errors(answer.get("errors") or [], path)
        return answer

    def _not_marketo(self, path: str, problem: str, code: Optional[str] = None) -> MarketoConfigurationError:
        """The error of an answer no Marketo REST endpoint gives: the base URL names something else."""
        return MarketoConfigurationError.of(
            f"{self.section}.base_url", f"{self.url_of(path)} {problem}", _BASE_URL_ADVICE, code=code, endpoint=path
        )

    def _session(self) -> Session:
        # requests sessions are not safe to share across threads; the connection pool is.
        session: Optional[Session] = getattr(self._local, "session", None)
        if session is None:
            session = Session(raise_for_status=False)
            session.mount("http://", self._adapter)
            session.mount("https://", self._adapter)
            self._local.session = session
        return session

    def calls_made(self) -> int:
        """Calls sent so far, retries included."""
        with self._counts_lock:
            return sum(self.calls.values())

    def _count(self, counter: Counter[str], key: str) -> None:
        with self._counts_lock:
            counter[key] += 1

    def get_file(self, path: str, headers: Mapping[str, str], timeout: Optional[float] = None) -> requests.Response:
        """GETs a file under the instance root (Bulk Extract's `/bulk/...`, not `/rest`), streamed.

        The call is made, counted and retried as every REST call is (token, daily gate, rate
        limit, 429/5xx and network errors, 601/602 in a JSON answer). Its place in the rate limit
        and among the calls in flight is held until the headers arrive: the body is read by the
        caller, from the open response it gets here, which it must close.

        Args:
            path: The path under the instance root, e.g. `/bulk/v1/activities/export/<id>/file.json`.
            headers: Headers to send, e.g. `Range`.
            timeout: Seconds to wait for the headers, and between two chunks of the body;
                default `read_timeout_s`.

        Returns:
            The open response: 200 or 206 with the file, or any other status but 429 and 5xx,
            for the caller to judge (Marketo answers 404 for a file that is not, or no longer, there).
        """
        return self._retrying(path, True, lambda token: self._file_attempt(path, headers, token, timeout))

    def _file_attempt(
        self, path: str, headers: Mapping[str, str], token: str, timeout: Optional[float]
    ) -> requests.Response:
        response = self._send("GET", path, headers=dict(headers), auth=_BearerToken(token),
                              timeout=timeout or self.read_timeout_s, stream=True)
        if response.status_code == 200 and _is_json_answer(response):
            # Marketo reports errors (an expired token among them) in a JSON answer, not in a file.
            with response:
                self._read_answer(response, path)
            raise MarketoRequestError(f"{path} answered JSON, not a file.", endpoint=path)
        if response.status_code == 429 or response.status_code >= 500:
            response.close()
            raise _Retry(f"HTTP {response.status_code}", str(response.status_code))
        return response


_EXPORT_ID = re.compile(r"(?<=/export/)[^/]+(?=/\w+\.json$)")


def _endpoint_of(path: str) -> str:
    """The endpoint a call's path names: one per bulk action, whichever export it acts on."""
    return _EXPORT_ID.sub("{exportId}", path)


_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json"


def _is_json_answer(response: requests.Response) -> bool:
    """Whether a file's answer is Marketo's JSON envelope rather than the file. Marketo's OpenAPI
    declares its files application/json too, so an answer of that type is told by its first byte,
    read ahead without taking it from the body: a JSON object begins with "{", a CSV file with
    its header row."""
    if not response.headers.get("Content-Type", "").startswith(_JSON):
        return False
    peek = getattr(getattr(response.raw, "_fp", None), "peek", None)  # http.client's response reads ahead
    if peek is None:
        return True
    return bytes(peek(1)[:1]).lstrip() in (b"{", b"")


def _raise_for_errors(errors: Any, path: str) -> None:
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    code, message = str(first.get("code", "")), str(first.get("message", "no error given"))
    if code in settings.TOKEN_ERROR_CODES:
        raise _TokenRefused(code)
    if code in settings.TRANSIENT_ERROR_CODES:
        raise _Retry(f"{code} {message}", code)
    error_class = _CODED_ERRORS.get(code, MarketoRequestError)
    hint = _ADVICE.get(code, "")
    raise error_class(f"Marketo answered {code} on {path}: {message}.{hint}", code=code, endpoint=path)


_ADVICE = {
    "603": " The API user's role lacks a permission this call needs (Admin > Users & Roles).",
    "607": " The daily API quota is used up; it resets at midnight US Central time.",
}

