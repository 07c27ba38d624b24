"""Score columns and per-item extras in pytest-html's report (a no-op without pytest-html).

Registered as its own ``pytest11`` entry point. The ``pytest_html_*`` hooks are
optional hooks, so pytest accepts them when pytest-html is not installed (they
are then never called), and the report hook adds extras only when pytest-html
is writing a report (``--html`` given). Checkpoint items gain two sortable
columns, the case and the checkpoint's points, and an extra with the grading
message and a link to the case in ``score.html``; the summary gains the run's
normalised score.
"""

from __future__ import annotations

import html
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from .session import session_results
from .settings import settings

_HEADERS = (
    '<th class="sortable" data-column-type="realmCase">Case</th>',
    '<th class="sortable" data-column-type="realmPoints">Points</th>',
)


def _html_report(config: pytest.Config) -> Path | None:
    """The pytest-html report path, or None when pytest-html is absent or not asked for."""
    path = config.getoption("htmlpath", None)
    return Path(os.path.expandvars(str(path))).expanduser() if path else None


def _props(report: Any) -> dict[str, Any]:
    return dict(getattr(report, "user_properties", None) or [])


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_header(cells: list[str]) -> None:
    cells[2:2] = list(_HEADERS)


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_row(report: Any, cells: list[str]) -> None:
    props = _props(report)
    if "checkpoint" not in props:
        cells[2:2] = ['<td class="col-realmCase"></td>', '<td class="col-realmPoints"></td>']
        return
    case = html.escape(str(props.get("case", "")))
    epoch = props.get("epoch", 1)
    label = case if epoch in (1, None) else f"{case} e{html.escape(str(epoch))}"
    score, maximum = props.get("score"), props.get("max_score")
    points = "not scored" if score is None else f"{float(score):.2f} / {float(maximum or 0):g}"
    cells[2:2] = [
        f'<td class="col-realmCase">{label}</td>',
        f'<td class="col-realmPoints">{html.escape(points)}</td>',
    ]


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(
    prefix: list[str], summary: list[str], postfix: list[str], session: pytest.Session
) -> None:
    results = _session_results(session.config)
    if not results:
        return
    values = results.get("summary", {})
    score = values.get("normalized_score")
    low, high = (values.get("ci95") or [score, score])[:2]
    if score is None:
        return
    link = _score_link(session.config, "")
    agent = html.escape(str(results.get("run", {}).get("agent", "")))
    text = (
        f"ctirealm normalised score <b>{float(score):.3f}</b> "
        f"(95% CI {float(low):.3f}–{float(high):.3f}) for agent {agent}"
    )
    if link:
        text += f' · <a href="{html.escape(link)}">score report</a>'
    prefix.append(f"<p>{text}</p>")


def _session_results(config: pytest.Config) -> dict[str, Any] | None:
    return session_results(config)


def _score_link(config: pytest.Config, fragment: str) -> str | None:
    """score.html relative to the pytest-html report, with an optional #fragment."""
    target = _html_report(config)
    if target is None:
        return None
    try:
        score = settings(config).report_dir / "score.html"
    except Exception:  # no cases plugin settings: no link
        return None
    rel = os.path.relpath(score.resolve(), target.resolve().parent)
    return Path(rel).as_posix() + (f"#{fragment}" if fragment else "")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.when != "call" or _html_report(item.config) is None:
        return report
    checkpoint = getattr(item, "realm_checkpoint", None)
    run = getattr(item, "funcargs", {}).get("realm_run")
    if checkpoint is None or run is None:
        return report
    try:
        from pytest_html import extras
    except ImportError:
        return report
    extra = _extra(item, run, checkpoint, with_message=not report.failed)
    report.extras = [*getattr(report, "extras", []), extras.html(extra)]
    return report


def _extra(item: pytest.Item, run: Any, checkpoint: str, *, with_message: bool) -> str:
    """Case, points and status, the grading message (a failure already shows it), and a link."""
    from ..report.facts import anchor, checkpoint_label

    score = run.score
    cp = score.checkpoints.get(checkpoint)
    points = "not scored" if cp is None or cp.score is None else f"{cp.score:.2f} / {cp.max:g}"
    parts = [
        f"<p><b>{html.escape(score.case_id)}</b> · {html.escape(checkpoint_label(checkpoint))}: "
        f"{html.escape(points)} · case score {score.normalized:.3f} · "
        f"{html.escape(score.status.replace('_', ' '))}</p>"
    ]
    if with_message and cp is not None and cp.message:
        parts.append(f"<p>{html.escape(cp.message)}</p>")
    link = _score_link(item.config, anchor(score.case_id, score.epoch))
    if link:
        parts.append(f'<p><a href="{html.escape(link)}">open the case in the ctirealm score report</a></p>')
    return '<div class="ctirealm">' + "".join(parts) + "</div>"
