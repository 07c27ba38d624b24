"""Read and validate ``results.json``: the only input of every report.

`load_results` reads a file; `check_results` validates a dict already in
memory. Both return a normalised copy in which every optional key exists with
a sensible default, so the renderers never guess. Anything the report cannot
use raises `ResultsError` with a message a person can act on (an older or
newer format, a missing key, a file that is not JSON) instead of a traceback.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from ..scoring.results import FORMAT as CURRENT_FORMAT
from ..scoring.results import SUPPORTED_FORMATS, generalisation


class ResultsError(ValueError):
    """A results file the report cannot use; the message says why and what to do."""


def load_results(path: str | Path) -> dict[str, Any]:
    """Read, validate and normalise one results file."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise ResultsError(f"{path}: no such results file (a benchmark run writes reports/results.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    return check_results(data, source=str(path))


def _require(
    container: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, source: str
) -> Any:
    if key not in container:
        raise ResultsError(
            f"{source}: {where} has no {key!r} key; this results file is incomplete "
            "(was the run interrupted?) — re-run the benchmark to write a new one"
        )
    value = container[key]
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        label = key if where == "the file" else f"{where}.{key}"
        raise ResultsError(f"{source}: {label} should be {names}, not {type(value).__name__}")
    return value


def _number(value: Any, default: float | None = 0.0) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return default


def check_results(data: Any, *, source: str = "results.json") -> dict[str, Any]:
    """Validate a results document and return a normalised deep copy."""
    if not isinstance(data, dict):
        raise ResultsError(
            f"{source}: expected a JSON object with run, summary and cases, got {type(data).__name__}"
        )
    if "format" not in data:
        raise ResultsError(
            f"{source}: no 'format' version; it was written by an older ctirealm "
            f"than this report reads (format {CURRENT_FORMAT}) — re-run the benchmark "
            "with this version to regenerate it"
        )
    version = data["format"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise ResultsError(f"{source}: format should be an integer version, not {version!r}")
    if version not in SUPPORTED_FORMATS:
        if version > CURRENT_FORMAT:
            raise ResultsError(
                f"{source}: results format {version} is newer than this ctirealm "
                f"reads (format {CURRENT_FORMAT}); upgrade ctirealm to report on it"
            )
        raise ResultsError(
            f"{source}: results format {version} is older than this ctirealm reads "
            f"(format {CURRENT_FORMAT}); re-run the benchmark to regenerate it"
        )
    data = copy.deepcopy(data)
    run = _require(data, "run", dict, "the file", source)
    summary = _require(data, "summary", dict, "the file", source)
    cases = _require(data, "cases", list, "the file", source)
    _normalise_run(run)
    for index, case in enumerate(cases):
        if not isinstance(case, dict):
            raise ResultsError(f"{source}: cases[{index}] should be an object, not {type(case).__name__}")
        _require(case, "id", str, f"cases[{index}]", source)
        _normalise_case(case)
    _normalise_summary(summary, cases)
    rules = data.get("rules")
    if rules is None:
        data["rules"] = []
    elif not isinstance(rules, list):
        raise ResultsError(f"{source}: rules should be a list, not {type(rules).__name__}")
    else:
        data["rules"] = [_normalise_rule(r, i, source) for i, r in enumerate(rules)]
    problems = data.get("problems")
    if problems is not None and not isinstance(problems, list):
        raise ResultsError(f"{source}: problems should be a list, not {type(problems).__name__}")
    data["problems"] = [_normalise_problem(p, i, source) for i, p in enumerate(problems or [])]
    data["source"] = source
    return data


def _normalise_problem(problem: Any, index: int, source: str) -> dict[str, Any]:
    """One thing left out of the run: a case file, or a telemetry file and the cases it stopped."""
    if not isinstance(problem, dict):
        raise ResultsError(f"{source}: problems[{index}] should be an object, not {type(problem).__name__}")
    _require(problem, "message", str, f"problems[{index}]", source)
    return {
        "kind": str(problem.get("kind") or "case"),
        "path": str(problem.get("path") or ""),
        "line": problem.get("line") if isinstance(problem.get("line"), int) else None,
        "message": problem["message"],
        "cases": _strings(problem.get("cases")),
    }


def _normalise_run(run: dict[str, Any]) -> None:
    for key, default in (
        ("agent", "unknown"),
        ("scoring", "unknown"),
        ("variant", "full"),
        ("subset", "all"),
        ("started", ""),
        ("finished", ""),
    ):
        if not isinstance(run.get(key), str):
            run[key] = default if run.get(key) is None else str(run[key])
    run["epochs"] = int(_number(run.get("epochs"), 1) or 1)
    run["pass_ratio"] = _number(run.get("pass_ratio"), None)
    dataset = run.get("dataset")
    if not isinstance(dataset, dict):
        dataset = {}
    dataset.setdefault("name", "")
    dataset.setdefault("hash", "")
    dataset.setdefault("rows", None)
    window = dataset.get("window")
    dataset["window"] = [str(w) for w in window] if isinstance(window, list) else []
    run["dataset"] = dataset
    versions = run.get("versions")
    run["versions"] = {str(k): str(v) for k, v in versions.items()} if isinstance(versions, dict) else {}


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else []


def _normalise_case(case: dict[str, Any]) -> None:
    case["epoch"] = int(_number(case.get("epoch"), 1) or 1)
    for key, default in (
        ("platform", "unknown"),
        ("status", "unknown"),
        ("reason", ""),
        ("title", ""),
        ("objective", ""),
        ("difficulty", ""),
    ):
        value = case.get(key)
        case[key] = default if value is None else str(value)
    case["normalized_score"] = _number(case.get("normalized_score"), 0.0) or 0.0
    case["subsets"] = _strings(case.get("subsets"))
    case["errors"] = _strings(case.get("errors"))
    case["duration"] = _number(case.get("duration"), None)
    checkpoints = case.get("checkpoints")
    clean: dict[str, dict[str, Any]] = {}
    if isinstance(checkpoints, dict):
        for name, value in checkpoints.items():
            value = value if isinstance(value, dict) else {}
            details = value.get("details")
            clean[str(name)] = {
                "score": _number(value.get("score"), None),
                "max": _number(value.get("max"), 0.0) or 0.0,
                "message": str(value.get("message") or ""),
                "details": details if isinstance(details, dict) else {},
            }
    case["checkpoints"] = clean
    detection = case.get("detection")
    case["detection"] = (
        {str(k): _normalise_detection(v) for k, v in detection.items() if isinstance(v, dict)}
        if isinstance(detection, dict)
        else {}
    )
    case["split"] = str(case.get("split") or "dev")
    dev = case.get("dev")
    if isinstance(dev, dict):
        found = dev.get("detection")
        case["dev"] = {
            "normalized_score": _number(dev.get("normalized_score"), 0.0) or 0.0,
            "detection": {str(k): _normalise_detection(v) for k, v in found.items() if isinstance(v, dict)}
            if isinstance(found, dict)
            else {},
        }
    else:
        case["dev"] = None
    trajectory = case.get("trajectory")
    trajectory = trajectory if isinstance(trajectory, dict) else {}
    for key in ("reports_read", "techniques_named", "tables_explored"):
        trajectory[key] = _strings(trajectory.get(key))
    queries = trajectory.get("queries")
    trajectory["queries"] = [_normalise_query(q) for q in queries] if isinstance(queries, list) else []
    trajectory["tool_calls"] = int(_number(trajectory.get("tool_calls"), 0) or 0)
    submission = trajectory.get("submission")
    if isinstance(submission, dict):
        rows = submission.get("query_results")
        submission = {
            "sigma_rule": str(submission.get("sigma_rule") or ""),
            "kql_query": str(submission.get("kql_query") or ""),
            "query_results": [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else [],
        }
    else:
        submission = None
    trajectory["submission"] = submission
    case["trajectory"] = trajectory
    truth = case.get("ground_truth")
    truth = truth if isinstance(truth, dict) else {}
    case["ground_truth"] = {
        k: _strings(truth.get(k))
        for k in ("techniques", "tables", "reports")
        if isinstance(truth.get(k), list)
    }


def _normalise_query(query: Any) -> dict[str, Any]:
    query = query if isinstance(query, dict) else {"query": str(query)}
    rows = query.get("rows")
    return {
        "query": str(query.get("query") or ""),
        "ok": bool(query.get("ok", query.get("error") is None)),
        "rows": int(rows) if isinstance(rows, (int, float)) and not isinstance(rows, bool) else None,
        "error": None if query.get("error") is None else str(query["error"]),
        "duration": _number(query.get("duration"), None),
    }


def _normalise_detection(value: dict[str, Any]) -> dict[str, Any]:
    out = dict(value)
    for key in ("tp", "fp", "fn", "rows", "unattributed", "hard_negatives_matched", "other_attacks"):
        out[key] = int(_number(value.get(key), 0) or 0)
    for key in ("precision", "recall", "f1"):
        out[key] = _number(value.get(key), 0.0) or 0.0
    out["matched_attack"] = _strings(value.get("matched_attack"))
    out["missed_attack"] = _strings(value.get("missed_attack"))
    examples = value.get("false_positive_examples")
    out["false_positive_examples"] = (
        [e for e in examples if isinstance(e, dict)] if isinstance(examples, list) else []
    )
    out["error"] = None if value.get("error") is None else str(value["error"])
    return out


def _normalise_summary(summary: dict[str, Any], cases: list[dict[str, Any]]) -> None:
    scores = [c["normalized_score"] for c in cases]
    mean = sum(scores) / len(scores) if scores else 0.0
    summary["normalized_score"] = _number(summary.get("normalized_score"), mean)
    ci = summary.get("ci95")
    summary["ci95"] = (
        [float(ci[0]), float(ci[1])]
        if isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci)
        else [summary["normalized_score"], summary["normalized_score"]]
    )
    platforms = summary.get("by_platform")
    if not isinstance(platforms, dict):
        grouped: dict[str, list[float]] = {}
        for c in cases:
            grouped.setdefault(c["platform"], []).append(c["normalized_score"])
        platforms = {
            p: {"normalized_score": sum(v) / len(v), "cases": len(v)} for p, v in sorted(grouped.items())
        }
    summary["by_platform"] = {
        str(p): {
            "normalized_score": _number(v.get("normalized_score"), 0.0) or 0.0,
            "cases": int(_number(v.get("cases"), 0) or 0),
        }
        for p, v in platforms.items()
        if isinstance(v, dict)
    }
    checkpoints = summary.get("by_checkpoint")
    summary["by_checkpoint"] = (
        {
            str(k): {
                "mean_score": _number(v.get("mean_score"), None),
                "max": _number(v.get("max"), 0.0) or 0.0,
                "scored_cases": int(_number(v.get("scored_cases"), 0) or 0),
            }
            for k, v in checkpoints.items()
            if isinstance(v, dict)
        }
        if isinstance(checkpoints, dict)
        else {}
    )
    summary["generalisation"] = generalisation(cases)
    statuses = summary.get("statuses")
    if not isinstance(statuses, dict):
        statuses = {}
        for c in cases:
            statuses[c["status"]] = statuses.get(c["status"], 0) + 1
    summary["statuses"] = {str(k): int(_number(v, 0) or 0) for k, v in statuses.items()}


def _normalise_rule(rule: Any, index: int, source: str) -> dict[str, Any]:
    if not isinstance(rule, dict):
        raise ResultsError(f"{source}: rules[{index}] should be an object, not {type(rule).__name__}")
    return {
        "path": str(rule.get("path") or ""),
        "title": str(rule.get("title") or ""),
        "status": str(rule.get("status") or "unknown"),
        "tp": None if rule.get("tp") is None else int(_number(rule.get("tp"), 0) or 0),
        "fp": None if rule.get("fp") is None else int(_number(rule.get("fp"), 0) or 0),
        "expected": rule.get("expected"),
        "message": str(rule.get("message") or ""),
    }
