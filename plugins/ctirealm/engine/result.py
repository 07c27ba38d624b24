"""Query results: typed columns, rows, and the Kusto v1 REST JSON shape."""

from __future__ import annotations

import json
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
