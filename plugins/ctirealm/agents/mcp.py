"""``mcp:COMMAND``: any agent that speaks the Model Context Protocol, e.g. an agent CLI.

For each case the adapter starts the case's MCP server (`mcp_server`), writes
the files the command needs into a fresh directory, substitutes the
placeholders below into the command, and runs it in its own process group
under the case's time limit. The command's agent connects to the server,
works with the tools and calls ``submit_detection``; that answer goes to the
runner like any other agent's.

==================  ===================================================================
placeholder         replaced by (also in the environment as ``CTIREALM_...``)
==================  ===================================================================
``{url}``           the streamable HTTP endpoint (``CTIREALM_MCP_URL``)
``{mcp_config}``    a JSON file ``{"mcpServers": {"ctirealm": {"type": "http", "url"}}}``
                    (``CTIREALM_MCP_CONFIG``)
``{prompt}``        the whole prompt: instructions, how to submit, the objective
``{prompt_file}``   a file holding ``{prompt}`` (``CTIREALM_PROMPT_FILE``)
``{workdir}``       the run's directory; it also holds ``.gemini/settings.json``
``{case_id}``       the case id (``CTIREALM_CASE_ID``)
==================  ===================================================================

The command is split like a shell would split it (no shell runs); each
placeholder fills one word, so a prompt with spaces and quotes stays one
argument. Other braces are left as they are.

Why the server runs in this process, in a thread, over streamable HTTP on
127.0.0.1: the toolbox is here — the engine on the store the runner already
opened, the trajectory that scoring reads, the tool-call limit and the stop
that the runner's time limit triggers. A server in a subprocess would open
the store again for every case and would have to ship the trajectory back.
Over HTTP the agent reaches it by URL whatever process tree the agent CLI
builds; the URL's path holds a random token.

How a run ends:

* the first accepted ``submit_detection`` — the answer goes to the runner; the
  program gets `EXIT_GRACE` seconds to exit, then its group is killed. A
  second submission gets a tool error.
* the program exits without submitting — code 0: no_submission; another code
  or a signal: crashed, with the last lines of its stderr and stdout.
* the tool-call limit — the call that reaches it gets a tool error asking for
  the answer (which may still be submitted); the next call ends the run
  (limit_exceeded) and the program is killed.
* the time limit — the runner calls `MCPAgent.cancel`: tool calls are refused
  and the program's process group is killed.

A client that disconnects and reconnects finds the same run; one that
disconnects for good is a program that exits, or runs out of time.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..tools.toolbox import AgentStopped, Toolbox
from ..tools.trajectory import Step
from .base import Task
from .command import EXIT_GRACE, AgentCrashed, _exit_status, _StderrTail
from .mcp_server import SERVER_NAME, CaseSession, HTTPServerThread, build_server, dumps_config

PLACEHOLDERS = ("url", "mcp_config", "prompt", "prompt_file", "workdir", "case_id")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
STOP_GRACE = 1.0  # seconds a program stopped by a limit has to read why before it is killed
EXIT_RACE = 0.5  # seconds the server may take to finish a call the exited program had sent
POLL = 0.05  # seconds between checks of the program and the run


def substitute(argv: list[str], values: Mapping[str, str]) -> list[str]:
    """*argv* with each ``{placeholder}`` replaced by its value; other braces untouched."""
    return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], word) for word in argv]


class _Program:
    """The agent's process: its own session and process group, both output streams drained."""

    def __init__(self, argv: list[str], cwd: str | None, env: dict[str, str]) -> None:
        try:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise AgentCrashed(f"cannot start {shlex.join(argv)}: {exc}") from exc
        assert self.popen.stdout and self.popen.stderr
        self.stdout = _StderrTail(self.popen.stdout)
        self.stderr = _StderrTail(self.popen.stderr)

    def kill_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self, grace: float) -> int | None:
        """Let the program exit for *grace* seconds, then kill its whole group."""
        code = self.wait(grace) if grace > 0 else self.popen.poll()
        if code is None:
            self.kill_group(signal.SIGTERM)
            code = self.wait(0.5)
        self.kill_group(signal.SIGKILL)  # children it left behind die with it
        if code is None:
            code = self.wait(5.0)
        self.stdout.join(1.0)
        self.stderr.join(1.0)
        for stream in (self.popen.stdout, self.popen.stderr):
            try:
                stream.close()  # type: ignore[union-attr]
            except OSError:
                pass
        return code

    def describe(self, head: str) -> str:
        self.stdout.join(0.5)
        self.stderr.join(0.5)
        parts = [head]
        for label, tail in (("stderr", self.stderr), ("stdout", self.stdout)):
            lines = tail.lines()
            if lines:
                parts.append(f"last {label} lines:\n" + "\n".join(lines))
        return "; ".join(parts) if len(parts) > 1 else head + " (no output)"


