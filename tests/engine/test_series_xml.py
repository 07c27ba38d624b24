"""Kusto's series analytics and ``parse_xml``: functions `LocalEngine` runs in Python.

They are kept out of ``conformance.yaml``, which ``tests/interop`` also runs through
``ctirealm serve``: the served connection does not carry these functions and refuses
them (see docs/engine.md). Expected values follow Kusto's documentation, cited at
each case; where the documentation gives no algorithm the engine's choice is the one
docs/engine.md states, and the test pins it.
"""

from __future__ import annotations

import json
import time

import pytest

from ctirealm.engine import (
    KqlRuntimeError,
    KqlUnsupportedError,
    LocalEngine,
    QueryTimeout,
)
from ctirealm.engine import series as series_module
from ctirealm.engine.local import translate_kql
from ctirealm.engine.xmljson import parse_xml


def _one(engine: LocalEngine, kql: str) -> dict:
    rows = engine.query(kql).to_dicts()
    assert len(rows) == 1
    return rows[0]


def _close(a: list[float], b: list[float], digits: int = 3) -> bool:
    return len(a) == len(b) and all(round(x - y, digits) == 0 for x, y in zip(a, b, strict=True))


# https://learn.microsoft.com/kusto/query/series-fit-line-function: the documented example
# (RSquare 0.982, Slope 2.730, Variance 98.628, RVariance 1.686, Interception -1.666,
# LineFit 1.064, 3.7945 ...); x counts from 1.
FIT_LINE = (
    "print y = dynamic([2, 5, 6, 8, 11, 15, 17, 18, 25, 26, 30, 30]) "
    "| extend (RSquare, Slope, Variance, RVariance, Interception, LineFit) = "
    "series_fit_line(y)"
)


def test_series_fit_line_documented_example(engine: LocalEngine) -> None:
    row = _one(engine, FIT_LINE)
    assert round(row["RSquare"], 3) == 0.983  # the page rounds 0.98290 down to 0.982
    assert (
        round(row["Slope"], 3),
        round(row["Variance"], 3),
        round(row["RVariance"], 3),
        round(row["Interception"], 3),
    ) == (2.731, 98.629, 1.686, -1.667)
    assert _close(row["LineFit"][:3], [1.064, 3.795, 6.526])
    assert [c for c, _ in engine.query(FIT_LINE).columns][-2:] == ["Interception", "LineFit"]


def test_multi_column_functions_are_named_as_kusto_documents(engine: LocalEngine) -> None:
    # https://learn.microsoft.com/kusto/query/series-fit-2lines-function: unnamed, every
    # column as f_x_column; `project (a, b) = f(x)` names the first and keeps the rest
    # under default names; `extend (a, b) = f(x)` gives only the named ones.
    base = "print y = dynamic([1, 2.2, 2.5, 4.7, 5.0, 12, 10.3, 10.3, 9, 8.3, 6.2]) "
    unnamed = engine.query(base + "| project series_fit_2lines(y)").column_names
    assert unnamed[:3] == [
        "series_fit_2lines_y_rsquare",
        "series_fit_2lines_y_split_idx",
        "series_fit_2lines_y_variance",
    ]
    assert len(unnamed) == 15 and unnamed[-1] == "series_fit_2lines_y_left_rvariance"
    projected = engine.query(base + "| project (rs, si, v) = series_fit_2lines(y)").column_names
    assert projected[:4] == ["rs", "si", "v", "series_fit_2lines_y_rvariance"]
    assert len(projected) == 15
    extended = engine.query(base + "| extend (rs, si, v) = series_fit_2lines(y)").column_names
    assert extended == ["y", "rs", "si", "v"]
    single = engine.query(base + "| extend r = series_fit_line(y)")
    assert single.columns[-1] == ("r", "real")


def test_series_fit_2lines_finds_the_trend_change(engine: LocalEngine) -> None:
    row = _one(
        engine,
        "print y = dynamic([1, 2, 3, 4, 5, 6, 5, 4, 3, 2, 1]) "
        "| extend (rs, si, v, rv, fit) = series_fit_2lines(y)",
    )
    assert row["si"] in (5, 6) and row["rs"] > 0.95
    assert len(row["fit"]) == 11
    line = _one(
        engine, "print y = dynamic([1, 2, 3, 4, 5, 6, 7, 8]) | extend (rs, si) = series_fit_2lines(y)"
    )
    assert round(line["rs"], 9) == 1.0


