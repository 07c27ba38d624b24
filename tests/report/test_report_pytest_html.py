"""End to end on the two-case fixture project: a run writes the reports, and pytest-html gains scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import mini_project


@pytest.fixture
def project(pytester: pytest.Pytester, store_cache: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    return mini_project(pytester, store_cache)


def test_a_run_writes_reports_and_pytest_html_shows_scores(project: pytest.Pytester) -> None:
    pytest.importorskip("pytest_html")
    result = project.runpytest(
        "--realm-agent=oracle", "--realm-report-dir=out", "--html=html/report.html", "--self-contained-html"
    )
    assert result.ret == 0, result.stdout.str()
    out = project.path / "out"
    assert {"results.json", "score.html", "summary.md", "coverage.json"} <= {p.name for p in out.iterdir()}
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    score = f"{results['summary']['normalized_score']:.3f}"
    assert f"ctirealm score: **{score}**" in (out / "summary.md").read_text(encoding="utf-8")
    layer = json.loads((out / "coverage.json").read_text(encoding="utf-8"))
    assert {t["techniqueID"] for t in layer["techniques"]} == {"T1053.003", "T1552.007"}
    page = (project.path / "html" / "report.html").read_text(encoding="utf-8")
    assert 'data-column-type="realmCase"' in page and 'data-column-type="realmPoints"' in page
    assert "col-realmPoints" in page and "1.25 / 1.25" in page
    assert f"ctirealm normalised score <b>{score}</b>" in page
    assert "../out/score.html#case-linux_001-e1" in page  # per-item extra links to the case


def test_without_pytest_html_the_hooks_stay_silent(project: pytest.Pytester) -> None:
    result = project.runpytest("--realm-agent=null", "--realm-report-dir=out", "-p", "no:html")
    result.assert_outcomes(failed=12)
    assert "PluginValidationError" not in result.stdout.str() + result.stderr.str()
    assert (project.path / "out" / "score.html").is_file()
