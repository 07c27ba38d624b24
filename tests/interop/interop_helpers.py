"""Helpers for the interoperability tests: stores served over the Kusto REST API on loopback."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from ctirealm.engine.server import build_realm_server, make_server
from ctirealm.telemetry.schema import DUCKDB_TYPES, TableSchema, coerce_row

ROOT = Path(__file__).resolve().parents[2]
MINI = ROOT / "tests" / "fixtures" / "mini"
UPSTREAM = Path(__file__).parent / "data" / "upstream"


@contextmanager
def serving(store_path: Path, now: datetime | None, database: str = "ctirealm") -> Iterator[Any]:
    """``ctirealm serve`` on a free loopback port, in a thread, for the duration of the block."""
    server = build_realm_server(store_path, port=0, database=database, now=now)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def write_store(
    path: Path, tables: dict[str, list[dict[str, Any]]], schemas: dict[str, TableSchema], now: str
) -> Path:
    """A DuckDB store file (with its ``.meta.json``) holding *tables*, as the store builder would."""
    con = duckdb.connect(str(path))
    try:
        con.execute("SET TimeZone='UTC'")
        for name, schema in schemas.items():
            columns = ", ".join(f'"{c}" {DUCKDB_TYPES[t]}' for c, t in schema.columns)
            con.execute(f'CREATE TABLE "{name}" ({columns})')
            rows = [coerce_row(schema, dict(r)) for r in tables.get(name, [])]
            if rows:
                marks = ", ".join("?" for _ in schema.columns)
                con.executemany(f'INSERT INTO "{name}" VALUES ({marks})', rows)
    finally:
        con.close()
    meta = {
        "now": now,
        "schemas": {
            n: {
                "id_column": s.id_column,
                "time_column": s.time_column,
                "columns": [list(c) for c in s.columns],
            }
            for n, s in schemas.items()
        },
    }
    path.with_suffix(".meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return path


def copy_mini(target: Path) -> None:
    """The two-case mini benchmark (cases, rules, telemetry, real schemas) into *target*."""
    for part in ("cases", "rules", "telemetry"):
        shutil.copytree(MINI / part, target / part)
    shutil.copytree(ROOT / "telemetry" / "schemas", target / "telemetry" / "schemas")


@contextmanager
def writable_endpoint(scratch: Path) -> Iterator[str]:
    """A separate, writable Kusto endpoint on a scratch DuckDB file (never the served store)."""
    con = duckdb.connect(str(scratch))
    server = make_server(con, port=0, allow_write=True, source=str(scratch))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        con.close()


def write_inspect_log(
    path: Path, samples: list[dict[str, Any]], *, model: str = "openai/gpt-test", task: str = "cti_realm_25"
) -> Path:
    """An Inspect log written by inspect-ai's own writer.

    Each sample: ``{"id", "epoch"?, "messages": [(role, payload), ...], "completion"?}`` where an
    assistant payload is ``{"text", "reasoning", "calls": [(id, function, arguments)]}`` and a tool
    payload is ``{"id", "function", "result", "error"?}``.
    """
    from inspect_ai.log import EvalConfig, EvalDataset, EvalLog, EvalSample, EvalSpec, write_eval_log
    from inspect_ai.model import (
        ChatMessageAssistant,
        ChatMessageSystem,
        ChatMessageTool,
        ChatMessageUser,
        ContentReasoning,
        ContentText,
        ModelOutput,
    )
    from inspect_ai.tool import ToolCall, ToolCallError

    built = []
    for spec in samples:
        messages: list[Any] = [
            ChatMessageSystem(content="You are a detection engineer."),
            ChatMessageUser(content=f"DETECTION OBJECTIVE:\n{spec['id']}"),
        ]
        for role, payload in spec["messages"]:
            if role == "assistant":
                content: list[Any] = []
                if payload.get("reasoning"):
                    content.append(ContentReasoning(reasoning=payload["reasoning"]))
                content.append(ContentText(text=payload.get("text", "")))
                calls = [ToolCall(id=i, function=f, arguments=a) for i, f, a in payload.get("calls", [])]
                messages.append(ChatMessageAssistant(content=content, tool_calls=calls or None))
            else:
                error = payload.get("error")
                messages.append(
                    ChatMessageTool(
                        content=payload.get("result", ""),
                        tool_call_id=payload["id"],
                        function=payload["function"],
                        error=ToolCallError("timeout", error) if error else None,
                    )
                )
        built.append(
            EvalSample(
                id=spec["id"],
                epoch=spec.get("epoch", 1),
                input=f"DETECTION OBJECTIVE:\n{spec['id']}",
                target="",
                messages=messages,
                output=ModelOutput.from_content(model=model, content=spec.get("completion", "")),
            )
        )
    log = EvalLog(
        eval=EvalSpec(
            created="2026-03-16T00:00:00+00:00",
            task=task,
            dataset=EvalDataset(name="cti_realm", samples=len(built)),
            model=model,
            config=EvalConfig(),
        ),
        status="success",
        samples=built,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_eval_log(log, str(path))
    return path
