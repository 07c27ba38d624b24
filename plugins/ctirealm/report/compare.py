"""Compare runs: per-case and per-checkpoint deltas against the first run, regressions first.

The first results file is the baseline (``A``); every other run (``B``, ``C``,
…) is compared with it — two agents on the same cases, or the same agent
before and after a rule change. A case whose normalised score falls by more
than ``threshold`` is a regression; rules (when the runs carry a rules gate)
regress when they stop passing, catch fewer attack events or raise more
false positives. `format_comparison` renders the terminal text.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

from .facts import checkpoint_code, checkpoint_label, checkpoint_names, fmt_score, printable, rule_passed

#: Score changes smaller than this are "unchanged" (half the last digit the reports show).
THRESHOLD = 0.0005


@dataclass
class RunInfo:
    key: str
    label: str
    agent: str
    scoring: str
    dataset: str
    cases: int
    score: float
    ci: tuple[float, float]
    results: dict[str, Any] = field(repr=False)


@dataclass
class CaseDelta:
    case: str
    platform: str
    before: float
    after: float
    checkpoints: dict[str, tuple[float | None, float | None]]
    tpfp: tuple[str, str]
    status: tuple[str, str]

    @property
    def delta(self) -> float:
        return self.after - self.before


@dataclass
class RuleChange:
    path: str
    before: str
    after: str
    tpfp_before: str
    tpfp_after: str
    kind: str  # regression | improvement | added | removed


@dataclass
class PairComparison:
    base: RunInfo
    other: RunInfo
    checkpoints: list[str]
    checkpoint_means: dict[str, tuple[float | None, float | None]]
    platform_means: dict[str, tuple[float | None, float | None]]
    regressions: list[CaseDelta]
    improvements: list[CaseDelta]
    unchanged: list[CaseDelta]
    only_base: list[str]
    only_other: list[str]
    rule_changes: list[RuleChange]

    @property
    def score_delta(self) -> float:
        return self.other.score - self.base.score

    @property
    def regressed(self) -> bool:
        return bool(self.regressions) or any(c.kind == "regression" for c in self.rule_changes)


@dataclass
class Comparison:
    runs: list[RunInfo]
    pairs: list[PairComparison]
    warnings: list[str]

    @property
    def regressed(self) -> bool:
        return any(p.regressed for p in self.pairs)


def _key(index: int) -> str:
    letters = string.ascii_uppercase
    return letters[index] if index < len(letters) else f"R{index + 1}"


def _run_info(index: int, label: str, results: dict[str, Any]) -> RunInfo:
    run, summary = results["run"], results["summary"]
    dataset = run["dataset"]
    name = "@".join(str(x) for x in (dataset.get("name"), dataset.get("hash")) if x) or "unknown"
    return RunInfo(
        _key(index),
        label,
        run["agent"],
        run["scoring"],
        name,
        len(results["cases"]),
        float(summary["normalized_score"]),
        (summary["ci95"][0], summary["ci95"][1]),
        results,
    )


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _per_case(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Case id -> platform, mean score, mean points per checkpoint, TP/FP and status over epochs."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for case in results["cases"]:
        grouped.setdefault(case["id"], []).append(case)
    out = {}
    for case_id, runs in grouped.items():
        runs.sort(key=lambda c: c["epoch"])
        names = {n for c in runs for n in c["checkpoints"]}
        points = {
            n: _mean(
                [
                    c["checkpoints"][n]["score"]
                    for c in runs
                    if n in c["checkpoints"] and c["checkpoints"][n]["score"] is not None
                ]
            )
            for n in names
        }
        tpfp = []
        for c in runs:
            kql = c["detection"].get("kql")
            tpfp.append("–" if kql is None else "error" if kql.get("error") else f"{kql['tp']}/{kql['fp']}")
        statuses = sorted({c["status"] for c in runs})
        out[case_id] = {
            "platform": runs[0]["platform"],
            "score": _mean([c["normalized_score"] for c in runs]) or 0.0,
            "points": points,
            "tpfp": ",".join(tpfp),
            "status": ",".join(statuses),
        }
    return out


def _platform_means(results: dict[str, Any]) -> dict[str, float]:
    return {p: v["normalized_score"] for p, v in results["summary"]["by_platform"].items()}


def _checkpoint_means(results: dict[str, Any]) -> dict[str, float | None]:
    return {n: v["mean_score"] for n, v in results["summary"]["by_checkpoint"].items()}


def _rule_tpfp(rule: dict[str, Any] | None) -> str:
    if rule is None:
        return "–"
    tp = "?" if rule["tp"] is None else str(rule["tp"])
    fp = "?" if rule["fp"] is None else str(rule["fp"])
    return f"{tp}/{fp}"


def _rule_changes(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[RuleChange]:
    old = {r["path"]: r for r in before}
    new = {r["path"]: r for r in after}
    changes = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if a is None or b is None:
            kind = "added" if a is None else "removed"
            changes.append(
                RuleChange(
                    path,
                    a["status"] if a else "–",
                    b["status"] if b else "–",
                    _rule_tpfp(a),
                    _rule_tpfp(b),
                    kind,
                )
            )
            continue
        pa, pb = rule_passed(a), rule_passed(b)
        worse = (
            (pa is True and pb is not True)
            or (a["tp"] is not None and b["tp"] is not None and b["tp"] < a["tp"])
            or (a["fp"] is not None and b["fp"] is not None and b["fp"] > a["fp"])
        )
        better = (
            (pa is not True and pb is True)
            or (a["tp"] is not None and b["tp"] is not None and b["tp"] > a["tp"])
            or (a["fp"] is not None and b["fp"] is not None and b["fp"] < a["fp"])
        )
        if worse or better:
            changes.append(
                RuleChange(
                    path,
                    a["status"],
                    b["status"],
                    _rule_tpfp(a),
                    _rule_tpfp(b),
                    "regression" if worse else "improvement",
                )
            )
    order = {"regression": 0, "removed": 1, "improvement": 2, "added": 3}
    return sorted(changes, key=lambda c: (order[c.kind], c.path))


def compare_pair(base: RunInfo, other: RunInfo, *, threshold: float = THRESHOLD) -> PairComparison:
    a, b = _per_case(base.results), _per_case(other.results)
    names = [n for n in checkpoint_names(base.results)]
    names += [n for n in checkpoint_names(other.results) if n not in names]
    deltas = []
    for case_id in sorted(set(a) & set(b)):
        x, y = a[case_id], b[case_id]
        deltas.append(
            CaseDelta(
                case_id,
                x["platform"],
                x["score"],
                y["score"],
                {n: (x["points"].get(n), y["points"].get(n)) for n in names},
                (x["tpfp"], y["tpfp"]),
                (x["status"], y["status"]),
            )
        )
    regressions = sorted((d for d in deltas if d.delta < -threshold), key=lambda d: (d.delta, d.case))
    improvements = sorted((d for d in deltas if d.delta > threshold), key=lambda d: (-d.delta, d.case))
    unchanged = [d for d in deltas if abs(d.delta) <= threshold]
    cp_a, cp_b = _checkpoint_means(base.results), _checkpoint_means(other.results)
    pl_a, pl_b = _platform_means(base.results), _platform_means(other.results)
    return PairComparison(
        base,
        other,
        names,
        {n: (cp_a.get(n), cp_b.get(n)) for n in names},
        {p: (pl_a.get(p), pl_b.get(p)) for p in sorted(set(pl_a) | set(pl_b))},
        regressions,
        improvements,
        unchanged,
        sorted(set(a) - set(b)),
        sorted(set(b) - set(a)),
        _rule_changes(base.results["rules"], other.results["rules"]),
    )


def compare_results(
    results: list[dict[str, Any]], labels: list[str] | None = None, *, threshold: float = THRESHOLD
) -> Comparison:
    """Compare normalised results documents; the first is the baseline."""
    if len(results) < 2:
        raise ValueError("compare needs at least two results files")
    labels = labels or [r.get("source", f"run {i + 1}") for i, r in enumerate(results)]
    runs = [_run_info(i, label, r) for i, (label, r) in enumerate(zip(labels, results, strict=True))]
    warnings = []
    base = runs[0]
    for run in runs[1:]:
        if run.scoring != base.scoring:
            warnings.append(
                f"{run.key} used {run.scoring} scoring and {base.key} {base.scoring}: "
                "scores are not directly comparable."
            )
        if run.dataset != base.dataset:
            warnings.append(
                f"{run.key} ran on dataset {run.dataset} and {base.key} on {base.dataset}: "
                "detection counts may differ for that reason alone."
            )
    return Comparison(runs, [compare_pair(base, run, threshold=threshold) for run in runs[1:]], warnings)


# -- terminal text -------------------------------------------------------------------------


def _signed(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if abs(value) < 0.5 * 10**-digits:
        return f"{0:.{digits}f}"
    return f"{value:+.{digits}f}"


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    rows = [[printable(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
        out.append("  " + "  ".join(cells).rstrip())
    return out


def _case_rows(deltas: list[CaseDelta], names: list[str], a: str, b: str) -> list[str]:
    head = ["case", a, b, "Δ"] + [checkpoint_code(n) + _suffix(n) for n in names] + ["TP/FP", "status"]
    rows = [head]
    for d in deltas:
        cells = [d.case, f"{d.before:.3f}", f"{d.after:.3f}", _signed(d.delta)]
        for n in names:
            x, y = d.checkpoints.get(n, (None, None))
            cells.append(_signed(None if x is None or y is None else y - x, 2))
        cells.append(f"{d.tpfp[0]}→{d.tpfp[1]}" if d.tpfp[0] != d.tpfp[1] else d.tpfp[1])
        cells.append(f"{d.status[0]}→{d.status[1]}" if d.status[0] != d.status[1] else d.status[1])
        rows.append(cells)
    return _table(rows, set(range(1, 4 + len(names))))


def _suffix(name: str) -> str:
    return {"C4_kql_detection": " kql", "C4_sigma_quality": " sigma"}.get(name, "")


def format_comparison(comparison: Comparison) -> str:
    """Plain text for a terminal or CI log: runs, then per pair regressions first."""
    lines = ["Runs"]
    base = comparison.runs[0]
    rows = [["", "results", "agent", "scoring", "dataset", "runs", "score", "95% CI", "Δ vs A"]]
    for run in comparison.runs:
        rows.append(
            [
                run.key,
                run.label,
                run.agent,
                run.scoring,
                run.dataset,
                str(run.cases),
                f"{run.score:.3f}",
                f"{run.ci[0]:.3f}–{run.ci[1]:.3f}",
                "" if run is base else _signed(run.score - base.score),
            ]
        )
    lines += _table(rows, {5, 6, 8})
    lines += [f"  warning: {printable(w)}" for w in comparison.warnings]
    for pair in comparison.pairs:
        a, b = pair.base.key, pair.other.key
        lines += [
            "",
            f"{b} vs {a}: score {pair.base.score:.3f} → {pair.other.score:.3f} "
            f"({_signed(pair.score_delta)}); {len(pair.regressions)} regressed, "
            f"{len(pair.improvements)} improved, {len(pair.unchanged)} unchanged"
            + (f", {len(pair.only_base)} only in {a}" if pair.only_base else "")
            + (f", {len(pair.only_other)} only in {b}" if pair.only_other else ""),
        ]
        lines.append(f"Regressions ({len(pair.regressions)})")
        lines += _case_rows(pair.regressions, pair.checkpoints, a, b) if pair.regressions else ["  none"]
        lines.append(f"Improvements ({len(pair.improvements)})")
        lines += _case_rows(pair.improvements, pair.checkpoints, a, b) if pair.improvements else ["  none"]
        if pair.rule_changes:
            lines.append(f"Rule changes ({len(pair.rule_changes)})")
            lines += _table(
                [["rule", "status", "TP/FP", "change"]]
                + [
                    [c.path, f"{c.before}→{c.after}", f"{c.tpfp_before}→{c.tpfp_after}", c.kind]
                    for c in pair.rule_changes
                ],
                set(),
            )
        lines.append("By checkpoint (mean points)")
        lines += _table(
            [["checkpoint", a, b, "Δ"]]
            + [
                [
                    f"{checkpoint_code(n)} {checkpoint_label(n)}",
                    fmt_score(x),
                    fmt_score(y),
                    _signed(None if x is None or y is None else y - x, 2),
                ]
                for n, (x, y) in pair.checkpoint_means.items()
            ],
            {1, 2, 3},
        )
        lines.append("By platform (normalised score)")
        lines += (
            _table(
                [["platform", a, b, "Δ"]]
                + [
                    [p, fmt_score(x, 3), fmt_score(y, 3), _signed(None if x is None or y is None else y - x)]
                    for p, (x, y) in pair.platform_means.items()
                ],
                {1, 2, 3},
            )
            if pair.platform_means
            else ["  none"]
        )
        if pair.only_base:
            lines.append(f"Only in {a}: " + printable(", ".join(pair.only_base)))
        if pair.only_other:
            lines.append(f"Only in {b}: " + printable(", ".join(pair.only_other)))
    return "\n".join(lines) + "\n"
