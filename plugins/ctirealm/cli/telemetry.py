"""``ctirealm telemetry build|info|push``: build the store, describe it, push it to a cluster."""

from __future__ import annotations

import argparse
import json
import sys

from ..telemetry.dataset import Dataset
from .common import add_store_options, open_store


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("telemetry", help="build and inspect the telemetry store")
    sub = parser.add_subparsers(dest="telemetry_command", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="validate events, generate background, build the store")
    add_store_options(build)
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.set_defaults(handler=_build)
    info = sub.add_parser("info", help="tables, row counts and the time window")
    add_store_options(info)
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(handler=_info)
    from .push import add_push

    add_push(sub)


def _build(args: argparse.Namespace) -> int:
    """Every split's store (or only ``--split``'s); exit 1 while any file is left out."""
    splits = [args.split] if args.split else list(Dataset.load(args.telemetry).splits)
    left_out = 0
    for split in splits:
        store = open_store(args, quiet=False, split=split)
        print(
            f"{split}: {store.path}  ({sum(store.rows.values()):,} rows, built in "
            f"{store.meta['build_seconds']} s)"
        )
        left_out += len(store.problems)
    if left_out:
        print(
            f"{left_out} file(s) left out (listed above); the cases that need them will fail", file=sys.stderr
        )
        return 1
    return 0


def _info(args: argparse.Namespace) -> int:
    store = open_store(args)
    attack = {t: len(store.labels.ids("attack", t)) for t in store.rows}
    negatives = {t: len(store.labels.ids("hard_negative", t)) for t in store.rows}
    if args.json:
        print(
            json.dumps(
                {
                    "path": str(store.path),
                    "hash": store.meta["hash"],
                    "split": store.meta.get("split"),
                    "splits": store.meta.get("splits"),
                    "window": store.meta["window"],
                    "now": store.meta["now"],
                    "rows": store.rows,
                    "attack_events": attack,
                    "hard_negatives": negatives,
                    "simulations": store.labels.simulations(),
                    "problems": [p.to_dict() for p in store.problems],
                },
                indent=2,
            )
        )
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{store.meta.get('split', 'dev')} store {store.meta['hash']}  window "
        f"{store.meta['window'][0]} .. {store.meta['window'][1]}"
    )
    for column in ("table", "rows", "attack events", "hard negatives"):
        table.add_column(column, justify="left" if column == "table" else "right")
    for name, count in sorted(store.rows.items()):
        table.add_row(name, f"{count:,}", str(attack[name]), str(negatives[name]))
    table.add_row(
        "total", f"{sum(store.rows.values()):,}", str(sum(attack.values())), str(sum(negatives.values()))
    )
    Console().print(table)
    print(f"store: {store.path}\nsimulations: {len(store.labels.simulations())}")
    return 0
