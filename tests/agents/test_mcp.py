"""MCP: the ``mcp:COMMAND`` adapter and ``ctirealm mcp``, driven by a scripted agent on the SDK's client.

The scripted agent (tests/agents/mcp_client.py) is a real MCP client in its own
process, connecting over streamable HTTP (the adapter) or stdio (``ctirealm
mcp``); nothing of the protocol is mocked.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from ctirealm.agents import AgentSpecError, OracleAgent, ReplayAgent, Task, resolve_agent, run_case
from ctirealm.agents.mcp import MCPAgent, substitute
from ctirealm.agents.mcp_server import SUBMIT_SPEC, SUBMIT_TOOL
from ctirealm.agents.prompts import seeded_notes
from ctirealm.cases import CaseSet
from ctirealm.engine import LocalEngine
from ctirealm.scoring import score_case
from ctirealm.telemetry.dataset import Dataset
from ctirealm.telemetry.store import Store, build_store
from ctirealm.tools import Toolbox, Trajectory
from ctirealm.tools.sandbox import unavailable_reason
from ctirealm.tools.toolbox import SPECS, VARIANTS
from tests.agents.mcp_helpers import CLIENT, oracle_steps

ROOT = Path(__file__).resolve().parents[2]
MINI = ROOT / "tests" / "fixtures" / "mini"
PYTHON = shlex.quote(sys.executable)
CLI = [sys.executable, "-c", "import sys; from ctirealm.cli import main; sys.exit(main())"]
GOOD = {
    "sigma_rule": "title: scripted\n" + "#" * 60,
    "kql_query": "AKSAudit | take 1",
    "query_results": [{"Verb": "list"}],
}


@pytest.fixture(scope="module")
def telemetry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mini") / "telemetry"
    shutil.copytree(MINI / "telemetry", root)
    shutil.copytree(ROOT / "telemetry" / "schemas", root / "schemas")
    return root


@pytest.fixture(scope="module")
def store(telemetry: Path) -> Store:
    # Built as `ctirealm mcp` builds it, so the command finds it in the cache.
    return build_store(Dataset.load(telemetry), cache_dir=telemetry.parent / "cache", strict=False)


@pytest.fixture(scope="module")
def engine(store: Store) -> LocalEngine:
    return LocalEngine.of_store(store)


def _plan(tmp_path: Path, steps: list[dict[str, Any]], name: str = "plan", **extra: Any) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(
        json.dumps({"log": str(tmp_path / f"{name}.log.json"), "steps": steps, **extra}), encoding="utf-8"
    )
    return path


def _log(plan: Path) -> dict[str, Any]:
    return json.loads(Path(json.loads(plan.read_text())["log"]).read_text())


def _agent(plan: Path, **options: Any) -> MCPAgent:
    return MCPAgent(f"{PYTHON} {shlex.quote(str(CLIENT))} {shlex.quote(str(plan))} {{url}}", **options)


def _run(
    agent: Any,
    cases: CaseSet,
    engine: LocalEngine,
    case_id: str = "linux_001",
    *,
    variant: str = "full",
    time_limit: float = 30.0,
    max_tool_calls: int = 200,
) -> Trajectory:
    case = cases.cases[case_id]
    trajectory = Trajectory(case.id, getattr(agent, "name", "agent"), variant=variant)
    toolbox = Toolbox(engine, cases, trajectory, variant=variant, max_tool_calls=max_tool_calls)
    task = Task.for_case(case, toolbox, variant=variant, time_limit=time_limit)
    return run_case(agent, task, toolbox)


def _scores(
    cases: CaseSet, case_id: str, trajectory: Trajectory, engine: LocalEngine, store: Store
) -> dict[str, float | None]:
    score = score_case(
        cases.cases[case_id], trajectory, engine=engine, labels=store.labels, schemas=engine.schemas
    )
    return {name: checkpoint.score for name, checkpoint in score.checkpoints.items()}


def _calls(trajectory: Trajectory) -> list[tuple[str, dict[str, Any]]]:
    return [(c.name, c.arguments) for c in trajectory.tool_calls()]


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


# -- the adapter: a case solved over MCP ----------------------------------------------


@pytest.mark.parametrize("case_id", ["linux_001", "aks_001"])
def test_solves_a_case_and_scores_like_the_oracle(
    cases: CaseSet, engine: LocalEngine, store: Store, tmp_path: Path, case_id: str
) -> None:
    oracle = _run(OracleAgent(cases), cases, engine, case_id)
    assert oracle.status == "submitted", oracle.reason
    plan = _plan(tmp_path, oracle_steps(cases.cases[case_id], cases))
    trajectory = _run(_agent(plan), cases, engine, case_id)

    assert trajectory.status == "submitted", trajectory.reason
    assert _calls(trajectory) == _calls(oracle)
    assert all(c.ok for c in trajectory.tool_calls())
    assert all(c.call_id for c in trajectory.tool_calls())  # the JSON-RPC request ids
    assert trajectory.submission == oracle.submission
    assert _scores(cases, case_id, trajectory, engine, store) == _scores(
        cases, case_id, oracle, engine, store
    )
    assert sum(s or 0 for s in _scores(cases, case_id, trajectory, engine, store).values()) > 0
    notes = [s.text for s in trajectory.steps if s.kind == "note"]
    assert any(f"{SUBMIT_TOOL} accepted" in n for n in notes), notes
    log = _log(plan)
    assert not any(r["is_error"] for r in log["results"])
    assert log["results"][-1]["text"].startswith("Submission accepted")


def test_tools_prompt_and_instructions_match_the_toolbox(
    cases: CaseSet, engine: LocalEngine, tmp_path: Path
) -> None:
    plan = _plan(tmp_path, [{"submit": GOOD}])
    trajectory = _run(_agent(plan), cases, engine, "aks_001")
    assert trajectory.status == "submitted", trajectory.reason
    log = _log(plan)
    expected = [
        {"name": s.name, "description": s.description, "inputSchema": s.parameters}
        for s in [*(SPECS[n] for n in VARIANTS["full"]), SUBMIT_SPEC]
    ]
    assert log["tools"] == expected
    objective = cases.cases["aks_001"].objective
    assert objective in log["instructions"] and objective in log["prompt"]
    assert SUBMIT_TOOL in log["instructions"]
    assert log["prompts"] == ["detection_task"]


@pytest.mark.parametrize("variant", ["minimal", "seeded"])
def test_the_variant_is_honoured(cases: CaseSet, engine: LocalEngine, tmp_path: Path, variant: str) -> None:
    plan = _plan(
        tmp_path, [{"call": "list_cti_report_tags"}, {"call": "list_kusto_tables"}, {"submit": GOOD}]
    )
    trajectory = _run(_agent(plan), cases, engine, "aks_001", variant=variant)
    assert trajectory.status == "submitted", trajectory.reason
    log = _log(plan)
    assert [t["name"] for t in log["tools"]] == [*VARIANTS[variant], SUBMIT_TOOL]
    tags, tables = log["results"][0], log["results"][1]
    assert not tables["is_error"]
    if variant == "minimal":
        assert tags["is_error"] and "not available in the minimal variant" in tags["text"]
    else:
        assert not tags["is_error"]
    notes = seeded_notes().strip()[:200]
    assert (notes in log["instructions"]) == (notes in log["prompt"]) == (variant == "seeded")


# -- the adapter: how runs end ------------------------------------------------------------


def test_a_second_submission_gets_a_tool_error_and_the_first_counts(
    cases: CaseSet, engine: LocalEngine, tmp_path: Path
) -> None:
    second = {**GOOD, "kql_query": "AKSAudit | take 2"}
    plan = _plan(tmp_path, [{"submit": GOOD}, {"submit": second}, {"call": "list_kusto_tables"}])
    trajectory = _run(_agent(plan, exit_grace=10.0), cases, engine, "aks_001")
    assert trajectory.status == "submitted", trajectory.reason
    assert trajectory.submission is not None and trajectory.submission.kql_query == "AKSAudit | take 1"
    first, again, call = _log(plan)["results"]
    assert not first["is_error"]
    assert again["is_error"] and "already submitted" in again["text"]
    assert call["is_error"] and "already submitted" in call["text"]
    assert trajectory.tool_calls() == []  # nothing runs after the answer


def test_a_refused_submission_can_be_fixed(cases: CaseSet, engine: LocalEngine, tmp_path: Path) -> None:
    plan = _plan(
        tmp_path,
        [
            {"submit": {**GOOD, "sigma_rule": "too short"}},
            {"submit": {**GOOD, "analysis": "Secrets read by a workload: T1552.007."}},
        ],
    )
    trajectory = _run(_agent(plan), cases, engine, "aks_001")
    assert trajectory.status == "submitted", trajectory.reason
    refused, accepted = _log(plan)["results"]
    assert refused["is_error"] and "sigma_rule must be a string of at least 50 characters" in refused["text"]
    assert not accepted["is_error"]
    assert "T1552.007" in trajectory.assistant_text()  # the analysis is assistant text, scored for C1
    assert any("refused" in s.text for s in trajectory.steps if s.kind == "note")


def test_exiting_without_submitting_is_no_submission(
    cases: CaseSet, engine: LocalEngine, tmp_path: Path
) -> None:
    plan = _plan(tmp_path, [{"call": "list_kusto_tables"}])
    trajectory = _run(_agent(plan), cases, engine, "aks_001")
    assert trajectory.status == "no_submission"
    assert [c.name for c in trajectory.tool_calls()] == ["list_kusto_tables"]
    assert any("exited with code 0 without submitting" in s.text for s in trajectory.steps)


def test_a_crash_is_reported_with_its_output(cases: CaseSet, engine: LocalEngine, tmp_path: Path) -> None:
    agent = MCPAgent(
        [
            sys.executable,
            "-c",
            "import sys; print('model said: giving up'); sys.stderr.write('bad api key\\n'); sys.exit(3)",
        ]
    )
    trajectory = _run(agent, cases, engine, "aks_001")
    assert trajectory.status == "crashed"
    assert "exited with code 3 before submitting" in trajectory.reason
    assert "bad api key" in trajectory.reason and "model said: giving up" in trajectory.reason


def test_a_disconnect_mid_run_is_contained(cases: CaseSet, engine: LocalEngine, tmp_path: Path) -> None:
    # The client dies without closing its session: the server outlives it, then stops with the run.
    plan = _plan(tmp_path, [{"call": "list_kusto_tables"}, {"exit": 0}])
    trajectory = _run(_agent(plan), cases, engine, "aks_001")
    assert trajectory.status == "no_submission", trajectory.reason
    assert [c.name for c in trajectory.tool_calls()] == ["list_kusto_tables"]
    import httpx

    with pytest.raises(httpx.ConnectError):
        httpx.post(_log(plan)["url"], json={}, timeout=2.0)


def test_a_client_that_reconnects_finds_the_same_run(
    cases: CaseSet, engine: LocalEngine, tmp_path: Path
) -> None:
    plan = _plan(
        tmp_path,
        [
            {"call": "list_kusto_tables"},
            {"reconnect": True},
            {"call": "get_table_schema", "arguments": {"table_name": "AKSAudit"}},
            {"submit": GOOD},
        ],
    )
    trajectory = _run(_agent(plan), cases, engine, "aks_001")
    assert trajectory.status == "submitted", trajectory.reason
    assert [c.name for c in trajectory.tool_calls()] == ["list_kusto_tables", "get_table_schema"]


@pytest.mark.slow
def test_the_tool_call_limit_is_a_tool_error_then_ends_the_run(
    cases: CaseSet, engine: LocalEngine, tmp_path: Path
) -> None:
    calls = [{"call": "list_kusto_tables"}] * 3
    plan = _plan(tmp_path, [*calls, {"call": "list_kusto_tables"}, {"submit": GOOD}], name="answer")
    trajectory = _run(_agent(plan), cases, engine, "aks_001", max_tool_calls=3)
    results = _log(plan)["results"]
    assert [r["is_error"] for r in results] == [False, False, False, True, False]
    assert "tool-call limit of 3 reached; submit your answer now" in results[3]["text"]
    assert trajectory.status == "submitted", trajectory.reason  # the answer may still be given

    plan = _plan(
        tmp_path,
        [*calls, {"call": "list_kusto_tables"}, {"call": "list_kusto_tables"}, {"sleep": 60}],
        name="more",
    )
    started = time.monotonic()
    trajectory = _run(_agent(plan), cases, engine, "aks_001", max_tool_calls=3)
    assert trajectory.status == "limit_exceeded", trajectory.reason
    assert "tool-call limit of 3 exceeded" in trajectory.reason
    assert time.monotonic() - started < 20  # ended by the limit, not by the time limit
    log = _log(plan)
    assert log["results"][4]["is_error"] and "the run is over" in log["results"][4]["text"]
    assert _gone(log["pid"])


def test_a_flood_of_concurrent_calls_meets_the_limit(
    cases: CaseSet, engine: LocalEngine, tmp_path: Path
) -> None:
    plan = _plan(
        tmp_path,
        [{"flood": "sample_table_data", "arguments": {"table_name": "AKSAudit"}, "count": 40}, {"sleep": 60}],
    )
    trajectory = _run(_agent(plan), cases, engine, "aks_001", max_tool_calls=10)
    assert trajectory.status == "limit_exceeded", trajectory.reason
    calls = trajectory.tool_calls()
    # Serialised: ten ran, the eleventh was told of the limit, the rest were refused unrecorded.
    assert len(calls) == 11 and all(c.ok for c in calls[:10]) and not calls[10].ok
    assert len({c.call_id for c in calls}) == 11


@pytest.mark.slow
def test_the_time_limit_kills_the_program_and_its_children(
    cases: CaseSet, engine: LocalEngine, tmp_path: Path
) -> None:
    plan = _plan(tmp_path, [{"spawn": ["sleep", "60"]}, {"call": "list_kusto_tables"}, {"sleep": 60}])
    started = time.monotonic()
    trajectory = _run(_agent(plan), cases, engine, "aks_001", time_limit=4.0)
    assert trajectory.status == "timeout"
    assert time.monotonic() - started < 15
    log = _log(plan)
    deadline = time.monotonic() + 5
    while not (_gone(log["pid"]) and _gone(log["results"][0]["pid"])) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(log["pid"]) and _gone(log["results"][0]["pid"])


def test_placeholders_files_and_environment(cases: CaseSet, engine: LocalEngine, tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    script = tmp_path / "look.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, os, sys
        config, prompt_file, workdir, case_id, prompt = sys.argv[1:6]
        json.dump({{"argv": sys.argv[1:], "config": json.load(open(config)),
                   "prompt_file": open(prompt_file).read(),
                   "gemini": json.load(open(os.path.join(workdir, ".gemini", "settings.json"))),
                   "env": {{k: v for k, v in os.environ.items()
                           if k.startswith(("CTIREALM_MCP", "CTIREALM_PROMPT", "CTIREALM_CASE"))}}}},
                  open({str(seen)!r}, "w"))
    """),
        encoding="utf-8",
    )
    agent = MCPAgent(
        f"{PYTHON} {shlex.quote(str(script))} {{mcp_config}} {{prompt_file}} {{workdir}} "
        "{case_id} {prompt} {unknown} '{\"json\": 1}'"
    )
    trajectory = _run(agent, cases, engine, "aks_001")
    assert trajectory.status == "no_submission"
    found = json.loads(seen.read_text())
    argv = found["argv"]
    url = found["config"]["mcpServers"]["ctirealm"]["url"]
    assert found["config"] == {"mcpServers": {"ctirealm": {"type": "http", "url": url}}}
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/[\w-]+/mcp", url)
    assert found["gemini"] == {"mcpServers": {"ctirealm": {"httpUrl": url}}}
    assert argv[3] == "aks_001" and argv[4] == found["prompt_file"]  # the prompt is one argument
    assert cases.cases["aks_001"].objective in argv[4] and SUBMIT_TOOL in argv[4]
    assert argv[5:] == ["{unknown}", '{"json": 1}']
    assert found["env"] == {
        "CTIREALM_MCP_URL": url,
        "CTIREALM_MCP_CONFIG": argv[0],
        "CTIREALM_PROMPT_FILE": argv[1],
        "CTIREALM_CASE_ID": "aks_001",
    }
    assert not Path(argv[2]).exists()  # the run's directory is removed


