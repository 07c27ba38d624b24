"""Differential tests: Sigma -> KQL -> LocalEngine must match exactly what a reference matcher
written here matches, for random events and random detections.

The reference implements Sigma's matching rules as ctirealm documents them: strings compare
case-insensitively (unless ``|cased``), ``*`` and ``?`` are wildcards, a missing string is the
empty string (Kusto has no null strings), ``*`` alone means "not empty", ``|re`` is a
case-sensitive search, lists are OR and ``|all`` makes them AND.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctirealm.engine import LocalEngine
from ctirealm.sigma.convert import convert

# Slow: every rule against its reference over a store.
pytestmark = pytest.mark.slow

TABLE = "DeviceProcessEvents"
#: Sigma field -> column of the test table (all strings) for the linux process_creation pipeline.
STRING_FIELDS = {
    "CommandLine": "ProcessCommandLine",
    "Image": "FolderPath",
    "User": "AccountName",
    "ParentImage": "InitiatingProcessFolderPath",
}
MODIFIERS = [
    "",
    "contains",
    "startswith",
    "endswith",
    "contains|all",
    "cased",
    "contains|cased",
    "re",
    "re|i",
]

DATA_ALPHABET = "aabbAB/ '\"\\*?"
VALUE_ALPHABET = "abAB/ '\""


# -- reference matcher -------------------------------------------------------------------------


def _wildcard_regex(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        char = value[i]
        if char == "\\" and i + 1 < len(value) and value[i + 1] in "*?\\":
            out.append(re.escape(value[i + 1]))
            i += 2
            continue
        out.append(".*" if char == "*" else "." if char == "?" else re.escape(char))
        i += 1
    return "".join(out)


def _match_value(data: str, value: str, modifiers: list[str]) -> bool:
    if "re" in modifiers:
        flags = re.IGNORECASE if "i" in modifiers else 0
        return re.search(value, data, flags) is not None
    if "contains" in modifiers:
        value = f"*{value}*"
    elif "startswith" in modifiers:
        value = f"{value}*"
    elif "endswith" in modifiers:
        value = f"*{value}"
    if value and set(value) == {"*"}:
        return data != ""
    if value == "":
        return data == ""
    flags = re.DOTALL | (0 if "cased" in modifiers else re.IGNORECASE)
    return re.fullmatch(_wildcard_regex(value), data, flags) is not None


def _match_item(event: dict[str, Any], key: str, values: Any) -> bool:
    field, *modifiers = key.split("|")
    if field == "ProcessId":
        return event.get("ProcessId") is not None and event["ProcessId"] == values
    data = event.get(STRING_FIELDS[field]) or ""
    values = values if isinstance(values, list) else [values]
    results = [_match_value(data, str(v), modifiers) for v in values]
    return all(results) if "all" in modifiers else any(results)


def _match_selection(event: dict[str, Any], selection: dict[str, Any]) -> bool:
    return all(_match_item(event, k, v) for k, v in selection.items())


def _evaluate(tree: Any, event: dict[str, Any], selections: dict[str, dict]) -> bool:
    op = tree[0]
    if op == "sel":
        return _match_selection(event, selections[tree[1]])
    if op == "not":
        return not _evaluate(tree[1], event, selections)
    if op == "and":
        return _evaluate(tree[1], event, selections) and _evaluate(tree[2], event, selections)
    if op == "or":
        return _evaluate(tree[1], event, selections) or _evaluate(tree[2], event, selections)
    if op == "1of":
        return any(_match_selection(event, s) for s in selections.values())
    if op == "allof":
        return all(_match_selection(event, s) for s in selections.values())
    raise AssertionError(op)


def _render(tree: Any) -> str:
    op = tree[0]
    if op == "sel":
        return tree[1]
    if op == "not":
        return f"not ({_render(tree[1])})"
    if op in ("and", "or"):
        return f"({_render(tree[1])}) {op} ({_render(tree[2])})"
    return "1 of selection_*" if op == "1of" else "all of selection_*"


# -- strategies -----------------------------------------------------------------------------------

data_text = st.text(alphabet=DATA_ALPHABET, max_size=6)


@st.composite
def field_value(draw: st.DrawFn, seeds: list[str]) -> str | None:
    """Random text, or text derived from a detection value (case flipped, affixes added)."""
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return None
    if choice == 1 or not seeds:
        return draw(data_text)
    seed = draw(st.sampled_from(seeds))
    seed = "".join(draw(st.sampled_from([c.lower(), c.upper()])) for c in seed)
    fill = draw(st.sampled_from(["", "a", "B", "ab"]))
    seed = seed.replace("*", fill).replace("?", draw(st.sampled_from(["a", "B", "/"])))
    return draw(st.sampled_from(["", "a", "/"])) + seed + draw(st.sampled_from(["", "b", " "]))


def _seeds(selections: dict[str, dict]) -> list[str]:
    out = []
    for selection in selections.values():
        for key, values in selection.items():
            if key.startswith("ProcessId") or "|re" in key:
                continue
            for value in values if isinstance(values, list) else [values]:
                out.append(str(value))
    return out


def events(selections: dict[str, dict]) -> st.SearchStrategy:
    seeds = _seeds(selections)
    return st.lists(
        st.fixed_dictionaries(
            {
                "ProcessCommandLine": field_value(seeds),
                "FolderPath": field_value(seeds),
                "AccountName": field_value(seeds),
                "InitiatingProcessFolderPath": field_value(seeds),
                "ProcessId": st.one_of(st.none(), st.integers(0, 3)),
            }
        ),
        min_size=1,
        max_size=10,
    )


plain_value = st.text(alphabet=VALUE_ALPHABET, min_size=1, max_size=3)
wild_value = st.builds(
    lambda head, mid, tail: head + mid + tail,
    st.sampled_from(["", "*", "?"]),
    plain_value,
    st.sampled_from(["", "*", "?", "*b"]),
)
regex_value = st.lists(
    st.sampled_from(["a", "b", "A", "/", ".", ".*", "[ab]", "b+", "^a", "a$", "(a|b)"]),
    min_size=1,
    max_size=4,
).map("".join)


@st.composite
def items(draw: st.DrawFn) -> tuple[str, Any]:
    if draw(st.integers(0, 9)) == 0:
        return "ProcessId", draw(st.integers(0, 3))
    field = draw(st.sampled_from(sorted(STRING_FIELDS)))
    modifier = draw(st.sampled_from(MODIFIERS))
    source = regex_value if modifier.startswith("re") else st.one_of(plain_value, wild_value)
    key = f"{field}|{modifier}" if modifier else field
    if draw(st.booleans()) or "all" in modifier:
        return key, draw(st.lists(source, min_size=1, max_size=3))
    return key, draw(source)


@st.composite
def detections(draw: st.DrawFn) -> tuple[dict[str, dict], Any]:
    count = draw(st.integers(1, 3))
    selections = {}
    for index in range(count):
        pairs = draw(st.lists(items(), min_size=1, max_size=3, unique_by=lambda p: p[0]))
        selections[f"selection_{index}"] = dict(pairs)
    names = sorted(selections)

    def trees(depth: int) -> st.SearchStrategy:
        leaf = st.sampled_from(names).map(lambda n: ("sel", n))
        if depth == 0:
            return leaf
        sub = trees(depth - 1)
        return st.one_of(
            leaf,
            st.just(("1of",)),
            st.just(("allof",)),
            sub.map(lambda t: ("not", t)),
            st.tuples(st.sampled_from(["and", "or"]), sub, sub),
        )

    return selections, draw(trees(2))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_kql_matches_reference(schemas: dict, data: st.DataObject) -> None:
    selections, tree = data.draw(detections(), label="detection")
    rows = data.draw(events(selections), label="events")
    table_rows = [
        {
            **{k: v for k, v in row.items() if v is not None},
            "ReportId": 100 + i,
            "Timestamp": "2026-03-05T10:00:00Z",
        }
        for i, row in enumerate(rows)
    ]
    doc = {
        "title": "differential",
        "logsource": {"product": "linux", "category": "process_creation"},
        "detection": {**selections, "condition": _render(tree)},
    }
    kql = convert(doc, schemas={TABLE: schemas[TABLE]}).kql
    engine = LocalEngine.from_tables({TABLE: table_rows}, {TABLE: schemas[TABLE]})
    try:
        got = {r[0] for r in engine.query(kql + "\n| project ReportId").rows}
    finally:
        engine.close()
    expected = {
        row["ReportId"]
        for row, original in zip(table_rows, rows, strict=True)
        if _evaluate(tree, original, selections)
    }
    assert got == expected, f"{kql}\nrows={table_rows}"
