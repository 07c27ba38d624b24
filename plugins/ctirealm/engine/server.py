"""The telemetry store over the Kusto REST API, on loopback, read-only (``ctirealm serve``).

This builds on duckdb-kql's Kusto REST server (v1 management, v1 and v2 query
endpoints, its translation, request options and CORS policy) and answers
requests itself where Kusto clients need more:

* **Read-only, no external access.** The store is attached read-only, DuckDB
  external access is switched off before the first request (and cannot be
  switched back on), and the server's write permission stays off.
* **Loopback only.** Binding any other address is refused here, before
  duckdb-kql's own checks; an IPv6 loopback is printed ``http://[::1]:PORT``.
* **The clock and the client's request properties.** azure-kusto-data sends
  its request properties as a JSON *string* and ``servertimeout`` in Python's
  ``H:MM:SS`` spelling; they are normalised so the time limit and ``query_now``
  are honoured. A request without ``query_now`` gets the dataset clock, so
  ``ago(1d)`` means the dataset's last day for every client (notebooks, the
  upstream harness, ``KustoEngine``), unless the server runs on the wall clock.
* **Kusto's answers.** The database names clients send before choosing one,
  Kusto's error JSON and messages (`engine.errors.to_kusto_error`), Kusto's
  value forms and column types, and the schema commands tools ask for.
* **Speed.** Rows are written to JSON by DuckDB and streamed (docs/kusto.md).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
from duckdb_kql.engine import kql
from duckdb_kql.kusto.client import _Deadline, _seconds
from duckdb_kql.server import KustoRestServer, RestColumn, Result, _Handler
from duckdb_kql.types import KQL_TO_NET, kusto_type

from ..telemetry.schema import parse_timespan
from ..telemetry.values import format_datetime, format_timespan, kusto_datetime
from . import rewrite
from .errors import (
    EngineError,
    KqlRuntimeError,
    KqlSemanticError,
    KqlUnsupportedError,
    KustoError,
    QueryTimeout,
    ReadOnlyViolation,
    ResourceLimitExceeded,
    to_kusto_error,
)
from .kusto import is_loopback
from .result import NET_TYPES, parse_nested_json

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
        return timedelta(
            days=days, hours=int(match.group(2)), minutes=int(match.group(3)), seconds=float(match.group(4))
        ).total_seconds()
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


def _catalog(
    con: duckdb.DuckDBPyConnection, catalog: str, path: Path | None = None
) -> dict[str, list[tuple[str, str]]]:
    """Each table's ``(column, kusto_type)`` pairs, in order: from the store's
    ``.meta.json`` when it has the schemas (guid and decimal columns are stored as
    text and doubles, so only the schemas know them), else from DuckDB's types."""
    meta_path = path.with_suffix(".meta.json") if path is not None else None
    if meta_path is not None and meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("schemas"):
            return {
                name: [(str(c), str(t)) for c, t in spec["columns"]] for name, spec in meta["schemas"].items()
            }
    rows = con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = ? ORDER BY table_name, ordinal_position",
        [catalog],
    ).fetchall()
    out: dict[str, list[tuple[str, str]]] = {}
    for table, column, data_type in rows:
        out.setdefault(str(table), []).append((str(column), kusto_type(data_type)))
    return out


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


