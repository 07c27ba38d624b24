"""Benign background generator: what a real environment does all day, as event tables.

The benchmark scores a detection by the attacks it catches *and* by the benign events
it matches. This module writes the benign background those false positives are counted
on: Linux servers running cron, package managers, sshd sessions and services; AKS
controllers, operators, CI and admins talking to the API server; sign-ins, directory
changes, Azure Resource Manager writes, Key Vault reads, Graph calls, mailbox,
SharePoint and storage traffic.

Behaviour lives in the YAML profiles (``telemetry/generator/*.yaml``); this module is a
small template engine that reads them:

* ``shares`` — how the requested row total is split across tables;
* ``rhythms`` — hour-of-day and weekend weights (diurnal rhythm of each activity);
* ``globals`` and ``pools`` — the environment: tenant, hosts, users, apps, clusters...;
* ``binaries`` and ``lifetimes`` — the Linux executables processes are made of;
* ``tables`` — per table a ``layout`` (column -> value template) and ``events``
  (weighted activity templates binding entities from the pools); a table with
  ``mirror_of: <Table>`` also holds every row of that table, with the same id and its
  own ``force`` values (AKSAudit takes AKSAuditAdmin's events, as AKS writes them to
  both categories). The store copies those rows (see :func:`mirrors`); the generator
  writes each table's own events only.

Templates use ``{name.attr}`` for values known when a template is compiled (entities,
inline choices) and ``{$kind:args}`` for values drawn per row (times, ids, pids...).
The comments in those profiles and :meth:`_TableGenerator._token` describe the format.

Output is deterministic: the same arguments give the same rows, byte for byte, whatever
the output format and however many worker processes write it. Each table has its own
``random.Random`` seeded from the seed and the table name; a table of more than
``SHARD_ROWS`` rows is cut into shards with streams (and id ranges) of their own, so the
split depends on the row count only, never on the machine. Compiled templates are cached
as format fragments so that a row costs a handful of random draws and one string join.

Two output formats: ``jsonl`` (``<Table>.jsonl``, one JSON object per line, the format of
committed event files) and ``split``, the compact form the store loads: each compiled row
variant is written once with its constant columns, and each row holds only the fields it
draws (times as epoch milliseconds), cut into time buckets so the store sorts each bucket
in memory. See :func:`generate` and docs/performance.md.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import os
import queue
import re
import selectors
import shutil
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any

import yaml

from .schema import SchemaError, TableSchema

__all__ = ["OUTPUTS", "Mirror", "ProfileError", "SplitFiles", "available_cpus", "bucket_bounds",
           "check_background", "generate", "load_profiles", "mirrors", "split_files",
           "table_counts", "worker_main"]

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
#: Rows buffered before a write (and between ``progress`` calls).
CHUNK_ROWS = 10_000
#: Compiled template variants kept before the cache is emptied (bounds memory).
CACHE_LIMIT = 20_000
#: Offset and size of the 12-digit ReportId space: ``ID_BASE + perm(n)`` with a
#: seeded bijection on 39 bits, so ids look random and never collide.
ID_BASE = 100_000_000_000
ID_BITS = 39
ID_MASK = (1 << ID_BITS) - 1
_TABLE_ID_STREAM = 1 << 37  # spacing between the counters of tables sharing ReportIds
_SHARD_ID_SPAN = 1 << 30  # spacing between the counters of one table's shards
#: Rows per shard: a table larger than this is generated as several independent shards
#: (own random stream and id range each), which worker processes can share. It depends on
#: the row count only, never on the machine, so output stays the same everywhere.
SHARD_ROWS = 1_000_000
#: Split output: rows per time bucket a table aims for (at most MAX_BUCKETS), so the store
#: sorts a table bucket by bucket, each in memory.
BUCKET_ROWS = 250_000
MAX_BUCKETS = 256
#: Output formats: ``jsonl`` (one JSON object per line) or ``split`` (see :func:`generate`).
OUTPUTS = ("jsonl", "split")
_VID_SHARD = 1 << 32  # spacing between the variant ids of shards
#: Split output: a datetime field that is a row's own time (``{$time}``, ``{$row:N}``).
_ROW_TIME = re.compile(r'"\{\$(?:time|row:(\d+))\}"')

_HOUR_MS = 3_600_000
_STATIC = re.compile(r"\{([A-Za-z_]\w*(?:\.[\w-]+)*)(\?)?\}")
_DYNAMIC = re.compile(r"\{\$([^{}]+)\}")
_OPEN, _CLOSE, _RAW = "\x01", "\x02", "\x03"
_NUMERIC = frozenset({"long", "int", "real", "decimal", "bool"})
_MMSS = [f"{m:02d}:{s:02d}" for m in range(60) for s in range(60)]
_MSZ = [f".{ms:03d}Z" for ms in range(1000)]


#: libyaml's loader when PyYAML was built with it (several times faster), else pure Python.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ProfileError(ValueError):
    """A generator profile is malformed; the message names the table and template."""


# --------------------------------------------------------------------------- profiles


def default_profiles_dir() -> Path:
    """``telemetry/generator`` of the repository this package sits in."""
    return Path(__file__).resolve().parents[3] / "telemetry" / "generator"


def _escape_braces(value: Any) -> Any:
    """Turn ``{{``/``}}`` (literal braces in profiles) into sentinels the templates skip."""
    if isinstance(value, str):
        return value.replace("{{", _OPEN).replace("}}", _CLOSE)
    if isinstance(value, dict):
        return {k: _escape_braces(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape_braces(v) for v in value]
    return value


def load_profiles(profiles_dir: Path | None = None,
                  scenarios_dir: Path | None = None) -> dict[str, Any]:
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


def check_background(profile: dict[str, Any], path: Path, schemas_dir: Path | None = None,
                     window: tuple[datetime, datetime] | None = None) -> None:
    """Raise `ProfileError` if scenario file *path*'s ``background`` cannot be merged into
    *profile* (left unchanged): how a store leaves one bad scenario out, not the build.

    With *schemas_dir* and *window*, every template is also compiled once (first entity
    of each slot), so an unknown placeholder, column or binary is caught here rather
    than in the middle of generating the background of every case.
    """
    tables = {t: dict(spec) for t, spec in (profile.get("tables") or {}).items()}
    merged = {"tables": tables, "binaries": dict(profile.get("binaries") or {})}
    _merge_background(merged, path)
    if schemas_dir is None or window is None:
        return
    schemas = _load_schemas(schemas_dir)
    own = f"{path.stem}: "
    full = {**profile, "binaries": _escape_braces(merged["binaries"])}
    clock = _Clock(window, profile.get("rhythms") or {"always": {}})
    ids = _ReportIds(0)
    for table, spec in tables.items():
        events = [e for e in spec.get("events") or [] if str(e.get("name", "")).startswith(own)]
        if not events or table not in schemas:
            continue
        engine = _TableGenerator(table, full, {**spec, "events": _escape_braces(events)},
                                 schemas[table], clock, 0, ids, 0)
        for tpl in engine.templates:
            entities: list[Any] = []
            for binder in tpl.binders:
                items = binder.items
                if items is None:
                    items = _lookup({"e": entities[binder.parent]}, f"e.{binder.attr}")
                    if not isinstance(items, list) or not items:
                        raise ProfileError(f"{path}: background.{table}.{tpl.name}: bind "
                                           f"{binder.name}: not a non-empty list")
                entities.append(items[0])
            try:
                engine._compile(tpl, entities)
            except ProfileError as exc:
                raise ProfileError(f"{path}: background.{table}: {exc}") from None


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
        schemas[schema.name] = {"types": dict(schema.columns), "id": schema.id_column,
                                "time": schema.time_column}
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


# --------------------------------------------------------------------------- time


class _Clock:
    """Millisecond times inside ``[start, end)`` and their ISO-8601 ``Z`` strings."""

    def __init__(self, window: tuple[datetime, datetime], rhythms: dict[str, Any]) -> None:
        start, end = (self._utc(w) for w in window)
        if end <= start:
            raise ProfileError("window: start must be before end")
        self.start = int(start.timestamp() * 1000)
        self.end = int(end.timestamp() * 1000)
        self.fmt = self._make_fmt()
        self._days: dict[tuple[int, str], str] = {}
        self.rhythms = {name: self._rhythm(name, spec) for name, spec in rhythms.items()}

    @staticmethod
    def _utc(value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def _rhythm(self, name: str, spec: dict[str, Any]) -> tuple[list[float], list[int], list[int]]:
        hours = [float(h) for h in spec.get("hours", [1.0] * 24)]
        if len(hours) != 24 or min(hours) < 0:
            raise ProfileError(f"rhythms.{name}: hours must be 24 non-negative weights")
        weekend = float(spec.get("weekend", 1.0))
        offset = timedelta(hours=float(spec.get("utc_offset", 0)))
        cdf: list[float] = []
        starts: list[int] = []
        widths: list[int] = []
        acc = 0.0
        t = self.start
        while t < self.end:
            local = datetime.fromtimestamp(t / 1000, UTC) + offset
            width = min(_HOUR_MS, self.end - t)
            weight = hours[local.hour] * (weekend if local.weekday() >= 5 else 1.0)
            acc += weight * width / _HOUR_MS
            cdf.append(acc)
            starts.append(t)
            widths.append(width)
            t += width
        if acc <= 0:
            raise ProfileError(f"rhythms.{name}: no weight falls inside the window")
        return cdf, starts, widths

    def _make_fmt(self) -> Callable[[int], str]:
        """``fmt(ms)``: ISO-8601 with milliseconds and ``Z``, from precomputed pieces."""
        first = self.start // _HOUR_MS
        hours = [
            datetime.fromtimestamp(h * 3600, UTC).strftime("%Y-%m-%dT%H:")
            for h in range(first, (self.end - 1) // _HOUR_MS + 1)
        ]
        count = len(hours)

        def fmt(ms: int, hours: list[str] = hours, first: int = first, count: int = count,
                mmss: list[str] = _MMSS, msz: list[str] = _MSZ) -> str:
            sec, milli = divmod(ms, 1000)
            hour, sec = divmod(sec, 3600)
            hour -= first
            if 0 <= hour < count:
                return hours[hour] + mmss[sec] + msz[milli]
            moment = datetime.fromtimestamp((hour + first) * 3600, UTC)
            return moment.strftime("%Y-%m-%dT%H:") + mmss[sec] + msz[milli]

        return fmt

    def day(self, ms: int, pattern: str) -> str:
        key = (ms // 86_400_000, pattern)
        text = self._days.get(key)
        if text is None:
            text = datetime.fromtimestamp(key[0] * 86_400, UTC).strftime(pattern)
            self._days[key] = text
        return text

    def clamp(self, ms: int) -> int:
        return self.start if ms < self.start else (self.end - 1 if ms >= self.end else ms)


# --------------------------------------------------------------------------- ids


class _ReportIds:
    """Random-looking, collision-free 12-digit ids: a seeded bijection on 39 bits."""

    def __init__(self, seed: int) -> None:
        rng = Random(f"{seed}:ReportId")
        self.keys = [(rng.getrandbits(ID_BITS) | 1, rng.getrandbits(ID_BITS)) for _ in range(3)]
        self.shifts = (19, 17, 21)

    def counter(self, stream: int, shard: int = 0) -> Callable[[], str]:
        (a1, c1), (a2, c2), (a3, c3) = self.keys
        s1, s2, s3 = self.shifts
        if not 0 <= shard < _TABLE_ID_STREAM // _SHARD_ID_SPAN:
            raise ValueError(f"shard {shard} is out of the id space")
        state = [stream * _TABLE_ID_STREAM + shard * _SHARD_ID_SPAN]

        def next_id(state: list[int] = state, mask: int = ID_MASK) -> str:
            x = state[0]
            state[0] = x + 1
            x = (x * a1 + c1) & mask
            x ^= x >> s1
            x = (x * a2 + c2) & mask
            x ^= x >> s2
            x = (x * a3 + c3) & mask
            return str(ID_BASE + (x ^ (x >> s3)))

        return next_id


def _uuid4(n: int) -> str:
    """A version-4 UUID string from 128 random bits (as ``uuid.UUID(int=n, version=4)``)."""
    n = (n & 0xFFFFFFFFFFFF0FFF3FFFFFFFFFFFFFFF) | 0x40008000000000000000
    h = n.to_bytes(16, "big").hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def stable_hex(text: str, algorithm: str) -> str:
    """Deterministic digest of *text*: how profiles get per-binary hashes that never change."""
    return hashlib.new(algorithm, f"ctirealm:{text}".encode()).hexdigest()


# --------------------------------------------------------------------------- templates


class _Missing(KeyError):
    pass


def _lookup(ctx: dict[str, Any], path: str) -> Any:
    parts = path.split(".")
    if parts[0] not in ctx:
        raise _Missing(path)
    value = ctx[parts[0]]
    for part in parts[1:]:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise _Missing(path)
    return value


def _resolve(ctx: dict[str, Any], match: re.Match[str]) -> Any:
    """Value of a ``{path}`` placeholder; ``{path?}`` is empty (dropped) when missing."""
    try:
        return _lookup(ctx, match.group(1))
    except _Missing:
        if match.group(2):
            return None
        raise


#: Parsed templates for :func:`_quick`: literal pieces and ``(path parts)`` between them.
_PARSED: dict[str, tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]] = {}
_SLOW = object()


def _quick(value: str, ctx: dict[str, Any]) -> Any:
    """:func:`_expand` of a string in the common case, or ``_SLOW`` to take the full path.

    The common case: every placeholder is present, required, and resolves to a number or
    to text without placeholders, and the result has no placeholder left. Then the result
    is exactly what the full path gives, for a fraction of the work.
    """
    parsed = _PARSED.get(value)
    if parsed is None:
        if len(_PARSED) > 50_000:
            _PARSED.clear()
        literals: list[str] = []
        paths: list[tuple[str, ...]] = []
        at = 0
        for match in _STATIC.finditer(value):
            if match.group(2):
                literals, paths = [], [()]  # optional placeholder: full path
                break
            literals.append(value[at:match.start()])
            paths.append(tuple(match.group(1).split(".")))
            at = match.end()
        literals.append(value[at:])
        parsed = _PARSED[value] = (tuple(literals), tuple(paths))
    literals_t, paths_t = parsed
    if not paths_t:
        return value
    found: list[Any] = []
    for parts in paths_t:
        if not parts or parts[0] not in ctx:
            return _SLOW
        item = ctx[parts[0]]
        for part in parts[1:]:
            if isinstance(item, dict) and part in item:
                item = item[part]
            elif isinstance(item, list) and part.isdigit() and int(part) < len(item):
                item = item[int(part)]
            else:
                return _SLOW
        if isinstance(item, str):
            if "{" in item and _STATIC.search(item):
                return _SLOW
        elif not isinstance(item, int | float):  # bools are ints
            return _SLOW
        found.append(item)
    if len(found) == 1 and not literals_t[0] and not literals_t[1]:
        return found[0]  # a whole-value placeholder keeps its type
    pieces = [literals_t[0]]
    for item, literal in zip(found, literals_t[1:], strict=True):
        pieces.append(item if isinstance(item, str) else str(item))
        pieces.append(literal)
    text = "".join(pieces)
    if "{" in text and _STATIC.search(text):
        return _SLOW
    return text


def _expand(value: Any, ctx: dict[str, Any], depth: int = 0) -> Any:
    """Substitute ``{name.attr}`` placeholders; a whole-value placeholder keeps its type."""
    if depth > 12:
        raise ProfileError(f"placeholders nest too deep near {value!r}")
    if isinstance(value, str):
        if "{" not in value:
            return value
        quick = _quick(value, ctx)
        if quick is not _SLOW:
            return quick
        whole = _STATIC.fullmatch(value)
        if whole:
            return _expand(_resolve(ctx, whole), ctx, depth + 1)

        def one(match: re.Match[str]) -> str:
            found = _expand(_resolve(ctx, match), ctx, depth + 1)
            if isinstance(found, dict | list):
                return json.dumps(found, separators=(",", ":"))
            return "" if found is None else str(found)

        result = _STATIC.sub(one, value)
        for _ in range(4):  # placeholders built by placeholders: {app.{kind.field}}
            if result == value or not _STATIC.search(result):
                break
            value, result = result, _STATIC.sub(one, result)
        return result
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            expanded = _expand(item, ctx, depth + 1)
            if expanded is not None and expanded != "":
                out[key] = expanded
        return out
    if isinstance(value, list):
        return [_expand(item, ctx, depth + 1) for item in value]
    return value


def _coerce(value: Any, kusto: str, where: str) -> Any:
    """Make a compiled value fit its column type (dynamic tokens pass through as markers)."""
    if isinstance(value, str) and _DYNAMIC.fullmatch(value):
        if kusto in _NUMERIC:
            return _RAW + value + _RAW
        return value
    if kusto == "dynamic":
        return value
    if kusto in ("string", "guid", "datetime", "timespan"):
        if isinstance(value, dict | list):
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        if isinstance(value, bool):
            return "True" if value else "False"
        return str(value)
    try:
        if kusto in ("long", "int"):
            return int(value)
        if kusto in ("real", "decimal"):
            return float(value)
        if kusto == "bool":
            if isinstance(value, str):
                return value.strip().lower() == "true"
            return bool(value)
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{where}: {value!r} is not a {kusto}") from exc
    return value


def _csv_text(value: Any, kusto: str) -> str:
    """A coerced value as one CSV field: text types quoted, numbers and booleans bare.

    Values are written as the JSONL output writes them (dynamic as compact JSON, reals by
    ``repr``), so a store loads the same values from either format.
    """
    if kusto in _NUMERIC:
        if isinstance(value, str):  # a whole-value token: _RAW{$kind}_RAW
            return value.strip(_RAW)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return json.dumps(value)
        return str(value)
    if kusto == "dynamic":
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    else:
        text = value if isinstance(value, str) else str(value)
    return '"' + text.replace('"', '""') + '"'


class _Row:
    """One compiled row: a %-format string, its per-row tokens, and (once bound) an emitter."""

    __slots__ = ("fmt", "fragments", "names", "positions", "emit")

    def __init__(self, encoded: str) -> None:
        pieces = _DYNAMIC.split(encoded)
        fragments = pieces[0::2]
        names = pieces[1::2]
        # The same token twice in a row is one value (a time, an id, a shared key), except
        # unkeyed random draws, which are fresh at every occurrence.
        slots: dict[str, int] = {}
        order: list[str] = []
        positions = []
        for name in names:
            if _is_fresh(name):
                positions.append(len(order))
                order.append(name)
                continue
            if name not in slots:
                slots[name] = len(order)
                order.append(name)
            positions.append(slots[name])
        self.positions = tuple(positions)
        self.names = tuple(order)
        self.emit: Callable[[int, dict], str] | None = None

        self.fragments = tuple(fragments)
        self.fmt = encoded


#: Token kinds whose last argument may name a per-burst shared value, and where it sits.
_KEY_ARG = {"int": 2, "real": 2, "hex": 1, "uuid": 0, "ago": 2, "before": 2, "after": 2}


def _is_fresh(name: str) -> bool:
    """An unkeyed random token: drawn anew wherever it appears."""
    kind, _, rest = name.partition(":")
    at = _KEY_ARG.get(kind)
    return at is not None and len(rest.split(":") if rest else []) <= at


def _key_fresh(text: Any, prefix: str) -> Any:
    """Give unkeyed random tokens in *text* a burst key, so every copy of it agrees."""
    if not isinstance(text, str) or "{$" not in text:
        return text
    counter = iter(range(1_000_000))

    def keyed(match: re.Match[str]) -> str:
        name = match.group(1)
        if not _is_fresh(name):
            return match.group(0)
        kind, _, rest = name.partition(":")
        args = rest.split(":") if rest else []
        while len(args) < _KEY_ARG[kind]:
            args.append("")
        return "{$" + ":".join([kind, *args, f"{prefix}{next(counter)}"]) + "}"

    return _DYNAMIC.sub(keyed, text)


def _unshare(encoded_rows: list[str]) -> list[str]:
    """Drop the sharing key of a token that occurs once in a burst (saves a memo lookup)."""
    uses: dict[str, int] = {}
    for text in encoded_rows:
        for name in _DYNAMIC.findall(text):
            kind, _, rest = name.partition(":")
            at = _KEY_ARG.get(kind)
            args = rest.split(":") if rest else []
            if at is not None and len(args) == at + 1:
                uses[name] = uses.get(name, 0) + 1
    single = {name for name, count in uses.items() if count == 1}
    if not single:
        return encoded_rows

    def strip(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in single:
            return match.group(0)
        return "{$" + name.rsplit(":", 1)[0] + "}"

    return [_DYNAMIC.sub(strip, text) for text in encoded_rows]


class _Binder:
    """Picks one entity per burst for a template variable (pool, filtered pool or list)."""

    __slots__ = ("items", "cdf", "parent", "attr", "name")

    def __init__(self, name: str, items: list[Any] | None, parent: int = -1,
                 attr: str = "") -> None:
        self.name = name
        self.items = items
        self.parent = parent
        self.attr = attr
        self.cdf: list[float] | None = None
        if items is not None:
            if not items:
                raise ProfileError(f"bind {name}: selects no entity")
            weights = [
                float(i.get("weight", 1.0)) if isinstance(i, dict) else 1.0 for i in items
            ]
            if len(set(weights)) > 1:
                acc = 0.0
                self.cdf = []
                for w in weights:
                    acc += w
                    self.cdf.append(acc)


class _Template:
    __slots__ = ("index", "name", "weight", "rhythm", "binders", "spec", "gap")

    def __init__(self, index: int, name: str, weight: float, rhythm: Any,
                 binders: list[_Binder], spec: dict[str, Any], gap: tuple[int, int]) -> None:
        self.index = index
        self.name = name
        self.weight = weight
        self.rhythm = rhythm
        self.binders = binders
        self.spec = spec
        self.gap = gap


def _select(pool: list[Any], selector: str, where: str) -> list[Any]:
    """``pool[key=a|b;other!=c]`` filtering; list-valued attributes match on any item."""
    items = pool
    for clause in filter(None, (c.strip() for c in selector.split(";"))):
        negate = "!=" in clause
        key, _, wanted = clause.partition("!=" if negate else "=")
        allowed = set(wanted.strip().split("|"))
        key = key.strip()

        def matches(entity: Any, key: str = key, allowed: set[str] = allowed) -> bool:
            value = entity.get(key) if isinstance(entity, dict) else None
            values = value if isinstance(value, list) else [value]
            return any(str(v) in allowed for v in values)

        items = [e for e in items if matches(e) != negate]
    if not items:
        raise ProfileError(f"{where}: selector [{selector}] matches nothing")
    return items


# --------------------------------------------------------------------------- table engine


class _TableGenerator:
    """Compiles one table's profile and streams its rows."""

    def __init__(self, table: str, profile: dict[str, Any], spec: dict[str, Any],
                 schema: dict[str, Any], clock: _Clock, seed: int, ids: _ReportIds,
                 id_stream: int, shard: int = 0, output: str = "jsonl") -> None:
        self.table = table
        self.schema = schema
        self.types: dict[str, str] = schema["types"]
        self.clock = clock
        # Shard 0 is the table's own stream (what every table of up to SHARD_ROWS rows uses);
        # further shards of a large table get streams of their own.
        self.rng = Random(f"{seed}:{table}" if shard == 0 else f"{seed}:{table}:{shard}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, not {output!r}")
        self.output = output
        #: Split output: variant ids of this shard start here; constant parts are collected in
        #: ``variant_lines`` (the caller writes and empties it).
        self.next_vid = shard * _VID_SHARD
        self.variant_lines: list[str] = []
        #: Split output: the columns some row supplies itself (all others come from variants).
        self.varying: set[str] = set()
        self.model = spec.get("row_model", "explicit")
        if self.model not in ("explicit", "process_chain", "file_ops"):
            raise ProfileError(f"tables.{table}.row_model: unknown model {self.model!r}")
        self.layout: dict[str, Any] = dict(spec.get("layout") or {})
        self.globals: dict[str, Any] = dict(profile.get("globals") or {})
        self.pools: dict[str, list[Any]] = dict(profile.get("pools") or {})
        self.binaries: dict[str, Any] = dict(profile.get("binaries") or {})
        self.lifetimes: dict[str, Any] = dict(profile.get("lifetimes") or {})
        self.force: dict[str, Any] = dict(spec.get("force") or {})
        for column in [*self.layout, *self.force]:
            self._check_column(column, "layout")
        default_rhythm = spec.get("rhythm", "always")
        self.templates: list[_Template] = []
        events = list(spec.get("events") or [])
        for i, event in enumerate(events):
            self.templates.append(self._template(i, event, default_rhythm))
        if not self.templates:
            raise ProfileError(f"tables.{table}: no events")
        acc = 0.0
        self.cdf: list[float] = []
        for tpl in self.templates:
            acc += tpl.weight
            self.cdf.append(acc)
        self.total = acc
        self.cache: dict[tuple[int, ...], list[_Row]] = {}
        id_type = self.types.get(schema["id"])
        if id_type in ("long", "int"):
            self.next_id: Callable[[], str] = ids.counter(id_stream, shard)
        else:
            bits = self.rng.getrandbits
            self.next_id = lambda: _uuid4(bits(128))
        self._binary_cache: dict[str, dict[str, Any]] = {}
        self._makers: dict[tuple[tuple[str, ...], tuple[int, ...]], Callable[[str], Any]] = {}

    # -- compile ---------------------------------------------------------------------

    def _where(self, tpl: str = "") -> str:
        return f"tables.{self.table}" + (f".events[{tpl}]" if tpl else "")

    def _check_column(self, column: str, where: str) -> None:
        if column not in self.types:
            raise ProfileError(
                f"{self._where()}.{where}: {column!r} is not a column of {self.table}")

    def _template(self, index: int, event: dict[str, Any], default_rhythm: str) -> _Template:
        name = str(event.get("name", index))
        where = self._where(name)
        rhythm = event.get("rhythm", default_rhythm)
        if rhythm not in self.clock.rhythms:
            raise ProfileError(f"{where}: unknown rhythm {rhythm!r}")
        binders: list[_Binder] = []
        names: list[str] = []
        for var, selector in (event.get("bind") or {}).items():
            binders.append(self._binder(var, selector, names, where))
            names.append(var)
        gap = event.get("gap_ms", [5, 400])
        spec = dict(event)
        if "chain" in spec:
            spec["chain"] = [self._step(step, where) for step in spec["chain"] or []]
        for key in ("rows", "files"):
            for row in spec.get(key) or []:
                for column in (row.get("columns") or {}) if key == "files" else row:
                    self._check_column(column, f"events[{name}].{key}")
        if self.model == "explicit" and not spec.get("rows"):
            raise ProfileError(f"{where}: needs rows")
        if self.model != "explicit":
            chain = spec.get("chain") or []
            need = int(spec.get("emit", 1)) + 2 if self.model == "process_chain" else 2
            if len(chain) < need:
                raise ProfileError(f"{where}: chain needs at least {need} processes")
            for step in chain:
                binary = str(step.get("bin"))
                if "{" not in binary and binary not in self.binaries:
                    raise ProfileError(f"{where}: unknown binary {binary!r}")
            if self.model == "file_ops" and not spec.get("files"):
                raise ProfileError(f"{where}: needs files")
        weight = float(event.get("weight", 1.0))
        if weight <= 0:
            raise ProfileError(f"{where}: weight must be positive")
        return _Template(index, name, weight, self.clock.rhythms[rhythm], binders, spec,
                         (int(gap[0]), int(gap[1])))

    @staticmethod
    def _step(step: Any, where: str) -> dict[str, Any]:
        """A chain step: ``{bin, cmd, user, pid, lifetime}`` or compact ``[bin, cmd, user]``."""
        if isinstance(step, list) and 1 <= len(step) <= 3:
            return dict(zip(("bin", "cmd", "user"), step, strict=False))
        if isinstance(step, dict) and "bin" in step:
            return step
        raise ProfileError(f"{where}: a chain step is [bin, cmd, user] or a mapping with bin")

    def _binder(self, var: str, selector: Any, earlier: list[str], where: str) -> _Binder:
        if isinstance(selector, list):
            return _Binder(var, selector)
        if not isinstance(selector, str):
            raise ProfileError(f"{where}.bind.{var}: expected a pool selector or a list")
        head, _, rest = selector.partition("[")
        head = head.strip()
        if "." in head:
            parent, _, attr = head.partition(".")
            if parent not in earlier:
                raise ProfileError(f"{where}.bind.{var}: {parent!r} must be bound before")
            return _Binder(var, None, earlier.index(parent), attr)
        if head not in self.pools:
            raise ProfileError(f"{where}.bind.{var}: unknown pool {head!r}")
        items = self.pools[head]
        if rest:
            items = _select(items, rest.rstrip("]"), f"{where}.bind.{var}")
        return _Binder(var, items)

    def _binary(self, key: str) -> dict[str, Any]:
        cached = self._binary_cache.get(key)
        if cached is not None:
            return cached
        spec = dict(self.binaries[key])
        path = spec["path"]
        ident = f"{path}|{spec.get('version', '')}"
        entity = {
            "key": key,
            "path": path,
            "name": spec.get("name", path.rsplit("/", 1)[-1]),
            "sha1": spec.get("sha1", stable_hex(ident, "sha1")),
            "sha256": spec.get("sha256", stable_hex(ident, "sha256")),
            "md5": spec.get("md5", stable_hex(ident, "md5")),
            "size": spec.get("size", 20_000 + int(stable_hex(ident, "md5")[:6], 16) % 2_000_000),
            "lifetime": spec.get("lifetime", "short"),
            "pid": spec.get("pid"),
        }
        self._binary_cache[key] = entity
        return entity

    def _lifetime(self, name: str, where: str) -> tuple[float, float] | None:
        """``[min, max]`` seconds, or None for ``static`` (running since the window began)."""
        if name not in self.lifetimes:
            raise ProfileError(f"{where}: unknown lifetime {name!r}")
        spec = self.lifetimes[name]
        if spec == "static":
            return None
        try:
            lo, hi = spec
            return float(lo), float(hi)
        except (TypeError, ValueError):
            raise ProfileError(f"lifetimes.{name}: expected [min, max] or static") from None

    def _chain(self, tpl: _Template, ctx: dict[str, Any], emitted: dict[int, int]) -> list[dict]:
        """Resolve a process chain: binaries, command lines, users, pids, creation times."""
        where = self._where(tpl.name)
        default_user = tpl.spec.get("user", "root")
        out = []
        spans: list[str] = []
        host = ctx.get("host")
        where_run = str(host.get("fqdn", "")) if isinstance(host, dict) else tpl.name
        for i, step in enumerate(tpl.spec["chain"]):
            binary = str(_expand(step["bin"], ctx))
            if binary not in self.binaries:
                raise ProfileError(f"{where}: unknown binary {binary!r}")
            entity = dict(self._binary(binary))
            entity["cmd"] = _key_fresh(_expand(step.get("cmd", entity["path"]), ctx), f"c{i}_")
            entity["user"] = _expand(step.get("user", default_user), ctx)
            pid = step.get("pid", entity["pid"])
            entity["pid"] = pid if pid is not None else f"{{$int:300:4194000:p{i}}}"
            if i in emitted:
                entity["ctime"] = f"{{$row:{emitted[i]}}}"
                out.append(entity)
                continue
            span = self._lifetime(str(step.get("lifetime", entity["lifetime"])), where)
            if span is None:
                # Long-running: one pid and start time per host and program, near boot.
                digest = int(stable_hex(f"{where_run}|{entity['path']}|{entity['cmd']}", "md5"), 16)
                if pid is None:
                    entity["pid"] = 300 + digest % 2400
                entity["ctime"] = self.clock.fmt(self.clock.start + i * 1000 + digest % 1000)
            else:
                spans.append(f"{span[0]!r},{span[1]!r}")
                entity["ctime"] = len(spans) - 1
            out.append(entity)
        for entity in out:
            if isinstance(entity["ctime"], int):
                entity["ctime"] = f"{{$chain:{'/'.join(spans)}:{entity['ctime']}}}"
        return out

    def _file(self, spec: dict[str, Any], ctx: dict[str, Any], j: int) -> dict[str, Any]:
        path = _key_fresh(str(_expand(spec["path"], ctx)), f"f{j}_")
        entity: dict[str, Any] = {"path": path, "name": path.rsplit("/", 1)[-1]}
        entity["action"] = spec.get("action", "FileCreated")
        if "from" in spec:
            prev = _key_fresh(str(_expand(spec["from"], ctx)), f"g{j}_")
            entity["prev_path"] = prev.rsplit("/", 1)[0] if "/" in prev else prev
            entity["prev_name"] = prev.rsplit("/", 1)[-1]
        size = spec.get("size")
        if isinstance(size, list):
            entity["size"] = f"{{$int:{int(size[0])}:{int(size[1])}:s{j}}}"
        elif size is not None:
            entity["size"] = size
        if entity["action"] != "FileDeleted" and spec.get("hashes", True):
            if "{$" in path or isinstance(size, list):
                entity["sha1"] = f"{{$hex:40:h1{j}}}"
                entity["sha256"] = f"{{$hex:64:h2{j}}}"
                entity["md5"] = f"{{$hex:32:h3{j}}}"
            else:
                for algo, length in (("sha1", 40), ("sha256", 64), ("md5", 32)):
                    entity[algo] = stable_hex(path, algo)[:length]
        return entity

    def _compile(self, tpl: _Template, entities: list[Any],
                 extra: dict[str, Any] | None = None) -> list[_Row]:
        ctx = dict(self.globals)
        if extra:
            ctx.update(extra)
        for binder, entity in zip(tpl.binders, entities, strict=True):
            ctx[binder.name] = entity
        try:
            encoded = [self._encode(row, tpl.name) for row in self._rows(tpl, ctx)]
            return [_Row(text) for text in _unshare(encoded)]
        except _Missing as exc:
            raise ProfileError(f"{self._where(tpl.name)}: unknown placeholder {{{exc.args[0]}}}") \
                from None

    def _rows(self, tpl: _Template, ctx: dict[str, Any]) -> Iterator[dict[str, Any]]:
        spec = tpl.spec
        if self.model == "explicit":
            columns = spec.get("columns") or {}
            for row in spec["rows"]:
                yield _expand({**self.layout, **columns, **row, **self.force}, ctx)
            return
        if self.model == "process_chain":
            n = len(spec["chain"])
            emit = int(spec.get("emit", 1))
            first = n - emit
            chain = self._chain(tpl, ctx, {i: i - first for i in range(first, n)})
            for i in range(first, n):
                chain[i]["ctime"] = "{$time}"
                rctx = {**ctx, "proc": chain[i], "actor": chain[i - 1],
                        "actor_parent": chain[i - 2]}
                yield _expand({**self.layout, **(spec.get("columns") or {}), **self.force}, rctx)
                chain[i]["ctime"] = f"{{$row:{i - first}}}"
            return
        chain = self._chain(tpl, ctx, {})
        for j, fspec in enumerate(spec["files"]):
            file = self._file(fspec, ctx, j)
            rctx = {**ctx, "file": file, "actor": chain[-1], "actor_parent": chain[-2]}
            yield _expand({**self.layout, **(fspec.get("columns") or {}), **self.force}, rctx)

    def _encode(self, row: dict[str, Any], tpl_name: str) -> str:
        """One compiled row as output text with ``{$token}`` slots (JSONL line or split line).

        Both formats list the columns in schema order and serialise values alike, so the
        slots appear in the same order and every row draws the same random values.
        """
        where = f"{self._where(tpl_name)}"
        out: dict[str, Any] = {}
        for column, value in _unescape_braces(row).items():
            if value is None or value == "":
                continue
            kusto = self.types.get(column)
            if kusto is None:
                raise ProfileError(f"{where}: {column!r} is not a column of {self.table}")
            out[column] = _coerce(value, kusto, f"{where}.{column}")
        id_column = self.schema["id"]
        if id_column not in out or self.types[id_column] in _NUMERIC:
            # A text id may be shaped by the layout (AuditLogs: Directory_<correlation>_...).
            out[id_column] = _RAW + "{$id}" + _RAW if self.types[id_column] in _NUMERIC else "{$id}"
        ordered = {c: out[c] for c in self.types if c in out}
        if self.output == "split":
            return self._encode_split(ordered)
        encoded = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False)
        return encoded.replace('"\\u0003', "").replace('\\u0003"', "") + "\n"

    def _encode_split(self, values: dict[str, Any]) -> str:
        """Split a compiled row: constant columns to a variant line, the rest to a row line.

        Returns the row line template (``vid,`` then one CSV field per schema column, empty
        where the variant supplies the value) and appends the variant line (``vid,`` then the
        constant columns, empty where the row supplies the value) to ``variant_lines``.
        """
        vid = self.next_vid
        self.next_vid += 1
        row_fields: list[str] = []
        variant_fields: list[str] = []
        for column, kusto in self.types.items():
            if column not in values:
                row_fields.append("")
                variant_fields.append("")
                continue
            text = _csv_text(values[column], kusto)
            if kusto == "datetime":
                # A row's own time goes out as epoch milliseconds: no formatting here, no
                # parsing in the store (which tells the two forms apart by the '-').
                own = _ROW_TIME.fullmatch(text)
                if own:
                    text = "{$ms}" if own.group(1) is None else f"{{$rowms:{own.group(1)}}}"
            if "{$" in text and _DYNAMIC.search(text):
                row_fields.append(text)
                variant_fields.append("")
                self.varying.add(column)
            else:
                row_fields.append("")
                variant_fields.append(text)
        self.variant_lines.append(f"{vid}," + ",".join(variant_fields) + "\n")
        return f"{vid}," + ",".join(row_fields) + "\n"

    # -- dynamic tokens ---------------------------------------------------------------

    def _token(self, text: str, tpl: _Template) -> Callable[[int, dict], str]:
        """Compile ``$kind:args`` into ``f(row_ms, burst_memo) -> str``.

        Kinds: ``time``, ``id``, ``chain``, ``row``, ``ago``/``before``/``after``, ``int``,
        ``real``, ``hex:n``, ``uuid``, ``alnum:n`` (upper-case letters and digits), ``empty``
        (the empty string a service writes), and the rest below; a last ``:key`` argument
        shares one value between the rows of a burst (one event, or one scenario step).
        """
        kind, _, rest = text.partition(":")
        args = rest.split(":") if rest else []
        rnd = self.rng.random
        clock = self.clock
        where = f"{self._where(tpl.name)}: token {{${text}}}"

        def memo(key: str | None, make: Callable[[int, dict], str]) -> Callable[[int, dict], str]:
            if not key:
                return make

            def cached(t: int, m: dict) -> str:
                value = m.get(key)
                if value is None:
                    value = m[key] = make(t, m)
                return value

            return cached

        try:
            if kind == "time":
                return lambda t, m: clock.fmt(t)
            if kind == "id":
                next_id = self.next_id
                return lambda t, m: next_id()
            if kind == "chain":
                spans = [tuple(float(x) for x in a.split(",")) for a in args[0].split("/")]
                return self._chain_token(spans, int(args[1]))
            if kind == "row":
                j = int(args[0])
                return lambda t, m: clock.fmt(m["__rows"][j])
            if kind in ("ago", "before", "after"):
                lo, hi = float(args[0]), float(args[1])
                scale = 1000.0 if kind == "ago" else 1.0
                lo_ms, span = lo * scale, (hi - lo) * scale
                sign = 1 if kind == "after" else -1
                base = "__t0" if kind == "ago" else None

                def shifted(t: int, m: dict) -> str:
                    origin = m[base] if base else t
                    value = origin + sign * int(lo_ms + rnd() * span)
                    if value < clock.start:  # started before the window: keep order, stay inside
                        value = clock.start + int(rnd() * 0.25 * max(0, origin - clock.start))
                    elif value >= clock.end:
                        value = clock.end - 1
                    return clock.fmt(value)

                return memo(args[2] if len(args) > 2 else None, shifted)
            if kind == "int":
                lo_i, hi_i = int(args[0]), int(args[1])
                span_i = hi_i - lo_i + 1
                return memo(args[2] if len(args) > 2 else None,
                            lambda t, m: str(lo_i + int(rnd() * span_i)))
            if kind == "real":
                lo_f, hi_f = float(args[0]), float(args[1])
                return memo(args[2] if len(args) > 2 else None,
                            lambda t, m: "%.3f" % (lo_f + rnd() * (hi_f - lo_f)))
            if kind == "hex":
                n = int(args[0])
                bits = self.rng.getrandbits
                hexfmt = f"%0{n}x"
                return memo(args[1] if len(args) > 1 else None,
                            lambda t, m: hexfmt % bits(4 * n))
            if kind == "uuid":
                bits = self.rng.getrandbits
                return memo(args[0] if args else None, lambda t, m: _uuid4(bits(128)))
            if kind == "alnum":  # n upper-case letters and digits
                n_chars = int(args[0])
                return memo(args[1] if len(args) > 1 else None,
                            lambda t, m: "".join(_ALNUM[int(rnd() * 36)] for _ in range(n_chars)))
            if kind == "empty":  # an empty string the service writes ("" is a missing value)
                return lambda t, m: ""
            if kind == "date":
                pattern = rest
                return lambda t, m: clock.day(t, pattern)
            if kind == "epoch":
                offset = int(args[0]) * 1000 if args else 0
                return lambda t, m: str((t + offset) // 1000)
            if kind == "ms":  # split output: a row time as epoch milliseconds
                return lambda t, m: str(t)
            if kind == "rowms":
                j = int(args[0])
                return lambda t, m: str(m["__rows"][j])
        except (IndexError, ValueError) as exc:
            raise ProfileError(f"{where}: bad arguments") from exc
        raise ProfileError(f"{where}: unknown token kind {kind!r}")

    def _chain_token(self, spans: list[tuple[float, ...]],
                     index: int) -> Callable[[int, dict], str]:
        """Creation times of the ancestors that started before the burst, oldest first.

        Each ancestor started a lifetime before its child; if that reaches before the
        window, the gaps are scaled down so the order holds and every time stays inside.
        """
        rnd = self.rng.random
        clock = self.clock
        def times(t: int, m: dict) -> str:
            cached = m.get("__chain")
            if cached is None:
                t0 = m["__t0"]
                offsets = []
                acc = 0.0
                for lo, hi in reversed(spans):
                    acc += (lo + rnd() * (hi - lo)) * 1000.0
                    offsets.append(acc)
                offsets.reverse()
                room = t0 - clock.start
                if offsets and offsets[0] > room:
                    scale = room / offsets[0] * (0.3 + 0.65 * rnd())
                    offsets = [o * scale for o in offsets]
                cached = m["__chain"] = [clock.fmt(t0 - int(o)) for o in offsets]
            return cached[index]

        return times

    def _emitter(self, row: _Row, tpl: _Template,
                 tokens: dict[str, Callable[[int, dict], str]]) -> Callable[[int, dict], str]:
        """A function ``emit(row_ms, burst_memo) -> line`` specialised for the row's tokens.

        Functions are generated once per token signature and shared by every row with the
        same tokens; the row's format string is bound in a closure.
        """
        fmt = row.fmt
        if not row.names:
            return lambda t, m: fmt
        fragments = row.fragments
        signature = (row.names, row.positions)
        make = self._makers.get(signature)
        if make is None:
            env: dict[str, Any] = {"FMT_TIME": self.clock.fmt, "NEXT_ID": self.next_id,
                                   "RND": self.rng.random, "JOIN": "".join, "STR": str}
            params = ", ".join(f"F{i}" for i in range(len(fragments)))
            lines = [f"def make({params}):", "    def emit(t, m):"]
            for i, name in enumerate(row.names):
                kind, _, rest = name.partition(":")
                args = rest.split(":") if rest else []
                if name == "time":
                    lines.append(f"        v{i} = FMT_TIME(t)")
                elif name == "ms":
                    lines.append(f"        v{i} = STR(t)")
                elif kind == "rowms" and len(args) == 1 and args[0].isdigit():
                    lines.append(f"        v{i} = STR(m['__rows'][{int(args[0])}])")
                elif name == "id":
                    lines.append(f"        v{i} = NEXT_ID()")
                elif kind == "row" and len(args) == 1 and args[0].isdigit():
                    lines.append(f"        v{i} = FMT_TIME(m['__rows'][{int(args[0])}])")
                elif kind == "int" and len(args) == 2:
                    lo, hi = int(args[0]), int(args[1])
                    lines.append(f"        v{i} = str({lo} + int(RND() * {hi - lo + 1}))")
                else:
                    key = None
                    at = _KEY_ARG.get(kind)
                    if at is not None and len(args) == at + 1:
                        key, name = args[at], ":".join([kind, *args[:at]])
                    fn = tokens.get(name)
                    if fn is None:
                        fn = tokens[name] = self._token(name, tpl)
                    env[f"T{i}"] = fn
                    if key is None:
                        lines.append(f"        v{i} = T{i}(t, m)")
                    else:
                        lines.append(f"        v{i} = m.get({key!r})")
                        lines.append(f"        if v{i} is None:")
                        lines.append(f"            v{i} = m[{key!r}] = T{i}(t, m)")
            parts = ["F0"]
            for i, p in enumerate(row.positions):
                parts += [f"v{p}", f"F{i + 1}"]
            lines.append(f"        return JOIN(({', '.join(parts)}))")
            lines.append("    return emit")
            exec("\n".join(lines), env)  # noqa: S102 - code built from token kinds only
            make = self._makers[signature] = env["make"]
        return make(*fragments)

    # -- run -----------------------------------------------------------------------------

    def rows(self, count: int, buckets: int = 1) -> Iterator[list[list[str]]]:
        """Yield chunks of output lines totalling exactly *count* rows.

        A chunk is one list of lines per time bucket: the window cut into *buckets* equal
        spans, a row going to the span its own time falls in (all rows in one list if 1).
        """
        rnd = self.rng.random
        cdf, total, templates = self.cdf, self.total, self.templates
        cache = self.cache
        tokens: dict[str, Callable[[int, dict], str]] = {}
        bisect_right = bisect.bisect_right
        bufs: list[list[str]] = [[] for _ in range(buckets)]
        buf = bufs[0]
        start, span = self.clock.start, self.clock.end - self.clock.start
        end = self.clock.end - 1
        last_template = len(templates) - 1
        # Per template, what a burst needs, looked up once: binders as plain tuples, the
        # rhythm's cumulative weights with their total, the gap between rows.
        plans = []
        for tpl in templates:
            binders = tuple(
                (b.items, b.cdf, b.cdf[-1] if b.cdf else 0.0, b.parent, f"e.{b.attr}", b.name)
                for b in tpl.binders
            )
            rcdf, starts, widths = tpl.rhythm
            plans.append((tpl, binders, rcdf, rcdf[-1], len(starts) - 1, starts, widths,
                          tpl.gap[0], tpl.gap[1] - tpl.gap[0] + 1))
        made = 0
        chunk = made + CHUNK_ROWS
        while made < count:
            ti = bisect_right(cdf, rnd() * total)
            if ti > last_template:
                ti = last_template
            tpl, binders, rcdf, rtotal, last_slot, starts, widths, gap_lo, gap_span = plans[ti]
            entities: list[Any] = []
            if binders:
                key = [ti]
                for items, bcdf, btotal, parent, path, name in binders:
                    if items is None:
                        items = _lookup({"e": entities[parent]}, path)
                        if not isinstance(items, list) or not items:
                            raise ProfileError(
                                f"{self._where(tpl.name)}.bind.{name}: "
                                f"{path[2:]!r} is not a non-empty list"
                            )
                        i = int(rnd() * len(items))
                    elif bcdf is not None:
                        i = bisect_right(bcdf, rnd() * btotal)
                        if i >= len(items):
                            i = len(items) - 1
                    else:
                        i = int(rnd() * len(items))
                    key.append(i)
                    entities.append(items[i])
                ckey = tuple(key)
            else:
                ckey = (ti,)
            compiled = cache.get(ckey)
            if compiled is None:
                if len(cache) >= CACHE_LIMIT:
                    cache.clear()
                compiled = cache[ckey] = self._compile(tpl, entities)
            h = bisect_right(rcdf, rnd() * rtotal)
            if h > last_slot:
                h = last_slot
            t = starts[h] + int(rnd() * widths[h])
            take = len(compiled)
            if take > count - made:
                take = count - made
            times = [t]
            for _ in range(take - 1):
                t += gap_lo + int(rnd() * gap_span)
                times.append(t if t <= end else end)
            memo: dict[str, Any] = {"__t0": times[0], "__rows": times}
            for j in range(take):
                row = compiled[j]
                emit = row.emit
                if emit is None:
                    emit = row.emit = self._emitter(row, tpl, tokens)
                if buckets == 1:
                    buf.append(emit(times[j], memo))
                else:
                    bufs[(times[j] - start) * buckets // span].append(emit(times[j], memo))
            made += take
            if made >= chunk:
                yield bufs
                bufs = [[] for _ in range(buckets)]
                buf = bufs[0]
                chunk = made + CHUNK_ROWS
        if any(bufs):
            yield bufs


# --------------------------------------------------------------------------- output


class _Writer:
    """Writes chunks on a background thread, in order, so disk I/O overlaps generation.

    The thread only moves bytes to files (the write system call releases the GIL); at most
    ``depth`` chunks wait in the queue, which bounds memory. Files are opened by name
    (``open(name, path)``) and written by that name; all are closed on exit.
    """

    def __init__(self, depth: int = 4) -> None:
        self._queue: queue.Queue[tuple[str, str, Any]] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="generator-writer", daemon=True)

    def __enter__(self) -> _Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._queue.put(("stop", "", None))
        self._thread.join()
        if self._error is not None and exc[0] is None:
            raise self._error

    def _run(self) -> None:
        handles: dict[str, Any] = {}
        while True:
            op, name, arg = self._queue.get()
            try:
                if op == "stop":
                    break
                if self._error is not None:
                    continue
                if op == "open":
                    if name in handles:
                        handles.pop(name).close()
                    handles[name] = open(arg, "wb")  # noqa: SIM115 - closed on stop
                else:
                    handles[name].write(arg)
            except BaseException as exc:  # reported to the caller on exit
                self._error = exc
        for handle in handles.values():
            handle.close()

    def _put(self, op: str, name: str, arg: Any) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((op, name, arg))

    def open(self, name: str, path: Path) -> None:
        self._put("open", name, path)

    def write(self, name: str, data: bytes) -> None:
        self._put("write", name, data)


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class _Task:
    """One shard of one table: what a worker generates on its own."""

    table: str
    shard: int
    shards: int
    rows: int
    stream: int
    buckets: int = 1


@dataclass(frozen=True)
class _Context:
    """Everything a worker needs besides its task (picklable, sent once per process)."""

    out_dir: Path
    profiles_dir: Path
    schemas_dir: Path
    seed: int
    window: tuple[datetime, datetime]
    output: str
    scenarios_dir: Path | None = None


class _Loaded:
    """A context's profiles, schemas, clock and id space, loaded once per process."""

    def __init__(self, context: _Context) -> None:
        self.profile = load_profiles(context.profiles_dir, context.scenarios_dir)
        self.schemas = _load_schemas(context.schemas_dir)
        self.clock = _Clock(context.window, self.profile.get("rhythms") or {"always": {}})
        self.ids = _ReportIds(context.seed)


def _plan(shares: dict[str, float], counts: dict[str, int],
          schemas: dict[str, dict[str, Any]]) -> list[_Task]:
    """Tasks in table order: ``ceil(rows / SHARD_ROWS)`` shards per table, rows split evenly."""
    tasks: list[_Task] = []
    id_streams: dict[str, int] = {}
    for table in shares:
        stream = id_streams.setdefault(schemas[table]["id"], 0)
        id_streams[schemas[table]["id"]] = stream + 1
        count = counts[table]
        shards = max(1, -(-count // SHARD_ROWS))
        buckets = min(MAX_BUCKETS, max(1, -(-count // BUCKET_ROWS)))
        for shard in range(shards):
            rows = count // shards + (1 if shard < count % shards else 0)
            tasks.append(_Task(table, shard, shards, rows, stream, buckets))
    return tasks


def bucket_bounds(start_ms: int, end_ms: int, buckets: int) -> list[int]:
    """First millisecond of each time bucket, then the window's end (``buckets + 1`` values).

    A time ``t`` falls in bucket ``(t - start) * buckets // (end - start)``.
    """
    span = end_ms - start_ms
    return [start_ms - (-b * span // buckets) for b in range(buckets)] + [end_ms]


def _part_paths(out_dir: Path, task: _Task, output: str) -> tuple[list[Path], Path | None]:
    """A task's row files (one per time bucket) and variant file (split output only)."""
    if output == "split":
        return ([out_dir / f"{task.table}.rows-{task.shard:03d}-{b:03d}.csv"
                 for b in range(task.buckets)],
                out_dir / f"{task.table}.variants-{task.shard:03d}.csv")
    if task.shards == 1:
        return [out_dir / f"{task.table}.jsonl"], None
    return [out_dir / f"{task.table}.part-{task.shard:03d}.jsonl"], None


@dataclass(frozen=True)
class SplitFiles:
    """One table's ``split`` output.

    ``buckets[b]``: the row files of time bucket *b* (all shards); ``bounds``: the buckets'
    first milliseconds and the window's end; ``variants``: the variant files; ``varying``:
    the columns some row supplies itself (every other column comes from its variant).
    """

    buckets: list[list[Path]]
    bounds: list[int]
    variants: list[Path]
    varying: frozenset[str]

    def paths(self) -> list[Path]:
        return [p for paths in self.buckets for p in paths] + self.variants


def split_files(out_dir: Path, table: str) -> SplitFiles:
    """The ``split`` output of *table* in *out_dir* (as written by ``generate``)."""
    out_dir = Path(out_dir)
    varying: set[str] = set()
    bounds: list[int] = []
    for path in sorted(out_dir.glob(f"{table}.meta-*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        varying.update(doc["varying"])
        bounds = doc["bounds"]
    buckets: list[list[Path]] = [[] for _ in range(max(1, len(bounds) - 1))]
    for path in sorted(out_dir.glob(f"{table}.rows-*-*.csv")):
        buckets[int(path.stem.rsplit("-", 1)[1])].append(path)
    return SplitFiles(buckets, bounds, sorted(out_dir.glob(f"{table}.variants-*.csv")),
                      frozenset(varying))


def _run_task(task: _Task, context: _Context, loaded: _Loaded,
              report: Callable[[int], None]) -> int:
    """Generate one shard into its file(s); ``report(n)`` after every chunk of n rows."""
    specs = loaded.profile.get("tables") or {}
    engine = _TableGenerator(task.table, loaded.profile, specs[task.table],
                             loaded.schemas[task.table], loaded.clock, context.seed, loaded.ids,
                             task.stream, task.shard, context.output)
    rows_paths, variants_path = _part_paths(context.out_dir, task, context.output)
    buckets = len(rows_paths)
    written = 0
    with _Writer() as writer:
        for b, path in enumerate(rows_paths):
            writer.open(f"rows{b}", path)
        if variants_path is not None:
            writer.open("variants", variants_path)
        for chunk in engine.rows(task.rows, buckets):
            n = 0
            for b, lines in enumerate(chunk):
                if lines:
                    writer.write(f"rows{b}", "".join(lines).encode("utf-8"))
                    n += len(lines)
            written += n
            report(n)
            if engine.variant_lines:
                writer.write("variants", "".join(engine.variant_lines).encode("utf-8"))
                engine.variant_lines = []
    if context.output == "split":
        meta = {"varying": sorted(engine.varying),
                "bounds": bucket_bounds(loaded.clock.start, loaded.clock.end, buckets)}
        meta_path = context.out_dir / f"{task.table}.meta-{task.shard:03d}.json"
        meta_path.write_text(json.dumps(meta), encoding="utf-8")
    return written


def _context_doc(context: _Context) -> dict[str, Any]:
    return {"out_dir": str(context.out_dir), "profiles_dir": str(context.profiles_dir),
            "schemas_dir": str(context.schemas_dir), "seed": context.seed,
            "window": [w.isoformat() for w in context.window], "output": context.output,
            "scenarios_dir": str(context.scenarios_dir) if context.scenarios_dir else None}


def _context_from(doc: dict[str, Any]) -> _Context:
    window = tuple(datetime.fromisoformat(w) for w in doc["window"])
    return _Context(Path(doc["out_dir"]), Path(doc["profiles_dir"]), Path(doc["schemas_dir"]),
                    int(doc["seed"]), window, str(doc["output"]),  # type: ignore[arg-type]
                    Path(doc["scenarios_dir"]) if doc.get("scenarios_dir") else None)


def worker_main() -> None:
    """A worker process: reads a context line and then task lines (JSON) on stdin.

    Reports ``progress N`` per chunk, ``done`` per task, or ``error {json}`` and exits;
    exits at end of input. Started by :func:`generate` as ``python -c`` (no ``__main__``
    of the caller is imported, unlike ``multiprocessing``'s spawn).
    """
    out = sys.stdout
    try:
        context = _context_from(json.loads(sys.stdin.readline()))
        loaded = _Loaded(context)

        def report(n: int) -> None:
            out.write(f"progress {n}\n")
            out.flush()

        for line in sys.stdin:
            task = _Task(**json.loads(line))
            _run_task(task, context, loaded, report)
            out.write("done\n")
            out.flush()
    except BaseException as exc:  # sent to the parent, which raises it there
        kind = "profile" if isinstance(exc, ProfileError) else type(exc).__name__
        detail = str(exc) if kind == "profile" else traceback.format_exc()
        out.write("error " + json.dumps({"kind": kind, "message": detail}) + "\n")
        out.flush()
        raise SystemExit(1) from None


def _join_parts(out_dir: Path, table: str, tasks: list[_Task]) -> None:
    """JSONL output of a sharded table: its parts concatenated, in shard order, into one file."""
    parts = [_part_paths(out_dir, t, "jsonl")[0][0] for t in tasks if t.table == table]
    if len(parts) == 1:
        return
    with (out_dir / f"{table}.jsonl").open("wb") as out:
        for part in parts:
            with part.open("rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 20)
            part.unlink()


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# --------------------------------------------------------------------------- entry point


def generate(
    out_dir: Path,
    *,
    seed: int,
    rows: int,
    window: tuple[datetime, datetime],
    profiles_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
    output: str = "jsonl",
    workers: int | None = 1,
    on_table: Callable[[str], None] | None = None,
    scenarios_dir: Path | None = None,
) -> dict[str, int]:
    """Write the benign background of every table into *out_dir*; return rows per table.

    *rows* is the total across tables, split by the profiles' ``shares``; the same
    arguments always produce the same rows, whatever *workers* and *output* are.
    ``progress(n)`` is called with the number of rows written so far, about every 10,000
    rows and once at the end.

    *output* ``"jsonl"`` writes ``<Table>.jsonl`` (one JSON object per line, keys = schema
    columns). ``"split"`` is the compact form the store loads: per table and shard,
    ``<Table>.variants-NNN.csv`` holds each compiled row variant once (``vid`` then one
    CSV field per schema column, empty where rows vary) and ``<Table>.rows-NNN.csv`` one
    line per row (``vid`` then the varying fields, empty where the variant's value holds).
    Text fields are quoted, an empty field is null; a row's value of a column is its own
    field if present, else its variant's. See :func:`split_files`.

    *workers* > 1 generates shards in that many processes (``None``: one per CPU, or one
    for small sizes). ``on_table(table)`` is called in this process as soon as a table's
    files are complete, so a caller can load it while other tables are being generated.
    *scenarios_dir* adds the scenarios' ``background`` templates (see `load_profiles`).
    """
    if rows < 0:
        raise ValueError("rows must be >= 0")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, not {output!r}")
    profiles_dir = Path(profiles_dir) if profiles_dir else default_profiles_dir()
    profile = load_profiles(profiles_dir, scenarios_dir)
    schemas_dir = profiles_dir.parent / "schemas"
    if not schemas_dir.is_dir():
        schemas_dir = default_profiles_dir().parent / "schemas"
    schemas = _load_schemas(schemas_dir)
    shares = {str(t): float(s) for t, s in (profile.get("shares") or {}).items()}
    for table in list(shares):
        if table not in schemas:
            if (schemas_dir / f"{table}.json").is_file():
                del shares[table]  # its schema file is broken: no background for that table
                continue
            raise ProfileError(f"shares: unknown table {table!r}")
    specs = profile.get("tables") or {}
    for table in shares:
        if table not in specs:
            raise ProfileError(f"tables.{table}: has a share but no profile")
    counts = table_counts(shares, rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    context = _Context(out_dir, profiles_dir, schemas_dir, seed, tuple(window), output,
                       Path(scenarios_dir) if scenarios_dir else None)
    tasks = _plan(shares, counts, schemas)
    if workers is None:
        workers = available_cpus() if rows >= PARALLEL_MIN_ROWS else 1
    if os.name == "nt" or not sys.executable:  # workers talk over pipes polled with select()
        workers = 1
    workers = max(1, min(int(workers), len(tasks)))
    if workers == 1:
        _generate_here(context, tasks, progress, on_table)
    else:
        _generate_in_workers(context, tasks, workers, progress, on_table)
    return counts


#: Below this many rows, ``workers=None`` generates in-process (starting workers costs more).
PARALLEL_MIN_ROWS = 200_000


def _generate_here(context: _Context, tasks: list[_Task], progress: Callable[[int], None] | None,
                   on_table: Callable[[str], None] | None) -> None:
    loaded = _Loaded(context)
    written = [0]

    def report(n: int) -> None:
        written[0] += n
        if progress:
            progress(written[0])

    for task in tasks:
        _run_task(task, context, loaded, report)
        if task.shard == task.shards - 1:
            if context.output == "jsonl":
                _join_parts(context.out_dir, task.table, tasks)
            if on_table:
                on_table(task.table)
    if progress:
        progress(written[0])


def _generate_in_workers(context: _Context, tasks: list[_Task], workers: int,
                         progress: Callable[[int], None] | None,
                         on_table: Callable[[str], None] | None) -> None:
    """Shards in *workers* processes, largest first; tables are reported as they finish."""
    remaining: dict[str, int] = {}
    for task in tasks:
        remaining[task.table] = remaining.get(task.table, 0) + 1
    todo = sorted(tasks, key=lambda t: -t.rows)  # stable: ties keep table order
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in [package_root, env.get("PYTHONPATH")] if p)
    command = [sys.executable, "-c",
               "from ctirealm.telemetry.generator import worker_main; worker_main()"]
    procs: list[subprocess.Popen[bytes]] = []
    running: dict[int, _Task] = {}
    pending: dict[int, bytes] = {}
    written = 0
    selector = selectors.DefaultSelector()

    def send(i: int, doc: dict[str, Any]) -> None:
        stdin = procs[i].stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(doc).encode() + b"\n")
            stdin.flush()
        except BrokenPipeError:  # the worker failed; its error arrives on stdout
            pass

    def feed(i: int) -> None:
        if todo:
            running[i] = todo.pop(0)
            send(i, dataclasses.asdict(running[i]))
        else:
            running.pop(i, None)
            stdin = procs[i].stdin
            assert stdin is not None
            stdin.close()

    def handle(i: int, line: str) -> None:
        nonlocal written
        if line.startswith("progress "):
            written += int(line.split()[1])
            if progress:
                progress(written)
        elif line == "done":
            task = running[i]
            feed(i)
            remaining[task.table] -= 1
            if remaining[task.table] == 0:
                if context.output == "jsonl":
                    _join_parts(context.out_dir, task.table, tasks)
                if on_table:
                    on_table(task.table)
        elif line.startswith("error "):
            doc = json.loads(line[6:])
            if doc["kind"] == "profile":
                raise ProfileError(doc["message"])
            raise RuntimeError(f"generator worker failed:\n{doc['message']}")
        else:
            raise RuntimeError(f"generator worker said {line!r}")

    try:
        for i in range(workers):
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    env=env)
            procs.append(proc)
            assert proc.stdout is not None
            selector.register(proc.stdout.fileno(), selectors.EVENT_READ, i)
            pending[i] = b""
            send(i, _context_doc(context))
            feed(i)
        while running:
            for key, _ in selector.select(timeout=1.0):
                i = key.data
                data = os.read(key.fd, 65536)
                if not data:
                    selector.unregister(key.fd)
                    if i in running:
                        raise RuntimeError(f"generator worker exited (code {procs[i].wait()})")
                    continue
                *lines, pending[i] = (pending[i] + data).split(b"\n")
                for line in lines:
                    handle(i, line.decode())
        for proc in procs:
            proc.wait()
    finally:
        selector.close()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None and not stream.closed:
                    stream.close()
    if progress:
        progress(sum(t.rows for t in tasks))
