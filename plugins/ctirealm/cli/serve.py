"""``ctirealm serve``: the telemetry store over the Kusto REST API, on loopback, read-only.

Kusto clients (azure-kusto-data, notebooks, the Azure Data Explorer web UI,
the upstream harness) then query the store at ``http://127.0.0.1:PORT`` with
database ``ctirealm``; ``pytest --realm-engine kusto://127.0.0.1:PORT/ctirealm``
runs the benchmark through it.
"""

from __future__ import annotations

import argparse

from ..engine.server import DEFAULT_DATABASE
from .common import add_store_options, open_store

DEFAULT_PORT = 31415


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve the telemetry store over the Kusto REST API (loopback, read-only)"
    )
    add_store_options(parser)
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="loopback address to bind (127.0.0.1 or ::1; others are refused)"
    )
    parser.add_argument(
        "--database", default=DEFAULT_DATABASE, help=f"database name clients use (default {DEFAULT_DATABASE})"
    )
    parser.add_argument(
        "--wall-clock",
        action="store_true",
        help="answer now()/ago() from the wall clock instead of the dataset clock "
        "(a request's own query_now property always wins)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    parser.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from ..engine.kusto import is_loopback
    from ..engine.server import build_realm_server, serve_forever

    if not is_loopback(args.host):
        raise ValueError(
            f"refusing to serve on {args.host!r}: ctirealm serve binds loopback "
            "addresses only (127.0.0.1 or ::1); the endpoint has no authentication"
        )
    store = open_store(args, quiet=False)
    server = build_realm_server(
        store.path,
        port=args.port,
        host=args.host,
        database=args.database,
        now=None if args.wall_clock else store.now,
        quiet=not args.verbose,
    )
    serve_forever(server)
    return 0
