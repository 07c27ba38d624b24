"""The HTML score report and the HTML comparison: one self-contained file each.

Everything a page needs is inline (CSS, a little JavaScript, SVG charts); it
loads nothing from the network, and a Content-Security-Policy with the hashes
of its own style and script keeps anything else from running. The page shell,
CSS and JS are package data under ``templates/``; the fragments are built
here with `tag`, which escapes every text and attribute value it is given, so
agent output (queries, answers, error messages) is always shown as text.
"""

from __future__ import annotations

import base64
import hashlib
import html as _html
import os
from collections.abc import Iterable
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import quote

from .facts import (
    OUTCOME_TEXT,
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

_VOID = frozenset({"br", "hr", "img", "meta", "wbr"})


class Markup(str):
    """Text that is already HTML: `tag` and `esc` insert it as is."""


def esc(value: object) -> Markup:
    """Escape for HTML text and attribute values (Markup passes through)."""
    if isinstance(value, Markup):
        return value
    return Markup(_html.escape("" if value is None else str(value), quote=True))


def _flatten(children: Iterable[Any]) -> Iterable[Any]:
    for child in children:
        if isinstance(child, (list, tuple)):
            yield from _flatten(child)
        elif child is not None and child is not False:
            yield child


def tag(name: str, *children: Any, **attrs: Any) -> Markup:
    """``tag("td", text, class_="num")``: children and attribute values are escaped."""
    parts = [name]
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        attr = key.rstrip("_").replace("_", "-")
        parts.append(attr if value is True else f'{attr}="{esc(value)}"')
    opening = "<" + " ".join(parts) + ">"
    if name in _VOID:
        return Markup(opening)
    return Markup(opening + "".join(esc(c) for c in _flatten(children)) + f"</{name}>")


# -- templates -----------------------------------------------------------------------------


@cache
def _template(name: str) -> str:
    return resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def _page(*, title: str, heading: str, subheading: Markup, body: Markup, footer: Markup) -> str:
    style, script = _template("report.css"), _template("report.js")
    csp = (f"default-src 'none'; style-src '{_sha256(style)}'; script-src '{_sha256(script)}'; "
           "img-src data:; base-uri 'none'; form-action 'none'")
    from .. import __version__

    return Template(_template("page.html")).substitute(
        csp=esc(csp), version=esc(__version__), title=esc(title), heading=esc(heading),
        subheading=subheading, body=body, footer=footer, style=style, script=script)


# -- small pieces --------------------------------------------------------------------------


def heat_class(value: float | None) -> str:
    """A discrete colour bucket for a ratio in [0, 1] (``hn``: not scored)."""
    if value is None:
        return "hn"
    return f"h{min(4, max(0, int(value * 5)))}"


def _tone(value: float | None) -> str:
    if value is None:
        return "none"
    return "good" if value >= 0.8 else "mid" if value >= 0.4 else "bad"


def _score_badge(value: float) -> Markup:
    return tag("span", f"{value:.3f}", class_=f"badge {_tone(value)}", title="normalised score")


_STATUS_TONE = {"submitted": "good", "no_submission": "mid"}
_OUTCOME_TONE = {"validated": "good", "attempted": "mid", "missed": "bad"}


def _status_badge(status: str) -> Markup:
    return tag("span", status.replace("_", " "), class_=f"badge {_STATUS_TONE.get(status, 'bad')}")


def _outcome_badge(outcome: str) -> Markup:
    return tag("span", outcome, class_=f"badge {_OUTCOME_TONE[outcome]}", title=OUTCOME_TEXT[outcome])


def _meter(value: float | None, width: int = 90) -> Markup:
    filled = 0 if value is None else round(max(0.0, min(1.0, value)) * width)
    return tag("svg", tag("rect", class_="track", width=width, height=8, rx=4),
               tag("rect", class_=f"fill-{_tone(value)}", width=filled, height=8, rx=4),
               class_="meter-svg", width=width, height=8, viewBox=f"0 0 {width} 8",
               role="img", aria_label="not scored" if value is None else f"{value:.0%}")


def _bars(rows: list[tuple[str, float | None, str]], *, label_width: int = 150) -> Markup:
    """Horizontal bars: (label, ratio in [0,1] or None, value text) -> an inline SVG chart."""
    if not rows:
        return tag("p", "No data.", class_="empty")
    width, bar_h, gap = 560, 18, 10
    track = width - label_width - 120
    height = len(rows) * (bar_h + gap) + 6
    shapes = []
    for i, (label, value, text) in enumerate(rows):
        y = 4 + i * (bar_h + gap)
        filled = 0 if value is None else max(0.0, min(1.0, value)) * track
        shapes.append(tag("text", label, x=0, y=y + 13))
        shapes.append(tag("rect", class_="track", x=label_width, y=y, width=track, height=bar_h, rx=3))
        shapes.append(tag("rect", class_=f"fill-{_tone(value)}", x=label_width, y=y,
                          width=f"{filled:.1f}", height=bar_h, rx=3))
        shapes.append(tag("text", text, x=label_width + track + 8, y=y + 13,
                          class_="muted" if value is None else None))
    return tag("svg", shapes, class_="chart", viewBox=f"0 0 {width} {height}", role="img",
               aria_label="; ".join(f"{label}: {text}" for label, _, text in rows))


def _ci_chart(mean: float, low: float, high: float) -> Markup:
    width, pad = 240, 8
    span = width - 2 * pad

    def x(v: float) -> float:
        return pad + max(0.0, min(1.0, v)) * span

    return tag("svg",
               tag("rect", class_="track", x=pad, y=9, width=span, height=6, rx=3),
               tag("g", tag("line", x1=f"{x(low):.1f}", x2=f"{x(high):.1f}", y1=12, y2=12),
                   tag("line", x1=f"{x(low):.1f}", x2=f"{x(low):.1f}", y1=6, y2=18),
                   tag("line", x1=f"{x(high):.1f}", x2=f"{x(high):.1f}", y1=6, y2=18), class_="ci"),
               tag("circle", cx=f"{x(mean):.1f}", cy=12, r=5, class_=f"fill-{_tone(mean)}"),
               tag("text", "0", x=pad, y=32, class_="muted"),
               tag("text", "1", x=width - pad - 6, y=32, class_="muted"),
               class_="chart", viewBox=f"0 0 {width} 36", role="img",
               aria_label=f"score {mean:.3f}, 95% CI {low:.3f} to {high:.3f}")


def _chips(items: list[str], kind: str, *, titles: dict[str, str] | None = None) -> list[Markup]:
    return [tag("span", item, class_=f"chip {kind}", title=(titles or {}).get(item)) for item in items]


def _compared_box(title: str, compared: Any, *, found_word: str, titles: dict[str, str] | None = None,
                  hint: str = "") -> Markup:
    rows = []
    if compared.expected is None:
        chips = _chips(compared.found, "", titles=titles) or [tag("span", "none", class_="chip none")]
        rows.append(tag("p", tag("b", found_word), " ", tag("span", chips, class_="chips")))
        rows.append(tag("p", "Expected values are not in this results file.", class_="notes"))
    else:
        found = compared.matched
        rows.append(tag("p", tag("b", f"{found_word} {len(found)} of {len(compared.expected)}"),
                        tag("span", _chips(found, "hit", titles=titles)
                            or [tag("span", "none", class_="chip none")], class_="chips")))
        if compared.missed:
            rows.append(tag("p", tag("b", "Missed"),
                            tag("span", _chips(compared.missed, "miss", titles=titles), class_="chips")))
        if compared.extra:
            rows.append(tag("p", tag("b", "Extra"),
                            tag("span", _chips(compared.extra, "extra", titles=titles), class_="chips")))
    return tag("div", tag("h3", title), hint and tag("p", hint, class_="notes"), rows, class_="box")


@lru_cache(maxsize=1)
def _technique_names() -> dict[str, str]:
    """ATT&CK technique names for tooltips (empty when the bundled data is unavailable)."""
    try:
        from ..attack import load_attack

        return {t.id: t.name for t in load_attack().techniques.values()}
    except Exception:  # the report must render without the ATT&CK data
        return {}


# -- the score report ----------------------------------------------------------------------


def render_html(results: dict[str, Any], *, trajectories: Path | None = None,
                out_dir: Path | None = None) -> str:
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
        return _page(title=f"ctirealm rules gate · {passed}/{len(results['rules'])} passed",
                     heading="Rules gate", subheading=sub, body=body, footer=_footer(results))
    body = [
        _problems(results["problems"]),
        _overview(results, facts),
        _charts(results, names),
        _heat(facts, names),
        _rules(results["rules"]) if results["rules"] else None,
        _cases(facts, names, _trajectory_links(facts, trajectories, out_dir)),
    ]
    title = f"ctirealm · {run['agent']} · {summary['normalized_score']:.3f}"
    return _page(title=title, heading=f"Score report: {run['agent']}", subheading=sub,
                 body=Markup("\n".join(b for b in body if b)), footer=_footer(results))


def _run_line(run: dict[str, Any]) -> list[str]:
    return [f"agent {run['agent']}", f"{run['scoring']} scoring", f"{run['variant']} toolset",
            f"subset {run['subset']}", plural(run["epochs"], "epoch")]


def _footer(results: dict[str, Any]) -> Markup:
    run = results["run"]
    versions = ", ".join(f"{k} {v}" for k, v in run["versions"].items())
    when = f"run {run['started']} – {run['finished']}" if run["started"] else ""
    parts = [p for p in (f"results format {results['format']}", when, versions) if p]
    return tag("p", " · ".join(parts) + ". Generated from results.json alone; "
               "regenerate with: ctirealm report results.json")


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
        split_line = tag("div", f"scored on {split}: KQL F1 {gen[split]['kql_f1']:.2f}, Sigma F1 "
                         f"{gen[split]['sigma_f1']:.2f} · on dev (what the agent queried): score "
                         f"{gen['dev']['normalized_score']:.3f}, KQL F1 {gen['dev']['kql_f1']:.2f}, "
                         f"Sigma F1 {gen['dev']['sigma_f1']:.2f}", class_="d", id="generalisation")
    score_card = tag("div", tag("div", "Normalised score", class_="k"),
                     tag("div", f"{summary['normalized_score']:.3f}", tag("small", " / 1"), class_="v"),
                     tag("div", f"95% CI {low:.3f} – {high:.3f}", class_="d"),
                     split_line,
                     _ci_chart(summary["normalized_score"], low, high), class_="card")
    status_rows = [(tag("dt", k.replace("_", " ")), tag("dd", str(v))) for k, v in statuses.items()]
    runs_card = tag("div", tag("div", "Case runs", class_="k"),
                    tag("div", str(len(facts)), class_="v"),
                    tag("div", plural(len({f.id for f in facts}), "case")
                        + f" × {plural(run['epochs'], 'epoch')}", class_="d"),
                    tag("dl", status_rows) if status_rows else None, class_="card")
    outcome_rows = [(tag("dt", _outcome_badge(o)), tag("dd", str(n))) for o, n in outcomes.items()]
    outcome_card = tag("div", tag("div", "Final detections", class_="k"),
                       tag("div", str(outcomes["validated"]), tag("small", f" of {len(facts)} validated"),
                           class_="v"),
                       tag("div", "validated: matched attack events and no benign events", class_="d"),
                       tag("dl", outcome_rows), class_="card")
    settings = [("agent", run["agent"]), ("scoring", run["scoring"]), ("variant", run["variant"]),
                ("subset", run["subset"]),
                ("pass ratio", "" if run["pass_ratio"] is None else f"{run['pass_ratio']:g}"),
                ("dataset", " ".join(str(x) for x in (dataset["name"], dataset["hash"]) if x)),
                ("rows", "" if dataset["rows"] is None else f"{dataset['rows']:,}"),
                ("window", window)]
    settings_card = tag("div", tag("div", "Run", class_="k"),
                        tag("dl", [(tag("dt", k), tag("dd", v)) for k, v in settings if v]), class_="card")
    return tag("div", score_card, runs_card, outcome_card, settings_card, class_="cards", id="overview")


def _charts(results: dict[str, Any], names: list[str]) -> Markup:
    summary = results["summary"]
    platforms = [(p, v["normalized_score"], f"{v['normalized_score']:.3f}  ({plural(v['cases'], 'run')})")
                 for p, v in summary["by_platform"].items()]
    checkpoints = []
    for name in names:
        entry = summary["by_checkpoint"].get(name)
        if entry is None:
            continue
        mean, maximum = entry["mean_score"], entry["max"]
        text = "not scored" if mean is None else f"{mean:.2f} / {fmt_max(maximum)}"
        checkpoints.append((f"{checkpoint_code(name)} {checkpoint_label(name)}", ratio(mean, maximum), text))
    return tag("div",
               tag("section", tag("h2", "Score by platform"),
                   tag("p", "Mean normalised score of the case runs on each platform.", class_="hint"),
                   _bars(platforms, label_width=90), class_="panel", id="platforms"),
               tag("section", tag("h2", "Score by checkpoint"),
                   tag("p", "Mean points per case against each checkpoint's maximum.", class_="hint"),
                   _bars(checkpoints, label_width=150), class_="panel", id="checkpoints"),
               class_="grid2 charts")


def _heat(facts: list[CaseFacts], names: list[str]) -> Markup:
    if not facts:
        return tag("section", tag("h2", "Checkpoints × cases"),
                   tag("p", "No cases ran in this run.", class_="empty"), class_="panel", id="heat")
    head = [tag("th", "Case"), tag("th", "Platform")]
    head += [tag("th", checkpoint_code(n), tag("br"), tag("small", checkpoint_label(n)), class_="num",
                 title=n) for n in names]
    head += [tag("th", "Score", class_="num"),
             tag("th", "KQL", tag("br"), tag("small", "TP / FP"), class_="num"),
             tag("th", "Sigma", tag("br"), tag("small", "TP / FP"), class_="num"),
             tag("th", "Detection"), tag("th", "Status")]
    rows = []
    for f in facts:
        case = f.data
        href = "#" + f.anchor
        cells = [tag("td", tag("a", f.label, href=href), data_sort=f.label),
                 tag("td", case["platform"])]
        for name in names:
            cp = case["checkpoints"].get(name)
            if cp is None:
                cells.append(tag("td", "", class_="cell hn", data_sort=""))
                continue
            value = ratio(cp["score"], cp["max"])
            cells.append(tag("td", tag("a", fmt_score(cp["score"]), href=href),
                             class_=f"cell {heat_class(value)}", data_target=f.anchor,
                             data_sort="" if value is None else f"{value:.4f}",
                             title=f"{checkpoint_label(name)}: {fmt_score(cp['score'])} of "
                                   f"{fmt_max(cp['max'])} — {cp['message']}"))
        cells += [tag("td", tag("a", f"{case['normalized_score']:.3f}", href=href),
                      class_=f"cell {heat_class(case['normalized_score'])}", data_target=f.anchor,
                      data_sort=f"{case['normalized_score']:.6f}"),
                  tag("td", _tpfp(case["detection"].get("kql")), class_="num"),
                  tag("td", _tpfp(case["detection"].get("sigma")), class_="num"),
                  tag("td", _outcome_badge(f.outcome), data_sort=f.outcome),
                  tag("td", _status_badge(case["status"]), data_sort=case["status"])]
        rows.append(tag("tr", cells))
    legend = tag("div", tag("span", "share of the checkpoint's maximum:"),
                 [tag("span", tag("i", class_=f"h{i}"), label) for i, label in
                  enumerate(("< 20%", "20–40%", "40–60%", "60–80%", "≥ 80%"))],
                 tag("span", tag("i", class_="hn"), "not scored"), class_="legend")
    return tag("section",
               tag("div", tag("h2", "Checkpoints × cases"),
                   tag("span", "click a cell to open the case; click a header to sort", class_="hint"),
                   class_="panel-head"),
               tag("div", tag("table", tag("thead", tag("tr", head)), tag("tbody", rows),
                              class_="heat sortable"), class_="scroll"),
               legend, class_="panel", id="heat")


def _tpfp(det: dict[str, Any] | None) -> str:
    if det is None:
        return ""
    return "error" if det.get("error") else f"{det['tp']} / {det['fp']}"


def _problems(problems: list[dict[str, Any]]) -> Markup | None:
    """Cases and telemetry files left out of the run (not scored), first on the page."""
    if not problems:
        return None
    rows = [tag("tr", tag("td", tag("span", p["kind"], class_="badge bad")),
                tag("td", tag("code", p["message"])), tag("td", ", ".join(p["cases"])))
            for p in problems]
    head = tag("tr", [tag("th", h) for h in ("Kind", "Problem (file, line, field)", "Cases it stops")])
    return tag("section",
               tag("div", tag("h2", "Left out of this run"),
                   tag("span", f"{plural(len(problems), 'problem')}; these are not scored", class_="hint"),
                   class_="panel-head"),
               tag("div", tag("table", tag("thead", head), tag("tbody", rows)), class_="scroll"),
               class_="panel", id="problems")


def _rules(rules: list[dict[str, Any]]) -> Markup:
    passed = sum(1 for r in rules if rule_passed(r) is True)
    rows = []
    for rule in rules:
        ok = rule_passed(rule)
        tone = "good" if ok else "bad" if ok is False else "mid"
        rows.append(tag("tr",
                        tag("td", tag("code", rule["path"])),
                        tag("td", rule["title"]),
                        tag("td", tag("span", rule["status"], class_=f"badge {tone}"),
                            data_sort=rule["status"]),
                        tag("td", "" if rule["tp"] is None else str(rule["tp"]), class_="num"),
                        tag("td", "" if rule["fp"] is None else str(rule["fp"]), class_="num"),
                        tag("td", describe_expected(rule["expected"])),
                        tag("td", rule["message"])))
    head = tag("tr", [tag("th", h, class_="num" if h in ("TP", "FP") else None)
                      for h in ("Rule", "Title", "Status", "TP", "FP", "Expected", "Message")])
    return tag("section",
               tag("div", tag("h2", "Detection rules"),
                   tag("span", f"{passed} of {plural(len(rules), 'rule')} passed the gate", class_="hint"),
                   class_="panel-head"),
               tag("div", tag("table", tag("thead", head), tag("tbody", rows), class_="sortable"),
                   class_="scroll"),
               class_="panel", id="rules")


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
    toolbar = tag("div", tag("button", "Expand all", type="button", data_action="expand"),
                  tag("button", "Collapse all", type="button", data_action="collapse"), class_="toolbar")
    return tag("section",
               tag("div", tag("h2", "Cases"), toolbar, class_="panel-head"),
               tag("p", "Each case: what the agent was asked, what it read, explored and ran, its final "
                        "rule and query with their true and false positives, and why points were lost.",
                   class_="hint"),
               [_case(f, names, links.get(f.anchor)) for f in facts], id="cases")


def _case(f: CaseFacts, names: list[str], href: str | None) -> Markup:
    case = f.data
    summary = tag("summary",
                  tag("span", f.label, class_="cid"),
                  tag("span", case["title"] or case["objective"], class_="ctitle"),
                  tag("span", tag("span", case["platform"], class_="badge plat"), _outcome_badge(f.outcome),
                      _status_badge(case["status"]), _score_badge(case["normalized_score"]),
                      class_="cmeta"))
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
        tag("div",
            _compared_box("CTI reports", f.reports, found_word="Read"),
            _compared_box("ATT&CK techniques", f.techniques, found_word="Found", titles=_technique_names()),
            _compared_box("Tables", f.tables, found_word="Explored"),
            class_="grid3"),
        _queries(case),
        _submission(case),
        _events(case),
    ]
    return tag("details", summary, tag("div", body, class_="case-body"), class_="case", id=f.anchor)


