"""Cheaper SQL with the same answers: patches of duckdb-kql's renderers.

Each replacement wraps duckdb-kql's own renderer and falls back to it for
every form it does not speed up. Measured on a million DeviceProcessEvents
rows (``benchmarks/engine.py``): a LIKE with an ESCAPE clause loses DuckDB's
substring fast path (13 ms -> 205 ms), a ``has`` term regex over every row
costs 440 ms where a substring pre-filter leaves 80 ms, and binning through
floating-point epochs costs 165 ms where integer microseconds cost 19 ms.
``range`` becomes DuckDB's streaming table function, which is also what keeps
it inside the memory limit and interruptible.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from duckdb_kql import ir
from duckdb_kql import parser as _parser
from duckdb_kql import translate as _translate
from duckdb_kql.translate import functions as _functions

#: op -> (LIKE keyword, leading %, trailing %, negated)
_LIKE_OPS = {
    "contains": ("ILIKE", True, True, False),
    "!contains": ("ILIKE", True, True, True),
    "contains_cs": ("LIKE", True, True, False),
    "!contains_cs": ("LIKE", True, True, True),
    "startswith": ("ILIKE", False, True, False),
    "!startswith": ("ILIKE", False, True, True),
    "endswith": ("ILIKE", True, False, False),
    "!endswith": ("ILIKE", True, False, True),
}
#: op -> (LIKE keyword of the pre-filter, negated)
_HAS_OPS = {
    "has": ("ILIKE", False),
    "!has": ("ILIKE", True),
    "has_cs": ("LIKE", False),
    "!has_cs": ("LIKE", True),
}
_LIKE_SPECIAL = frozenset("%_\\")
#: Longest has_any list given substring pre-filters (longer ones are one alternation).
_PREFILTER_MAX_NEEDLES = 64
#: Longest has_any/has_all list rendered here (duckdb-kql's own rendering, a regex per
#: needle built by concatenation, took over 20 s for 3,000 needles over 2,000 rows).
MAX_LIST_NEEDLES = 100_000


def _literal_text(node: ir.Expr) -> str | None:
    if isinstance(node, ir.Literal) and node.kind == "string" and node.value is not None:
        return str(node.value)
    return None


def _prefiltered(prefilter: str, test: str) -> str:
    """*test* behind a cheap *prefilter* it implies, never null.

    Written as a ``CASE`` rather than ``prefilter AND test``: duckdb-kql wraps string operators
    in ``coalesce(..., FALSE)`` for KQL's null semantics, and DuckDB evaluates the regex of an
    ``AND`` inside ``coalesce`` on every row, where a ``CASE`` runs it only on the rows the
    prefilter keeps (a ``has`` over a million command lines: 82 ms as an ``AND``, 13 ms as a
    ``CASE``). The truth values are the same: false wherever the prefilter is false or null.
    """
    return f"(CASE WHEN {prefilter} THEN coalesce({test}, FALSE) ELSE FALSE END)"


def _term_operator(
    original: Callable[[ir.BinaryOp, Any], str | None],
) -> Callable[[ir.BinaryOp, Any], str | None]:
    """String operators against a literal needle.

    ``contains``/``startswith``/``endswith`` (and ``_cs``, negations) whose
    needle has no LIKE metacharacter are written as a plain LIKE/ILIKE
    pattern, without the ESCAPE clause duckdb-kql always adds. ``has``/``has_cs``
    with an ASCII needle keep duckdb-kql's term regex, behind a substring test
    the regex implies (a term match is a substring match), so the regex runs
    only on the rows that contain the needle at all.
    """

    def render(node: ir.BinaryOp, sqls: Any) -> str | None:
        needle = _literal_text(node.right)
        if needle is not None and node.op in _LIKE_OPS and not _LIKE_SPECIAL & set(needle):
            keyword, lead, trail, negated = _LIKE_OPS[node.op]
            pattern = ("%" if lead else "") + needle + ("%" if trail else "")
            sql = f"({sqls[0]} {keyword} {_translate.quote_string(pattern)})"
            return f"(NOT {sql})" if negated else sql
        if needle and node.op in _HAS_OPS and needle.isascii():
            keyword, negated = _HAS_OPS[node.op]
            positive = node.op.lstrip("!")
            term = original(dataclasses.replace(node, op=positive), sqls)
            if term is None:
                term = _functions.BINARY_OPERATORS[positive].template.format(*sqls)
            like = _translate.quote_string("%" + needle + "%")
            sql = _prefiltered(f"{sqls[0]} {keyword} {like}", term)
            return f"(NOT {sql})" if negated else sql
        return original(node, sqls)

    return render


def _quote_meta(text: str) -> str:
    """*text* as an RE2 literal, escaped as DuckDB's ``regexp_escape`` (RE2's QuoteMeta) does."""
    return "".join(
        "\\x00" if c == "\0" else c if c.isalnum() or c == "_" or not c.isascii() else "\\" + c for c in text
    )


def _term_pattern(needle: str) -> str:
    """The `has` regex of one ASCII *needle*, as duckdb-kql folds it: a boundary at each
    edge whose character is a term character."""
    start = _functions._TERM_START if _functions.is_term_char(needle[:1]) else ""
    end = _functions._TERM_END if _functions.is_term_char(needle[-1:]) else ""
    return start + _quote_meta(needle) + end


def _alternation(needles: list[str]) -> str:
    """The `has` regexes of *needles* as one alternation, the term boundaries factored out
    of each group of needles sharing them: ``B(?:a|b|c)B`` rather than ``BaB|BbB|BcB``,
    which RE2 matches in one pass where the unfactored form, over thousands of needles,
    falls back to a slow simulation (3,000 indicators over 2,000 rows: over 20 s, 0.2 s so)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for n in needles:
        start = _functions._TERM_START if _functions.is_term_char(n[:1]) else ""
        end = _functions._TERM_END if _functions.is_term_char(n[-1:]) else ""
        groups.setdefault((start, end), []).append(_quote_meta(n))
    return "|".join(f"{start}(?:{'|'.join(body)}){end}" for (start, end), body in groups.items())


