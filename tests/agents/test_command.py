"""The command adapter: real programs speaking the JSON-lines protocol, and every way they can fail."""

from __future__ import annotations

import shlex
import shutil
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ctirealm.agents import Task, resolve_agent, run_case
from ctirealm.agents.command import MAX_LINE_BYTES, CommandAgent
from ctirealm.cases import CaseSet
from ctirealm.engine import LocalEngine
from ctirealm.scoring import score_case
from ctirealm.telemetry.dataset import Dataset
from ctirealm.telemetry.store import Store, build_store
from ctirealm.tools import Toolbox, Trajectory

ROOT = Path(__file__).resolve().parents[2]
MINI = ROOT / "tests" / "fixtures" / "mini"
EXAMPLES = ROOT / "examples" / "agents"
PYTHON = shlex.quote(sys.executable)

#: Helpers every scripted test program starts with.
PRELUDE = """\
import json, os, subprocess, sys, time

def send(message):
    sys.stdout.write(json.dumps(message) + "\\n")
    sys.stdout.flush()

def receive():
    line = sys.stdin.readline()
    return json.loads(line) if line else None

def call(name, **arguments):
    send({"type": "tool_call", "id": "c1", "name": name, "arguments": arguments})
    return receive()["content"]

GOOD = {"sigma_rule": "title: scripted\\n" + "#" * 60, "kql_query": "AKSAudit | take 1",
        "query_results": [{"Verb": "list"}]}
task = receive()
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("mini") / "telemetry"
    shutil.copytree(MINI / "telemetry", root)
    shutil.copytree(ROOT / "telemetry" / "schemas", root / "schemas")
    return build_store(Dataset.load(root), cache_dir=root.parent / "cache")


@pytest.fixture(scope="module")
def engine(store: Store) -> LocalEngine:
    return LocalEngine.of_store(store)


def _run(
    agent: CommandAgent,
    cases: CaseSet,
    engine: LocalEngine,
    case_id: str = "aks_001",
    *,
    time_limit: float = 20.0,
    max_tool_calls: int = 200,
) -> Trajectory:
    case = cases.cases[case_id]
    trajectory = Trajectory(case.id, agent.name)
    toolbox = Toolbox(engine, cases, trajectory, max_tool_calls=max_tool_calls)
    return run_case(agent, Task.for_case(case, toolbox, time_limit=time_limit), toolbox)


def _program(tmp_path: Path, body: str, name: str = "agent.py") -> CommandAgent:
    path = tmp_path / name
    path.write_text(PRELUDE + textwrap.dedent(body), encoding="utf-8")
    return CommandAgent(f"{PYTHON} {shlex.quote(str(path))}")


def _alive(pid: int) -> bool:
    """Whether *pid* is a live process (a zombie awaiting its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


# -- the shipped examples ---------------------------------------------------------


@pytest.mark.parametrize("case_id", ["aks_001", "linux_001"])
def test_python_example_end_to_end(cases: CaseSet, engine: LocalEngine, store: Store, case_id: str) -> None:
    agent = CommandAgent(f"{PYTHON} {shlex.quote(str(EXAMPLES / 'simple_agent.py'))}")
    trajectory = _run(agent, cases, engine, case_id)
    assert trajectory.status == "submitted", trajectory.reason
    assert [c.name for c in trajectory.tool_calls()] == [
        "list_kusto_tables",
        "get_table_schema",
        "execute_kql_query",
        "execute_kql_query",
    ]
    assert all(c.ok for c in trajectory.tool_calls())
    assert any(s.kind == "assistant" and "points at" in s.text for s in trajectory.steps)

    score = score_case(
        cases.cases[case_id], trajectory, engine=engine, labels=store.labels, schemas=engine.schemas
    )
    checkpoints = score.checkpoints
    # The walk earns C2 and C3 in full; they are paid in proportion to the detection it led to.
    for name in ("C2_data_sources", "C3_query_iteration"):
        earned = checkpoints[name].details["earned"]
        assert earned == checkpoints[name].max, name
        assert checkpoints[name].score > 0, name
    assert checkpoints["C4_kql_detection"].score > 0  # its keyword query does catch the attack


def test_js_example_end_to_end(cases: CaseSet, engine: LocalEngine) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed, so the JavaScript example cannot run")
    agent = CommandAgent([node, str(EXAMPLES / "simple_agent.js")])
    for case_id in ("aks_001", "linux_001"):
        trajectory = _run(agent, cases, engine, case_id)
        assert trajectory.status == "submitted", trajectory.reason
        assert {c.name for c in trajectory.tool_calls()} >= {"get_table_schema", "execute_kql_query"}


def test_spec_builds_a_command_agent(cases: CaseSet, tmp_path: Path) -> None:
    agent = resolve_agent(
        'command:"python my agent.py --flag"', cases, cwd=tmp_path, env={"X": "1"}, base_url="ignored"
    )
    assert isinstance(agent, CommandAgent)
    assert agent.argv == ["python", "my", "agent.py", "--flag"]
    assert agent.cwd == str(tmp_path) and agent.env is not None and agent.env["X"] == "1"
    agent = resolve_agent("command:python 'my agent.py'", cases)
    assert agent.argv == ["python", "my agent.py"]


# -- the protocol ---------------------------------------------------------------------


def test_the_task_message_and_tool_round_trip(cases: CaseSet, engine: LocalEngine, tmp_path: Path) -> None:
    agent = _program(
        tmp_path,
        """
        assert task["type"] == "task" and task["case_id"] == "aks_001", task
        assert task["user_message"].startswith("DETECTION OBJECTIVE:")
        assert task["message_limit"] == 70 and task["time_limit"] == 20
        names = [t["name"] for t in task["tools"]]
        assert "execute_kql_query" in names and "parameters" in task["tools"][0], names
        send({"type": "tool_call", "id": 7, "name": "get_table_schema",
              "arguments": {"table_name": "aksaudit"}})
        reply = receive()
        assert reply == {"type": "tool_result", "id": "7", "content": reply["content"]}, reply
        send({"type": "tool_call", "id": "b", "name": "execute_kql_query", "arguments": '{"query": '})
        assert receive()["content"].startswith("Error: arguments are not valid JSON")
        send({"type": "message", "text": "Maps to T1552.007", "reasoning": "secrets listing"})
        send({"type": "submit", "answer": "```json\\n" + json.dumps(GOOD) + "\\n```"})
    """,
    )
    trajectory = _run(agent, cases, engine)
    assert trajectory.status == "submitted", trajectory.reason
    calls = trajectory.tool_calls()
    assert [(c.name, c.call_id, c.ok) for c in calls] == [
        ("get_table_schema", "7", True),
        ("execute_kql_query", "b", False),
    ]
    assert "T1552.007" in trajectory.assistant_text()
    assert "secrets listing" in trajectory.assistant_text()


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ('send({"type": "submit", "answer": None})', "no_submission", ""),
        ("sys.exit(0)", "no_submission", ""),
        ('send({"type": "submit", "answer": {"sigma_rule": 1}})', "invalid_submission", "missing keys"),
        ('send({"type": "submit"})', "crashed", 'needs an "answer"'),
        ('send({"type": "shout", "text": "hi"})', "crashed", "unknown message type 'shout'"),
    ],
)
def test_endings(
    cases: CaseSet, engine: LocalEngine, tmp_path: Path, body: str, status: str, reason: str
) -> None:
    trajectory = _run(_program(tmp_path, body), cases, engine)
    assert trajectory.status == status
    assert reason in trajectory.reason


