"""Suite-level sanity of the shipped benchmark: oracle near 1, null 0, baseline in between."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    def go(agent: str) -> dict:
        import subprocess
        import sys

        out = tmp_path_factory.mktemp(agent)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "cases",
                "-q",
                "-n",
                "2",
                "-p",
                "no:cacheprovider",
                f"--realm-agent={agent}",
                f"--realm-report-dir={out}",
            ],
            cwd=ROOT,
            capture_output=True,
            timeout=900,
            check=False,
        )
        return json.loads((out / "results.json").read_text())

    return go


def test_oracle_null_and_baseline_bracket_the_scale(run) -> None:
    oracle, null, baseline = run("oracle"), run("null"), run("baseline")
    for results in (oracle, null, baseline):
        assert len(results["cases"]) == 50
    assert oracle["summary"]["normalized_score"] >= 0.95
    assert all(c["status"] == "submitted" for c in oracle["cases"])
    assert null["summary"]["normalized_score"] == 0.0
    assert 0.0 < baseline["summary"]["normalized_score"] < oracle["summary"]["normalized_score"]