@contextlib.contextmanager
def _reading_types(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """While a query is translated, the operand types the rewrites ask for (``sum`` of a
    timespan, ``dynamic`` in datetime arithmetic) read from *con*, as `LocalEngine` reads them."""

    def read_types(sql: str, parameters: dict[str, Any]) -> dict[str, str]:
        described = con.execute(f"DESCRIBE {sql}", parameters or None).fetchall()
        return {str(row[0]): kusto_type(str(row[1])) for row in described}

    token = rewrite.READ_TYPES.set(read_types)
    try:
        yield
    finally:
        rewrite.READ_TYPES.reset(token)


def open_store_connection(
    store_path: str | Path, database: str = DEFAULT_DATABASE, *, memory_limit: str = "2GB"
) -> duckdb.DuckDBPyConnection:
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
    con = duckdb.connect(
        ":memory:", config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
    )
    con.execute("SET TimeZone='UTC'")
    con.execute(f"SET memory_limit='{memory_limit}'")
    literal = "'" + str(path).replace("'", "''") + "'"
    con.execute(f"ATTACH {literal} AS {_quote(alias)} (READ_ONLY)")
    con.execute(f"ATTACH ':memory:' AS {_quote(database)}")
    for table, columns in sorted(_catalog(con, alias, path).items()):
        select = ", ".join(
            f"coalesce({_quote(c)}, '') AS {_quote(c)}" if kind == "string" else _quote(c)
            for c, kind in columns
        )
        con.execute(
            f"CREATE VIEW {_quote(database)}.main.{_quote(table)} AS SELECT {select} "
            f"FROM {_quote(alias)}.main.{_quote(table)}"
        )
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
        raise ValueError(
            f"refusing to serve on {host!r}: the store is served on loopback only "
            "(127.0.0.1 or ::1), because the endpoint has no authentication"
        )
    con = open_store_connection(store_path, database)
    catalog = _catalog(con, f"{database}_store", Path(store_path))
    return make_server(
        con, port=port, host=host, now=now, quiet=quiet, source=str(store_path), catalog=catalog
    )


def make_server(
    con: duckdb.DuckDBPyConnection,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    now: datetime | None = None,
    quiet: bool = True,
    source: str = ":memory:",
    allow_write: bool = False,
    catalog: dict[str, list[tuple[str, str]]] | None = None,
) -> Any:
    """A Kusto REST server on *con*'s current database, answering as described above.

    Loopback only. ``allow_write`` lets requests ingest (``.set-or-append``);
    `build_realm_server` never sets it, it exists for scratch endpoints that
    receive ``ctirealm telemetry push``. *catalog* (``{table: [(column,
    kusto_type)]}``) is what the schema commands report; without it, DuckDB's types.
    """
    if not is_loopback(host):
        raise ValueError(f"refusing to serve on {host!r}: loopback addresses only")

    # The server translates with duckdb-kql in this process: the rewrites make it speak the
    # Kusto the engine does. Installed by the first server made, not on import.
    rewrite.ensure_installed()

    clock = now

    class RealmServer(KustoRestServer):
        """duckdb-kql's server with the request handling below, one database."""

        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        def __init__(self) -> None:
            super().__init__(con, port=port, host=host, source=source, quiet=quiet, allow_write=allow_write)
            self.RequestHandlerClass = RealmHandler
            self.now = clock
            self._catalog = catalog

        @property
        def url(self) -> str:
            """``http://HOST:PORT``, an IPv6 address in brackets (``http://[::1]:PORT``)."""
            bound, bound_port = self.server_address[:2]
            bound_host = bound.decode() if isinstance(bound, bytes) else str(bound)
            shown = f"[{bound_host}]" if ":" in bound_host else bound_host
            return f"http://{shown}:{bound_port}"

        @property
        def kusto_url(self) -> str:
            """The ``--realm-engine`` value for this server."""
            return f"kusto{self.url.removeprefix('http')}/{self.database}"

        def catalog(self) -> dict[str, list[tuple[str, str]]]:
            """``{table: [(column, kusto_type)]}`` of the served database."""
            if self._catalog is None:
                with self._lock:
                    self._catalog = _catalog(self._con, self.database)
            return self._catalog

        def serves(self, name: str) -> bool:
            """The served database, and the names clients send before choosing one."""
            return name == self.database or name in DATABASE_ALIASES

        def run(
            self,
            csl: str,
            parameters: dict[str, Any] | None = None,
            database: str | None = None,
            options: dict[str, Any] | None = None,
        ) -> Any:
            """*csl* -> ``Result``; every failure an `EngineError` (see `execute`)."""
            return self.execute(csl, parameters, options)

        def execute(
            self, csl: str, parameters: dict[str, Any] | None = None, options: dict[str, Any] | None = None
        ) -> Result:
            """Run *csl* (a query or a read-only command) on the served database.

            Names stay unqualified: the connection's current database is the served
            one (the engine refuses ``database("x").T`` references). Failures are
            `EngineError`s, which the handler answers in Kusto's terms.
            """
            options = options or {}
            command = _schema_command(self, csl)
            if command is not None:
                return command
            timeout = None
            try:
                if str(options.get("norequesttimeout", "")).lower() != "true":
                    timeout = _seconds(options.get("servertimeout"))
                with self._lock, _Deadline(self._con, timeout), _reading_types(self._con):
                    rel = kql(
                        self._con,
                        csl,
                        parameters or None,
                        None,
                        self.allow_write,
                        self.clusters,
                        self.entity_groups,
                        options.get("query_now"),
                        functions=self.functions,
                    )
                    names = list(rel.columns)
                    kinds = [kusto_type(t) for t in rel.types]
                    encoded = (
                        None
                        if csl.lstrip().startswith(".")
                        else _json_rows_sql(
                            names, [str(t).upper() for t in rel.types], set(_typed_columns(csl))
                        )
                    )
                    rows = _fetch(rel, encoded)
                    if not isinstance(rows, JsonRows):
                        rows = parse_nested_json(rows, rel.types)
            except Exception as exc:
                raise engine_error(csl, exc, timeout) from None
            if _SHOW_DATABASES.match(csl):
                # The store is attached as a second DuckDB database; clients see only the
                # served one, read-only (anything else named is refused as unknown).
                rows = [(*r[:4], "ReadOnly", *r[5:]) for r in rows if r[0] == self.database]
            return _described(csl, names, kinds, rows)

    class RealmHandler(_Handler):
        disable_nagle_algorithm = True  # headers and body leave at once: no delayed-ACK stall

        def do_POST(self) -> None:  # BaseHTTPRequestHandler's interface
            _handle_post(self, clock)

    return RealmServer()


# --------------------------------------------------------------------------- requests

#: Database names a client sends before it has chosen one, answered from the served
#: database: ``default`` (the ADX web UI) and ``NetDefaultDB`` (azure-kusto-data's
#: default when ``execute(None, ...)`` names none).
DATABASE_ALIASES = ("default", "NetDefaultDB")

_ROUTES = ("/v1/rest/mgmt", "/v1/rest/query", "/v2/rest/query", "/v2/rest/mgmt")
#: Rows per chunk of a streamed response: small enough to start sending at once,
#: large enough that json.dumps, not Python, does the work.
_CHUNK_ROWS = 2000


def _send_error(handler: Any, error: KustoError) -> None:
    handler._send(error.status, error.payload({"service": "ctirealm"}))


def _handle_post(handler: Any, clock: datetime | None) -> None:
    """One POST: Kusto's routes, the database check, options, then a streamed answer."""
    from duckdb_kql.control import is_write_command
    from duckdb_kql.options import read_only_requested
    from duckdb_kql.server import check_options, error_response

    if not handler._is_local():
        handler._send(403, error_response("local connections only"))
        return
    route = handler.path.split("?", 1)[0].rstrip("/")
    if route not in _ROUTES:
        handler._send(404, error_response(f"no route for {handler.path}"))
        return
    try:
        length = int(handler.headers.get("Content-Length", "0") or 0)
        request = json.loads(normalise_request(handler.rfile.read(length) if length else b"", clock) or b"{}")
    except (ValueError, TypeError) as exc:
        handler._send(400, error_response(f"malformed request body: {exc}"))
        return
    if not isinstance(request, dict):
        handler._send(400, error_response("request body must be a JSON object"))
        return
    csl = request.get("csl") or ""
    if not isinstance(csl, str) or not csl.strip():
        handler._send(400, error_response("request has no 'csl' to run"))
        return
    server = handler.kusto
    database = request.get("db")
    if isinstance(database, str) and database and not server.serves(database):
        _send_error(handler, unknown_database(database, server.database))
        return
    properties = request.get("properties") or {}
    options = properties.get("Options") or {} if isinstance(properties, dict) else {}
    options = {str(k).lower(): v for k, v in options.items()} if isinstance(options, dict) else {}
    refusals = check_options(options)
    if refusals:
        handler._send(400, error_response("; ".join(refusals)))
        return
    if read_only_requested(options) and is_write_command(csl):
        _send_error(
            handler,
            KustoError(
                400,
                "General_BadRequest",
                "Kusto.Data.Exceptions.KustoRequestDeniedException",
                "Cannot invoke a control command that writes as this request is read-only "
                "(request_readonly is set)",
            ),
        )
        return
    parameters = properties.get("Parameters") if isinstance(properties, dict) else None
    try:
        result = server.execute(csl, parameters if isinstance(parameters, dict) else None, options)
    except EngineError as exc:
        _send_error(handler, exc.kusto if isinstance(exc, _NotFound) else to_kusto_error(exc, csl))
        return
    request_id = handler.headers.get("x-ms-client-request-id") or str(uuid.uuid4())
    body = _v2_chunks(result, request_id) if route.startswith("/v2/") else _v1_chunks(result)
    _stream(handler, body)


def unknown_database(name: str, served: str) -> KustoError:
    """Kusto's answer to a database it does not have, naming the ones this endpoint has."""
    aliases = " or ".join(repr(a) for a in DATABASE_ALIASES)
    return KustoError(
        400,
        "General_BadRequest",
        "Kusto.Data.Exceptions.EntityNotFoundException",
        f"Entity ID '{name}' of kind 'Database' was not found. This endpoint serves one "
        f"database, '{served}' ({aliases} also reach it).",
    )


def engine_error(kql_text: str, exc: BaseException, timeout: float | None = None) -> EngineError:
    """A failure of duckdb-kql or DuckDB on *kql_text* as the embedded engine names it.

    The same classification `LocalEngine` applies, so a served query fails with
    the message (and line:column) the local engine gives.
    """
    from duckdb_kql import errors as kql_errors
    from duckdb_kql.kusto.exceptions import KustoServiceError as DeadlineError

    from . import local

    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, DeadlineError) or isinstance(exc, duckdb.InterruptException):
        limit = f" of {timeout:g} s" if timeout else ""
        return QueryTimeout(f"query exceeded its time limit{limit} and was stopped", construct="timeout")
    if isinstance(exc, kql_errors.KqlSyntaxError):
        return local._syntax_error(kql_text, exc)
    if isinstance(exc, kql_errors.KqlUnsupportedError):
        return local._unsupported_error(kql_text, exc)
    if isinstance(exc, kql_errors.KqlSchemaError):
        line, column = local._locate(kql_text, exc.name)
        hint = f": {exc.hint}" if exc.hint else ""
        return KqlSemanticError(f"{exc.name!r}{hint}", construct=exc.name, line=line, column=column)
    if isinstance(exc, kql_errors.KqlError):
        return KqlSemanticError(str(exc))
    if isinstance(exc, duckdb.OutOfMemoryException):
        return ResourceLimitExceeded(
            "query needed more memory than the endpoint allows; filter "
            "earlier, project fewer columns, or summarize",
            construct="memory",
        )
    if isinstance(exc, duckdb.PermissionException):
        return ReadOnlyViolation(f"the query tried to reach files or the network: {local._first_line(exc)}")
    if isinstance(exc, (duckdb.BinderException, duckdb.CatalogException)):
        return local._semantic_error(kql_text, exc)
    if isinstance(exc, RecursionError):
        return KqlUnsupportedError("query is nested too deeply", construct="nesting")
    return KqlRuntimeError(local._first_line(exc))