# -- failures -----------------------------------------------------------------------------


def test_a_crash_mid_run_reports_exit_code_and_stderr(
    cases: CaseSet, engine: LocalEngine, tmp_path: Path
) -> None:
    agent = _program(
        tmp_path,
        """
        call("list_kusto_tables")
        for n in range(40):
            print(f"debug line {n}", file=sys.stderr)
        print("Traceback: something broke", file=sys.stderr)
        sys.exit(3)
    """,
    )
    trajectory = _run(agent, cases, engine)
    assert trajectory.status == "crashed"
    assert "exited with code 3 before submitting" in trajectory.reason
    assert "Traceback: something broke" in trajectory.reason
    assert "debug line 39" in trajectory.reason and "debug line 5\n" not in trajectory.reason
    assert [c.name for c in trajectory.tool_calls()] == ["list_kusto_tables"]


def test_a_program_killed_by_a_signal(cases: CaseSet, engine: LocalEngine, tmp_path: Path) -> None:
    agent = _program(tmp_path, "import signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    trajectory = _run(agent, cases, engine)
    assert trajectory.status == "crashed"
    assert "killed by SIGKILL" in trajectory.reason


def test_a_program_that_cannot_start(cases: CaseSet, engine: LocalEngine, tmp_path: Path) -> None:
    trajectory = _run(CommandAgent(str(tmp_path / "no-such-program")), cases, engine)
    assert trajectory.status == "crashed"
    assert "cannot start" in trajectory.reason


def test_a_hanging_program_and_its_children_are_killed(
    cases: CaseSet, engine: LocalEngine, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    agent = _program(
        tmp_path,
        f"""
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL will do
        child = subprocess.Popen(["sleep", "300"])
        with open({str(pids)!r}, "w") as f:
            f.write(f"{{os.getpid()}} {{child.pid}}")
        call("list_kusto_tables")
        time.sleep(300)
    """,
    )
    started = time.perf_counter()
    trajectory = _run(agent, cases, engine, time_limit=1.0)
    elapsed = time.perf_counter() - started
    assert trajectory.status == "timeout"
    assert elapsed < 1.0 + 5.0
    leader, child = (int(p) for p in pids.read_text().split())
    deadline = time.monotonic() + 3.0
    while (_alive(leader) or _alive(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(leader) and not _alive(child)
    assert not _alive_group(leader)


def _alive_group(pgid: int) -> bool:
    """Whether any live (non-zombie) process is still in process group *pgid*."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def test_a_tool_call_loop_is_stopped_and_the_program_killed(
    cases: CaseSet, engine: LocalEngine, tmp_path: Path
) -> None:
    agent = _program(
        tmp_path,
        """
        while True:
            call("list_kusto_tables")
    """,
    )
    started = time.perf_counter()
    trajectory = _run(agent, cases, engine, max_tool_calls=5)
    assert trajectory.status == "limit_exceeded"
    assert "tool-call limit of 5" in trajectory.reason
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('print("hello from print debugging")', "line 1 of the program's stdout is not JSON"),
        ('sys.stdout.buffer.write(b"\\xff\\xfe{}\\n"); sys.stdout.flush(); time.sleep(5)', "is not UTF-8"),
        ("send([1, 2, 3])", "JSON but not an object"),
        (
            f'sys.stdout.write("x" * {MAX_LINE_BYTES + 10}); sys.stdout.flush(); time.sleep(5)',
            "longer than the 10,485,760-byte limit",
        ),
    ],
    ids=["not-json", "not-utf8", "not-an-object", "huge-line"],
)
def test_garbage_on_stdout_is_a_clear_error(
    cases: CaseSet, engine: LocalEngine, tmp_path: Path, body: str, reason: str
) -> None:
    started = time.perf_counter()
    trajectory = _run(_program(tmp_path, body), cases, engine)
    assert trajectory.status == "crashed"
    assert reason in trajectory.reason
    assert time.perf_counter() - started < 4  # the program is killed, not waited for


def test_a_stderr_flood_neither_blocks_nor_fills_memory(
    cases: CaseSet, engine: LocalEngine, tmp_path: Path
) -> None:
    agent = _program(
        tmp_path,
        """
        chunk = "log " * 16384 + "\\n"
        for _ in range(400):  # about 26 MB, far beyond any pipe buffer
            sys.stderr.write(chunk)
        sys.stderr.flush()
        call("list_kusto_tables")
        send({"type": "submit", "answer": GOOD})
    """,
    )
    trajectory = _run(agent, cases, engine)
    assert trajectory.status == "submitted", trajectory.reason
    notes = [s.text for s in trajectory.steps if s.kind == "note"]
    assert any("26,214,800 bytes to stderr" in n for n in notes), notes
