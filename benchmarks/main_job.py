"""Wall time of the main job, ``make bench``: ``ctirealm bench`` cold and warm.

``make bench`` runs ``ctirealm bench --report-dir reports``: build every split's store,
then ``pytest -n auto`` over ``cases/`` (built-in baseline agent) and ``rules/``, and
write the reports. This script runs that command twice in a temporary folder, **cold**
(fresh store cache: both splits are built) and **warm** (stores cached), and prints wall
and CPU seconds, the exit code, the score and the machine's load average, so figures can
be read against how busy the machine was.

    python benchmarks/main_job.py [--rows N] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(work: Path, state: str, rows: int | None) -> dict[str, object]:
    reports = work / f"reports-{state}"
    command = [str(Path(sys.executable).with_name("ctirealm")), "bench", "--report-dir", str(reports),
               "--cache-dir", str(work / "cache")]
    if rows is not None:
        command += ["--rows", str(rows)]
    cpu = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    score = None
    try:
        results = json.loads((reports / "results.json").read_text(encoding="utf-8"))
        score = results["summary"]["normalized_score"]
    except (OSError, ValueError, KeyError):
        pass
    return {"state": state, "wall": wall, "cpu": _children_cpu() - cpu, "exit": done.returncode,
            "score": score, "tail": done.stderr.strip()[-300:] if done.returncode else ""}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=None,
                        help="generated background rows (default: dataset.yaml)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    print(f"cpus {os.cpu_count()}, load average at start {os.getloadavg()[0]:.2f}")
    work = Path(tempfile.mkdtemp(prefix="ctirealm-main-job-"))
    try:
        for state in ("cold", "warm"):
            result = run(work, state, args.rows)
            score = "-" if result["score"] is None else f"{result['score']:.3f}"
            print(f"make bench {state:<4}  wall {result['wall']:6.1f} s  cpu {result['cpu']:6.1f} s  "
                  f"exit {result['exit']}  score {score}  load {os.getloadavg()[0]:.2f}", flush=True)
            if result["tail"]:
                print(f"  {result['tail']}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
