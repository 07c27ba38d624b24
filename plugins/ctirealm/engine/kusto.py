"""KustoEngine: the `Engine` protocol over azure-kusto-data (Azure Data Explorer, any Kusto REST endpoint).

The same cases run against a cluster (Azure Data Explorer, a Fabric/Synapse
Kusto endpoint, the Kusto emulator, or ``ctirealm serve``) with the same
results, errors and limits as `LocalEngine`:

* **Read-only on our side too.** `check_read_only` refuses control commands
  before anything is sent, and every request carries ``request_readonly``.
* **Clock.** ``now()``/``ago()`` are pinned with the ``query_now`` client
  request property to the dataset's clock, so ``ago(1d)`` means the same day
  on every engine.
* **Limits.** The time limit is the ``servertimeout`` request property (the
  client waits a little longer, then gives up); the row limit appends
  ``| take <limit + 1>`` so a cut result is reported as truncated.
* **Errors.** `KustoServiceError` and friends become the engine's own errors
  (`KqlSyntaxError`, `KqlSemanticError`, `QueryTimeout`, ...) by the service's
  error code, type and message.

Connection: ``kusto://HOST[:PORT]/DATABASE`` (https, or http for a loopback
host), an ``https://`` or loopback ``http://`` URL with the database as its
path, or ``$CTIREALM_KUSTO_URL``. Authentication, in order: an application
key (``$CTIREALM_KUSTO_CLIENT_ID``, ``..._SECRET``, ``..._TENANT``), none for
a loopback endpoint, else azure-identity's ``DefaultAzureCredential`` chain
(environment, workload identity, managed identity, Azure CLI, ...).
Install with the ``kusto`` extra.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from ..telemetry.schema import TableSchema, parse_datetime, parse_timespan
from ..telemetry.values import format_datetime
from . import rewrite
from .errors import (
    EngineError,
    KqlRuntimeError,
    KqlSemanticError,
    KqlSyntaxError,
    KqlUnsupportedError,
    QueryTimeout,
    ReadOnlyViolation,
    ResourceLimitExceeded,
)
from .guard import check_query_text, check_read_only
from .result import QueryResult

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_ROWS = 100_000
#: Longest query text sent (as LocalEngine: a megabyte of KQL is an indicator dump, not a query).
ENV_URL = "CTIREALM_KUSTO_URL"
ENV_CLIENT_ID = "CTIREALM_KUSTO_CLIENT_ID"
ENV_CLIENT_SECRET = "CTIREALM_KUSTO_CLIENT_SECRET"
ENV_TENANT = "CTIREALM_KUSTO_TENANT"

#: Kusto type names as clients and the service spell them -> the engine's names.
_TYPE_ALIASES = {
    "boolean": "bool",
    "sbyte": "bool",
    "int32": "int",
    "int64": "long",
    "double": "real",
    "float": "real",
    "date": "datetime",
    "time": "timespan",
    "uniqueid": "guid",
    "object": "dynamic",
    "system.string": "string",
    "system.int64": "long",
    "system.int32": "int",
    "system.double": "real",
    "system.boolean": "bool",
    "system.datetime": "datetime",
    "system.timespan": "timespan",
    "system.guid": "guid",
    "system.object": "dynamic",
    "system.data.sqltypes.sqldecimal": "decimal",
}
_KNOWN_TYPES = frozenset(
    {"string", "long", "int", "real", "decimal", "bool", "datetime", "timespan", "guid", "dynamic"}
)


# --------------------------------------------------------------------------- connection


@dataclass(frozen=True)
class KustoTarget:
    """Where a Kusto database lives: the cluster URL, the database, and whether it is on loopback."""

    url: str
    database: str
    loopback: bool

    def __str__(self) -> str:
        return f"{self.url}/{self.database}"


def is_loopback(host: str) -> bool:
    """Whether *host* names this machine only (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_kusto_url(text: str | None = None, database: str | None = None) -> KustoTarget:
    """``kusto://HOST[:PORT]/DATABASE`` (or an http(s) URL) -> `KustoTarget`.

    *text* ``None``, ``""`` or ``"kusto"`` reads ``$CTIREALM_KUSTO_URL``.
    *database* overrides the URL's path. https is used unless the host is a
    loopback address; plain http is refused for any other host.
    """
    raw = (text or "").strip()
    if raw in ("", "kusto", "kusto:", "kusto://"):
        raw = os.environ.get(ENV_URL, "").strip()
        if not raw:
            raise ValueError(f"no Kusto endpoint: give kusto://HOST[:PORT]/DATABASE or set ${ENV_URL}")
    if "://" not in raw:
        raise ValueError(f"{raw!r} is not a Kusto URL; expected kusto://HOST[:PORT]/DATABASE")
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in ("kusto", "https", "http"):
        raise ValueError(
            f"{raw!r}: unknown scheme {parts.scheme!r}; use kusto://, https:// or http:// (loopback only)"
        )
    host = parts.hostname
    if not host:
        raise ValueError(f"{raw!r}: no host; expected kusto://HOST[:PORT]/DATABASE")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{raw!r}: invalid port") from exc
    loopback = is_loopback(host)
    if scheme == "http" and not loopback:
        raise ValueError(f"{raw!r}: plain http is allowed for loopback endpoints only; use https")
    if scheme == "kusto":
        scheme = "http" if loopback else "https"
    name = (database or parts.path.strip("/") or "").strip()
    if not name:
        raise ValueError(f"{raw!r}: no database; expected kusto://HOST[:PORT]/DATABASE")
    if "/" in name:
        raise ValueError(f"{raw!r}: the path must be one database name, got {name!r}")
    shown = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{shown}" + (f":{port}" if port else "")
    return KustoTarget(url, name, loopback)


def connection_builder(target: KustoTarget, *, credential: Any = None) -> Any:
    """The azure-kusto-data connection string builder for *target*, with authentication.

    An application key from the environment wins; a loopback endpoint needs
    none; anything else uses *credential* or ``DefaultAzureCredential()``.
    """
    from azure.kusto.data import KustoConnectionStringBuilder

    values = {
        name: os.environ.get(name, "").strip() for name in (ENV_CLIENT_ID, ENV_CLIENT_SECRET, ENV_TENANT)
    }
    if any(values.values()):
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise ValueError(f"application key authentication needs {', '.join(missing)} too")
        return KustoConnectionStringBuilder.with_aad_application_key_authentication(
            target.url, values[ENV_CLIENT_ID], values[ENV_CLIENT_SECRET], values[ENV_TENANT]
        )
    if credential is None and target.loopback:
        return KustoConnectionStringBuilder.with_no_authentication(target.url)
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return KustoConnectionStringBuilder.with_azure_token_credential(target.url, credential)


def make_client(target: KustoTarget, *, credential: Any = None) -> Any:
    """An azure-kusto-data `KustoClient` for *target*."""
    from azure.kusto.data import KustoClient

    return KustoClient(connection_builder(target, credential=credential))


# --------------------------------------------------------------------------- values


def kusto_type_name(name: str | None) -> str:
    """A column type as the service or client names it -> one of the engine's Kusto types."""
    text = (name or "string").strip().lower()
    text = _TYPE_ALIASES.get(text, text)
    return text if text in _KNOWN_TYPES else "string"


def convert_value(value: Any, kind: str) -> Any:
    """One wire value -> the Python value `LocalEngine` returns for the same Kusto type."""
    if value is None:
        return None
    try:
        if kind == "datetime":
            moment = value if isinstance(value, datetime) else parse_datetime(str(value))
            if moment.tzinfo is None:
                return moment.replace(tzinfo=UTC)
            return moment.astimezone(UTC)
        if kind == "timespan":
            return value if isinstance(value, timedelta) else parse_timespan(str(value))
        if kind == "decimal":
            return value if isinstance(value, Decimal) else Decimal(str(value))
        if kind == "real":
            if isinstance(value, str):
                return float(value)  # "NaN", "Infinity"
            return float(value)
        if kind in ("long", "int") and isinstance(value, str):
            return int(value)
        if kind in ("guid", "string") and not isinstance(value, str):
            return str(value)
        if kind == "bool" and isinstance(value, int):
            return bool(value)
    except (TypeError, ValueError, ArithmeticError):
        return value
    return value


# --------------------------------------------------------------------------- errors

_WHERE = re.compile(
    r"\bat (?:line )?(\d+):(\d+)\b|\bline:? ?(\d+),? (?:column|position|pos):? ?(\d+)", re.IGNORECASE
)
_COLUMN = re.compile(
    r'Referenced column "([^"]+)" not found|Column "([^"]+)" referenced that exists'
    r"|Failed to resolve (?:scalar expression|column or scalar expression) named '([^']+)'"
    r"|Failed to resolve column named '([^']+)'"
)
_TABLE = re.compile(
    r"Table with name (\S+) does not exist"
    r"|Failed to resolve table (?:or column )?(?:expression )?named '([^']+)'"
)
_FUNCTION = re.compile(
    r"Function with name (\S+) does not exist|Unknown function: '([^']+)'"
    r"|function:([A-Za-z_]\w*)"
)
_TIMEOUT = re.compile(
    r"time ?out|timed out|deadline|interrupt|E_QUERY_TIMEOUT|"
    r"exceeded the allowed (?:time|duration)",
    re.IGNORECASE,
)
_MEMORY = re.compile(
    r"E_LOW_MEMORY_CONDITION|E_RUNAWAY_QUERY|out of memory|memory limit|"
    r"E_QUERY_RESULT_SET_TOO_LARGE|80DA0003|80DA0001|low memory",
    re.IGNORECASE,
)
_READ_ONLY = re.compile(
    r"writes are disabled|request is read-only|request_readonly|"
    r"Cannot invoke a control command|external access|Permission Error",
    re.IGNORECASE,
)
_SYNTAX = re.compile(r"SyntaxException|SYN0\d+|Syntax error|could not parse KQL|parse error", re.IGNORECASE)
_SEMANTIC = re.compile(
    r"SemanticException|SEM0\d+|Failed to resolve|Binder Error|Catalog Error|"
    r"does not exist|not found|General_DatabaseNotFound|unknown (?:table|column)",
    re.IGNORECASE,
)
_UNSUPPORTED = re.compile(r"unsupported KQL construct|is not supported|not implemented", re.IGNORECASE)


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0] if text else text


