"""Constructs real hunting queries use: `top-nested`, `has_any`/`has_all` as one regex,
`hint.strategy = partitioned`, `bin_at`, `translate`, `format_timespan`, and the wording of
refusals of operators Kusto has and the embedded engine does not."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from ctirealm.engine import (
    KqlSemanticError,
    KqlUnsupportedError,
    LocalEngine,
    QueryTimeout,
    ResourceLimitExceeded,
)

ROWS = [
    ("a", "x", 1),
    ("a", "x", 2),
    ("a", "y", 3),
    ("b", "x", 4),
    ("b", "z", 5),
    ("b", "z", 6),
    ("b", "w", 7),
    ("c", "x", 8),
    ("", "x", 9),
]


@pytest.fixture(scope="module")
def engine() -> Iterator[LocalEngine]:
    eng = LocalEngine.from_tables(
        tables={
            "T": [{"Op": o, "Ip": i, "N": n} for o, i, n in ROWS],
            "L": [
                {"Line": s, "Who": w}
                for s, w in [
                    ("wget http://x/a.sh", "root"),
                    ("curl -s x", "bob"),
                    ("wgetx y", "bob"),
                    ("sh -c 'CURL x|sh'", "bob"),
                    ("x/dev/tcp/1.2.3.4/80", "eve"),
                    ("a.b c", "eve"),
                    ("nothing here", "bob"),
                    (None, "bob"),
                    ("50% of a_b", "eve"),
                    ("C:\\Windows\\x.exe", "eve"),
                ]
            ],
        },
        schemas={
            "T": [("Op", "string"), ("Ip", "string"), ("N", "long")],
            "L": [("Line", "string"), ("Who", "string")],
        },
        now="2026-03-16T00:00:00Z",
        timeout=5.0,
    )
    yield eng
    eng.close()


def rows(engine: LocalEngine, kql: str) -> list[tuple[object, ...]]:
    return sorted(engine.query(kql).rows, key=repr)


# --- top-nested ---------------------------------------------------------------------------


def test_top_nested_two_levels(engine: LocalEngine) -> None:
    result = engine.query("T | top-nested 2 of Op by count(), top-nested 1 of Ip by s = sum(N)")
    assert [c for c, _ in result.columns] == ["Op", "aggregated_Op", "Ip", "s"]
    # b has 4 rows, a 3 (c and "" 1 each); within a, x and y tie at 3: the key breaks it.
    assert sorted(result.rows) == [("a", 3, "x", 3), ("b", 4, "z", 11)]


def test_top_nested_without_a_count_keeps_every_value(engine: LocalEngine) -> None:
    got = rows(engine, "T | top-nested of Op by dummy = max(0), top-nested 1 of Ip by count()")
    assert got == sorted([("", 0, "x", 1), ("a", 0, "x", 2), ("b", 0, "z", 2), ("c", 0, "x", 1)], key=repr)


def test_top_nested_ascending_and_computed_key(engine: LocalEngine) -> None:
    assert rows(engine, "T | where Op != '' | top-nested 1 of Op by count() asc") == [("c", 1)]
    result = engine.query('T | top-nested 2 of strcat(Op, "!") by dcount(Ip)')
    assert [c for c, _ in result.columns] == ["Column1", "aggregated_Column1"]
    assert sorted(result.rows) == [("a!", 2), ("b!", 3)]


def test_top_nested_three_levels_with_conditional_aggregates(engine: LocalEngine) -> None:
    got = rows(
        engine,
        "T | top-nested 1 of Op by big = countif(N > 4), "
        "top-nested 2 of Ip by s = sumif(N, N > 5), top-nested of N by max(N)",
    )
    # b has three rows over 4; within b, z sums 6 (only N=6 is > 5) and w 7.
    assert got == sorted([("b", 3, "w", 7, 7, 7), ("b", 3, "z", 6, 5, 5), ("b", 3, "z", 6, 6, 6)], key=repr)


@pytest.mark.parametrize(
    "kql",
    [
        'T | top-nested 2 of Op with others = "rest" by count()',
        "T | top-nested 2 of Op by count() / 2",
        "T | top-nested 2 of Op by make_set(Ip)",
    ],
)
def test_top_nested_forms_not_implemented_are_refused_as_such(engine: LocalEngine, kql: str) -> None:
    with pytest.raises(KqlUnsupportedError) as info:
        engine.query(kql)
    assert "Kusto has" in str(info.value) and "embedded engine does not" in str(info.value)


def test_top_nested_of_an_unknown_column_is_a_semantic_error(engine: LocalEngine) -> None:
    with pytest.raises(KqlSemanticError):
        engine.query("T | top-nested 2 of Nope by count()")


def test_top_nested_over_many_rows_is_bounded(engine: LocalEngine) -> None:
    """Windows over every input row: stopped by the time limit, the next query unharmed."""
    kql = (
        "range x from 1 to 100000000 step 1 | extend k = x % 1000003, j = x % 7 "
        "| top-nested 3 of k by dcount(x), top-nested 2 of j by count()"
    )
    started = time.perf_counter()
    with pytest.raises((QueryTimeout, ResourceLimitExceeded)):
        engine.query(kql, timeout=1.0)
    assert time.perf_counter() - started < 3.0
    assert engine.query("T | count").rows == [(len(ROWS),)]


# --- has_any / has_all ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kql", "expected"),
    [
        (
            'L | where Line has_any ("wget", "curl") | project Line',
            ["curl -s x", "sh -c 'CURL x|sh'", "wget http://x/a.sh"],
        ),
        (
            'L | where Line has_any ("wget", "curl") and Who != "root" | project Line',
            ["curl -s x", "sh -c 'CURL x|sh'"],
        ),
        ('L | where Line has_any ("/dev/tcp", "a.b") | project Line', ["a.b c", "x/dev/tcp/1.2.3.4/80"]),
        ('L | where Line has_any ("a_b", "50%") | project Line', ["50% of a_b"]),
        (r'L | where Line has_any (@"\Windows\") | project Line', ["C:\\Windows\\x.exe"]),
        ('L | where Line has_all ("wget", "sh") | project Line', ["wget http://x/a.sh"]),
        ('L | where Line has_all ("sh", "curl", "c") | project Line', ["sh -c 'CURL x|sh'"]),
        (
            'L | where not(Line has_any ("wget", "curl", "x")) | project Line',
            ["", "50% of a_b", "a.b c", "nothing here", "wgetx y"],
        ),
        (
            'let l = dynamic(["CURL", "tcp"]); L | where Line has_any (l) | project Line',
            ["curl -s x", "sh -c 'CURL x|sh'", "x/dev/tcp/1.2.3.4/80"],
        ),
        (
            'L | extend d = dynamic({"a": "wget it"}) | where d.a has_any ("wget") | project Line',
            [
                "",
                "50% of a_b",
                "C:\\Windows\\x.exe",
                "a.b c",
                "curl -s x",
                "nothing here",
                "sh -c 'CURL x|sh'",
                "wget http://x/a.sh",
                "wgetx y",
                "x/dev/tcp/1.2.3.4/80",
            ],
        ),
    ],
)
def test_has_any_and_has_all_keep_term_semantics(engine: LocalEngine, kql: str, expected: list[str]) -> None:
    assert sorted(r[0] for r in engine.query(kql).rows) == sorted(expected)


def test_has_any_is_one_regex_behind_a_prefilter(engine: LocalEngine) -> None:
    sql = str(engine.translate('L | where Line has_any ("wget", "curl") and Who == "x"'))
    assert sql.count("regexp_matches") <= 2  # one per typeof branch, not one per needle
    assert "regexp_escape" not in sql and "ILIKE '%wget%'" in sql


# --- scalar functions (expected values from Kusto's documentation examples) ----------------


def test_bin_at(engine: LocalEngine) -> None:
    row = engine.query(
        "print a = bin_at(6.5, 2.5, 7), "
        "b = bin_at(datetime(2017-05-15 10:20:00.0), 1d, datetime(1970-01-01 12:00:00.0)), "
        "c = bin_at(datetime(2017-05-17 10:20:00.0), 7d, datetime(2017-06-04 00:00:00.0))"
    ).rows[0]
    assert row[0] == 4.5
    assert row[1].isoformat() == "2017-05-14T12:00:00+00:00"
    assert row[2].isoformat() == "2017-05-14T00:00:00+00:00"
    result = engine.query(
        "print t = datetime(2026-03-15 10:37) "
        "| summarize n = count() by bin_at(t, 1h, datetime(2026-03-15 00:30))"
    )
    assert result.columns[0][0] == "t" and result.rows[0][0].isoformat().startswith("2026-03-15T10:30:00")


def test_translate(engine: LocalEngine) -> None:
    assert engine.query(
        'print translate("abc", "x", "abc"), translate("abc", "", "ab"), '
        'translate("krasp", "otsku", "spark"), translate(\'["]\', "", \'["x"]\')'
    ).rows == [("xxx", "", "kusto", "x")]


def test_format_timespan(engine: LocalEngine) -> None:
    assert engine.query(
        "let t = time(29.09:00:05.12345); "
        "print v1 = format_timespan(t, 'dd.hh:mm:ss:FF'), "
        "v2 = format_timespan(t, 'ddd.h:mm:ss [fffffff]'), "
        "v3 = format_timespan(-time(0:00:01.5), 'hh:mm:ss.FFF'), v4 = format_timespan(1d, 'd')"
    ).rows == [("29.09:00:05:12", "029.9:00:05 [1234500]", "-00:00:01.5", "1")]


@pytest.mark.parametrize(
    "kql",
    [
        "print format_timespan(1d, 'q')",
        "print format_timespan(1d, strcat('d', ''))",
        "print translate(strcat('a'), 'b', 'c')",
        "print bin_at(1h, 1m, 0s)",
    ],
)
def test_forms_not_implemented_name_the_function(engine: LocalEngine, kql: str) -> None:
    with pytest.raises(KqlUnsupportedError, match="Kusto has the function"):
        engine.query(kql)


def test_format_timespan_over_many_rows_is_bounded(engine: LocalEngine) -> None:
    kql = (
        "range x from 1 to 1000000000 step 1 "
        "| summarize max(format_timespan(x * 1s, 'dddddddd.hh:mm:ss.fffffff'))"
    )
    with pytest.raises((QueryTimeout, ResourceLimitExceeded)):
        engine.query(kql, timeout=1.0)
    assert engine.query("T | count").rows == [(len(ROWS),)]


# --- mv-expand / mv-apply of a `let` array --------------------------------------------------


def test_mv_expand_and_mv_apply_of_a_let_array(engine: LocalEngine) -> None:
    result = engine.query('let l = dynamic(["x", "z"]); T | where N == 1 | mv-expand t = l')
    assert [c for c, _ in result.columns] == ["Op", "Ip", "N", "t"]
    assert sorted(r[3] for r in result.rows) == ["x", "z"]
    assert rows(
        engine,
        'let l = dynamic(["x", "z"]); T | where N < 4 '
        "| mv-apply t = l to typeof(string) on (where Ip == t) | project N, t",
    ) == [(1, "x"), (2, "x")]
    # A column under another name keeps the column and adds the expansion, as before.
    result = engine.query(
        'T | where N == 1 | extend arr = dynamic(["p", "q"]) | mv-expand e = arr to typeof(string)'
    )
    assert [c for c, _ in result.columns] == ["Op", "Ip", "N", "arr", "e"]
    assert sorted(r[4] for r in result.rows) == ["p", "q"]


# --- mv-apply with a summarize; operands typed by the engine ---------------------------------


def test_mv_apply_summarize_is_per_input_row(engine: LocalEngine) -> None:
    """Equal input rows stay apart (each row's subtable is its own), the other columns are kept,
    and the sort before the summarize orders each row's list."""
    got = rows(
        engine,
        "T | where N in (1, 2, 4) | extend a = pack_array(N, N * 10, 3) "
        "| mv-apply a to typeof(long) on (order by a desc | summarize s = sum(a), l = make_list(a)) "
        "| project Op, N, s, l = strcat_array(l, ',')",
    )
    assert sorted(got) == [("a", 1, 14, "10,3,1"), ("a", 2, 25, "20,3,2"), ("b", 4, 47, "40,4,3")]


def test_mv_apply_summarize_over_many_rows_is_bounded(engine: LocalEngine) -> None:
    kql = (
        "range x from 1 to 100000000 step 1 | extend a = pack_array(x, x + 1, x + 2) "
        "| mv-apply a on (order by tolong(a) desc | summarize n = count(), s = make_list(a)) | count"
    )
    started = time.perf_counter()
    with pytest.raises((QueryTimeout, ResourceLimitExceeded)):
        engine.query(kql, timeout=1.0)
    assert time.perf_counter() - started < 3.0
    assert engine.query("T | count").rows == [(len(ROWS),)]


def test_sum_of_timespans_is_chosen_by_the_engine_read_type(engine: LocalEngine) -> None:
    """``sum`` is written for a timespan only where the engine binds its argument as one: the
    same column name summed as a number stays DuckDB's own ``sum``."""
    spans = "T | extend d = N * 1h | summarize s = sum(d), k = sumif(d, Op == 'a') by Op"
    assert "epoch_us" in str(engine.translate(spans))
    assert "epoch_us" not in str(engine.translate("T | extend d = N * 2 | summarize s = sum(d) by Op"))
    got = {r[0]: r[1:] for r in engine.query(spans).rows}
    assert got["a"] == (timedelta(hours=6), timedelta(hours=6))
    assert got["b"] == (timedelta(hours=22), timedelta(0))
    # Translated without an engine (no types to read), the call is left as Kusto wrote it.
    from ctirealm.engine.local import translate_kql

    plain = translate_kql(spans, schema={"T": ["Op", "Ip", "N"]}, now=None)
    assert "epoch_us" not in str(plain)


def test_sum_of_timespans_over_many_rows_is_bounded(engine: LocalEngine) -> None:
    started = time.perf_counter()
    with pytest.raises((QueryTimeout, ResourceLimitExceeded)):
        engine.query(
            "range x from 1 to 3000000000 step 1 | extend d = x * 1s | summarize sum(d) by x % 1000",
            timeout=1.0,
        )
    assert time.perf_counter() - started < 3.0
    assert engine.query("T | count").rows == [(len(ROWS),)]


# --- summarize hints ---------------------------------------------------------------------


def test_partitioned_strategy_is_a_no_op(engine: LocalEngine) -> None:
    assert rows(engine, "T | summarize hint.strategy=partitioned n = count() by Op") == rows(
        engine, "T | summarize n = count() by Op"
    )
    with pytest.raises(KqlUnsupportedError):
        engine.query("T | summarize hint.strategy=nonsense count() by Op")


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kql", "named"),
    [
        ("T | reduce by Op", "the operator 'reduce'"),
        ("T | fork (take 1)", "the operator 'fork'"),
        ("T | evaluate ipv4_lookup((T | take 1), Op, Op)", "the plugin 'evaluate ipv4_lookup'"),
        ("T | partition by Op (top 1 by N)", "the operator 'partition'"),
        ("T | sample 3", "the operator 'sample'"),
        ("T | evaluate autocluster()", "the plugin 'evaluate autocluster'"),
        ("T | evaluate basket()", "the plugin 'evaluate basket'"),
        ("T | evaluate sequence_detect(Op)", "the plugin 'evaluate sequence_detect'"),
        ("T | extend a = dynamic([1]) | mv-apply v = a on (top 1 by tostring(v))", "it"),
        ("let f = (x: string) { let t = T | project Op; x in (t) }; T | where f(Op)", "such a function"),
    ],
)
def test_operators_kusto_has_are_refused_as_missing_here(engine: LocalEngine, kql: str, named: str) -> None:
    with pytest.raises(KqlUnsupportedError) as info:
        engine.query(kql)
    message = str(info.value)
    assert f"Kusto has {named}, the embedded engine does not implement" in message
    assert "wave" not in message and "no function of that name" not in message


