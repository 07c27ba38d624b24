"""The telemetry store over the Kusto REST API, on loopback, read-only (``ctirealm serve``).

This reuses duckdb-kql's Kusto REST server (v1 management, v1 and v2 query
endpoints) with three things added for the benchmark:

* **Read-only, no external access.** The store is attached read-only, DuckDB
  external access is switched off before the first request (and cannot be
  switched back on), and the server's write permission stays off.
* **Loopback only.** Binding any other address is refused here, before
  duckdb-kql's own checks.
* **The clock and the client's request properties.** azure-kusto-data sends
  its request properties as a JSON *string* and ``servertimeout`` in Python's
  ``H:MM:SS`` spelling; they are normalised so the time limit and ``query_now``
  are honoured. A request without ``query_now`` gets the dataset clock, so
  ``ago(1d)`` means the dataset's last day for every client (notebooks, the
  upstream harness, ``KustoEngine``), unless the server runs on the wall clock.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from ..engine import rewrite
from ..engine.kusto import is_loopback
from ..engine.result import format_datetime
from ..telemetry.schema import parse_timespan

DEFAULT_DATABASE = "ctirealm"
_PY_TIMESPAN = re.compile(r"^(?:(-?\d+) days?, )?(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def timespan_seconds(value: Any) -> float | None:
    """A ``servertimeout`` as any client sends it (seconds, Kusto or Python text) -> seconds."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    match = _PY_TIMESPAN.match(text)
    if match:
        days = int(match.group(1) or 0)
        return timedelta(days=days, hours=int(match.group(2)), minutes=int(match.group(3)),
                         seconds=float(match.group(4))).total_seconds()
    try:
        return parse_timespan(text).total_seconds()
    except ValueError:
        return None


def normalise_request(body: bytes, now: datetime | None) -> bytes:
    """The request body with properties as an object, servertimeout in seconds and a clock set."""
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        return body  # the server answers a malformed body itself
    if not isinstance(request, dict):
        return body
    properties = request.get("properties")
    if isinstance(properties, str):
        try:
            properties = json.loads(properties) if properties.strip() else {}
        except ValueError:
            return body
    if not isinstance(properties, dict):
        properties = {}
    options = properties.get("Options") or properties.get("options") or {}
    if not isinstance(options, dict):
        options = {}
    lowered = {str(k).lower(): k for k in options}
    if "servertimeout" in lowered:
        key = lowered["servertimeout"]
        seconds = timespan_seconds(options[key])
        if seconds is not None:
            options[key] = seconds
    if now is not None and "query_now" not in lowered:
        options["query_now"] = format_datetime(now)
    properties["Options"] = options
    properties.pop("options", None)
    request["properties"] = properties
    return json.dumps(request).encode("utf-8")


def _string_columns(con: duckdb.DuckDBPyConnection, alias: str,
                    path: Path) -> dict[str, list[tuple[str, bool]]]:
    """Each table's columns, in order, with whether each is a Kusto ``string``."""
    meta_path = path.with_suffix(".meta.json")
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("schemas"):
            return {name: [(c, t == "string") for c, t in spec["columns"]]
                    for name, spec in meta["schemas"].items()}
    rows = con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = ? ORDER BY table_name, ordinal_position", [alias]).fetchall()
    out: dict[str, list[tuple[str, bool]]] = {}
    for table, column, data_type in rows:
        out.setdefault(table, []).append((column, str(data_type).upper() == "VARCHAR"))
    return out


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def open_store_connection(store_path: str | Path, database: str = DEFAULT_DATABASE,
                          *, memory_limit: str = "2GB") -> duckdb.DuckDBPyConnection:
    """A connection serving the store as *database*: read-only, external access off.

    The store is attached read-only as ``<database>_store``; *database* is an
    in-memory catalogue of views over it in which a missing ``string`` value
    reads as ``""`` (Kusto has no null strings), exactly as `LocalEngine` sees
    the store.
    """
    path = Path(store_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no telemetry store here (run `ctirealm telemetry build`)")
    if not _NAME.match(database):
        raise ValueError(f"database name {database!r}: use letters, digits and underscores")
    alias = f"{database}_store"
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": "false",
                                              "autoload_known_extensions": "false"})
    con.execute("SET TimeZone='UTC'")
    con.execute(f"SET memory_limit='{memory_limit}'")
    literal = "'" + str(path).replace("'", "''") + "'"
    con.execute(f"ATTACH {literal} AS {_quote(alias)} (READ_ONLY)")
    con.execute(f"ATTACH ':memory:' AS {_quote(database)}")
    for table, columns in sorted(_string_columns(con, alias, path).items()):
        select = ", ".join(f"coalesce({_quote(c)}, '') AS {_quote(c)}" if is_string else _quote(c)
                           for c, is_string in columns)
        con.execute(f"CREATE VIEW {_quote(database)}.main.{_quote(table)} AS SELECT {select} "
                    f"FROM {_quote(alias)}.main.{_quote(table)}")
    con.execute(f"USE {_quote(database)}")
    con.execute("SET enable_external_access=false")
    return con


