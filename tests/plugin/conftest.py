"""A content project for the content gate's pytester tests: the tiny store's telemetry, a
``detections/`` folder, and the session's store cache (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.plugin.content_project import content_project, write_telemetry


@pytest.fixture
def project(pytester: pytest.Pytester, store_cache: Path) -> pytest.Pytester:
    write_telemetry(pytester.path / "telemetry")
    return content_project(pytester, store_cache)
