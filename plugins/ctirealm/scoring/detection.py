"""Detection evaluation: execute a query over the whole store and count events, not rows.

Attribution of result rows (documented in docs/scoring.md):

1. **By id** (`telemetry.attribution.trace`, shared with the rules gate). A column
   named like the id column of a table the query reads (``ReportId``, ``AuditId``,
   ``Id``, ``EventDataId``, ``RequestId``, ``OfficeId``, ``CorrelationId``; also
   join-suffixed ``ReportId1``) traces the row to events. The case's attack
   events are true positives; any other event (generated background, a hard
   negative, another case's attack) is a false positive.
2. **By marker and values**, when no id column is returned: the row is matched
   to a case attack event if it carries a column named in the case's
   ``regex_patterns`` whose value matches, and every column it shares with that
   event has the event's value. A row whose shared columns equal a hard
   negative's values is a false positive.
3. Anything else cannot be attributed: it never counts as a true positive and
   counts as a false positive (an aggregate over everything proves nothing).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..cases import Case
from ..engine import Engine, EngineError
from ..telemetry.attribution import canonical, fetch_events, trace
from ..telemetry.labels import Labels
from ..telemetry.schema import TableSchema
from .model import DetectionResult, f1_from

MAX_ROWS = 50_000


def _shared_equal(row: dict[str, Any], event: dict[str, Any]) -> int:
    """Number of shared columns (case-insensitive names) if all are equal, else 0."""
    lowered = {k.lower(): v for k, v in event.items() if not k.startswith("__")}
    shared = 0
    for key, value in row.items():
        other = lowered.get(key.lower(), _MISSING)
        if other is _MISSING:
            continue
        if canonical(value) != canonical(other):
            return 0
        shared += 1
    return shared


_MISSING = object()


def _marker_hit(row: dict[str, Any], patterns: Mapping[str, str]) -> bool:
    lowered = {k.lower(): v for k, v in row.items()}
    for column, pattern in patterns.items():
        if column.lower() in lowered and re.search(pattern, canonical(lowered[column.lower()]),
                                                   re.IGNORECASE):
            return True
    return False


def evaluate_query(
    kql: str,
    case: Case,
    engine: Engine,
    labels: Labels,
    schemas: Mapping[str, TableSchema],
    *,
    max_rows: int = MAX_ROWS,
    timeout: float | None = None,
    examples: int = 3,
) -> DetectionResult:
    """Execute *kql* over the whole store and score it against *case*'s attack events."""
    expected = {(t, i) for t, ids in case.ground_truth.attack_events.items() for i in ids}
    outcome = DetectionResult(fn=len(expected), missed_attack=sorted(f"{t}:{i}" for t, i in expected))
    try:
        result = engine.query(kql, limit=max_rows, timeout=timeout)
    except EngineError as exc:
        outcome.error = str(exc)
        return outcome
    rows = result.to_dicts()
    traced = trace(kql, result.column_names, rows, engine, schemas, labels, prefer=expected)
    outcome.rows = len(rows)
    matched: set[tuple[str, str]] = set()
    false_events: set[tuple[str, str]] = set()
    other_attacks: set[tuple[str, str]] = set()
    unattributed = 0
    attack_rows: list[dict[str, Any]] | None = None
    negative_rows: list[dict[str, Any]] | None = None
    for row, events in zip(rows, traced.events, strict=True):
        if events:
            for event in events:
                if event in expected:
                    matched.add(event)
                elif labels.kind(event[0], event[1]) == "attack":
                    other_attacks.add(event)
                else:
                    false_events.add(event)
                    if len(outcome.false_positive_examples) < examples:
                        outcome.false_positive_examples.append(_example(row, event, labels))
            continue
        # No id column: attribute through markers and values.
        if attack_rows is None:
            attack_rows = fetch_events(engine, schemas, case.ground_truth.attack_events)
            negative_rows = fetch_events(engine, schemas, case.ground_truth.hard_negatives)
        hit = None
        if _marker_hit(row, case.ground_truth.regex_patterns):
            best = max(((_shared_equal(row, e), e) for e in attack_rows), key=lambda p: p[0],
                       default=(0, None))
            if best[0] and best[1] is not None:
                hit = (best[1]["__table__"], best[1]["__id__"])
        if hit is not None:
            matched.add(hit)
            continue
        negative = next((e for e in negative_rows or [] if _shared_equal(row, e) >= 1), None)
        if negative is not None:
            false_events.add((negative["__table__"], negative["__id__"]))
        else:
            unattributed += 1
        if len(outcome.false_positive_examples) < examples:
            outcome.false_positive_examples.append({"row": _trim(row)})
    extra = 0
    if result.truncated:
        try:
            total = engine.query(f"{kql}\n| count", timeout=timeout).rows[0][0]
            extra = max(0, int(total) - len(rows))
        except (EngineError, IndexError, TypeError, ValueError):
            extra = 0
    outcome.unattributed = unattributed + extra
    outcome.tp = len(matched)
    outcome.fp = len(false_events) + outcome.unattributed
    outcome.fn = len(expected - matched)
    outcome.precision, outcome.recall, outcome.f1 = f1_from(outcome.tp, outcome.fp, outcome.fn)
    outcome.matched_attack = sorted(f"{t}:{i}" for t, i in matched)
    outcome.missed_attack = sorted(f"{t}:{i}" for t, i in expected - matched)
    outcome.other_attacks = len(other_attacks)
    outcome.hard_negatives_matched = sum(
        1 for t, i in false_events if labels.kind(t, i) == "hard_negative")
    return outcome


def _trim(row: dict[str, Any], width: int = 160) -> dict[str, Any]:
    out = {}
    for key, value in list(row.items())[:8]:
        text = canonical(value)
        out[key] = text if len(text) <= width else text[: width - 1] + "…"
    return out


def _example(row: dict[str, Any], event: tuple[str, str], labels: Labels) -> dict[str, Any]:
    return {"table": event[0], "id": event[1], "kind": labels.kind(*event), "row": _trim(row)}


def check_provenance(
    submitted: list[dict[str, Any]], returned: list[list[dict[str, Any]]]
) -> list[str]:
    """Problems with submitted ``query_results``: each row must be a row a query really returned.

    Every key of a submitted row must exist in the returned row (names compared
    case-insensitively) with the same value; ``returned`` holds the rows of every
    successful ``execute_kql_query`` call.
    """
    pool = [{k.lower(): canonical(v) for k, v in row.items()} for rows in returned for row in rows]
    problems = []
    for index, row in enumerate(submitted):
        if not isinstance(row, dict) or not row:
            problems.append(f"query_results[{index}] is not a row of column: value")
            continue
        wanted = {k.lower(): canonical(v) for k, v in row.items()}
        if not any(all(k in p and p[k] == v for k, v in wanted.items()) for p in pool):
            problems.append(f"query_results[{index}] was not returned by any execute_kql_query call")
    return problems