def _lost_box(f: CaseFacts) -> Markup:
    notes = [tag("p", n, class_="notes") for n in f.notes]
    if not f.lost:
        return tag("div", tag("b", "No points lost."), notes, class_="lost clean")
    return tag("div", tag("b", "Why points were lost"), tag("ul", [tag("li", s) for s in f.lost]), notes,
               class_="lost")


def _checkpoint_table(case: dict[str, Any], names: list[str]) -> Markup:
    rows = []
    for name in names:
        cp = case["checkpoints"].get(name)
        if cp is None:
            continue
        value = ratio(cp["score"], cp["max"])
        rows.append(tag("tr", tag("td", tag("b", checkpoint_code(name)), " ", checkpoint_label(name)),
                        tag("td", f"{fmt_score(cp['score'])} / {fmt_max(cp['max'])}", class_="num"),
                        tag("td", _meter(value)),
                        tag("td", cp["message"])))
    if not rows:
        return tag("p", "No checkpoint scores recorded.", class_="empty")
    head = tag("tr", tag("th", "Checkpoint"), tag("th", "Points", class_="num"), tag("th", ""),
               tag("th", "Grading"))
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
        rows.append(tag("tr",
                        tag("td", str(i), class_="num"),
                        tag("td", tag("pre", q["query"])),
                        tag("td", "" if q["rows"] is None else str(q["rows"]), class_="num"),
                        tag("td", outcome),
                        tag("td", "" if q["duration"] is None else f"{q['duration'] * 1000:.0f} ms",
                            class_="num"),
                        class_="final" if is_final else None))
    head = tag("tr", tag("th", "#", class_="num"), tag("th", "Query"), tag("th", "Rows", class_="num"),
               tag("th", "Result"), tag("th", "Time", class_="num"))
    return tag("div", title, tag("div", tag("table", tag("thead", head), tag("tbody", rows),
                                            class_="queries"), class_="scroll"))


