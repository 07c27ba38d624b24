"""Executing a rule over telemetry and tracing what it matched back to labelled events.

`evaluate` converts a Sigma rule, runs it over the whole store (no row cap), projects the
table's id column and looks every matched id up in the labels: attack events (grouped by
simulation), committed hard negatives and generated background. Against an expected set (a
case's ``attack_events``) it reports true positives, missed events, precision, recall and F1.
`evaluate_kql` does the same for a plain KQL query when its result carries an id column;
otherwise the result says the rows cannot be attributed and why.

Counting rules (documented in docs/sigma.md):

* true positive: a matched event in the expected set;
* false positive: a matched event labelled benign — background or hard negative (hard
  negatives are also listed on their own);
* a matched attack event outside the expected set (another simulation's) is neither: it is
  listed under ``other_attacks``;
* recall counts the expected events of the tables the query reads; expected events in other
  tables are reported as ``expected_elsewhere`` (a Sigma rule reads one table).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..engine import EngineError
from ..engine.result import to_json_value
from ..telemetry.attribution import trace
from ..telemetry.labels import Labels
from .convert import Conversion, RuleLike, _as_parsed, convert, schemas_of
from .parse import SigmaRuleError

#: Each table's id column (docs/formats.md); engines that know their schemas take precedence.
DEFAULT_ID_COLUMNS: dict[str, str] = {
    "DeviceProcessEvents": "ReportId", "DeviceFileEvents": "ReportId",
    "AKSAudit": "AuditId", "AKSAuditAdmin": "AuditId", "AzureActivity": "EventDataId",
    "AzureDiagnostics": "CorrelationId", "StorageBlobLogs": "CorrelationId",
    "SigninLogs": "Id", "AADServicePrincipalSignInLogs": "Id", "AuditLogs": "Id",
    "MicrosoftGraphActivityLogs": "RequestId", "OfficeActivity": "OfficeId",
}

#: A row cap high enough to mean "all of it" when the engine's own cap cut a result short.
_UNCAPPED = 50_000_000


@dataclass
class RuleResult:
    """What a rule or query matched, traced to labelled events."""

    rule: str
    kql: str | None = None
    table: str | None = None
    error: str | None = None
    stage: str | None = None  # parse | convert | execute, when error is set
    attributable: bool = True
    reason: str | None = None  # why rows could not be attributed
    matched: int = 0
    attack: dict[str, list[str]] = field(default_factory=dict)  # simulation -> ids
    hard_negatives: list[str] = field(default_factory=list)
    background: list[str] = field(default_factory=list)
    expected: list[str] | None = None
    expected_elsewhere: int = 0
    true_positives: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    other_attacks: list[str] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def false_positives(self) -> list[str]:
        """Benign matches: hard negatives and background."""
        return sorted(self.hard_negatives + self.background, key=_id_key)

    @property
    def tp(self) -> int:
        return len(self.true_positives)

    @property
    def fp(self) -> int:
        return len(self.hard_negatives) + len(self.background)

    @property
    def fn(self) -> int:
        return len(self.missed)

    @property
    def precision(self) -> float | None:
        if self.expected is None:
            return None
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float | None:
        if self.expected is None:
            return None
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        if p is None or r is None:
            return None
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(tp=self.tp, fp=self.fp, fn=self.fn, precision=self.precision,
                   recall=self.recall, f1=self.f1)
        return out

    def summary(self) -> str:
        """One line: what matched, what was missed."""
        if self.error:
            return f"{self.stage} failed: {self.error}"
        if not self.attributable:
            return f"matched {self.matched} rows, not attributable: {self.reason}"
        attack = sum(len(v) for v in self.attack.values())
        parts = [f"matched {self.matched} events: {attack} attack, {len(self.hard_negatives)} "
                 f"hard negative, {len(self.background)} background"]
        if self.expected is not None:
            parts.append(f"caught {self.tp} of {len(self.expected)} expected")
            parts.append(f"precision {_fmt(self.precision)}, recall {_fmt(self.recall)}, "
                         f"F1 {_fmt(self.f1)}")
        return "; ".join(parts)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _id_key(value: str) -> tuple[int, str]:
    return (0, f"{int(value):020d}") if value.isdigit() else (1, value)


def id_column(engine: Any, table: str) -> str | None:
    """The id column of *table*: from the engine's schema when it knows, else the documented one."""
    getter = getattr(engine, "table_schema", None)
    if getter is not None:
        try:
            return str(getter(table).id_column)
        except Exception:  # noqa: BLE001 - an engine without schemas for this table
            pass
    return DEFAULT_ID_COLUMNS.get(table)


