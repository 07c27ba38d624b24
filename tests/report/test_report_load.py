"""Reading results.json: clear messages for older, newer, broken or incomplete files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_helpers import DATA, raw

from ctirealm.cli import main
from ctirealm.report import ResultsError, check_results, load_results


def test_a_results_file_loads_and_is_normalised() -> None:
    data = load_results(DATA / "baseline.json")
    assert data["format"] == 1
    case = data["cases"][0]
    assert {"checkpoints", "detection", "trajectory", "ground_truth", "errors"} <= set(case)
    assert data["rules"] and data["rules"][0]["path"].startswith("rules/")


def test_a_report_folder_means_its_results_json(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps(raw("oracle")), encoding="utf-8")
    assert load_results(tmp_path)["run"]["agent"] == "oracle"


@pytest.mark.parametrize(
    ("document", "words"),
    [
        (raw("old"), "no 'format' version; it was written by an older ctirealm"),
        ({**raw("oracle"), "format": 0}, "results format 0 is older than this ctirealm reads"),
        ({**raw("oracle"), "format": 99}, "results format 99 is newer than this ctirealm reads"),
        ({**raw("oracle"), "format": "1"}, "format should be an integer version"),
        ({"format": 1, "run": {}, "cases": []}, "the file has no 'summary' key"),
        ({"format": 1, "run": {}, "summary": {}, "cases": {}}, "cases should be list, not dict"),
        ({"format": 1, "run": {}, "summary": {}, "cases": [{"platform": "aks"}]}, "cases[0] has no 'id' key"),
        ({"format": 1, "run": {}, "summary": {}, "cases": [], "rules": {}}, "rules should be a list"),
        ({"format": 1, "run": {}, "summary": {}, "cases": [], "problems": "x"}, "problems should be a list"),
        (
            {"format": 1, "run": {}, "summary": {}, "cases": [], "problems": [{"path": "a"}]},
            "problems[0] has no 'message' key",
        ),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_unusable_documents_get_a_clear_message(document: object, words: str) -> None:
    with pytest.raises(ResultsError, match=None) as info:
        check_results(document, source="r.json")
    assert words in str(info.value)
    assert str(info.value).startswith("r.json: ")


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no such results file"):
        load_results(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ResultsError, match="not valid JSON"):
        load_results(bad)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ResultsError, match="not a UTF-8 text file"):
        load_results(binary)


def test_the_cli_prints_one_line_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(DATA / "old.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ctirealm: error: ") and "older ctirealm" in err
    assert "Traceback" not in err


def test_missing_optional_keys_get_defaults() -> None:
    minimal = {
        "format": 1,
        "run": {},
        "summary": {},
        "cases": [{"id": "linux_001", "checkpoints": {"C0_cti_reports": {"score": 0.5}}}],
    }
    data = check_results(minimal)
    case = data["cases"][0]
    assert data["run"]["agent"] == "unknown" and data["summary"]["normalized_score"] == 0.0
    assert case["checkpoints"]["C0_cti_reports"] == {"score": 0.5, "max": 0.0, "message": "", "details": {}}
    assert case["trajectory"]["queries"] == [] and case["trajectory"]["submission"] is None
    assert data["summary"]["statuses"] == {"unknown": 1}


def test_problems_are_normalised_and_shown_first() -> None:
    from ctirealm.report.html import render_html
    from ctirealm.report.markdown import render_markdown

    document = {
        **raw("oracle"),
        "problems": [
            {
                "kind": "telemetry",
                "path": "telemetry/attack/x/T.jsonl",
                "line": 3,
                "message": "telemetry/attack/x/T.jsonl:3: invalid JSON",
                "cases": ["linux_009"],
            },
            {"message": "cases/linux/linux_010.yaml: objective: required field is missing"},
        ],
    }
    data = check_results(document)
    assert data["problems"][1] == {
        "kind": "case",
        "path": "",
        "line": None,
        "cases": [],
        "message": "cases/linux/linux_010.yaml: objective: required field is missing",
    }
    markdown = render_markdown(data)
    assert "Left out of this run: 2 problems (not scored)" in markdown
    assert "telemetry/attack/x/T.jsonl:3: invalid JSON (stops linux_009)" in markdown
    assert markdown.index("Left out of this run") < markdown.index("Final detections")
    html = render_html(data)
    assert 'id="problems"' in html and "linux_010.yaml: objective: required field is missing" in html
    assert check_results(raw("oracle"))["problems"] == []
