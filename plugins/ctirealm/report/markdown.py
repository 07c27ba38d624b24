"""The Markdown summary: for CI logs, ``$GITHUB_STEP_SUMMARY`` and pull-request comments.

Short on purpose: the score with its interval, platforms, checkpoints, the
cases that need attention with the first reason they lost points, all cases
in a collapsed table, and the rules gate when the run carries one. Every value
that can come from an agent or a rule file is escaped for Markdown tables and
for the HTML that GitHub renders inside Markdown.
"""

from __future__ import annotations

import re
from typing import Any

from .facts import (
    CaseFacts,
    case_facts,
    checkpoint_code,
    checkpoint_label,
    checkpoint_names,
    describe_expected,
    fmt_max,
    fmt_score,
    plural,
    printable,
    rule_passed,
)

ATTENTION = 10
# a rule's mark by rule_passed(): passed, failed, or a status that is neither
_RULE_MARK: dict[bool | None, str] = {True: "✅", False: "❌", None: "⚠️"}
_SPECIAL = re.compile(r"([\\`*\[\]|<>#~])")


def md(text: object, width: int = 0) -> str:
    """One line of escaped Markdown text (safe in a table cell), shortened to ``width``."""
    value = printable(" ".join(str(text).split()))
    if width and len(value) > width:
        value = value[: width - 1].rstrip() + "…"
    return _SPECIAL.sub(r"\\\1", value)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _align(spec: str) -> str:
    return "|" + "|".join("---:" if c == "r" else "---" for c in spec) + "|"


def render_markdown(results: dict[str, Any]) -> str:
    """The summary of one normalised results document."""
    run, summary = results["run"], results["summary"]
    facts = [case_facts(c) for c in results["cases"]]
    names = checkpoint_names(results)
    low, high = summary["ci95"]
    dataset = run["dataset"]
    if not facts and results["rules"]:  # a rules-gate run: no benchmark score to show
        lines = ["## ctirealm rules gate", "", *_problems(results["problems"]), *_rules(results["rules"])]
        return "\n".join([*lines, f"<sub>results format {results['format']}</sub>", ""])
    lines = [f"## ctirealm score: **{summary['normalized_score']:.3f}** (95% CI {low:.3f}–{high:.3f})", ""]
    meta = [
        f"agent **{md(run['agent'])}**",
        f"{md(run['scoring'])} scoring",
        f"{md(run['variant'])} toolset",
        f"subset {md(run['subset'])}",
        plural(run["epochs"], "epoch"),
        plural(len(facts), "case run"),
    ]
    if dataset["name"] or dataset["hash"]:
        meta.append("dataset " + md(" ".join(str(x) for x in (dataset["name"], dataset["hash"]) if x)))
    if run["started"]:
        meta.append(f"started {md(run['started'])}")
    lines += [" · ".join(meta), ""]
    lines += _problems(results["problems"])
    if not facts:
        lines += ["No cases ran in this run.", ""]
    else:
        outcomes = {o: sum(1 for f in facts if f.outcome == o) for o in ("validated", "attempted", "missed")}
        statuses = ", ".join(f"{md(k.replace('_', ' '))} {v}" for k, v in summary["statuses"].items())
        lines += [
            f"**Final detections:** {outcomes['validated']} validated (TP without FP) · "
            f"{outcomes['attempted']} attempted · {outcomes['missed']} missed. "
            f"**Statuses:** {statuses}.",
            "",
        ]
        lines += _generalisation(summary)
        lines += _platforms(summary) + _checkpoints(summary, names) + _attention(facts)
        lines += _all_cases(facts, names)
    if results["rules"]:
        lines += _rules(results["rules"])
    lines += [
        "<sub>Full report: score.html · ATT&CK Navigator layer: coverage.json · "
        f"results format {results['format']}</sub>",
        "",
    ]
    return "\n".join(lines)


def _generalisation(summary: dict[str, Any]) -> list[str]:
    """Final detections on the held-out split beside the split the agent explored."""
    gen = summary.get("generalisation")
    if not gen:
        return []
    split = gen["scored_on"]
    lines = [
        f"**Scored on the `{md(split)}` split** (re-simulated on other hosts, users and "
        f"variants); the `dev` split is what the agent queried.",
        "",
        _row(["Split", "Score", "KQL F1", "Sigma F1"]),
        _align("lrrr"),
    ]
    for name in (split, "dev"):
        values = gen[name]
        lines.append(
            _row(
                [
                    md(name),
                    f"{values['normalized_score']:.3f}",
                    f"{values['kql_f1']:.2f}",
                    f"{values['sigma_f1']:.2f}",
                ]
            )
        )
    return [*lines, ""]