def test_series_outliers_scores_beyond_the_percentile_fences(engine: LocalEngine) -> None:
    # https://learn.microsoft.com/kusto/query/series-outliers-function: a score above 1.5
    # is a rise anomaly, below -1.5 a decline; nulls score 0.
    row = _one(
        engine,
        "print y = dynamic([30, 28, 5, 27, 31, 38, 29, 80, 25, 37, 30, null]) "
        "| extend o = series_outliers(y), t = series_outliers(y, 'tukey')",
    )
    assert row["o"][7] > 1.5 and row["o"][2] < -1.5 and row["o"][-1] == 0
    assert sum(1 for s in row["o"] if abs(s) > 1.5) == 2
    assert row["t"][7] > row["o"][7]  # a narrower range gives larger scores


def test_series_decompose_anomalies_flags_the_spike(engine: LocalEngine) -> None:
    # https://learn.microsoft.com/kusto/query/series-decompose-anomalies-function:
    # ad_flag is +1/-1/0, ad_score the outlier score of the residual, baseline the
    # decomposition's prediction.
    values = [10, 12, 11, 10, 12, 11, 10, 12, 11, 10, 60, 11, 10, 12, 11, 10]
    row = _one(
        engine,
        f"print y = dynamic({json.dumps(values)}) "
        "| extend (flag, score, baseline) = series_decompose_anomalies(y, 1.5, 0)",
    )
    assert row["flag"][10] == 1 and sum(abs(f) for f in row["flag"]) == 1
    assert len(row["score"]) == len(values) and len(set(row["baseline"])) == 1
    # one name: the first column, ad_flag (the corpus's `outliers = ...` then `== 1`)
    single = _one(
        engine,
        f"print y = dynamic({json.dumps(values)}) "
        "| extend outliers = series_decompose_anomalies(y, 1.5, 0) "
        "| mv-expand outliers to typeof(long) | where outliers == 1 | count",
    )
    assert single["Count"] == 1


def test_series_decompose_seasonal_median_and_trend(engine: LocalEngine) -> None:
    # https://learn.microsoft.com/kusto/query/series-decompose-function: seasonal = the
    # median of the points in the same phase; baseline = seasonal + trend.
    row = _one(
        engine,
        "print y = dynamic([1, 5, 1, 5, 1, 5, 1, 5]) | extend (b, s, t, r) = series_decompose(y, 2, 'none')",
    )
    assert row["s"] == [1.0, 5.0] * 4 and row["r"] == [0.0] * 8 and row["t"] == [0.0] * 8
    detected = _one(
        engine,
        "range i from 0 to 95 step 1 | extend v = toreal(i % 12) "
        "| summarize y = make_list(v) "
        "| extend (b, s) = series_decompose(y) | project s",
    )
    assert detected["s"][:12] == [float(i) for i in range(12)]
    forecast = _one(
        engine, "print y = dynamic([1, 2, 3, 4, 5, 6, 0, 0]) | extend f = series_decompose_forecast(y, 2, 0)"
    )
    assert _close(forecast["f"], [1, 2, 3, 4, 5, 6, 7, 8])


def test_series_fir_moving_average(engine: LocalEngine) -> None:
    # https://learn.microsoft.com/kusto/query/series-fir-function: normalised by default,
    # `center` keeps the peak in place.
    row = _one(
        engine,
        "print y = dynamic([0, 0, 10, 0, 0]) "
        "| extend a = series_fir(y, dynamic([1, 1])), "
        "c = series_fir(y, dynamic([1, 1, 1]), true, true), "
        "d = series_fir(y, dynamic([1, -1]), false)",
    )
    assert row["a"] == [0.0, 0.0, 5.0, 5.0, 0.0]
    assert _close(row["c"], [0, 10 / 3, 10 / 3, 10 / 3, 0])
    assert row["d"] == [0.0, 0.0, 10.0, -10.0, 0.0]


def test_series_over_make_series(engine: LocalEngine) -> None:
    kql = (
        "Proc | make-series c = count() on Timestamp from datetime(2026-03-12) "
        "to datetime(2026-03-16) step 1d by DeviceId "
        "| extend (rsquare, slope) = series_fit_line(c), a = series_decompose_anomalies(c) "
        "| project DeviceId, slope, n = array_length(a)"
    )
    rows = engine.query(kql).to_dicts()
    assert {r["DeviceId"] for r in rows} == {"d1", "d2", "d3"}
    assert all(r["n"] == 4 for r in rows)


