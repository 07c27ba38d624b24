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
    assert capsys.readouterr().out.strip() == (
        'DeviceProcessEvents\n| where FolderPath endswith "/crontab"')
    (tmp_path / "bad.yml").write_text("title: bad\ndetection: [\n")
    assert main(["sigma", "check", str(tmp_path), "--telemetry", telemetry, "--json"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["parsed"] for d in lines] == [False, True]
    assert lines[1]["table"] == "DeviceProcessEvents" and lines[1]["convert_error"] is None


def test_eval_prints_tp_fp(tmp_path: Path, telemetry_writer, capsys: pytest.CaptureFixture[str]
                           ) -> None:  # noqa: ANN001
    root = telemetry_writer(tmp_path / "telemetry")
    rule = tmp_path / "rule.yml"
    rule.write_text(RULE)
    code = main(["sigma", "eval", str(rule), "--telemetry", str(root), "--rows", "0",
                 "--cache-dir", str(tmp_path / "cache"), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["attack"] == {"sim_cron": ["482913377104"]} and result["fp"] == 2