# --------------------------------------------------------------------------- results

#: Conversions Kusto types a column by that DuckDB cannot carry: the store keeps
#: decimals as doubles and guids as text, so ``x = todecimal(...)`` and
#: ``g = toguid(...)``/``new_guid()`` name the columns Kusto would type decimal and guid.
_TYPED_BY = {"todecimal": ("real", "decimal"), "toguid": ("string", "guid"), "new_guid": ("string", "guid")}
_ASSIGNED = re.compile(
    r"(?<![\w.])(\[\s*'[^']+'\s*\]|\[\s*\"[^\"]+\"\s*\]|[A-Za-z_]\w*)\s*=\s*"
    r"(todecimal|toguid|new_guid)\s*\("
)
_LITERALS = re.compile(
    r"//[^\n]*|@'(?:[^']|'')*'|@\"(?:[^\"]|\"\")*\"|'(?:\\.|[^'\\\n])*'|\"(?:\\.|[^\"\\\n])*\""
)


def _typed_columns(csl: str) -> dict[str, str]:
    """``{column: kusto_type}`` for the columns *csl* assigns from a decimal or guid conversion."""
    if "todecimal" not in csl and "guid" not in csl:
        return {}
    # Blank comments and strings (bracketed names keep their quotes: they are names).
    code = _LITERALS.sub(
        lambda m: m.group(0) if m.start() and csl[m.start() - 1] == "[" else " " * len(m.group(0)), csl
    )
    out = {}
    for match in _ASSIGNED.finditer(code):
        name = match.group(1).strip("[] ").strip("'\"")
        out[name] = match.group(2)
    return out


