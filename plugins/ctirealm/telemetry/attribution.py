"""Tracing query result rows to the stored events they show, by id column.

A result row names an event when it carries the id column of a table the query
reads, by name (``ReportId``) or join-suffixed (``ReportId1``), holding an id of
that table's events. A value in such a column that is no event id of the tables
read (an aggregate, a made-up number) names nothing. Tables sharing an id column
(``AuditId`` in AKSAudit and AKSAuditAdmin) are told apart by preference (the
events a caller expects), then by the labels. Detection scoring and the rules
gate both attribute rows this way; what they make of the events differs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .labels import Labels
from .schema import TableSchema

_SUFFIX = re.compile(r"^(.*?)(\d+)$")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Ids looked up per query when checking that unlabelled values are events.
_CHUNK = 5000


def canonical(value: Any) -> str:
    """A value as comparable text: strings stripped, structures as sorted compact JSON."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    if hasattr(value, "isoformat"):
        from ..engine.result import to_json_value

        return str(to_json_value(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def tables_in(kql: str, known: Iterable[str]) -> list[str]:
    """Known table names used as identifiers in *kql* (string literals and comments skipped)."""
    text = re.sub(r"//[^\n]*", " ", kql)
    text = re.sub(r'@?"(?:[^"\\\n]|\\.)*"|@?\'(?:[^\'\\\n]|\\.)*\'', " ", text)
    names = set(_IDENT.findall(text))
    return [t for t in known if t in names]


def id_families(schemas: Mapping[str, TableSchema]) -> dict[str, list[str]]:
    """Id column name -> the tables that use it, in name order."""
    families: dict[str, list[str]] = {}
    for name, schema in sorted(schemas.items()):
        families.setdefault(schema.id_column, []).append(name)
    return families


def id_columns(columns: Iterable[str], families: Mapping[str, list[str]]) -> dict[str, str]:
    """Result column -> the id column it holds (``ReportId1`` -> ``ReportId``)."""
    out = {}
    for column in columns:
        if column in families:
            out[column] = column
            continue
        match = _SUFFIX.match(column)
        if match and match.group(1) in families:
            out[column] = match.group(1)
    return out


def fetch_events(
    engine: Any, schemas: Mapping[str, TableSchema], ids: Mapping[str, Iterable[str]],
    *, ids_only: bool = False,
) -> list[dict[str, Any]]:
    """The rows of the given events (``{table: ids}``), each with ``__table__``/``__id__``."""
    rows = []
    for table, wanted in sorted(ids.items()):
        schema = schemas[table]
        is_number = schema.type_of(schema.id_column) in ("long", "int")
        values = tuple(w for w in wanted if w.lstrip("-").isdigit()) if is_number else tuple(wanted)
        if not values:
            continue
        literals = ", ".join(w if is_number else
                             "'" + w.replace("\\", "\\\\").replace("'", "\\'") + "'"
                             for w in values)
        project = f" | project {schema.id_column}" if ids_only else ""
        result = engine.query(f"{table} | where {schema.id_column} in ({literals}){project}",
                              limit=len(values) + 1)
        for row in result.to_dicts():
            row["__table__"], row["__id__"] = table, canonical(row[schema.id_column])
            rows.append(row)
    return rows


@dataclass
class Traced:
    """Rows traced to events: the id columns found, and per row the ``(table, id)`` it names."""

    #: The tables read, and those of them whose id column the result carries.
    tables: list[str]
    traceable: list[str]
    #: Result column -> the id column it holds.
    id_columns: dict[str, str]
    events: list[list[tuple[str, str]]]

    def by_table(self) -> dict[str, list[str]]:
        """Every named event id, by table, in first-seen order."""
        out: dict[str, list[str]] = {}
        for row in self.events:
            for table, event_id in row:
                ids = out.setdefault(table, [])
                if event_id not in ids:
                    ids.append(event_id)
        return out


def trace(
    kql: str, columns: list[str], rows: list[dict[str, Any]], engine: Any,
    schemas: Mapping[str, TableSchema], labels: Labels,
    *, prefer: Iterable[tuple[str, str]] = (), tables: list[str] | None = None,
) -> Traced:
    """Which events each of *rows* (the result of *kql*, with *columns*) names.

    Only the id columns of tables the query reads (or of *tables*) count: a
    SigninLogs row's ``CorrelationId`` is not a StorageBlobLogs event id. An id
    shared by tables goes to a *preferred* ``(table, id)`` first, then to a
    table whose labels know it, then to the first table holding it.
    """
    read = tables if tables is not None else tables_in(kql, schemas)
    families = id_families({t: schemas[t] for t in read})
    found = id_columns(columns, families)
    preferred = set(prefer)
    stored = _stored_ids(engine, schemas, rows, found, families, labels)
    events: list[list[tuple[str, str]]] = []
    for row in rows:
        named: list[tuple[str, str]] = []
        for column, family in found.items():
            value = row.get(column)
            if value is None:
                continue
            key = canonical(value)
            tables = families[family]
            labelled = [t for t in tables if labels.kind(t, key) != "benign"]
            holding = labelled or [t for t in tables if (t, key) in stored]
            if not holding:
                continue  # a value in an id-named column that is no event of the tables read
            wanted = [t for t in tables if (t, key) in preferred]
            event = ((wanted or holding)[0], key)
            if event not in named:
                named.append(event)
        events.append(named)
    held = set(found.values())
    return Traced(read, [t for t in read if schemas[t].id_column in held], found, events)


def _stored_ids(engine: Any, schemas: Mapping[str, TableSchema], rows: list[dict[str, Any]],
                found: dict[str, str], families: Mapping[str, list[str]],
                labels: Labels) -> set[tuple[str, str]]:
    """``(table, id)`` for the unlabelled result values that are events of a table read."""
    wanted: dict[str, set[str]] = {}
    for row in rows:
        for column, family in found.items():
            value = row.get(column)
            if value is None:
                continue
            key = canonical(value)
            if all(labels.kind(t, key) == "benign" for t in families[family]):
                wanted.setdefault(family, set()).add(key)
    stored: set[tuple[str, str]] = set()
    for family, keys in wanted.items():
        ordered = sorted(keys)
        for table in families[family]:
            for start in range(0, len(ordered), _CHUNK):
                chunk = ordered[start:start + _CHUNK]
                for row in fetch_events(engine, schemas, {table: chunk}, ids_only=True):
                    stored.add((table, row["__id__"]))
    return stored