def _where(text: str) -> tuple[int | None, int | None]:
    match = _WHERE.search(text)
    if not match:
        return None, None
    groups = [g for g in match.groups() if g is not None]
    line, column = int(groups[0]), int(groups[1])
    return line, column + (1 if "could not parse" in text.lower() else 0)


def _locate(kql: str, name: str) -> tuple[int | None, int | None]:
    from .local import _locate as locate

    return locate(kql, name)


def classify_error(text: str, kql: str) -> EngineError:
    """A service error message (code, type and text joined) -> the engine's error for it."""
    message = _first_line(text) or "the query failed"
    if _READ_ONLY.search(text):
        return ReadOnlyViolation(f"the endpoint refused a write or external access: {message}")
    if _MEMORY.search(text):
        return ResourceLimitExceeded(
            f"query needed more memory or result space than the endpoint allows ({message}); "
            "filter earlier, project fewer columns, or summarize",
            construct="memory",
        )
    if _TIMEOUT.search(text):
        return QueryTimeout(f"query exceeded its time limit and was stopped ({message})", construct="timeout")
    function = _FUNCTION.search(text)
    if function and (_UNSUPPORTED.search(text) or "does not exist" in text or "Unknown function" in text):
        name = next(g for g in function.groups() if g)
        line, column = _locate(kql, name)
        if not rewrite.is_kusto_function(name):
            return KqlSemanticError(
                f"unknown function {name!r}: Kusto has no function of that name",
                construct=name,
                line=line,
                column=column,
            )
        return KqlUnsupportedError(
            f"function {name!r} is not available on this endpoint", construct=name, line=line, column=column
        )
    if _SYNTAX.search(text):
        line, column = _where(text)
        return KqlSyntaxError(message, line=line, column=column)
    if _UNSUPPORTED.search(text):
        construct = re.search(r'construct "([^"]+)"', text)
        return KqlUnsupportedError(message, construct=construct.group(1) if construct else None)
    for pattern, what in ((_COLUMN, "column"), (_TABLE, "table")):
        match = pattern.search(text)
        if match:
            name = next(g for g in match.groups() if g).strip('"!')
            line, column = _locate(kql, name)
            return KqlSemanticError(f"unknown {what} {name!r}", construct=name, line=line, column=column)
    if _SEMANTIC.search(text):
        return KqlSemanticError(message)
    return KqlRuntimeError(message)


