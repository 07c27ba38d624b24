"""Reports built from ``results.json`` alone, so they can be regenerated or compared later.

- ``score.html``: the self-contained HTML score report (`html.render_html`);
- ``summary.md``: the Markdown summary for CI logs and pull requests (`markdown.render_markdown`),
  also appended to ``$GITHUB_STEP_SUMMARY`` when that variable is set;
- ``coverage.json``: an ATT&CK Navigator layer of detection coverage (`navigator.coverage_layer`);
- comparisons of runs (`compare.compare_results`), in text and HTML.

`write_reports` writes the first three after every run; ``ctirealm report`` regenerates them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .compare import Comparison, compare_results, format_comparison
from .html import render_html
from .html_compare import render_comparison_html
from .load import CURRENT_FORMAT, SUPPORTED_FORMATS, ResultsError, check_results, load_results
from .markdown import render_markdown
from .navigator import coverage_layer

#: Set to 0 to keep `write_reports` from appending to ``$GITHUB_STEP_SUMMARY``.
STEP_SUMMARY_SWITCH = "CTIREALM_STEP_SUMMARY"


def _write(path: Path, text: str) -> Path:
    """Write through a temporary file, so a reader never sees half a report."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def write_reports(
    results: dict[str, Any], report_dir: Path, *, trajectories: Path | None = None
) -> dict[str, Path]:
    """Write score.html, summary.md and coverage.json into ``report_dir``; return their paths.

    ``results`` is a results document as written to results.json (validated here: an unusable one
    raises `ResultsError`). Trajectory files, when present (by default
    ``report_dir/trajectories``), are linked from the cases. The Markdown summary is also
    appended to ``$GITHUB_STEP_SUMMARY`` when that variable names a file (key ``step_summary``).
    """
    report_dir = Path(report_dir)
    data = check_results(
        results,
        source=str(results.get("source") or report_dir / "results.json")
        if isinstance(results, dict)
        else "results.json",
    )
    report_dir.mkdir(parents=True, exist_ok=True)
    folder = trajectories if trajectories is not None else report_dir / "trajectories"
    summary = render_markdown(data)
    written = {
        "html": _write(report_dir / "score.html", render_html(data, trajectories=folder, out_dir=report_dir)),
        "markdown": _write(report_dir / "summary.md", summary),
        "coverage": _write(
            report_dir / "coverage.json",
            json.dumps(coverage_layer(data), indent=1, ensure_ascii=False) + "\n",
        ),
    }
    step = os.environ.get("GITHUB_STEP_SUMMARY")
    if step and os.environ.get(STEP_SUMMARY_SWITCH, "1") != "0":
        with open(step, "a", encoding="utf-8") as handle:
            handle.write(summary + "\n")
        written["step_summary"] = Path(step)
    return written


__all__ = [
    "CURRENT_FORMAT",
    "SUPPORTED_FORMATS",
    "Comparison",
    "ResultsError",
    "check_results",
    "compare_results",
    "coverage_layer",
    "format_comparison",
    "load_results",
    "render_comparison_html",
    "render_html",
    "render_markdown",
    "write_reports",
]