def _described(csl: str, names: list[str], kinds: list[str], rows: list[Any]) -> Result:
    """The result described as Kusto describes it (v1 DataType, CSL ColumnType)."""
    from duckdb_kql.server import _declared_schema

    declared = _declared_schema(csl)
    if declared is not None and len(declared) == len(names):
        columns = [
            RestColumn(d.name, kind, d.data_type, d.column_type)
            for d, kind in zip(declared, kinds, strict=True)
        ]
        return Result(columns, rows)
    typed = _typed_columns(csl)
    columns = []
    for name, kind in zip(names, kinds, strict=True):
        conversion = typed.get(name)
        if conversion is not None and _TYPED_BY[conversion][0] == kind:
            kind = _TYPED_BY[conversion][1]
        columns.append(RestColumn(name, kind, NET_TYPES.get(kind, "String"), kind))
    return Result(columns, rows)


class JsonRows(list[Any]):
    """Rows DuckDB already wrote as JSON arrays (one text per row), ready for the wire."""


#: DuckDB types whose values DuckDB's own JSON writer puts on the wire exactly as
#: Kusto does (json_array(); a JSON column is embedded as it is, a UUID as its text).
_JSON_AS_IS = frozenset(
    {
        "VARCHAR",
        "BOOLEAN",
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "HUGEINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "JSON",
        "UUID",
    }
)
_JSON_TIMESTAMPS = frozenset({"TIMESTAMP", "TIMESTAMP WITH TIME ZONE"})
_JSON_DOUBLES = frozenset({"DOUBLE", "FLOAT"})


