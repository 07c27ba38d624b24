"""The +sandbox toolset: bash and python under bubblewrap, with no network, no view of the
benchmark's files, and limits a command cannot outlive."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctirealm.tools import sandbox as sandbox_module
from ctirealm.tools.sandbox import Limits, Sandbox, SandboxUnavailable, unavailable_reason
from ctirealm.tools.toolbox import Toolbox, parse_toolsets
from ctirealm.tools.trajectory import Trajectory

ROOT = Path(__file__).resolve().parents[2]

needs_bwrap = pytest.mark.skipif(
    unavailable_reason() is not None, reason=f"sandbox unavailable here: {unavailable_reason()}"
)


@pytest.fixture
def box() -> Iterator[Sandbox]:
    sandbox = Sandbox(Limits(time=5, cpu_seconds=5))
    yield sandbox
    sandbox.close()


def _alive(marker: str) -> bool:
    """Whether a process whose command line holds *marker* still runs on the host."""
    return subprocess.run(["pgrep", "-f", marker], capture_output=True, check=False).returncode == 0


@needs_bwrap
def test_commands_run_in_a_scratch_folder_kept_across_calls(box: Sandbox) -> None:
    assert box.bash("pwd; echo hello > note.txt").strip() == "/workspace"
    assert box.python("print(open('note.txt').read().strip().upper())").strip() == "HELLO"
    assert (box.workdir / "note.txt").is_file()
    assert "[exit status 3]" in box.bash("exit 3")
    box.close()
    assert not box.workdir.exists()


@needs_bwrap
@pytest.mark.parametrize("part", ["cases", "rules", "telemetry", "plugins", ".venv"])
def test_the_benchmark_files_are_not_there(box: Sandbox, part: str) -> None:
    path = ROOT / part
    assert path.exists()
    out = box.bash(f"ls {path} 2>&1; cat {path}/* 2>&1 | head -c 200")
    assert "No such file or directory" in out
    found = box.bash(
        "find / -xdev \\( -name '*.labels.json' -o -name 'linux_001.yaml' "
        "-o -name '*.duckdb' \\) 2>/dev/null | head"
    )
    assert found.strip() == ""


@pytest.mark.slow
@needs_bwrap
def test_no_network_not_even_the_hosts_loopback(box: Sandbox) -> None:
    """A real server listens on the host's loopback; the sandbox cannot reach it (own network
    namespace), nor any outside address."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted: list[tuple[socket.socket, object]] = []

    def accept() -> None:
        server.settimeout(6)
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    # The host can reach it (the server is real).
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    thread.join()
    assert accepted
    accepted.pop()[0].close()
    thread = threading.Thread(target=accept)
    thread.start()
    code = (
        f"import socket\n"
        f"for host in ('127.0.0.1', '1.1.1.1', '8.8.8.8'):\n"
        f"    try:\n"
        f"        socket.create_connection((host, {port} if host == '127.0.0.1' else 53), "
        f"timeout=2); print('reached', host)\n"
        f"    except OSError as exc: print('refused', host, type(exc).__name__)\n"
    )
    out = box.python(code)
    thread.join()
    server.close()
    assert "reached" not in out and out.count("refused") == 3
    assert not accepted


@pytest.mark.slow
@needs_bwrap
def test_a_command_cannot_outlive_its_time_limit(box: Sandbox) -> None:
    out = box.bash("echo begin; sleep 4242")
    assert out.startswith("begin") and "exceeded the time limit of 5 s" in out
    assert not _alive("sleep 4242")


@needs_bwrap
def test_background_processes_die_with_the_call(box: Sandbox) -> None:
    out = box.bash("(sleep 4343 &); nohup sleep 4344 >/dev/null 2>&1 & echo started")
    assert "started" in out
    assert not _alive("sleep 4343") and not _alive("sleep 4344")


@pytest.mark.slow
@needs_bwrap
def test_memory_and_cpu_are_bounded() -> None:
    box = Sandbox(Limits(time=20, cpu_seconds=2, memory_bytes=256 * 1024 * 1024))
    try:
        out = box.python("x = bytearray(1024 * 1024 * 1024)\nprint('allocated')")
        assert "MemoryError" in out and "allocated" not in out
        out = box.python("while True: pass")
        assert "SIGXCPU" in out or "SIGKILL" in out
    finally:
        box.close()


@needs_bwrap
def test_output_is_cut(box: Sandbox) -> None:
    out = box.python(f"print('x' * {sandbox_module.OUTPUT_LIMIT * 2})")
    assert len(out) < sandbox_module.OUTPUT_LIMIT + 200 and "[output cut at" in out


def test_without_bubblewrap_the_tools_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    unavailable_reason.cache_clear()
    try:
        reason = unavailable_reason()
        assert reason and "bubblewrap (bwrap) is not installed" in reason
        with pytest.raises(SandboxUnavailable, match="tool unavailable: bubblewrap"):
            Sandbox().bash("true")
    finally:
        monkeypatch.undo()
        unavailable_reason.cache_clear()


def test_toolsets_are_opt_in_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_toolsets("+sandbox") == parse_toolsets("sandbox, +sandbox") == ("sandbox",)
    assert parse_toolsets("") == ()
    with pytest.raises(ValueError, match=r"unknown toolset docker; toolsets: \+sandbox"):
        parse_toolsets("+docker")
    plain = Toolbox(None, None, Trajectory("linux_001", "test"))  # type: ignore[arg-type]
    assert "bash" not in plain.names
    assert plain.call("bash", {"cmd": "id"}) == "Error: tool 'bash' needs the +sandbox toolset"
    boxed = Toolbox(
        None,
        None,
        Trajectory("linux_001", "test"),  # type: ignore[arg-type]
        toolsets=("+sandbox",),
    )
    assert boxed.names[-2:] == ["bash", "python"]
    assert {s.name for s in boxed.specs()} >= {"bash", "python"}
    # Missing bubblewrap is a tool error the agent reads, recorded like any other.
    monkeypatch.setenv("PATH", "/nonexistent")
    unavailable_reason.cache_clear()
    try:
        text = boxed.call("python", {"code": "print(1)"})
    finally:
        monkeypatch.undo()
        unavailable_reason.cache_clear()
    assert text.startswith("Error: tool unavailable: bubblewrap (bwrap) is not installed")
    step = boxed.trajectory.steps[-1].tool
    assert step is not None and step.name == "python" and not step.ok
    boxed.close()


@needs_bwrap
def test_an_agent_uses_the_sandbox_through_pytest(mini: pytest.Pytester) -> None:
    """`--realm-tools +sandbox`: the agent's bash and python calls run and are recorded."""
    mini.makepyfile(
        shell_agent="""
        class Shell:
            name = "shell"
            def run(self, task, tools):
                assert "bash" in tools.names and "python" in tools.names
                tools.bash(cmd="echo 3 > n.txt")
                tools.python(code="print(int(open('n.txt').read()) * 14)")
                return None
    """
    )
    mini.syspathinsert()
    mini.runpytest(
        "--realm-agent", "python:shell_agent:Shell", "--realm-tools", "+sandbox", "-k", "linux_001"
    )
    path = mini.path / "reports" / "trajectories" / "linux_001.e1.json"
    steps = [s["tool"] for s in json.loads(path.read_text())["steps"] if s.get("tool")]
    assert [(s["name"], s["result"].strip()) for s in steps] == [("bash", ""), ("python", "42")]
    result = mini.runpytest("--realm-tools", "+docker", "-k", "linux_001")
    result.stderr.fnmatch_lines(["*--realm-tools: unknown toolset docker*"])
