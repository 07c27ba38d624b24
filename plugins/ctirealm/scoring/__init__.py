"""Scoring: checkpoints C0–C4 in ``strict`` (default, deterministic) and ``compat`` modes.

`score_case` is a pure function of (case, trajectory, engine, labels): the
same inputs always give the same scores. `summarize` aggregates cases into the
run summary with 95% confidence intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from ..cases import Case
from ..engine import Engine
from ..telemetry.labels import Labels
from ..telemetry.schema import TableSchema
from ..tools.toolbox import result_rows
from ..tools.trajectory import Trajectory
from . import compat, strict
from .detection import (
    check_provenance,
    evaluate,
    evaluate_query,
    evaluate_rule,
    neutral_events,
)
from .model import (
    CHECKPOINTS,
    PROCESS,
    PROCESS_FULL_F1,
    TOTAL,
    WEIGHTS,
    CaseScore,
    CheckpointScore,
    DetectionResult,
)

#: (sigma_rule_text, case, neutral events) -> (syntax score in [0,1], executed result or None,
#: message)
SigmaScorer = Callable[[str, Case, Collection[tuple[str, str]]], tuple[float, DetectionResult | None, str]]
MODES = ("strict", "compat")


def _zeroed(case: Case, trajectory: Trajectory) -> dict[str, CheckpointScore]:
    reason = trajectory.reason or trajectory.status
    return {
        name: CheckpointScore(name, 0.0, weight, f"case scored zero: {reason}")
        for name, weight in WEIGHTS.items()
    }


def _tool_rows(trajectory: Trajectory) -> list[list[dict[str, Any]]]:
    return [result_rows(c.result) for c in trajectory.tool_calls("execute_kql_query") if c.ok]


def score_case(
    case: Case,
    trajectory: Trajectory,
    *,
    engine: Engine,
    labels: Labels,
    schemas: Mapping[str, TableSchema],
    mode: str = "strict",
    sigma_scorer: SigmaScorer | None = None,
    judge: compat.Judge | None = None,
    timeout: float | None = None,
    neutral: Collection[tuple[str, str]] = (),
) -> CaseScore:
    """Every checkpoint of one case for one trajectory.

    *neutral* holds the ``(table, id)`` events that are neither true nor false
    positives for this case: other cases' attack events of a shared technique
    (`neutral_events`). Every other case's attack event is a false positive.
    """
    if mode not in MODES:
        raise ValueError(f"unknown scoring mode {mode!r}; use strict or compat")
    score = CaseScore(case.id, case.platform, trajectory.epoch, trajectory.status, trajectory.reason, {})
    if mode == "compat":  # the reference scores whatever it can read of an answer
        score.checkpoints = compat.checkpoints(case, trajectory, judge)
        return score
    if trajectory.status != "submitted" or trajectory.submission is None:
        score.checkpoints = _zeroed(case, trajectory)
        return score
    submission = trajectory.submission
    checkpoints = [
        strict.c0_cti_reports(case, trajectory),
        strict.c1_attack_mapping(case, trajectory),
        strict.c2_data_sources(case, trajectory, schemas),
        strict.c3_query_iteration(case, trajectory, schemas),
    ]
    detection = evaluate_query(
        submission.kql_query, case, engine, labels, schemas, neutral=neutral, timeout=timeout
    )
    score.detection["kql"] = detection
    problems = check_provenance(submission.query_results, _tool_rows(trajectory))
    weight = WEIGHTS["C4_kql_detection"]
    kql_f1 = 0.0
    if detection.error:
        checkpoints.append(
            CheckpointScore("C4_kql_detection", 0.0, weight, f"the final KQL failed: {detection.error}")
        )
        score.errors.append(f"kql: {detection.error}")
    elif problems:
        checkpoints.append(
            CheckpointScore(
                "C4_kql_detection",
                0.0,
                weight,
                f"no detection credit: {problems[0]}"
                + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""),
                {"provenance": problems, **detection.to_dict()},
            )
        )
    else:
        kql_f1 = detection.f1
        checkpoints.append(
            CheckpointScore(
                "C4_kql_detection",
                weight * detection.f1,
                weight,
                _detection_message(detection, case),
                detection.to_dict(),
            )
        )
    sigma = _sigma_checkpoint(submission.sigma_rule, case, sigma_scorer, score, neutral)
    checkpoints.append(sigma)
    best = max(kql_f1, float(sigma.details.get("executed_f1", 0.0)))
    score.checkpoints = {c.name: process_paid(c, best) if c.name in PROCESS else c for c in checkpoints}
    return score


def process_paid(checkpoint: CheckpointScore, detection_f1: float) -> CheckpointScore:
    """A workflow checkpoint (C0–C3) paid in proportion to the final detection it led to.

    Reports read, techniques named, tables explored and queries run are the detection
    engineer's path, and a path is worth what it reached: a lazy walk (reports found by the
    objective's words, the tables it suggests, two queries on them) costs nothing to fake. The
    checkpoint pays in full when the better of the final KQL's F1 (with its provenance held)
    and the Sigma rule's executed F1 reaches `PROCESS_FULL_F1`, that share of its score below,
    and nothing when neither detection catches the attack.
    """
    if checkpoint.score is None:
        return checkpoint
    factor = min(1.0, detection_f1 / PROCESS_FULL_F1)
    earned = checkpoint.score
    message = checkpoint.message
    if factor < 1.0 and earned:
        message += (
            f"; paid ×{factor:.2f} of {earned:.2f}: the final detection's F1 is "
            f"{detection_f1:.2f} (full from {PROCESS_FULL_F1:.2f})"
        )
    return CheckpointScore(
        checkpoint.name,
        earned * factor,
        checkpoint.max,
        message,
        {**checkpoint.details, "earned": round(earned, 6), "detection_factor": round(factor, 6)},
    )


def _detection_message(result: DetectionResult, case: Case) -> str:
    total = case.ground_truth.attack_event_count()
    text = f"matched {result.tp} of {total} attack events, {result.fp} false positives"
    if result.hard_negatives_matched:
        text += f" ({result.hard_negatives_matched} hard negatives)"
    if result.other_attacks:
        text += f"; {result.other_attacks} neutral (another case's attack, same technique)"
    return text + f"; F1 {result.f1:.2f}"


def _sigma_checkpoint(
    rule: str, case: Case, scorer: SigmaScorer | None, score: CaseScore, neutral: Collection[tuple[str, str]]
) -> CheckpointScore:
    weight = WEIGHTS["C4_sigma_quality"]
    if scorer is None:
        return CheckpointScore("C4_sigma_quality", None, weight, "not scored: no Sigma scorer")
    syntax, result, message = scorer(rule, case, neutral)
    if result is not None:
        score.detection["sigma"] = result
        if result.error:
            score.errors.append(f"sigma: {result.error}")
    executed = result.f1 if result is not None and not result.error else 0.0
    # Validator findings discount a rule that detects: any valid YAML passes the validators, and
    # a rule that catches nothing (or everything) proves no detection skill however clean it is.
    ratio = executed * (0.75 + 0.25 * syntax)
    return CheckpointScore(
        "C4_sigma_quality",
        weight * ratio,
        weight,
        f"syntax {syntax:.2f}, executed F1 {executed:.2f}; {message}".rstrip("; "),
        {"syntax": syntax, "executed_f1": executed, **(result.to_dict() if result is not None else {})},
    )


def _interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and a normal-approximation 95% confidence interval."""
    if not values:
        return 0.0, 0.0, 0.0
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = 1.96 * sd / math.sqrt(len(values))
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def summarize(scores: Iterable[CaseScore]) -> dict[str, Any]:
    """The run summary: normalised score with CI, by platform, by checkpoint, by case."""
    scores = sorted(scores, key=lambda s: (s.case_id, s.epoch))
    overall = _interval([s.normalized for s in scores])
    platforms: dict[str, list[float]] = {}
    for s in scores:
        platforms.setdefault(s.platform, []).append(s.normalized)
    checkpoints: dict[str, Any] = {}
    for name in CHECKPOINTS:
        scored = [
            s.checkpoints[name]
            for s in scores
            if name in s.checkpoints and s.checkpoints[name].score is not None
        ]
        checkpoints[name] = {
            "mean_score": round(sum(c.score or 0.0 for c in scored) / len(scored), 6) if scored else None,
            "max": WEIGHTS[name],
            "scored_cases": len(scored),
        }
    by_case: dict[str, list[float]] = {}
    for s in scores:
        by_case.setdefault(s.case_id, []).append(s.normalized)
    return {
        "normalized_score": round(overall[0], 6),
        "ci95": [round(overall[1], 6), round(overall[2], 6)],
        "by_platform": {
            p: {"normalized_score": round(_interval(v)[0], 6), "cases": len(v)}
            for p, v in sorted(platforms.items())
        },
        "by_checkpoint": checkpoints,
        "cases": {c: round(sum(v) / len(v), 6) for c, v in sorted(by_case.items())},
        "statuses": _count(s.status for s in scores),
        "total_weight": TOTAL,
    }


def _count(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


__all__ = [
    "CHECKPOINTS",
    "MODES",
    "WEIGHTS",
    "CaseScore",
    "CheckpointScore",
    "DetectionResult",
    "SigmaScorer",
    "evaluate",
    "evaluate_query",
    "evaluate_rule",
    "neutral_events",
    "process_paid",
    "score_case",
    "summarize",
]
