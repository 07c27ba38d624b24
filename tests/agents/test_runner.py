"""The agent runner: every way an agent can fail ends its case with a status and reason."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from ctirealm.agents import ReplayAgent, Task, resolve_agent, run_case, trajectory_path
from ctirealm.agents.parse import SubmissionError, extract_json, to_submission
from ctirealm.cases import CaseSet
from ctirealm.engine import LocalEngine
from ctirealm.tools import Toolbox, Trajectory

MINI = Path(__file__).resolve().parents[1] / "fixtures" / "mini"
GOOD = {
    "sigma_rule": "title: x\n" + "#" * 60,
    "kql_query": "AKSAudit | take 1",
    "query_results": [{"Verb": "list"}],
}


def _run(
    agent: Any, cases: CaseSet, engine: LocalEngine, *, time_limit: float = 5.0, max_tool_calls: int = 200
) -> Trajectory:
    case = cases.cases["aks_001"]
    trajectory = Trajectory(case.id, "test")
    toolbox = Toolbox(engine, cases, trajectory, max_tool_calls=max_tool_calls)
    return run_case(agent, Task.for_case(case, toolbox, time_limit=time_limit), toolbox)


class Scripted:
    name = "scripted"

    def __init__(self, behaviour: Any) -> None:
        self.behaviour = behaviour

    def run(self, task: Task, tools: Toolbox) -> Any:
        return self.behaviour(task, tools)


def test_the_agent_sees_only_the_objective(cases: CaseSet, engine: LocalEngine) -> None:
    seen: dict[str, Any] = {}

    def look(task: Task, tools: Toolbox) -> None:
        seen.update(vars(task))

    _run(Scripted(look), cases, engine)
    assert seen["user_message"].startswith("DETECTION OBJECTIVE:\n")
    assert "5a1e77" not in json.dumps(seen, default=str)  # the simulation marker never leaks
    assert "T1552" not in seen["user_message"]


@pytest.mark.parametrize(
    ("behaviour", "status", "reason"),
    [
        (lambda t, tools: GOOD, "submitted", ""),
        (lambda t, tools: "```json\n" + json.dumps(GOOD) + "\n```\nDone!", "submitted", ""),
        (lambda t, tools: None, "no_submission", "without submitting"),
        (lambda t, tools: 1 / 0, "crashed", "ZeroDivisionError"),
        (lambda t, tools: {"sigma_rule": 3}, "invalid_submission", "missing keys"),
        (lambda t, tools: "no json here", "invalid_submission", "no JSON object"),
        (lambda t, tools: b"\xff\xfe{not utf8", "invalid_submission", "no JSON object"),
        (lambda t, tools: {**GOOD, "query_results": "rows"}, "invalid_submission", "non-empty list"),
        (lambda t, tools: "x" * 6_000_000, "invalid_submission", "limit"),
    ],
)
def test_outcomes(cases: CaseSet, engine: LocalEngine, behaviour: Any, status: str, reason: str) -> None:
    trajectory = _run(Scripted(behaviour), cases, engine)
    assert trajectory.status == status
    assert reason in trajectory.reason


def test_a_hanging_agent_times_out_and_is_stopped(cases: CaseSet, engine: LocalEngine) -> None:
    def hang(task: Task, tools: Toolbox) -> None:
        while True:
            time.sleep(0.05)
            tools.list_kusto_tables()  # raises AgentStopped once the limit has passed

    started = time.perf_counter()
    trajectory = _run(Scripted(hang), cases, engine, time_limit=0.5)
    assert trajectory.status == "timeout"
    assert time.perf_counter() - started < 5


def test_an_infinite_tool_loop_hits_the_call_limit(cases: CaseSet, engine: LocalEngine) -> None:
    def loop(task: Task, tools: Toolbox) -> None:
        while True:
            try:
                tools.execute_kql_query(query="AKSAudit | count")
            except Exception:  # an agent swallowing errors cannot swallow the stop
                pass

    trajectory = _run(Scripted(loop), cases, engine, max_tool_calls=25)
    assert trajectory.status == "limit_exceeded"
    assert "tool-call limit of 25" in trajectory.reason
    assert len(trajectory.tool_calls()) == 26  # 25 calls and the one refused


def test_bad_tool_arguments_come_back_as_errors(cases: CaseSet, engine: LocalEngine) -> None:
    def probe(task: Task, tools: Toolbox) -> dict:
        results = [
            tools.call("execute_kql_query", "{not json"),
            tools.call("execute_kql_query", {"query": 5}),
            tools.call("get_table_schema", {"table_name": "Nope"}),
            tools.call("execute_kql_query", {"query": "AKSAudit", "bogus": 1}),
            tools.call("no_such_tool", {}),
        ]
        assert all(r.startswith("Error: ") for r in results), results
        return GOOD

    assert _run(Scripted(probe), cases, engine).status == "submitted"


def test_python_adapter_loads_objects_and_factories(cases: CaseSet) -> None:
    agent = resolve_agent("python:ctirealm.agents.builtin:NullAgent", cases)
    assert agent.name == "null"
    with pytest.raises(ValueError, match="cannot load python agent"):
        resolve_agent("python:no.such.module:Agent", cases)
    with pytest.raises(ValueError, match="unknown agent"):
        resolve_agent("gpt", cases)


def test_replay_reproduces_a_run(cases: CaseSet, engine: LocalEngine, tmp_path: Path) -> None:
    first = _run(
        resolve_agent("oracle", cases),
        cases,
        LocalEngine.from_tables({}, {"AKSAudit": [("AuditId", "string"), ("Verb", "string")]}),
    )
    first.save(trajectory_path(tmp_path, "aks_001"))
    again = _run(ReplayAgent(tmp_path), cases, engine)
    assert again.status == first.status
    assert [(c.name, c.arguments) for c in again.tool_calls()] == [
        (c.name, c.arguments) for c in first.tool_calls()
    ]
    assert again.submission == first.submission


def test_answer_parsing() -> None:
    text = "Here you go:\n```json\n" + json.dumps(GOOD) + "\n```\nLet me know."
    assert extract_json(text) == GOOD
    assert extract_json("prefix " + json.dumps(GOOD) + " trailing {") == GOOD
    assert to_submission(json.dumps(GOOD)).kql_query == "AKSAudit | take 1"
    with pytest.raises(SubmissionError, match="unexpected keys: extra"):
        to_submission({**GOOD, "extra": 1})
