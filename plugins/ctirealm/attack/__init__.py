"""Bundled MITRE ATT&CK Enterprise data (v18.1) and look-ups.

© The MITRE Corporation. This work is reproduced and distributed with the
permission of The MITRE Corporation (see ``data/ATTACK_LICENSE.txt``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

TECHNIQUE_ID = re.compile(r"\bT\d{4}(?:\.\d{3})?\b")
ATTACK_VERSION = "18.1"


@dataclass(frozen=True)
class Technique:
    id: str
    name: str
    tactics: tuple[str, ...]
    platforms: tuple[str, ...]
    description: str
    is_subtechnique: bool

    @property
    def parent(self) -> str:
        """``T1053.003`` -> ``T1053``; a parent technique is its own parent."""
        return self.id.split(".", 1)[0]


@dataclass(frozen=True)
class Tactic:
    id: str
    shortname: str
    name: str


class Attack:
    """Techniques and tactics with look-ups by id and tactic."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.tactics = [Tactic(t["id"], t["shortname"], t["name"]) for t in doc["tactics"]]
        self.techniques = {
            t["id"]: Technique(
                t["id"],
                t["name"],
                tuple(t.get("tactics", ())),
                tuple(t.get("platforms", ())),
                t.get("description", ""),
                bool(t.get("is_subtechnique", "." in t["id"])),
            )
            for t in doc["techniques"]
        }

    def get(self, technique_id: str) -> Technique | None:
        return self.techniques.get(technique_id.strip().upper())

    def __contains__(self, technique_id: object) -> bool:
        return isinstance(technique_id, str) and self.get(technique_id) is not None

    def by_tactic(self, tactic: str) -> list[Technique]:
        """Techniques of a tactic, by name or shortname (``Credential Access``, ``credential-access``)."""
        key = tactic.strip().lower().replace(" ", "-").replace("_", "-")
        return sorted((t for t in self.techniques.values() if key in t.tactics), key=lambda t: t.id)

    def tactic_names(self) -> list[str]:
        return [t.shortname for t in self.tactics]


@lru_cache(maxsize=1)
def load_attack() -> Attack:
    """The bundled ATT&CK data (parsed once per process)."""
    text = (
        resources.files(__package__)
        .joinpath("data/enterprise_techniques_v18_1.json")
        .read_text(encoding="utf-8")
    )
    return Attack(json.loads(text))


def extract_technique_ids(text: str) -> list[str]:
    """Technique ids mentioned in *text*, in first-seen order, upper-cased."""
    seen: dict[str, None] = {}
    for match in TECHNIQUE_ID.finditer(text.upper()):
        seen.setdefault(match.group(0), None)
    return list(seen)
