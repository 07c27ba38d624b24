"""Options shared by commands: where the telemetry lives, the cache, the store size."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..telemetry.dataset import Dataset
from ..telemetry.store import Store, build_store


def add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--telemetry", type=Path, default=Path("telemetry"),
                        help="telemetry folder (default: ./telemetry)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="store cache (default: $CTIREALM_CACHE_DIR or ~/.cache/ctirealm)")
    parser.add_argument("--rows", type=int, default=None,
                        help="generated benign rows (default: dataset.yaml)")
    parser.add_argument("--scale", type=float, default=None,
                        help="multiply the default generated size (e.g. 100 for 10M rows)")


def rows_from(args: argparse.Namespace, dataset: Dataset) -> int:
    if args.rows is not None:
        return int(args.rows)
    if args.scale is not None:
        return int(dataset.rows * args.scale)
    return dataset.rows


def open_store(args: argparse.Namespace, *, quiet: bool = True) -> Store:
    """Build the store if needed (with a progress bar unless quiet) and return it.

    The build is lenient, as under pytest: a bad event or schema file is left out
    and named on stderr (``store.problems``); the caller decides what that means.
    """
    dataset = Dataset.load(args.telemetry)
    rows = rows_from(args, dataset)
    store = _build(args, dataset, rows, quiet)
    for problem in store.problems:
        print(f"warning: left out of the store: {args.telemetry / problem.path}"
              + (f":{problem.line}" if problem.line else "") + f": {problem.message}",
              file=sys.stderr)
    return store


def _build(args: argparse.Namespace, dataset: Dataset, rows: int, quiet: bool) -> Store:
    if quiet:
        return build_store(dataset, cache_dir=args.cache_dir, rows=rows, strict=False)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  transient=False) as bar:
        task = bar.add_task("preparing", total=None)

        def report(message: str, done: int, total: int | None) -> None:
            bar.update(task, description=message, completed=done, total=total)

        store = build_store(dataset, cache_dir=args.cache_dir, rows=rows, strict=False,
                            force=getattr(args, "force", False), progress=report)
        bar.update(task, description="store ready", completed=1, total=1)
    return store
