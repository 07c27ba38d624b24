"""write_reports, the Markdown summary, the comparison and the ATT&CK layer (snapshots for text)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from report_helpers import DATA, raw, strip_timestamps

from ctirealm.cli import main
from ctirealm.report import (
    compare_results,
    coverage_layer,
    format_comparison,
    render_comparison_html,
    render_markdown,
    write_reports,
)
from ctirealm.report.facts import case_facts
from ctirealm.report.markdown import md

Load = Callable[[str], dict[str, Any]]


@pytest.fixture(autouse=True)
def _no_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def test_summary_markdown_snapshot(results: Load, snapshot: Any) -> None:
    assert strip_timestamps(render_markdown(results("baseline"))) == snapshot


def test_comparison_snapshot(results: Load, snapshot: Any) -> None:
    comparison = compare_results(
        [results("oracle"), results("baseline")], labels=["oracle.json", "baseline.json"]
    )
    assert strip_timestamps(format_comparison(comparison)) == snapshot


def test_comparison_lists_regressions_first_and_rules(results: Load) -> None:
    comparison = compare_results([results("oracle"), results("baseline")])
    pair = comparison.pairs[0]
    assert [d.case for d in pair.regressions] == ["aks_001", "linux_001"]  # the larger drop first
    assert pair.regressions[0].delta <= pair.regressions[1].delta < 0
    assert [(c.path, c.kind) for c in pair.rule_changes] == [
        ("rules/linux/cron_from_web_shell.yml", "regression")
    ]
    assert comparison.regressed
    text = format_comparison(comparison)
    assert text.index("Regressions") < text.index("Improvements") < text.index("By checkpoint")
    # the same runs the other way round: improvements, nothing regressed
    reverse = compare_results([results("baseline"), results("oracle")])
    assert not reverse.pairs[0].regressions and len(reverse.pairs[0].improvements) == 2
    assert not reverse.regressed


def test_compare_cli_text_html_and_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp" / "compare.html"
    a, b = str(DATA / "oracle.json"), str(DATA / "baseline.json")
    assert main(["report", "compare", a, b, "--html", str(out)]) == 0
    text = capsys.readouterr().out
    assert "B vs A: score 0.993 → 0.237 (-0.755); 2 regressed" in text
    page = out.read_text(encoding="utf-8")
    assert page.index("Regressions (2)") < page.index("Improvements (0)")
    assert main(["report", "compare", a, b, "--fail-on-regression"]) == 1
    assert main(["report", "compare", b, a, "--fail-on-regression"]) == 0
    assert main(["report", "compare", a]) == 2


def test_write_reports_writes_the_three_outputs(tmp_path: Path) -> None:
    written = write_reports(raw("baseline"), tmp_path / "reports")
    assert set(written) == {"html", "markdown", "coverage"}
    assert all(p.is_file() and p.stat().st_size > 200 for p in written.values())
    assert json.loads(written["coverage"].read_text(encoding="utf-8"))["versions"]["layer"] == "4.5"


def test_step_summary_is_appended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    step = tmp_path / "step.md"
    step.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    written = write_reports(raw("oracle"), tmp_path / "reports")
    text = step.read_text(encoding="utf-8")
    assert written["step_summary"] == step
    assert text.startswith("earlier step\n## ctirealm score: **0.993**")
    monkeypatch.setenv("CTIREALM_STEP_SUMMARY", "0")
    write_reports(raw("oracle"), tmp_path / "reports")
    assert step.read_text(encoding="utf-8") == text


@pytest.mark.parametrize("name", ["errors", "empty"])
def test_robust_to_error_and_empty_runs(name: str, tmp_path: Path) -> None:
    written = write_reports(raw(name), tmp_path)
    summary = written["markdown"].read_text(encoding="utf-8")
    page = written["html"].read_text(encoding="utf-8")
    if name == "empty":
        assert "No cases ran in this run." in summary and "No cases ran in this run." in page
    else:
        assert "crashed 2" in summary and "The case scored zero on every checkpoint" in page


def test_cli_regenerates_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "run" / "results.json"
    source.parent.mkdir()
    source.write_text(json.dumps(raw("oracle")), encoding="utf-8")
    assert main(["report", str(source)]) == 0
    assert {"score.html", "summary.md", "coverage.json"} <= {p.name for p in source.parent.iterdir()}
    assert main(["report", str(source), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "score.html").is_file()
    assert "oracle: normalised score 0.993" in capsys.readouterr().out


def test_markdown_escapes_agent_text(results: Load) -> None:
    assert (
        md("a | b <script>x</script> `c` [l](javascript:x)\nnext")
        == r"a \| b \<script\>x\</script\> \`c\` \[l\](javascript:x) next"
    )
    summary = render_markdown(results("errors"))
    own = re.sub(r"</?(details|summary|sub)>", "", summary)
    assert not re.search(r"(?<!\\)<", own)  # every other < is escaped: GitHub shows it as text
    for line in summary.splitlines():
        if line.startswith("| ") and "crashed" in line:
            assert line.count(" | ") == line.replace(r"\|", "").count(" | ")


def test_navigator_layer(results: Load) -> None:
    layer = coverage_layer(results("baseline"))
    assert layer["versions"] == {"attack": "18", "navigator": "5.2.0", "layer": "4.5"}
    assert layer["domain"] == "enterprise-attack"
    assert [item["label"].split(":")[0] for item in layer["legendItems"]] == [
        "validated",
        "attempted",
        "missed",
    ]
    by_id = {t["techniqueID"]: t for t in layer["techniques"]}
    # linux_001: the query matched 1 of 2 attack events and 2 benign ones -> attempted (amber)
    assert by_id["T1053.003"]["color"] == "#fdae61" and by_id["T1053.003"]["score"] == 0
    assert "linux_001 attempted (TP 1, FP 2)" in by_id["T1053.003"]["comment"]
    # aks_001 scored zero, so its expected techniques are unknown and it is left out
    assert "1 case runs do not record their expected techniques" in layer["description"]
    oracle = {t["techniqueID"]: t for t in coverage_layer(results("oracle"))["techniques"]}
    assert oracle["T1053.003"]["color"] == "#31a354" and oracle["T1053.003"]["score"] == 100
    assert oracle["T1552.007"]["color"] == "#31a354"


def test_why_points_were_lost_in_plain_sentences(results: Load) -> None:
    case = next(c for c in results("baseline")["cases"] if c["id"] == "linux_001")
    facts = case_facts(case)
    assert facts.lost == [  # the biggest loss first
        "KQL detection (C4) lost 3.00 of 5: the final KQL query matched 1 of 2 attack events and 2 benign "
        "events (false positives, 2 of them hard negatives: benign look-alikes of the attack); "
        "precision 0.33, recall 0.50, F1 0.40.",
        "Sigma quality (C4) lost 1.50 of 1.5: syntax (parsing and validators) scored 0.00 of 1; the converted "
        "Sigma rule matched 0 of 2 attack events with no false positives; precision 0.00, recall 0.00, "
        "F1 0.00. Scorer notes: 12 validator issues; converted to DeviceProcessEvents.",
        "Data sources (C2) lost 0.50 of 1: it explored 1 of 1 relevant table; also explored "
        "DeviceFileEvents, which lowers the Jaccard score.",
        "Query iteration (C3) lost 0.25 of 0.5: only 1 distinct query over the case's tables succeeded (of 6 run); "
        "two are needed for full credit.",
    ]
    assert facts.notes == []
    assert facts.outcome == "attempted"


def test_comparison_html_escapes_labels(results: Load) -> None:
    hostile = "<script>alert(1)</script>"
    page = render_comparison_html(
        compare_results([results("oracle"), results("errors")], labels=[hostile, "b"])
    )
    assert hostile not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_rules_gate_run_without_cases(tmp_path: Path) -> None:
    written = write_reports({**raw("empty"), "rules": raw("baseline")["rules"]}, tmp_path)
    summary = written["markdown"].read_text(encoding="utf-8")
    assert summary.startswith("## ctirealm rules gate\n\n### Detection rules: 1 of 2 rules passed")
    assert summary.index("❌ failed") < summary.index("✅ passed")  # failing rules first
    page = written["html"].read_text(encoding="utf-8")
    assert "Rules gate" in page and "1 of 2 rules passed the gate" in page and "Normalised score" not in page
