"""Fixtures for the interoperability tests (helpers live in interop_helpers.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import yaml
from interop_helpers import ROOT, write_store

from ctirealm.telemetry.schema import TableSchema, parse_datetime


@pytest.fixture(scope="session")
def conformance_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, datetime]:
    """The engine conformance tables (tests/engine) as a store file, and their clock."""
    data = yaml.safe_load((ROOT / "tests" / "engine" / "conformance_tables.yaml").read_text(
        encoding="utf-8"))
    schemas = {}
    for name, spec in data["tables"].items():
        columns = tuple((str(c), str(t)) for c, t in spec["schema"])
        schemas[name] = TableSchema(name, columns, columns[0][0], columns[0][0])
    path = tmp_path_factory.mktemp("conformance") / "conformance.duckdb"
    tables = {name: spec["rows"] for name, spec in data["tables"].items()}
    write_store(path, tables, schemas, str(data["now"]))
    return path, parse_datetime(str(data["now"]))