def _expected_ids(expected: Mapping[str, Iterable[Any]] | Iterable[Any] | None,
                  tables: Iterable[str]) -> tuple[list[str] | None, int]:
    if expected is None:
        return None, 0
    if isinstance(expected, Mapping):
        wanted = set(tables)
        inside = sorted({str(i) for t, ids in expected.items() if t in wanted for i in ids},
                        key=_id_key)
        elsewhere = sum(len(list(ids)) for t, ids in expected.items() if t not in wanted)
        return inside, elsewhere
    return sorted({str(i) for i in expected}, key=_id_key), 0


def _run_all(engine: Any, kql: str, timeout: float | None) -> Any:
    result = engine.query(kql, timeout=timeout)
    if getattr(result, "truncated", False) and hasattr(engine, "max_rows"):
        saved = engine.max_rows
        engine.max_rows = _UNCAPPED
        try:
            result = engine.query(kql, timeout=timeout)
        finally:
            engine.max_rows = saved
    return result


def _attribute(result: RuleResult, table_ids: dict[str, list[str]], labels: Any,
               expected: Any, engine: Any, kql_for_examples: dict[str, str],
               examples: int, timeout: float | None) -> None:
    matched: set[tuple[str, str]] = set()
    for table, ids in table_ids.items():
        for event_id in ids:
            matched.add((table, event_id))
    result.matched = len(matched)
    expected_ids, elsewhere = _expected_ids(expected, table_ids)
    result.expected = expected_ids
    result.expected_elsewhere = elsewhere
    wanted = set(expected_ids or ())
    attack: dict[str, set[str]] = {}
    for table, event_id in sorted(matched):
        kind = labels.kind(table, event_id) if labels is not None else "benign"
        if kind == "attack":
            group = labels.group(table, event_id) or "?"
            attack.setdefault(group, set()).add(event_id)
            if expected_ids is None or event_id in wanted:
                result.true_positives.append(event_id)
            else:
                result.other_attacks.append(event_id)
        elif kind == "hard_negative":
            result.hard_negatives.append(event_id)
        else:
            result.background.append(event_id)
    if expected_ids is not None:
        hit = set(result.true_positives)
        result.missed = [i for i in expected_ids if i not in hit]
    result.attack = {g: sorted(v, key=_id_key) for g, v in sorted(attack.items())}
    for name in ("true_positives", "hard_negatives", "background", "other_attacks"):
        setattr(result, name, sorted(set(getattr(result, name)), key=_id_key))
    if examples > 0:
        result.examples = _examples(result, engine, table_ids, kql_for_examples, examples, timeout)


def _examples(result: RuleResult, engine: Any, table_ids: dict[str, list[str]],
              source: dict[str, str], limit: int, timeout: float | None) -> list[dict[str, Any]]:
    """Up to *limit* matched rows: false positives first (they need looking at), then attacks."""
    chosen = (result.hard_negatives + result.background + result.true_positives
              + result.other_attacks)[:limit]
    rows: list[dict[str, Any]] = []
    for table in sorted(table_ids):
        ids = [i for i in chosen if i in set(table_ids[table])]
        column = id_column(engine, table)
        if not ids or column is None or table not in source:
            continue
        literal = ", ".join(i if i.isdigit() else '"' + i.replace('"', '\\"') + '"' for i in ids)
        try:
            found = engine.query(f"{table}\n| where {column} in ({literal})", timeout=timeout)
        except EngineError:
            continue
        for row in found.to_dicts():
            kind = "benign"
            event_id = str(row.get(column))
            if event_id in result.true_positives or event_id in result.other_attacks:
                kind = "attack"
            elif event_id in result.hard_negatives:
                kind = "hard_negative"
            compact = {k: to_json_value(v) for k, v in row.items() if v not in (None, "", {}, [])}
            rows.append({"table": table, "id": event_id, "label": kind, "row": compact})
    order = {i: n for n, i in enumerate(chosen)}
    rows.sort(key=lambda r: order.get(r["id"], len(order)))
    return rows[:limit]