def test_the_client_can_connect_through_the_config_file(
    cases: CaseSet, engine: LocalEngine, tmp_path: Path
) -> None:
    plan = _plan(tmp_path, [{"call": "list_kusto_tables"}, {"submit": GOOD}])
    agent = MCPAgent(f"{PYTHON} {shlex.quote(str(CLIENT))} {shlex.quote(str(plan))} {{mcp_config}}")
    assert _run(agent, cases, engine, "aks_001").status == "submitted"


def test_substitute_fills_whole_words_only() -> None:
    values = {
        "url": "http://x",
        "prompt": "a 'quoted' {url} prompt",
        "mcp_config": "c.json",
        "prompt_file": "p.md",
        "workdir": "w",
        "case_id": "k",
    }
    assert substitute(["-p", "{prompt}", "--url={url}", "{other}"], values) == [
        "-p",
        "a 'quoted' {url} prompt",
        "--url=http://x",
        "{other}",
    ]


def test_spec_builds_an_mcp_agent(cases: CaseSet, tmp_path: Path) -> None:
    agent = resolve_agent(
        "mcp:claude -p {prompt} --mcp-config {mcp_config}",
        cases,
        cwd=tmp_path,
        env={"X": "1"},
        base_url="ignored",
    )
    assert isinstance(agent, MCPAgent)
    assert agent.argv == ["claude", "-p", "{prompt}", "--mcp-config", "{mcp_config}"]
    assert agent.cwd == str(tmp_path) and agent.env == {"X": "1"}
    assert resolve_agent('mcp:"my agent" --prompt "{prompt}"', cases).argv == [
        "my agent",
        "--prompt",
        "{prompt}",
    ]
    assert resolve_agent('mcp:"agent {url}"', cases).argv == ["agent", "{url}"]
    with pytest.raises(AgentSpecError, match="mcp agent needs a command line"):
        resolve_agent("mcp:", cases)


