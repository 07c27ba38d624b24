"""ctirealm as an Inspect AI task: ``inspect eval ctirealm/ctirealm --model <provider/model>``.

Inspect finds the task through the package's ``inspect_ai`` entry point (this
module). Samples are the cases (the objective as input, the case id as sample
id, platform, subsets and difficulty as metadata). For each sample the solver
builds the case's `Toolbox` on the ``dev`` store, exactly as the pytest plugin
does for any agent, and runs a tool-calling loop with the model under test:

* every assistant turn's text and reasoning is recorded in the trajectory, and
  every tool call goes through the toolbox (checked, limited, recorded);
* the run ends at the first accepted ``submit_detection`` call (see
  `ctirealm.agents.inspect_run` for why that tool and not ``submit``), at the
  first reply without tool calls (its JSON, if any, is the answer: the
  openai adapter's rule), at the tool-call limit, or at an Inspect limit
  (message, time, tokens), which is recorded as the other adapters record it.

The scorer grades the trajectory with the plugin's own ``score_case`` call:
final detections executed on the ``test`` split (``dev`` when the dataset has
no held-out split), the same trajectory scored on ``dev`` beside it in the
score's metadata. Its value holds every checkpoint (NaN when not scored, e.g.
compat without a judge, so metrics skip it) and ``normalized``; the
explanation lists the checkpoints' messages.

A log of this task is also an ``inspect:LOG`` agent: ``pytest
--realm-agent inspect:logs/`` replays it and scores it again.
"""

from __future__ import annotations

import math
import time
from typing import Any

import anyio
from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import (
    ChatMessageSystem,
    ChatMessageTool,
    ChatMessageUser,
    execute_tools,
    get_model,
)
from inspect_ai.scorer import Score, Target, mean, scorer, stderr
from inspect_ai.solver import Generate, Solver, TaskState, solver
from inspect_ai.util import LimitExceededError

from ..cases import PLATFORMS
from ..scoring import CHECKPOINTS, MODES, CaseScore
from ..tools.toolbox import VARIANTS, Toolbox, parse_toolsets
from ..tools.trajectory import Trajectory
from .base import DEFAULT_MESSAGE_LIMIT, DEFAULT_TIME_LIMIT
from .base import Task as RealmTask
from .inspect_bench import DEFAULT_QUERY_TIMEOUT, Bench, bench_for

# The log reader's own readings of a message: a live run and a replay of its log record the same.
from .inspect_log import RUN_STORE_KEY, _arguments, _reasoning_of, _text_of
from .inspect_run import CaseRun, conclude, inspect_prompt

DEFAULT_MAX_TOOL_CALLS = 200
#: --realm-subset's names, and the subsets' own.
SUBSETS = {"25": "realm-25", "50": "realm-50", "all": None, "realm-25": "realm-25", "realm-50": "realm-50"}
#: Runs between the solver and the scorer, by sample uuid: a trajectory holds a toolbox,
#: which Inspect's store (serialised into the log) cannot.
_RUNS: dict[str, CaseRun] = {}


