"""Strict scoring (the default): deterministic checkpoints C0–C3 from the trajectory.

Each function is pure: (case, trajectory[, engine]) -> CheckpointScore, with a
message that says where points were lost. C4 lives in ``detection`` and
``sigma_quality``; ``score_case`` in the package ties them together.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from ..attack import extract_technique_ids
from ..cases import Case
from ..telemetry.attribution import tables_in
from ..tools.trajectory import Trajectory
from .model import WEIGHTS, CheckpointScore


def _f1(found: set[str], relevant: set[str]) -> tuple[float, float, float]:
    hit = len(found & relevant)
    precision = hit / len(found) if found else 0.0
    recall = hit / len(relevant) if relevant else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def reports_read(trajectory: Trajectory) -> list[str]:
    """Ids of the reports whose content a successful report tool call returned, in order."""
    seen: dict[str, None] = {}
    for call in trajectory.tool_calls("get_cti_reports_by_tag"):
        if not call.ok:
            continue
        try:
            for report in json.loads(call.result):
                seen.setdefault(str(report.get("id")), None)
        except (json.JSONDecodeError, AttributeError, TypeError):
            continue
    return list(seen)


def c0_cti_reports(case: Case, trajectory: Trajectory) -> CheckpointScore:
    """F1 of the reports read against the case's relevant reports."""
    weight = WEIGHTS["C0_cti_reports"]
    read, relevant = set(reports_read(trajectory)), set(case.reports)
    precision, recall, f1 = _f1(read, relevant)
    missed, extra = sorted(relevant - read), sorted(read - relevant)
    parts = [f"read {len(read & relevant)} of {len(relevant)} relevant reports"]
    if missed:
        parts.append(f"missed {', '.join(missed)}")
    if extra:
        parts.append(f"{len(extra)} unrelated read")
    return CheckpointScore(
        "C0_cti_reports",
        weight * f1,
        weight,
        "; ".join(parts),
        {
            "read": sorted(read),
            "relevant": sorted(relevant),
            "missed": missed,
            "extra": extra,
            "precision": round(precision, 6),
            "recall": round(recall, 6),
        },
    )


def techniques_found(trajectory: Trajectory) -> list[str]:
    """Technique ids in the assistant's text and reasoning, and in the submitted Sigma tags."""
    text = trajectory.assistant_text()
    if trajectory.submission is not None:
        text += "\n" + trajectory.submission.sigma_rule.replace("attack.t", "T")
    return extract_technique_ids(text)


def technique_jaccard(found: Iterable[str], expected: Iterable[str]) -> tuple[float, dict]:
    """True Jaccard with sub-technique -> parent credit.

    A found id matches an expected id if equal, or if it is a sub-technique of
    it (``T1053.003`` credits expected ``T1053``). A found parent of an expected
    sub-technique is neither credited nor penalised. Every other found id is an
    extra and costs: score = matched / (expected + extras).
    """
    expected_set, found_set = set(expected), set(found)
    matched = {e for e in expected_set if e in found_set or any(f.split(".")[0] == e for f in found_set)}
    neutral = {
        f
        for f in found_set
        if f not in expected_set and any(e.split(".")[0] == f and "." in e for e in expected_set)
    }
    extras = {f for f in found_set if f not in expected_set and f.split(".")[0] not in expected_set} - neutral
    denominator = len(expected_set) + len(extras)
    score = len(matched) / denominator if denominator else 0.0
    return score, {
        "matched": sorted(matched),
        "missed": sorted(expected_set - matched),
        "extra": sorted(extras),
        "neutral": sorted(neutral),
    }


def c1_attack_mapping(case: Case, trajectory: Trajectory) -> CheckpointScore:
    weight = WEIGHTS["C1_attack_mapping"]
    found = techniques_found(trajectory)
    ratio, detail = technique_jaccard(found, case.ground_truth.techniques)
    parts = []
    if detail["matched"]:
        parts.append(f"found {', '.join(detail['matched'])}")
    if detail["missed"]:
        parts.append(f"missed {', '.join(detail['missed'])}")
    if detail["extra"]:
        parts.append(f"extra {', '.join(detail['extra'])}")
    return CheckpointScore(
        "C1_attack_mapping",
        weight * ratio,
        weight,
        ", ".join(parts) or "no technique ids named",
        {**detail, "named": found},
    )


