"""Python agents get the tool calls and nothing else: no cases, engine, trajectory or recorder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ctirealm.agents import ReplayAgent, Task, run_case
from ctirealm.agents.base import is_toolbox_adapter, tools_for
from ctirealm.agents.builtin import BaselineAgent, NullAgent, OracleAgent
from ctirealm.agents.command import CommandAgent
from ctirealm.agents.inspect_log import InspectLogAgent
from ctirealm.cases import CaseSet
from ctirealm.engine import LocalEngine
from ctirealm.tools import Toolbox, Trajectory
from ctirealm.tools.facade import facade
from ctirealm.tools.toolbox import EVERY_TOOL
from tests.helpers import mini_project

MINI = Path(__file__).resolve().parents[1] / "fixtures" / "mini"
GOOD = {
    "sigma_rule": "title: x\n" + "#" * 60,
    "kql_query": "AKSAudit | take 1",
    "query_results": [{"AuditId": "a", "Verb": "list"}],
}
#: What an agent reaching past its tools would try, and the exception it must get.
REACHES = {
    "tools.cases": lambda tools: tools.cases,
    "tools.engine": lambda tools: tools.engine,
    "tools.trajectory": lambda tools: tools.trajectory,
    "tools.record": lambda tools: tools.record("execute_kql_query", {"query": "x"}, "{}"),
    "tools.store": lambda tools: tools.store,
    "tools.labels": lambda tools: tools.labels,
    "tools.attack": lambda tools: tools.attack,
    "tools._toolbox": lambda tools: tools._toolbox,
    "tools._impl": lambda tools: tools._impl,
    "tools.stop": lambda tools: tools.stop("done"),
    "tools.__dict__": lambda tools: tools.__dict__,
    "vars(tools)": lambda tools: vars(tools),
    "tools.call.__self__": lambda tools: tools.call.__self__,
    "tools.cases = ...": lambda tools: setattr(tools, "cases", None),
}


def _toolbox(cases: CaseSet, engine: LocalEngine) -> Toolbox:
    return Toolbox(engine, cases, Trajectory("aks_001", "test"))


class Prober:
    """Tries every reach past the tools, notes what each raised, then works as a normal agent."""

    name = "prober"

    def __init__(self) -> None:
        self.raised: dict[str, str] = {}

    def run(self, task: Task, tools: Any) -> dict[str, Any]:
        for what, reach in REACHES.items():
            try:
                reach(tools)
            except (AttributeError, TypeError) as exc:
                self.raised[what] = type(exc).__name__
        tools.say("T1552: credentials in files")
        result = json.loads(tools.execute_kql_query(query="AKSAudit | where Verb == 'list'"))
        rows = result["Tables"][0]["Rows"]
        return {**GOOD, "query_results": [{"AuditId": rows[0][0], "Verb": rows[0][1]}]}


def test_every_reach_past_the_tools_fails_and_the_case_goes_on(cases: CaseSet, engine: LocalEngine) -> None:
    agent = Prober()
    toolbox = _toolbox(cases, engine)
    trajectory = run_case(agent, Task.for_case(cases.cases["aks_001"], toolbox), toolbox)
    assert trajectory.status == "submitted", trajectory.reason
    assert set(agent.raised) == set(REACHES), f"reached: {set(REACHES) - set(agent.raised)}"
    assert agent.raised["vars(tools)"] == "TypeError"
    # Nothing was forged: the trajectory holds exactly what the agent did through its tools.
    assert [c.name for c in trajectory.tool_calls()] == ["execute_kql_query"]
    assert [s.text for s in trajectory.steps if s.kind == "assistant"] == ["T1552: credentials in files"]


def test_the_facade_offers_tool_calls_say_specs_and_names(cases: CaseSet, engine: LocalEngine) -> None:
    toolbox = _toolbox(cases, engine)
    tools = facade(toolbox)
    assert tuple(tools.names) == tuple(toolbox.names) and tools.names() == toolbox.names
    assert "execute_kql_query" in tools.names
    assert sorted(dir(tools)) == sorted(["call", "say", "specs", "openai_tools", "names", *EVERY_TOOL])
    assert json.loads(tools.execute_kql_query(query="AKSAudit"))["Tables"][0]["Rows"] == [["a", "list"]]
    assert tools.call("get_table_schema", {"table_name": "aksaudit"}).startswith('{"TableName"')
    assert tools.call("list_kusto_tables", "{}", call_id="c-1").startswith("[")
    tools.say("text", "reasoning")
    assert [c.call_id for c in toolbox.trajectory.tool_calls()] == [None, None, "c-1"]
    assert toolbox.trajectory.steps[-1].reasoning == "reasoning"
    assert tools.execute_kql_query.__name__ == "execute_kql_query"
    assert "read-only KQL" in (tools.execute_kql_query.__doc__ or "")
    assert [t["function"]["name"] for t in tools.openai_tools()] == list(toolbox.names)
    with pytest.raises(AttributeError, match="an agent gets only call, say"):
        tools.cases  # noqa: B018


def test_an_agent_editing_its_specs_changes_nothing_for_the_toolbox(
    cases: CaseSet, engine: LocalEngine
) -> None:
    toolbox = _toolbox(cases, engine)
    tools = facade(toolbox)
    for spec in tools.specs():
        spec.parameters["properties"]["sneaky"] = {"type": "string"}
        spec.parameters["required"].clear()
    tools.openai_tools()[0]["function"]["parameters"]["required"].append("x")
    assert "sneaky" not in json.dumps(tools.openai_tools())
    assert tools.call("execute_kql_query", {"query": "AKSAudit", "sneaky": "1"}).startswith(
        "Error: unexpected argument(s) sneaky"
    )
    task = Task.for_case(cases.cases["aks_001"], toolbox)
    task.tools[0].parameters["properties"]["sneaky"] = {}
    assert "sneaky" not in json.dumps(toolbox.openai_tools())


def test_only_ctirealms_own_remote_adapters_get_the_toolbox(
    cases: CaseSet, engine: LocalEngine, tmp_path: Path
) -> None:
    openai_chat = pytest.importorskip("ctirealm.agents.openai_chat")
    toolbox = _toolbox(cases, engine)
    # Adapters for agents that run elsewhere record notes and logged calls: they keep the toolbox.
    for adapter in (
        CommandAgent("python agent.py"),
        object.__new__(openai_chat.OpenAIAgent),
        object.__new__(InspectLogAgent),
    ):
        assert is_toolbox_adapter(adapter), type(adapter)
        assert tools_for(adapter, toolbox) is toolbox

    class Sub(CommandAgent):
        pass

    class Disguised:
        __class__ = CommandAgent  # isinstance() is fooled; type() is not

        def run(self, task: Task, tools: Any) -> None:
            return None

    disguised = Disguised()
    assert isinstance(disguised, CommandAgent)
    for agent in (
        Sub("python agent.py"),
        disguised,
        OracleAgent(cases),
        BaselineAgent(),
        NullAgent(),
        ReplayAgent(tmp_path),
        Prober(),
    ):
        assert not is_toolbox_adapter(agent), type(agent)
        assert not isinstance(tools_for(agent, toolbox), Toolbox)


FIXTURE_AGENT = '''
import pytest
from ctirealm.agents.builtin import OracleAgent

REACHES = ["cases", "engine", "trajectory", "record", "_toolbox", "store", "labels"]


class Snooping(OracleAgent):
    """The oracle, after trying to reach past its tools (it notes what it found)."""

    name = "snooping"

    def run(self, task, tools):
        found = []
        for attribute in REACHES:
            try:
                getattr(tools, attribute)
                found.append(attribute)
            except AttributeError:
                pass
        try:
            vars(tools)
            found.append("vars")
        except TypeError:
            pass
        tools.say("reached: " + (", ".join(found) or "nothing"))
        return super().run(task, tools)


@pytest.fixture(scope="session")
def realm_agent(realm_cases):
    return Snooping(realm_cases)
'''


@pytest.mark.slow
def test_an_agent_from_the_realm_agent_fixture_sees_the_facade_and_scores_as_usual(
    pytester: pytest.Pytester, store_cache: Path
) -> None:
    project = mini_project(pytester, store_cache)
    project.makeconftest(FIXTURE_AGENT)
    result = project.runpytest()
    result.assert_outcomes(passed=12)
    results = json.loads((project.path / "reports" / "results.json").read_text())
    for case in results["cases"]:
        assert case["status"] == "submitted"
        assert case["checkpoints"]["C4_kql_detection"]["score"] == 5.0
        assert case["normalized_score"] >= 0.95
    # The run says which agent ran, not the --realm-agent default the override replaced.
    assert results["run"]["agent"] == "snooping"
    trajectory = json.loads((project.path / "reports" / "trajectories" / "linux_001.e1.json").read_text())
    assert trajectory["agent"] == "snooping"
    said = [s["text"] for s in trajectory["steps"] if s["kind"] == "assistant"]
    assert said[0] == "reached: nothing"
