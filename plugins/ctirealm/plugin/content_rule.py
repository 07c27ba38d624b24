"""A detection as a Sentinel analytics rule: its fields, how a file is read, the
Azure-Sentinel schema check of those fields, and the readings of fields the Sentinel and
Defender checks share (tactic names, blank entity values).

`SentinelRule` is what every collector of the content gate produces, whatever the file: a
rule, a hunting query, a Markdown block or a Defender custom detection (mapped onto it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from ..attack import ATTACK_VERSION
from .checks import CheckFailed, platform_data
from .content_schedule import parse_duration

ITEMS = ("parse", "runs", "connectors", "entities", "attack", "true_positives", "false_positives")
#: A query with nowhere to declare connectors, entities or ATT&CK.
HUNTING_QUERY_ITEMS = ("parse", "runs", "true_positives")


def sentinel_data() -> dict[str, Any]:
    """``plugin/data/sentinel.yaml``: connectors, entity identifiers, limits, operators."""
    return platform_data("sentinel")


class ContentCheckFailed(CheckFailed):
    """A check of a detection failed; the message says exactly what is wrong."""


@dataclass
class SentinelRule:
    """One analytics rule as read from its file, or why it could not be read."""

    path: Path
    doc: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def name(self) -> str:
        return str(self.doc.get("name") or self.doc.get("id") or self.path.stem)

    @property
    def query(self) -> str:
        return str(self.doc.get("query") or "")

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind") or "Scheduled")


def read_rule(path: Path) -> SentinelRule:
    """Read a Sentinel rule; never raises (a bad file comes back with ``error``)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return SentinelRule(path, error=f"cannot read: {exc}")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return SentinelRule(path, error=f"invalid YAML{where}: {problem}")
    if not isinstance(doc, dict):
        return SentinelRule(path, error="expected a mapping")
    return SentinelRule(path, doc)


def schema_problems(rule: SentinelRule) -> list[str]:
    """What the Azure-Sentinel schema check would refuse in the rule's fields."""
    data, doc, out = sentinel_data(), rule.doc, []
    for key in ("id", "name", "query", "severity"):  # tactics and techniques: the attack check
        if doc.get(key) in (None, "", []):
            out.append(f"{key} is missing")
    if rule.kind not in data["kinds"]:
        out.append(f"kind {rule.kind!r}: expected one of {', '.join(data['kinds'])}")
    if doc.get("severity") and doc["severity"] not in data["severities"]:
        out.append(f"severity {doc['severity']!r}: expected one of {', '.join(data['severities'])}")
    if rule.kind == "Scheduled":
        minutes = {}
        for key in ("queryFrequency", "queryPeriod"):
            duration = parse_duration(doc.get(key))
            if duration is None:
                out.append(f"{key} {doc.get(key)!r}: expected a duration such as 5m, 1h, 14d, PT1H or P1D")
                continue
            minutes[key] = duration.total_seconds() / 60
        if minutes.get("queryFrequency", 5) < 5:
            out.append("queryFrequency is under 5m")
        if minutes.get("queryPeriod", 0) > 14 * 1440:
            out.append("queryPeriod is over 14d")
        if minutes.get("queryFrequency", 0) > minutes.get("queryPeriod", 1 << 30):
            out.append("queryFrequency is longer than queryPeriod: events between runs are never read")
        if str(doc.get("triggerOperator")) not in data["trigger_operators"]:
            out.append(f"triggerOperator {doc.get('triggerOperator')!r}: expected gt, lt, eq or ne")
        if not isinstance(doc.get("triggerThreshold"), int):
            out.append(f"triggerThreshold {doc.get('triggerThreshold')!r}: expected an integer")
    if doc.get("suppressionEnabled") not in (None, True, False):
        out.append(f"suppressionEnabled {doc['suppressionEnabled']!r}: expected true or false")
    if doc.get("suppressionEnabled") is True:
        pause = parse_duration(doc.get("suppressionDuration"))
        if pause is None:
            out.append(
                f"suppressionDuration {doc.get('suppressionDuration')!r}: expected a "
                "duration such as 5h or PT5H (suppressionEnabled is true)"
            )
        elif not timedelta(minutes=5) <= pause <= timedelta(hours=24):
            out.append(f"suppressionDuration {doc.get('suppressionDuration')!r}: expected 5m to 24h")
    return out


def is_blank(value: Any) -> bool:
    """No value, as Sentinel sees an entity field: null, empty or blank text, empty dynamic."""
    return value is None or (isinstance(value, str) and not value.strip()) or value in ([], {})


def tactic_key(name: str) -> str:
    """``InitialAccess``, ``initial-access`` and ``Initial Access`` are one tactic."""
    return re.sub(r"[^a-z]", "", name.lower())


def camel(shortname: str) -> str:
    """ATT&CK's ``initial-access`` as Sentinel and Defender spell it: ``InitialAccess``."""
    return "".join(part.capitalize() for part in shortname.split("-"))


def attack_version() -> str:
    return ATTACK_VERSION