def _detection_stats(det: dict[str, Any] | None, label: str) -> Markup:
    if det is None:
        return tag("p", f"{label}: no execution result in this run.", class_="notes")
    if det.get("error"):
        return tag("p", tag("b", f"{label} failed: "), tag("span", det["error"], class_="err"))
    items = [("TP", det["tp"]), ("FP", det["fp"]), ("missed", det["fn"]),
             ("precision", f"{det['precision']:.2f}"), ("recall", f"{det['recall']:.2f}"),
             ("F1", f"{det['f1']:.2f}"), ("rows", det["rows"])]
    if det["hard_negatives_matched"]:
        items.append(("hard negatives", det["hard_negatives_matched"]))
    if det["unattributed"]:
        items.append(("unattributed rows", det["unattributed"]))
    return tag("div", tag("span", label + ": ", class_="hint") if label.startswith("On ") else None,
               [tag("span", f"{k} ", tag("b", str(v))) for k, v in items], class_="stats")


def _submission(case: dict[str, Any]) -> Markup:
    submission = case["trajectory"]["submission"]
    title = tag("h3", "Final submission")
    if submission is None:
        reason = case["reason"] or case["status"].replace("_", " ")
        return tag("div", title, tag("p", f"Nothing was submitted: {reason}", class_="empty"))
    detection = case["detection"]
    dev = (case.get("dev") or {}).get("detection") or {}
    on = f" on {case['split']}" if case.get("dev") else ""
    sigma = tag("div", tag("h3", "Sigma rule"),
                tag("pre", submission["sigma_rule"]) if submission["sigma_rule"].strip()
                else tag("p", "(empty)", class_="empty"),
                _detection_stats(detection.get("sigma"), "Converted rule" + on),
                _detection_stats(dev.get("sigma"), "On dev") if dev else None)
    kql = tag("div", tag("h3", "KQL query"),
              tag("pre", submission["kql_query"]) if submission["kql_query"].strip()
              else tag("p", "(empty)", class_="empty"),
              _detection_stats(detection.get("kql"), "Query" + on),
              _detection_stats(dev.get("kql"), "On dev") if dev else None)
    return tag("div", title, tag("div", sigma, kql, class_="grid2"))


