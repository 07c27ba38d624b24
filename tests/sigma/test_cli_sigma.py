"""``ctirealm sigma convert|check|eval`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctirealm.cli import main

ROOT = Path(__file__).resolve().parents[2]
RULE = """\
title: Crontab from tmp
logsource: {product: linux, category: process_creation}
detection:
    selection:
        Image|endswith: '/crontab'
    condition: selection
"""


def test_convert_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rule = tmp_path / "rule.yml"
    rule.write_text(RULE)
    telemetry = str(ROOT / "telemetry")
    assert main(["sigma", "convert", str(rule), "--telemetry", telemetry]) == 0
    assert capsys.readouterr().out.strip() == ('DeviceProcessEvents\n| where FolderPath endswith "/crontab"')
    (tmp_path / "bad.yml").write_text("title: bad\ndetection: [\n")
    assert main(["sigma", "check", str(tmp_path), "--telemetry", telemetry, "--json"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["parsed"] for d in lines] == [False, True]
    assert lines[1]["table"] == "DeviceProcessEvents" and lines[1]["convert_error"] is None


def test_eval_prints_tp_fp(
    tmp_path: Path, telemetry_writer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = telemetry_writer(tmp_path / "telemetry")
    rule = tmp_path / "rule.yml"
    rule.write_text(RULE)
    code = main(
        [
            "sigma",
            "eval",
            str(rule),
            "--telemetry",
            str(root),
            "--rows",
            "0",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["attack_groups"] == {"sim_cron": ["DeviceProcessEvents:482913377104"]}
    assert (result["tp"], result["fp"], result["hard_negatives_matched"]) == (1, 2, 2)
    assert result["expected"] is None
    # The table form, against a case: TP/FP and the examples, by the same evaluator.
    cases = tmp_path / "cases"
    (cases / "linux").mkdir(parents=True)
    (cases / "reports").mkdir()
    (cases / "reports" / "linux-cron.md").write_text(
        "---\nid: linux-cron\ntitle: Cron\ntags: [linux]\n---\nAttackers drop crontabs.\n"
    )
    (cases / "linux" / "linux_003.yaml").write_text(
        "id: linux_003\nplatform: linux\ntitle: Cron\nobjective: Detect crontab loaded from "
        "temporary files by a web server.\nreports: [linux-cron]\nground_truth:\n  techniques: "
        "[T1053.003]\n  tables: [DeviceProcessEvents]\n  attack_events:\n    "
        "DeviceProcessEvents: [482913377104, 590114783321]\n"
    )
    monkeypatch.setenv("COLUMNS", "300")  # one line per fact, as a wide terminal shows it
    code = main(
        [
            "sigma",
            "eval",
            str(rule),
            "--telemetry",
            str(root),
            "--rows",
            "0",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--cases",
            str(cases),
            "--case",
            "linux_003",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "TP 1  FP 2  FN 1  precision 0.333  recall 0.500  F1 0.400" in out
    assert "missed: DeviceProcessEvents:590114783321" in out
    assert "hard_negative DeviceProcessEvents 300918273645" in out


@pytest.mark.slow
def test_eval_binds_a_scenario_case_to_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A case played from a scenario lists no ids: eval scores against the store's labels."""
    code = main(
        [
            "sigma",
            "eval",
            str(ROOT / "rules" / "linux" / "linux_003_sigma.yml"),
            "--telemetry",
            str(ROOT / "telemetry"),
            "--rows",
            "0",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--cases",
            str(ROOT / "cases"),
            "--case",
            "linux_003",
            "--json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["expected"] > 0 and result["tp"] == result["expected"]
    assert result["fn"] == 0 and result["fp"] == 0