def tables_explored(trajectory: Trajectory, tables: Iterable[str]) -> list[str]:
    """Tables the agent looked at: schema or sample calls, and tables its successful queries read.

    A query's tables are resolved with the KQL parser (`telemetry.attribution.tables_in`):
    bracket-quoted names count, names in string literals and comments do not.
    """
    names = list(tables)
    known = {t.lower(): t for t in names}
    seen: dict[str, None] = {}
    for call in trajectory.tool_calls():
        if not call.ok:
            continue
        if call.name in ("get_table_schema", "sample_table_data"):
            name = str(call.arguments.get("table_name", "")).strip().lower()
            if name in known:
                seen.setdefault(known[name], None)
        elif call.name == "execute_kql_query":
            for table in tables_in(str(call.arguments.get("query", "")), names):
                seen.setdefault(table, None)
    return list(seen)


def c2_data_sources(case: Case, trajectory: Trajectory, tables: Iterable[str]) -> CheckpointScore:
    weight = WEIGHTS["C2_data_sources"]
    explored = set(tables_explored(trajectory, tables))
    expected = set(case.ground_truth.tables)
    union = explored | expected
    ratio = len(explored & expected) / len(union) if union else 0.0
    missed, extra = sorted(expected - explored), sorted(explored - expected)
    parts = [f"explored {len(explored & expected)} of {len(expected)} relevant tables"]
    if missed:
        parts.append(f"missed {', '.join(missed)}")
    if extra:
        parts.append(f"also explored {', '.join(extra)}")
    return CheckpointScore(
        "C2_data_sources",
        weight * ratio,
        weight,
        "; ".join(parts),
        {"explored": sorted(explored), "expected": sorted(expected), "missed": missed, "extra": extra},
    )


def normalise_query(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def successful_queries(
    trajectory: Trajectory, reading: Iterable[str] | None = None, tables: Iterable[str] = ()
) -> list[str]:
    """Distinct (normalised) queries that ran without error and returned rows.

    With *reading*, only those that read at least one of these tables (resolved
    with the KQL parser against the known *tables*).
    """
    wanted = set(reading) if reading is not None else None
    known = list(tables) or sorted(wanted or ())
    seen: dict[str, None] = {}
    for call in trajectory.tool_calls("execute_kql_query"):
        if not (call.ok and (call.rows or 0) > 0):
            continue
        query = str(call.arguments.get("query", ""))
        if wanted is not None and not wanted & set(tables_in(query, known)):
            continue
        seen.setdefault(normalise_query(query), None)
    return list(seen)


def c3_query_iteration(case: Case, trajectory: Trajectory, tables: Iterable[str] = ()) -> CheckpointScore:
    """Iteration over the data the case needs: distinct successful queries reading its tables.

    A query counts when it ran, returned rows and reads at least one of the case's
    ``ground_truth.tables`` (*tables* are the known table names, for ``union *``
    and wildcards). Two or more give full credit, one gives half; queries over
    other tables earn nothing.
    """
    weight = WEIGHTS["C3_query_iteration"]
    relevant = list(case.ground_truth.tables)
    counted = successful_queries(trajectory, relevant, tables)
    distinct = successful_queries(trajectory)
    total = len(trajectory.tool_calls("execute_kql_query"))
    ratio = 1.0 if len(counted) >= 2 else 0.5 * len(counted)
    return CheckpointScore(
        "C3_query_iteration",
        weight * ratio,
        weight,
        f"{len(counted)} distinct successful queries over the case's tables "
        f"({', '.join(relevant)}) of {total} run (2 needed)",
        # distinct_successful: the queries that count (the report explains C3 by it).
        {
            "distinct_successful": len(counted),
            "distinct_successful_any_table": len(distinct),
            "case_tables": relevant,
            "queries_run": total,
        },
    )