def build_realm_server(
    store_path: str | Path,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    database: str = DEFAULT_DATABASE,
    now: datetime | None = None,
    quiet: bool = True,
) -> Any:
    """A read-only Kusto REST server on *store_path*, ready to ``serve_forever()``.

    *port* 0 picks a free port (read it back from ``server.url``). *now* is
    the clock requests without ``query_now`` get (``None``: the wall clock).
    """
    if not is_loopback(host):
        raise ValueError(f"refusing to serve on {host!r}: the store is served on loopback only "
                         "(127.0.0.1 or ::1), because the endpoint has no authentication")
    return make_server(open_store_connection(store_path, database), port=port, host=host,
                       now=now, quiet=quiet, source=str(store_path))


def make_server(
    con: duckdb.DuckDBPyConnection,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    now: datetime | None = None,
    quiet: bool = True,
    source: str = ":memory:",
    allow_write: bool = False,
) -> Any:
    """duckdb-kql's Kusto REST server on *con*'s current database, with the normalisation above.

    Loopback only. ``allow_write`` lets requests ingest (``.set-or-append``);
    `build_realm_server` never sets it, it exists for scratch endpoints that
    receive ``ctirealm telemetry push``.
    """
    if not is_loopback(host):
        raise ValueError(f"refusing to serve on {host!r}: loopback addresses only")
    from duckdb_kql.server import KustoRestServer, _Handler

    # The server translates with duckdb-kql in this process: the rewrites make it speak the
    # Kusto the engine does. Installed by the first server made, not on import.
    rewrite.ensure_installed()

    clock = now

    class RealmHandler(_Handler):  # type: ignore[misc, valid-type]
        disable_nagle_algorithm = True  # headers and body leave at once: no delayed-ACK stall

        def do_POST(self) -> None:  # BaseHTTPRequestHandler's interface
            length = int(self.headers.get("Content-Length", "0") or 0)
            body = normalise_request(self.rfile.read(length) if length else b"", clock)
            connection = self.rfile
            self.rfile = io.BytesIO(body)  # the parent reads the (normalised) body from here
            del self.headers["Content-Length"]
            self.headers["Content-Length"] = str(len(body))
            try:
                super().do_POST()
            finally:
                self.rfile = connection  # keep-alive: the next request comes from the socket

    class RealmServer(KustoRestServer):  # type: ignore[misc, valid-type]
        """duckdb-kql's server with the request normalisation above, one database."""

        def __init__(self) -> None:
            super().__init__(con, port=port, host=host, source=source, quiet=quiet,
                             allow_write=allow_write)
            self.RequestHandlerClass = RealmHandler
            self.now = clock

        def serves(self, name: str) -> bool:
            """Only the served database (and ``default``, a client's placeholder)."""
            return name in (self.database, "default")

        def run(self, csl: str, parameters: dict[str, Any] | None = None,
                database: str | None = None, options: dict[str, Any] | None = None) -> Any:
            # The connection's current database is the served one: names stay unqualified
            # (the engine refuses database("x").T references).
            return super().run(csl, parameters, None, options)

        @property
        def kusto_url(self) -> str:
            """The ``--realm-engine`` value for this server."""
            bound_host, bound_port = self.server_address[:2]
            shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
            return f"kusto://{shown}:{bound_port}/{self.database}"

    if ":" in host:
        import socket

        RealmServer.address_family = socket.AF_INET6
    return RealmServer()


def serve_forever(server: Any, announce: Callable[[str], None] = print) -> None:
    """Run *server* until interrupted, then close it."""
    announce(f"serving {server.source} as database {server.database!r}")
    announce(f"  {server.url}  (--realm-engine {server.kusto_url})")
    announce("  read-only, loopback only. Ctrl-C to stop.")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        announce("stopped")
    finally:
        server.server_close()
