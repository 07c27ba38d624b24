"""Kusto's text for values: timespans, datetimes (as results and as REST responses write
them) and result cells as plain JSON. The store writes its metadata with them, attribution
compares cells through them, and the engines return them."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any


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