def _service_text(exc: BaseException) -> str:
    """Everything a Kusto exception says: code, type, message, description."""
    parts: list[str] = []
    api = getattr(exc, "get_api_error", None)
    errors = [api()] if callable(api) else []
    many = getattr(exc, "get_api_errors", None)
    if callable(many):
        errors.extend(many())
    for error in errors:
        for field_name in ("description", "message", "code", "type"):
            value = getattr(error, field_name, None)
            if value:
                parts.append(str(value))
    text = getattr(exc, "message_text", None) or str(exc)
    parts.append(str(text))
    return "\n".join(dict.fromkeys(p for p in parts if p))


# --------------------------------------------------------------------------- the engine


class KustoEngine:
    """Runs KQL on a Kusto database over REST, read-only, with the engine's limits and errors.

    Build one with `KustoEngine.connect` (from a ``kusto://`` URL) or pass an
    azure-kusto-data client. *schemas* (normally the local telemetry schemas)
    give every table's id and time columns; without them the catalogue is read
    from the endpoint. *now* pins ``now()``/``ago()``.
    """

    def __init__(
        self,
        client: Any,
        database: str,
        *,
        schemas: Mapping[str, TableSchema] | None = None,
        now: datetime | str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_rows: int = DEFAULT_MAX_ROWS,
        target: KustoTarget | None = None,
    ) -> None:
        self._client = client
        self.database = database
        self.target = target
        self._schemas: dict[str, TableSchema] | None = dict(schemas) if schemas is not None else None
        self.now = parse_datetime(now) if now is not None else None
        self.timeout = timeout
        self.max_rows = max_rows
        #: A cluster (not a loopback test endpoint) also gets ``set notruncation``: the row
        #: limit is ours (``take``), and Kusto's 64 MB result cap would fail wide results.
        self.notruncation = target is not None and not target.loopback

    @classmethod
    def connect(
        cls,
        url: str | None = None,
        *,
        database: str | None = None,
        schemas: Mapping[str, TableSchema] | None = None,
        now: datetime | str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_rows: int = DEFAULT_MAX_ROWS,
        credential: Any = None,
    ) -> KustoEngine:
        """An engine on ``kusto://HOST[:PORT]/DATABASE`` (``None``: ``$CTIREALM_KUSTO_URL``)."""
        target = parse_kusto_url(url, database)
        try:
            client = make_client(target, credential=credential)
        except ImportError as exc:
            raise ImportError(
                f"the Kusto engine needs azure-kusto-data (pip install 'ctirealm[kusto]'): {exc}"
            ) from exc
        return cls(
            client,
            target.database,
            schemas=schemas,
            now=now,
            timeout=timeout,
            max_rows=max_rows,
            target=target,
        )

    # -- catalogue ------------------------------------------------------------

    def _catalogue(self) -> dict[str, TableSchema]:
        if self._schemas is None:
            schemas: dict[str, TableSchema] = {}
            names = [str(row[0]) for row in self._management(".show tables")]
            for name in sorted(names):
                quoted = "['" + name.replace("\\", "\\\\").replace("'", "\\'") + "']"
                result = self.query(f"{quoted} | getschema", limit=10_000)
                columns = tuple(
                    (str(r[0]), kusto_type_name(str(r[3] if len(r) > 3 else r[2]))) for r in result.rows
                )
                if columns:
                    first = columns[0][0]
                    time_column = next((c for c, t in columns if t == "datetime"), first)
                    schemas[name] = TableSchema(name, columns, first, time_column)
            self._schemas = schemas
        return self._schemas

    def tables(self) -> list[str]:
        """Table names, sorted."""
        return sorted(self._catalogue())

    def schema(self, table: str) -> list[tuple[str, str]]:
        """``(column, kusto_type)`` pairs of *table*; `KqlSemanticError` if unknown."""
        catalogue = self._catalogue()
        if table not in catalogue:
            raise KqlSemanticError(
                f"unknown table {table!r}; tables are: {', '.join(self.tables())}", construct=table
            )
        return list(catalogue[table].columns)

    @property
    def schemas(self) -> dict[str, TableSchema]:
        """Every table's schema (id and time columns included), by name."""
        return dict(self._catalogue())

    def table_schema(self, table: str) -> TableSchema:
        self.schema(table)
        return self._catalogue()[table]

    # -- queries --------------------------------------------------------------

    def _properties(self, seconds: float | None) -> Any:
        from azure.kusto.data import ClientRequestProperties

        properties = ClientRequestProperties()
        if seconds is not None:
            properties.set_option(
                ClientRequestProperties.request_timeout_option_name, timedelta(seconds=max(0.001, seconds))
            )
        if self.now is not None:
            properties.set_option("query_now", format_datetime(self.now))
        properties.set_option("request_readonly", True)
        return properties

    def _management(self, command: str) -> list[list[Any]]:
        """A read-only management command of ours (never agent text), e.g. the schema."""
        try:
            response = self._client.execute_mgmt(self.database, command)
        except Exception as exc:
            raise self._error(exc, command, None, 0.0) from None
        return [list(row.to_list()) for row in response.primary_results[0]]

    def query(self, kql: str, *, limit: int | None = None, timeout: float | None = None) -> QueryResult:
        """Run *kql*. At most *limit* rows (default: the engine's ``max_rows``) come back."""
        check_query_text(kql)
        check_read_only(kql)
        cap = self.max_rows if limit is None else max(0, min(int(limit), self.max_rows))
        seconds = self.timeout if timeout is None else float(timeout)
        body = kql.rstrip().rstrip(";").rstrip()
        text = f"{body}\n| take {cap + 1}"
        if self.notruncation:
            text = "set notruncation;\n" + text
        started = time.perf_counter()
        try:
            response = self._client.execute_query(self.database, text, self._properties(seconds))
            primary = list(response.primary_results)
        except Exception as exc:
            raise self._error(exc, kql, seconds, time.perf_counter() - started) from None
        elapsed = time.perf_counter() - started
        if not primary:
            return QueryResult([], [], elapsed=elapsed)
        table = primary[0]
        columns = [(c.column_name, kusto_type_name(c.column_type)) for c in table.columns]
        raw = table.raw_rows if isinstance(table.raw_rows, list) else [r.to_list() for r in table]
        truncated = len(raw) > cap
        rows = [
            tuple(convert_value(v, kind) for v, (_, kind) in zip(row, columns, strict=True))
            for row in raw[:cap]
        ]
        return QueryResult(columns, rows, truncated=truncated, elapsed=elapsed)

    def _error(self, exc: BaseException, kql: str, seconds: float | None, elapsed: float) -> EngineError:
        if isinstance(exc, EngineError):
            return exc
        name = type(exc).__name__
        text = _service_text(exc)
        status = getattr(getattr(exc, "http_response", None), "status_code", None)
        if name == "KustoNetworkError" or (name.endswith(("ConnectionError", "Timeout"))):
            if seconds is not None and elapsed >= seconds:
                return QueryTimeout(
                    f"query exceeded its time limit of {seconds:g} s and was stopped", construct="timeout"
                )
            where = self.target or self.database
            return EngineError(f"cannot reach the Kusto endpoint {where}: {_first_line(text)}")
        if status in (401, 403) and "Forbidden" not in text.split("\n", 1)[0]:
            return EngineError(f"the Kusto endpoint refused the credentials ({status}): {_first_line(text)}")
        if name == "KustoAuthenticationError":
            return EngineError(f"authentication to the Kusto endpoint failed: {_first_line(text)}")
        if name == "KustoThrottlingError":
            return KqlRuntimeError("the Kusto endpoint throttled the request; retry later")
        error = classify_error(text, kql)
        if not isinstance(error, (QueryTimeout, ResourceLimitExceeded)):
            error = self._local_diagnosis(kql, error)
        if isinstance(error, QueryTimeout) and seconds is not None:
            error = QueryTimeout(
                f"query exceeded its time limit of {seconds:g} s and was stopped", construct="timeout"
            )
        return error

    def _local_diagnosis(self, kql: str, error: EngineError) -> EngineError:
        """The local translator's message for a query the endpoint rejected, when it agrees.

        Agents see the same line:column and wording on every engine; the
        endpoint stays the authority on whether the query failed.
        """
        if not self._schemas:
            return error
        from .local import translate_kql

        rewrite.ensure_installed()  # translating without a LocalEngine: the rewrites are ours to install
        try:
            translate_kql(kql, schema={t: s.column_names for t, s in self._schemas.items()}, now=self.now)
        except (QueryTimeout, ResourceLimitExceeded):
            return error
        except EngineError as local:
            return local
        return error

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> KustoEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "KustoEngine",
    "KustoTarget",
    "classify_error",
    "connection_builder",
    "convert_value",
    "is_loopback",
    "kusto_type_name",
    "make_client",
    "parse_kusto_url",
]