def _has_list(original: Callable[[ir.HasList], str]) -> Callable[[ir.HasList], str]:
    """``has_any``/``has_all`` over literal ASCII needles: one regex behind substring pre-filters.

    duckdb-kql tests each needle with a regex of its own, built by concatenation, on every
    row. Here ``has_any`` is a single alternation (RE2 scans the text once for all needles),
    ``has_all`` one regex per needle, and either runs only on the rows the ``ILIKE``
    pre-filters keep (the regex implies them). ``has_any ("wget", "curl") and AccountName ==
    "root" | summarize count() by DeviceName`` over a million command lines: 114 ms as
    per-needle regexes behind an ``AND`` pre-filter, 71 ms so.
    """

    def render(node: ir.HasList) -> str:
        if node.subquery is not None:
            return original(node)
        needles: list[str] = []
        for item in node.items:
            text = _literal_text(item)
            if text is not None:
                needles.append(text)
                continue
            listed = _translate._literal_needles(item)
            if listed is None or any(n is None for n in listed):
                return original(node)
            needles.extend(n for n in listed if n is not None)
        if not needles or len(needles) > MAX_LIST_NEEDLES:
            return original(node)
        if not all(n and n.isascii() for n in needles):
            return original(node)
        needles = list(dict.fromkeys(needles))
        # Over many needles an OR of pre-filters costs as much as the alternation it guards
        # (a has_any of thousands of indicators: one regex scan of each row instead).
        long_any = not node.require_all and len(needles) > _PREFILTER_MAX_NEEDLES

        def build(sqls: Any) -> str:
            value = sqls[0]
            likes = [f"{value} ILIKE {_translate.quote_string('%' + n + '%')}" for n in needles]
            if node.require_all and len(needles) > _PREFILTER_MAX_NEEDLES:
                # Thousands of terms: two list lambdas rather than thousands of expressions
                # (which DuckDB evaluates, and compiles, however few rows pass).
                lowered = "[" + ", ".join(_translate.quote_string(n.lower()) for n in needles) + "]"
                patterns = (
                    "[" + ", ".join(_translate.quote_string("(?i)" + _term_pattern(n)) for n in needles) + "]"
                )
                count = len(needles)
                prefilter = (
                    f"len(list_filter({lowered}, lambda _hn: contains(lower({value}), _hn))) = {count}"
                )
                test = f"len(list_filter({patterns}, lambda _hp: regexp_matches({value}, _hp))) = {count}"
                return _prefiltered(f"({prefilter})", test)
            if node.require_all:
                prefilter = " AND ".join(likes)
                test = " AND ".join(
                    f"regexp_matches({value}, {_translate.quote_string('(?i)' + _term_pattern(n))})"
                    for n in needles
                )
            else:
                prefilter = " OR ".join(likes)
                alternation = _alternation(needles)
                test = f"regexp_matches({value}, {_translate.quote_string('(?i)(?:' + alternation + ')')})"
                if long_any:
                    return f"coalesce({test}, FALSE)"
            return _prefiltered(f"({prefilter})", test)

        return _translate._in_string_context(((node.value, _translate.render_expr(node.value)),), build)

    return render


