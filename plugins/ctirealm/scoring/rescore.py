"""Scoring logged runs again without running the model: every sample of an Inspect AI log
of a known case, replayed as a trajectory and scored in each mode."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..agents.base import Task, run_case
from ..agents.inspect_log import InspectLogAgent
from ..tools.toolbox import Toolbox
from ..tools.trajectory import Trajectory
from . import neutral_events, score_case
from .sigma_quality import sigma_scorer_for


def rescore(
    location: str | Path,
    cases: Any,
    *,
    engine: Any,
    labels: Any,
    schemas: Any,
    modes: Iterable[str] = ("strict", "compat"),
    judge: Any = None,
) -> list[dict[str, Any]]:
    """Score every logged sample of a known case under each mode, without re-running the model.

    Returns one entry per sample: ``{"id", "epoch", "model", "status", "scores": {mode: CaseScore}}``.
    """
    agent = InspectLogAgent(location)
    out = []
    scorer = sigma_scorer_for(engine, labels, schemas)
    for (case_id, epoch), sample in sorted(agent.samples.items()):
        case = cases.cases.get(case_id)
        if case is None:
            continue
        trajectory = Trajectory(case.id, agent.name, epoch=epoch)
        toolbox = Toolbox(engine, cases, trajectory, max_tool_calls=10_000)
        task = Task.for_case(case, toolbox, epoch=epoch)
        run_case(agent, task, toolbox)
        neutral = neutral_events(case, cases, labels)
        scores = {mode: score_case(case, trajectory, engine=engine, labels=labels, schemas=schemas,
                                   mode=mode, sigma_scorer=scorer, judge=judge, neutral=neutral)
                  for mode in modes}
        out.append({"id": case_id, "epoch": epoch, "model": sample.model,
                    "status": trajectory.status, "scores": scores})
    return out
