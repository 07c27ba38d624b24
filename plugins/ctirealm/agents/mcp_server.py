"""One case's toolbox as a Model Context Protocol server, built on the official SDK (``mcp``).

The server offers the tools of the case's variant under the reference's names,
with the toolbox's own JSON schemas and descriptions, plus `SUBMIT_TOOL`, the
one way to give the final answer. The objective is the server's
``instructions`` and the prompt `PROMPT_NAME`.

Every tool call goes through the `Toolbox`, so it is recorded in the
trajectory and counted against the tool-call limit, exactly as for any other
agent. A tool's ``Error: ...`` text, a limit reached and a call after the run
has ended come back as tool errors (``isError``), which a model can read and
act on, never as protocol errors.

`CaseSession` holds the run's state (the first submission, why the run
stopped) and knows nothing of MCP; `build_server` wraps it in an SDK server;
`serve_stdio` and `HTTPServerThread` put that on a transport. Streamable
HTTP binds 127.0.0.1 only: the endpoint has no authentication.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from typing import Any

import anyio
import mcp.types as types
import uvicorn
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from ..tools.toolbox import AgentStopped, Toolbox, ToolSpec
from ..tools.trajectory import Step
from .base import Task
from .parse import SUBMIT_TOOL, SubmissionError, submission_schema, to_submission

SERVER_NAME = "ctirealm"
PROMPT_NAME = "detection_task"
LOOPBACK = "127.0.0.1"

SUBMIT_SPEC = ToolSpec(
    SUBMIT_TOOL,
    "Submit the final detection and end the run. Only the first accepted submission counts; "
    "further tool calls are refused. query_results must be rows execute_kql_query returned. "
    "Put your analysis (the MITRE ATT&CK technique ids you identified and why) in analysis: "
    "it is the only text of yours that is recorded.",
    submission_schema(
        analysis={
            "type": "string",
            "description": "your analysis: ATT&CK technique ids, reports and tables used",
        }
    ),
)

MCP_NOTE = f"""\
Over MCP, give the final answer by calling the {SUBMIT_TOOL} tool with sigma_rule, kql_query and
query_results (and your analysis, naming the ATT&CK technique ids, in analysis) instead of
answering with JSON. Only the first accepted submission counts, and it ends the run.
"""


def mcp_prompt(task: Task) -> str:
    """The whole prompt for an agent working over MCP: instructions, the MCP note, the objective."""
    return f"{task.system_prompt.rstrip()}\n\n{MCP_NOTE}\n{task.user_message}\n"


class CaseSession:
    """The state of one run behind an MCP server: its toolbox, the first submission, why it ended.

    Calls are serialised: a client may send several at once, but the toolbox and its engine
    serve one at a time, and the trajectory keeps the order they ran in.
    """

    def __init__(self, task: Task, toolbox: Toolbox, *, time_limit: float | None = None) -> None:
        self.task = task
        self.toolbox = toolbox
        self.answer: dict[str, Any] | None = None
        self.stopped: str | None = None  # why tool calls are refused (a limit, a cancel)
        self.timed_out = False
        self.ended = threading.Event()  # set on the first accepted submission or a stop
        self._deadline = None if time_limit is None else time.monotonic() + time_limit
        self._time_limit = time_limit
        self._lock = threading.Lock()

    def specs(self) -> list[ToolSpec]:
        return [*self.toolbox.specs(), SUBMIT_SPEC]

    @property
    def prompt(self) -> str:
        return mcp_prompt(self.task)

    def stop(self, reason: str) -> None:
        """End the run from outside (the runner's time limit, a cancel): calls are refused."""
        self.toolbox.stop(reason)
        self._stopped(reason)

    def call(
        self, name: str, arguments: dict[str, Any] | None, call_id: str | None = None
    ) -> tuple[str, bool]:
        """Run one tool call; returns its text and whether it is an error. Never raises."""
        with self._lock:
            if self.answer is not None:
                return (
                    f"Error: the run has ended: an answer was already submitted with "
                    f"{SUBMIT_TOOL}; only the first submission counts"
                ), True
            if self._deadline is not None and time.monotonic() > self._deadline and not self.stopped:
                self.timed_out = True
                self.stop(f"time limit of {self._time_limit:g} s exceeded")
            if self.stopped is not None:
                return f"Error: the run is over: {self.stopped}", True
            if name == SUBMIT_TOOL:
                return self._submit(arguments)
            try:
                text = self.toolbox.call(name, arguments, call_id=call_id)
            except AgentStopped as exc:
                self._stopped(str(exc))
                return f"Error: the run is over: {exc}", True
            return text, text.startswith("Error:")

    def _stopped(self, reason: str) -> None:
        if self.stopped is None:
            self.stopped = reason
            self._note(f"the run was stopped: {reason}")
        self.ended.set()

    def _submit(self, arguments: dict[str, Any] | None) -> tuple[str, bool]:
        args = dict(arguments or {})
        analysis = args.pop("analysis", None)
        try:
            to_submission(args)  # the runner's own check, so an accepted answer is a valid one
        except SubmissionError as exc:
            self._note(f"{SUBMIT_TOOL} refused: {exc}")
            return f"Error: the submission was not accepted: {exc}; fix it and call {SUBMIT_TOOL} again", True
        if isinstance(analysis, str) and analysis.strip():
            # Appended directly: the analysis must be kept even after a limit stopped the tools.
            self.toolbox.trajectory.steps.append(Step(kind="assistant", text=analysis))
        self.answer = args
        self._note(f"{SUBMIT_TOOL} accepted: {len(args['query_results'])} result rows")
        self.ended.set()
        return "Submission accepted. The run is over; no further tool calls are needed.", False

    def _note(self, text: str) -> None:
        # A runner note, not assistant text: never scored.
        self.toolbox.trajectory.steps.append(Step(kind="note", text=text))


def build_server(session: CaseSession) -> Server[Any]:
    """An SDK server for *session*: its tools, the submit tool, the objective as instructions and prompt."""
    tools = [
        types.Tool(name=s.name, description=s.description, input_schema=s.parameters) for s in session.specs()
    ]
    prompt = types.Prompt(
        name=PROMPT_NAME,
        title="CTI-REALM detection task",
        description=f"the detection objective of case {session.task.case_id}",
    )

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[t.model_copy(deep=True) for t in tools])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        call_id = None if ctx.request_id is None else str(ctx.request_id)
        # The toolbox blocks (queries run for seconds): off the event loop, so pings still answer.
        text, error = await anyio.to_thread.run_sync(session.call, params.name, params.arguments, call_id)
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=error)

    async def list_prompts(ctx: Any, params: Any) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=[prompt.model_copy()])

    async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        if params.name != PROMPT_NAME:
            raise ValueError(f"unknown prompt {params.name!r}; the only prompt is {PROMPT_NAME}")
        return types.GetPromptResult(
            description=prompt.description,
            messages=[
                types.PromptMessage(role="user", content=types.TextContent(type="text", text=session.prompt))
            ],
        )

    return Server(
        SERVER_NAME,
        version=_version(),
        instructions=session.prompt,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
    )


