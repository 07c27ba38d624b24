"""``has_any``/``has_all`` over thousands of literal needles: same answers, bounded time.

Indicator lists of thousands of hashes, domains or addresses are common in hunting
queries. Over 64 needles the engine renders ``has_any`` as one alternation with the
term boundaries factored out, and ``has_all`` as two list lambdas; below it, as before.
Kusto's ``has`` semantics (https://learn.microsoft.com/kusto/query/has-anyoperator):
whole terms, case-insensitive.
"""

from __future__ import annotations

import json
import time

import pytest

from ctirealm.engine import LocalEngine

ROWS = [
    {"x": "alpha beta.gamma x-1 Delta"},
    {"x": "alpha only"},
    {"x": "alphabet soup"},
    {"x": "ioc7.example.com was contacted"},
]


def _engine() -> LocalEngine:
    return LocalEngine.from_tables(tables={"T": ROWS}, schemas={"T": [("x", "string")]})


def _list(needles: list[str]) -> str:
    return ", ".join(json.dumps(n) for n in needles)


def test_long_has_any_matches_whole_terms_only() -> None:
    engine = _engine()
    needles = [f"ioc{i}.example.com" for i in range(100)] + ["beta.gamma", "alph", "-1"]
    rows = engine.query(f"T | where x has_any ({_list(needles)}) | project x").rows
    assert sorted(r[0] for r in rows) == ["alpha beta.gamma x-1 Delta", "ioc7.example.com was contacted"]
    short = engine.query(f"T | where x has_any ({_list([*needles[:3], 'beta.gamma'])}) | project x").rows
    assert short == [("alpha beta.gamma x-1 Delta",)]


def test_long_has_all_needs_every_term() -> None:
    engine = _engine()
    present = ["alpha", "beta.gamma", "x-1", "DELTA"]
    filler = [f"zz{i}" for i in range(80)]
    assert engine.query(f"T | where x has_all ({_list(present * 30)}) | count").rows == [(1,)]
    assert engine.query(f"T | where x has_all ({_list(present + filler)}) | count").rows == [(0,)]
    assert engine.query(f"T | where x has_all ({_list(present + ['alpha'] * 70)}) | count").rows == [(1,)]
    # over 64 distinct needles, all present
    words = [f"w{i}" for i in range(70)]
    wide = LocalEngine.from_tables(
        tables={"T": [{"x": " ".join(words)}, {"x": "w1 w2"}]}, schemas={"T": [("x", "string")]}
    )
    assert wide.query(f"T | where x has_all ({_list(words)}) | count").rows == [(1,)]
    assert wide.query(f"T | where x has_all ({_list([*words, 'w7x'])}) | count").rows == [(0,)]


@pytest.mark.slow
def test_thousands_of_indicators_finish_quickly() -> None:
    engine = LocalEngine.from_tables(
        tables={"T": [{"x": f"host{i} value{i}"} for i in range(2000)]}, schemas={"T": [("x", "string")]}
    )
    needles = _list([f"ioc{i}.example.com" for i in range(3000)] + ["value1999"])
    for op in ("has_any", "has_all"):
        kql = f"T | where x {op} ({needles}) | count"
        engine.translate(kql)
        started = time.perf_counter()
        rows = engine.query(kql, timeout=10.0).rows
        assert time.perf_counter() - started < 5.0, op
        assert rows == [(1,)] if op == "has_any" else [(0,)]
