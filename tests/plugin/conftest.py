"""A content project for the content gate's pytester tests: the tiny store's telemetry, a
``detections/`` folder, and the session's store cache (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.plugin.content_project import write_telemetry


@pytest.fixture
def project(pytester: pytest.Pytester, store_cache: Path) -> pytest.Pytester:
    write_telemetry(pytester.path / "telemetry")
    (pytester.path / "detections").mkdir()
    pytester.makeini(f"""
        [pytest]
        testpaths = detections
        addopts = --realm-cache-dir={store_cache} --realm-rows=0 -p no:cacheprovider
    """)
    return pytester
