"""Suite-level sanity of the shipped benchmark: oracle near 1, null 0, baseline in between, and
every case's checkpoint scores for the three as recorded (a restructuring must not move them)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from syrupy.assertion import SnapshotAssertion

# Slow: the whole benchmark, three times.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ("oracle", "null", "baseline")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict]:
    @functools.cache
    def go(agent: str) -> dict:
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


def test_oracle_null_and_baseline_bracket_the_scale(run: Callable[[str], dict]) -> None:
    oracle, null, baseline = (run(agent) for agent in AGENTS)
    for results in (oracle, null, baseline):
        assert len(results["cases"]) == 50
    assert oracle["summary"]["normalized_score"] >= 0.95
    assert all(c["status"] == "submitted" for c in oracle["cases"])
    assert null["summary"]["normalized_score"] == 0.0
    assert 0.0 < baseline["summary"]["normalized_score"] < oracle["summary"]["normalized_score"]


def test_every_checkpoint_scores_as_recorded(run: Callable[[str], dict], snapshot: SnapshotAssertion) -> None:
    # The scores of results.json for the three agents, case by case: code that moves between
    # modules must leave them as they were. A change to cases, telemetry or scoring that is
    # meant to move them updates the record (--snapshot-update) in the same commit.
    recorded = {
        agent: {
            case["id"]: {
                name: None if checkpoint["score"] is None else round(checkpoint["score"], 4)
                for name, checkpoint in case["checkpoints"].items()
            }
            for case in run(agent)["cases"]
        }
        for agent in AGENTS
    }
    assert recorded == snapshot
