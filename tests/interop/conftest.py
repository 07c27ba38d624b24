"""Fixtures for the interoperability tests (helpers live in interop_helpers.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from interop_helpers import ROOT, write_store

from ctirealm.telemetry.schema import TableSchema, parse_datetime


@pytest.fixture(scope="session")
def conformance_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, datetime]:
    """The engine conformance tables (tests/engine) as a store file, and their clock."""
    data = yaml.safe_load((ROOT / "tests" / "engine" / "conformance_tables.yaml").read_text(encoding="utf-8"))
    schemas = {}
    for name, spec in data["tables"].items():
        columns = tuple((str(c), str(t)) for c, t in spec["schema"])
        schemas[name] = TableSchema(name, columns, columns[0][0], columns[0][0])
    path = tmp_path_factory.mktemp("conformance") / "conformance.duckdb"
    tables = {name: spec["rows"] for name, spec in data["tables"].items()}
    write_store(path, tables, schemas, str(data["now"]))
    return path, parse_datetime(str(data["now"]))


@pytest.fixture(scope="session")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The upstream-layout fixture imported once: ``<dir>/cases``, ``<dir>/telemetry``, ..."""
    from interop_helpers import UPSTREAM

    from ctirealm.cases.upstream import import_cti_realm

    out = tmp_path_factory.mktemp("imported") / "cti-realm"
    import_cti_realm(UPSTREAM, out)
    return out


@pytest.fixture(scope="session")
def imported_store(imported: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The imported telemetry built into a store."""
    from ctirealm.telemetry.dataset import Dataset
    from ctirealm.telemetry.store import build_store

    return build_store(
        Dataset.load(imported / "telemetry"), cache_dir=tmp_path_factory.mktemp("imported-cache")
    )
