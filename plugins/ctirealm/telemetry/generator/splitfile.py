"""The ``split`` output format, which the generator writes and the store reads: per table and
shard, variant files (each compiled row variant once) and row files cut into time buckets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


def bucket_bounds(start_ms: int, end_ms: int, buckets: int) -> list[int]:
    """First millisecond of each time bucket, then the window's end (``buckets + 1`` values).

    A time ``t`` falls in bucket ``(t - start) * buckets // (end - start)``.
    """
    span = end_ms - start_ms
    return [start_ms - (-b * span // buckets) for b in range(buckets)] + [end_ms]


@dataclass(frozen=True)
class SplitFiles:
    """One table's ``split`` output.

    ``buckets[b]``: the row files of time bucket *b* (all shards); ``bounds``: the buckets'
    first milliseconds and the window's end; ``variants``: the variant files; ``varying``:
    the columns some row supplies itself (every other column comes from its variant).
    """

    buckets: list[list[Path]]
    bounds: list[int]
    variants: list[Path]
    varying: frozenset[str]

    def paths(self) -> list[Path]:
        return [p for paths in self.buckets for p in paths] + self.variants


def split_files(out_dir: Path, table: str) -> SplitFiles:
    """The ``split`` output of *table* in *out_dir* (as written by ``generate``)."""
    out_dir = Path(out_dir)
    varying: set[str] = set()
    bounds: list[int] = []
    for path in sorted(out_dir.glob(f"{table}.meta-*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        varying.update(doc["varying"])
        bounds = doc["bounds"]
    buckets: list[list[Path]] = [[] for _ in range(max(1, len(bounds) - 1))]
    for path in sorted(out_dir.glob(f"{table}.rows-*-*.csv")):
        buckets[int(path.stem.rsplit("-", 1)[1])].append(path)
    return SplitFiles(buckets, bounds, sorted(out_dir.glob(f"{table}.variants-*.csv")), frozenset(varying))