def _platforms(summary: dict[str, Any]) -> list[str]:
    if not summary["by_platform"]:
        return []
    lines = [_row(["Platform", "Score", "Runs"]), _align("lrr")]
    for platform, values in summary["by_platform"].items():
        lines.append(_row([md(platform), f"{values['normalized_score']:.3f}", str(values["cases"])]))
    return [*lines, ""]


def _checkpoints(summary: dict[str, Any], names: list[str]) -> list[str]:
    rows = [(n, summary["by_checkpoint"][n]) for n in names if n in summary["by_checkpoint"]]
    if not rows:
        return []
    lines = [_row(["Checkpoint", "Mean", "Max", "Share"]), _align("lrrr")]
    for name, values in rows:
        mean, maximum = values["mean_score"], values["max"]
        share = "not scored" if mean is None or not maximum else f"{mean / maximum:.0%}"
        lines.append(
            _row(
                [
                    f"{checkpoint_code(name)} {md(checkpoint_label(name))}",
                    fmt_score(mean),
                    fmt_max(maximum),
                    share,
                ]
            )
        )
    return [*lines, ""]


def _tpfp(case: dict[str, Any]) -> str:
    kql = case["detection"].get("kql")
    if kql is None:
        return "–"
    return "error" if kql.get("error") else f"{kql['tp']}/{kql['fp']}"


def _attention(facts: list[CaseFacts]) -> list[str]:
    worst = sorted(
        (f for f in facts if f.lost or f.data["status"] != "submitted"),
        key=lambda f: (f.data["normalized_score"], f.id, f.epoch),
    )[:ATTENTION]
    if not worst:
        return ["Every case scored full marks.", ""]
    title = f"### Lowest-scoring cases ({len(worst)} of {len(facts)})"
    lines = [
        title,
        "",
        _row(["Case", "Platform", "Score", "KQL TP/FP", "Where points were lost"]),
        _align("llrrl"),
    ]
    for f in worst:
        reason = f.lost[0] if f.lost else (f.data["reason"] or f.data["status"])
        more = f" (+{len(f.lost) - 1} more)" if len(f.lost) > 1 else ""
        lines.append(
            _row(
                [
                    md(f.label),
                    md(f.data["platform"]),
                    f"{f.data['normalized_score']:.3f}",
                    _tpfp(f.data),
                    md(reason, 220) + more,
                ]
            )
        )
    return [*lines, ""]


def _all_cases(facts: list[CaseFacts], names: list[str]) -> list[str]:
    head = (
        ["Case", "Platform", "Score"]
        + [checkpoint_code(n) + _suffix(n) for n in names]
        + ["KQL TP/FP", "Detection", "Status"]
    )
    lines = [
        f"<details><summary>All cases ({len(facts)})</summary>",
        "",
        _row(head),
        _align("llr" + "r" * len(names) + "rll"),
    ]
    for f in facts:
        case = f.data
        cells = [md(f.label), md(case["platform"]), f"{case['normalized_score']:.3f}"]
        cells += [
            fmt_score(case["checkpoints"][n]["score"]) if n in case["checkpoints"] else "" for n in names
        ]
        cells += [_tpfp(case), f.outcome, md(case["status"].replace("_", " "))]
        lines.append(_row(cells))
    return [*lines, "", "</details>", ""]


def _suffix(name: str) -> str:
    return {"C4_kql_detection": " KQL", "C4_sigma_quality": " Sigma"}.get(name, "")


def _problems(problems: list[dict[str, Any]]) -> list[str]:
    """Cases and telemetry files left out of the run: not scored, so said up front."""
    if not problems:
        return []
    lines = [f"### ⚠️ Left out of this run: {plural(len(problems), 'problem')} (not scored)", ""]
    for problem in problems:
        stops = f" (stops {md(', '.join(problem['cases']))})" if problem["cases"] else ""
        lines.append(f"- {md(problem['message'].splitlines()[0], 300)}{stops}")
    return [*lines, ""]


def _rules(rules: list[dict[str, Any]]) -> list[str]:
    passed = sum(1 for r in rules if rule_passed(r) is True)
    ordered = sorted(rules, key=lambda r: (rule_passed(r) is True, r["path"]))
    lines = [
        f"### Detection rules: {passed} of {plural(len(rules), 'rule')} passed",
        "",
        _row(["Rule", "Status", "TP", "FP", "Expected", "Message"]),
        _align("llrrll"),
    ]
    for rule in ordered:
        mark = _RULE_MARK[rule_passed(rule)]
        lines.append(
            _row(
                [
                    md(rule["path"]),
                    f"{mark} {md(rule['status'])}",
                    "" if rule["tp"] is None else str(rule["tp"]),
                    "" if rule["fp"] is None else str(rule["fp"]),
                    md(describe_expected(rule["expected"])),
                    md(rule["message"], 200),
                ]
            )
        )
    return [*lines, ""]
