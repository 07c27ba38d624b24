"""Options shared by commands: where the telemetry lives, the cache, the store size."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..telemetry.dataset import Dataset
from ..telemetry.store import Store, build_store


def add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--telemetry", type=Path, default=Path("telemetry"), help="telemetry folder (default: ./telemetry)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="store cache (default: $CTIREALM_CACHE_DIR or ~/.cache/ctirealm)",
    )
    parser.add_argument(
        "--rows", type=int, default=None, help="generated benign rows (default: dataset.yaml)"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help="multiply the default generated size (e.g. 100 for 10M rows)",
    )
    parser.add_argument(
        "--split",
        default=None,
        metavar="NAME",
        help="dataset split: dev (default; what agents query) or test (where final detections are scored)",
    )


def rows_from(args: argparse.Namespace, dataset: Dataset) -> int:
    if args.rows is not None:
        return int(args.rows)
    if args.scale is not None:
        return int(dataset.rows * args.scale)
    return dataset.rows


def open_store(args: argparse.Namespace, *, quiet: bool = True, split: str | None = None) -> Store:
    """Build the store of ``--split`` (or *split*; default dev) if needed, with a progress bar
    unless quiet, and return it.

    The build is lenient, as under pytest: a bad event, schema or scenario file is
    left out and named on stderr (``store.problems``); the caller decides what that
    means.
    """
    dataset = Dataset.load(args.telemetry)
    rows = rows_from(args, dataset)
    store = _build(args, dataset, rows, quiet, split or getattr(args, "split", None) or "dev")
    for problem in store.problems:
        print(
            f"warning: left out of the store: {args.telemetry / problem.path}"
            + (f":{problem.line}" if problem.line else "")
            + f": {problem.message}",
            file=sys.stderr,
        )
    return store


def _build(args: argparse.Namespace, dataset: Dataset, rows: int, quiet: bool, split: str) -> Store:
    dataset.split_seed(split)  # an unknown split is named before anything is built
    if quiet:
        return build_store(dataset, cache_dir=args.cache_dir, rows=rows, strict=False, split=split)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), transient=False
    ) as bar:
        task = bar.add_task(f"preparing {split}", total=None)

        def report(message: str, done: int, total: int | None) -> None:
            bar.update(task, description=message, completed=done, total=total)

        store = build_store(
            dataset,
            cache_dir=args.cache_dir,
            rows=rows,
            strict=False,
            force=getattr(args, "force", False),
            progress=report,
            split=split,
        )
        bar.update(task, description=f"{split} store ready", completed=1, total=1)
    return store
