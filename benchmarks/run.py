"""Whole-benchmark wall time: the repository's cases run by pytest with the built-in agents.

For each agent (``oracle`` and ``baseline`` by default) the cases are run twice with
``-n 2``: **cold**, with a fresh store cache (the telemetry store is built inside the run),
and **warm**, with the store already cached. Reports go to a temporary folder, which is
removed afterwards (unless ``--keep``). Prints wall time, CPU time of the run's processes
and pytest's summary line for each run, plus the machine's load average, so figures can be
read against how busy the machine was.

    python benchmarks/run.py [--agents oracle baseline] [--workers 2] [--rows N]

``--main-job`` measures what ``make bench`` runs instead: ``ctirealm bench`` (every
split's store, then ``pytest -n auto`` over ``cases/`` with the baseline agent and
``rules/``, and the reports), cold and warm, with the run's score.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"\d+ (passed|failed|error)")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(command: list[str]) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run *command* in the repository; its result, wall seconds and CPU seconds."""
    cpu_before = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    return done, time.perf_counter() - started, _children_cpu() - cpu_before


def run_once(
    agent: str, workers: int, cache_dir: Path, report_dir: Path, rows: int | None
) -> dict[str, object]:
    """One pytest run over ``cases/``; returns wall and CPU seconds, exit code, summary."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(ROOT / "cases"),
        "-q",
        "-rfE",
        "-p",
        "no:cacheprovider",
        "-n",
        str(workers),
        "--realm-agent",
        agent,
        "--realm-cache-dir",
        str(cache_dir),
        "--realm-report-dir",
        str(report_dir),
    ]
    if rows is not None:
        command += ["--realm-rows", str(rows)]
    done, wall, cpu = _timed(command)
    lines = done.stdout.splitlines()
    summary = next(
        (line.strip("= ") for line in reversed(lines) if SUMMARY.search(line)), done.stderr.strip()[-300:]
    )
    failed = [line.split(" - ")[0] for line in lines if line.startswith(("FAILED ", "ERROR "))]
    return {
        "agent": agent,
        "wall": wall,
        "cpu": cpu,
        "exit": done.returncode,
        "summary": summary,
        "failed": failed,
    }


def run_main_job(work: Path, state: str, rows: int | None) -> dict[str, object]:
    """``ctirealm bench`` once (what ``make bench`` runs); wall and CPU seconds, exit, score."""
    reports = work / f"reports-{state}"
    command = [
        str(Path(sys.executable).with_name("ctirealm")),
        "bench",
        "--report-dir",
        str(reports),
        "--cache-dir",
        str(work / "cache"),
    ]
    if rows is not None:
        command += ["--rows", str(rows)]
    done, wall, cpu = _timed(command)
    try:
        results = json.loads((reports / "results.json").read_text(encoding="utf-8"))
        summary = f"score {results['summary']['normalized_score']:.3f}"
    except (OSError, ValueError, KeyError):
        summary = done.stderr.strip()[-300:]
    return {
        "agent": "make bench",
        "wall": wall,
        "cpu": cpu,
        "exit": done.returncode,
        "summary": summary,
        "failed": [],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", nargs="+", default=["oracle", "baseline"])
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (-n)")
    parser.add_argument(
        "--rows", type=int, default=None, help="generated background rows (default: dataset.yaml)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--main-job",
        action="store_true",
        help="measure ctirealm bench (make bench) instead of plain pytest runs",
    )
    args = parser.parse_args(argv)

    print(f"cpus {os.cpu_count()}, load average at start {os.getloadavg()[0]:.2f}")
    work = Path(tempfile.mkdtemp(prefix="ctirealm-run-bench-"))
    results = []
    try:
        for agent in ["make bench"] if args.main_job else args.agents:
            cache = work / f"cache-{agent}"  # fresh per agent: each cold run builds the store
            for state in ("cold", "warm"):
                if args.main_job:
                    result = run_main_job(work, state, args.rows)
                else:
                    result = run_once(
                        agent, args.workers, cache, work / f"reports-{agent}-{state}", args.rows
                    )
                result["state"] = state
                results.append(result)
                print(
                    f"{agent:>9} {state}  wall {result['wall']:6.1f} s  "
                    f"cpu {result['cpu']:6.1f} s  exit {result['exit']}  "
                    f"load {os.getloadavg()[0]:.2f}  | {result['summary']}",
                    flush=True,
                )
                failed = list(result["failed"])  # type: ignore[call-overload]
                if failed and agent == "oracle":  # the reference solutions should all pass
                    print("           " + "\n           ".join(failed[:5]))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
