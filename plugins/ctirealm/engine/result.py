"""Query results: typed columns, rows, and the Kusto v1 REST JSON shape."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

#: Kusto type -> the .NET DataType name a v1 response carries.
NET_TYPES = {
    "bool": "Boolean", "int": "Int32", "long": "Int64", "real": "Double",
    "decimal": "Decimal", "string": "String", "datetime": "DateTime",
    "timespan": "TimeSpan", "guid": "Guid", "dynamic": "Object",
}


def format_timespan(value: timedelta) -> str:
    """Kusto's timespan text: ``[-][d.]hh:mm:ss[.fffffff]``."""
    total = value // timedelta(microseconds=1)
    sign = "-" if total < 0 else ""
    total = abs(total)
    seconds, micros = divmod(total, 1_000_000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    text = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    if days:
        text = f"{days}.{text}"
    if micros:
        text += f".{micros:06d}0"
    return sign + text


def format_datetime(value: datetime) -> str:
    """ISO-8601 in UTC with a ``Z``, fractional digits only when present."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def kusto_datetime(value: datetime | date) -> str:
    """A datetime as Kusto writes it in a REST response: UTC, ``Z``, and either no
    fraction (a whole second) or all seven fractional digits of its 100 ns ticks."""
    if not isinstance(value, datetime):
        return f"{value.isoformat()}T00:00:00Z"
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    # isoformat() writes the six microsecond digits only when there are any; the
    # seventh (tick) digit is below what a Python datetime holds.
    return value.isoformat() + ("0Z" if value.microsecond else "Z")


def to_json_value(value: Any) -> Any:
    """A result cell as plain JSON (datetimes and timespans as Kusto text)."""
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return format_timespan(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    return value


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

    def to_kusto_json(self, table_name: str = "Table_0", *,
                      wire_values: bool = False) -> dict[str, Any]:
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
                        {"ColumnName": name, "DataType": NET_TYPES.get(kind, "String"),
                         "ColumnType": kind}
                        for name, kind in self.columns
                    ],
                    "Rows": [[value(v) for v in row] for row in self.rows],
                }
            ]
        }

    def to_json(self) -> str:
        return json.dumps(self.to_kusto_json(), ensure_ascii=False)