class MCPAgent:
    """Runs a command per case against that case's MCP server (see the module docstring)."""

    def __init__(
        self,
        command: str | list[str],
        *,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        exit_grace: float = EXIT_GRACE,
    ) -> None:
        argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
        if not argv:
            raise ValueError("mcp agent needs a command line, e.g. mcp:'my-agent --mcp-config {mcp_config}'")
        self.argv = argv
        self.cwd = str(cwd) if cwd is not None else None
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.name = name or f"mcp:{shlex.join(argv)}"
        self.exit_grace = exit_grace
        self._running: set[tuple[_Program, CaseSession]] = set()
        self._cancelled: set[CaseSession] = set()
        self._lock = threading.Lock()

    def run(self, task: Task, tools: Toolbox) -> Any:
        session = CaseSession(task, tools)  # no time limit of its own: the runner enforces it
        server = HTTPServerThread(build_server(session)).start()
        workdir = Path(tempfile.mkdtemp(prefix=f"ctirealm-mcp-{task.case_id}-"))
        program: _Program | None = None
        try:
            values = self._files(workdir, server.url, session.prompt, task.case_id)
            env = {
                **os.environ,
                **self.env,
                "CTIREALM_MCP_URL": values["url"],
                "CTIREALM_MCP_CONFIG": values["mcp_config"],
                "CTIREALM_PROMPT_FILE": values["prompt_file"],
                "CTIREALM_CASE_ID": task.case_id,
            }
            program = _Program(substitute(self.argv, values), self.cwd, env)
            with self._lock:
                self._running.add((program, session))
            return self._watch(program, session, tools)
        finally:
            if program is not None:
                with self._lock:
                    grace = self._grace(session)
                    self._running.discard((program, session))
                    self._cancelled.discard(session)
                code = program.close(grace)
                _note(
                    tools,
                    f"the program wrote {program.stdout.total:,} bytes to stdout and "
                    f"{program.stderr.total:,} to stderr and {_exit_status(code)}",
                )
            server.stop()
            shutil.rmtree(workdir, ignore_errors=True)

    def _grace(self, session: CaseSession) -> float:
        """How long the program may go on before its group is killed."""
        if session.answer is not None:
            return self.exit_grace  # it may tidy up after submitting
        if session.stopped is not None and session not in self._cancelled:
            return STOP_GRACE  # long enough to read the tool error that told it why
        return 0.0

    def cancel(self) -> None:
        """Refuse every further tool call and kill every program this agent runs (the time limit)."""
        with self._lock:
            running = list(self._running)
            self._cancelled.update(session for _, session in running)
        for program, session in running:
            session.stop("the run was cancelled")
            program.kill_group(signal.SIGKILL)

    # -- one run -------------------------------------------------------------------

    @staticmethod
    def _files(workdir: Path, url: str, prompt: str, case_id: str) -> dict[str, str]:
        config = workdir / "mcp.json"
        config.write_text(dumps_config(url), encoding="utf-8")
        prompt_file = workdir / "prompt.md"
        prompt_file.write_text(prompt, encoding="utf-8")
        gemini = workdir / ".gemini" / "settings.json"
        gemini.parent.mkdir()
        gemini.write_text(
            json.dumps({"mcpServers": {SERVER_NAME: {"httpUrl": url}}}) + "\n", encoding="utf-8"
        )
        return {
            "url": url,
            "mcp_config": str(config),
            "prompt": prompt,
            "prompt_file": str(prompt_file),
            "workdir": str(workdir),
            "case_id": case_id,
        }

    def _watch(self, program: _Program, session: CaseSession, tools: Toolbox) -> Any:
        while not session.ended.wait(POLL):
            if program.popen.poll() is not None:
                # A submission sent just before the program died may still be in the server's hands.
                session.ended.wait(EXIT_RACE)
                break
        if session.answer is not None:
            return session.answer
        with self._lock:
            cancelled = session in self._cancelled
        if cancelled:
            raise AgentStopped("the run was cancelled")
        if session.stopped is not None:
            raise AgentStopped(session.stopped)
        code = program.wait(EXIT_GRACE)
        if code == 0:
            _note(tools, program.describe("the program exited with code 0 without submitting"))
            return None
        raise AgentCrashed(program.describe(f"the program {_exit_status(code)} before submitting"))


def _note(tools: Toolbox, text: str) -> None:
    """A runner note in the trajectory (not assistant text: never scored)."""
    tools.trajectory.steps.append(Step(kind="note", text=text))


__all__ = ["PLACEHOLDERS", "MCPAgent", "substitute"]
