"""``command:"argv"``: any program, in any language, driven over a JSON-lines protocol on stdio.

ctirealm starts the program in its own process group, writes one JSON object
per line to its stdin and reads one JSON object per line from its stdout:

====================================  ==============================================
ctirealm → program                    program → ctirealm
====================================  ==============================================
``{"type": "task", ...}`` (first)     ``{"type": "tool_call", "id", "name", "arguments"}``
``{"type": "tool_result", "id",       ``{"type": "message", "text", "reasoning"}``
"content"}`` (one per tool_call)      ``{"type": "submit", "answer": {...} | "text" | null}``
====================================  ==============================================

stderr is free for logs: it is drained in the background and its last lines
are kept for the failure reason. The full protocol, with an example exchange,
is in docs/agents.md.

What ends a run, and how it is recorded:

* ``submit`` — the answer goes to the runner (submitted or invalid_submission);
  ``"answer": null`` gives up (no_submission).
* the program exits before submitting — exit code 0: no_submission; any other
  code or a signal: crashed, with the exit status and the last stderr lines.
* a line that is not JSON, not UTF-8, not an object, has an unknown ``type``,
  or is longer than `MAX_LINE_BYTES` — crashed, with the offending line quoted.
* the time limit — the runner calls `CommandAgent.cancel`, which kills the
  program's whole process group (children included).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from ..tools.toolbox import AgentStopped, Toolbox
from ..tools.trajectory import Step
from .base import Task

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 10 * 1024 * 1024
STDERR_TAIL_BYTES = 64 * 1024
STDERR_TAIL_LINES = 12
EXIT_GRACE = 2.0  # seconds a program gets to exit on its own after submitting or being cancelled


class ProtocolError(RuntimeError):
    """The program broke the JSON-lines protocol; the message quotes what it sent."""


class AgentCrashed(RuntimeError):
    """The program died before submitting; the message has its exit status and last stderr lines."""


def _note(tools: Toolbox, text: str) -> None:
    """Record a runner note in the trajectory (not assistant text: never scored as analysis)."""
    tools.trajectory.steps.append(Step(kind="note", text=text))


def _quote(raw: bytes, limit: int = 160) -> str:
    text = raw[:limit].decode("utf-8", errors="backslashreplace").rstrip("\r\n")
    return repr(text) + (f" … ({len(raw):,} bytes)" if len(raw) > limit else "")


def _exit_status(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class _StderrTail:
    """Drains a stream in a thread, keeping only its last bytes (a flood cannot fill memory)."""

    def __init__(self, stream: IO[bytes], limit: int = STDERR_TAIL_BYTES) -> None:
        self._stream = stream
        self._limit = limit
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self.total = 0
        self._thread = threading.Thread(target=self._drain, name="agent-stderr", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        try:
            while chunk := self._stream.read1(65536):  # type: ignore[attr-defined]
                with self._lock:
                    self.total += len(chunk)
                    self._buffer += chunk
                    if len(self._buffer) > 2 * self._limit:
                        del self._buffer[: len(self._buffer) - self._limit]
        except (OSError, ValueError):  # the pipe was closed under us
            pass

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def lines(self, count: int = STDERR_TAIL_LINES, width: int = 300) -> list[str]:
        with self._lock:
            data = bytes(self._buffer[-self._limit :])
        text = data.decode("utf-8", errors="replace")
        lines = [line.rstrip() for line in text.splitlines() if line.strip()]
        return [line if len(line) <= width else line[: width - 1] + "…" for line in lines[-count:]]


class _Process:
    """One running program: its pipes, stderr tail and process group."""

    def __init__(self, argv: list[str], cwd: str | None, env: dict[str, str] | None) -> None:
        try:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise AgentCrashed(f"cannot start {shlex.join(argv)}: {exc}") from exc
        assert self.popen.stdin and self.popen.stdout and self.popen.stderr
        self.stdin = self.popen.stdin
        self.stdout = self.popen.stdout
        self.stderr = _StderrTail(self.popen.stderr)
        self.pgid = self.popen.pid  # start_new_session: the program leads its own group
        self.lines_read = 0
        self.cancelled = threading.Event()

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        try:
            self.stdin.write(data)
            self.stdin.flush()
        except (BrokenPipeError, ConnectionResetError, ValueError, OSError):
            self.died("stopped reading its stdin")

    def receive(self) -> dict[str, Any] | None:
        """The next message, or None at end of output. Raises ProtocolError on a bad line."""
        while True:
            raw = self.stdout.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return None
            self.lines_read += 1
            where = f"line {self.lines_read} of the program's stdout"
            if len(raw) > MAX_LINE_BYTES:
                raise ProtocolError(
                    f"{where} is longer than the {MAX_LINE_BYTES:,}-byte limit (starts {_quote(raw, 80)})"
                )
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProtocolError(
                    f"{where} is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}): {_quote(raw)}"
                ) from None
            try:
                message = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ProtocolError(
                    f"{where} is not JSON ({exc.msg}): {_quote(raw)}; stdout carries protocol "
                    "messages only, one JSON object per line (write logs to stderr)"
                ) from None
            if not isinstance(message, dict):
                raise ProtocolError(f"{where} is JSON but not an object: {_quote(raw)}")
            return message

    def died(self, what: str) -> None:
        """The program stopped talking: raise a crash report with its exit status and stderr."""
        code = self.wait(EXIT_GRACE)
        if self.cancelled.is_set():
            raise AgentStopped("the run was cancelled")
        raise AgentCrashed(self.describe(f"the program {what} before submitting and {_exit_status(code)}"))

    def describe(self, head: str) -> str:
        if self.popen.returncode is not None:
            self.stderr.join(0.5)  # let the drain thread catch the program's last words
        tail = self.stderr.lines()
        if not tail:
            return head + " (no stderr output)"
        return head + "; last stderr lines:\n" + "\n".join(tail)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill_group(self, sig: int) -> None:
        try:
            os.killpg(self.pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self, grace: float = EXIT_GRACE) -> int | None:
        """End the program: close stdin, let it exit for *grace* seconds, then kill its group."""
        try:
            self.stdin.close()
        except OSError:
            pass
        code = self.wait(grace)
        if code is None:
            self.kill_group(signal.SIGTERM)
            code = self.wait(0.5)
        # Always sweep the group: children the program left behind die with it.
        self.kill_group(signal.SIGKILL)
        if code is None:
            code = self.wait(5.0)
        self.stderr.join(1.0)
        for stream in (self.stdout, self.popen.stderr):
            try:
                stream.close()  # type: ignore[union-attr]
            except OSError:
                pass
        return code

    def cancel(self) -> None:
        self.cancelled.set()
        self.kill_group(signal.SIGKILL)


class CommandAgent:
    """Runs a program per case and relays its tool calls to the toolbox (see the module docstring).

    One instance may run many cases, one at a time per thread; `cancel` kills
    every program the instance is running.
    """

    def __init__(
        self,
        command: str | list[str],
        *,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
        if not argv:
            raise ValueError('command agent needs a command line, e.g. command:"python my_agent.py"')
        self.argv = argv
        self.cwd = str(cwd) if cwd is not None else None
        self.env = {**os.environ, **{str(k): str(v) for k, v in env.items()}} if env else None
        self.name = name or f"command:{shlex.join(argv)}"
        self._running: set[_Process] = set()
        self._lock = threading.Lock()

    def run(self, task: Task, tools: Toolbox) -> Any:
        process = _Process(self.argv, self.cwd, self.env)
        with self._lock:
            self._running.add(process)
        ended = False
        try:
            answer = self._converse(process, task, tools)
            ended = True
            return answer
        finally:
            with self._lock:
                self._running.discard(process)
            # After a submit the program may tidy up; after a failure or a stop it is killed at once.
            code = process.close(EXIT_GRACE if ended else 0.0)
            if process.stderr.total:
                _note(
                    tools,
                    f"the program wrote {process.stderr.total:,} bytes to stderr and {_exit_status(code)}",
                )

    def cancel(self) -> None:
        """Kill the process group of every program this agent is running (called on timeout)."""
        with self._lock:
            running = list(self._running)
        for process in running:
            process.cancel()

    # -- the conversation ---------------------------------------------------------

    def _converse(self, process: _Process, task: Task, tools: Toolbox) -> Any:
        process.send(
            {
                "type": "task",
                "protocol": PROTOCOL_VERSION,
                "case_id": task.case_id,
                "objective": task.objective,
                "variant": task.variant,
                "epoch": task.epoch,
                "system_prompt": task.system_prompt,
                "user_message": task.user_message,
                "tools": [spec.to_openai()["function"] for spec in task.tools],
                "message_limit": task.message_limit,
                "time_limit": task.time_limit,
            }
        )
        while True:
            try:
                message = process.receive()
            except ProtocolError:
                if process.cancelled.is_set():
                    raise AgentStopped("the run was cancelled") from None
                raise
            if message is None:
                code = process.wait(EXIT_GRACE)
                if process.cancelled.is_set():
                    raise AgentStopped("the run was cancelled")
                if code == 0:
                    _note(tools, process.describe("the program exited with code 0 without submitting"))
                    return None
                raise AgentCrashed(process.describe(f"the program {_exit_status(code)} before submitting"))
            kind = message.get("type")
            if kind == "tool_call":
                call_id = message.get("id")
                call_id = str(call_id) if call_id is not None else None
                arguments = message.get("arguments")
                name = message.get("name")
                content = tools.call(str(name) if name is not None else "", arguments, call_id=call_id)
                process.send({"type": "tool_result", "id": call_id, "content": content})
            elif kind == "message":
                tools.say(_string(message.get("text")), _string(message.get("reasoning")))
            elif kind == "submit":
                if "answer" not in message:
                    raise ProtocolError(
                        'a submit message needs an "answer" (an object, text, or null to give up)'
                    )
                answer = message["answer"]
                if answer is None:
                    _note(tools, "the program gave up (submitted a null answer)")
                return answer
            else:
                raise ProtocolError(
                    f"unknown message type {kind!r} on line {process.lines_read} of the "
                    "program's stdout; expected tool_call, message or submit"
                )


def _string(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
