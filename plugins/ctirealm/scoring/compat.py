"""Compat scoring: the reference benchmark's scorer, reproduced with its quirks.

Use it to compare with published CTI-REALM numbers or to re-score recorded
runs. C0 and Sigma quality need an LLM judge (``--realm-judge``); without one
they are reported as not scored (score ``None``), never as a silent zero.

Like the reference, compat scores whatever it can read of the answer
(`reference_answer`): an answer strict mode rejects (an extra key, a short
Sigma rule, ``query_results`` given as a JSON string or empty) is scored as far
as it goes. Where the reference would crash (a ``query_results`` entry that is
not an object, next to rows a query returned) compat gives C4 KQL 0.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

from ..agents.parse import reference_fields
from ..cases import Case
from ..tools.trajectory import Trajectory
from .model import WEIGHTS, CheckpointScore

# The reference looks for ids case-insensitively (`t1649`, Sigma's `attack.t1059`), upper-cased.
_TECHNIQUE = re.compile(r"T\d{4}(?:\.\d{3})?", re.IGNORECASE)
# Its title pattern: no escapes, no empty titles; any space around the colon.
_TITLE = re.compile(r'"title"\s*:\s*"([^"]+)"')
#: The runner records at most this many characters of an answer (`agents.base`); a longer one is
#: read from its validated submission, as the record is cut.
RECORDED_ANSWER_CHARS = 20_000
_READABLE = ("submitted", "invalid_submission")


class Judge(Protocol):
    """An LLM judge with the reference's two questions, each answered in [0, 1]."""

    def cti_analysis(self, objective: str, tags: list[str], titles: list[str], reasoning: str) -> float: ...

    def sigma_quality(self, objective: str, sigma_rule: str) -> tuple[float, float]: ...


def reference_answer(trajectory: Trajectory) -> dict[str, Any]:
    """The answer as the reference's parser reads it: ``{}`` when there is none to read.

    A run that ended without an answer (crash, timeout, limit) has none. Otherwise the recorded
    answer text is read as the reference reads its model's final output; a trajectory with no
    recorded text (built in code) or whose record was cut is read from its submission.
    """
    if trajectory.status not in _READABLE:
        return {}
    raw = trajectory.raw_answer
    if trajectory.submission is not None and (raw is None or len(raw) >= RECORDED_ANSWER_CHARS):
        return trajectory.submission.to_dict()
    return reference_fields(raw) if raw else {}


def checkpoints(case: Case, trajectory: Trajectory, judge: Judge | None) -> dict[str, CheckpointScore]:
    """Every compat checkpoint; all zero when the reference could read no answer at all."""
    answer = reference_answer(trajectory)
    if not answer:
        reason = (
            trajectory.reason or trajectory.status
            if trajectory.status not in _READABLE
            else "the reference's parser finds no answer in the output"
        )
        return {
            name: CheckpointScore(name, 0.0, weight, f"case scored zero: {reason}")
            for name, weight in WEIGHTS.items()
        }
    scores = (
        c0(case, trajectory, judge),
        c1(case, trajectory),
        c2(case, trajectory),
        c3(case, trajectory),
        c4_kql(case, trajectory, answer),
        c4_sigma(case, trajectory, judge, answer),
    )
    return {c.name: c for c in scores}


def c0(case: Case, trajectory: Trajectory, judge: Judge | None) -> CheckpointScore:
    weight = WEIGHTS["C0_cti_reports"]
    calls = trajectory.tool_calls("list_cti_report_tags") + trajectory.tool_calls("get_cti_reports_by_tag")
    # An empty tag is not a search: the reference skips it.
    tags = [
        str(tag)
        for c in trajectory.tool_calls("get_cti_reports_by_tag")
        if (tag := c.arguments.get("tag", ""))
    ]
    if not calls or not tags:
        return CheckpointScore(
            "C0_cti_reports", 0.0, weight, "no report tag was searched", {"reached": bool(calls)}
        )
    # Titles in the order first seen, from every tool's output, as the judge is shown them.
    titles = list(
        dict.fromkeys(m.group(1) for c in trajectory.tool_calls() for m in _TITLE.finditer(c.result))
    )
    if judge is None:
        return CheckpointScore(
            "C0_cti_reports",
            None,
            weight,
            "not scored: compat C0 needs an LLM judge (--realm-judge)",
            {"tags": tags, "titles": titles},
        )
    ratio = max(0.0, min(1.0, judge.cti_analysis(case.objective, tags, titles, trajectory.assistant_text())))
    return CheckpointScore(
        "C0_cti_reports", weight * ratio, weight, f"judge: {ratio:.2f}", {"tags": tags, "titles": titles}
    )


def c1(case: Case, trajectory: Trajectory) -> CheckpointScore:
    weight = WEIGHTS["C1_attack_mapping"]
    found = {t.upper() for t in _TECHNIQUE.findall(trajectory.assistant_text())}
    expected = {t.upper() for t in case.ground_truth.techniques}
    hit = found & expected
    ratio = len(hit) / len(expected) if expected else 0.0
    return CheckpointScore(
        "C1_attack_mapping",
        weight * ratio,
        weight,
        f"{len(hit)} of {len(expected)} expected technique ids named",
        {"found": sorted(found), "matched": sorted(hit)},
    )


def c2(case: Case, trajectory: Trajectory) -> CheckpointScore:
    weight = WEIGHTS["C2_data_sources"]
    explored = {
        str(c.arguments.get("table_name", "")).lower()
        for c in trajectory.tool_calls()
        if c.name in ("get_table_schema", "sample_table_data")
    }
    explored.discard("")
    expected = {t.lower() for t in case.ground_truth.tables}
    hit = explored & expected
    ratio = len(hit) / len(expected) if expected else 0.0
    return CheckpointScore(
        "C2_data_sources",
        weight * ratio,
        weight,
        f"{len(hit)} of {len(expected)} expected tables explored",
        {"explored": sorted(explored), "matched": sorted(hit)},
    )


