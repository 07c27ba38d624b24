"""Helpers for the interoperability tests: stores served over the Kusto REST API on loopback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from ctirealm.interop.server import build_realm_server
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


def write_store(path: Path, tables: dict[str, list[dict[str, Any]]],
                schemas: dict[str, TableSchema], now: str) -> Path:
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
    meta = {"now": now, "schemas": {n: {"id_column": s.id_column, "time_column": s.time_column,
                                        "columns": [list(c) for c in s.columns]}
                                    for n, s in schemas.items()}}
    path.with_suffix(".meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return path


def copy_mini(target: Path) -> None:
    """The two-case mini benchmark (cases, rules, telemetry, real schemas) into *target*."""
    for part in ("cases", "rules", "telemetry"):
        shutil.copytree(MINI / part, target / part)
    shutil.copytree(ROOT / "telemetry" / "schemas", target / "telemetry" / "schemas")


@contextmanager
def writable_endpoint(scratch: Path) -> Iterator[str]:
    """A separate, writable duckdb-kql Kusto endpoint on a scratch DuckDB file (its own process)."""
    command = [sys.executable, "-m", "duckdb_kql", "serve", str(scratch), "-p", "0", "--allow-write"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = None
    try:
        assert process.stdout is not None
        for line in process.stdout:
            match = re.search(r"http://127\.0\.0\.1:\d+", line)
            if match:
                url = match.group(0)
                break
        if url is None:
            raise RuntimeError("the writable endpoint did not start")
        yield url
    finally:
        process.terminate()
        process.wait(10)
