"""The profiles' template language: ``{name.attr}`` values known when a template is compiled
(entities, inline choices) and ``{$kind:args}`` values drawn per row (times, ids, pids...),
expanded into rows; the binder that picks entities from pools, and the typed coercion of a
value to its column's Kusto type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from .profiles import _RAW, ProfileError

_STATIC = re.compile(r"\{([A-Za-z_]\w*(?:\.[\w-]+)*)(\?)?\}")
_DYNAMIC = re.compile(r"\{\$([^{}]+)\}")

_NUMERIC = frozenset({"long", "int", "real", "decimal", "bool"})

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
            literals.append(value[at : match.start()])
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

    __slots__ = ("emit", "fmt", "fragments", "names", "positions")

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

    __slots__ = ("attr", "cdf", "items", "name", "parent")

    def __init__(self, name: str, items: list[Any] | None, parent: int = -1, attr: str = "") -> None:
        self.name = name
        self.items = items
        self.parent = parent
        self.attr = attr
        self.cdf: list[float] | None = None
        if items is not None:
            if not items:
                raise ProfileError(f"bind {name}: selects no entity")
            weights = [float(i.get("weight", 1.0)) if isinstance(i, dict) else 1.0 for i in items]
            if len(set(weights)) > 1:
                acc = 0.0
                self.cdf = []
                for w in weights:
                    acc += w
                    self.cdf.append(acc)


class _Template:
    __slots__ = ("binders", "gap", "index", "name", "rhythm", "spec", "weight")

    def __init__(
        self,
        index: int,
        name: str,
        weight: float,
        rhythm: Any,
        binders: list[_Binder],
        spec: dict[str, Any],
        gap: tuple[int, int],
    ) -> None:
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