def _event(row: dict[str, Any], head: str) -> Markup:
    pairs = compact_row(row)
    table = tag("table", tag("tbody", [tag("tr", tag("th", k), tag("td", v)) for k, v in pairs]),
                class_="kv") if pairs else tag("p", "(no values)", class_="empty")
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
    fp_html = [_event(e.get("row") if isinstance(e.get("row"), dict) else {},
                      " · ".join(str(x) for x in (e.get("kind", "benign"), e.get("table"), e.get("id")) if x))
               for e in fps]
    missed = kql["missed_attack"]
    return tag("div",
               tag("div",
                   tag("div", tag("h3", f"Attack events the final KQL matched ({kql['tp']})"),
                       attack_html or tag("p", "None.", class_="empty"),
                       missed and tag("p", tag("b", "Missed: "),
                                      tag("span", _chips(missed[:8], "miss"), class_="chips"))),
                   tag("div", tag("h3", f"Benign events it matched — false positives ({kql['fp']})"),
                       fp_html or tag("p", "None.", class_="empty")),
                   class_="grid2"))


# -- the comparison ------------------------------------------------------------------------


def _delta(value: float | None, digits: int = 3) -> Markup:
    if value is None:
        return tag("span", "–", class_="delta-zero")
    if abs(value) < 0.5 * 10 ** -digits:
        return tag("span", f"{0:.{digits}f}", class_="delta-zero")
    cls = "delta-pos" if value > 0 else "delta-neg"
    return tag("span", f"{value:+.{digits}f}", class_=cls)


