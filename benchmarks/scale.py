"""Telemetry at scale: store build time, size, memory, and detection query latency.

For each ``--rows`` size (default 1M and 10M) the store is built from scratch in a child
process, into a temporary cache folder (removed afterwards unless ``--keep``). Printed per
size: build wall time, CPU seconds (the build process and its generator workers), the
store's size on disk, the build process's peak RSS (``VmHWM``) and the largest worker's.
On the largest store, a set of typical detection queries (the reference KQL detections of
a few cases, over process, file, Kubernetes audit and cloud tables) runs through
``LocalEngine``: one warm-up, then ``--repeat`` timed runs each; the median per query and
the median over queries are printed. The load average is printed with every figure, since
the machine may be shared.

    python benchmarks/scale.py [--rows 1000000 10000000] [--repeat 5] [--all-rules]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ctirealm.engine import LocalEngine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

#: Reference detections used as typical queries (skipped when a file is missing).
QUERIES = ["linux_003", "linux_009", "linux_014", "linux_020", "aks_003", "aks_011", "cloud_002", "cloud_004"]


def _vm_hwm_mb() -> float:
    """Peak resident set size of this process, from /proc (ru_maxrss where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_build(rows: int, cache_dir: Path) -> dict[str, float | str]:
    """Build one store (in this process); timing, CPU and memory as a dict."""
    from ctirealm.telemetry.dataset import Dataset
    from ctirealm.telemetry.store import build_store

    started = time.perf_counter()
    built = build_store(Dataset.load(ROOT / "telemetry"), cache_dir=cache_dir, rows=rows)
    wall = time.perf_counter() - started
    me = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    files = [built.path, built.path.with_suffix(".meta.json"), built.path.with_suffix(".labels.json")]
    return {
        "path": str(built.path),
        "wall": wall,
        "cpu_build": me.ru_utime + me.ru_stime,
        "cpu_workers": workers.ru_utime + workers.ru_stime,
        "rss_build_mb": _vm_hwm_mb(),
        "rss_worker_mb": workers.ru_maxrss / 1024,
        "size_mb": sum(p.stat().st_size for p in files) / 1e6,
        "rows": sum(built.rows.values()),
    }


def build(rows: int, cache_dir: Path) -> dict[str, float | str]:
    """Run :func:`child_build` in a fresh interpreter and return its figures."""
    done = subprocess.run(
        [sys.executable, __file__, "--child-build", str(rows), str(cache_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"build of {rows:,} rows failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def queries(all_rules: bool) -> list[tuple[str, str]]:
    """``(name, kql)`` of the typical detection queries (or of every KQL rule)."""
    paths = sorted(ROOT.glob("rules/*/*.kql"))
    if not all_rules:
        wanted = {name: None for name in QUERIES}
        paths = [p for p in paths if p.stem in wanted]
    return [(p.stem, p.read_text(encoding="utf-8")) for p in paths]


def time_queries(store_path: Path, named: list[tuple[str, str]], repeat: int) -> list[tuple[str, float, int]]:
    """Median latency (seconds) and row count of each query, after one warm-up run."""
    from ctirealm.telemetry.store import Store

    out = []
    with LocalEngine.of_store(Store.open(store_path), timeout=300) as engine:
        for name, kql in named:
            engine.query(kql)  # warm-up: translation cache, data pages in the OS cache
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                result = engine.query(kql)
                times.append(time.perf_counter() - started)
            out.append((name, statistics.median(times), len(result.rows)))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per query")
    parser.add_argument("--all-rules", action="store_true", help="time every KQL rule")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="build here (default: a temporary folder)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the built stores")
    parser.add_argument("--child-build", nargs=2, metavar=("ROWS", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_build:
        print(json.dumps(child_build(int(args.child_build[0]), Path(args.child_build[1]))))
        return

    work = args.cache_dir or Path(tempfile.mkdtemp(prefix="ctirealm-scale-"))
    print(f"cpus {os.cpu_count()}")
    largest = None
    try:
        for rows in args.rows:
            load = os.getloadavg()[0]
            figures = build(rows, work / f"rows-{rows}")
            print(
                f"{rows:>11,} rows  build {figures['wall']:6.1f} s  "
                f"cpu {figures['cpu_build']:6.1f} s + workers {figures['cpu_workers']:6.1f} s  "
                f"disk {figures['size_mb']:7.1f} MB  peak RSS {figures['rss_build_mb']:6.0f} MB "
                f"(worker {figures['rss_worker_mb']:4.0f} MB)  "
                f"load {load:.2f} -> {os.getloadavg()[0]:.2f}",
                flush=True,
            )
            largest = figures
        if largest:
            named = queries(args.all_rules)
            load = os.getloadavg()[0]
            timed = time_queries(Path(str(largest["path"])), named, args.repeat)
            for name, seconds, count in timed:
                print(f"  {name:<12} {seconds * 1000:8.1f} ms  {count:>6} rows")
            print(
                f"median over {len(timed)} queries on {largest['rows']:,} rows: "
                f"{statistics.median(t for _, t, _ in timed) * 1000:.1f} ms  "
                f"(load {load:.2f} -> {os.getloadavg()[0]:.2f})"
            )
    finally:
        if args.keep or args.cache_dir:
            print(f"stores kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
