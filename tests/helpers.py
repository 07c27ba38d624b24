"""Helpers the project's tests share (paths, event rows, the mini benchmark project): plain
functions, imported by the tests that use them; fixtures stay in conftest.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / "tests" / "fixtures" / "mini"


def mini_project(pytester: pytest.Pytester, cache: Path, ini: str = "") -> pytest.Pytester:
    """The two-case benchmark of tests/fixtures/mini (cases, rules, telemetry and the real
    schemas) in pytester's directory, its store cached in *cache*; *ini* adds ini lines."""
    for part in ("cases", "rules", "telemetry"):
        shutil.copytree(MINI / part, pytester.path / part)
    shutil.copytree(ROOT / "telemetry" / "schemas", pytester.path / "telemetry" / "schemas")
    pytester.makeini(
        f"[pytest]\ntestpaths = cases\naddopts = --realm-cache-dir={cache} -p no:cacheprovider\n{ini}"
    )
    return pytester


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def process_event(report_id: int, command: str, when: str = "2026-03-05T10:00:00Z", **extra) -> dict:
    return {
        "Timestamp": when,
        "TimeGenerated": when,
        "DeviceName": "web01.corp.example",
        "ProcessCommandLine": command,
        "FileName": command.split()[0],
        "ReportId": report_id,
        **extra,
    }