def _fetch(rel: duckdb.DuckDBPyRelation, encoded: str | None) -> list[Any]:
    """The rows of *rel*: as JSON text when *encoded* says how, else as Python values."""
    if encoded is not None:
        try:
            return JsonRows(r[0] for r in rel.project(encoded).fetchall())
        except (duckdb.BinderException, duckdb.ConversionException, duckdb.NotImplementedException):
            pass  # a type the projection does not cover after all: Python writes it
    return rel.fetchall()


def _json_rows_sql(names: list[str], types: list[str], retyped: set[str]) -> str | None:
    """A projection writing each row as Kusto's JSON array text, or ``None`` when a
    column needs Python (timespans, nested values, a conversion `_typed_columns` retypes).

    DuckDB serialises a whole result in a fraction of the time Python takes per
    cell, which is what makes a wide table fast to serve.
    """
    if len({n.lower() for n in names}) < len(names):
        return None  # DuckDB resolves names case-insensitively: `user` and `User` are one
    parts = []
    for name, duck in zip(names, types, strict=True):
        column = _quote(name)
        if name in retyped:
            return None
        if duck in _JSON_AS_IS:
            parts.append(column)
        elif duck in _JSON_TIMESTAMPS:
            # Kusto's form: no fraction on a whole second, else all seven tick digits.
            parts.append(
                f"CASE WHEN microsecond({column}) % 1000000 = 0 "
                f"THEN strftime({column}, '%Y-%m-%dT%H:%M:%SZ') "
                f"ELSE strftime({column}, '%Y-%m-%dT%H:%M:%S.%f') || '0Z' END"
            )
        elif duck in _JSON_DOUBLES:
            parts.append(
                f"CASE WHEN isnan({column}) THEN '\"NaN\"'::JSON "
                f"WHEN {column} = 'inf'::DOUBLE THEN '\"Infinity\"'::JSON "
                f"WHEN {column} = '-inf'::DOUBLE THEN '\"-Infinity\"'::JSON "
                f"ELSE to_json({column}) END"
            )
        else:
            return None
    if not parts:
        return None
    return "json_array(" + ", ".join(parts) + ")::VARCHAR"


def _decimal_text(value: Any) -> str:
    if isinstance(value, float):
        value = Decimal(repr(value))
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def _real(value: Any) -> Any:
    """A double as Kusto's JSON carries it: the non-finite ones spelled out."""
    if not isinstance(value, float) or math.isfinite(value):
        return value
    if value != value:
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _datetimes(values: Sequence[Any]) -> list[Any]:
    # The common case (naive UTC datetimes from DuckDB) inline: this runs per cell.
    return [
        (v.isoformat() + ("0Z" if v.microsecond else "Z"))
        if type(v) is datetime and v.tzinfo is None
        else None
        if v is None
        else kusto_datetime(v)
        if isinstance(v, (datetime, date))
        else str(v)
        for v in values
    ]


def _reals(values: Sequence[Any]) -> list[Any]:
    return [v if v is None or (type(v) is float and math.isfinite(v)) else _real(v) for v in values]


