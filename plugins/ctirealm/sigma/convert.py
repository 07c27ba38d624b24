"""Sigma -> KQL: one rule to one query over one telemetry table.

`convert` applies the ctirealm pipeline and backend to a copy of the rule and returns a
`Conversion`: the KQL (``Table | where ...``), the table, and what each Sigma field resolved to.
Anything that cannot become KQL that means the same thing raises `SigmaRuleError` naming the
rule, the construct and the reason — never a query that silently cannot match.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule

from ..telemetry.schema import TableSchema, load_schemas
from .backend import CtiRealmKustoBackend
from .parse import ParsedRule, SigmaRuleError, parse_rule
from .pipelines import (
    STATE_FIELDS,
    STATE_TABLE,
    SchemaMap,
    TableSpec,
    pipeline_from_specs,
    table_specs,
)

RuleLike = str | Path | Mapping[str, Any] | SigmaRule | ParsedRule


@dataclass(frozen=True)
class Conversion:
    """A converted rule: ``kql`` is ``<Table>\\n| where <condition>``."""

    rule: str
    table: str
    condition: str
    fields: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def kql(self) -> str:
        return f"{self.table}\n| where {self.condition}"

    def __str__(self) -> str:
        return self.kql


def default_schemas(root: str | Path | None = None) -> dict[str, TableSchema]:
    """Table schemas from ``<root>/schemas`` (default: ``$CTIREALM_TELEMETRY`` or the nearest
    ``telemetry/`` folder at or above the working directory)."""
    import os

    if root is None:
        env = os.environ.get("CTIREALM_TELEMETRY")
        if env:
            root = Path(env)
        else:
            here = Path.cwd()
            for folder in (here, *here.parents):
                if (folder / "telemetry" / "schemas").is_dir():
                    root = folder / "telemetry"
                    break
    if root is None:
        raise FileNotFoundError(
            "no telemetry/schemas folder found: pass schemas=, an engine, or set CTIREALM_TELEMETRY"
        )
    return _load_schemas(str(Path(root).resolve()))


@lru_cache(maxsize=8)
def _load_schemas(root: str) -> dict[str, TableSchema]:
    return load_schemas(Path(root) / "schemas")


def schemas_of(engine: Any) -> dict[str, list[tuple[str, str]]]:
    """The ``(column, type)`` lists of every table an engine serves."""
    return {table: list(engine.schema(table)) for table in engine.tables()}


_UNSUPPORTED_FEATURE = re.compile(r"^(?P<what>.+?) (?:is|are) not supported", re.IGNORECASE)


def _construct(message: str) -> str | None:
    for pattern, name in (
        (r"unknown field '([^']+)'", None),
        (r"unsupported logsource (\{[^}]*\})", None),
        (r"keyword", "keyword search"),
        (r"placeholder (%[^%]+%)", None),
        (r"\|re\b|regular expression", "regular expression"),
        (r"timestamp-part", "timestamp-part modifier"),
        (r"fieldref", "|fieldref"),
    ):
        match = re.search(pattern, message)
        if match:
            return name or match.group(1)
    return None


def _as_parsed(rule: RuleLike) -> ParsedRule:
    if isinstance(rule, ParsedRule):
        return rule
    return parse_rule(rule)


def convert(rule: RuleLike, *, schemas: SchemaMap | None = None, engine: Any = None) -> Conversion:
    """Convert one Sigma rule to KQL for the ctirealm tables.

    Column types come from *schemas*, else from *engine* (its tables' schemas), else from
    `default_schemas`. Raises `SigmaRuleError` (stage ``parse`` or ``convert``).
    """
    parsed = _as_parsed(rule)
    sigma_rule = parsed.require()
    if schemas is None:
        schemas = schemas_of(engine) if engine is not None else default_schemas()
    return _convert(parsed.label, sigma_rule, _specs_for(schemas))


#: bound table specs by the schemas' fingerprint: ((table, ((column, type), ...)), ...)
_SPECS: dict[tuple[tuple[str, tuple[tuple[str, ...], ...]], ...], dict[str, TableSpec]] = {}


def _specs_for(schemas: SchemaMap) -> dict[str, TableSpec]:
    key = tuple(
        sorted(
            (name, tuple(s.columns if isinstance(s, TableSchema) else (tuple(c) for c in s)))
            for name, s in schemas.items()
        )
    )
    specs = _SPECS.get(key)
    if specs is None:
        if len(_SPECS) > 16:
            _SPECS.clear()
        specs = _SPECS[key] = table_specs(schemas)
    return specs


def _convert(label: str, sigma_rule: SigmaRule, specs: dict[str, TableSpec]) -> Conversion:
    work = copy.deepcopy(sigma_rule)
    # positional: pySigma's Backend.__new__ types every keyword argument as a dict
    backend = CtiRealmKustoBackend(pipeline_from_specs(specs))
    try:
        queries = backend.convert_rule(work)
    except SigmaError as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        raise SigmaRuleError(label, message, construct=_construct(message)) from None
    except NotImplementedError as exc:
        message = f"{exc} (construct not supported by the KQL backend)"
        raise SigmaRuleError(label, message, construct=_construct(str(exc))) from None
    state = backend.last_processing_pipeline.state
    table = state.get(STATE_TABLE)
    if not queries or table is None:
        raise SigmaRuleError(label, "the rule produced no query (empty detection?)")
    condition = _combine([str(q) for q in queries])
    return Conversion(label, str(table), condition, dict(state.get(STATE_FIELDS, {})))


def _combine(conditions: Sequence[str]) -> str:
    if len(conditions) == 1:
        return conditions[0]
    return " or ".join(f"({c})" for c in conditions)
