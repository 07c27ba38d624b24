"""Scoring logged runs again without running the model: every sample of an Inspect AI log
of a known case, replayed as a trajectory and scored in each mode."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..agents.inspect_log import InspectLogAgent
from .run import RunSettings, run_agent, score_on


def rescore(
    location: str | Path,
    cases: Any,
    *,
    engine: Any,
    labels: Any,
    modes: Iterable[str] = ("strict", "compat"),
    judge: Any = None,
) -> list[dict[str, Any]]:
    """Score every logged sample of a known case under each mode, without re-running the model.

    Returns one entry per sample: ``{"id", "epoch", "model", "status", "scores": {mode: CaseScore}}``.
    """
    agent = InspectLogAgent(location)
    out = []
    # A log is replayed, not run: no tool-call budget cuts what the model did.
    settings = RunSettings(max_tool_calls=10_000)
    for (case_id, epoch), sample in sorted(agent.samples.items()):
        case = cases.cases.get(case_id)
        if case is None:
            continue
        trajectory = run_agent(agent, case, cases, engine, settings, epoch=epoch)
        scores = {
            mode: score_on(case, cases, trajectory, engine=engine, labels=labels, mode=mode, judge=judge)
            for mode in modes
        }
        out.append(
            {
                "id": case_id,
                "epoch": epoch,
                "model": sample.model,
                "status": trajectory.status,
                "scores": scores,
            }
        )
    return out
