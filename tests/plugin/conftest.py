"""pytester projects built from the two-case fixture under tests/fixtures/mini."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MINI = ROOT / "tests" / "fixtures" / "mini"


@pytest.fixture
def mini(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> pytest.Pytester:
    """A benchmark project in pytester's directory: 2 cases, their telemetry, reports and rules."""
    for part in ("cases", "rules", "telemetry"):
        shutil.copytree(MINI / part, pytester.path / part)
    shutil.copytree(ROOT / "telemetry" / "schemas", pytester.path / "telemetry" / "schemas")
    cache = tmp_path_factory.mktemp("store-cache")
    pytester.makeini(f"""
        [pytest]
        testpaths = cases
        addopts = --realm-cache-dir={cache} -p no:cacheprovider
    """)
    return pytester
