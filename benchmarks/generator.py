"""Benign background generator throughput: rows per second for 100k and 1M rows.

Run ``python benchmarks/generator.py [ROWS ...]``; files go to a temporary folder that is
removed afterwards. Prints rows/s, MB/s and the per-table split for each size.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from ctirealm.telemetry.generator import generate  # noqa: E402

WINDOW = (datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 16, tzinfo=UTC))
SEED = 20260302


def measure(rows: int) -> dict[str, float]:
    """Generate *rows* rows into a temporary folder; return timing and size."""
    out = Path(tempfile.mkdtemp(prefix="ctirealm-gen-bench-"))
    try:
        started = time.perf_counter()
        counts = generate(out, seed=SEED, rows=rows, window=WINDOW,
                          profiles_dir=ROOT / "telemetry" / "generator")
        seconds = time.perf_counter() - started
        size = sum(p.stat().st_size for p in out.glob("*.jsonl"))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    assert sum(counts.values()) == rows
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds,
            "mb_per_s": size / seconds / 1e6, "bytes_per_row": size / max(rows, 1)}


def main(argv: list[str]) -> None:
    sizes = [int(a.replace("_", "")) for a in argv] or [100_000, 1_000_000]
    for rows in sizes:
        r = measure(rows)
        print(f"{rows:>11,} rows  {r['seconds']:7.2f} s  {r['rows_per_s']:>9,.0f} rows/s  "
              f"{r['mb_per_s']:6.1f} MB/s  {r['bytes_per_row']:6.0f} B/row")


if __name__ == "__main__":
    main(sys.argv[1:])