def render_comparison_html(comparison: Any) -> str:
    """The comparison page for a `compare.Comparison`: regressions first."""
    runs = comparison.runs
    base = runs[0]
    head = tag("tr", tag("th", ""), tag("th", "Run"), tag("th", "Agent"), tag("th", "Scoring"),
               tag("th", "Dataset"), tag("th", "Case runs", class_="num"), tag("th", "Score", class_="num"),
               tag("th", "95% CI", class_="num"), tag("th", "Δ vs A", class_="num"))
    rows = []
    for run in runs:
        delta = None if run is base else run.score - base.score
        rows.append(tag("tr", tag("td", tag("b", run.key)), tag("td", tag("code", run.label)),
                        tag("td", run.agent), tag("td", run.scoring), tag("td", run.dataset),
                        tag("td", str(run.cases), class_="num"), tag("td", f"{run.score:.3f}", class_="num"),
                        tag("td", f"{run.ci[0]:.3f} – {run.ci[1]:.3f}", class_="num"),
                        tag("td", "" if delta is None else _delta(delta), class_="num")))
    body = [tag("section", tag("h2", "Runs"), tag("div", tag("table", tag("thead", head), tag("tbody", rows)),
                                                  class_="scroll"),
                [tag("p", w, class_="notes") for w in comparison.warnings], class_="panel", id="runs")]
    for pair in comparison.pairs:
        body.append(_pair_section(pair))
    sub = Markup(tag("span", f"{len(runs)} runs") + tag("span", f"baseline {base.key}: {base.label}"))
    return _page(title="ctirealm comparison", heading="Run comparison", subheading=sub,
                 body=Markup("\n".join(body)),
                 footer=tag("p", "Generated from results.json files alone; regenerate with: "
                                 "ctirealm report compare A.json B.json --html OUT"))


