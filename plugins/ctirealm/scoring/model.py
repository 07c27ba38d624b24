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
        return {"score": None if self.score is None else round(self.score, 6), "max": self.max,
                "message": self.message, "details": self.details}


@dataclass
class DetectionResult:
    """Event-level outcome of executing a query over the whole store."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    precision: float = 0.0
    recall: float = 0.0
    f1: float = 0.0
    rows: int = 0
    unattributed: int = 0
    matched_attack: list[str] = field(default_factory=list)
    missed_attack: list[str] = field(default_factory=list)
    false_positive_examples: list[dict[str, Any]] = field(default_factory=list)
    hard_negatives_matched: int = 0
    other_attacks: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("precision", "recall", "f1"):
            data[key] = round(data[key], 6)
        return data


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
            "id": self.case_id, "platform": self.platform, "epoch": self.epoch,
            "status": self.status, "reason": self.reason,
            "normalized_score": round(self.normalized, 6),
            "checkpoints": {k: v.to_dict() for k, v in self.checkpoints.items()},
            "detection": {k: v.to_dict() for k, v in self.detection.items()},
            "errors": list(self.errors),
        }
