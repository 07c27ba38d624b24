"""Generator profiles: loading ``telemetry/generator/*.yaml`` (and scenarios' ``background``
templates) into one profile, checking it against the table schemas, and splitting a row
total over tables by their ``shares``.

Braces a profile means literally are escaped on load (``_OPEN``/``_CLOSE``) so the template
language (:mod:`.templates`) sees only its own placeholders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..dataset import bundled_root
from ..schema import SchemaError, TableSchema

_OPEN, _CLOSE, _RAW = "\x01", "\x02", "\x03"

#: libyaml's loader when PyYAML was built with it (several times faster), else pure Python.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ProfileError(ValueError):
    """A generator profile is malformed; the message names the table and template."""


# --------------------------------------------------------------------------- profiles


def default_profiles_dir() -> Path:
    """The generator profiles of the dataset shipped with the package."""
    return bundled_root() / "generator"


def _escape_braces(value: Any) -> Any:
    """Turn ``{{``/``}}`` (literal braces in profiles) into sentinels the templates skip."""
    if isinstance(value, str):
        return value.replace("{{", _OPEN).replace("}}", _CLOSE)
    if isinstance(value, dict):
        return {k: _escape_braces(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape_braces(v) for v in value]
    return value


def load_profiles(profiles_dir: Path | None = None, scenarios_dir: Path | None = None) -> dict[str, Any]:
    """Read and merge every ``*.yaml`` profile (sections merge key by key; no duplicates).

    With *scenarios_dir*, each scenario file's ``background`` section (table -> event
    templates: the benign occurrences of the behaviour its case detects) is appended to
    those tables' ``events``, so base rates live beside the attack they shadow; its
    ``binaries`` join the profiles' executables.
    """
    profiles_dir = Path(profiles_dir) if profiles_dir else default_profiles_dir()
    paths = sorted(profiles_dir.glob("*.yaml"))
    if not paths:
        raise ProfileError(f"{profiles_dir}: no *.yaml generator profiles")
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER) or {}
        except yaml.YAMLError as exc:
            raise ProfileError(f"{path}: invalid YAML: {exc}") from exc
        if not isinstance(doc, dict):
            raise ProfileError(f"{path}: a profile must be a mapping of sections")
        for section, body in doc.items():
            if section not in merged:
                merged[section] = body
            elif isinstance(merged[section], dict) and isinstance(body, dict):
                for key, value in body.items():
                    if key in merged[section]:
                        raise ProfileError(f"{path}: {section}.{key} is defined twice")
                    merged[section][key] = value
            else:
                raise ProfileError(f"{path}: section {section!r} is defined twice")
    for path in sorted(Path(scenarios_dir).glob("*.yaml")) if scenarios_dir else []:
        _merge_background(merged, path)
    return _escape_braces(merged)


@dataclass(frozen=True)
class Mirror:
    """*table* also holds every row of *source* (same id), with *force* values replaced."""

    table: str
    source: str
    force: dict[str, str]


def mirrors(profile: dict[str, Any]) -> list[Mirror]:
    """The ``mirror_of`` declarations of *profile*'s tables, checked (sorted by table)."""
    tables = profile.get("tables") or {}
    found = []
    for table, spec in sorted(tables.items()):
        source = (spec or {}).get("mirror_of")
        if source is None:
            continue
        where = f"tables.{table}.mirror_of"
        if not isinstance(source, str) or source not in tables or source == table:
            raise ProfileError(f"{where}: {source!r} is not another table of the profiles")
        if (tables[source] or {}).get("mirror_of"):
            raise ProfileError(f"{where}: {source} is itself a mirror; mirror its source")
        force = (spec or {}).get("force") or {}
        if not all(isinstance(v, str) for v in force.values()):
            raise ProfileError(f"tables.{table}.force: a mirror's forced values must be text")
        found.append(Mirror(table, source, {str(k): v for k, v in force.items()}))
    return found


def _merge_background(merged: dict[str, Any], path: Path) -> None:
    """Append a scenario file's ``background`` templates to the tables' benign events."""
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER) or {}
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        return
    # Executables a scenario needs beyond the profiles' own; one definition per name.
    binaries = doc.get("binaries") or {}
    if not isinstance(binaries, dict):
        raise ProfileError(f"{path}: binaries must map names to {{path, size, ...}}")
    known = merged.setdefault("binaries", {})
    for name, spec in binaries.items():
        if not isinstance(spec, dict) or "path" not in spec:
            raise ProfileError(f"{path}: binaries.{name}: expected a mapping with a path")
        if name in known and known[name] != spec:
            raise ProfileError(f"{path}: binaries.{name}: already defined differently")
        known[name] = spec
    background = doc.get("background")
    if not background:
        return
    if not isinstance(background, dict):
        raise ProfileError(f"{path}: background must map table names to event lists")
    tables = merged.setdefault("tables", {})
    for table, events in background.items():
        if table not in tables:
            raise ProfileError(f"{path}: background.{table}: no generator profile for that table")
        if not isinstance(events, list):
            raise ProfileError(f"{path}: background.{table}: expected a list of events")
        for event in events:
            if not isinstance(event, dict) or "name" not in event:
                raise ProfileError(f"{path}: background.{table}: every event needs a name")
            # The scenario's name keeps template names unique and says where a row came from.
            named = dict(event, name=f"{path.stem}: {event['name']}")
            tables[table]["events"] = [*(tables[table].get("events") or []), named]


def _unescape_braces(value: Any) -> Any:
    """Literal braces back from their sentinels, once placeholders are expanded."""
    if isinstance(value, str):
        return value.replace(_OPEN, "{").replace(_CLOSE, "}")
    if isinstance(value, dict):
        return {k: _unescape_braces(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unescape_braces(v) for v in value]
    return value


def _load_schemas(schemas_dir: Path) -> dict[str, dict[str, Any]]:
    """The usable schemas; a broken schema file is skipped (the dataset reports it)."""
    schemas: dict[str, dict[str, Any]] = {}
    for path in sorted(schemas_dir.glob("*.json")):
        try:
            schema = TableSchema.load(path)
        except SchemaError:
            continue
        schemas[schema.name] = {
            "types": dict(schema.columns),
            "id": schema.id_column,
            "time": schema.time_column,
        }
    if not schemas:
        raise ProfileError(f"{schemas_dir}: no table schemas")
    return schemas


def table_counts(shares: dict[str, float], rows: int) -> dict[str, int]:
    """Split *rows* over tables by share, exactly (largest remainder, ties in table order)."""
    total = float(sum(shares.values()))
    if total <= 0:
        raise ProfileError("shares: at least one table needs a positive share")
    exact = {t: rows * float(s) / total for t, s in shares.items()}
    counts = {t: int(v) for t, v in exact.items()}
    order = sorted(shares, key=lambda t: (-(exact[t] - counts[t]), list(shares).index(t)))
    for table in order[: rows - sum(counts.values())]:
        counts[table] += 1
    return counts
