"""Engine errors: one hierarchy for every engine, each naming where and what.

Agents and users see these messages, so each says the line:column of the
query (when known), the construct at fault, and what to do instead.
"""

from __future__ import annotations


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