def _column_encoder(kind: str) -> Callable[[Sequence[Any]], list[Any]] | None:
    """The conversion a column's values need on the wire; ``None``: json.dumps takes them
    as they are (int, long, bool; string, with `_json_default` for the odd non-text value)."""
    from duckdb_kql.kusto._models import to_wire

    if kind == "datetime":
        return _datetimes
    if kind == "real":
        return _reals
    if kind in ("int", "long", "bool", "string"):
        return None

    def convert(value: Any) -> Any:
        if kind == "timespan" and isinstance(value, timedelta):
            return format_timespan(value)
        if kind == "decimal":
            return _decimal_text(value)
        if kind == "guid":
            return str(value)
        return to_wire(value, kind)  # dynamic, and anything DuckDB surprises us with

    return lambda values: [None if v is None else convert(v) for v in values]


def _json_default(value: Any) -> Any:
    """What json.dumps cannot write itself (bytes, guids, decimals, times in a string column)."""
    from duckdb_kql.kusto._models import to_wire

    if isinstance(value, (datetime, date)):
        return kusto_datetime(value)
    if isinstance(value, timedelta):
        return format_timespan(value)
    if isinstance(value, (bytes, bytearray)):
        return to_wire(value, "string")
    return str(value)


def _wire_rows(result: Result) -> Iterator[list[Any]]:
    """The rows in chunks of `_CHUNK_ROWS`, each value in its wire form.

    Column by column, and only the columns that need a conversion: a wide table of
    strings costs a transpose, not a Python call per cell (which made a 35k x 63
    table take seconds).
    """
    found = [(i, _column_encoder(c.kql)) for i, c in enumerate(result.columns)]
    encoders = [(i, e) for i, e in found if e is not None]
    rows = result.rows
    for start in range(0, len(rows), _CHUNK_ROWS):
        chunk = rows[start : start + _CHUNK_ROWS]
        if not encoders:
            yield chunk
            continue
        columns: list[Sequence[Any]] = list(zip(*chunk, strict=True))
        for i, encode in encoders:
            columns[i] = encode(columns[i])
        yield list(zip(*columns, strict=True))


def _rows_json(result: Result, failed: list[KustoError] | None = None) -> Iterator[bytes]:
    """``[row],[row],...`` (no brackets), chunk by chunk.

    The status line is sent before the rows are written, so a failure while writing
    them is reported as Kusto reports errors in data: a ``{"OneApiErrors": [...]}``
    row (azure-kusto-data raises it as ``KustoMultiApiError``), noted in *failed*.
    """
    first = True
    try:
        if isinstance(result.rows, JsonRows):
            for start in range(0, len(result.rows), _CHUNK_ROWS):
                text = ",".join(result.rows[start : start + _CHUNK_ROWS])
                yield (text if first else "," + text).encode("utf-8")
                first = False
            return
        for chunk in _wire_rows(result):
            if not chunk:
                continue
            text = json.dumps(chunk, ensure_ascii=False, separators=(",", ":"), default=_json_default)[1:-1]
            yield (text if first else "," + text).encode("utf-8")
            first = False
    except Exception as exc:
        error = to_kusto_error(KqlRuntimeError(f"writing the result failed: {exc}"))
        if failed is not None:
            failed.append(error)
        row = json.dumps({"OneApiErrors": [error.payload({"service": "ctirealm"})]})
        yield (row if first else "," + row).encode("utf-8")


def _v1_chunks(result: Result) -> Iterator[bytes]:
    """The v1 envelope, ``{"Tables": [{"TableName", "Columns", "Rows"}]}``, in pieces."""
    columns = []
    for column in result.columns:
        described = {"ColumnName": column.name, "DataType": column.data_type}
        if column.column_type is not None:  # a command that omits the field sends none
            described["ColumnType"] = column.column_type
        columns.append(described)
    head = {"TableName": "Table_0", "Columns": columns}
    yield ('{"Tables":[' + json.dumps(head, ensure_ascii=False)[:-1] + ',"Rows":[').encode()
    yield from _rows_json(result)
    yield b"]}]}"


def _v2_chunks(result: Result, request_id: str) -> Iterator[bytes]:
    """The v2 frames (header, properties, primary result, completion), the rows streamed."""
    from duckdb_kql.server import v2_response

    frames = v2_response(Result(result.columns, []), request_id)
    primary = next(i for i, f in enumerate(frames) if f.get("TableKind") == "PrimaryResult")
    frames[primary]["Columns"] = [
        {"ColumnName": c.name, "ColumnType": c.column_type or c.kql} for c in result.columns
    ]
    yield ("[" + ",".join(json.dumps(f, ensure_ascii=False) for f in frames[:primary]) + ",").encode()
    head = dict(frames[primary])
    del head["Rows"]
    yield (json.dumps(head, ensure_ascii=False)[:-1] + ',"Rows":[').encode()
    failed: list[KustoError] = []
    yield from _rows_json(result, failed)
    if failed:
        frames[-1] = {**frames[-1], "HasErrors": True}
    yield ("]}," + ",".join(json.dumps(f, ensure_ascii=False) for f in frames[primary + 1 :]) + "]").encode()