def _pair_section(pair: Any) -> Markup:
    a, b = pair.base, pair.other
    names = pair.checkpoints
    title = tag("h2", f"{b.key} vs {a.key}: ", _delta(pair.score_delta),
                tag("span", f"  ({a.score:.3f} → {b.score:.3f})", class_="hint"))
    counts = tag("p", f"{plural(len(pair.regressions), 'regression')}, "
                      f"{plural(len(pair.improvements), 'improvement')}, {len(pair.unchanged)} unchanged"
                 + (f", {len(pair.only_base)} only in {a.key}" if pair.only_base else "")
                 + (f", {len(pair.only_other)} only in {b.key}" if pair.only_other else ""), class_="hint")
    cp_rows = [(f"{checkpoint_code(n)} {checkpoint_label(n)}", pair.checkpoint_means[n]) for n in names]
    cp_table = tag("table", tag("thead", tag("tr", tag("th", "Checkpoint"), tag("th", a.key, class_="num"),
                                            tag("th", b.key, class_="num"), tag("th", "Δ", class_="num"))),
                   tag("tbody", [tag("tr", tag("td", label), tag("td", fmt_score(x), class_="num"),
                                     tag("td", fmt_score(y), class_="num"),
                                     tag("td", _delta(None if x is None or y is None else y - x, 2),
                                         class_="num"))
                                 for label, (x, y) in cp_rows]))
    pl_table = tag("table", tag("thead", tag("tr", tag("th", "Platform"), tag("th", a.key, class_="num"),
                                            tag("th", b.key, class_="num"), tag("th", "Δ", class_="num"))),
                   tag("tbody", [tag("tr", tag("td", p), tag("td", fmt_score(x, 3), class_="num"),
                                     tag("td", fmt_score(y, 3), class_="num"),
                                     tag("td", _delta(None if x is None or y is None else y - x),
                                         class_="num"))
                                 for p, (x, y) in pair.platform_means.items()]))
    sections = [tag("div", tag("section", tag("h2", "By checkpoint"), cp_table, class_="panel"),
                    tag("section", tag("h2", "By platform"), pl_table, class_="panel"),
                    class_="grid2 charts")]
    sections.append(_delta_table("Regressions", pair.regressions, names, a.key, b.key,
                                 "No case scored lower."))
    sections.append(_delta_table("Improvements", pair.improvements, names, a.key, b.key,
                                 "No case scored higher."))
    if pair.rule_changes:
        sections.append(_rule_changes(pair))
    if pair.unchanged:
        sections.append(tag("section", tag("details", tag("summary", f"Unchanged ({len(pair.unchanged)})"),
                                           tag("p", ", ".join(d.case for d in pair.unchanged))),
                            class_="panel"))
    if pair.only_base or pair.only_other:
        sections.append(tag("section", tag("h2", "Cases in one run only"),
                            pair.only_base and tag("p", f"only in {a.key}: " + ", ".join(pair.only_base)),
                            pair.only_other and tag("p", f"only in {b.key}: " + ", ".join(pair.only_other)),
                            class_="panel"))
    return tag("section", tag("section", title, counts, class_="panel"), sections,
               id=f"pair-{b.key}")


