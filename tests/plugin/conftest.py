"""A content project for the content gate's pytester tests: the tiny store's telemetry, a
``detections/`` folder, and one store cache for the whole session (stores are keyed by the
hash of their content, so projects with the same telemetry share a build)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def store_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store-cache")


@pytest.fixture
def project(pytester: pytest.Pytester, store_cache: Path) -> pytest.Pytester:
    from tests.plugin.test_content import write_telemetry

    write_telemetry(pytester.path / "telemetry")
    (pytester.path / "detections").mkdir()
    pytester.makeini(f"""
        [pytest]
        testpaths = detections
        addopts = --realm-cache-dir={store_cache} --realm-rows=0 -p no:cacheprovider
    """)
    return pytester
