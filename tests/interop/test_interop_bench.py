"""The whole mini benchmark through ``--realm-engine kusto://...`` gives the local engine's results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from interop_helpers import copy_mini, serving

from ctirealm.telemetry.dataset import Dataset
from ctirealm.telemetry.store import build_store

# Slow: the mini benchmark over a served engine.
pytestmark = pytest.mark.slow


def _comparable(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["run"].pop("started"), doc["run"].pop("finished")
    for case in doc["cases"]:
        case.pop("duration")
        for query in case["trajectory"]["queries"]:
            query.pop("duration")
    return doc


@pytest.mark.parametrize("agent", ["baseline", "oracle"])
def test_mini_benchmark_same_results_over_kusto(
    pytester: pytest.Pytester, agent: str, store_cache: Path
) -> None:
    copy_mini(pytester.path)
    cache = store_cache
    pytester.makeini(f"""
        [pytest]
        testpaths = cases
        addopts = --realm-cache-dir={cache} -p no:cacheprovider
    """)
    store = build_store(Dataset.load(pytester.path / "telemetry"), cache_dir=cache)
    pytester.runpytest("--realm-agent", agent)
    local = _comparable(pytester.path / "reports" / "results.json")
    with serving(store.path, store.now, database="mini") as server:
        result = pytester.runpytest("--realm-agent", agent, "--realm-engine", server.kusto_url)
    remote = _comparable(pytester.path / "reports" / "results.json")
    assert remote == local
    assert any(c["status"] == "submitted" for c in local["cases"])
    if agent == "oracle":
        result.assert_outcomes(passed=12)


def test_bad_engine_spec_is_a_usage_error(pytester: pytest.Pytester, store_cache: Path) -> None:
    copy_mini(pytester.path)
    cache = store_cache
    pytester.makeini(f"""
        [pytest]
        testpaths = cases
        addopts = --realm-cache-dir={cache} -p no:cacheprovider
    """)
    for spec, message in (
        ("kusto://cluster.example.net", "no database"),
        ("http://cluster.example.net/db", "loopback"),
        ("sqlite://x", "use local or kusto"),
    ):
        result = pytester.runpytest("--realm-engine", spec)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert message in result.stderr.str()
