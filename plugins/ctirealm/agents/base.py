"""The agent contract and the runner that enforces limits on it.

An agent is any object with ``run(task, tools)`` (sync or async) returning a
`Submission`, a dict, JSON text, or None. The runner gives it a `Task` and the
tool-calls-only facade of a `Toolbox` (`ctirealm.tools.facade`), runs it under
a wall-time limit in a worker thread, and turns every way it can fail —
exception, hang, limit, garbage — into a trajectory status and reason. It
never raises: one agent's failure ends its case, not the run.

Only ctirealm's own adapters for agents that run elsewhere (a program over
stdio, an MCP client, a model API, an Inspect log) get the toolbox itself, because they
record notes and logged calls into the trajectory.
They are recognised by exact class, never by anything an agent declares.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..cases import Case
from ..tools.facade import AgentTools, facade
from ..tools.toolbox import AgentStopped, Toolbox, ToolSpec
from ..tools.trajectory import Submission, Trajectory
from .parse import SubmissionError, to_submission
from .prompts import SYSTEM_PROMPT, seeded_notes, user_message

DEFAULT_TIME_LIMIT = 600.0
DEFAULT_MESSAGE_LIMIT = 70


@dataclass(frozen=True)
class Task:
    """What the agent is told: the objective (only that, as upstream), prompt, tools and limits."""

    case_id: str
    objective: str
    variant: str
    system_prompt: str
    user_message: str
    notes: str
    tools: list[ToolSpec]
    message_limit: int = DEFAULT_MESSAGE_LIMIT
    time_limit: float = DEFAULT_TIME_LIMIT
    epoch: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_case(
        cls,
        case: Case,
        toolbox: Toolbox,
        *,
        variant: str = "full",
        message_limit: int = DEFAULT_MESSAGE_LIMIT,
        time_limit: float = DEFAULT_TIME_LIMIT,
        epoch: int = 1,
    ) -> Task:
        notes = seeded_notes() if variant == "seeded" else ""
        objective = case.objective_for(variant)
        return cls(
            case_id=case.id,
            objective=objective,
            variant=variant,
            system_prompt=SYSTEM_PROMPT + (f"\n{notes}" if notes else ""),
            user_message=user_message(objective),
            notes=notes,
            tools=copy.deepcopy(toolbox.specs()),
            message_limit=message_limit,
            time_limit=time_limit,
            epoch=epoch,
        )


@runtime_checkable
class Agent(Protocol):
    """Anything with ``run(task, tools)``; ``name`` labels it in reports."""

    name: str

    def run(self, task: Task, tools: AgentTools) -> Any: ...


def agent_name(agent: Any) -> str:
    return str(getattr(agent, "name", None) or type(agent).__name__)


#: ctirealm's adapters that need the toolbox itself (module, class): they bridge an agent running
#: elsewhere and write notes or recorded calls into the trajectory. Looked up in sys.modules, so
#: checking costs no import (an adapter whose module was never imported has no instance).
TOOLBOX_ADAPTERS = (
    ("ctirealm.agents.command", "CommandAgent"),
    ("ctirealm.agents.mcp", "MCPAgent"),
    ("ctirealm.agents.openai_chat", "OpenAIAgent"),
    ("ctirealm.agents.inspect_log", "InspectLogAgent"),
)


def is_toolbox_adapter(agent: Any) -> bool:
    """True for an instance of exactly one of `TOOLBOX_ADAPTERS` (a subclass is user code)."""
    cls = type(agent)
    return any(getattr(sys.modules.get(module), name, None) is cls for module, name in TOOLBOX_ADAPTERS)


def tools_for(agent: Any, toolbox: Toolbox) -> Toolbox | AgentTools:
    """What *agent* gets as ``tools``: the facade, or the toolbox for ctirealm's own adapters."""
    return toolbox if is_toolbox_adapter(agent) else facade(toolbox)


def run_case(agent: Any, task: Task, toolbox: Toolbox) -> Trajectory:
    """Run *agent* on one task; return its trajectory with status and reason. Never raises.

    The agent is handed `tools_for(agent, toolbox)`: a Python agent never sees the toolbox.
    """
    trajectory = toolbox.trajectory
    tools = tools_for(agent, toolbox)
    outcome: dict[str, Any] = {}
    started = time.perf_counter()

    def target() -> None:
        try:
            result = agent.run(task, tools)
            if inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
            outcome["answer"] = result
        except AgentStopped as exc:
            outcome["stopped"] = str(exc)
        except BaseException as exc:  # the agent's bug, reported, never propagated
            outcome["error"] = exc
            outcome["trace"] = traceback.format_exc(limit=-3)

    worker = threading.Thread(target=target, name=f"agent-{task.case_id}", daemon=True)
    worker.start()
    worker.join(task.time_limit)
    if worker.is_alive():
        toolbox.stop(f"time limit of {task.time_limit:g} s exceeded")
        cancel = getattr(agent, "cancel", None)
        if callable(cancel):
            try:
                cancel()
            except Exception:  # best effort: the case is already over
                pass
        worker.join(5.0)
        trajectory.status = "timeout"
        trajectory.reason = f"the agent did not finish within the time limit of {task.time_limit:g} s"
    elif "stopped" in outcome:
        trajectory.status = "limit_exceeded"
        trajectory.reason = f"the agent was stopped: {outcome['stopped']}"
    elif "error" in outcome:
        error = outcome["error"]
        trajectory.status = "crashed"
        trajectory.reason = f"the agent raised {type(error).__name__}: {error}"[:2000]
    else:
        answer = outcome.get("answer")
        if answer is None:
            trajectory.status = "no_submission"
            trajectory.reason = "the agent finished without submitting an answer"
        else:
            trajectory.raw_answer = _preview(answer)
            try:
                trajectory.submission = to_submission(answer)
                trajectory.status = "submitted"
            except SubmissionError as exc:
                trajectory.status = "invalid_submission"
                trajectory.reason = f"the answer is not a valid submission: {exc}"
    trajectory.duration = round(time.perf_counter() - started, 3)
    return trajectory


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _preview(answer: Any, limit: int = 20_000) -> str:
    if isinstance(answer, (bytes, bytearray)):
        text = bytes(answer[:limit]).decode("utf-8", errors="replace")
    elif isinstance(answer, str):
        text = answer[:limit]
    else:
        # An object is recorded as the JSON an agent answering in text would have written, so
        # compat scoring reads every record as the reference reads a model's output.
        if isinstance(answer, Submission):
            answer = answer.to_dict()
        try:
            text = json.dumps(answer, ensure_ascii=False, default=str)[:limit]
        except (TypeError, ValueError):
            text = repr(answer)[:limit]
    return text
