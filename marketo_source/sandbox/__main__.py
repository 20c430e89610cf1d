"""Run a Marketo sandbox from the shell: `python -m marketo_source.sandbox --help`."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any, Sequence

from .bulk import CREATED_AT_READINGS, BulkSpec
from .generator import DataSpec
from .limits import Limits
from .paging import TOKEN_ORDERS
from .sandbox import MarketoSandbox


def _optional_number(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line options; limits accept "none" to disable them."""
    parser = argparse.ArgumentParser(prog="python -m marketo_source.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--leads", type=int, default=500)
    parser.add_argument("--activities", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--start-date", default=None, help="ISO start of the span (default: today minus --days)")
    parser.add_argument("--no-custom-types", action="store_true")
    parser.add_argument("--max-custom-types", type=int, default=10, help="custom types allowed (Marketo: 10)")
    parser.add_argument("--client-id", default="sandbox-client-id")
    parser.add_argument("--client-secret", default="sandbox-client-secret")
    parser.add_argument("--token-ttl", type=float, default=3600)
    parser.add_argument("--paging-token-ttl", type=_optional_number, default=None)
    parser.add_argument("--block-size", type=int, default=1000)
    parser.add_argument("--token-order", choices=TOKEN_ORDERS, default="commit",
                        help="what a paging token marks, which Marketo does not document: a position in the commit "
                             "log (commit: resuming finds late commits) or a place in activityDate order (date: an "
                             "activity committed after a token passed its date is never returned from it)")
    parser.add_argument("--calls-per-window", type=_optional_number, default=100)
    parser.add_argument("--window", type=_optional_number, default=20.0)
    parser.add_argument("--max-concurrent", type=_optional_number, default=10)
    parser.add_argument("--daily-quota", type=_optional_number, default=50_000)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--bulk-created-at", choices=CREATED_AT_READINGS, default="activity_date",
                        help="what a bulk export's createdAt filter compares, which Marketo does not document")
    return parser.parse_args(argv)


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
                          bulk=BulkSpec(created_at=args.bulk_created_at))


def main(argv: Sequence[str] | None = None) -> None:
    """Start the sandbox, print how to reach it, serve until SIGINT or SIGTERM."""
    sandbox = build_sandbox(parse_args(argv))
    stop = threading.Event()

    def request_stop(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with sandbox:
        print(f"base_url={sandbox.base_url}", flush=True)
        print(f"client_id={sandbox.client_id}", flush=True)
        print(f"client_secret={sandbox.client_secret}", flush=True)
        while not stop.wait(0.2):
            pass
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
