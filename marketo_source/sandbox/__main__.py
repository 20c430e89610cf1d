"""Run a local Marketo sandbox on 127.0.0.1 until Ctrl-C: `python -m marketo_source.sandbox [options]`.

On start it prints the settings that point the source at it, ready to paste into a shell.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import threading
from typing import IO, Any, Sequence

from .bulk import CREATED_AT_READINGS, BulkSpec
from .generator import DataSpec
from .limits import Limits
from .paging import TOKEN_ORDERS
from .sandbox import MarketoSandbox


def _optional_number(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


DEFAULT_PORT = 8765
"""A fixed port, so the base URL printed at start stays the same from one start to the next."""
ENVIRONMENT_PREFIX = "SOURCES__MARKETO__"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except None and a flag's False, which the help text words itself."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line options; limits accept "none" to disable them."""
    return argument_parser().parse_args(argv)


def argument_parser() -> argparse.ArgumentParser:
    """The command line's options, each with its help and default."""
    parser = argparse.ArgumentParser(prog="python -m marketo_source.sandbox", description=__doc__,
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on; keep 127.0.0.1 unless you mean to expose the sandbox")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on; 0 picks a free one")
    data = parser.add_argument_group("data (the same options always give the same data)")
    data.add_argument("--seed", type=int, default=1, help="seed of every random choice")
    data.add_argument("--leads", type=int, default=500, help="leads, each with a New Lead activity")
    data.add_argument("--activities", type=int, default=20_000,
                      help="activities in the initial log, New Leads included")
    data.add_argument("--days", type=int, default=30, help="days the activities are spread over")
    data.add_argument("--start-date", default=None,
                      help="ISO start of those days (default: today, UTC midnight, minus --days)")
    data.add_argument("--no-custom-types", action="store_true",
                      help="seed no custom activity types (Attend Conference, Product Usage)")
    data.add_argument("--max-custom-types", type=int, default=10,
                      help="custom activity types the instance may hold (Marketo: 10)")
    identity = parser.add_argument_group("identity (the sandbox's own credentials, printed at start)")
    identity.add_argument("--client-id", default="sandbox-client-id", help="the client id the sandbox accepts")
    identity.add_argument("--client-secret", default="sandbox-client-secret",
                          help="the client secret the sandbox accepts")
    identity.add_argument("--token-ttl", type=float, default=3600, help="lifetime of an access token, in seconds")
    paging = parser.add_argument_group("paging")
    paging.add_argument("--paging-token-ttl", type=_optional_number, default=None,
                        help="age in seconds after which a paging token is refused (default: none, tokens stay "
                             "valid)")
    paging.add_argument("--block-size", type=int, default=1000,
                        help="log entries one read call scans at most (pages can be short or empty)")
    paging.add_argument("--token-order", choices=TOKEN_ORDERS, default="commit",
                        help="what a paging token marks, which Marketo does not document: a position in the commit "
                             "log (commit: resuming finds late commits) or a place in activityDate order (date: an "
                             "activity committed after a token passed its date is never returned from it)")
    limits = parser.add_argument_group("limits (Marketo's by default; none disables one)")
    limits.add_argument("--calls-per-window", type=_optional_number, default=100,
                        help="REST calls allowed per --window (606 past it)")
    limits.add_argument("--window", type=_optional_number, default=20.0, help="the rate window, in seconds")
    limits.add_argument("--max-concurrent", type=_optional_number, default=10,
                        help="calls served at once (615 past it)")
    limits.add_argument("--daily-quota", type=_optional_number, default=50_000,
                        help="REST calls allowed a day (607 past it)")
    limits.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    bulk = parser.add_argument_group("bulk export")
    bulk.add_argument("--bulk-created-at", choices=CREATED_AT_READINGS, default="activity_date",
                      help="what a bulk export's createdAt filter compares, which Marketo does not document")
    bulk.add_argument("--bulk-queue", type=float, default=BulkSpec.queue_s,
                      help="seconds an enqueued export job waits before it may start processing")
    bulk.add_argument("--bulk-processing", type=float, default=BulkSpec.processing_s,
                      help="seconds an export job processes before it completes")
    bulk.add_argument("--bulk-status-interval", type=float, default=BulkSpec.status_interval_s,
                      help="export jobs' stages show in status answers only at multiples of this many seconds "
                           "(Marketo: 60)")
    return parser


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else int(value)


def build_sandbox(args: argparse.Namespace) -> MarketoSandbox:
    """The MarketoSandbox the options describe."""
    data = DataSpec(seed=args.seed, leads=args.leads, activities=args.activities, days=args.days,
                    start_date=args.start_date, custom_types=not args.no_custom_types,
                    max_custom_types=args.max_custom_types)
    limits = Limits(calls_per_window=_int_or_none(args.calls_per_window), window_s=args.window,
                    max_concurrent=_int_or_none(args.max_concurrent), daily_quota=_int_or_none(args.daily_quota),
                    latency_s=args.latency)
    return MarketoSandbox(data=data, limits=limits, token_ttl_s=args.token_ttl, block_size=args.block_size,
                          host=args.host, port=args.port, client_id=args.client_id, client_secret=args.client_secret,
                          paging_token_ttl_s=args.paging_token_ttl, token_order=args.token_order,
                          bulk=BulkSpec(queue_s=args.bulk_queue, processing_s=args.bulk_processing,
                                        status_interval_s=args.bulk_status_interval, created_at=args.bulk_created_at))


def source_settings(sandbox: MarketoSandbox) -> list[str]:
    """Shell lines that point the source at a running sandbox (its credentials are its own, not secrets)."""
    settings = {"BASE_URL": sandbox.base_url, "CLIENT_ID": sandbox.client_id, "CLIENT_SECRET": sandbox.client_secret}
    return [f"export {ENVIRONMENT_PREFIX}{name}={shlex.quote(value)}" for name, value in settings.items()]



def read_source_settings(stdout: IO[str]) -> dict[str, str]:
    """base_url, client_id and client_secret, from what the sandbox prints once it serves (a line
    saying where, then the lines of `source_settings`), read as a shell reads them.

    Raises:
        RuntimeError: When the sandbox printed something else, such as why it could not start.
    """
    first = stdout.readline()
    if not first.startswith("Marketo sandbox serving at "):
        raise RuntimeError(f"the sandbox did not start: {first.strip()!r}")
    settings = {}
    for line in (stdout.readline() for _ in range(3)):
        export, assignment = shlex.split(line)
        name, value = assignment.split("=", 1)
        if export != "export" or not name.startswith(ENVIRONMENT_PREFIX):
            raise RuntimeError(f"not a setting of the source: {line.strip()!r}")
        settings[name.removeprefix(ENVIRONMENT_PREFIX).lower()] = value
    return settings

def _listen(sandbox: MarketoSandbox) -> None:
    """Start serving, or exit with one line naming --port when the address cannot be bound."""
    try:
        sandbox.start()
    except OSError as error:
        raise SystemExit(f"--port: cannot listen on {sandbox.host}:{sandbox.port} ({error.strerror}); stop what "
                         "listens there, or choose another port with --port N (--port 0 picks a free one)") from None


def main(argv: Sequence[str] | None = None) -> None:
    """Start the sandbox, print how to point the source at it, serve until SIGINT or SIGTERM."""
    sandbox = build_sandbox(parse_args(argv))
    stop = threading.Event()

    def request_stop(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    _listen(sandbox)
    try:
        print(f"Marketo sandbox serving at {sandbox.base_url} until Ctrl-C. Point the source at it:", flush=True)
        print("\n".join(source_settings(sandbox)), flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        sandbox.stop()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
