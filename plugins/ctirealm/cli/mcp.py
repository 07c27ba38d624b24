"""``ctirealm mcp --case ID``: one case's toolbox as an MCP server, for any MCP client.

Over stdio (the default) the client starts this command itself; over
streamable HTTP (``--transport http``) it serves ``http://127.0.0.1:PORT/mcp``
until the run ends. The run ends at the first accepted ``submit_detection``,
at the time limit or the tool-call limit, or when the client goes away; its
trajectory is then written where ``pytest --realm-agent replay:DIR`` scores it.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..agents.base import DEFAULT_TIME_LIMIT, Task, _preview
from ..agents.parse import SubmissionError, to_submission
from ..agents.replay import trajectory_path
from ..tools.toolbox import VARIANTS, Toolbox, parse_toolsets
from ..tools.trajectory import Trajectory
from .common import add_store_options, open_store

DEFAULT_PORT = 31416
END_GRACE = 2.0  # seconds the last answer gets to reach the client before the server stops


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "mcp", help="serve one case's tools as an MCP server (stdio, or streamable HTTP on loopback)"
    )
    parser.add_argument("--case", required=True, metavar="CASE_ID", help="the case to serve")
    parser.add_argument(
        "--variant",
        choices=sorted(VARIANTS),
        default="full",
        help="tool set: full (default), minimal or seeded",
    )
    parser.add_argument(
        "--tools",
        default="",
        metavar="+TOOLSET",
        help="opt-in toolsets: +sandbox (bash and python without network)",
    )
    parser.add_argument(
        "--transport",
        choices=("stdio", "http"),
        default="stdio",
        help="stdio (default: the client starts this command) or http",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"HTTP port on 127.0.0.1 (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument("--cases", type=Path, default=Path("cases"), help="cases folder (default: ./cases)")
    add_store_options(parser)
    parser.add_argument(
        "--time-limit",
        type=float,
        default=DEFAULT_TIME_LIMIT,
        help=f"seconds the run may last (default {DEFAULT_TIME_LIMIT:g})",
    )
    parser.add_argument(
        "--max-tool-calls", type=int, default=200, help="tool calls the run may make (default 200)"
    )
    parser.add_argument(
        "--query-timeout", type=float, default=30.0, help="seconds one query may run (default 30)"
    )
    parser.add_argument(
        "--trajectories",
        type=Path,
        default=Path("reports") / "mcp",
        help="where the run's trajectory is written (default reports/mcp)",
    )
    parser.set_defaults(handler=_mcp)


def _mcp(args: argparse.Namespace) -> int:
    from ..cases import load_cases

    try:
        import mcp  # noqa: F401
    except ImportError:
        raise ValueError("ctirealm mcp needs the MCP SDK: pip install 'ctirealm[mcp]'") from None
    store = open_store(args)
    cases = load_cases(args.cases, tables=store.known_tables())
    if args.case not in cases.cases:
        raise ValueError(
            f"no case {args.case!r} in {args.cases}; cases: " + ", ".join(sorted(cases.cases))
            if cases.cases
            else f"no cases in {args.cases}"
        )
    case = cases.cases[args.case]
    from ..engine.local import LocalEngine

    with LocalEngine.of_store(store, timeout=args.query_timeout) as engine:
        trajectory = Trajectory(case.id, f"mcp:{args.transport}", variant=args.variant)
        toolbox = Toolbox(
            engine,
            cases,
            trajectory,
            variant=args.variant,
            max_tool_calls=args.max_tool_calls,
            toolsets=parse_toolsets(args.tools),
        )
        task = Task.for_case(case, toolbox, variant=args.variant, time_limit=args.time_limit)
        started = time.perf_counter()
        try:
            serve(task, toolbox, transport=args.transport, port=args.port)
        finally:
            toolbox.close()
        trajectory.duration = round(time.perf_counter() - started, 3)
    path = trajectory_path(args.trajectories, case.id, 1)
    trajectory.save(path)
    print(
        f"{case.id}: {trajectory.status}"
        + (f" ({trajectory.reason})" if trajectory.reason else "")
        + f"; trajectory: {path}",
        file=sys.stderr,
    )
    return 0


def serve(task: Task, toolbox: Toolbox, *, transport: str = "stdio", port: int = DEFAULT_PORT) -> None:
    """Serve *task* until the run ends, then set the trajectory's status, reason and submission."""
    from ..agents.mcp_server import CaseSession, build_server

    session = CaseSession(task, toolbox, time_limit=task.time_limit)
    server = build_server(session)
    try:
        if transport == "http":
            _serve_http(server, session, port)
        else:
            _serve_stdio(server, session)
    except KeyboardInterrupt:
        pass  # concluded below like a client that went away
    conclude(session)


def _serve_stdio(server: Any, session: Any) -> None:
    import anyio

    from ..agents.mcp_server import serve_stdio

    async def main() -> None:
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                await _ended(session)
                await anyio.sleep(END_GRACE)
                group.cancel_scope.cancel()

            group.start_soon(watch)
            await serve_stdio(server)
            group.cancel_scope.cancel()  # the client closed the connection

    anyio.run(main)


async def _ended(session: Any) -> None:
    import anyio

    ended = await anyio.to_thread.run_sync(
        session.ended.wait, session.task.time_limit, abandon_on_cancel=True
    )
    if not ended:
        session.timed_out = True
        session.stop(f"time limit of {session.task.time_limit:g} s exceeded")


def _serve_http(server: Any, session: Any, port: int) -> None:
    from ..agents.mcp_server import dumps_config, endpoint, http_server, loopback_socket

    path = "/mcp"
    sock = loopback_socket(port)
    url = endpoint(sock, path)
    runner = http_server(server, sock, path)
    print(
        f"serving case {session.task.case_id} ({session.task.variant}) at {url}\n"
        f"MCP client configuration:\n{dumps_config(url)}",
        file=sys.stderr,
        flush=True,
    )

    def watch() -> None:
        if not session.ended.wait(session.task.time_limit):
            session.timed_out = True
            session.stop(f"time limit of {session.task.time_limit:g} s exceeded")
        time.sleep(END_GRACE)
        runner.should_exit = True

    threading.Thread(target=watch, name="mcp-run-end", daemon=True).start()
    try:
        runner.run(sockets=[sock])
    finally:
        sock.close()


def conclude(session: Any) -> None:
    """The trajectory's outcome, by the runner's rules: submitted, timeout, limit, or none."""
    trajectory = session.toolbox.trajectory
    if session.answer is not None:
        trajectory.raw_answer = _preview(session.answer)
        try:
            trajectory.submission = to_submission(session.answer)
            trajectory.status = "submitted"
        except SubmissionError as exc:  # accepted answers were checked; kept for safety
            trajectory.status = "invalid_submission"
            trajectory.reason = f"the answer is not a valid submission: {exc}"
    elif session.timed_out:
        trajectory.status = "timeout"
        limit = session.task.time_limit
        trajectory.reason = f"the client did not submit within the time limit of {limit:g} s"
    elif session.stopped is not None:
        trajectory.status = "limit_exceeded"
        trajectory.reason = f"the agent was stopped: {session.stopped}"
    else:
        trajectory.status = "no_submission"
        trajectory.reason = "the server stopped (the client went away) before a submission"
