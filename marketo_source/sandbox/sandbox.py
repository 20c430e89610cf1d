"""MarketoSandbox: a local Marketo instance on a free port, started in-process."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any, Sequence

from .auth import AccessTokens
from .bulk import BulkExports, BulkSpec
from .faults import Fault, FaultInjector
from .generator import DataSpec
from .limits import LimitGate, Limits
from .paging import TokenOrder
from .server import SandboxApp, SandboxHTTPServer, admin_actions
from .stats import Stats
from .store import Store


class MarketoSandbox:
    """A faithful local stand-in for a Marketo instance's identity service and Activities API.

    Data is generated when the sandbox is constructed; `start()` (or `with sandbox:`) serves it.

    Example:
        >>> with MarketoSandbox(data=DataSpec(seed=1, leads=50, activities=1000)) as sandbox:
        ...     sandbox.base_url  # "http://127.0.0.1:PORT", REST under /rest, identity under /identity
    """

    def __init__(self, data: DataSpec | None = None, limits: Limits | None = None, faults: Sequence[Fault] = (),
                 token_ttl_s: float = 3600, block_size: int = 1000, host: str = "127.0.0.1", port: int = 0,
                 client_id: str = "sandbox-client-id", client_secret: str = "sandbox-client-secret",
                 paging_token_ttl_s: float | None = None, fault_seed: int = 0,
                 token_order: TokenOrder = "commit", bulk: BulkSpec | None = None) -> None:
        """Generate the data and prepare the server (nothing listens before start()).

        Args:
            data: What to generate; default DataSpec().
            limits: Call limits; default Marketo's (100 calls / 20 s, 10 concurrent, 50,000 a day).
            faults: Fault rules; change them later with set_faults().
            token_ttl_s: Lifetime of an access token.
            block_size: Entries one read call scans at most, in token order (short and empty pages come from it).
            host: Interface to listen on; keep 127.0.0.1 unless you mean to expose it.
            port: Port; 0 picks a free one.
            client_id: The accepted client id.
            client_secret: The accepted client secret.
            paging_token_ttl_s: Age after which a paging token is refused; None keeps tokens valid forever.
            fault_seed: Seed of the probability-based fault draws.
            token_order: What a paging token marks, since Marketo does not document it: "commit", a
                position in the commit log (resuming finds every later commit, late ones included), or
                "date", a key in (activityDate, id) order (an activity committed after a token passed its
                activityDate is never returned from it). Tokens of one order are refused by the other.
            bulk: How Bulk Activity Extract jobs behave (timing, limits, export quota, retention, what
                the createdAt filter compares, failing jobs); default BulkSpec().

        Raises:
            ValueError: For an unknown token order.
        """
        self.data = data or DataSpec()
        self.client_id = client_id
        self.client_secret = client_secret
        self.host = host
        self.port = port
        self.store = Store(self.data, client_secret, paging_token_ttl_s, token_order)
        self.bulk = BulkExports(self.store, bulk or BulkSpec(), self.data.seed)
        self.tokens = AccessTokens(client_id, client_secret, token_ttl_s)
        self.gate = LimitGate(limits or Limits())
        self.injector = FaultInjector(faults, fault_seed)
        self.counters = Stats()
        self.block_size = block_size
        self.stopping = threading.Event()
        self.server: SandboxHTTPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def limits(self) -> Limits:
        """The limits in force; assign a new Limits (or change its fields) while serving."""
        return self.gate.limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self.gate.limits = limits

    @property
    def base_url(self) -> str:
        """Base URL of the running sandbox, "http://HOST:PORT"."""
        if self.server is None:
            raise RuntimeError("the sandbox is not running; call start() first")
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> MarketoSandbox:
        """Listen and serve in a background thread; returns self."""
        self.stopping.clear()
        app = SandboxApp(self.store, self.bulk, self.tokens, self.gate, self.injector, self.counters, self.block_size,
                         self.stopping)
        app.admin = admin_actions(self.stats, self.reset_stats, self.ground_truth, self.add_activities, self.bulk)
        self.server = SandboxHTTPServer((self.host, self.port), app)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="marketo-sandbox", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; slow answers in progress end early."""
        server, self.server = self.server, None  # taken first, so a second concurrent stop() does nothing
        if server is None:
            return
        self.stopping.set()
        server.shutdown()
        server.server_close()

    def __enter__(self) -> MarketoSandbox:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """Counters: {"calls": {endpoint: n}, "errors": {code or kind: n}, "rest_calls", "quota_used",
        "max_concurrent_seen", "faults_injected": {kind: n}}."""
        return self.counters.snapshot(self.gate.quota_used, self.gate.max_concurrent_seen)

    def reset_stats(self) -> None:
        """Zero the counters, including the REST call numbering that fault schedules use (not the quota)."""
        self.counters.reset()
        self.gate.max_concurrent_seen = 0

    def ground_truth(self) -> dict[str, Any]:
        """Every record held, as the endpoints render them: keys "activities", "activity_recorded_ms" (when
        each activity was recorded, epoch ms: its activityDate for the initial log, the commit time for those
        added since), "lead_changes", "deleted_leads", "activity_types", "custom_activity_types",
        "lead_fields", and "lists"
        (static list id -> member lead ids)."""
        return self.store.ground_truth()

    def add_activities(self, new: int = 0, late: int = 0, lateness_s: float | None = None,
                       hostile: bool = False) -> list[dict[str, Any]]:
        """Commit activities now, as Marketo records them: some on time, some after their activityDate.

        Types are drawn as in the initial log; about one in 40 of each kind is the New Lead of a new lead,
        and about one in 40 the Delete Lead of an alive lead.

        Args:
            new: Activities dated now (the wall clock, whole seconds).
            late: Activities dated now minus a lateness drawn from their type's range in DataSpec.lateness.
            lateness_s: Date every late activity exactly this many seconds before now instead (whole
                seconds), e.g. 10800 to commit something later than any window a reader keeps.
            hostile: Give their primary attribute values and text attribute values from
                `hostile.HOSTILE_VALUES` (quotes, commas, line breaks, NUL bytes, non-ASCII), to test
                export file parsers; Change Data Value records keep theirs.

        Returns:
            The added records as Get Lead Activities renders them, in commit order (new ones first).

        Raises:
            ValueError: For a negative `lateness_s`.
        """
        return self.store.add_activities(new, late, lateness_s, hostile)

    def set_auto_add(self, auto_add: tuple[int, int, int] | None) -> None:
        """Change DataSpec.auto_add while serving: (every_n_calls, new, late), or None to stop adding."""
        self.store.spec = replace(self.store.spec, auto_add=auto_add)

    def set_faults(self, faults: Sequence[Fault]) -> None:
        """Replace the fault rules."""
        self.injector.set_faults(faults)

    def reset_quota(self) -> None:
        """Start a new quota day."""
        self.gate.reset_quota()

    def expire_tokens(self) -> None:
        """Expire every issued access token now, so the next REST call gets 602."""
        self.tokens.expire_all()

    def issued_tokens(self) -> list[str]:
        """Every access token issued so far, for tests that check tokens never leak."""
        with self.tokens.lock:
            return list(self.tokens.expiry)

    @property
    def bulk_spec(self) -> BulkSpec:
        """How export jobs behave; assign a new BulkSpec while serving (jobs keep the times already set)."""
        return self.bulk.spec

    @bulk_spec.setter
    def bulk_spec(self, spec: BulkSpec) -> None:
        self.bulk.spec = spec

    def bulk_jobs(self) -> list[dict[str, Any]]:
        """Every export job kept, oldest first: its status answer at its true stage (status answers may lag by
        BulkSpec.status_interval_s), plus "number" (1-based, in creation order), "createdDay", "finishedDay"
        (export days, see bulk_new_day), "fileExpired" and "filter" ({"createdAt": [start_ms, end_ms],
        "activityTypeIds": [...] or None})."""
        return self.bulk.snapshot()

    def bulk_new_day(self) -> None:
        """Start a new export day: the daily export quota starts again, and jobs, files and the job list age
        by one day (files expire after BulkSpec.file_retention_days, statuses after status_retention_days).
        The call quota has its own day: reset_quota()."""
        self.bulk.new_day()

    def bulk_export_bytes_today(self) -> int:
        """Bytes of the export files completed today, counted against BulkSpec.daily_export_bytes."""
        return self.bulk.export_bytes_today()

    def expire_bulk_file(self, export_id: str) -> None:
        """Make a completed job's file gone now (file.json answers 404), as if its retention had passed.

        Raises:
            ValueError: When the job has no file.
        """
        self.bulk.expire_file(export_id)
