"""Compat scoring: the reference benchmark's formulas, reproduced exactly.

Use it to compare with published CTI-REALM numbers or to re-score recorded
runs. C0 and Sigma quality need an LLM judge (``--realm-judge``); without one
they are reported as not scored (score ``None``), never as a silent zero.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from ..cases import Case
from ..tools.toolbox import result_rows
from ..tools.trajectory import Trajectory
from .model import WEIGHTS, CheckpointScore
from .strict import normalise_query

_TECHNIQUE = re.compile(r"T\d{4}(?:\.\d{3})?")
_TITLE = re.compile(r'"title":\s*"((?:[^"\\]|\\.)*)"')


class Judge(Protocol):
    """An LLM judge with the reference's two questions, each answered in [0, 1]."""

    def cti_analysis(self, objective: str, tags: list[str], titles: list[str],
                     reasoning: str) -> float: ...

    def sigma_quality(self, objective: str, sigma_rule: str) -> tuple[float, float]: ...


def c0(case: Case, trajectory: Trajectory, judge: Judge | None) -> CheckpointScore:
    weight = WEIGHTS["C0_cti_reports"]
    calls = trajectory.tool_calls("list_cti_report_tags") + trajectory.tool_calls("get_cti_reports_by_tag")
    tags = [str(c.arguments.get("tag", "")) for c in trajectory.tool_calls("get_cti_reports_by_tag")]
    if not calls or not tags:
        return CheckpointScore("C0_cti_reports", 0.0, weight, "no report tag was searched",
                               {"reached": bool(calls)})
    titles = sorted({m.group(1) for c in trajectory.tool_calls() for m in _TITLE.finditer(c.result)})
    if judge is None:
        return CheckpointScore("C0_cti_reports", None, weight,
                               "not scored: compat C0 needs an LLM judge (--realm-judge)",
                               {"tags": tags, "titles": titles})
    ratio = max(0.0, min(1.0, judge.cti_analysis(case.objective, tags, titles,
                                                  trajectory.assistant_text())))
    return CheckpointScore("C0_cti_reports", weight * ratio, weight, f"judge: {ratio:.2f}",
                           {"tags": tags, "titles": titles})


def c1(case: Case, trajectory: Trajectory) -> CheckpointScore:
    weight = WEIGHTS["C1_attack_mapping"]
    found = set(_TECHNIQUE.findall(trajectory.assistant_text()))
    expected = set(case.ground_truth.techniques)
    hit = found & expected
    ratio = len(hit) / len(expected) if expected else 0.0
    return CheckpointScore("C1_attack_mapping", weight * ratio, weight,
                           f"{len(hit)} of {len(expected)} expected technique ids named",
                           {"found": sorted(found), "matched": sorted(hit)})


def c2(case: Case, trajectory: Trajectory) -> CheckpointScore:
    weight = WEIGHTS["C2_data_sources"]
    explored = {str(c.arguments.get("table_name", "")).lower()
                for c in trajectory.tool_calls() if c.name in ("get_table_schema", "sample_table_data")}
    expected = {t.lower() for t in case.ground_truth.tables}
    hit = explored & expected
    ratio = len(hit) / len(expected) if expected else 0.0
    return CheckpointScore("C2_data_sources", weight * ratio, weight,
                           f"{len(hit)} of {len(expected)} expected tables explored",
                           {"explored": sorted(explored), "matched": sorted(hit)})


def c3(case: Case, trajectory: Trajectory) -> CheckpointScore:
    weight = WEIGHTS["C3_query_iteration"]
    distinct = {normalise_query(str(c.arguments.get("query", "")))
                for c in trajectory.tool_calls("execute_kql_query") if result_rows(c.result)}
    ok = len(distinct) >= 2
    return CheckpointScore("C3_query_iteration", weight if ok else 0.0, weight,
                           f"{len(distinct)} distinct queries returned rows", {"distinct": len(distinct)})


def _provenance_ok(submitted: list[dict[str, Any]], trajectory: Trajectory) -> bool:
    pool = [{k.lower(): str(v).strip() for k, v in row.items()}
            for c in trajectory.tool_calls("execute_kql_query") for row in result_rows(c.result)]
    for row in submitted:
        if not isinstance(row, dict):
            return False
        wanted = {k.lower(): str(v).strip() for k, v in row.items()}
        # The reference compares on the keys both rows share.
        if not any(all(p[k] == v for k, v in wanted.items() if k in p) for p in pool):
            return False
    return True


def regex_f1(rows: list[dict[str, Any]], patterns: dict[str, str]) -> tuple[float, float, float]:
    """The reference's slot-based precision/recall over submitted rows and regex patterns."""
    if not rows or not patterns:
        return 0.0, 0.0, 0.0
    slots, fields = 0, set()
    for row in rows:
        lowered = {str(k).lower(): v for k, v in row.items()} if isinstance(row, dict) else {}
        for column, pattern in patterns.items():
            value = lowered.get(column.lower())
            if value is not None and re.search(pattern, str(value)):
                slots += 1
                fields.add(column)
    precision = slots / (len(patterns) * len(rows))
    recall = len(fields) / len(patterns)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def c4_kql(case: Case, trajectory: Trajectory) -> CheckpointScore:
    weight = WEIGHTS["C4_kql_detection"]
    rows = trajectory.submission.query_results if trajectory.submission else []
    if not _provenance_ok(rows, trajectory):
        return CheckpointScore("C4_kql_detection", 0.0, weight,
                               "query_results contain rows no execute_kql_query call returned",
                               {"provenance": False})
    precision, recall, f1 = regex_f1(rows, case.ground_truth.regex_patterns)
    return CheckpointScore("C4_kql_detection", weight * f1, weight,
                           f"regex F1 {f1:.2f} (precision {precision:.2f}, recall {recall:.2f})",
                           {"precision": precision, "recall": recall, "f1": f1, "provenance": True})


def c4_sigma(case: Case, trajectory: Trajectory, judge: Judge | None) -> CheckpointScore:
    weight = WEIGHTS["C4_sigma_quality"]
    rule = trajectory.submission.sigma_rule if trajectory.submission else ""
    if judge is None:
        return CheckpointScore("C4_sigma_quality", None, weight,
                               "not scored: compat Sigma quality needs an LLM judge (--realm-judge)")
    syntax, specificity = judge.sigma_quality(case.objective, rule)
    ratio = 0.25 * max(0.0, min(1.0, syntax)) + 0.75 * max(0.0, min(1.0, specificity))
    return CheckpointScore("C4_sigma_quality", weight * ratio, weight,
                           f"judge: syntax {syntax:.2f}, specificity {specificity:.2f}",
                           {"syntax": syntax, "specificity": specificity})
