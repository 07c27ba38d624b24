"""Score records: one per checkpoint, one per case; plain data that results.json holds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: Checkpoint weights of the reference (C4 = 5.0 KQL F1 + 1.5 Sigma quality); total 10.
WEIGHTS: dict[str, float] = {
    "C0_cti_reports": 1.25,
    "C1_attack_mapping": 0.75,
    "C2_data_sources": 1.0,
    "C3_query_iteration": 0.5,
    "C4_kql_detection": 5.0,
    "C4_sigma_quality": 1.5,
}
CHECKPOINTS = tuple(WEIGHTS)
TOTAL = sum(WEIGHTS.values())
#: The workflow checkpoints (strict scoring pays them in proportion to the final detection).
PROCESS = ("C0_cti_reports", "C1_attack_mapping", "C2_data_sources", "C3_query_iteration")
#: Strict scoring: the final detection's F1 from which the workflow checkpoints pay in full;
#: below it they pay F1 / PROCESS_FULL_F1 of their score, nothing for a detection that fails.
PROCESS_FULL_F1 = 0.5


@dataclass
class CheckpointScore:
    """A graded checkpoint: ``score`` of ``max``; ``None`` score means not scored (e.g. no judge)."""

    name: str
    score: float | None
    max: float
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return 0.0 if not self.score or not self.max else self.score / self.max

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": None if self.score is None else round(self.score, 6),
            "max": self.max,
            "message": self.message,
            "details": self.details,
        }


@dataclass
class DetectionResult:
    """What one detection (a KQL query, or a Sigma rule converted to one) matched, by event.

    The one result type of the one evaluator (`scoring.detection.evaluate`), used by
    C4 KQL detection, Sigma quality, the rules gate and ``ctirealm sigma eval``.
    Events are ``"Table:id"``. ``fp`` counts every false positive: benign events
    (hard negatives and background), other cases' attack events that are not
    neutral, and result rows traced to no event (``unattributed``).
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    precision: float = 0.0
    recall: float = 0.0
    f1: float = 0.0
    #: Result rows the query returned (all of them, past the evaluation's row cap too).
    rows: int = 0
    #: Rows that name no event, by id or by their values: each one a false positive.
    unattributed: int = 0
    matched_attack: list[str] = field(default_factory=list)
    missed_attack: list[str] = field(default_factory=list)
    false_positive_examples: list[dict[str, Any]] = field(default_factory=list)
    hard_negatives_matched: int = 0
    background_matched: int = 0
    #: Other cases' attack events counted as false positives (no technique shared).
    foreign_attacks_matched: int = 0
    #: Other cases' attack events left neutral (a technique shared with this case).
    other_attacks: int = 0
    #: Attack events matched, by simulation (the labels' group): what the rule catches.
    attack_groups: dict[str, list[str]] = field(default_factory=dict)
    #: Expected events counted (None: no expected set), and those set aside because
    #: they are in tables the query does not read (rules gate and Sigma quality only).
    expected: int | None = None
    expected_elsewhere: int = 0
    #: The tables the query reads, the KQL executed, and what to change when rows
    #: could not be traced (``project ReportId``).
    tables: list[str] = field(default_factory=list)
    kql: str | None = None
    hint: str | None = None
    error: str | None = None
    #: parse | convert | execute, when ``error`` is set.
    stage: str | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for results.json (without ``elapsed``, so equal inputs give equal files)."""
        data = asdict(self)
        del data["elapsed"]
        for key in ("precision", "recall", "f1"):
            data[key] = round(data[key], 6)
        return data

    def summary(self) -> str:
        """One line: what matched, what was missed."""
        if self.error:
            return f"{self.stage or 'execute'} failed: {self.error}"
        attack = sum(len(v) for v in self.attack_groups.values())
        text = (
            f"{self.rows} rows: {attack} attack events, {self.hard_negatives_matched} hard "
            f"negatives, {self.background_matched} background"
        )
        if self.other_attacks:
            text += f", {self.other_attacks} neutral (another case, same technique)"
        if self.unattributed:
            text += f", {self.unattributed} unattributed rows"
        if self.expected is not None:
            text += (
                f"; caught {self.tp} of {self.expected} expected; precision "
                f"{self.precision:.3f}, recall {self.recall:.3f}, F1 {self.f1:.3f}"
            )
        return text + (f" ({self.hint})" if self.hint and self.unattributed else "")


def f1_from(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@dataclass
class CaseScore:
    """All checkpoints of one case (one epoch), the detection outcomes, and the run's status."""

    case_id: str
    platform: str
    epoch: int
    status: str
    reason: str
    checkpoints: dict[str, CheckpointScore]
    detection: dict[str, DetectionResult] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: The split the final detections were executed on, and the same trajectory scored on
    #: ``dev`` (what the agent queried) when that is another split: the generalisation gap.
    split: str = "dev"
    dev: CaseScore | None = None

    @property
    def total(self) -> float:
        return sum(c.score or 0.0 for c in self.checkpoints.values())

    @property
    def scored_max(self) -> float:
        return sum(c.max for c in self.checkpoints.values() if c.score is not None)

    @property
    def normalized(self) -> float:
        """Sum over the scored checkpoints, divided by their maximum (10 when all are scored)."""
        return self.total / self.scored_max if self.scored_max else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.case_id,
            "platform": self.platform,
            "epoch": self.epoch,
            "status": self.status,
            "reason": self.reason,
            "normalized_score": round(self.normalized, 6),
            "checkpoints": {k: v.to_dict() for k, v in self.checkpoints.items()},
            "detection": {k: v.to_dict() for k, v in self.detection.items()},
            "errors": list(self.errors),
            "split": self.split,
            **(
                {
                    "dev": {
                        "normalized_score": round(self.dev.normalized, 6),
                        "detection": {k: v.to_dict() for k, v in self.dev.detection.items()},
                    }
                }
                if self.dev is not None
                else {}
            ),
        }
