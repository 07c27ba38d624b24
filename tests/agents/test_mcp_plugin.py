"""``pytest --realm-agent mcp:...`` on the two-case project, under xdist: scored like the oracle."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from ctirealm.cases import load_cases
from tests.agents.mcp_helpers import CLIENT, oracle_steps

# Slow: MCP agents under xdist inside pytest.
pytestmark = pytest.mark.slow


def _scores(path: Path) -> dict[str, dict[str, float | None]]:
    results = json.loads(path.read_text())
    return {
        case["id"]: {name: cp["score"] for name, cp in case["checkpoints"].items()}
        for case in results["cases"]
    }


def test_mcp_agent_under_xdist_scores_like_the_oracle(mini: pytest.Pytester) -> None:
    mini.runpytest("--realm-agent", "oracle", "--realm-report-dir", "oracle").assert_outcomes(passed=12)
    cases = load_cases(mini.path / "cases")
    plans = mini.path / "plans"
    plans.mkdir()
    for case_id, case in cases.cases.items():
        (plans / f"{case_id}.json").write_text(
            json.dumps({"log": str(plans / f"{case_id}.log.json"), "steps": oracle_steps(case, cases)})
        )
    command = shlex.join([sys.executable, str(CLIENT), str(plans)]) + " {url} {case_id}"
    result = mini.runpytest_subprocess(
        "--realm-agent", f"mcp:{command}", "-n", "2", "--realm-report-dir", "mcp"
    )
    result.assert_outcomes(passed=12)
    results = json.loads((mini.path / "mcp" / "results.json").read_text())
    assert [c["status"] for c in results["cases"]] == ["submitted", "submitted"]
    assert all(c["trajectory"]["agent_spec"] == f"mcp:{command}" for c in results["cases"])
    assert _scores(mini.path / "mcp" / "results.json") == _scores(mini.path / "oracle" / "results.json")
    for case_id in cases.cases:
        log = json.loads((plans / f"{case_id}.log.json").read_text())
        assert not any(r["is_error"] for r in log["results"])