def _stream(handler: Any, body: Iterator[bytes]) -> None:
    """Send *body* with chunked transfer encoding: the client reads while rows are encoded."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json; charset=utf-8")
    handler.send_header("Transfer-Encoding", "chunked")
    origin = handler._origin_allowed()
    if origin is not None:
        handler.send_header("Access-Control-Allow-Origin", origin)
        handler.send_header("Access-Control-Allow-Credentials", "true")
        handler.send_header("Vary", "Origin")
    handler.end_headers()
    out = handler.wfile
    pending: list[bytes] = []
    size = 0
    for piece in body:
        pending.append(piece)
        size += len(piece)
        if size >= 1 << 18:
            out.write(b"%x\r\n%s\r\n" % (size, b"".join(pending)))
            pending, size = [], 0
    if size:
        out.write(b"%x\r\n%s\r\n" % (size, b"".join(pending)))
    out.write(b"0\r\n\r\n")


# --------------------------------------------------------------------------- schema commands

_NAME_RE = r"(\[\s*'[^']+'\s*\]|\[\s*\"[^\"]+\"\s*\]|'[^']+'|\"[^\"]+\"|[A-Za-z_][\w.-]*)"
# `.show database [DB] schema ...` and `.show databases (DB, ...) schema ...`; a trailing
# `with (Tables=true, ...)` (which entity kinds to list) is accepted: there are only tables.
_DB_SCHEMA = re.compile(
    r"^\.show\s+(?:database(?:\s+(?P<one>" + _NAME_RE[1:-1] + r"))?"
    r"|databases\s*\((?P<many>[^)]*)\))\s+schema"
    r"(?P<details>\s+details)?(?P<json>\s+as\s+json)?"
    r"(?:\s+with\s*\([^)]*\))?\s*$",
    re.IGNORECASE,
)
_DB_CSL = re.compile(rf"^\.show\s+database(?:\s+{_NAME_RE})?\s+cslschema\s*$", re.IGNORECASE)
_TABLE_SCHEMA = re.compile(
    rf"^\.show\s+table\s+{_NAME_RE}\s+(cslschema|schema\s+as\s+json)\s*$", re.IGNORECASE
)
_SHOW_DATABASES = re.compile(r"^\s*\.show\s+databases\s*$", re.IGNORECASE)
_TABLES_DETAILS = re.compile(rf"^\.show\s+(?:tables|table\s+{_NAME_RE})\s+details\s*$", re.IGNORECASE)


def _unquote(name: str) -> str:
    return name.strip().removeprefix("[").removesuffix("]").strip().strip("'\"")


def _csl_name(name: str) -> str:
    """A name as CSL writes it: bare when it can be, else ``['...']``."""
    return name if _NAME.match(name) else "['" + name.replace("'", "\\'") + "']"


def _cols(*spec: tuple[str, str, str | None]) -> list[RestColumn]:
    return [
        RestColumn(name, kind, data_type, column_type)
        for name, kind, data_type, column_type in ((n, k, NET_TYPES[k], ct) for n, k, ct in spec)
    ]


def _schema_command(server: Any, csl: str) -> Result | None:
    """The read-only schema commands Kusto tools send (Kusto Explorer, the web UI, the
    language server), answered from the catalogue; ``None`` for anything else."""
    text = csl.strip()
    if not text.startswith(".show"):
        return None
    database = server.database
    catalog = server.catalog()

    def check_database(name: str | None) -> None:
        if name is not None and not server.serves(_unquote(name)):
            raise _NotFound(unknown_database(_unquote(name), database))

    def table(name: str) -> list[tuple[str, str]]:
        wanted = _unquote(name)
        if wanted not in catalog:
            raise KqlSemanticError(f"unknown table {wanted!r}", construct=wanted)
        return catalog[wanted]

    def csl_schema(columns: list[tuple[str, str]]) -> str:
        return ",".join(f"{_csl_name(c)}:{k}" for c, k in columns)

    def json_table(name: str, columns: list[tuple[str, str]]) -> dict[str, Any]:
        return {
            "Name": name,
            "EntityType": "Table",
            "Folder": "",
            "DocString": "",
            "OrderedColumns": [
                {"Name": c, "Type": KQL_TO_NET.get(k, "System.Object"), "CslType": k} for c, k in columns
            ],
        }

    if match := _DB_SCHEMA.match(text):
        check_database(match.group("one"))
        for name in (match.group("many") or "").split(","):
            check_database(name if name.strip() else None)
        if match.group("json"):
            schema = {
                "Databases": {
                    database: {
                        "Name": database,
                        "Tables": {t: json_table(t, c) for t, c in catalog.items()},
                        "ExternalTables": {},
                        "MaterializedViews": {},
                        "EntityGroups": {},
                        "Functions": {},
                        "PrettyName": None,
                        "MajorVersion": 1,
                        "MinorVersion": 0,
                        "DatabaseAccessMode": "ReadOnly",
                    }
                }
            }
            return Result(_cols(("DatabaseSchema", "string", "string")), [(json.dumps(schema),)])
        # Kusto sends this command's columns without ColumnType (measured by duckdb-kql).
        columns = _cols(
            ("DatabaseName", "string", None),
            ("TableName", "string", None),
            ("ColumnName", "string", None),
            ("ColumnType", "string", None),
            ("IsDefaultTable", "bool", None),
            ("IsDefaultColumn", "bool", None),
            ("PrettyName", "string", None),
            ("Version", "string", None),
        )
        rows: list[tuple[Any, ...]] = [(database, "", "", "", False, False, "", "v1.0")]
        for name, cols in catalog.items():
            rows.append((database, name, "", "", True, False, "", ""))
            rows.extend(
                (database, name, c, KQL_TO_NET.get(k, "System.Object"), True, False, "", "") for c, k in cols
            )
        return Result(columns, rows)
    csl_columns = _cols(
        ("TableName", "string", "string"),
        ("Schema", "string", "string"),
        ("DatabaseName", "string", "string"),
        ("Folder", "string", "string"),
        ("DocString", "string", "string"),
    )
    if match := _DB_CSL.match(text):
        check_database(match.group(1))
        return Result(csl_columns, [(t, csl_schema(c), database, "", "") for t, c in catalog.items()])
    if match := _TABLE_SCHEMA.match(text):
        name = _unquote(match.group(1))
        cols = table(name)
        described = (
            csl_schema(cols) if match.group(2).lower() == "cslschema" else json.dumps(json_table(name, cols))
        )
        return Result(csl_columns, [(name, described, database, "", "")])
    if match := _TABLES_DETAILS.match(text):
        names = [_unquote(match.group(1))] if match.group(1) else list(catalog)
        for name in names:
            table(name)
        with server._lock:
            counts = [server._con.execute(f"SELECT count(*) FROM {_quote(n)}").fetchone()[0] for n in names]
        columns = _cols(
            ("TableName", "string", "string"),
            ("DatabaseName", "string", "string"),
            ("Folder", "string", "string"),
            ("DocString", "string", "string"),
            ("TotalExtents", "long", "long"),
            ("TotalExtentSize", "real", "real"),
            ("TotalOriginalSize", "real", "real"),
            ("TotalRowCount", "long", "long"),
            ("HotExtents", "long", "long"),
            ("HotExtentSize", "real", "real"),
            ("HotOriginalSize", "real", "real"),
            ("HotRowCount", "long", "long"),
            ("AuthorizedPrincipals", "string", "string"),
            ("RetentionPolicy", "string", "string"),
            ("CachingPolicy", "string", "string"),
            ("ShardingPolicy", "string", "string"),
            ("MergePolicy", "string", "string"),
            ("StreamingIngestionPolicy", "string", "string"),
            ("MinExtentsCreationTime", "datetime", "datetime"),
            ("MaxExtentsCreationTime", "datetime", "datetime"),
            ("RowOrderPolicy", "string", "string"),
        )
        # One store file, no extents, caches or policies: sizes are not measured (0).
        rows = [
            (
                n,
                database,
                "",
                "",
                1 if count else 0,
                0.0,
                0.0,
                count,
                1 if count else 0,
                0.0,
                0.0,
                count,
                "[]",
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
            )
            for n, count in zip(names, counts, strict=True)
        ]
        return Result(columns, rows)
    return None


class _NotFound(EngineError):
    """A schema command naming a database this endpoint does not serve."""

    def __init__(self, error: KustoError) -> None:
        super().__init__(error.message)
        self.kusto = error


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
