"""KQL conformance: every operator and function detection queries use, checked against Kusto.

The cases are data (``conformance.yaml``) over small tables
(``conformance_tables.yaml``); each expected result was worked out by hand from
Kusto's documented semantics. Known divergences are ``xfail(strict=True)``, so
a fix is noticed, and are listed in ``docs/engine.md``.

Comparison rules: cells are turned into JSON-like values (datetimes as ISO text
with ``Z``, timespans as Kusto text, dynamic values parsed); reals compare to
nine significant digits; rows compare as a multiset unless the case says
``ordered: true``. Kusto has no null strings (a missing string is ``""``) while
the store keeps a missing string as NULL, so in *string* columns a null reads
as ``""``; the cases where that difference changes a result are listed
separately as divergences.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

import ctirealm.engine as engine_module
from ctirealm.engine import EngineError, LocalEngine
from ctirealm.telemetry.values import to_json_value

CASES: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).parent / "conformance.yaml").read_text(encoding="utf-8")
)["cases"]


def _params() -> list[Any]:
    params = []
    for case in CASES:
        marks = []
        if case.get("xfail"):
            marks.append(pytest.mark.xfail(strict=True, reason=case["xfail"]))
        params.append(pytest.param(case, id=case["name"], marks=marks))
    return params


def _norm(value: Any, kind: str | None = None) -> Any:
    value = to_json_value(value)
    if value is None and kind == "string":
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return float(f"{value:.9g}")
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def _key(row: list[Any]) -> str:
    return json.dumps(row, sort_keys=True, default=str)


def _expected_rows(case: dict[str, Any], kinds: list[str]) -> list[list[Any]]:
    rows = []
    for row in case["rows"]:
        assert len(row) == len(kinds), f"{case['name']}: expected row {row} has the wrong width"
        rows.append([_norm(v, k) for v, k in zip(row, kinds, strict=True)])
    return rows


@pytest.mark.parametrize("case", _params())
def test_case(engine: LocalEngine, case: dict[str, Any]) -> None:
    kql = case["kql"]
    if "error" in case:
        spec = case["error"]
        error_type = getattr(engine_module, spec["type"])
        with pytest.raises(EngineError) as info:
            engine.query(kql)
        err = info.value
        assert isinstance(err, error_type), f"{type(err).__name__}: {err}"
        for field in ("construct", "line", "column"):
            if field in spec:
                assert getattr(err, field) == spec[field], f"{field}: {err!r} {err}"
        if "message" in spec:
            assert spec["message"] in str(err)
        return
    result = engine.query(kql)
    kinds = [kind for _, kind in result.columns]
    if "columns" in case:
        expected_columns = case["columns"]
        if expected_columns and isinstance(expected_columns[0], list):
            assert [list(c) for c in result.columns] == expected_columns
        else:
            assert result.column_names == expected_columns
    actual = [[_norm(v, k) for v, k in zip(row, kinds, strict=True)] for row in result.rows]
    expected = _expected_rows(case, kinds)
    if case.get("ordered"):
        assert actual == expected
    else:
        assert sorted(actual, key=_key) == sorted(expected, key=_key)


def test_cases_have_unique_names() -> None:
    names = [case["name"] for case in CASES]
    assert len(names) == len(set(names))