def evaluate(rule: RuleLike, engine: Any, labels: Any = None, *,
             expected: Mapping[str, Iterable[Any]] | Iterable[Any] | None = None,
             examples: int = 5, timeout: float | None = None,
             conversion: Conversion | None = None) -> RuleResult:
    """Convert *rule*, run it over the whole store and trace matches through *labels*.

    *expected* is ``{table: ids}`` (a case's ``ground_truth.attack_events``) or a list of ids.
    Errors never raise: they come back in ``error`` with the ``stage`` that failed.
    """
    started = time.perf_counter()
    parsed = _as_parsed(rule)
    result = RuleResult(parsed.label)
    if conversion is None:
        try:
            conversion = convert(parsed, schemas=schemas_of(engine))
        except SigmaRuleError as exc:
            result.error, result.stage = exc.reason, exc.stage
            result.elapsed = time.perf_counter() - started
            return result
    result.kql, result.table = conversion.kql, conversion.table
    column = id_column(engine, conversion.table)
    if column is None:
        result.error, result.stage = f"no id column known for {conversion.table}", "execute"
        return result
    try:
        found = _run_all(engine, f"{conversion.kql}\n| project {column}", timeout)
    except EngineError as exc:
        result.error, result.stage = str(exc), "execute"
        result.elapsed = time.perf_counter() - started
        return result
    ids = [str(row[0]) for row in found.rows if row[0] is not None]
    _attribute(result, {conversion.table: ids}, labels, expected, engine,
               {conversion.table: conversion.kql}, examples, timeout)
    result.elapsed = time.perf_counter() - started
    return result


def evaluate_kql(kql: str, engine: Any, labels: Any = None, *,
                 expected: Mapping[str, Iterable[Any]] | Iterable[Any] | None = None,
                 table: str | None = None, examples: int = 5,
                 timeout: float | None = None) -> RuleResult:
    """Run a KQL query over the whole store and attribute its rows by id column when it can.

    Rows are traced to events as `telemetry.attribution.trace` does (the id column of a
    table the query reads, join-suffixed too, holding an event id). With no such
    column in the result (or none of *table*'s), ``attributable`` is False and
    ``reason`` says which column to project.
    """
    started = time.perf_counter()
    result = RuleResult("query", kql=kql)
    try:
        found = _run_all(engine, kql, timeout)
    except EngineError as exc:
        result.error, result.stage = str(exc), "execute"
        result.elapsed = time.perf_counter() - started
        return result
    schemas = dict(engine.schemas)
    rows = found.to_dicts()
    traced = trace(kql, found.column_names, rows, engine, schemas,
                   labels if labels is not None else Labels(), prefer=_preferred(expected),
                   tables=[table] if table else None)
    result.matched = len(found.rows)
    if not traced.traceable:
        wanted = ", ".join(f"{schemas[t].id_column} for {t}" for t in traced.tables) or \
            "the id column of the table it reads"
        result.attributable = False
        result.reason = f"the result has no id column to trace rows to events; project {wanted}"
        result.table = "|".join(traced.tables) or None
        result.expected, result.expected_elsewhere = _expected_ids(expected, traced.tables)
        result.elapsed = time.perf_counter() - started
        return result
    named = traced.by_table()
    result.table = "|".join(traced.traceable)
    _attribute(result, {t: named.get(t, []) for t in traced.traceable}, labels, expected, engine,
               {t: kql for t in traced.traceable}, examples, timeout)
    result.elapsed = time.perf_counter() - started
    return result


def _preferred(expected: Mapping[str, Iterable[Any]] | Iterable[Any] | None) -> set[tuple[str, str]]:
    if isinstance(expected, Mapping):
        return {(t, str(i)) for t, ids in expected.items() for i in ids}
    return set()