def _version() -> str:
    from .. import __version__

    return str(__version__)


async def serve_stdio(server: Server[Any]) -> None:
    """Serve one client on this process's stdin and stdout until it disconnects."""
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def loopback_socket(port: int = 0) -> socket.socket:
    """A listening-ready socket on 127.0.0.1 (port 0: a free one); never another interface."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LOOPBACK, port))
    except OSError:
        sock.close()
        raise
    return sock


def http_server(server: Server[Any], sock: socket.socket, path: str) -> uvicorn.Server:
    """A uvicorn server for *server*'s streamable HTTP endpoint at *path* (SDK host checks on)."""
    app = server.streamable_http_app(streamable_http_path=path, host=LOOPBACK)
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1, access_log=False
    )
    return uvicorn.Server(config)


def endpoint(sock: socket.socket, path: str) -> str:
    return f"http://{LOOPBACK}:{sock.getsockname()[1]}{path}"


class HTTPServerThread:
    """*server* over streamable HTTP on 127.0.0.1, in a thread of this process, until `stop`.

    The path holds a random token, so a process that finds the port cannot guess the endpoint
    of another run.
    """

    def __init__(self, server: Server[Any], *, port: int = 0) -> None:
        self._sock = loopback_socket(port)
        path = f"/{secrets.token_urlsafe(12)}/mcp"
        self.url = endpoint(self._sock, path)
        self._uvicorn = http_server(server, self._sock, path)
        self._thread = threading.Thread(
            target=self._uvicorn.run, kwargs={"sockets": [self._sock]}, name="mcp-http", daemon=True
        )

    def start(self, timeout: float = 10.0) -> HTTPServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the MCP server at {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._uvicorn.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            self._uvicorn.force_exit = True
            self._thread.join(timeout)
        self._sock.close()


def dumps_config(url: str, name: str = SERVER_NAME) -> str:
    """The ``mcpServers`` JSON most agent CLIs read (Claude Code's ``--mcp-config`` among them)."""
    return json.dumps({"mcpServers": {name: {"type": "http", "url": url}}}, indent=2) + "\n"


__all__ = [
    "MCP_NOTE",
    "PROMPT_NAME",
    "SERVER_NAME",
    "SUBMIT_SPEC",
    "SUBMIT_TOOL",
    "CaseSession",
    "HTTPServerThread",
    "build_server",
    "dumps_config",
    "endpoint",
    "http_server",
    "loopback_socket",
    "mcp_prompt",
    "serve_stdio",
]
