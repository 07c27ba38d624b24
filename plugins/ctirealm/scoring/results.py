"""``results.json``: its format version, one case's entry, and the whole document.

Whatever runs the benchmark builds the document here (the pytest plugin today), and
`report.load` reads it back against the same `FORMAT`. A case entry is a `CaseScore`
with what the report shows beside it (the case's ground truth, the trajectory's summary);
the document adds the run's settings, the dataset, the versions and the summary. Cases are
sorted, so the same run gives the same document.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from .. import __version__
from ..cases import Case
from ..tools.trajectory import Trajectory
from . import summarize
from .model import CaseScore, CheckpointScore
from .strict import reports_read, tables_explored, techniques_found

#: The format this version writes, and the ones `report.load` reads.
FORMAT = 1
SUPPORTED_FORMATS = (1,)


def trajectory_summary(trajectory: Trajectory, tables: Iterable[str]) -> dict[str, Any]:
    """What results.json keeps of a trajectory; *tables* are the store's (explored ones are
    named from them)."""
    queries = [
        {
            "query": c.arguments.get("query", c.arguments.get("_raw", "")),
            "ok": c.ok,
            "rows": c.rows,
            "error": c.error,
            "duration": c.duration,
        }
        for c in trajectory.tool_calls("execute_kql_query")
    ]
    sub = trajectory.submission
    return {
        "agent": trajectory.agent,
        "status": trajectory.status,
        "reason": trajectory.reason,
        "tool_calls": len(trajectory.tool_calls()),
        "reports_read": reports_read(trajectory),
        "techniques_named": techniques_found(trajectory),
        "tables_explored": tables_explored(trajectory, tables),
        "queries": queries,
        "submission": sub.to_dict() if sub else None,
    }


def case_entry(
    score: CaseScore, case: Case, trajectory: Trajectory, *, tables: Iterable[str], agent_spec: str | None
) -> dict[str, Any]:
    """One run of one case: its scores, the case's ground truth and the trajectory's summary.
    *agent_spec* is the spec that built the agent (None when the caller supplied the agent)."""
    return {
        **score.to_dict(),
        "title": case.title,
        "objective": case.objective,
        "ground_truth": {
            "techniques": list(case.ground_truth.techniques),
            "tables": list(case.ground_truth.tables),
            "reports": list(case.reports),
        },
        "difficulty": case.difficulty,
        "subsets": list(case.subsets),
        "trajectory": {**trajectory_summary(trajectory, tables), "agent_spec": agent_spec},
        "duration": trajectory.duration,
    }


def build_results(
    entries: list[dict[str, Any]],
    *,
    run: Mapping[str, Any],
    agent: str,
    dataset: Mapping[str, Any],
    started: str,
) -> dict[str, Any]:
    """The document: *run* settings (scoring, variant, subset, epochs, pass ratio), the agent
    (*agent*, its spec; or what the trajectories say ran when the caller supplied the agent),
    the *dataset*, when it ran, the versions, the summary and every case entry."""
    entries.sort(key=lambda e: (e["id"], e["epoch"]))
    summary = summary_of(entries)
    gap = generalisation(entries)
    if gap:
        summary["generalisation"] = gap
    ran = [e["trajectory"] for e in entries if isinstance(e.get("trajectory"), dict)]
    if any(t.get("agent_spec") != agent for t in ran):
        # The agent was supplied (a conftest overrides realm_agent): the spec names nothing
        # that ran, so say what the trajectories say ran.
        agent = ", ".join(sorted({str(t.get("agent")) for t in ran})) or agent
    return {
        "format": FORMAT,
        "run": {
            "agent": agent,
            **run,
            "dataset": dict(dataset),
            "started": started,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": versions(),
        },
        "summary": summary,
        "cases": entries,
    }


def summary_of(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The run summary (with 95% confidence intervals) of case entries."""
    scores = []
    for e in entries:
        checkpoints = {
            k: CheckpointScore(k, v["score"], v["max"], v["message"]) for k, v in e["checkpoints"].items()
        }
        scores.append(CaseScore(e["id"], e["platform"], e["epoch"], e["status"], e["reason"], checkpoints))
    return summarize(scores)


def versions() -> dict[str, str]:
    """ctirealm's version and those of the libraries that decide a score."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"ctirealm": __version__}
    for name in ("duckdb", "duckdb-kql", "pysigma", "pytest"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _f1(case_detection: dict[str, Any], kind: str) -> float:
    found = case_detection.get(kind)
    return float(found["f1"]) if found and not found.get("error") else 0.0


def generalisation(cases: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Final detections on the split they were scored on against the ``dev`` split the agent
    queried: mean normalised score and mean KQL and Sigma F1 on each. None when every case was
    scored on ``dev`` (a dataset with one split)."""
    scored = [c for c in cases if isinstance(c.get("dev"), dict)]
    if not scored:
        return None

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    split = str(scored[0].get("split") or "test")
    return {
        "scored_on": split,
        "cases": len(scored),
        split: {
            "normalized_score": mean([c["normalized_score"] for c in scored]),
            "kql_f1": mean([_f1(c["detection"], "kql") for c in scored]),
            "sigma_f1": mean([_f1(c["detection"], "sigma") for c in scored]),
        },
        "dev": {
            "normalized_score": mean([c["dev"]["normalized_score"] for c in scored]),
            "kql_f1": mean([_f1(c["dev"]["detection"], "kql") for c in scored]),
            "sigma_f1": mean([_f1(c["dev"]["detection"], "sigma") for c in scored]),
        },
    }
