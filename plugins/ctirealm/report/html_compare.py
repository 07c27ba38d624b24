"""The HTML comparison of several runs (see `compare.Comparison`): one self-contained page,
regressions first.
"""

from __future__ import annotations

from typing import Any

from .facts import (
    checkpoint_code,
    checkpoint_label,
    fmt_score,
    plural,
)
from .markup import Markup, _page, tag
from .widgets import _delta


def render_comparison_html(comparison: Any) -> str:
    """The comparison page for a `compare.Comparison`: regressions first."""
    runs = comparison.runs
    base = runs[0]
    head = tag(
        "tr",
        tag("th", ""),
        tag("th", "Run"),
        tag("th", "Agent"),
        tag("th", "Scoring"),
        tag("th", "Dataset"),
        tag("th", "Case runs", class_="num"),
        tag("th", "Score", class_="num"),
        tag("th", "95% CI", class_="num"),
        tag("th", "Δ vs A", class_="num"),
    )
    rows = []
    for run in runs:
        delta = None if run is base else run.score - base.score
        rows.append(
            tag(
                "tr",
                tag("td", tag("b", run.key)),
                tag("td", tag("code", run.label)),
                tag("td", run.agent),
                tag("td", run.scoring),
                tag("td", run.dataset),
                tag("td", str(run.cases), class_="num"),
                tag("td", f"{run.score:.3f}", class_="num"),
                tag("td", f"{run.ci[0]:.3f} – {run.ci[1]:.3f}", class_="num"),
                tag("td", "" if delta is None else _delta(delta), class_="num"),
            )
        )
    body = [
        tag(
            "section",
            tag("h2", "Runs"),
            tag("div", tag("table", tag("thead", head), tag("tbody", rows)), class_="scroll"),
            [tag("p", w, class_="notes") for w in comparison.warnings],
            class_="panel",
            id="runs",
        )
    ]
    for pair in comparison.pairs:
        body.append(_pair_section(pair))
    sub = Markup(tag("span", f"{len(runs)} runs") + tag("span", f"baseline {base.key}: {base.label}"))
    return _page(
        title="ctirealm comparison",
        heading="Run comparison",
        subheading=sub,
        body=Markup("\n".join(body)),
        footer=tag(
            "p",
            "Generated from results.json files alone; regenerate with: "
            "ctirealm report compare A.json B.json --html OUT",
        ),
    )


def _pair_section(pair: Any) -> Markup:
    a, b = pair.base, pair.other
    names = pair.checkpoints
    title = tag(
        "h2",
        f"{b.key} vs {a.key}: ",
        _delta(pair.score_delta),
        tag("span", f"  ({a.score:.3f} → {b.score:.3f})", class_="hint"),
    )
    counts = tag(
        "p",
        f"{plural(len(pair.regressions), 'regression')}, "
        f"{plural(len(pair.improvements), 'improvement')}, {len(pair.unchanged)} unchanged"
        + (f", {len(pair.only_base)} only in {a.key}" if pair.only_base else "")
        + (f", {len(pair.only_other)} only in {b.key}" if pair.only_other else ""),
        class_="hint",
    )
    cp_rows = [(f"{checkpoint_code(n)} {checkpoint_label(n)}", pair.checkpoint_means[n]) for n in names]
    cp_table = _means_table("Checkpoint", cp_rows, a.key, b.key, digits=2)
    pl_table = _means_table("Platform", list(pair.platform_means.items()), a.key, b.key, digits=3)
    sections = [
        tag(
            "div",
            tag("section", tag("h2", "By checkpoint"), cp_table, class_="panel"),
            tag("section", tag("h2", "By platform"), pl_table, class_="panel"),
            class_="grid2 charts",
        )
    ]
    sections.append(
        _delta_table("Regressions", pair.regressions, names, a.key, b.key, "No case scored lower.")
    )
    sections.append(
        _delta_table("Improvements", pair.improvements, names, a.key, b.key, "No case scored higher.")
    )
    if pair.rule_changes:
        sections.append(_rule_changes(pair))
    if pair.unchanged:
        sections.append(
            tag(
                "section",
                tag(
                    "details",
                    tag("summary", f"Unchanged ({len(pair.unchanged)})"),
                    tag("p", ", ".join(d.case for d in pair.unchanged)),
                ),
                class_="panel",
            )
        )
    if pair.only_base or pair.only_other:
        sections.append(
            tag(
                "section",
                tag("h2", "Cases in one run only"),
                pair.only_base and tag("p", f"only in {a.key}: " + ", ".join(pair.only_base)),
                pair.only_other and tag("p", f"only in {b.key}: " + ", ".join(pair.only_other)),
                class_="panel",
            )
        )
    return tag("section", tag("section", title, counts, class_="panel"), sections, id=f"pair-{b.key}")


