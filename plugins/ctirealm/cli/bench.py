"""``ctirealm bench``: the main job — build the store, run the benchmark under pytest, write reports."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from ..telemetry.dataset import Dataset
from .common import add_store_options, open_store, rows_from


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="run the benchmark (cases and rules) with pytest and write reports/"
    )
    add_store_options(parser)
    parser.add_argument("--report-dir", type=Path, default=Path("reports"))
    parser.add_argument("--workers", default="auto", help="pytest-xdist workers (default auto)")
    parser.add_argument(
        "pytest_args", nargs=argparse.REMAINDER, help="extra arguments passed to pytest (after --)"
    )
    parser.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    args.report_dir.mkdir(parents=True, exist_ok=True)
    (args.report_dir / "results.json").unlink(missing_ok=True)  # never read a previous run's
    # Build every split once, before the workers start.
    stores = {
        split: open_store(args, quiet=False, split=split) for split in Dataset.load(args.telemetry).splits
    }
    store = stores["dev"]
    info = {
        "store": str(store.path),
        "hash": store.meta["hash"],
        "rows": store.rows,
        "window": store.meta["window"],
        "splits": {
            name: {"store": str(s.path), "hash": s.meta["hash"], "rows": s.rows} for name, s in stores.items()
        },
    }
    (args.report_dir / "telemetry.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-n",
        str(args.workers),
        f"--junitxml={args.report_dir / 'junit.xml'}",
        f"--realm-telemetry={args.telemetry}",
        f"--realm-report-dir={args.report_dir.resolve()}",
    ]
    if args.cache_dir:
        command.append(f"--realm-cache-dir={args.cache_dir}")
    if args.rows is not None or args.scale is not None:
        command.append(f"--realm-rows={rows_from(args, Dataset.load(args.telemetry))}")
    extra = [a for a in args.pytest_args if a != "--"]
    print("+", " ".join(command + extra), flush=True)
    code = subprocess.call(command + extra, env=os.environ.copy())
    print(f"reports: {args.report_dir}/ (results.json, score.html, summary.md, junit.xml)")
    problems = _problems(args.report_dir / "results.json")
    if problems:
        # Cases that could not run are a broken dataset, not a result: the bench fails.
        print(f"{len(problems)} problem(s) left cases out of this run:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    # A checkpoint below its pass ratio fails its item but is a result, not a broken run:
    # the bench succeeds unless pytest itself broke or --realm-min-score was not met.
    if code == 1 and not any(a.startswith("--realm-min-score") for a in extra):
        return 0
    return 0 if code == 5 else code


def _problems(results: Path) -> list[str]:
    """The messages of ``problems`` in results.json (cases and files left out of the run)."""
    try:
        data = json.loads(results.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [
        str(p.get("message", p)).splitlines()[0] for p in data.get("problems") or [] if isinstance(p, dict)
    ]
