"""Event labels: which events are attacks (and of which simulation) and which are hard negatives.

Labels are written beside the store (``<hash>.labels.json``), never into a
table, so no query can read them. Events not listed are generated background.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Kind = Literal["attack", "hard_negative", "benign"]


@dataclass
class Labels:
    """``{table: {event_id: {"kind": ..., "group": simulation or source folder}}}``."""

    events: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    #: Mirror table -> its source (AKSAudit holds every AKSAuditAdmin event, same id): a
    #: mirrored copy is the same event. Kept in the store's metadata, set when it is opened.
    mirrors: dict[str, str] = field(default_factory=dict, compare=False)

    #: (kind, group) -> {table: ids}, built on first `by_table` (cases are bound per scoring call).
    _groups: dict[tuple[str, str], dict[str, tuple[str, ...]]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def add(self, table: str, event_id: str, kind: Kind, group: str) -> None:
        self.events.setdefault(table, {})[str(event_id)] = {"kind": kind, "group": group}
        self._groups = None

    def identity(self, table: str, event_id: object) -> tuple[str, str]:
        """The event behind ``(table, id)``: a mirror table's row is its source's event.

        Ids are unique across a mirror and its source except for the copies, so mapping
        the mirror table to its source identifies copies and keeps every other event apart.
        """
        return self.mirrors.get(table, table), str(event_id)

    def tables_of(self, table: str) -> set[str]:
        """The tables an event listed under *table* is in: a source's rows are in its mirrors too."""
        return {table, *(m for m, source in self.mirrors.items() if source == table)}

    def kind(self, table: str, event_id: object) -> Kind:
        entry = self.events.get(table, {}).get(str(event_id))
        return entry["kind"] if entry else "benign"  # type: ignore[return-value]

    def group(self, table: str, event_id: object) -> str | None:
        entry = self.events.get(table, {}).get(str(event_id))
        return entry["group"] if entry else None

    def ids(self, kind: Kind, table: str | None = None, group: str | None = None) -> list[str]:
        """Ids of events of *kind*, optionally in one table and one simulation/source folder."""
        tables: Iterable[str] = [table] if table else sorted(self.events)
        return [
            event_id
            for t in tables
            for event_id, entry in sorted(self.events.get(t, {}).items())
            if entry["kind"] == kind and (group is None or entry["group"] == group)
        ]

    def by_table(self, kind: Kind, group: str) -> dict[str, tuple[str, ...]]:
        """``{table: ids}`` of the events of *kind* labelled with *group* (a case id)."""
        if self._groups is None:
            grouped: dict[tuple[str, str], dict[str, list[str]]] = {}
            for table in sorted(self.events):
                for event_id, entry in sorted(self.events[table].items()):
                    key = (entry["kind"], entry["group"])
                    grouped.setdefault(key, {}).setdefault(table, []).append(event_id)
            self._groups = {k: {t: tuple(ids) for t, ids in v.items()} for k, v in grouped.items()}
        return dict(self._groups.get((kind, group), {}))

    def simulations(self) -> list[str]:
        return sorted({e["group"] for t in self.events.values() for e in t.values() if e["kind"] == "attack"})

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.events, sort_keys=True, indent=0), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Labels:
        return cls(json.loads(path.read_text(encoding="utf-8")))