def _means_table(
    heading: str, rows: list[tuple[str, tuple[float | None, float | None]]], a: str, b: str, *, digits: int
) -> Markup:
    """A table of means for two runs and their difference, one row per label."""
    head = tag(
        "tr",
        tag("th", heading),
        tag("th", a, class_="num"),
        tag("th", b, class_="num"),
        tag("th", "Δ", class_="num"),
    )
    body = [
        tag(
            "tr",
            tag("td", label),
            tag("td", fmt_score(x, digits), class_="num"),
            tag("td", fmt_score(y, digits), class_="num"),
            tag("td", _delta(None if x is None or y is None else y - x, digits), class_="num"),
        )
        for label, (x, y) in rows
    ]
    return tag("table", tag("thead", head), tag("tbody", body))


def _delta_table(title: str, deltas: list[Any], names: list[str], a: str, b: str, empty: str) -> Markup:
    if not deltas:
        return tag("section", tag("h2", f"{title} (0)"), tag("p", empty, class_="empty"), class_="panel")
    head = [
        tag("th", "Case"),
        tag("th", "Platform"),
        tag("th", a, class_="num"),
        tag("th", b, class_="num"),
        tag("th", "Δ", class_="num"),
    ]
    head += [
        tag("th", checkpoint_code(n), tag("br"), tag("small", checkpoint_label(n)), class_="num")
        for n in names
    ]
    head += [tag("th", "KQL TP/FP"), tag("th", "Status")]
    rows = []
    for d in deltas:
        cells = [
            tag("td", tag("b", d.case)),
            tag("td", d.platform),
            tag("td", fmt_score(d.before, 3), class_="num"),
            tag("td", fmt_score(d.after, 3), class_="num"),
            tag("td", _delta(d.delta), class_="num", data_sort=f"{d.delta:.6f}"),
        ]
        for n in names:
            x, y = d.checkpoints.get(n, (None, None))
            change = None if x is None or y is None else y - x
            cells.append(tag("td", _delta(change, 2), class_="num", title=f"{fmt_score(x)} → {fmt_score(y)}"))
        cells.append(tag("td", f"{d.tpfp[0]} → {d.tpfp[1]}"))
        before, after = (s.replace("_", " ") for s in d.status)
        cells.append(tag("td", f"{before} → {after}" if before != after else after))
        rows.append(tag("tr", cells))
    return tag(
        "section",
        tag("h2", f"{title} ({len(deltas)})"),
        tag(
            "div",
            tag("table", tag("thead", tag("tr", head)), tag("tbody", rows), class_="sortable"),
            class_="scroll",
        ),
        class_="panel",
    )


def _rule_changes(pair: Any) -> Markup:
    rows = [
        tag(
            "tr",
            tag("td", tag("code", c.path)),
            tag("td", f"{c.before} → {c.after}"),
            tag("td", c.tpfp_before + " → " + c.tpfp_after),
            tag(
                "td",
                tag(
                    "span",
                    c.kind,
                    class_="badge " + ("bad" if c.kind in ("regression", "removed") else "good"),
                ),
            ),
        )
        for c in pair.rule_changes
    ]
    head = tag("tr", tag("th", "Rule"), tag("th", "Status"), tag("th", "TP/FP"), tag("th", "Change"))
    return tag(
        "section",
        tag("h2", f"Rule changes ({len(rows)})"),
        tag("table", tag("thead", head), tag("tbody", rows)),
        class_="panel",
    )
