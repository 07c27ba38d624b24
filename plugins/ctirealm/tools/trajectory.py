"""Trajectories: every step an agent takes on one case, and its final submission.

A trajectory is what scoring reads and what replay re-runs, so it is plain
data with a stable JSON form (``to_dict`` / ``from_dict``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["submitted", "no_submission", "invalid_submission", "crashed", "timeout", "limit_exceeded"]
FORMAT_VERSION = 1


@dataclass
class ToolCall:
    """One tool invocation: arguments as given, the text result, and whether it succeeded."""

    name: str
    arguments: dict[str, Any]
    result: str
    ok: bool
    started: float = 0.0  # seconds since the trajectory started
    duration: float = 0.0
    rows: int | None = None  # rows returned, for query tools
    error: str | None = None
    call_id: str | None = None


@dataclass
class Step:
    """An assistant message (text and reasoning) or a tool call, in order."""

    kind: Literal["assistant", "tool", "note"]
    text: str = ""
    reasoning: str = ""
    tool: ToolCall | None = None


@dataclass
class Submission:
    """The reference's output contract: a Sigma rule, a KQL query and rows it returned."""

    sigma_rule: str = ""
    kql_query: str = ""
    query_results: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sigma_rule": self.sigma_rule,
            "kql_query": self.kql_query,
            "query_results": self.query_results,
        }


@dataclass
class Trajectory:
    """What happened on one case: steps, submission, outcome, timings."""

    case_id: str
    agent: str
    variant: str = "full"
    epoch: int = 1
    steps: list[Step] = field(default_factory=list)
    submission: Submission | None = None
    status: Status = "no_submission"
    reason: str = ""
    duration: float = 0.0
    raw_answer: str | None = None

    # -- views used by scoring --------------------------------------------------

    def tool_calls(self, name: str | None = None) -> list[ToolCall]:
        return [s.tool for s in self.steps if s.tool is not None and (name is None or s.tool.name == name)]

    def assistant_text(self) -> str:
        """All assistant text and reasoning, in order (where ATT&CK ids are looked for)."""
        parts: list[str] = []
        for step in self.steps:
            if step.kind == "assistant":
                parts.extend(p for p in (step.reasoning, step.text) if p)
        return "\n".join(parts)

    # -- persistence ------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["format"] = FORMAT_VERSION
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trajectory:
        steps = []
        for raw in data.get("steps", []):
            tool = raw.get("tool")
            steps.append(
                Step(
                    kind=raw["kind"],
                    text=raw.get("text", ""),
                    reasoning=raw.get("reasoning", ""),
                    tool=ToolCall(**tool) if tool else None,
                )
            )
        submission = data.get("submission")
        return cls(
            case_id=data["case_id"],
            agent=data.get("agent", ""),
            variant=data.get("variant", "full"),
            epoch=int(data.get("epoch", 1)),
            steps=steps,
            submission=Submission(**submission) if submission else None,
            status=data.get("status", "no_submission"),
            reason=data.get("reason", ""),
            duration=float(data.get("duration", 0.0)),
            raw_answer=data.get("raw_answer"),
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(self.to_dict(), ensure_ascii=False, indent=1, default=str), encoding="utf-8"
        )

    @classmethod
    def load(cls, path: Path) -> Trajectory:
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
