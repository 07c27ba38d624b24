"""``ctirealm query "KQL"``: run one read-only query on the store."""

from __future__ import annotations

import argparse
import json
import sys

from ..telemetry.values import to_json_value
from .common import add_store_options, open_store


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("query", help="run a KQL query on the telemetry store")
    parser.add_argument("kql", help="the query text, or - to read it from standard input")
    add_store_options(parser)
    parser.add_argument("--json", action="store_true", help="print Kusto v1 JSON")
    parser.add_argument("--limit", type=int, default=100, help="rows to show (default 100)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument("--sql", action="store_true", help="print the translated SQL too")
    parser.set_defaults(handler=_query)


def _query(args: argparse.Namespace) -> int:
    kql = sys.stdin.read() if args.kql == "-" else args.kql
    store = open_store(args)
    from ..engine.local import LocalEngine

    with LocalEngine.of_store(store, timeout=args.timeout) as engine:
        result = engine.query(kql, limit=args.limit)
        if args.sql:
            print(str(engine.translate(kql)), file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_kusto_json(wire_values=True), ensure_ascii=False, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for name, kind in result.columns:
        table.add_column(f"{name}\n[dim]{kind}[/dim]", overflow="fold")
    for row in result.rows:
        table.add_row(*[_cell(v) for v in row])
    Console().print(table)
    more = " (truncated)" if result.truncated else ""
    print(f"{len(result.rows)} rows{more} in {result.elapsed * 1000:.1f} ms", file=sys.stderr)
    return 0


def _cell(value: object) -> str:
    shown = to_json_value(value)
    if isinstance(shown, (dict, list)):
        return json.dumps(shown, ensure_ascii=False)
    return "" if shown is None else str(shown)
