"""Reading event files (JSONL) with validation: every problem names file, line and column."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .schema import TableSchema, coerce_row


class TelemetryFormatError(ValueError):
    """An event file breaks the format; the message names file, line and field."""

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.detail = message
        where = f"{path}:{line}" if line else f"{path}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class FileProblem:
    """A telemetry file left out of the store, and why.

    *path* is relative to the dataset folder; *kind* is ``attack``, ``hard_negative``
    (the folder the file came from), ``schema`` (a schema file that did not load) or
    ``scenario`` (a scenario file that did not load or play; *group* is its case).
    A store built leniently keeps these in its metadata, so every process that opens
    it (pytest-xdist workers too) can name the file and line to whoever is affected.
    """

    path: str
    line: int | None
    kind: str
    table: str
    group: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}" if self.line else f"{self.path}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "line": self.line,
            "kind": self.kind,
            "table": self.table,
            "group": self.group,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileProblem:
        return cls(
            str(data["path"]),
            data.get("line"),
            str(data["kind"]),
            str(data["table"]),
            str(data.get("group", "")),
            str(data["message"]),
        )


@dataclass(frozen=True)
class Event:
    """One validated row: its raw JSON object, coerced values in schema order, and id."""

    table: str
    event_id: str
    raw: dict[str, Any]
    values: tuple[Any, ...]
    path: str
    line: int


def read_events(
    path: Path,
    schema: TableSchema,
    *,
    window: tuple[datetime, datetime] | None = None,
) -> Iterator[Event]:
    """Validate and yield every row of one ``<Table>.jsonl`` file.

    Checks: each line is a JSON object, keys are columns of *schema*, values
    coerce to the column types, the id column is present, and the time column
    (when *window* is given) lies inside the window.
    """
    id_index = schema.column_names.index(schema.id_column)
    time_index = schema.column_names.index(schema.time_column)
    try:
        handle = path.open("r", encoding="utf-8")
    except OSError as exc:
        raise TelemetryFormatError(path, None, f"cannot read: {exc.strerror}") from exc
    with handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                hint = " (truncated line?)" if not text.endswith("\n") else ""
                raise TelemetryFormatError(
                    path, number, f"invalid JSON at column {exc.colno}: {exc.msg}{hint}"
                ) from None
            if not isinstance(row, dict):
                raise TelemetryFormatError(path, number, "each line must be a JSON object")
            try:
                values = coerce_row(schema, row)
            except KeyError as exc:
                raise TelemetryFormatError(path, number, exc.args[0]) from None
            except ValueError as exc:
                raise TelemetryFormatError(path, number, str(exc)) from None
            if values[id_index] is None:
                raise TelemetryFormatError(path, number, f"missing id column {schema.id_column!r}")
            moment = values[time_index]
            if window is not None:
                if moment is None:
                    raise TelemetryFormatError(path, number, f"missing time column {schema.time_column!r}")
                if not window[0] <= moment < window[1]:
                    raise TelemetryFormatError(
                        path,
                        number,
                        f"column {schema.time_column!r}: {moment.isoformat()}Z is outside the "
                        f"dataset window {window[0].isoformat()}Z .. {window[1].isoformat()}Z",
                    )
            yield Event(schema.name, str(values[id_index]), row, values, str(path), number)
