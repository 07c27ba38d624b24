"""Long value lists (thousands of values, as in supply-chain rules listing package names) convert
to KQL that parsers accept: plain equalities as one `in~`, other terms as a balanced tree of
parenthesised groups. Executed on a small table, a long list matches exactly what the short
list of its only matching values matches."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctirealm.engine import LocalEngine
from ctirealm.sigma.backend import MAX_FLAT_TERMS, balanced
from ctirealm.sigma.convert import convert

# Slow: rules of thousands of values.
pytestmark = pytest.mark.slow

ROWS = [
    {"ReportId": i, "FolderPath": path, "ProcessCommandLine": cmd, "AccountName": "root"}
    for i, (path, cmd) in enumerate(
        [
            ("/usr/bin/npm", "npm install left-pad@1.3.0"),
            ("/usr/bin/npm", "npm install LEFT-PAD@1.3.0 --save"),
            ("/usr/bin/node", "node /tmp/bundle.js postinstall"),
            ("/usr/bin/curl", "curl -s https://example.test/x.sh"),
            ("/usr/local/bin/npm", "npm ci"),
            ("/bin/sh", "sh -c 'node setup_bun.js'"),
            ("/usr/bin/npm", ""),
        ],
        start=1,
    )
]

#: Values that match rows above, per modifier; the long lists add decoys around them.
HITS = {
    "": ["npm install left-pad@1.3.0", "NPM CI"],
    "|contains": ["left-pad@1.3.0", "bundle.js", "setup_bun"],
    "|startswith": ["curl -s", "npm ci"],
    "|endswith": ["postinstall", "--SAVE"],
    "|contains|all": ["npm", "install"],
}
#: |all with decoys would never match; its long variant repeats matching pieces.
ALL_PIECES = ["npm", "install", "left", "pad", "1.3", "@", "np", "in"]


def _rule(modifier: str, values: list[str]) -> dict:
    return {
        "title": "Value list",
        "id": "7a1b2c3d-0000-4000-8000-000000000001",
        "status": "test",
        "logsource": {"product": "linux", "category": "process_creation"},
        "detection": {"selection": {f"CommandLine{modifier}": values}, "condition": "selection"},
        "level": "low",
    }


def _values(modifier: str, count: int) -> list[str]:
    if modifier == "|contains|all":
        return [ALL_PIECES[i % len(ALL_PIECES)] for i in range(count)]
    hits = HITS[modifier]
    decoys = [f"pkg-{i:05d}-not-seen@9.{i % 7}.{i % 11}" for i in range(count - len(hits))]
    # hits spread through the list: first, middle and last positions all count
    out = list(decoys)
    for n, hit in enumerate(hits):
        out.insert((len(out) * n) // max(1, len(hits) - 1), hit)
    return out


def _depth(kql: str) -> int:
    depth = deepest = 0
    in_string = escaped = False
    for char in kql:
        if in_string:
            escaped = not escaped and char == "\\"
            if char == '"' and not escaped:
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


def _flat_run(kql: str) -> int:
    """The longest run of `or`/`and` at one nesting level."""
    runs: list[int] = [0]
    level_runs: dict[int, int] = {}
    depth = 0
    in_string = escaped = False
    i = 0
    while i < len(kql):
        char = kql[i]
        if in_string:
            escaped = not escaped and char == "\\"
            if char == '"' and not escaped:
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "(":
            depth += 1
            level_runs[depth] = 0
        elif char == ")":
            depth -= 1
        elif kql.startswith((" or ", " and "), i):
            level_runs[depth] = level_runs.get(depth, 0) + 1
            runs.append(level_runs[depth])
        i += 1
    return max(runs) + 1


@pytest.fixture(scope="module")
def engine(schemas: dict):
    engine = LocalEngine.from_tables({"DeviceProcessEvents": ROWS}, schemas)
    yield engine
    engine.close()


def _matches(engine: LocalEngine, kql: str) -> list[int]:
    return sorted(r[0] for r in engine.query(kql + "\n| project ReportId").rows)


@pytest.mark.parametrize(
    ("modifier", "count"),
    [
        *((modifier, count) for modifier in HITS if modifier != "|contains|all" for count in (1091, 2500)),
        ("|contains|all", 1091),
    ],
)
def test_long_list_matches_as_short_list(
    engine: LocalEngine, schemas: dict, modifier: str, count: int
) -> None:
    short = convert(_rule(modifier, HITS[modifier]), schemas=schemas).kql
    long = convert(_rule(modifier, _values(modifier, count)), schemas=schemas).kql
    expected = _matches(engine, short)
    assert expected, short  # the short list matches something, so the comparison means something
    assert _matches(engine, long) == expected
    assert _depth(long) <= 6
    assert _flat_run(long) <= MAX_FLAT_TERMS


def test_plain_values_become_one_in_list(schemas: dict) -> None:
    kql = convert(_rule("", _values("", 1091)), schemas=schemas).kql
    assert kql.count(" in~ (") == 1 and " or " not in kql


def test_mixed_list_keeps_wildcards_beside_in_list(engine: LocalEngine, schemas: dict) -> None:
    values = [*_values("", 600), "node * postinstall", "*setup_bun*"]
    kql = convert(_rule("", values), schemas=schemas).kql
    assert "in~ (" in kql and "matches regex" in kql and " contains " in kql
    assert _matches(engine, kql) == [1, 3, 5, 6]


def test_contains_is_not_token_matching(engine: LocalEngine, schemas: dict) -> None:
    # `has_any` would need whole tokens; Sigma's contains matches inside them ("p_bu" in setup_bun)
    values = [f"absent-{i}" for i in range(500)] + ["p_bu"]
    kql = convert(_rule("|contains", values), schemas=schemas).kql
    assert "has_any" not in kql
    assert _matches(engine, kql) == [6]


@given(st.lists(st.text("ab", min_size=1, max_size=3), min_size=1, max_size=5000), st.integers(2, 80))
def test_balanced_keeps_terms_in_order_and_groups_bounded(terms: list[str], limit: int) -> None:
    text = balanced(terms, " or ", limit)
    assert text.replace("(", "").replace(")", "").split(" or ") == terms
    assert _flat_run(text) <= limit
    # nesting: one level per factor of `limit`
    levels, n = 0, len(terms)
    while n > limit:
        n = -(-n // limit)
        levels += 1
    assert _depth(text) <= levels


def test_cased_values_become_one_case_sensitive_in_list(engine: LocalEngine, schemas: dict) -> None:
    values = [*(f"pkg-{i}" for i in range(600)), "npm ci", "NPM INSTALL LEFT-PAD@1.3.0"]
    kql = convert(_rule("|cased", values), schemas=schemas).kql
    assert " in (" in kql and " in~ (" not in kql
    assert _matches(engine, kql) == [5]
