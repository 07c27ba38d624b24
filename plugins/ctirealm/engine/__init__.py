"""Run KQL: the `Engine` protocol, `LocalEngine` (DuckDB), results and errors.

Every engine is read-only, bounded in time and rows, and raises only
`EngineError` subclasses. Users' own tests call this API directly::

    from ctirealm.engine import LocalEngine
    engine = LocalEngine.from_tables(tables={"T": [{"x": 1}]}, schemas={"T": [("x", "long")]})
    engine.query("T | where x > 0").to_dicts()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

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
from .guard import check_read_only
from .result import QueryResult

if TYPE_CHECKING:
    from ..telemetry.schema import TableSchema
    from .local import LocalEngine


def __getattr__(name: str) -> Any:
    # LocalEngine loads DuckDB and duckdb-kql: only when asked for, so that importing the
    # package (the pytest plugin does, in every run of an environment it is installed in)
    # stays cheap.
    if name == "LocalEngine":
        from .local import LocalEngine

        return LocalEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@runtime_checkable
class Engine(Protocol):
    """What scoring, tools and Sigma evaluation need from an engine."""

    #: The most rows a query returns when it names no limit (scoring lifts it for one query).
    max_rows: int

    def query(self, kql: str, *, limit: int | None = None, timeout: float | None = None) -> QueryResult: ...

    def tables(self) -> list[str]: ...

    def schema(self, table: str) -> list[tuple[str, str]]: ...

    @property
    def schemas(self) -> dict[str, TableSchema]:
        """Every table's schema (id and time columns included), by name."""
        ...


__all__ = [
    "Engine",
    "EngineError",
    "KqlRuntimeError",
    "KqlSemanticError",
    "KqlSyntaxError",
    "KqlUnsupportedError",
    "LocalEngine",
    "QueryResult",
    "QueryTimeout",
    "ReadOnlyViolation",
    "ResourceLimitExceeded",
    "check_read_only",
]