def test_series_errors(engine: LocalEngine) -> None:
    with pytest.raises(KqlUnsupportedError, match="returns 6 columns"):
        engine.query("print y = dynamic([1, 2]) | extend (a, b, c, d, e, f, g) = series_fit_line(y)")
    with pytest.raises(KqlUnsupportedError, match="extend and project"):
        engine.query("print (a, b) = series_fit_line(dynamic([1, 2, 3]))")
    with pytest.raises(KqlRuntimeError, match="not a dynamic array"):
        engine.query("print a = series_outliers('text')")
    # a null series gives nulls
    assert _one(engine, "print a = series_fit_line(dynamic(null))")["a"] is None


def test_translation_without_the_engine_refuses_them() -> None:
    """``ctirealm serve`` and other translators have no such function on their connection."""
    from ctirealm.engine import rewrite

    rewrite.install()
    for kql in ("print a = parse_xml('<a/>')", "print a = series_outliers(dynamic([1]))"):
        with pytest.raises(KqlUnsupportedError, match="LocalEngine only"):
            translate_kql(kql, schema={}, now=None)


# --------------------------------------------------------------------------- parse_xml


def test_parse_xml_documented_conversions(engine: LocalEngine) -> None:
    # https://learn.microsoft.com/kusto/query/parse-xml-function, the conversion table.
    row = _one(
        engine,
        "print a = parse_xml('<e/>'), b = parse_xml('<e>text</e>'), "
        "c = parse_xml('<e name=\"value\" />'), "
        "d = parse_xml('<e name=\"value\">text</e>'), "
        "f = parse_xml('<e> <a>text</a> <b>text</b> </e>'), "
        "g = parse_xml('<e> <a>text</a> <a>text</a> </e>'), "
        "h = parse_xml('<e> text <a>text</a> </e>'), i = parse_xml('<e>')",
    )
    assert row == {
        "a": {"e": None},
        "b": {"e": "text"},
        "c": {"e": {"@name": "value"}},
        "d": {"e": {"@name": "value", "#text": "text"}},
        "f": {"e": {"a": "text", "b": "text"}},
        "g": {"e": {"a": ["text", "text"]}},
        "h": {"e": {"#text": "text", "a": "text"}},
        "i": None,
    }


def test_parse_xml_windows_event_paths(engine: LocalEngine) -> None:
    xml = (
        '<DataItem type="System.XmlData"><UserData><EventData xmlns="http://x">'
        "<ClusterName>c1</ClusterName><ArmId>/sub/1</ArmId></EventData></UserData>"
        "</DataItem>"
    )
    row = _one(
        engine,
        f"print e = '{xml}' | extend p = parse_xml(e) "
        "| project c = tostring(p.DataItem.UserData.EventData['ClusterName']), "
        "t = tostring(p.DataItem['@type'])",
    )
    assert row == {"c": "c1", "t": "System.XmlData"}


def test_parse_xml_hostile_documents_give_null() -> None:
    """No entity is ever expanded or fetched; deep nesting and oversized input give null."""
    laughs = (
        '<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
        '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><l>&c;</l>'
    )
    assert parse_xml(laughs) is None
    assert parse_xml('<!DOCTYPE f [<!ENTITY x SYSTEM "file:///etc/passwd">]><f>&x;</f>') is None
    assert parse_xml("<a>" * 10_000 + "</a>" * 10_000) is None
    assert parse_xml("<a>" + "x" * 1_100_000 + "</a>") is None
    assert parse_xml("<a>x</a>") == {"a": "x"}


# --------------------------------------------------------------------------- limits


def test_long_series_are_bounded(engine: LocalEngine) -> None:
    """A series longer than the engine's limit is refused before Python sees it; long ones
    within it finish, or stop at the query's time limit."""
    with pytest.raises(KqlRuntimeError, match="longer than the engine limit"):
        engine.query(
            "range i from 1 to 100001 step 1 | summarize y = make_list(i) | extend a = series_outliers(y)"
        )
    started = time.perf_counter()
    try:
        engine.query(
            "range g from 1 to 2000 step 1 | extend k = 1 | join kind=inner "
            "(range i from 1 to 5000 step 1 | summarize y = make_list(toreal(i % 97)) "
            "| extend k = 1) on k | extend (b, s) = series_decompose(y) | count",
            timeout=1.0,
        )
    except QueryTimeout:
        pass
    assert time.perf_counter() - started < 3.0
    assert engine.query("print n = 1").rows == [(1,)]


def test_the_stop_flag_interrupts_a_long_computation() -> None:
    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) > 2:
            raise series_module.SeriesError("stopped")

    with pytest.raises(series_module.SeriesError):
        series_module.compute("series_fit_2lines", json.dumps(list(range(20_000))), "[]", check)
