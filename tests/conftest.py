"""Shared fixtures for the project's own tests: tiny telemetry folders built in tmp dirs."""

from __future__ import annotations

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
from tests.helpers import ROOT, mini_project, write_jsonl

pytest_plugins = ["pytester"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: a whole benchmark run, xdist inside pytest or a big store (make test-slow)"
    )
    # The project's own tests fail on any warning (a test's filterwarnings mark still wins); the
    # benchmark's ini leaves warnings alone for agents' runs.
    config.addinivalue_line("filterwarnings", "error")
    # Inside Inspect and the reference scorer, which the project cannot change: deprecations,
    # and anyio streams Inspect leaves to the garbage collector.
    for warning in (
        r"ignore:path is deprecated:DeprecationWarning:inspect_evals\.",
        r"ignore:The 'initial' parameter is deprecated:DeprecationWarning:inspect_ai\.",
        r"ignore:`__get_validators__` is deprecated:DeprecationWarning",
        r"ignore:Unclosed <MemoryObjectReceiveStream:ResourceWarning",
        r"ignore:Exception ignored in. <function MemoryObjectReceiveStream.__del__:"
        r"pytest.PytestUnraisableExceptionWarning",
    ):
        config.addinivalue_line("filterwarnings", warning)


@pytest.fixture(scope="session")
def store_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store cache for every test that starts pytest: stores are keyed by the hash of
    their content, so projects with the same telemetry share one build."""
    return tmp_path_factory.mktemp("store-cache")


@pytest.fixture
def mini(pytester: pytest.Pytester, store_cache: Path) -> pytest.Pytester:
    """`mini_project` with the session's store cache."""
    return mini_project(pytester, store_cache)


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