# -- ctirealm mcp: the server on its own -----------------------------------------------------


def _cli_args(telemetry: Path, tmp_path: Path, case_id: str, *extra: str) -> list[str]:
    return [
        "mcp",
        "--case",
        case_id,
        "--cases",
        str(MINI / "cases"),
        "--telemetry",
        str(telemetry),
        "--cache-dir",
        str(telemetry.parent / "cache"),
        "--trajectories",
        str(tmp_path / "out"),
        *extra,
    ]


def _saved(tmp_path: Path, case_id: str) -> Trajectory:
    return Trajectory.load(tmp_path / "out" / f"{case_id}.e1.json")


def _stdio(
    plan: Path, telemetry: Path, tmp_path: Path, case_id: str, *extra: str
) -> subprocess.CompletedProcess:
    data = json.loads(plan.read_text())
    data["server"] = {
        "command": CLI[0],
        "args": [*CLI[1:], *_cli_args(telemetry, tmp_path, case_id, *extra)],
        "env": {"PYTHONPATH": os.pathsep.join(sys.path)},
    }
    plan.write_text(json.dumps(data))
    return subprocess.run(
        [sys.executable, str(CLIENT), str(plan)], capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_cli_over_stdio_solves_a_case_like_the_oracle(
    cases: CaseSet, engine: LocalEngine, store: Store, telemetry: Path, tmp_path: Path
) -> None:
    oracle = _run(OracleAgent(cases), cases, engine, "linux_001")
    plan = _plan(tmp_path, oracle_steps(cases.cases["linux_001"], cases))
    done = _stdio(plan, telemetry, tmp_path, "linux_001")
    assert done.returncode == 0, done.stderr
    log = _log(plan)
    assert [t["name"] for t in log["tools"]] == [*VARIANTS["full"], SUBMIT_TOOL]
    assert [t["inputSchema"] for t in log["tools"]] == [
        *(SPECS[n].parameters for n in VARIANTS["full"]),
        SUBMIT_SPEC.parameters,
    ]
    assert cases.cases["linux_001"].objective in log["instructions"]
    saved = _saved(tmp_path, "linux_001")
    assert saved.status == "submitted", saved.reason
    assert _calls(saved) == _calls(oracle)
    assert saved.submission == oracle.submission
    assert _scores(cases, "linux_001", saved, engine, store) == _scores(
        cases, "linux_001", oracle, engine, store
    )
    # What the command wrote is what `--realm-agent replay:DIR` scores.
    replayed = _run(ReplayAgent(tmp_path / "out"), cases, engine, "linux_001")
    assert replayed.status == "submitted" and _calls(replayed) == _calls(oracle)
    assert _scores(cases, "linux_001", replayed, engine, store) == _scores(
        cases, "linux_001", oracle, engine, store
    )


@pytest.mark.slow
def test_cli_over_stdio_reports_limits_as_tool_errors(
    cases: CaseSet, telemetry: Path, tmp_path: Path
) -> None:
    plan = _plan(tmp_path, [{"flood": "list_kusto_tables", "count": 12}, {"submit": GOOD}])
    done = _stdio(plan, telemetry, tmp_path, "aks_001", "--max-tool-calls", "5")
    assert done.returncode == 0, done.stderr
    flood, submit = _log(plan)["results"]
    texts = sorted((r["is_error"], r["text"][:60]) for r in flood["flood"])
    assert [e for e, _ in texts].count(False) == 5
    assert sum("tool-call limit of 5 reached; submit your answer now" in t for _, t in texts) == 1
    assert sum("the run is over: tool-call limit of 5 exceeded" in t for _, t in texts) == 6
    assert submit["is_error"] and "the run is over" in submit["text"]
    saved = _saved(tmp_path, "aks_001")
    assert saved.status == "limit_exceeded" and len(saved.tool_calls()) == 6

    plan = _plan(tmp_path, [{"sleep": 1.5}, {"call": "list_kusto_tables"}], name="late")
    done = _stdio(plan, telemetry, tmp_path, "aks_001", "--time-limit", "1")
    assert done.returncode == 0, done.stderr
    late = _log(plan)["results"][1]
    assert late["is_error"] and "the run is over: time limit of 1 s exceeded" in late["text"]
    saved = _saved(tmp_path, "aks_001")
    assert saved.status == "timeout" and saved.tool_calls() == []


@pytest.mark.slow
@pytest.mark.skipif(unavailable_reason() is not None, reason=f"no sandbox: {unavailable_reason()}")
def test_cli_offers_the_sandbox_toolset_through_the_sdk(
    cases: CaseSet, telemetry: Path, tmp_path: Path
) -> None:
    plan = _plan(
        tmp_path,
        [
            {"call": "bash", "arguments": {"cmd": "echo 6 > n; ls /"}},
            {"call": "python", "arguments": {"code": "print(int(open('n').read()) * 7)"}},
            {"submit": GOOD},
        ],
    )
    done = _stdio(plan, telemetry, tmp_path, "aks_001", "--tools", "+sandbox")
    assert done.returncode == 0, done.stderr
    log = _log(plan)
    assert [t["name"] for t in log["tools"]] == [*VARIANTS["full"], "bash", "python", SUBMIT_TOOL]
    listing, product, _ = log["results"]
    assert not listing["is_error"] and "workspace" in listing["text"].split()
    assert "telemetry" not in listing["text"] and product["text"].strip() == "42"
    saved = _saved(tmp_path, "aks_001")
    assert [c.name for c in saved.tool_calls()] == ["bash", "python"]


@pytest.mark.slow
def test_cli_over_http_serves_the_minimal_variant_on_loopback(telemetry: Path, tmp_path: Path) -> None:
    server = subprocess.Popen(
        [
            *CLI,
            *_cli_args(
                telemetry, tmp_path, "aks_001", "--transport", "http", "--port", "0", "--variant", "minimal"
            ),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        url = None
        for line in server.stderr:
            found = re.search(r" at (http://\S+)", line)
            if found:
                url = found.group(1)
                break
        assert url is not None and re.fullmatch(r"http://127\.0\.0\.1:\d+/mcp", url)
        plan = _plan(
            tmp_path,
            [
                {"call": "search_sigma_rules", "arguments": {"keyword": "secret"}},
                {"call": "list_kusto_tables"},
                {"submit": GOOD},
                {"submit": GOOD},
            ],
        )
        done = subprocess.run(
            [sys.executable, str(CLIENT), str(plan), url], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert server.wait(timeout=30) == 0  # the run ended with the submission
    finally:
        server.kill()
        server.wait()
        server.stderr.close()
    log = _log(plan)
    assert [t["name"] for t in log["tools"]] == [*VARIANTS["minimal"], SUBMIT_TOOL]
    sigma, tables, first, second = log["results"]
    assert sigma["is_error"] and "not available in the minimal variant" in sigma["text"]
    assert not tables["is_error"] and not first["is_error"]
    assert second["is_error"] and "already submitted" in second["text"]
    saved = _saved(tmp_path, "aks_001")
    assert saved.status == "submitted" and saved.variant == "minimal"
    assert [c.name for c in saved.tool_calls()] == ["search_sigma_rules", "list_kusto_tables"]


@pytest.mark.slow
def test_cli_refuses_an_unknown_case(telemetry: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [*CLI, *_cli_args(telemetry, tmp_path, "nope_001")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "no case 'nope_001'" in done.stderr and "aks_001" in done.stderr