def _delta_table(title: str, deltas: list[Any], names: list[str], a: str, b: str, empty: str) -> Markup:
    if not deltas:
        return tag("section", tag("h2", f"{title} (0)"), tag("p", empty, class_="empty"), class_="panel")
    head = [tag("th", "Case"), tag("th", "Platform"), tag("th", a, class_="num"), tag("th", b, class_="num"),
            tag("th", "Δ", class_="num")]
    head += [tag("th", checkpoint_code(n), tag("br"), tag("small", checkpoint_label(n)), class_="num")
             for n in names]
    head += [tag("th", "KQL TP/FP"), tag("th", "Status")]
    rows = []
    for d in deltas:
        cells = [tag("td", tag("b", d.case)), tag("td", d.platform),
                 tag("td", fmt_score(d.before, 3), class_="num"),
                 tag("td", fmt_score(d.after, 3), class_="num"),
                 tag("td", _delta(d.delta), class_="num", data_sort=f"{d.delta:.6f}")]
        for n in names:
            x, y = d.checkpoints.get(n, (None, None))
            change = None if x is None or y is None else y - x
            cells.append(tag("td", _delta(change, 2), class_="num",
                             title=f"{fmt_score(x)} → {fmt_score(y)}"))
        cells.append(tag("td", f"{d.tpfp[0]} → {d.tpfp[1]}"))
        before, after = (s.replace("_", " ") for s in d.status)
        cells.append(tag("td", f"{before} → {after}" if before != after else after))
        rows.append(tag("tr", cells))
    return tag("section", tag("h2", f"{title} ({len(deltas)})"),
               tag("div", tag("table", tag("thead", tag("tr", head)), tag("tbody", rows), class_="sortable"),
                   class_="scroll"), class_="panel")


def _rule_changes(pair: Any) -> Markup:
    rows = [tag("tr", tag("td", tag("code", c.path)), tag("td", f"{c.before} → {c.after}"),
                tag("td", c.tpfp_before + " → " + c.tpfp_after),
                tag("td", tag("span", c.kind,
                              class_="badge " + ("bad" if c.kind in ("regression", "removed") else "good"))))
            for c in pair.rule_changes]
    head = tag("tr", tag("th", "Rule"), tag("th", "Status"), tag("th", "TP/FP"), tag("th", "Change"))
    return tag("section", tag("h2", f"Rule changes ({len(rows)})"),
               tag("table", tag("thead", head), tag("tbody", rows)), class_="panel")
