"""A scripted MCP agent for the tests, built only on the SDK's own client.

``python mcp_client.py PLAN.json [URL]`` connects to URL over streamable HTTP
(or starts the plan's ``server`` command over stdio), lists the tools and the
prompt, then follows the plan's steps:

- ``{"call": name, "arguments": {...}}`` — one tool call;
- ``{"flood": name, "arguments": {...}, "count": n}`` — n calls at once;
- ``{"submit": {...}, "rows_from": i}`` — ``submit_detection``, with the rows step i's query returned;
- ``{"sleep": seconds}``, ``{"reconnect": true}`` (a new session), ``{"exit": code}`` (die at once),
  ``{"spawn": argv}`` (start a child process and log its pid).

URL may also be an ``mcpServers`` JSON file, read as an agent CLI reads its configuration.

After every step it writes what it saw (instructions, tools, prompt, each
result's text and ``isError``) to the plan's ``log`` file; a plan may be a
folder of ``<case_id>.json`` files when a third argument names the case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from ctirealm.tools.toolbox import result_rows


@asynccontextmanager
async def connect(plan: dict[str, Any], url: str | None):
    if url:
        transport = streamable_http_client(url)
    else:
        server = plan["server"]
        transport = stdio_client(
            StdioServerParameters(command=server["command"], args=server["args"], env=server.get("env"))
        )
    async with transport as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        yield session, init


def text_of(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def main(plan: dict[str, Any], url: str | None) -> None:
    log: dict[str, Any] = {"results": [], "pid": os.getpid(), "url": url}
    out = Path(plan["log"])

    def save() -> None:
        out.write_text(json.dumps(log, indent=1), encoding="utf-8")

    steps = list(plan["steps"])
    while True:
        async with connect(plan, url) as (session, init):
            log["instructions"] = init.instructions
            log["tools"] = [
                t.model_dump(mode="json", by_alias=True, exclude_none=True)
                for t in (await session.list_tools()).tools
            ]
            log["prompts"] = [p.name for p in (await session.list_prompts()).prompts]
            prompt = await session.get_prompt(log["prompts"][0])
            log["prompt"] = prompt.messages[0].content.text
            save()
            reconnect = False
            while steps and not reconnect:
                index = len(log["results"])
                step = steps.pop(0)
                if "call" in step:
                    result = await session.call_tool(step["call"], step.get("arguments", {}))
                    log["results"].append(
                        {"step": index, "text": text_of(result), "is_error": bool(result.is_error)}
                    )
                elif "flood" in step:
                    found: list[dict[str, Any]] = []

                    async def one(name: str, arguments: dict[str, Any], found: list = found) -> None:
                        result = await session.call_tool(name, arguments)
                        found.append({"text": text_of(result), "is_error": bool(result.is_error)})

                    async with anyio.create_task_group() as group:
                        for _ in range(step["count"]):
                            group.start_soon(one, step["flood"], step.get("arguments", {}))
                    log["results"].append({"step": index, "flood": found})
                elif "submit" in step:
                    answer = dict(step["submit"])
                    if "rows_from" in step:
                        answer["query_results"] = result_rows(log["results"][step["rows_from"]]["text"])
                    result = await session.call_tool("submit_detection", answer)
                    log["results"].append(
                        {"step": index, "text": text_of(result), "is_error": bool(result.is_error)}
                    )
                elif "sleep" in step:
                    log["results"].append({"step": index})
                    save()
                    await anyio.sleep(step["sleep"])
                elif "spawn" in step:
                    child = subprocess.Popen(step["spawn"])
                    log["results"].append({"step": index, "pid": child.pid})
                elif "reconnect" in step:
                    log["results"].append({"step": index})
                    reconnect = True
                elif "exit" in step:
                    log["results"].append({"step": index})
                    save()
                    os._exit(step["exit"])
                save()
        if not reconnect:
            return


if __name__ == "__main__":
    source = Path(sys.argv[1])
    if source.is_dir():
        source = source / f"{sys.argv[3]}.json"
    target = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
    if target and not target.startswith("http"):
        target = json.loads(Path(target).read_text(encoding="utf-8"))["mcpServers"]["ctirealm"]["url"]
    anyio.run(main, json.loads(source.read_text(encoding="utf-8")), target)
