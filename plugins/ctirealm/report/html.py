"""The HTML score report: one self-contained page for a results document.

Everything the page needs is inline (CSS, a little JavaScript, SVG charts); it loads
nothing from the network (see `markup`, which also escapes every value, so agent output
such as queries, answers and error messages is always shown as text). The comparison of
several runs is `html_compare`; pieces both pages use are in `widgets`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .facts import (
    CaseFacts,
    case_facts,
    checkpoint_code,
    checkpoint_label,
    checkpoint_names,
    compact_row,
    describe_expected,
    fmt_max,
    fmt_score,
    matched_attack_rows,
    plural,
    ratio,
    rule_passed,
)
from .markup import Markup, _page, tag
from .widgets import (
    _bars,
    _chips,
    _ci_chart,
    _compared_box,
    _meter,
    _outcome_badge,
    _score_badge,
    _status_badge,
    _technique_names,
    heat_class,
)


def render_html(
    results: dict[str, Any], *, trajectories: Path | None = None, out_dir: Path | None = None
) -> str:
    """The score report for one normalised results document (see `load.check_results`).

    ``trajectories`` is the run's trajectory folder, if at hand: cases then link to their
    trajectory file, relative to ``out_dir`` (where the page is written).
    """
    run, summary = results["run"], results["summary"]
    facts = [case_facts(c) for c in results["cases"]]
    names = checkpoint_names(results)
    sub = Markup("".join(tag("span", s) for s in _run_line(run)))
    if not facts and results["rules"]:  # a rules-gate run: no benchmark score to show
        passed = sum(1 for r in results["rules"] if rule_passed(r) is True)
        body = Markup("\n".join(b for b in (_problems(results["problems"]), _rules(results["rules"])) if b))
        return _page(
            title=f"ctirealm rules gate · {passed}/{len(results['rules'])} passed",
            heading="Rules gate",
            subheading=sub,
            body=body,
            footer=_footer(results),
        )
    sections = [
        _problems(results["problems"]),
        _overview(results, facts),
        _charts(results, names),
        _heat(facts, names),
        _rules(results["rules"]) if results["rules"] else None,
        _cases(facts, names, _trajectory_links(facts, trajectories, out_dir)),
    ]
    title = f"ctirealm · {run['agent']} · {summary['normalized_score']:.3f}"
    return _page(
        title=title,
        heading=f"Score report: {run['agent']}",
        subheading=sub,
        body=Markup("\n".join(s for s in sections if s)),
        footer=_footer(results),
    )


def _run_line(run: dict[str, Any]) -> list[str]:
    return [
        f"agent {run['agent']}",
        f"{run['scoring']} scoring",
        f"{run['variant']} toolset",
        f"subset {run['subset']}",
        plural(run["epochs"], "epoch"),
    ]


def _footer(results: dict[str, Any]) -> Markup:
    run = results["run"]
    versions = ", ".join(f"{k} {v}" for k, v in run["versions"].items())
    when = f"run {run['started']} – {run['finished']}" if run["started"] else ""
    parts = [p for p in (f"results format {results['format']}", when, versions) if p]
    return tag(
        "p",
        " · ".join(parts) + ". Generated from results.json alone; "
        "regenerate with: ctirealm report results.json",
    )


def _overview(results: dict[str, Any], facts: list[CaseFacts]) -> Markup:
    run, summary = results["run"], results["summary"]
    low, high = summary["ci95"]
    statuses = summary["statuses"]
    outcomes = {o: sum(1 for f in facts if f.outcome == o) for o in ("validated", "attempted", "missed")}
    dataset = run["dataset"]
    window = " – ".join(dataset["window"])
    gen = summary.get("generalisation")
    split_line = None
    if gen:
        split = gen["scored_on"]
        split_line = tag(
            "div",
            f"scored on {split}: KQL F1 {gen[split]['kql_f1']:.2f}, Sigma F1 "
            f"{gen[split]['sigma_f1']:.2f} · on dev (what the agent queried): score "
            f"{gen['dev']['normalized_score']:.3f}, KQL F1 {gen['dev']['kql_f1']:.2f}, "
            f"Sigma F1 {gen['dev']['sigma_f1']:.2f}",
            class_="d",
            id="generalisation",
        )
    score_card = tag(
        "div",
        tag("div", "Normalised score", class_="k"),
        tag("div", f"{summary['normalized_score']:.3f}", tag("small", " / 1"), class_="v"),
        tag("div", f"95% CI {low:.3f} – {high:.3f}", class_="d"),
        split_line,
        _ci_chart(summary["normalized_score"], low, high),
        class_="card",
    )
    status_rows = [(tag("dt", k.replace("_", " ")), tag("dd", str(v))) for k, v in statuses.items()]
    runs_card = tag(
        "div",
        tag("div", "Case runs", class_="k"),
        tag("div", str(len(facts)), class_="v"),
        tag(
            "div",
            plural(len({f.id for f in facts}), "case") + f" × {plural(run['epochs'], 'epoch')}",
            class_="d",
        ),
        tag("dl", status_rows) if status_rows else None,
        class_="card",
    )
    outcome_rows = [(tag("dt", _outcome_badge(o)), tag("dd", str(n))) for o, n in outcomes.items()]
    outcome_card = tag(
        "div",
        tag("div", "Final detections", class_="k"),
        tag("div", str(outcomes["validated"]), tag("small", f" of {len(facts)} validated"), class_="v"),
        tag("div", "validated: matched attack events and no benign events", class_="d"),
        tag("dl", outcome_rows),
        class_="card",
    )
    settings = [
        ("agent", run["agent"]),
        ("scoring", run["scoring"]),
        ("variant", run["variant"]),
        ("subset", run["subset"]),
        ("pass ratio", "" if run["pass_ratio"] is None else f"{run['pass_ratio']:g}"),
        ("dataset", " ".join(str(x) for x in (dataset["name"], dataset["hash"]) if x)),
        ("rows", "" if dataset["rows"] is None else f"{dataset['rows']:,}"),
        ("window", window),
    ]
    settings_card = tag(
        "div",
        tag("div", "Run", class_="k"),
        tag("dl", [(tag("dt", k), tag("dd", v)) for k, v in settings if v]),
        class_="card",
    )
    return tag("div", score_card, runs_card, outcome_card, settings_card, class_="cards", id="overview")


def _charts(results: dict[str, Any], names: list[str]) -> Markup:
    summary = results["summary"]
    platforms = [
        (p, v["normalized_score"], f"{v['normalized_score']:.3f}  ({plural(v['cases'], 'run')})")
        for p, v in summary["by_platform"].items()
    ]
    checkpoints = []
    for name in names:
        entry = summary["by_checkpoint"].get(name)
        if entry is None:
            continue
        mean, maximum = entry["mean_score"], entry["max"]
        text = "not scored" if mean is None else f"{mean:.2f} / {fmt_max(maximum)}"
        checkpoints.append((f"{checkpoint_code(name)} {checkpoint_label(name)}", ratio(mean, maximum), text))
    return tag(
        "div",
        tag(
            "section",
            tag("h2", "Score by platform"),
            tag("p", "Mean normalised score of the case runs on each platform.", class_="hint"),
            _bars(platforms, label_width=90),
            class_="panel",
            id="platforms",
        ),
        tag(
            "section",
            tag("h2", "Score by checkpoint"),
            tag("p", "Mean points per case against each checkpoint's maximum.", class_="hint"),
            _bars(checkpoints, label_width=150),
            class_="panel",
            id="checkpoints",
        ),
        class_="grid2 charts",
    )


def _heat(facts: list[CaseFacts], names: list[str]) -> Markup:
    if not facts:
        return tag(
            "section",
            tag("h2", "Checkpoints × cases"),
            tag("p", "No cases ran in this run.", class_="empty"),
            class_="panel",
            id="heat",
        )
    head = [tag("th", "Case"), tag("th", "Platform")]
    head += [
        tag("th", checkpoint_code(n), tag("br"), tag("small", checkpoint_label(n)), class_="num", title=n)
        for n in names
    ]
    head += [
        tag("th", "Score", class_="num"),
        tag("th", "KQL", tag("br"), tag("small", "TP / FP"), class_="num"),
        tag("th", "Sigma", tag("br"), tag("small", "TP / FP"), class_="num"),
        tag("th", "Detection"),
        tag("th", "Status"),
    ]
    rows = []
    for f in facts:
        case = f.data
        href = "#" + f.anchor
        cells = [tag("td", tag("a", f.label, href=href), data_sort=f.label), tag("td", case["platform"])]
        for name in names:
            cp = case["checkpoints"].get(name)
            if cp is None:
                cells.append(tag("td", "", class_="cell hn", data_sort=""))
                continue
            value = ratio(cp["score"], cp["max"])
            cells.append(
                tag(
                    "td",
                    tag("a", fmt_score(cp["score"]), href=href),
                    class_=f"cell {heat_class(value)}",
                    data_target=f.anchor,
                    data_sort="" if value is None else f"{value:.4f}",
                    title=f"{checkpoint_label(name)}: {fmt_score(cp['score'])} of "
                    f"{fmt_max(cp['max'])} — {cp['message']}",
                )
            )
        cells += [
            tag(
                "td",
                tag("a", f"{case['normalized_score']:.3f}", href=href),
                class_=f"cell {heat_class(case['normalized_score'])}",
                data_target=f.anchor,
                data_sort=f"{case['normalized_score']:.6f}",
            ),
            tag("td", _tpfp(case["detection"].get("kql")), class_="num"),
            tag("td", _tpfp(case["detection"].get("sigma")), class_="num"),
            tag("td", _outcome_badge(f.outcome), data_sort=f.outcome),
            tag("td", _status_badge(case["status"]), data_sort=case["status"]),
        ]
        rows.append(tag("tr", cells))
    legend = tag(
        "div",
        tag("span", "share of the checkpoint's maximum:"),
        [
            tag("span", tag("i", class_=f"h{i}"), label)
            for i, label in enumerate(("< 20%", "20–40%", "40–60%", "60–80%", "≥ 80%"))
        ],
        tag("span", tag("i", class_="hn"), "not scored"),
        class_="legend",
    )
    return tag(
        "section",
        tag(
            "div",
            tag("h2", "Checkpoints × cases"),
            tag("span", "click a cell to open the case; click a header to sort", class_="hint"),
            class_="panel-head",
        ),
        tag(
            "div",
            tag("table", tag("thead", tag("tr", head)), tag("tbody", rows), class_="heat sortable"),
            class_="scroll",
        ),
        legend,
        class_="panel",
        id="heat",
    )


def _tpfp(det: dict[str, Any] | None) -> str:
    if det is None:
        return ""
    return "error" if det.get("error") else f"{det['tp']} / {det['fp']}"


def _problems(problems: list[dict[str, Any]]) -> Markup | None:
    """Cases and telemetry files left out of the run (not scored), first on the page."""
    if not problems:
        return None
    rows = [
        tag(
            "tr",
            tag("td", tag("span", p["kind"], class_="badge bad")),
            tag("td", tag("code", p["message"])),
            tag("td", ", ".join(p["cases"])),
        )
        for p in problems
    ]
    head = tag("tr", [tag("th", h) for h in ("Kind", "Problem (file, line, field)", "Cases it stops")])
    return tag(
        "section",
        tag(
            "div",
            tag("h2", "Left out of this run"),
            tag("span", f"{plural(len(problems), 'problem')}; these are not scored", class_="hint"),
            class_="panel-head",
        ),
        tag("div", tag("table", tag("thead", head), tag("tbody", rows)), class_="scroll"),
        class_="panel",
        id="problems",
    )


def _rules(rules: list[dict[str, Any]]) -> Markup:
    passed = sum(1 for r in rules if rule_passed(r) is True)
    rows = []
    for rule in rules:
        ok = rule_passed(rule)
        tone = "good" if ok else "bad" if ok is False else "mid"
        rows.append(
            tag(
                "tr",
                tag("td", tag("code", rule["path"])),
                tag("td", rule["title"]),
                tag("td", tag("span", rule["status"], class_=f"badge {tone}"), data_sort=rule["status"]),
                tag("td", "" if rule["tp"] is None else str(rule["tp"]), class_="num"),
                tag("td", "" if rule["fp"] is None else str(rule["fp"]), class_="num"),
                tag("td", describe_expected(rule["expected"])),
                tag("td", rule["message"]),
            )
        )
    head = tag(
        "tr",
        [
            tag("th", h, class_="num" if h in ("TP", "FP") else None)
            for h in ("Rule", "Title", "Status", "TP", "FP", "Expected", "Message")
        ],
    )
    return tag(
        "section",
        tag(
            "div",
            tag("h2", "Detection rules"),
            tag("span", f"{passed} of {plural(len(rules), 'rule')} passed the gate", class_="hint"),
            class_="panel-head",
        ),
        tag("div", tag("table", tag("thead", head), tag("tbody", rows), class_="sortable"), class_="scroll"),
        class_="panel",
        id="rules",
    )


def _trajectory_links(facts: list[CaseFacts], folder: Path | None, out_dir: Path | None) -> dict[str, str]:
    """Relative links from the page to the trajectory files that exist."""
    if folder is None or not folder.is_dir():
        return {}
    links = {}
    for f in facts:
        path = folder / f"{f.id}.e{f.epoch}.json"
        if path.is_file():
            rel = os.path.relpath(path.resolve(), (out_dir or folder.parent).resolve())
            links[f.anchor] = "/".join(quote(part) for part in Path(rel).as_posix().split("/"))
    return links


def _cases(facts: list[CaseFacts], names: list[str], links: dict[str, str]) -> Markup:
    if not facts:
        return Markup("")
    toolbar = tag(
        "div",
        tag("button", "Expand all", type="button", data_action="expand"),
        tag("button", "Collapse all", type="button", data_action="collapse"),
        class_="toolbar",
    )
    return tag(
        "section",
        tag("div", tag("h2", "Cases"), toolbar, class_="panel-head"),
        tag(
            "p",
            "Each case: what the agent was asked, what it read, explored and ran, its final "
            "rule and query with their true and false positives, and why points were lost.",
            class_="hint",
        ),
        [_case(f, names, links.get(f.anchor)) for f in facts],
        id="cases",
    )


def _case(f: CaseFacts, names: list[str], href: str | None) -> Markup:
    case = f.data
    summary = tag(
        "summary",
        tag("span", f.label, class_="cid"),
        tag("span", case["title"] or case["objective"], class_="ctitle"),
        tag(
            "span",
            tag("span", case["platform"], class_="badge plat"),
            _outcome_badge(f.outcome),
            _status_badge(case["status"]),
            _score_badge(case["normalized_score"]),
            class_="cmeta",
        ),
    )
    meta = [f"platform {case['platform']}"]
    if case["difficulty"]:
        meta.append(f"difficulty {case['difficulty']}")
    if case["subsets"]:
        meta.append("subsets " + ", ".join(case["subsets"]))
    if case["duration"] is not None:
        meta.append(f"{case['duration']:.1f} s")
    meta.append(plural(case["trajectory"]["tool_calls"], "tool call"))
    link = tag("a", "trajectory (JSON)", href=href) if href else None
    body = [
        tag("p", " · ".join(meta), " · " if link else "", link, class_="notes"),
        tag("div", tag("b", "Objective: "), case["objective"] or "(none recorded)", class_="objective"),
        _lost_box(f),
        _checkpoint_table(case, names),
        tag(
            "div",
            _compared_box("CTI reports", f.reports, found_word="Read"),
            _compared_box("ATT&CK techniques", f.techniques, found_word="Found", titles=_technique_names()),
            _compared_box("Tables", f.tables, found_word="Explored"),
            class_="grid3",
        ),
        _queries(case),
        _submission(case),
        _events(case),
    ]
    return tag("details", summary, tag("div", body, class_="case-body"), class_="case", id=f.anchor)


def _lost_box(f: CaseFacts) -> Markup:
    notes = [tag("p", n, class_="notes") for n in f.notes]
    if not f.lost:
        return tag("div", tag("b", "No points lost."), notes, class_="lost clean")
    return tag(
        "div",
        tag("b", "Why points were lost"),
        tag("ul", [tag("li", s) for s in f.lost]),
        notes,
        class_="lost",
    )


def _checkpoint_table(case: dict[str, Any], names: list[str]) -> Markup:
    rows = []
    for name in names:
        cp = case["checkpoints"].get(name)
        if cp is None:
            continue
        value = ratio(cp["score"], cp["max"])
        rows.append(
            tag(
                "tr",
                tag("td", tag("b", checkpoint_code(name)), " ", checkpoint_label(name)),
                tag("td", f"{fmt_score(cp['score'])} / {fmt_max(cp['max'])}", class_="num"),
                tag("td", _meter(value)),
                tag("td", cp["message"]),
            )
        )
    if not rows:
        return tag("p", "No checkpoint scores recorded.", class_="empty")
    head = tag(
        "tr", tag("th", "Checkpoint"), tag("th", "Points", class_="num"), tag("th", ""), tag("th", "Grading")
    )
    return tag("table", tag("thead", head), tag("tbody", rows), class_="checkpoints")


def _queries(case: dict[str, Any]) -> Markup:
    queries = case["trajectory"]["queries"]
    title = tag("h3", f"Queries run ({len(queries)})")
    if not queries:
        return tag("div", title, tag("p", "The agent ran no KQL query.", class_="empty"))
    submission = case["trajectory"]["submission"]
    final = " ".join((submission or {}).get("kql_query", "").split())
    rows = []
    for i, q in enumerate(queries, 1):
        is_final = bool(final) and " ".join(q["query"].split()) == final
        if q["error"]:
            outcome = tag("span", q["error"], class_="err")
        elif not q["ok"]:
            outcome = tag("span", "failed", class_="err")
        else:
            outcome = tag("span", "ok" + (" · final query" if is_final else ""), class_="ok")
        rows.append(
            tag(
                "tr",
                tag("td", str(i), class_="num"),
                tag("td", tag("pre", q["query"])),
                tag("td", "" if q["rows"] is None else str(q["rows"]), class_="num"),
                tag("td", outcome),
                tag("td", "" if q["duration"] is None else f"{q['duration'] * 1000:.0f} ms", class_="num"),
                class_="final" if is_final else None,
            )
        )
    head = tag(
        "tr",
        tag("th", "#", class_="num"),
        tag("th", "Query"),
        tag("th", "Rows", class_="num"),
        tag("th", "Result"),
        tag("th", "Time", class_="num"),
    )
    return tag(
        "div",
        title,
        tag("div", tag("table", tag("thead", head), tag("tbody", rows), class_="queries"), class_="scroll"),
    )


def _detection_stats(det: dict[str, Any] | None, label: str) -> Markup:
    if det is None:
        return tag("p", f"{label}: no execution result in this run.", class_="notes")
    if det.get("error"):
        return tag("p", tag("b", f"{label} failed: "), tag("span", det["error"], class_="err"))
    items = [
        ("TP", det["tp"]),
        ("FP", det["fp"]),
        ("missed", det["fn"]),
        ("precision", f"{det['precision']:.2f}"),
        ("recall", f"{det['recall']:.2f}"),
        ("F1", f"{det['f1']:.2f}"),
        ("rows", det["rows"]),
    ]
    if det["hard_negatives_matched"]:
        items.append(("hard negatives", det["hard_negatives_matched"]))
    if det["unattributed"]:
        items.append(("unattributed rows", det["unattributed"]))
    return tag(
        "div",
        tag("span", label + ": ", class_="hint") if label.startswith("On ") else None,
        [tag("span", f"{k} ", tag("b", str(v))) for k, v in items],
        class_="stats",
    )


def _submission(case: dict[str, Any]) -> Markup:
    submission = case["trajectory"]["submission"]
    title = tag("h3", "Final submission")
    if submission is None:
        reason = case["reason"] or case["status"].replace("_", " ")
        return tag("div", title, tag("p", f"Nothing was submitted: {reason}", class_="empty"))
    detection = case["detection"]
    dev = (case.get("dev") or {}).get("detection") or {}
    on = f" on {case['split']}" if case.get("dev") else ""
    sigma = tag(
        "div",
        tag("h3", "Sigma rule"),
        tag("pre", submission["sigma_rule"])
        if submission["sigma_rule"].strip()
        else tag("p", "(empty)", class_="empty"),
        _detection_stats(detection.get("sigma"), "Converted rule" + on),
        _detection_stats(dev.get("sigma"), "On dev") if dev else None,
    )
    kql = tag(
        "div",
        tag("h3", "KQL query"),
        tag("pre", submission["kql_query"])
        if submission["kql_query"].strip()
        else tag("p", "(empty)", class_="empty"),
        _detection_stats(detection.get("kql"), "Query" + on),
        _detection_stats(dev.get("kql"), "On dev") if dev else None,
    )
    return tag("div", title, tag("div", sigma, kql, class_="grid2"))


def _event(row: dict[str, Any], head: str) -> Markup:
    pairs = compact_row(row)
    table = (
        tag("table", tag("tbody", [tag("tr", tag("th", k), tag("td", v)) for k, v in pairs]), class_="kv")
        if pairs
        else tag("p", "(no values)", class_="empty")
    )
    return tag("div", tag("div", head, class_="eh"), table, class_="event")


def _events(case: dict[str, Any]) -> Markup:
    kql = case["detection"].get("kql")
    if kql is None or kql.get("error"):
        return Markup("")
    attack = matched_attack_rows(case)
    attack_html = [_event(row, "attack · " + " · ".join(event.split(":", 1))) for event, row in attack]
    if not attack_html and kql["matched_attack"]:
        attack_html = [tag("p", tag("span", _chips(kql["matched_attack"][:8], "hit"), class_="chips"))]
    fps = kql["false_positive_examples"][:3]
    fp_html = [
        _event(
            e.get("row") if isinstance(e.get("row"), dict) else {},
            " · ".join(str(x) for x in (e.get("kind", "benign"), e.get("table"), e.get("id")) if x),
        )
        for e in fps
    ]
    missed = kql["missed_attack"]
    return tag(
        "div",
        tag(
            "div",
            tag(
                "div",
                tag("h3", f"Attack events the final KQL matched ({kql['tp']})"),
                attack_html or tag("p", "None.", class_="empty"),
                missed
                and tag("p", tag("b", "Missed: "), tag("span", _chips(missed[:8], "miss"), class_="chips")),
            ),
            tag(
                "div",
                tag("h3", f"Benign events it matched — false positives ({kql['fp']})"),
                fp_html or tag("p", "None.", class_="empty"),
            ),
            class_="grid2",
        ),
    )


# -- the comparison ------------------------------------------------------------------------
