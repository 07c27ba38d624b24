"""The project's own detection content passes its gate (`pytest rules/`) over the default store.

`make bench` runs it too, but beside the benchmark's cases, whose baseline items fail by
design; here a rule that stops matching its scenario's events, or starts matching benign
ones, fails `make test`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Slow: every shipped rule over the default store.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_every_shipped_rule_passes_its_gate(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "rules",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "--realm-report-dir",
            str(tmp_path / "reports"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    assert done.returncode == 0, "\n".join(failed) or done.stdout[-3000:] + done.stderr[-2000:]
