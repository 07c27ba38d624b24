"""``ctirealm telemetry push --cluster URL --database DB``: the store's tables and events onto a cluster.

Registered as a sub-command of ``ctirealm telemetry`` (see `add_push`). The
work is done by `ctirealm.engine.push`; this module parses options, picks the
ingestion mode, draws the progress bar and prints the counts that arrived.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import add_store_options, open_store


def add_push(sub: argparse._SubParsersAction) -> None:
    """Add ``push`` to the ``ctirealm telemetry`` sub-commands."""
    parser = sub.add_parser(
        "push", help="create the tables on a Kusto cluster and ingest the telemetry (not the labels)"
    )
    add_store_options(parser)
    parser.add_argument(
        "--cluster",
        required=True,
        help="cluster URL: https://NAME.REGION.kusto.windows.net, kusto://HOST[:PORT], "
        "or http://127.0.0.1:PORT for a local endpoint",
    )
    parser.add_argument("--database", required=True, help="database on the cluster")
    parser.add_argument(
        "--mode",
        choices=("auto", "queued", "direct"),
        default="auto",
        help="queued: the cluster's ingestion service (azure-kusto-ingest); "
        "direct: .set-or-append through the management endpoint, for endpoints "
        "without an ingestion service; auto (default): direct for loopback "
        "endpoints, queued otherwise",
    )
    parser.add_argument(
        "--ingest-url",
        default=None,
        help="ingestion endpoint for queued mode (default: https://ingest-<cluster host>)",
    )
    parser.add_argument(
        "--batch-rows", type=int, default=None, help="rows per batch (default 1000 direct, 100000 queued)"
    )
    parser.add_argument(
        "--table", action="append", default=None, metavar="TABLE", help="push only this table (repeatable)"
    )
    parser.add_argument(
        "--state",
        type=Path,
        default=None,
        help="resume file (default: beside the store, per cluster and database)",
    )
    parser.add_argument("--restart", action="store_true", help="ignore the resume file, send everything")
    parser.add_argument(
        "--wait",
        type=float,
        default=600.0,
        help="seconds to wait for queued ingestion to arrive (default 600)",
    )
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.set_defaults(handler=_push)


def _push(args: argparse.Namespace) -> int:
    from ..engine.kusto import make_client, parse_kusto_url
    from ..engine.push import default_state_path, push_store

    target = parse_kusto_url(args.cluster, args.database)
    mode = args.mode if args.mode != "auto" else ("direct" if target.loopback else "queued")
    store = open_store(args, quiet=True)
    client = make_client(target)
    ingest_client = None
    if mode == "queued":
        from azure.kusto.ingest import QueuedIngestClient

        from ..engine.kusto import KustoTarget, connection_builder

        ingest_url = args.ingest_url or target.url.replace("://", "://ingest-", 1)
        ingest_target = KustoTarget(
            parse_kusto_url(f"{ingest_url}/{target.database}").url, target.database, target.loopback
        )
        ingest_client = QueuedIngestClient(connection_builder(ingest_target))
    state_path = args.state or default_state_path(store, target.url, target.database)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        transient=False,
        disable=args.json,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def report(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = bar.add_task(f"{table} ({mode})", total=total or 1)
            bar.update(tasks[table], completed=done if total else 1)

        result = push_store(
            store,
            client,
            target.database,
            cluster=target.url,
            mode=mode,
            ingest_client=ingest_client,
            batch_rows=args.batch_rows,
            state_path=state_path,
            restart=args.restart,
            tables=args.table,
            wait=args.wait,
            progress=report,
        )
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"pushed to {target} ({mode})")
        for column in ("table", "local rows", "sent", "batches resumed", "on the cluster"):
            table.add_column(column, justify="left" if column == "table" else "right")
        for name, entry in sorted(result.tables.items()):
            arrived = "?" if entry.arrived is None else f"{entry.arrived:,}"
            mark = "" if entry.complete else "  [red](incomplete)[/red]"
            table.add_row(
                name,
                f"{entry.local_rows:,}",
                f"{entry.sent_rows:,}",
                str(entry.skipped_batches),
                arrived + mark,
            )
        Console().print(table)
        print(f"resume state: {state_path}", file=sys.stderr)
    if not result.complete:
        print(
            "ctirealm: not every row has arrived yet; run the same command again to resume or re-check",
            file=sys.stderr,
        )
        return 1
    return 0