# --- serialized rows: prev, next, row_number, row_cumsum ------------------------------------


def test_bare_serialize_keeps_positions_and_order(engine: LocalEngine) -> None:
    """``| serialize`` without columns (rewritten as a same-length no-op, so positions in
    errors still point into the text) and prev/next over the preceding sort."""
    from ctirealm.engine.rewrite.text import rewrite_text

    text = "T | order by N asc | serialize // why\n| extend p = prev(N)"
    assert len(rewrite_text(text)) == len(text)
    assert rewrite_text('print s = "| serialize"') == 'print s = "| serialize"'
    got = engine.query(
        "T | order by N asc | serialize\n| extend p = prev(N), q = next(Op, 1, 'end') | project N, p, q"
    ).rows
    assert got[:2] == [(1, None, "a"), (2, 1, "a")] and got[-1] == (9, 8, "end")
    with pytest.raises(KqlSemanticError) as info:
        engine.query("T | serialize\n| where nope == 1")
    assert (info.value.line, info.value.column) == (2, 9)


def test_window_functions_refuse_what_they_cannot_read(engine: LocalEngine) -> None:
    with pytest.raises(KqlUnsupportedError, match="restart"):
        engine.query("T | order by N asc | extend r = row_number(1, Op != prev(Op))")
    with pytest.raises(KqlUnsupportedError, match="not a literal"):
        engine.query("T | order by N asc | extend r = prev(N, N)")


def test_window_functions_over_many_rows_are_bounded(engine: LocalEngine) -> None:
    kql = (
        "range x from 1 to 300000000 step 1 | order by x desc "
        "| extend p = prev(x), r = row_number() | where p - x != 1 | count"
    )
    started = time.perf_counter()
    with pytest.raises((QueryTimeout, ResourceLimitExceeded)):
        engine.query(kql, timeout=1.0)
    assert time.perf_counter() - started < 3.0
    assert engine.query("T | count").rows == [(len(ROWS),)]
