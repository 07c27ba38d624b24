"""Small report pieces shared by the score report and the comparison: badges, meters, bar and
interval charts, chips of technique ids (with ATT&CK names as tooltips), score deltas.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from .facts import (
    OUTCOME_TEXT,
)
from .markup import Markup, tag


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
    return tag(
        "svg",
        tag("rect", class_="track", width=width, height=8, rx=4),
        tag("rect", class_=f"fill-{_tone(value)}", width=filled, height=8, rx=4),
        class_="meter-svg",
        width=width,
        height=8,
        viewBox=f"0 0 {width} 8",
        role="img",
        aria_label="not scored" if value is None else f"{value:.0%}",
    )


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
        shapes.append(
            tag(
                "rect",
                class_=f"fill-{_tone(value)}",
                x=label_width,
                y=y,
                width=f"{filled:.1f}",
                height=bar_h,
                rx=3,
            )
        )
        shapes.append(
            tag("text", text, x=label_width + track + 8, y=y + 13, class_="muted" if value is None else None)
        )
    return tag(
        "svg",
        shapes,
        class_="chart",
        viewBox=f"0 0 {width} {height}",
        role="img",
        aria_label="; ".join(f"{label}: {text}" for label, _, text in rows),
    )


def _ci_chart(mean: float, low: float, high: float) -> Markup:
    width, pad = 240, 8
    span = width - 2 * pad

    def x(v: float) -> float:
        return pad + max(0.0, min(1.0, v)) * span

    return tag(
        "svg",
        tag("rect", class_="track", x=pad, y=9, width=span, height=6, rx=3),
        tag(
            "g",
            tag("line", x1=f"{x(low):.1f}", x2=f"{x(high):.1f}", y1=12, y2=12),
            tag("line", x1=f"{x(low):.1f}", x2=f"{x(low):.1f}", y1=6, y2=18),
            tag("line", x1=f"{x(high):.1f}", x2=f"{x(high):.1f}", y1=6, y2=18),
            class_="ci",
        ),
        tag("circle", cx=f"{x(mean):.1f}", cy=12, r=5, class_=f"fill-{_tone(mean)}"),
        tag("text", "0", x=pad, y=32, class_="muted"),
        tag("text", "1", x=width - pad - 6, y=32, class_="muted"),
        class_="chart",
        viewBox=f"0 0 {width} 36",
        role="img",
        aria_label=f"score {mean:.3f}, 95% CI {low:.3f} to {high:.3f}",
    )


def _chips(items: list[str], kind: str, *, titles: dict[str, str] | None = None) -> list[Markup]:
    return [tag("span", item, class_=f"chip {kind}", title=(titles or {}).get(item)) for item in items]


def _compared_box(
    title: str, compared: Any, *, found_word: str, titles: dict[str, str] | None = None, hint: str = ""
) -> Markup:
    rows = []
    if compared.expected is None:
        chips = _chips(compared.found, "", titles=titles) or [tag("span", "none", class_="chip none")]
        rows.append(tag("p", tag("b", found_word), " ", tag("span", chips, class_="chips")))
        rows.append(tag("p", "Expected values are not in this results file.", class_="notes"))
    else:
        found = compared.matched
        rows.append(
            tag(
                "p",
                tag("b", f"{found_word} {len(found)} of {len(compared.expected)}"),
                tag(
                    "span",
                    _chips(found, "hit", titles=titles) or [tag("span", "none", class_="chip none")],
                    class_="chips",
                ),
            )
        )
        if compared.missed:
            rows.append(
                tag(
                    "p",
                    tag("b", "Missed"),
                    tag("span", _chips(compared.missed, "miss", titles=titles), class_="chips"),
                )
            )
        if compared.extra:
            rows.append(
                tag(
                    "p",
                    tag("b", "Extra"),
                    tag("span", _chips(compared.extra, "extra", titles=titles), class_="chips"),
                )
            )
    return tag("div", tag("h3", title), hint and tag("p", hint, class_="notes"), rows, class_="box")


@lru_cache(maxsize=1)
def _technique_names() -> dict[str, str]:
    """ATT&CK technique names for tooltips (empty when the bundled data is unavailable)."""
    try:
        from ..attack import load_attack

        return {t.id: t.name for t in load_attack().techniques.values()}
    except Exception:  # the report must render without the ATT&CK data
        return {}


def _delta(value: float | None, digits: int = 3) -> Markup:
    if value is None:
        return tag("span", "–", class_="delta-zero")
    if abs(value) < 0.5 * 10**-digits:
        return tag("span", f"{0:.{digits}f}", class_="delta-zero")
    cls = "delta-pos" if value > 0 else "delta-neg"
    return tag("span", f"{value:+.{digits}f}", class_=cls)
