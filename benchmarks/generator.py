"""Benign background generator throughput: rows per second for 100k and 1M rows.

Run ``python benchmarks/generator.py [ROWS ...] [--workers N]``; files go to a temporary
folder that is removed afterwards. For each size, two runs: the ``jsonl`` output in this
process (the format of committed event files) and the ``split`` output the store loads,
in worker processes (``--workers``, default one per CPU). Prints wall time, rows/s, CPU
seconds (this process plus workers), MB/s and bytes per row, and the load average.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from ctirealm.telemetry.generator import available_cpus, generate  # noqa: E402

WINDOW = (datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 16, tzinfo=UTC))
SEED = 20260302


def _cpu() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def measure(rows: int, output: str, workers: int) -> dict[str, float]:
    """Generate *rows* rows into a temporary folder; return timing and size."""
    out = Path(tempfile.mkdtemp(prefix="ctirealm-gen-bench-"))
    try:
        cpu = _cpu()
        started = time.perf_counter()
        counts = generate(
            out,
            seed=SEED,
            rows=rows,
            window=WINDOW,
            output=output,
            workers=workers,
            profiles_dir=ROOT / "telemetry" / "generator",
        )
        seconds = time.perf_counter() - started
        cpu = _cpu() - cpu
        size = sum(p.stat().st_size for p in out.iterdir())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    assert sum(counts.values()) == rows
    return {
        "rows": rows,
        "seconds": seconds,
        "cpu": cpu,
        "rows_per_s": rows / seconds,
        "mb_per_s": size / seconds / 1e6,
        "bytes_per_row": size / max(rows, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", nargs="*", default=["100000", "1000000"])
    parser.add_argument("--workers", type=int, default=available_cpus())
    args = parser.parse_args(argv)
    print(f"cpus {available_cpus()}, load average {os.getloadavg()[0]:.2f}")
    for rows in (int(a.replace("_", "")) for a in args.rows):
        for output, workers in (("jsonl", 1), ("split", args.workers)):
            r = measure(rows, output, workers)
            print(
                f"{rows:>11,} rows  {output:>5} x{workers}  {r['seconds']:7.2f} s  "
                f"{r['rows_per_s']:>9,.0f} rows/s  cpu {r['cpu']:6.2f} s  "
                f"{r['mb_per_s']:6.1f} MB/s  {r['bytes_per_row']:6.0f} B/row  "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
