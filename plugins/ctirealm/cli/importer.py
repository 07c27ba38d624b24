"""``ctirealm import cti-realm PATH`` and ``ctirealm import inspect LOG``: bring upstream material in.

* ``cti-realm`` converts the upstream CTI-REALM dataset layout into a case set
  and a telemetry folder that ``pytest --realm-cases=OUT/cases
  --realm-telemetry=OUT/telemetry`` runs.
* ``inspect`` re-scores Inspect AI logs of CTI-REALM runs under both scoring
  modes without running the model again (the same replay as
  ``--realm-agent=inspect:LOG``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import add_store_options, open_store


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("import", help="import the upstream CTI-REALM dataset or Inspect logs")
    sub = parser.add_subparsers(dest="import_command", metavar="SOURCE", required=True)
    realm = sub.add_parser("cti-realm", help="the upstream dataset layout -> cases and telemetry")
    realm.add_argument(
        "path",
        type=Path,
        help="folder holding cti_realm/ (or cti_realm/ itself): the Hugging Face "
        "snapshot or the download_data.py layout",
    )
    realm.add_argument(
        "--out",
        type=Path,
        default=Path("cti-realm"),
        help="output folder (default ./cti-realm): cases/, telemetry/, upstream/",
    )
    realm.add_argument(
        "--lenient", action="store_true", help="warn about unexpected fields and files instead of stopping"
    )
    realm.add_argument("--force", action="store_true", help="replace an existing import in --out")
    realm.set_defaults(handler=_import_realm)
    logs = sub.add_parser("inspect", help="score Inspect logs under strict and compat scoring")
    logs.add_argument("log", type=Path, help="an .eval/.json log, or a folder of them")
    logs.add_argument("--cases", type=Path, default=Path("cases"), help="cases folder (default ./cases)")
    add_store_options(logs)
    logs.add_argument("--json", action="store_true", help="print the scores as JSON")
    logs.set_defaults(handler=_import_inspect)


def _import_realm(args: argparse.Namespace) -> int:
    from ..cases.upstream import import_cti_realm

    result = import_cti_realm(
        args.path,
        args.out,
        lenient=args.lenient,
        force=args.force,
        progress=lambda message: print(message, file=sys.stderr),
    )
    rows = sum(t["rows"] for t in result.tables.values())
    print(
        f"imported {len(result.cases)} cases, {result.reports} reports, {len(result.tables)} tables "
        f"({rows:,} rows, window {result.window[0]} .. {result.window[1]}) into {args.out}"
    )
    # the labels are derived from regex patterns, not given upstream: show them for review
    print("attack events per case (table: events by pattern -> column):")
    for case_id, info in sorted(result.cases.items()):
        labelling = info["labelling"]
        simulation = f" [simulation {info['simulation']}]" if info.get("simulation") else ""
        print(f"  {case_id}{simulation}: {labelling['events']} events")
        for table, entry in labelling["tables"].items():
            if "refused" in entry:
                print(f"    {table}: not labelled ({entry['refused']})")
                continue
            used = ", ".join(f"{p} -> {c}" for p, c in entry["patterns"].items())
            print(f"    {table}: {entry['events']} events by {used}")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"run: pytest --realm-cases={args.out / 'cases'} --realm-telemetry={args.out / 'telemetry'} "
        "--realm-scoring compat"
    )
    return 0


def _import_inspect(args: argparse.Namespace) -> int:
    from ..cases import load_cases
    from ..scoring.rescore import rescore

    store = open_store(args)
    cases = load_cases(args.cases, tables=set(store.meta["schemas"]))
    from ..engine.local import LocalEngine

    with LocalEngine.of_store(store) as engine:
        entries = rescore(args.log, cases, engine=engine, labels=store.labels)
    if not entries:
        print(f"ctirealm: no logged sample matches a case in {args.cases}", file=sys.stderr)
        return 1
    if args.json:
        print(
            json.dumps(
                [
                    {
                        **{k: v for k, v in e.items() if k != "scores"},
                        "scores": {m: s.to_dict() for m, s in e["scores"].items()},
                    }
                    for e in entries
                ],
                indent=1,
                default=str,
            )
        )
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Inspect logs {args.log} re-scored")
    for column in ("case", "epoch", "status", "strict", "compat"):
        table.add_column(column, justify="left" if column in ("case", "status") else "right")
    for entry in entries:
        scores = entry["scores"]
        table.add_row(
            entry["id"],
            str(entry["epoch"]),
            entry["status"],
            *(f"{scores[m].normalized:.3f}" if m in scores else "-" for m in ("strict", "compat")),
        )
    Console().print(table)
    return 0
