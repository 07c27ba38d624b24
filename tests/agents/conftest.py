"""Fixtures shared by the agent tests: the mini case set and a one-row engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctirealm.cases import CaseSet, load_cases
from ctirealm.engine import LocalEngine

MINI = Path(__file__).resolve().parents[1] / "fixtures" / "mini"


@pytest.fixture(scope="module")
def cases() -> CaseSet:
    return load_cases(MINI / "cases")


@pytest.fixture
def engine() -> LocalEngine:
    """One AKSAudit row: enough for tool calls that run; test_command overrides it with a store."""
    return LocalEngine.from_tables(
        {"AKSAudit": [{"AuditId": "a", "Verb": "list"}]},
        {"AKSAudit": [("AuditId", "string"), ("Verb", "string")]},
    )