@task
def ctirealm(
    subset: str | int = "all",
    platform: str | None = None,
    variant: str = "full",
    tools: str = "",
    split: str = "test",
    scoring: str = "strict",
    message_limit: int = DEFAULT_MESSAGE_LIMIT,
    time_limit: int = int(DEFAULT_TIME_LIMIT),
    tool_calls: int = DEFAULT_MAX_TOOL_CALLS,
    cases: str = "cases",
    telemetry: str = "telemetry",
    cache_dir: str | None = None,
    query_timeout: float = DEFAULT_QUERY_TIMEOUT,
) -> Task:
    """The ctirealm benchmark: one sample per case, scored per checkpoint (C0–C4).

    Args:
        subset: ``25``, ``50`` or ``all`` cases.
        platform: only the cases of these platforms (comma-separated: ``linux,aks``).
        variant: tool set: ``full``, ``minimal`` (no CTI, ATT&CK or Sigma tools) or ``seeded``.
        tools: opt-in toolsets beside the variant's: ``+sandbox`` (bash and python without
            network, under bubblewrap).
        split: where final detections are scored (``test``; ``dev`` when the dataset has no
            held-out split). Strict scoring also scores them on ``dev`` beside.
        scoring: ``strict`` (deterministic) or ``compat`` (the reference's formulas; C0 and
            Sigma quality are not scored, having no judge).
        message_limit: messages per case, the system prompt and objective included.
        time_limit: wall-time seconds per case.
        tool_calls: tool calls per case.
        cases: the cases folder (relative to the working directory).
        telemetry: the telemetry folder the stores are built from.
        cache_dir: where built stores are cached (default ``$CTIREALM_CACHE_DIR`` or
            ``~/.cache/ctirealm``).
        query_timeout: seconds one query may run.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if scoring not in MODES:
        raise ValueError(f"scoring must be one of {', '.join(MODES)}, got {scoring!r}")
    subset = str(subset)  # `-T subset=25` arrives as a number
    if subset not in SUBSETS:
        raise ValueError(f"subset must be 25, 50 or all, got {subset!r}")
    platforms = _platforms(platform)
    toolsets = parse_toolsets(tools)
    bench = bench_for(cases, telemetry, cache_dir=cache_dir, query_timeout=query_timeout)
    scored_on = bench.scoring_split(split)
    for needed in dict.fromkeys(("dev", scored_on)):
        bench.store(needed)  # built now: a broken dataset stops the task before any sample runs
    return Task(
        dataset=case_dataset(bench, subset=SUBSETS[subset], platforms=platforms, variant=variant),
        solver=realm_agent(
            bench,
            variant=variant,
            tool_calls=tool_calls,
            message_limit=message_limit,
            time_limit=time_limit,
            toolsets=toolsets,
        ),
        scorer=realm_scorer(bench, split=scored_on, mode=scoring),
        message_limit=message_limit,
        time_limit=time_limit,
        version=1,
        metadata={
            "variant": variant,
            "toolsets": list(toolsets),
            "split": scored_on,
            "scoring": scoring,
            "dataset": bench.store().meta.get("dataset"),
            "hashes": {
                name: bench.store(name).meta.get("hash") for name in dict.fromkeys(("dev", scored_on))
            },
        },
    )


def _platforms(platform: str | None) -> list[str] | None:
    if not platform:
        return None
    names = [p.strip() for p in platform.split(",") if p.strip()]
    unknown = [p for p in names if p not in PLATFORMS]
    if unknown:
        raise ValueError(f"unknown platform {', '.join(unknown)}; use {', '.join(PLATFORMS)}")
    return names


def case_dataset(
    bench: Bench, *, subset: str | None = None, platforms: list[str] | None = None, variant: str = "full"
) -> MemoryDataset:
    """One sample per case, sorted by id: the objective (the guidance in ``seeded``), the id,
    platform, subsets, difficulty."""
    samples = [
        Sample(
            input=case.objective_for(variant),
            id=case.id,
            metadata={
                "platform": case.platform,
                "subsets": list(case.subsets),
                "difficulty": case.difficulty,
                "title": case.title,
            },
        )
        for case in sorted(bench.cases.cases.values(), key=lambda c: c.id)
        if (subset is None or subset in case.subsets) and (platforms is None or case.platform in platforms)
    ]
    if not samples:
        raise ValueError(
            f"no cases in {bench.cases_root} match subset={subset or 'all'}, "
            f"platform={','.join(platforms or []) or 'any'}"
        )
    return MemoryDataset(samples, name="ctirealm")


@solver
def realm_agent(
    bench: Bench,
    *,
    variant: str = "full",
    tool_calls: int = DEFAULT_MAX_TOOL_CALLS,
    message_limit: int = DEFAULT_MESSAGE_LIMIT,
    time_limit: float = DEFAULT_TIME_LIMIT,
    toolsets: tuple[str, ...] = (),
) -> Solver:
    """The tool-calling loop over the case's toolbox (the module docstring says how runs end)."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        case = bench.cases.cases[str(state.sample_id)]
        model = get_model()
        trajectory = Trajectory(case.id, f"inspect:{model}", variant=variant, epoch=state.epoch)
        toolbox = Toolbox(
            bench.engine("dev"),
            bench.cases,
            trajectory,
            variant=variant,
            max_tool_calls=tool_calls,
            toolsets=toolsets,
        )
        realm_task = RealmTask.for_case(
            case,
            toolbox,
            variant=variant,
            message_limit=message_limit,
            time_limit=float(time_limit),
            epoch=state.epoch,
        )
        run = CaseRun(realm_task, toolbox)
        _RUNS[state.uuid] = run
        # Given to each generate, not set as state.tools: Inspect would re-derive the schemas
        # from them and insist on a description for every parameter, which some of ours (the
        # reference's) lack.
        tools = run.tools(bench.lock)
        state.messages = [
            ChatMessageSystem(content=inspect_prompt(realm_task)),
            ChatMessageUser(content=realm_task.user_message),
        ]
        started = time.perf_counter()
        try:
            while not run.ended:
                output = await model.generate(state.messages, tools)
                state.output = output
                message = output.message
                state.messages.append(message)
                run.say(_text_of(message.content), _reasoning_of(message.content))
                if not message.tool_calls:
                    run.final_reply(_text_of(message.content))
                    break
                steps_before = len(trajectory.steps)
                run.expect(message.tool_calls)
                result = await execute_tools(state.messages, tools)
                state.messages.extend(result.messages)
                _record_refused(run, message.tool_calls, result.messages, steps_before)
        except LimitExceededError as exc:
            run.stop(f"{exc.type} limit of {exc.limit_str} reached", limit=exc.type)
            raise
        except anyio.get_cancelled_exc_class():
            # Inspect's time limit cancels the solver and raises its LimitExceededError outside.
            run.stop(f"time limit of {time_limit:g} s reached, or the sample was cancelled", limit="time")
            raise
        except Exception as exc:  # a model API error, say: Inspect records it as the sample's error
            run.error = f"{type(exc).__name__}: {exc}"[:2000]
            raise
        finally:
            conclude(run, time.perf_counter() - started)
            toolbox.close()
            # The sample store's record of the run also tells the log reader (inspect:LOG) that
            # this is this task's log, whose answer comes only from submit_detection or a reply.
            state.store.set(
                RUN_STORE_KEY,
                {
                    "agent": trajectory.agent,
                    "variant": variant,
                    "status": trajectory.status,
                    "reason": trajectory.reason,
                },
            )
            text = run.answer_text()
            if text is not None and run.submitted:
                state.output.completion = text  # what `inspect view` shows as the answer
        return state

    return solve


