"""Shortcut agents on the full benchmark: can a detection score without understanding the attack?

Runs every shortcut agent of ``ctirealm.agents.shortcuts`` (agents that never read the cases,
rules, telemetry or labels, see that module) and, for comparison, ``oracle`` and ``baseline``
over ``cases/`` with pytest, one run per agent, and prints per agent: the overall normalised
score, the share of the C4 points earned (C4_kql_detection + C4_sigma_quality over their
maximum), and both by platform. A benchmark that cannot be gamed keeps every shortcut at or below
0.15 overall and 10% of the C4 points.

    python benchmarks/shortcuts.py [--agents marker keywords ...] [--paths cases/aks]
        [--workers 2] [--rows 100000] [--cache-dir DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ctirealm.agents.shortcuts import SHORTCUTS

ROOT = Path(__file__).resolve().parents[1]
C4 = ("C4_kql_detection", "C4_sigma_quality")
LIMITS = {"normalized": 0.15, "c4_share": 0.10}
PLATFORMS = ("linux", "aks", "cloud")


def spec(agent: str) -> str:
    """The ``--realm-agent`` spec of a shortcut name (built-ins pass through)."""
    if agent in SHORTCUTS:
        return f"python:ctirealm.agents.shortcuts:{SHORTCUTS[agent].__name__}"
    return agent


def measure(cases: list[dict[str, Any]]) -> dict[str, float]:
    """Mean normalised score and the share of C4 points earned, over *cases* of results.json."""
    if not cases:
        return {"normalized": float("nan"), "c4_share": float("nan"), "cases": 0}
    earned = sum(c["checkpoints"][k]["score"] or 0.0 for c in cases for k in C4)
    maximum = sum(c["checkpoints"][k]["max"] for c in cases for k in C4)
    return {
        "normalized": sum(c["normalized_score"] for c in cases) / len(cases),
        "c4_share": earned / maximum if maximum else 0.0,
        "cases": len(cases),
    }


def run(
    agent: str, paths: list[str], workers: int, report_dir: Path, extra: list[str] = ()
) -> dict[str, Any]:  # type: ignore[assignment]
    """One pytest run of *agent*; its measurements overall and by platform."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        *paths,
        "-q",
        "-p",
        "no:cacheprovider",
        "--realm-agent",
        spec(agent),
        "--realm-report-dir",
        str(report_dir),
        *extra,
    ]
    command += ["-n", str(workers)] if workers > 1 else ["-p", "no:xdist"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    results_file = report_dir / "results.json"
    if not results_file.is_file():
        raise SystemExit(
            f"{agent}: pytest wrote no results.json (exit {done.returncode}):\n"
            f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    cases = json.loads(results_file.read_text(encoding="utf-8"))["cases"]
    return {
        "agent": agent,
        "wall": wall,
        "all": measure(cases),
        **{p: measure([c for c in cases if c["platform"] == p]) for p in PLATFORMS},
        "cases": {
            c["id"]: {"normalized": c["normalized_score"], "c4_share": measure([c])["c4_share"]}
            for c in cases
        },
    }


def _cell(values: dict[str, float]) -> str:
    if not values["cases"]:
        return f"{'-':>13}"
    return f"{values['normalized']:5.3f} {values['c4_share']:6.1%}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--agents",
        nargs="+",
        default=[*SHORTCUTS, "oracle", "baseline"],
        help=f"shortcut names ({', '.join(SHORTCUTS)}) or any --realm-agent spec",
    )
    parser.add_argument("--paths", nargs="+", default=["cases"], help="case files or folders")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (-n)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the run reports")
    parser.add_argument(
        "--rows", type=int, default=None, help="background rows of the store (default: dataset.yaml's)"
    )
    parser.add_argument("--cache-dir", default=None, help="store cache (--realm-cache-dir)")
    args = parser.parse_args(argv)

    extra = [
        *(["--realm-rows", str(args.rows)] if args.rows else []),
        *(["--realm-cache-dir", args.cache_dir] if args.cache_dir else []),
    ]
    work = Path(tempfile.mkdtemp(prefix="ctirealm-shortcuts-"))
    print(f"cpus {os.cpu_count()}, load average at start {os.getloadavg()[0]:.2f}")
    print(
        "normalised score and share of C4 points (limits for a shortcut: "
        f"{LIMITS['normalized']:.2f} and {LIMITS['c4_share']:.0%})"
    )
    print(
        f"{'agent':>12} {'overall':>13} " + " ".join(f"{p:>13}" for p in PLATFORMS) + f" {'wall':>7}  verdict"
    )
    figures = []
    try:
        for agent in args.agents:
            result = run(agent, args.paths, args.workers, work / agent.replace(":", "_"), extra)
            figures.append(result)
            overall = result["all"]
            over = [
                f"over {LIMITS[k]:g}" if k == "normalized" else f"over {LIMITS[k]:.0%} of C4"
                for k in ("normalized", "c4_share")
                if overall[k] > LIMITS[k]
            ]
            verdict = "-" if agent not in SHORTCUTS else ", ".join(over) or "held"
            print(
                f"{agent:>12} {_cell(overall)} "
                + " ".join(_cell(result[p]) for p in PLATFORMS)
                + f" {result['wall']:6.1f}s  {verdict}",
                flush=True,
            )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
