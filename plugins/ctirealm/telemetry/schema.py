"""Table schemas: the 12 tables' ordered columns with Kusto types, and value coercion.

A schema file (``telemetry/schemas/<Table>.json``) names the table's id column
(unique per event, used to trace query results back to events), its time
column, and its columns. Coercion turns a JSON value into what the store keeps
for that Kusto type, or raises ``ValueError`` saying why.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

#: Kusto scalar type -> the DuckDB type the store uses for it. Datetimes are
#: kept as naive UTC TIMESTAMPs (Kusto datetimes are UTC); dynamic as JSON.
DUCKDB_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "guid": "VARCHAR",
    "long": "BIGINT",
    "int": "INTEGER",
    "real": "DOUBLE",
    "decimal": "DOUBLE",
    "bool": "BOOLEAN",
    "datetime": "TIMESTAMP",
    "timespan": "INTERVAL",
    "dynamic": "JSON",
}


class SchemaError(ValueError):
    """A schema file is missing or malformed."""


@dataclass(frozen=True)
class TableSchema:
    """One table: name, ordered ``(column, kusto_type)`` pairs, id and time columns."""

    name: str
    columns: tuple[tuple[str, str], ...]
    id_column: str
    time_column: str
    _types: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._types.update(dict(self.columns))

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]

    def type_of(self, column: str) -> str | None:
        return self._types.get(column)

    @classmethod
    def load(cls, path: Path) -> TableSchema:
        """Read ``<Table>.json``; errors name the file and the field."""
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise SchemaError(f"{path}: schema file not found") from exc
        except json.JSONDecodeError as exc:
            raise SchemaError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
        for key in ("table", "id_column", "time_column", "columns"):
            if key not in doc:
                raise SchemaError(f"{path}: missing field {key!r}")
        columns: list[tuple[str, str]] = []
        for i, entry in enumerate(doc["columns"]):
            if not (isinstance(entry, list) and len(entry) == 2):
                raise SchemaError(f"{path}: columns[{i}] must be [name, kusto_type]")
            name, kusto_type = entry
            if kusto_type not in DUCKDB_TYPES:
                raise SchemaError(
                    f"{path}: columns[{i}] ({name}): unknown Kusto type {kusto_type!r}; "
                    f"expected one of {sorted(DUCKDB_TYPES)}"
                )
            columns.append((name, kusto_type))
        names = [n for n, _ in columns]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise SchemaError(f"{path}: duplicate columns {dup}")
        folded = [n.lower() for n in names]
        if len(set(folded)) != len(folded):
            clash = sorted({n for n in names if folded.count(n.lower()) > 1})
            raise SchemaError(
                f"{path}: columns {clash} differ only in case; the store's identifiers are "
                "case-insensitive, so keep one spelling"
            )
        for key in ("id_column", "time_column"):
            if doc[key] not in names:
                raise SchemaError(f"{path}: {key} {doc[key]!r} is not a column")
        if path.stem != doc["table"]:
            raise SchemaError(f"{path}: table {doc['table']!r} does not match the file name")
        return cls(doc["table"], tuple(columns), doc["id_column"], doc["time_column"])


def load_schemas(directory: Path) -> dict[str, TableSchema]:
    """Every ``<Table>.json`` in *directory*, by table name, in name order."""
    if not directory.is_dir():
        raise SchemaError(f"{directory}: schema directory not found")
    return {p.stem: TableSchema.load(p) for p in sorted(directory.glob("*.json"))}


# -- value coercion -----------------------------------------------------------


def parse_datetime(value: Any) -> datetime:
    """ISO-8601 text -> naive UTC datetime. No offset means UTC, as in Kusto."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        # Kusto writes up to 7 fractional digits; Python takes at most 6.
        if "." in text:
            head, _, rest = text.partition(".")
            digits = len(rest) - len(rest.lstrip("0123456789"))
            frac, tail = rest[:digits], rest[digits:]
            text = f"{head}.{frac[:6].ljust(6, '0')}{tail}" if frac else head + tail
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"not an ISO-8601 datetime: {value!r}") from exc
    else:
        raise ValueError(f"expected an ISO-8601 string, got {type(value).__name__}")
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def parse_timespan(value: Any) -> timedelta:
    """Kusto timespan text (``[d.]hh:mm:ss[.fffffff]``) or seconds -> timedelta."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError(f"expected a timespan string, got {type(value).__name__}")
    text = value.strip()
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    days = 0
    head = text.split(":", 1)[0]
    if "." in head:
        d, _, rest = text.partition(".")
        days, text = int(d), rest
    parts = text.split(":")
    if len(parts) != 3:
        raise ValueError(f"not a timespan: {value!r}")
    hours, minutes, seconds = int(parts[0]), int(parts[1]), float(parts[2])
    return sign * timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def _coerce_int(value: Any, bits: int) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a bool")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        number = int(value.strip())
    else:
        raise ValueError(f"expected an integer, got {value!r}")
    limit = 2 ** (bits - 1)
    if not -limit <= number < limit:
        raise ValueError(f"{number} does not fit in {bits} bits")
    return number


def _coerce_real(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a bool")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"expected a number, got {value!r}")


def _coerce_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"expected true or false, got {value!r}")


def _coerce_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected a string, got {type(value).__name__}")


def _coerce_dynamic(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("dynamic values must be finite")
    return json.dumps(value, ensure_ascii=False, sort_keys=False, separators=(",", ":"))


def coerce(value: Any, kusto_type: str) -> Any:
    """One JSON value -> the Python value the store holds for *kusto_type*.

    ``None`` stays ``None`` (a missing value). Raises ``ValueError`` with the reason.
    """
    if value is None:
        return None
    if kusto_type in ("string", "guid"):
        return _coerce_string(value)
    if kusto_type == "long":
        return _coerce_int(value, 64)
    if kusto_type == "int":
        return _coerce_int(value, 32)
    if kusto_type in ("real", "decimal"):
        return _coerce_real(value)
    if kusto_type == "bool":
        return _coerce_bool(value)
    if kusto_type == "datetime":
        return parse_datetime(value)
    if kusto_type == "timespan":
        return parse_timespan(value)
    if kusto_type == "dynamic":
        return _coerce_dynamic(value)
    raise ValueError(f"unknown Kusto type {kusto_type!r}")


def coerce_row(schema: TableSchema, row: dict[str, Any]) -> tuple[Any, ...]:
    """A row dict -> a tuple in schema order. Raises ``KeyError``/``ValueError`` naming the column."""
    unknown = [k for k in row if schema.type_of(k) is None]
    if unknown:
        raise KeyError(f"column {unknown[0]!r} is not in {schema.name}")
    out = []
    for name, kusto_type in schema.columns:
        try:
            out.append(coerce(row.get(name), kusto_type))
        except ValueError as exc:
            raise ValueError(f"column {name!r} ({kusto_type}): {exc}") from exc
    return tuple(out)
