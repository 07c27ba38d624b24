"""Engine errors: one hierarchy for every engine, each naming where and what.

Agents and users see these messages, so each says the line:column of the
query (when known), the construct at fault, and what to do instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


class EngineError(Exception):
    """Base of every error a query can raise. Catch this to catch them all."""

    kind = "error"

    def __init__(
        self,
        message: str,
        *,
        construct: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.construct = construct
        self.line = line
        self.column = column
        where = f" at {line}:{column}" if line is not None and column is not None else ""
        super().__init__(f"{self.kind}{where}: {message}")


class KqlSyntaxError(EngineError):
    """The text is not valid KQL."""

    kind = "syntax error"


class KqlSemanticError(EngineError):
    """Valid KQL that names something that does not exist: a table, column or function."""

    kind = "semantic error"


class KqlUnsupportedError(EngineError):
    """Valid KQL using a construct this engine does not implement."""

    kind = "unsupported"


class KqlRuntimeError(EngineError):
    """The query failed while running (a bad conversion, an invalid regex, ...)."""

    kind = "runtime error"


class QueryTimeout(EngineError):
    """The query ran longer than its time limit and was interrupted."""

    kind = "timeout"


class ResourceLimitExceeded(EngineError):
    """The query needed more memory than the engine allows."""

    kind = "resource limit"


class ReadOnlyViolation(EngineError):
    """The query tried to change the store, or reach files or the network."""

    kind = "read-only"


# --------------------------------------------------------------------------- Kusto's wire form

#: Kusto's generic error text for a request it refuses (``message`` in its error JSON);
#: clients show ``@message``, which carries the reason.
KUSTO_BAD_REQUEST = "Request is invalid and cannot be executed."

_UNKNOWN = re.compile(r"^unknown (column|table|function) '([^']+)'")
_DUCKDB_COLUMN = re.compile(r'Referenced column "([^"]+)" (?:was )?not found')
_OPERATOR = re.compile(r"\|\s*([A-Za-z][\w-]*)")
_FIRST_WORD = re.compile(r"^\s*([A-Za-z][\w-]*)")


@dataclass(frozen=True)
class KustoError:
    """An `EngineError` as Kusto reports it: HTTP status, ``code``, ``@type``, ``@message``.

    ``error_code`` is the SYN/SEM code Kusto puts in front of a syntax or semantic
    message (and in ``@errorCode``), ``None`` for the other kinds.
    """

    status: int
    code: str
    type: str
    message: str
    error_code: str | None = None

    def payload(self, context: dict[str, Any] | None = None) -> dict[str, Any]:
        """Kusto's error JSON: ``{"error": {"code", "message", "@type", "@message", ...}}``."""
        error: dict[str, Any] = {
            "code": self.code,
            "message": KUSTO_BAD_REQUEST,
            "@type": self.type,
            "@message": self.message,
            "@context": context or {},
            "@permanent": True,
        }
        if self.error_code:
            error["@errorCode"] = self.error_code
            error["@errorMessage"] = self.message.split(f"{self.error_code}: ", 1)[-1]
        return {"error": error}


def _operator_at(kql: str, line: int | None, column: int | None) -> str | None:
    """The query operator whose text holds *line*:*column* (``where`` in ``T | where x``)."""
    if line is None or column is None:
        return None
    lines = kql.split("\n")
    before = "\n".join([*lines[: line - 1], lines[line - 1][: column - 1]]) if line <= len(lines) else kql
    before = before.rsplit(";", 1)[-1]
    pipes = list(_OPERATOR.finditer(before))
    if pipes:
        return pipes[-1].group(1)
    first = _FIRST_WORD.match(before)
    return first.group(1) if first and first.group(1) in ("print", "range", "datatable") else None


def to_kusto_error(error: EngineError, kql: str = "") -> KustoError:
    """*error* in Kusto's terms, so a raw client reads what a cluster would have said.

    Unknown names become Kusto's SEM0100 ("Failed to resolve ...") and SEM0260
    ("Unknown function") messages; other semantic errors keep the engine's text
    under Kusto's ``Semantic error:`` prefix (which azure-kusto-data's
    ``is_semantic_error()`` looks for); syntax errors get ``Syntax error: SYN0002``
    and the position (Kusto's ``[line:position=L:C]``) when known.
    """
    where = (
        f" [line:position={error.line}:{error.column}]"
        if error.line is not None and error.column is not None
        else ""
    )
    if isinstance(error, KqlSyntaxError):
        return KustoError(
            400,
            "General_BadRequest",
            "Kusto.Data.Exceptions.SyntaxException",
            f"Syntax error: SYN0002: {error.message}{where}",
            "SYN0002",
        )
    if isinstance(error, KqlSemanticError):
        unknown = _UNKNOWN.match(error.message)
        duck = _DUCKDB_COLUMN.search(error.message)
        what, name = (
            (unknown.group(1), unknown.group(2))
            if unknown
            else ("column", duck.group(1))
            if duck
            else (None, None)
        )
        operator = _operator_at(kql, error.line, error.column)
        prefix = f"'{operator}' operator: " if operator else ""
        if what == "column":
            text, code = f"{prefix}Failed to resolve scalar expression named '{name}'", "SEM0100"
        elif what == "table":
            text, code = f"{prefix}Failed to resolve table expression named '{name}'", "SEM0100"
        elif what == "function":
            text, code = f"Unknown function: '{name}'.", "SEM0260"
        else:
            text, code = error.message, None
        message = f"Semantic error: {code}: {text}{where}" if code else f"Semantic error: {text}{where}"
        return KustoError(400, "General_BadRequest", "Kusto.Data.Exceptions.SemanticException", message, code)
    if isinstance(error, QueryTimeout):
        return KustoError(
            408,
            "Request_ExecutionTimeout",
            "Kusto.Data.Exceptions.KustoRequestExecutionTimeoutException",
            f"Request execution timeout (E_QUERY_TIMEOUT): {error.message}",
        )
    if isinstance(error, ResourceLimitExceeded):
        return KustoError(
            400,
            "LimitsExceeded",
            "Kusto.Data.Exceptions.KustoServicePartialQueryFailureLowMemoryConditionException",
            "Query execution has exceeded the allowed limits (80DA0001): "
            f"E_LOW_MEMORY_CONDITION: {error.message}",
        )
    if isinstance(error, ReadOnlyViolation):
        # 400, not 403: Kusto keeps 401/403 for credentials, and a client reading 403
        # would report refused credentials instead of the refused write.
        return KustoError(
            400,
            "General_BadRequest",
            "Kusto.Data.Exceptions.KustoRequestDeniedException",
            f"Request is read-only: {error.message}",
        )
    if isinstance(error, KqlUnsupportedError):
        return KustoError(
            400,
            "General_BadRequest",
            "Kusto.Data.Exceptions.KustoBadRequestException",
            f"unsupported KQL construct: {error.message}{where}",
        )
    return KustoError(
        400,
        "General_BadRequest",
        "Kusto.Data.Exceptions.KustoServiceException",
        f"{error.kind}: {error.message}{where}",
    )