def _bin(original: Callable[..., str]) -> Callable[..., str]:
    """``bin(column, <timespan literal>)`` in integer microseconds.

    Same floor-to-a-multiple-since-the-Unix-epoch as duckdb-kql's rendering
    (negative offsets floor too), without the floating-point round trip. Like
    duckdb-kql, a bare column binned by a timespan is taken to be a datetime.
    """

    def render(node: ir.FunctionCall, name: str = "bin") -> str:
        if len(node.args) == 2:
            value, size = node.args
            if isinstance(value, ir.ColumnRef) and isinstance(size, ir.Literal) and size.kind == "timespan":
                v = f"epoch_us({_translate.render_expr(value)})"
                step = f"NULLIF(epoch_us({_translate.render_expr(size)}), 0)"
                return f"make_timestamp({v} - ((({v} % {step}) + {step}) % {step}))"
        return original(node, name)

    return render


def _render_range(source: ir.RangeSource) -> str:
    """``range x from a to b step s`` as DuckDB's streaming ``generate_series`` table function.

    duckdb-kql renders it as ``UNNEST(generate_series(...))``, one *list* value
    holding every element: ``range x from 1 to 1000000000 step 1`` then builds
    an 8 GB list inside a single function call, which neither the memory limit
    nor an interrupt stops. The table function yields the same rows (both ends
    inclusive, same overloads for numbers and datetimes) a vector at a time.
    """
    bounds = [source.start, source.stop, source.step]
    temporal = any(_translate._is_datetime_expr(e) or _translate._is_timespan_expr(e) for e in bounds)
    rendered = ", ".join(
        _translate.render_expr(e) if temporal else f"CAST({_translate.render_expr(e)} AS BIGINT)"
        for e in bounds
    )
    name = _translate.quote_ident(source.name)
    return f"SELECT {name} FROM generate_series({rendered}) AS _range({name})"


#: duckdb-kql attributes replaced by `install`: (module, attribute, original -> replacement).
#: Parsed query texts kept by `_memoised_parse` (most recent last).
PARSE_MEMO_SIZE = 512
_PARSED: OrderedDict[str, Any] = OrderedDict()
_PARSED_LOCK = threading.Lock()


def _memoised_parse(original: Callable[[str], Any]) -> Callable[[str], Any]:
    """duckdb-kql's parser, remembering the trees of the last `PARSE_MEMO_SIZE` texts.

    One query is parsed by translation and again by scoring, which resolves the tables it
    reads from the same grammar (``telemetry.attribution``); parsing with the Python ANTLR
    runtime is the costliest step of both (40 ms for a typical detection, a third of a
    benchmark run's parse time spent twice). The tree is only read after parsing, so one
    result serves every reader. Texts that fail to parse are not remembered.
    """

    def parse(kql: str) -> Any:
        if not isinstance(kql, str):
            return original(kql)
        with _PARSED_LOCK:
            known = _PARSED.get(kql)
            if known is not None:
                _PARSED.move_to_end(kql)
                return known
        result = original(kql)
        with _PARSED_LOCK:
            _PARSED[kql] = result
            while len(_PARSED) > PARSE_MEMO_SIZE:
                _PARSED.popitem(last=False)
        return result

    return parse


PATCHES: list[tuple[Any, str, Callable[[Any], Any]]] = [
    (_parser, "parse", _memoised_parse),
    (_translate, "render_range", lambda _original: _render_range),
    (_translate, "_render_term_operator", _term_operator),
    (_translate, "render_has_list", _has_list),
    (_translate, "render_bin", _bin),
]