def _record_refused(run: CaseRun, calls: list[Any], replies: list[Any], steps_before: int) -> None:
    """Calls Inspect answered with an error before any tool ran (arguments that break the schema,
    an unknown tool), recorded where they were made, as a replay of the log records them."""
    errors = {m.tool_call_id: m for m in replies if isinstance(m, ChatMessageTool) and m.error}
    steps = run.trajectory.steps
    for position, call in enumerate(calls):
        reply = errors.get(call.id)
        if reply is None or reply.error is None:  # `errors` holds only replies with an error
            continue
        error = str(reply.error.message)
        result = _text_of(reply.content)
        if not result.strip():
            result = f"Error: {error}"
        later = {str(c.id) for c in calls[position + 1 :]}
        index = next(
            (
                i
                for i in range(steps_before, len(steps))
                if (tool := steps[i].tool) is not None and tool.call_id in later
            ),
            len(steps),
        )
        count = len(steps)
        run.record_refused(str(call.function), _arguments(call), result, error, str(call.id))
        if len(steps) > count:
            steps.insert(index, steps.pop())


@scorer(metrics={"*": [mean(), stderr()]})
def realm_scorer(bench: Bench, *, split: str = "test", mode: str = "strict") -> Any:
    """Per-checkpoint scores of the sample's trajectory, from ctirealm's ``score_case``."""

    async def score(state: TaskState, target: Target) -> Score:
        run = _RUNS.pop(state.uuid, None)
        case = bench.cases.cases[str(state.sample_id)]
        if run is None:  # the solver never started (an error before it): nothing was done
            trajectory = Trajectory(case.id, "inspect", epoch=state.epoch)
            trajectory.reason = "the sample ended before the agent ran"
        else:
            conclude(run)
            trajectory = run.trajectory

        def grade() -> tuple[CaseScore, CaseScore | None]:
            with bench.lock:
                scored = bench.score(case, trajectory, split, mode=mode)
                dev = (
                    bench.score(case, trajectory, "dev", mode=mode)
                    if split != "dev" and mode == "strict"
                    else None
                )
            return scored, dev

        scored, dev = await anyio.to_thread.run_sync(grade)
        return case_score(scored, trajectory, dev)

    return score


def case_score(scored: CaseScore, trajectory: Trajectory, dev: CaseScore | None = None) -> Score:
    """An Inspect `Score` of a ctirealm case score: checkpoints and ``normalized`` as the value."""
    value: dict[str, float] = {
        name: math.nan
        if scored.checkpoints[name].score is None
        else round(float(scored.checkpoints[name].score or 0.0), 6)
        for name in CHECKPOINTS
    }
    value["normalized"] = round(scored.normalized, 6)
    lines = [f"{trajectory.status}" + (f": {trajectory.reason}" if trajectory.reason else "")]
    for name in CHECKPOINTS:
        checkpoint = scored.checkpoints[name]
        shown = "not scored" if checkpoint.score is None else f"{checkpoint.score:.2f}/{checkpoint.max:g}"
        lines.append(f"{name} {shown}: {checkpoint.message}")
    submission = trajectory.submission
    metadata: dict[str, Any] = {
        "status": trajectory.status,
        "reason": trajectory.reason,
        "split": scored.split,
        "tool_calls": len(trajectory.tool_calls()),
        "case": scored.to_dict(),
    }
    if dev is not None:
        metadata["dev"] = {
            "normalized": round(dev.normalized, 6),
            "checkpoints": {k: v.score for k, v in dev.checkpoints.items()},
        }
    return Score(
        value=value,
        answer=submission.kql_query if submission else None,
        explanation="\n".join(lines),
        metadata=metadata,
    )


__all__ = ["case_dataset", "case_score", "ctirealm", "realm_agent", "realm_scorer"]
