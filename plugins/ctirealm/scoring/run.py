"""The pytest-free core: run an agent on a case, and score a trajectory on a split's store.

Every way of running the benchmark goes through these two functions: the pytest plugin
(one item group per case), Inspect AI's scorer (`agents.inspect_bench`), and re-scoring
logged runs (`scoring.rescore`, ``ctirealm import inspect``). So a case is run with the same
toolbox and limits, and scored with the same evaluator, sigma scorer and neutral events,
whichever harness drives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..agents.base import DEFAULT_TIME_LIMIT, Task, agent_name, run_case
from ..cases import Case, CaseSet
from ..engine import Engine
from ..telemetry.labels import Labels
from ..tools.toolbox import Toolbox
from ..tools.trajectory import Trajectory
from . import CaseScore, neutral_events, score_case
from .sigma_quality import sigma_scorer_for


@dataclass(frozen=True)
class RunSettings:
    """How an agent is run: the task variant, its tool-call budget and toolsets, its time."""

    variant: str = "full"
    max_tool_calls: int = 200
    toolsets: tuple[str, ...] = ()
    time_limit: float = DEFAULT_TIME_LIMIT


def run_agent(
    agent: Any,
    case: Case,
    cases: CaseSet,
    engine: Engine,
    settings: RunSettings = RunSettings(),
    *,
    epoch: int = 1,
) -> Trajectory:
    """Run *agent* on *case* with the tools over *engine* (what the agent may query); return
    the trajectory it recorded, ended with its status."""
    trajectory = Trajectory(case.id, agent_name(agent), variant=settings.variant, epoch=epoch)
    toolbox = Toolbox(
        engine,
        cases,
        trajectory,
        variant=settings.variant,
        max_tool_calls=settings.max_tool_calls,
        toolsets=settings.toolsets,
    )
    task = Task.for_case(case, toolbox, variant=settings.variant, time_limit=settings.time_limit, epoch=epoch)
    try:
        run_case(agent, task, toolbox)
    finally:
        toolbox.close()
    return trajectory


def score_on(
    case: Case,
    cases: CaseSet,
    trajectory: Trajectory,
    *,
    engine: Engine,
    labels: Labels,
    mode: str = "strict",
    judge: Any = None,
) -> CaseScore:
    """Every checkpoint of *case* for *trajectory*, its final detections executed with *engine*
    on the store whose event labels are *labels* (a split's store)."""
    schemas = engine.schemas
    return score_case(
        case.bound(labels),
        trajectory,
        engine=engine,
        labels=labels,
        schemas=schemas,
        mode=mode,
        sigma_scorer=sigma_scorer_for(engine, labels, schemas),
        neutral=neutral_events(case, cases, labels),
        judge=judge,
    )