def kusto_rows(text: str) -> list[Any]:
    """Rows of a tool result as the reference reads them: the first table of a Kusto JSON
    answer as dicts (columns missing: empty dicts), a JSON list as it is, else nothing."""
    try:
        data = json.loads(text)
        if isinstance(data, dict) and "Tables" in data:
            tables = data.get("Tables", [])
            if tables and "Rows" in tables[0]:
                columns = [column["ColumnName"] for column in tables[0].get("Columns", [])]
                return [dict(zip(columns, row, strict=False)) for row in tables[0].get("Rows", [])]
        if isinstance(data, list):
            return data
    except (json.JSONDecodeError, TypeError, KeyError):
        pass
    return []


def _same_query(text: str) -> str:
    return " ".join(text.lower().split())


def c3(case: Case, trajectory: Trajectory) -> CheckpointScore:
    weight = WEIGHTS["C3_query_iteration"]
    distinct = {
        _same_query(str(c.arguments.get("query", "")).strip())
        for c in trajectory.tool_calls("execute_kql_query")
        if c.result and kusto_rows(c.result)
    }
    ok = len(distinct) >= 2
    return CheckpointScore(
        "C3_query_iteration",
        weight if ok else 0.0,
        weight,
        f"{len(distinct)} distinct queries returned rows",
        {"distinct": len(distinct)},
    )


def _cell(value: Any) -> str:
    return "" if value is None else str(value).strip()  # the reference reads null as ""


def _provenance_ok(submitted: list[Any], trajectory: Trajectory) -> bool:
    pool = [
        {str(k).lower(): _cell(v) for k, v in row.items()}
        for c in trajectory.tool_calls("execute_kql_query")
        for row in kusto_rows(c.result)
        if isinstance(row, dict)
    ]
    if not pool:
        return False
    for row in submitted:
        if not isinstance(row, dict):
            return False  # the reference crashes here; compat gives no KQL credit
        wanted = {str(k).lower(): _cell(v) for k, v in row.items()}
        # The reference compares on the keys both rows share.
        if not any(all(p[k] == v for k, v in wanted.items() if k in p) for p in pool):
            return False
    return True


def _matches(pattern: str, value: Any) -> bool:
    try:
        return re.search(pattern, str(value)) is not None
    except re.error:  # the reference counts an invalid pattern as no match
        return False


def regex_f1(rows: list[Any], patterns: dict[str, str]) -> tuple[float, float, float]:
    """The reference's slot-based precision/recall over submitted rows and regex patterns."""
    if not rows or not patterns:
        return 0.0, 0.0, 0.0
    slots, fields = 0, set()
    for row in rows:
        if not isinstance(row, dict):
            continue
        for column, pattern in patterns.items():
            # The first key of the row that equals the column, case aside; its value as text.
            key = next((k for k in row if str(k).lower() == column.lower()), None)
            if key is not None and _matches(pattern, row[key]):
                slots += 1
                fields.add(column)
    precision = slots / (len(patterns) * len(rows))
    recall = len(fields) / len(patterns)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def c4_kql(case: Case, trajectory: Trajectory, answer: dict[str, Any] | None = None) -> CheckpointScore:
    weight = WEIGHTS["C4_kql_detection"]
    if answer is None:
        answer = reference_answer(trajectory)

    def zero(message: str, **details: Any) -> CheckpointScore:
        return CheckpointScore("C4_kql_detection", 0.0, weight, message, details)

    if "query_results" not in answer:
        return zero("the answer has no query_results")
    patterns = case.ground_truth.regex_patterns
    if not patterns:
        return zero("the case has no regex patterns")
    rows = answer["query_results"]
    if isinstance(rows, str):  # the reference reads a JSON string as its value
        try:
            rows = json.loads(rows)
        except json.JSONDecodeError:
            return zero("query_results is a string that is not JSON")
    if not isinstance(rows, list) or not rows:
        return zero("query_results is not a non-empty list")
    if not _provenance_ok(rows, trajectory):
        return zero("query_results contain rows no execute_kql_query call returned", provenance=False)
    precision, recall, f1 = regex_f1(rows, patterns)
    return CheckpointScore(
        "C4_kql_detection",
        weight * f1,
        weight,
        f"regex F1 {f1:.2f} (precision {precision:.2f}, recall {recall:.2f})",
        {"precision": precision, "recall": recall, "f1": f1, "provenance": True},
    )


def c4_sigma(
    case: Case, trajectory: Trajectory, judge: Judge | None, answer: dict[str, Any] | None = None
) -> CheckpointScore:
    weight = WEIGHTS["C4_sigma_quality"]
    if answer is None:
        answer = reference_answer(trajectory)
    rule = answer.get("sigma_rule")
    if not rule:  # missing or empty: zero without asking the judge, as the reference does
        return CheckpointScore("C4_sigma_quality", 0.0, weight, "the answer has no Sigma rule")
    if judge is None:
        return CheckpointScore(
            "C4_sigma_quality",
            None,
            weight,
            "not scored: compat Sigma quality needs an LLM judge (--realm-judge)",
        )
    syntax, specificity = judge.sigma_quality(case.objective, rule if isinstance(rule, str) else str(rule))
    ratio = 0.25 * max(0.0, min(1.0, syntax)) + 0.75 * max(0.0, min(1.0, specificity))
    return CheckpointScore(
        "C4_sigma_quality",
        weight * ratio,
        weight,
        f"judge: syntax {syntax:.2f}, specificity {specificity:.2f}",
        {"syntax": syntax, "specificity": specificity},
    )
