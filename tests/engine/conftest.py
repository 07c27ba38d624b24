"""Shared fixtures for the engine tests: the conformance tables and an engine over them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctirealm.engine import LocalEngine

HERE = Path(__file__).parent


def load_yaml(name: str) -> Any:
    """A YAML data file next to the tests."""
    return yaml.safe_load((HERE / name).read_text(encoding="utf-8"))


def conformance_engine(**options: Any) -> LocalEngine:
    """A `LocalEngine` over the tables of ``conformance_tables.yaml``."""
    data = load_yaml("conformance_tables.yaml")
    tables = data["tables"]
    return LocalEngine.from_tables(
        tables={name: spec["rows"] for name, spec in tables.items()},
        schemas={name: [tuple(c) for c in spec["schema"]] for name, spec in tables.items()},
        now=str(data["now"]),
        **options,
    )


@pytest.fixture(scope="module")
def engine() -> Iterator[LocalEngine]:
    """One engine per test module: tables are read-only, so sharing is safe."""
    eng = conformance_engine()
    yield eng
    eng.close()
