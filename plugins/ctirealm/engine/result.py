"""Query results: typed columns, rows, the Kusto v1 REST JSON shape, and the JSON values
nested in DuckDB lists, structs and maps, parsed."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..telemetry.values import kusto_datetime, to_json_value

#: Kusto type -> the .NET DataType name a v1 response carries.
NET_TYPES = {
    "bool": "Boolean",
    "int": "Int32",
    "long": "Int64",
    "real": "Double",
    "decimal": "Decimal",
    "string": "String",
    "datetime": "DateTime",
    "timespan": "TimeSpan",
    "guid": "Guid",
    "dynamic": "Object",
}


def _wire_value(value: Any) -> Any:
    """A cell as Kusto's REST JSON carries it: datetimes with their ticks, decimals as text."""
    if isinstance(value, datetime):
        return kusto_datetime(value)
    if isinstance(value, Decimal):
        return str(value)
    return to_json_value(value)


@dataclass
class QueryResult:
    """One tabular result.

    ``columns`` are ``(name, kusto_type)`` pairs; ``rows`` are tuples of Python
    values (datetimes UTC-aware, dynamic values parsed from JSON);
    ``truncated`` says the row limit cut the result short.
    """

    columns: list[tuple[str, str]]
    rows: list[tuple[Any, ...]]
    truncated: bool = False
    elapsed: float = 0.0
    sql: str | None = field(default=None, repr=False)

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]

    def __len__(self) -> int:
        return len(self.rows)

    def to_dicts(self) -> list[dict[str, Any]]:
        names = self.column_names
        return [dict(zip(names, row, strict=True)) for row in self.rows]

    def to_kusto_json(self, table_name: str = "Table_0", *, wire_values: bool = False) -> dict[str, Any]:
        """The v1 REST response shape: ``{"Tables": [{"TableName", "Columns", "Rows"}]}``.

        *wire_values* writes values exactly as a Kusto response does (datetimes with
        seven tick digits, decimals as text); otherwise as `to_json_value` (what tools
        show agents).
        """
        value = _wire_value if wire_values else to_json_value
        return {
            "Tables": [
                {
                    "TableName": table_name,
                    "Columns": [
                        {"ColumnName": name, "DataType": NET_TYPES.get(kind, "String"), "ColumnType": kind}
                        for name, kind in self.columns
                    ],
                    "Rows": [[value(v) for v in row] for row in self.rows],
                }
            ]
        }

    def to_json(self) -> str:
        return json.dumps(self.to_kusto_json(), ensure_ascii=False)


def parse_nested_json(rows: list[Any], types: Sequence[Any]) -> list[Any]:
    """*rows* with the JSON values nested in lists, structs and maps of *types* (DuckDB types)
    parsed, as `LocalEngine` returns them; rows pass unchanged when no column nests JSON."""
    nested = [(i, decode) for i, t in enumerate(types) if (decode := nested_json(t)) is not None]
    if not nested:
        return rows
    out = []
    for row in rows:
        values = list(row)
        for i, decode in nested:
            if values[i] is not None:
                values[i] = decode(values[i])
        out.append(tuple(values))
    return out


def _json_text(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def nested_json(duck_type: Any) -> Callable[[Any], Any] | None:
    """A function parsing the JSON values nested in a value of *duck_type* (a DuckDB type),
    or None when the type nests none. A top-level JSON column is not nested."""
    kind = getattr(duck_type, "id", None)
    if kind not in ("list", "array", "struct", "map"):
        return None
    parts: list[tuple[str, Callable[[Any], Any] | None]] = []
    for name, child in duck_type.children:
        parts.append((name, _json_text if str(child) == "JSON" else nested_json(child)))
    if all(decode is None for _, decode in parts):
        return None
    if kind in ("list", "array"):
        element = parts[0][1]
        assert element is not None
        return lambda value: [None if v is None else element(v) for v in value]
    if kind == "map":
        key, item = parts[0][1] or (lambda v: v), parts[1][1] or (lambda v: v)
        return lambda value: {key(k): None if v is None else item(v) for k, v in value.items()}
    fields = {name: decode for name, decode in parts if decode is not None}

    def struct(value: dict[str, Any]) -> dict[str, Any]:
        return {k: fields[k](v) if k in fields and v is not None else v for k, v in value.items()}

    return struct
