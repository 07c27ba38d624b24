"""Shared fixtures for the project's own tests: tiny telemetry folders built in tmp dirs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

# pytester's in-process runs remove the modules a run imported when it ends. The plugins load
# DuckDB, duckdb-kql and pySigma only on first use, so without these imports the first inner
# run would import them and the next would import DuckDB's extension module again, which
# aborts the process. Imported here, they outlive every inner run.
import ctirealm.engine.local
import ctirealm.plugin.rule_items  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / "tests" / "fixtures" / "mini"
pytest_plugins = ["pytester"]


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


@pytest.fixture
def mini(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> pytest.Pytester:
    """`mini_project` with a fresh store cache."""
    return mini_project(pytester, tmp_path_factory.mktemp("store-cache"))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def make_telemetry(tmp_path: Path) -> Callable[..., Path]:
    """A telemetry folder with the real schemas and window, plus the given event files.

    ``make_telemetry(attack={"sim1": {"DeviceProcessEvents": [rows]}}, benign={...})``
    """

    def make(attack: dict | None = None, benign: dict | None = None, name: str = "telemetry") -> Path:
        root = tmp_path / name
        shutil.copytree(ROOT / "telemetry" / "schemas", root / "schemas")
        shutil.copy(ROOT / "telemetry" / "dataset.yaml", root / "dataset.yaml")
        for kind, groups in (("attack", attack or {}), ("benign", benign or {})):
            for group, tables in groups.items():
                for table, rows in tables.items():
                    write_jsonl(root / kind / group / f"{table}.jsonl", rows)
        return root

    return make


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
