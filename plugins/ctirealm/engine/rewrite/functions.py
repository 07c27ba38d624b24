"""Additions to duckdb-kql's function tables, as data: the least invasive rewrites.

duckdb-kql keeps its functions as data (``translate/functions.py``:
``SCALAR_FUNCTIONS``, ``AGGREGATE_FUNCTIONS``) and special forms
(``translate._SPECIAL_FORMS``: a call -> SQL). This module only *describes*
rows for those tables; `install` adds them. New rows are Kusto functions with
one well-defined meaning (``ipv4_is_in_range``, ``bag_keys``, ``make_set_if``,
``make_bag``, ``set_difference``, ``url_encode``, ``parse_path``, ``bag_merge``,
``extract_json``, ...), calls of the Python functions `LocalEngine` registers
(the series analytics of `ctirealm.engine.series`, ``parse_xml``, ``parse_user_agent``,
``geo_info_from_ip_address``, ``parse_command_line``; refused when
translating for any other connection, `ENGINE_FUNCTIONS`), and internal
functions other rewrites lower to (``make-series``, ``* has``, window functions).
Existing rows are replaced only to take arguments Kusto allows (``split``,
``indexof``, ``strrep``, ``bin`` with a timespan expression, ``extract_all``
with group names): the wider renderer declines, so the original runs, for
every form duckdb-kql already handles.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

from duckdb_kql import ir
from duckdb_kql import translate as _translate
from duckdb_kql.errors import KqlSchemaError, KqlUnsupportedError
from duckdb_kql.translate import functions as _functions


def _arg(name: str, index: int, node: ir.Expr) -> str:
    return _translate._render_arg(name, index, node)


def _ipv4(node: ir.Expr) -> str:
    """``parse_ipv4(node)``: the address as a long, masked by its own CIDR suffix."""
    return _translate._render_parse_ipv4(ir.FunctionCall("parse_ipv4", (node,)))


def _ipv4_prefix(node: ir.Expr) -> str:
    """The CIDR suffix written on an IPv4 string, 32 when none; null when out of range."""
    text = _translate.render_expr(node)
    suffix = f"regexp_extract(trim(CAST({text} AS VARCHAR)), '/([0-9]{{1,2}})$', 1)"
    return (
        f"(CASE WHEN {suffix} = '' THEN 32 "
        f"WHEN CAST({suffix} AS INTEGER) <= 32 THEN CAST({suffix} AS INTEGER) END)"
    )


def _masked_equal(a: str, b: str, prefix: str) -> str:
    """Two IPv4 longs equal in their first *prefix* bits (null if any input is null)."""
    return (
        f"list_transform([{{'a': {a}, 'b': {b}, 'p': {prefix}}}], lambda _ip: "
        "(_ip.a // CAST(pow(2, 32 - _ip.p) AS BIGINT)) = "
        "(_ip.b // CAST(pow(2, 32 - _ip.p) AS BIGINT)))[1]"
    )


def _render_ipv4_is_in_range(node: ir.FunctionCall) -> str | None:
    """``ipv4_is_in_range(ip, range)``: *ip* lies in *range* (``a.b.c.d[/n]``)."""
    if len(node.args) != 2:
        return None
    ip, network = node.args
    return _masked_equal(_ipv4(ip), _ipv4(network), _ipv4_prefix(network))


def _render_ipv4_is_match(node: ir.FunctionCall) -> str | None:
    """``ipv4_is_match(a, b[, prefix])``: equal in the smallest of the prefixes given."""
    if len(node.args) not in (2, 3):
        return None
    a, b = node.args[:2]
    prefixes = [_ipv4_prefix(a), _ipv4_prefix(b)]
    if len(node.args) == 3:
        prefixes.append(f"CAST({_translate.render_expr(node.args[2])} AS INTEGER)")
    return _masked_equal(_ipv4(a), _ipv4(b), f"least({', '.join(prefixes)})")


#: RFC 1918 ranges as (network long, prefix).
_PRIVATE_V4 = ((167772160, 8), (2886729728, 12), (3232235520, 16))


def _render_ipv4_is_private(node: ir.FunctionCall) -> str | None:
    """``ipv4_is_private(ip)``: in 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16."""
    if len(node.args) != 1:
        return None
    tests = " OR ".join(f"(_ip // {2 ** (32 - p)}) = {net // 2 ** (32 - p)}" for net, p in _PRIVATE_V4)
    return f"list_transform([{_ipv4(node.args[0])}], lambda _ip: {tests})[1]"


def _render_ipv4_is_in_any_range(node: ir.FunctionCall) -> str | None:
    """``ipv4_is_in_any_range(ip, range, ...)`` or ``(ip, dynamic([ranges]))``: *ip* lies in
    one of the ranges (``a.b.c.d[/n]``); null when *ip* is not an IPv4 address."""
    if len(node.args) < 2:
        return None
    ip = _ipv4(node.args[0])
    if len(node.args) == 2 and not _is_string_literal(node.args[1]):
        ranges = (
            f"list_transform(CAST(json_extract({_translate.render_expr(node.args[1])}, "
            "'$[*]') AS VARCHAR[]), lambda _j: trim(_j, '\"'))"
        )
    else:
        ranges = "[" + ", ".join(f"CAST({_translate.render_expr(a)} AS VARCHAR)" for a in node.args[1:]) + "]"
    # Inside a lambda no subquery may appear (duckdb-kql's parse_ipv4 is one): each range
    # is read here with scalar functions, as parse_ipv4 reads it.
    octet = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9][0-9]|[0-9])"
    pattern = rf"^{octet}\.{octet}\.{octet}\.{octet}(/(3[0-2]|[12][0-9]|[0-9]))?$"
    net = " + ".join(
        f"CAST(split_part(split_part(_rt, '/', 1), '.', {i + 1}) AS BIGINT) * {m}"
        for i, m in enumerate((16777216, 65536, 256, 1))
    )
    prefix = "CASE WHEN strpos(_rt, '/') > 0 THEN CAST(split_part(_rt, '/', 2) AS BIGINT) ELSE 32 END"
    inside = (
        f"CASE WHEN regexp_matches(_rt, '{pattern}') THEN "
        f"(_ipa // CAST(pow(2, 32 - ({prefix})) AS BIGINT)) = "
        f"(({net}) // CAST(pow(2, 32 - ({prefix})) AS BIGINT)) ELSE false END"
    )
    return (
        f"list_transform([{ip}], lambda _ipa: CASE WHEN _ipa IS NULL THEN NULL ELSE "
        f"coalesce(list_bool_or(list_transform({ranges}, lambda _rg: "
        f"list_transform([trim(_rg)], lambda _rt: {inside})[1])), false) END)[1]"
    )


def _is_string_literal(node: ir.Expr) -> bool:
    return isinstance(node, ir.Literal) and node.kind == "string"


#: Functions whose result is always a string, and always dynamic: a conditional mixing the two
#: is typed string by Kusto, which converts the dynamic branches.
_STRING_RESULTS = frozenset(
    {
        "strcat",
        "strcat_delim",
        "tostring",
        "tolower",
        "toupper",
        "substring",
        "trim",
        "trim_start",
        "trim_end",
        "replace_string",
        "replace_regex",
        "strrep",
        "format_datetime",
        "url_encode",
        "base64_encode_tostring",
        "base64_decode_tostring",
        "reverse",
        "strcat_array",
    }
)
_DYNAMIC_RESULTS = frozenset(
    {
        "split",
        "pack_array",
        "parse_json",
        "todynamic",
        "bag_pack",
        "pack",
        "extract_all",
        "bag_keys",
        "array_slice",
        "set_union",
    }
)


def _static_kind(node: ir.Expr) -> str | None:
    if isinstance(node, ir.Literal) and node.kind in ("string", "dynamic"):
        return node.kind
    if isinstance(node, ir.FunctionCall):
        name = node.name.lower()
        if name in _STRING_RESULTS:
            return "string"
        if name in _DYNAMIC_RESULTS:
            return "dynamic"
    return None


def _render_mixed_conditional(node: ir.FunctionCall) -> str | None:
    """``case``/``iff`` whose branches mix strings and dynamic values (``case(p, split(s, ","),
    "unknown")``): Kusto types the result string, converting the dynamic branches (its
    analyzer infers string), where DuckDB refuses to mix a list and text. Other calls
    decline to duckdb-kql's own rendering."""
    name = node.name.lower()
    if name == "case":
        if len(node.args) < 3 or len(node.args) % 2 == 0:
            return None
        positions = [*range(1, len(node.args) - 1, 2), len(node.args) - 1]
    elif name in ("iff", "iif") and len(node.args) == 3:
        positions = [1, 2]
    else:
        return None
    kinds = {_static_kind(node.args[i]) for i in positions}
    if not {"string", "dynamic"} <= kinds:
        return None
    args = list(node.args)
    for i in positions:
        if _static_kind(args[i]) == "dynamic":
            # Through todynamic: its text is JSON (`["a","b"]`), as Kusto's is.
            args[i] = ir.FunctionCall("tostring", (ir.FunctionCall("todynamic", (args[i],)),))
    return _translate.render_expr(dataclasses.replace(node, args=tuple(args)))


def _render_split(node: ir.FunctionCall) -> str | None:
    """``split(s, delimiter, index)``: a one-element array, or empty when out of range."""
    if len(node.args) != 3:
        return None  # the two-argument form is duckdb-kql's own
    text, delimiter, index = (_arg("split", i, a) for i, a in enumerate(node.args))
    return (
        f"list_transform([{{'p': str_split({text}, {delimiter}), 'i': {index}}}], lambda _sp: "
        "CASE WHEN _sp.i >= 0 AND _sp.i < len(_sp.p) THEN [_sp.p[_sp.i + 1]] "
        "ELSE CAST([] AS VARCHAR[]) END)[1]"
    )


def _render_indexof(node: ir.FunctionCall) -> str | None:
    """``indexof(s, match, start[, length[, occurrence]])`` with occurrence 1.

    A negative *start* counts from the end; *length* -1 means to the end. The
    answer is the 0-based position in *s*, or -1 when there is no match.
    """
    if len(node.args) not in (3, 4, 5):
        return None
    text, match = _arg("indexof", 0, node.args[0]), _arg("indexof", 1, node.args[1])
    start = _translate.render_expr(node.args[2])
    length = _translate.render_expr(node.args[3]) if len(node.args) >= 4 else "-1"
    if len(node.args) == 5:
        occurrence = node.args[4]
        if not (isinstance(occurrence, ir.Literal) and occurrence.value == 1):
            raise KqlUnsupportedError(
                "function:indexof", hint="an occurrence other than 1 is not implemented"
            )
    return (
        f"list_transform([{{'s': {text}, 'm': {match}, "
        f"'st': CAST({start} AS BIGINT), 'n': CAST({length} AS BIGINT)}}], lambda _ix: "
        "list_transform([greatest(0, CASE WHEN _ix.st < 0 THEN length(_ix.s) + _ix.st "
        "ELSE _ix.st END)], lambda _b: "
        "list_transform([position(_ix.m IN CASE WHEN _ix.n < 0 THEN substring(_ix.s, _b + 1) "
        "ELSE substring(_ix.s, _b + 1, _ix.n) END)], lambda _p: "
        "CASE WHEN _p = 0 THEN -1 ELSE _p - 1 + _b END)[1])[1])[1]"
    )


def _render_bin_timespan(node: ir.FunctionCall) -> str | None:
    """``bin(t, size)`` where *size* is a timespan *expression* (``timespan(1d)``, ``2 * 1h``).

    duckdb-kql bins by time only when the size is a timespan literal and
    otherwise bins numerically, which fails to bind on a datetime. The rendering
    is duckdb-kql's own datetime binning (epoch-based, as Kusto's).
    """
    if len(node.args) != 2:
        return None
    value, size = node.args
    if isinstance(size, ir.Literal) or not _translate._is_timespan_expr(size):
        return None
    v, r = _translate.render_expr(value), _translate.render_expr(size)
    floored = f"floor(epoch({v}) / epoch({r})) * epoch({r})"
    if _translate._is_timespan_expr(value):
        return f"to_seconds(CAST({floored} AS BIGINT))"
    return f"to_timestamp({floored}) AT TIME ZONE 'UTC'"


#: Largest string `strrep` may build (the time and memory limits do not reach
#: inside one DuckDB ``repeat`` call, so the size is checked before it runs).
STRREP_MAX_BYTES = 16 * 1024 * 1024


def _render_strrep(node: ir.FunctionCall) -> str | None:
    """``strrep(value, multiplier[, delimiter])``; Kusto repeats at most 1024 times.

    duckdb-kql mapped it to ``repeat(value, n)`` without Kusto's cap and without
    the delimiter form. A result over `STRREP_MAX_BYTES` is refused at run time.
    """
    if len(node.args) not in (2, 3):
        return None
    value = _translate.render_kql_tostring(node.args[0])
    times = f"least(CAST({_translate.render_expr(node.args[1])} AS BIGINT), 1024)"
    delimiter = _translate.render_kql_tostring(node.args[2]) if len(node.args) == 3 else "''"
    return (
        f"list_transform([{{'v': {value}, 'n': {times}, 'd': {delimiter}}}], lambda _rp: "
        "CASE WHEN _rp.n < 1 THEN '' "
        f"WHEN (strlen(_rp.v) + strlen(_rp.d)) * _rp.n > {STRREP_MAX_BYTES} THEN "
        f"error('strrep result exceeds the engine limit of {STRREP_MAX_BYTES} bytes') "
        "ELSE repeat(_rp.v || _rp.d, _rp.n - 1) || _rp.v END)[1]"
    )


def _render_bag_keys(node: ir.FunctionCall) -> str | None:
    """``bag_keys(bag)``: the keys of a property bag as a dynamic array; null otherwise."""
    if len(node.args) != 1:
        return None
    value = f"TRY_CAST({_translate.render_expr(node.args[0])} AS JSON)"
    return f"(CASE WHEN json_type({value}) = 'OBJECT' THEN to_json(json_keys({value})) END)"


def _unixtime(scale: str) -> Callable[[ir.FunctionCall], str | None]:
    def render(node: ir.FunctionCall) -> str | None:
        if len(node.args) != 1:
            return None
        value = _translate.render_expr(node.args[0])
        return f"make_timestamp(TRY_CAST(round(TRY_CAST({value} AS DOUBLE) {scale}) AS BIGINT))"

    return render


def _render_ingestion_time(node: ir.FunctionCall) -> str | None:
    """``ingestion_time()``: null, as Kusto answers for a table without an ingestion-time policy."""
    return "CAST(NULL AS TIMESTAMP)" if not node.args else None


def _null_test(negated: bool) -> Callable[[ir.FunctionCall], str | None]:
    """``isnull(x)`` / ``isnotnull(x)`` where a JSON ``null`` inside a dynamic value is null.

    Kusto: ``isnull(parse_json('{"a":null}').a)`` is true (``gettype`` says
    ``null``); DuckDB keeps a JSON ``null`` as a non-NULL JSON value, so a plain
    ``IS NULL`` answered false. The ``typeof`` test is decided when the query is
    planned, so non-dynamic arguments keep the plain ``IS NULL``.
    """

    def render(node: ir.FunctionCall) -> str | None:
        if len(node.args) != 1:
            return None
        v = _translate.render_expr(node.args[0])
        test = (
            f"(CASE WHEN typeof({v}) = 'JSON' THEN coalesce(json_type({v}) = 'NULL', true) "
            f"ELSE {v} IS NULL END)"
        )
        return f"(NOT {test})" if negated else test

    return render


def alias(target: str) -> Callable[[ir.FunctionCall], str | None]:
    """Render a call as the same call to *target* (a documented synonym)."""

    def render(node: ir.FunctionCall) -> str | None:
        return _translate.render_expr(ir.FunctionCall(target, node.args))

    return render


#: Star operators that may test the joined text of all columns: term and substring tests,
#: for which the separator (ASCII record separator, not a letter or digit) ends every term.
JOINABLE_STAR_OPS = frozenset(
    f"{op}{cs}" for op in ("has", "hasprefix", "hassuffix", "contains") for cs in ("", "_cs")
)
#: An internal function (never parsed from a query): the joined text of its arguments.
ROW_TEXT = "__ctirealm_row_text"
#: Another: a timespan divided by a number (see `_timespan_by_number`).
TIMESPAN_DIV = "__ctirealm_timespan_div"


def _render_timespan_div(node: ir.FunctionCall) -> str:
    span, divisor = (_translate.render_expr(arg) for arg in node.args)
    return f"to_microseconds(CAST(round(epoch({span}) * 1000000 / ({divisor})) AS BIGINT))"


def _render_row_text(node: ir.FunctionCall) -> str:
    parts = ", ".join(_translate.render_expr(arg) for arg in node.args)
    return f"concat_ws(chr(30), {parts})"


def _json_array(node: ir.Expr) -> str:
    """*node* as a DuckDB ``JSON[]`` (null unless it is a dynamic array)."""
    value = f"TRY_CAST({_translate.render_expr(node)} AS JSON)"
    return f"(CASE WHEN json_type({value}) = 'ARRAY' THEN CAST({value} AS JSON[]) END)"


def _render_set_difference(node: ir.FunctionCall) -> str | None:
    """``set_difference(set1, set2, ...)``: the distinct values of *set1* in none of the others."""
    return _filter_first_set(node, " OR ", negate=True)


def _render_set_union(node: ir.FunctionCall) -> str | None:
    """``set_union(set1, set2, ...)``: the distinct values of all the arrays."""
    if len(node.args) < 2:
        return None
    parts = ", ".join(f"coalesce({_json_array(a)}, [])" for a in node.args)
    return f"to_json(list_distinct(flatten([{parts}])))"


def _render_set_intersect(node: ir.FunctionCall) -> str | None:
    """``set_intersect(set1, set2, ...)``: the distinct values present in every array."""
    return _filter_first_set(node, " AND ", negate=False)


def _filter_first_set(node: ir.FunctionCall, joiner: str, *, negate: bool) -> str | None:
    """The distinct values of the first array kept by their presence in the others: in any of
    them (*joiner* ``OR``) or all (``AND``), or, *negate*d, in none."""
    if len(node.args) < 2:
        return None
    first, *others = (_json_array(a) for a in node.args)
    present = joiner.join(f"list_contains(coalesce({o}, []), _sv)" for o in others)
    kept = f"NOT ({present})" if negate else present
    return f"to_json(list_filter(list_distinct({first}), lambda _sv: {kept}))"


#: What .NET's form encoding (Kusto's ``url_encode``) leaves as it is besides letters and
#: digits, and DuckDB's RFC 3986 ``url_encode`` escapes: ``!*()``; and the reverse, ``~``.
_FORM_SAFE = {"%21": "!", "%2A": "*", "%28": "(", "%29": ")"}


def _url_encoder(space: str) -> Callable[[ir.FunctionCall], str | None]:
    """``url_encode`` (a space is ``+``) and ``url_encode_component`` (``%20``).

    Kusto's output is .NET's: escapes in lower-case hex (``https%3a%2f%2f``), UTF-8
    bytes, ``-_.!*()`` kept. DuckDB's ``url_encode`` gives the same bytes in upper
    case and keeps ``~``; the differences are mapped here.
    """

    def render(node: ir.FunctionCall) -> str | None:
        if len(node.args) != 1:
            return None
        encoded = f"url_encode({_translate.render_kql_tostring(node.args[0])})"
        for escape, char in _FORM_SAFE.items():
            encoded = f"replace({encoded}, '{escape}', '{char}')"
        encoded = f"replace({encoded}, '~', '%7E')"
        if space != "%20":
            encoded = f"replace({encoded}, '%20', '{space}')"
        # Lower-case the two hex digits after every '%' (the rest is left as it is).
        return (
            f"array_to_string(list_transform(string_split({encoded}, '%'), lambda _ue, _ui: "
            "CASE WHEN _ui = 1 THEN _ue ELSE lower(_ue[1:2]) || _ue[3:] END), '%')"
        )

    return render


def _render_make_string(node: ir.FunctionCall) -> str | None:
    """``make_string(arg, ...)``: the characters of Unicode code points (numbers, or
    dynamic arrays of them), concatenated."""
    if not node.args:
        return None
    parts = []
    for arg in node.args:
        value = f"TRY_CAST({_translate.render_expr(arg)} AS JSON)"
        parts.append(
            f"(CASE WHEN json_type({value}) = 'ARRAY' THEN array_to_string(list_transform("
            f"CAST({value} AS BIGINT[]), lambda _ms: chr(CAST(_ms AS INTEGER))), '') "
            f"ELSE chr(CAST(CAST({value} AS BIGINT) AS INTEGER)) END)"
        )
    return f"concat({', '.join(parts)})"


def _render_codepoints_from_string(node: ir.FunctionCall) -> str | None:
    """``unicode_codepoints_from_string(s)``: the code points of *s*, as a dynamic array."""
    if len(node.args) != 1:
        return None
    text = _translate.render_kql_tostring(node.args[0])
    return (
        f"to_json(list_transform(list_filter(string_split({text}, ''), lambda _uc: _uc <> ''), "
        "lambda _uc: unicode(_uc)))"
    )


def _render_jaccard_index(node: ir.FunctionCall) -> str | None:
    """``jaccard_index(set1, set2)``: distinct values in both / distinct values in either."""
    if len(node.args) != 2:
        return None
    a, b = (_json_array(x) for x in node.args)
    return (
        f"list_transform([{{'a': list_distinct(coalesce({a}, [])), "
        f"'b': list_distinct(coalesce({b}, []))}}], lambda _j: "
        "CAST(len(list_intersect(_j.a, _j.b)) AS DOUBLE) "
        "/ len(list_distinct(list_concat(_j.a, _j.b))))[1]"
    )


def _render_series_stats_dynamic(node: ir.FunctionCall) -> str | None:
    """``series_stats_dynamic(series[, ignore_nonfinite])``: a bag of the series' minimum,
    maximum (each with its first 0-based position), average, sample standard deviation
    and variance, sum and length. A null, NaN or infinite element makes it null unless
    *ignore_nonfinite* is true, when such elements are left out of the statistics."""
    if len(node.args) not in (1, 2):
        return None
    series = f"TRY_CAST(TRY_CAST({_translate.render_expr(node.args[0])} AS JSON) AS DOUBLE[])"
    ignore = _translate.render_expr(node.args[1]) if len(node.args) == 2 else "false"
    finite = "list_filter(_ss.s, lambda _sv: _sv IS NOT NULL AND isfinite(_sv))"
    return (
        f"list_transform([{{'s': {series}, 'i': CAST({ignore} AS BOOLEAN)}}], lambda _ss: "
        f"list_transform([{{'s': _ss.s, 'f': {finite}}}], lambda _st: "
        "CASE WHEN _st.s IS NULL OR (NOT _ss.i AND len(_st.f) < len(_st.s)) THEN NULL "
        "ELSE json_object("
        "'min', list_min(_st.f), 'min_idx', list_position(_st.s, list_min(_st.f)) - 1, "
        "'max', list_max(_st.f), 'max_idx', list_position(_st.s, list_max(_st.f)) - 1, "
        "'avg', list_avg(_st.f), 'stdev', list_stddev_samp(_st.f), "
        "'variance', list_var_samp(_st.f), 'sum', list_sum(_st.f), 'len', len(_st.s)) END"
        ")[1])[1]"
    )


def _render_parse_path(node: ir.FunctionCall) -> str | None:
    """``parse_path(path)``: Scheme, RootPath, DirectoryPath, DirectoryName, Filename,
    Extension and AlternateDataStreamName, as Kusto's examples show them
    (``file://C:/temp/file.txt:some.exe``: scheme ``file``, root ``C:``, directory
    ``C:/temp``, stream ``some.exe``). Both slashes separate."""
    if len(node.args) != 1:
        return None
    path = _translate.render_kql_tostring(node.args[0])
    scheme = "'^([A-Za-z][A-Za-z0-9+.-]*)://'"
    return (
        f"list_transform([{{'s': regexp_extract({path}, {scheme}, 1), "
        f"'r': regexp_replace({path}, {scheme}, '')}}], lambda _pp: "
        "list_transform([{'s': _pp.s, 'r': _pp.r, 'd': regexp_extract(_pp.r, '^(.*)[\\\\/]', 1), "
        "'l': regexp_extract(_pp.r, '([^\\\\/]*)$', 1)}], lambda _pq: "
        "list_transform([{'q': _pq, 'f': split_part(_pq.l, ':', 1)}], lambda _pf: "
        "json_object('Scheme', _pf.q.s, 'RootPath', regexp_extract(_pf.q.r, '^([A-Za-z]:)', 1), "
        "'DirectoryPath', _pf.q.d, 'DirectoryName', regexp_extract(_pf.q.d, '([^\\\\/]*)$', 1), "
        "'Filename', _pf.f, 'Extension', regexp_extract(_pf.f, '\\.([^.]*)$', 1), "
        "'AlternateDataStreamName', CASE WHEN position(':' IN _pq.l) > 0 "
        "THEN substring(_pq.l, position(':' IN _pq.l) + 1) ELSE '' END))[1])[1])[1]"
    )


def _render_extract_all_named(node: ir.FunctionCall) -> str | None:
    """``extract_all(regex, dynamic(["name", ...]), text)``: groups picked by name.

    The regex is a constant (Kusto requires it), so each name is turned into its
    group's number at translation and duckdb-kql's numbered form does the rest.
    Declines (the original runs) unless the selection is a literal array of names.
    """
    if len(node.args) != 3:
        return None
    regex, selection, text = node.args
    if not (isinstance(selection, ir.Literal) and selection.kind == "dynamic"):
        return None
    try:
        names = json.loads(str(selection.value))
    except ValueError:
        return None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        return None
    if not (isinstance(regex, ir.Literal) and regex.kind == "string"):
        raise KqlUnsupportedError("extract_all", hint="the regex must be a constant")
    try:
        groups = re.compile(re.sub(r"\(\?<(?=[A-Za-z_])", "(?P<", str(regex.value))).groupindex
    except re.error:
        raise KqlUnsupportedError(
            "extract_all", hint="capture groups by name need a regex this engine can read"
        ) from None
    unknown = [n for n in names if n not in groups]
    if unknown:
        raise KqlUnsupportedError("extract_all", hint=f"no capture group named {unknown[0]!r}")
    numbers = ir.Literal(json.dumps([groups[n] for n in names]), "dynamic")
    return _translate.render_expr(ir.FunctionCall("extract_all", (regex, numbers, text)))


#: ``sum``/``sumif`` of timespans: Kusto sums them to a timespan, DuckDB has no ``sum`` of an
#: INTERVAL. `tree` renames the call where the engine binds its argument as a timespan.
SUM_TIMESPAN = "__ctirealm_sum_timespan"
SUMIF_TIMESPAN = "__ctirealm_sumif_timespan"
_SUM_MICROSECONDS = "to_microseconds(CAST(coalesce(sum(epoch_us({0})){where}, 0) AS BIGINT))"

#: ``evaluate pivot(...) : (OutputSchema)``: ``(value, undeclared)`` is *value*, or a run-time
#: error naming *undeclared* when it is not empty (a value of the data the schema leaves out:
#: Kusto raises an error when the output does not match the declared schema).
UNDECLARED_FAILS = "__ctirealm_undeclared_fails"
_UNDECLARED_MESSAGE = (
    "evaluate pivot: the data holds the value '{}', which the declared output schema does not "
    "name (Kusto raises an error when the output does not match the schema)"
)

#: ``count(expr)``: the rows where *expr* is not null (Kusto: "null values are ignored");
#: duckdb-kql's grammar reads the argument of ``count`` as the function's name.
COUNT_OF = "__ctirealm_count_of"

#: Internal functions ``make-series`` is lowered to (never parsed from a query): the bin
#: index of a row, the number of bins, and (aggregates) a group's series and axis.
SERIES_INDEX = "__ctirealm_series_index"
SERIES_LENGTH = "__ctirealm_series_length"
SERIES_VALUES = "__ctirealm_series_values"
SERIES_AXIS = "__ctirealm_series_axis"
#: Most bins one series may have: each group's series is one value built in one call,
#: which the memory limit does not reach into (Kusto caps series lengths too).
MAX_SERIES_BINS = 100_000


def _micros(node: ir.Expr) -> str:
    """A datetime or timespan as microseconds (a double)."""
    value = _translate.render_expr(node)
    if _translate._is_timespan_expr(node):
        return f"(epoch({value}) * 1000000)"
    return f"CAST(epoch_us({value}) AS DOUBLE)"


def _render_series_index(node: ir.FunctionCall) -> str:
    """``(axis, origin, step)``: the 0-based bin of *axis*, counted from *origin*."""
    axis, origin, step = node.args
    if _translate._is_timespan_expr(step):
        return f"CAST(floor(({_micros(axis)} - {_micros(origin)}) / {_micros(step)}) AS BIGINT)"
    a, o, st = (_translate.render_expr(x) for x in node.args)
    return f"CAST(floor(({a} - {o}) / ({st})) AS BIGINT)"


def _render_series_length(node: ir.FunctionCall) -> str:
    """``(origin, end, step, inclusive)``: how many bins from *origin* up to *end*
    (exclusive, ``from ... to``) or up to and including *end*'s bin (``in range``)."""
    origin, end, step, inclusive = node.args
    if _translate._is_timespan_expr(step):
        span = f"({_micros(end)} - {_micros(origin)}) / {_micros(step)}"
    else:
        o, e, st = (_translate.render_expr(x) for x in (origin, end, step))
        span = f"({e} - {o}) / ({st})"
    bins = f"floor({span}) + 1" if isinstance(inclusive, ir.Literal) and inclusive.value else f"ceil({span})"
    return (
        f"(CASE WHEN {bins} > {MAX_SERIES_BINS} THEN error('make-series: more than "
        f"{MAX_SERIES_BINS} bins; use a larger step or a shorter range') "
        f"ELSE CAST(greatest({bins}, 0) AS BIGINT) END)"
    )


#: A group's series: the value of each bin, *default* where the group had no rows.
_SERIES_VALUES = (
    "to_json(list_transform([map_from_entries(list({{'k': {1}, 'v': {0}}}))], lambda _sm: "
    "list_transform(range({2}), lambda _si: coalesce(_sm[_si], {3})))[1])"
)
#: The axis: each bin's start (datetimes as Kusto writes them in dynamic values).
_SERIES_AXIS_TIME = (
    "to_json(list_transform(range({2}), lambda _sa: "
    "strftime({0} + _sa * {1}, '%Y-%m-%dT%H:%M:%S.%f') || '0Z'))"
)
_SERIES_AXIS_NUMBER = "to_json(list_transform(range({2}), lambda _sa: {0} + _sa * {1}))"


def _render_series_stats(node: ir.FunctionCall) -> str | None:
    """Reached only where `tree` did not expand it into columns (inside an expression)."""
    raise KqlUnsupportedError(
        "function:series_stats",
        hint="it makes several columns: use it alone and unnamed in extend or project, or "
        "series_stats_dynamic(x) inside an expression",
    )


#: Kusto's series analytics run in `ctirealm.engine.series`, a scalar function the engine
#: registers on its connection: (kind, series, arguments) as JSON text -> JSON text.
#: Multi-column functions give a bag of their outputs (`SERIES_BAG`), of which `tree`
#: makes columns; used alone as a value (`x = series_fit_line(y)`), the first output.
SERIES_BAG = "__ctirealm_series_bag"
#: Kusto function -> arities (the series included).
SERIES_ARITIES: dict[str, tuple[int, ...]] = {
    "series_fit_line": (1,),
    "series_fit_line_dynamic": (1,),
    "series_fit_2lines": (1,),
    "series_fit_2lines_dynamic": (1,),
    "series_decompose": (1, 2, 3, 4, 5),
    "series_decompose_anomalies": tuple(range(1, 8)),
    "series_decompose_forecast": (2, 3, 4, 5),
    "series_outliers": (1, 2, 3, 4, 5),
    "series_fir": (2, 3, 4),
}


#: True while `LocalEngine` translates: its connection has the series function; other
#: translators (``ctirealm serve``, which runs duckdb-kql's own server) refuse the calls.
ENGINE_FUNCTIONS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "ctirealm_engine_functions", default=False
)


def _series_call(kind: str, args: tuple[ir.Expr, ...]) -> str:
    from ctirealm.engine.series import FUNCTION_NAME, MAX_SERIES_LENGTH

    _require_engine(kind)

    series = _translate.render_expr(args[0])
    rest = ", ".join(_translate.render_expr(a) for a in args[1:])
    arguments = f"CAST(json_array({rest}) AS VARCHAR)" if rest else "'[]'"
    # A non-array (a string, a number) reaches the function as its JSON text and is refused
    # there; the length bound is checked before Python sees the value.
    text = f"CAST(to_json({series}) AS VARCHAR)"
    return (
        f"CAST({FUNCTION_NAME}('{kind}', CASE WHEN json_array_length({text}) > "
        f"{MAX_SERIES_LENGTH} THEN error('{kind}: series longer than the engine limit of "
        f"{MAX_SERIES_LENGTH} elements') ELSE {text} END, {arguments}) AS JSON)"
    )


def _series_function(kind: str) -> Callable[[ir.FunctionCall], str | None]:
    from ctirealm.engine.series import OUTPUTS

    def render(node: ir.FunctionCall) -> str | None:
        if not node.args or len(node.args) not in SERIES_ARITIES[kind]:
            return None
        sql = _series_call(kind, node.args)
        if kind not in OUTPUTS:
            return sql
        first, kusto_type = OUTPUTS[kind][0]
        value = f"json_extract({sql}, '$.{first}')"
        return f"CAST({value} AS DOUBLE)" if kusto_type == "real" else value

    return render


#: `(a, b, c) = f(x)`: the call of a function returning several columns, with every name
#: (duckdb-kql's lowering keeps only the first); `tree` expands it in extend and project.
MULTI_NAMES = "__ctirealm_names"


def _render_multi_names(node: ir.FunctionCall) -> str:
    """Reached only where `tree` did not expand the names (outside extend and project)."""
    call = node.args[0]
    raise KqlUnsupportedError(
        f"function:{getattr(call, 'name', 'series')}",
        hint="a list of names `(a, b) = f(x)` is taken in extend and project only",
    )


def _render_bag_merge(node: ir.FunctionCall) -> str | None:
    """``bag_merge(bag1, bag2, ...)``: the keys of every bag; a key in several takes the
    value of the leftmost bag (a shallow merge: nested bags are not merged). A value that
    is not a bag adds nothing; no bag at all gives null."""
    if not 2 <= len(node.args) <= 64:
        return None
    maps = ", ".join(
        f"TRY_CAST(TRY_CAST({_translate.render_expr(a)} AS JSON) AS MAP(VARCHAR, JSON))"
        for a in reversed(node.args)
    )
    return f"to_json(map_concat({maps}))"


#: ``prev``, ``next``, ``row_number``, ``row_cumsum`` over serialized rows: `tree` lowers
#: them to ``(function, argument count, key count, arguments..., (key, ascending,
#: nulls first)...)`` with the sort keys that serialized the rows.
WINDOW = "__ctirealm_window"


def _window_literal(node: ir.Expr) -> Any:
    """The value of a literal argument `tree` wrote (the window's name, counts, sort flags)."""
    if not isinstance(node, ir.Literal):  # pragma: no cover - only `tree` builds these calls
        raise TypeError(f"expected a literal, got {type(node).__name__}")
    return node.value


def _render_undeclared_fails(node: ir.FunctionCall) -> str:
    value, undeclared = (_translate.render_expr(a) for a in node.args)
    before, after = (_translate.quote_string(part) for part in _UNDECLARED_MESSAGE.split("{}"))
    message = f"{before} || {undeclared} || {after}"
    return f"CASE WHEN coalesce({undeclared}, '') = '' THEN {value} ELSE error({message}) END"


def _render_window(node: ir.FunctionCall) -> str:
    fn, n_args, n_keys = (_window_literal(a) for a in node.args[:3])
    args = node.args[3 : 3 + n_args]
    flat = node.args[3 + n_args :]
    keys = tuple(
        ir.SortKey(flat[3 * i], bool(_window_literal(flat[3 * i + 1])), _window_literal(flat[3 * i + 2]))
        for i in range(n_keys)
    )
    over = f"OVER (ORDER BY {_translate.render_sort_keys(keys)})" if keys else "OVER ()"
    rendered = [_translate.render_expr(a) for a in args]
    if fn in ("prev", "next"):
        offset = rendered[1] if len(rendered) > 1 else "1"
        default = f", {rendered[2]}" if len(rendered) > 2 else ""
        sql = "lag" if fn == "prev" else "lead"
        return f"{sql}({rendered[0]}, CAST({offset} AS BIGINT){default}) {over}"
    if fn == "row_number":
        start = rendered[0] if rendered else "1"
        return f"(row_number() {over} + CAST({start} AS BIGINT) - 1)"
    if fn == "row_cumsum":
        return (
            f"sum({rendered[0]}) {over[:-1]} ROWS UNBOUNDED PRECEDING)"
            if keys
            else f"sum({rendered[0]}) OVER (ROWS UNBOUNDED PRECEDING)"
        )
    raise KqlUnsupportedError(f"function:{fn}")


#: ``typeof(T)`` written as an argument (``extract_json(path, text, typeof(long))``).
TYPE_LITERAL = "__ctirealm_typeof"
#: Kusto scalar type -> the conversion function giving a value of that type.
CONVERSIONS = {
    "string": "tostring",
    "long": "tolong",
    "int": "toint",
    "real": "todouble",
    "double": "todouble",
    "decimal": "todouble",
    "bool": "tobool",
    "boolean": "tobool",
    "datetime": "todatetime",
    "date": "todatetime",
    "timespan": "totimespan",
    "time": "totimespan",
    "dynamic": "todynamic",
    "guid": "tostring",
}


def _render_type_literal(node: ir.FunctionCall) -> str:
    """Reached only where no function took the type as its argument."""
    raise KqlUnsupportedError(
        "expression:typeof",
        hint="Kusto takes a type here; the embedded engine takes typeof(T) only as the "
        "last argument of extract_json",
    )


def _type_argument(node: ir.Expr, function: str) -> str:
    if (
        isinstance(node, ir.FunctionCall)
        and node.name == TYPE_LITERAL
        and isinstance(node.args[0], ir.Literal)
        and node.args[0].value in CONVERSIONS
    ):
        return str(node.args[0].value)
    raise KqlUnsupportedError(f"function:{function}", hint="its last argument must be typeof(T)")


def _json_path(text: str) -> str | None:
    """A Kusto JSONPath (``$.a.b``, ``$['a b']``, ``$.a[0]``) as DuckDB writes it."""
    if not text.startswith("$"):
        return None
    out, rest = "$", text[1:]
    step = re.compile(
        r"\.(?P<name>[A-Za-z_][\w]*)|\[\s*(?P<index>-?\d+)\s*\]"
        r"|\[\s*(?P<q>['\"])(?P<quoted>(?:(?!(?P=q)).)*)(?P=q)\s*\]"
    )
    while rest:
        match = step.match(rest)
        if match is None:
            return None
        if match.group("name") is not None:
            out += "." + match.group("name")
        elif match.group("index") is not None:
            out += f"[{match.group('index')}]"
        else:
            quoted = match.group("quoted")
            if '"' in quoted:
                return None
            out += f'."{quoted}"'
        rest = rest[match.end() :]
    return out


def _render_extract_json(node: ir.FunctionCall) -> str | None:
    """``extract_json(path, text[, typeof(T)])``: the element *path* selects in the JSON
    *text*, as a string (an object or array as its JSON text), or converted to *T*; null
    when the path selects nothing or the text is not JSON."""
    if len(node.args) not in (2, 3):
        return None
    path = node.args[0]
    if not (isinstance(path, ir.Literal) and isinstance(path.value, str)):
        raise KqlUnsupportedError("function:extract_json", hint="a path that is not a literal")
    duck_path = _json_path(path.value)
    if duck_path is None:
        raise KqlUnsupportedError(
            "function:extract_json", hint=f"the path {path.value!r} (filters and wildcards)"
        )
    text = _translate.render_kql_tostring(node.args[1])
    escaped = duck_path.replace("'", "''")
    value = f"json_extract_string(TRY_CAST({text} AS JSON), '{escaped}')"
    if len(node.args) == 2:
        return value
    kind = _type_argument(node.args[2], "extract_json")
    if kind == "dynamic":
        return f"json_extract(TRY_CAST({text} AS JSON), '{escaped}')"
    if kind in ("string", "guid"):
        return value
    raw = ir.FunctionCall(RAW_SQL, (ir.Literal(value, "string"),))
    converted = ir.FunctionCall(CONVERSIONS[kind], (raw,))
    return _translate.render_expr(converted)


def _render_extract_typed(node: ir.FunctionCall) -> str | None:
    """``extract(regex, group, text, typeof(T))``: the match converted to *T* (declines every
    other form, which duckdb-kql renders)."""
    if len(node.args) != 4 or not (
        isinstance(node.args[3], ir.FunctionCall) and node.args[3].name == TYPE_LITERAL
    ):
        return None
    kind = _type_argument(node.args[3], "extract")
    value = _translate.render_expr(ir.FunctionCall("extract", node.args[:3]))
    if kind in ("string", "guid"):
        return value
    # Kusto: "if the conversion fails, null"; an empty match converts to null as well.
    raw = ir.FunctionCall(RAW_SQL, (ir.Literal(f"NULLIF({value}, '')", "string"),))
    return _translate.render_expr(ir.FunctionCall(CONVERSIONS[kind], (raw,)))


#: A piece of SQL already rendered, passed through (internal; never parsed from a query).
RAW_SQL = "__ctirealm_raw_sql"


def _render_raw_sql(node: ir.FunctionCall) -> str:
    literal = node.args[0]
    assert isinstance(literal, ir.Literal)
    return f"({literal.value})"


def _timezone_shift(to_utc: bool) -> Callable[[ir.FunctionCall], str | None]:
    """``datetime_local_to_utc(t, tz)`` / ``datetime_utc_to_local(t, tz)``: *t* read as a
    wall-clock time in the IANA zone *tz* (DuckDB's built-in ICU time zones, daylight saving
    included), or shown as one. An unknown zone is a run-time error."""

    def render(node: ir.FunctionCall) -> str | None:
        if len(node.args) != 2:
            return None
        value, zone = (_translate.render_expr(a) for a in node.args)
        zone_text = f"CAST({zone} AS VARCHAR)"
        if to_utc:
            return f"(timezone({zone_text}, CAST({value} AS TIMESTAMP)) AT TIME ZONE 'UTC')"
        return f"timezone({zone_text}, CAST({value} AS TIMESTAMP) AT TIME ZONE 'UTC')"

    return render


def _require_engine(name: str) -> None:
    if not ENGINE_FUNCTIONS.get():
        raise KqlUnsupportedError(
            f"function:{name}",
            hint="Kusto has it; the embedded engine runs it through "
            "LocalEngine only (its connection carries the function)",
        )


def _render_parse_xml(node: ir.FunctionCall) -> str | None:
    """``parse_xml(xml)``: `ctirealm.engine.xmljson`, which the engine registers."""
    from ctirealm.engine.xmljson import FUNCTION_NAME

    if len(node.args) != 1:
        return None
    _require_engine("parse_xml")
    return f"CAST({FUNCTION_NAME}({_translate.render_kql_tostring(node.args[0])}) AS JSON)"


def _literal_value(node: ir.Expr) -> tuple[bool, object]:
    """(True, value) for a string or ``dynamic`` literal, else (False, None)."""
    if isinstance(node, ir.Literal) and node.value is not None:
        if node.kind == "string":
            return True, str(node.value)
        if node.kind == "dynamic":
            try:
                return True, json.loads(str(node.value))
            except ValueError:
                return False, None
    return False, None


def _render_parse_user_agent(node: ir.FunctionCall) -> str | None:
    """``parse_user_agent(ua, look_for)``: `ctirealm.engine.useragent`, which the engine
    registers; a literal *look_for* is checked here, so a bad one fails before running."""
    from ctirealm.engine.useragent import FUNCTION_NAME, UserAgentError, targets

    if len(node.args) != 2:
        return None
    _require_engine("parse_user_agent")
    ua, look_for = node.args
    known, value = _literal_value(look_for)
    if known:
        try:
            targets(value)
        except UserAgentError as exc:
            raise KqlSchemaError("parse_user_agent", hint=str(exc)) from None
    return (
        f"CAST({FUNCTION_NAME}({_translate.render_kql_tostring(ua)}, "
        f"{_translate.render_kql_tostring(look_for)}) AS JSON)"
    )


def _render_geo_info(node: ir.FunctionCall) -> str | None:
    """``geo_info_from_ip_address(ip)``: `ctirealm.engine.geoip`, which the engine registers
    when the geolocation database is installed."""
    from ctirealm.engine import geoip

    if len(node.args) != 1:
        return None
    _require_engine("geo_info_from_ip_address")
    if not geoip.available():
        raise KqlUnsupportedError(
            "function:geo_info_from_ip_address",
            hint="Kusto has it; the embedded engine "
            "runs it with the DB-IP City Lite database of the geo extra (pip install "
            "'ctirealm[geo]'), which is not installed",
        )
    return f"CAST({geoip.FUNCTION_NAME}({_translate.render_kql_tostring(node.args[0])}) AS JSON)"


def _render_parse_command_line(node: ir.FunctionCall) -> str | None:
    """``parse_command_line(text, "windows")``: `ctirealm.engine.cmdline`, registered by the
    engine; a literal parser type is checked here."""
    from ctirealm.engine.cmdline import FUNCTION_NAME, PARSER_TYPES

    if len(node.args) != 2:
        return None
    _require_engine("parse_command_line")
    text, parser = node.args
    known, value = _literal_value(parser)
    if known and not (isinstance(value, str) and value.strip().lower() in PARSER_TYPES):
        raise KqlSchemaError(
            "parse_command_line", hint=(f'the parser type must be "windows", got {json.dumps(value)}')
        )
    return (
        f"CAST({FUNCTION_NAME}({_translate.render_kql_tostring(text)}, "
        f"{_translate.render_kql_tostring(parser)}) AS JSON)"
    )


def _render_series_bag(node: ir.FunctionCall) -> str:
    """``(kind literal, series, arguments...)``: every output of *kind*, as one bag."""
    kind = node.args[0]
    if not (isinstance(kind, ir.Literal) and kind.value in SERIES_ARITIES):
        raise KqlUnsupportedError("function:series")
    return _series_call(str(kind.value), node.args[1:])


def _render_bin_at(node: ir.FunctionCall) -> str | None:
    """``bin_at(value, size, fixed_point)``: *value* rounded down to a multiple of *size*
    counted from *fixed_point* (datetimes by a timespan, or numbers)."""
    if len(node.args) != 3:
        return None
    value, size, fixed = node.args
    v, st, f = (_translate.render_expr(a) for a in node.args)
    if _translate._is_timespan_expr(size):
        if _translate._is_timespan_expr(value) or _translate._is_timespan_expr(fixed):
            raise KqlUnsupportedError("function:bin_at", hint="of a timespan value")
        v, f, st = f"epoch_us({v})", f"epoch_us({f})", f"NULLIF(epoch_us({st}), 0)"
        return f"make_timestamp({f} + CAST(floor(({v} - {f}) / {st}) AS BIGINT) * {st})"
    return f"({f} + floor(({v} - {f}) / NULLIF({st}, 0)) * {st})"


def _render_translate(node: ir.FunctionCall) -> str | None:
    """``translate(search, replacement, text)``: each character of *search* in *text*
    replaced by the one at its position in *replacement* (the last one when *replacement*
    is shorter; removed when it is empty). DuckDB's ``translate`` removes the characters
    past the end of its replacement instead, so a literal replacement is padded."""
    if len(node.args) != 3:
        return None
    search, replacement, text = node.args
    wanted, given = _string_literal(search), _string_literal(replacement)
    if wanted is None or given is None:
        raise KqlUnsupportedError(
            "function:translate", hint="with lists of characters other than string literals"
        )
    if given:
        given = given + given[-1] * max(0, len(wanted) - len(given))
    return (
        f"translate(CAST({_translate.render_expr(text)} AS VARCHAR), "
        f"{_translate.quote_string(wanted)}, {_translate.quote_string(given)})"
    )


def _string_literal(node: ir.Expr) -> str | None:
    if isinstance(node, ir.Literal) and node.kind == "string" and node.value is not None:
        return str(node.value)
    return None


#: format_timespan's specifiers: letter -> (longest run, SQL of the part from microseconds
#: ``_us`` (not negative), zero-padded to the run's length).
_TIMESPAN_PARTS = {
    "d": (8, "_us // 86400000000"),
    "h": (2, "_us // 3600000000 % 24"),
    "H": (2, "_us // 3600000000 % 24"),
    "m": (2, "_us // 60000000 % 60"),
    "s": (2, "_us // 1000000 % 60"),
}
_TIMESPAN_FORMAT = re.compile(r"d+|h+|H+|m+|s+|f+|F+|\\.|'[^']*'|\"[^\"]*\"|[^A-Za-z]")


def _render_format_timespan(node: ir.FunctionCall) -> str | None:
    """``format_timespan(t, "format")`` with a literal format: ``d``-``dddddddd`` days,
    ``h``/``hh`` (``H``) hours, ``m``/``mm`` minutes, ``s``/``ss`` seconds, ``f``-``fffffff``
    fraction digits, ``F``-``FFFFFFF`` the same without trailing zeros; other characters,
    quoted text and ``\\x`` as written. A negative timespan starts with ``-``."""
    if len(node.args) != 2:
        return None
    form = _string_literal(node.args[1])
    refused = KqlUnsupportedError(
        "function:format_timespan",
        hint="with a format other than a literal of d, h, H, m, s, f, F and separators",
    )
    if form is None:
        raise refused
    pieces: list[str] = []
    position = 0
    for token in _TIMESPAN_FORMAT.finditer(form):
        if token.start() != position:
            raise refused
        position = token.end()
        text = token.group(0)
        letter = text[0]
        if letter in _TIMESPAN_PARTS:
            longest, part = _TIMESPAN_PARTS[letter]
            if len(text) > longest:
                raise refused
            pieces.append(f"lpad(CAST({part} AS VARCHAR), {len(text)}, '0')")
        elif letter in "fF":
            if len(text) > 7:
                raise refused
            digits = f"substr(lpad(CAST(_us % 1000000 AS VARCHAR), 6, '0') || '0', 1, {len(text)})"
            pieces.append(digits if letter == "f" else f"rtrim({digits}, '0')")
        elif letter == "\\":
            pieces.append(_translate.quote_string(text[1:]))
        elif letter in "'\"":
            pieces.append(_translate.quote_string(text[1:-1]))
        else:
            pieces.append(_translate.quote_string(text))
    if position != len(form) or not pieces:
        raise refused
    value = _translate.render_expr(node.args[0])
    body = " || ".join(pieces)
    return (
        f"list_transform([epoch_us(CAST({value} AS INTERVAL))], lambda _t: "
        f"CASE WHEN _t < 0 THEN '-' ELSE '' END || "
        f"list_transform([abs(_t)], lambda _us: {body})[1])[1]"
    )


#: Internal functions ``top-nested`` is lowered to: an aggregate over a group of rows, kept
#: on every row of the group (a window), and the rank of a group within its parent group.
NESTED_AGGREGATE = "__ctirealm_nested_aggregate"
NESTED_RANK = "__ctirealm_nested_rank"
#: DuckDB aggregates Kusto's render to that can take a window (``OVER``) as they are.
_CALL_HEAD = re.compile(r"\A(?:count|sum|avg|min|max|any_value|stddev_samp|stddev_pop|var_samp|var_pop)\(")


def _top_level(sql: str) -> list[int]:
    """Where *sql*'s parenthesis depth returns to 0, quotes skipped (the end of each group)."""
    ends, depth, quote = [], 0, ""
    for i, ch in enumerate(sql):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                ends.append(i)
    return ends


def _windowed(sql: str, window: str) -> str | None:
    """An aggregate as rendered, ``f(...)`` or ``f(...) FILTER (WHERE ...)``, possibly in
    ``coalesce(..., default)``, with *window* after the aggregate; None for other shapes."""
    if sql.startswith("coalesce(") and sql.endswith(")"):
        inner = sql[len("coalesce(") : -1]
        depth, cut = 0, -1
        for i, ch in enumerate(inner):  # the default is a literal after the last comma
            depth += ch == "("
            depth -= ch == ")"
            if ch == "," and depth == 0:
                cut = i
        windowed = _windowed(inner[:cut], window) if cut > 0 else None
        return None if windowed is None else f"coalesce({windowed}{inner[cut:]})"
    if not _CALL_HEAD.match(sql):
        return None
    ends = _top_level(sql)
    if not ends or ends[-1] != len(sql) - 1:
        return None
    rest = sql[ends[0] + 1 :]
    if rest and not (rest.startswith(" FILTER (WHERE ") and len(ends) == 2):
        return None
    return f"{sql} {window}"


def _partition(columns: tuple[ir.Expr, ...]) -> str:
    keys = ", ".join(_translate.render_expr(c) for c in columns)
    return f"PARTITION BY {keys}" if keys else ""


def _render_nested_aggregate(node: ir.FunctionCall) -> str:
    """``(aggregate, key, ...)``: the aggregate over the rows sharing the keys."""
    aggregate = node.args[0]
    assert isinstance(aggregate, ir.FunctionCall)
    sql = _windowed(_translate._render_aggregate_call(aggregate), f"OVER ({_partition(node.args[1:])})")
    if sql is None:
        raise KqlUnsupportedError(
            "top-nested",
            hint=f"Kusto has top-nested with any aggregate; the embedded engine does not "
            f"implement it with {aggregate.name}()",
        )
    return f"({sql})"


def _render_nested_rank(node: ir.FunctionCall) -> str:
    """``(value, ascending, key, parent key, ...)``: 1 for the group with the highest
    *value* (lowest, *ascending*) among those sharing the parent keys, ties broken by key."""
    value, ascending, key, *parents = node.args
    direction = "ASC" if isinstance(ascending, ir.Literal) and ascending.value else "DESC"
    return (
        f"dense_rank() OVER ({_partition(tuple(parents))} ORDER BY "
        f"{_translate.render_expr(value)} {direction} NULLS LAST, "
        f"{_translate.render_expr(key)} NULLS LAST)"
    )


def _render_column_ifexists(node: ir.FunctionCall) -> str | None:
    """Reached only where the input's columns were not known (`tree` resolves the call)."""
    raise KqlUnsupportedError(
        "function:column_ifexists",
        hint="the input's columns are not known at this point of the query",
    )


def _render_abs_difference(node: ir.FunctionCall) -> str | None:
    """``abs(a - b)`` and ``abs`` of a timespan: a difference of two datetimes is a timespan,
    whose ``abs`` is a timespan in Kusto; duckdb-kql's template unifies the argument with a
    BIGINT (so an int literal answers a long), which an interval cannot be. Multiplying by a
    BIGINT 1 widens ints the same way and leaves intervals and reals as they are. Other
    arguments decline to the template, which is about three times faster on numbers."""
    if len(node.args) != 1:
        return None
    arg = node.args[0]
    if not ((isinstance(arg, ir.BinaryOp) and arg.op == "-") or _translate._is_timespan_expr(arg)):
        return None
    v = f"(({_translate.render_expr(arg)}) * CAST(1 AS BIGINT))"
    return f"(CASE WHEN {v} < -{v} THEN -{v} ELSE {v} END)"


#: New special forms: Kusto name -> renderer.
NEW_FORMS: dict[str, Callable[[ir.FunctionCall], str | None]] = {
    "ipv4_is_in_range": _render_ipv4_is_in_range,
    "ipv4_is_match": _render_ipv4_is_match,
    "ipv4_is_private": _render_ipv4_is_private,
    "ipv4_is_in_any_range": _render_ipv4_is_in_any_range,
    "bag_keys": _render_bag_keys,
    "unixtime_seconds_todatetime": _unixtime("* 1000000"),
    "unixtime_milliseconds_todatetime": _unixtime("* 1000"),
    "unixtime_microseconds_todatetime": _unixtime(""),
    "unixtime_nanoseconds_todatetime": _unixtime("/ 1000"),
    "ingestion_time": _render_ingestion_time,
    "isnull": _null_test(negated=False),
    "isnotnull": _null_test(negated=True),
    "notnull": _null_test(negated=True),
    # Documented synonyms.
    "pack_dictionary": alias("bag_pack"),
    "notempty": alias("isnotempty"),
    "todecimal": alias("todouble"),  # the store keeps decimal columns as doubles
    "column_ifexists": _render_column_ifexists,
    "set_difference": _render_set_difference,
    "set_union": _render_set_union,
    "set_intersect": _render_set_intersect,
    "url_encode": _url_encoder("+"),
    "url_encode_component": _url_encoder("%20"),
    "make_string": _render_make_string,
    "unicode_codepoints_to_string": _render_make_string,
    "unicode_codepoints_from_string": _render_codepoints_from_string,
    "jaccard_index": _render_jaccard_index,
    "series_stats_dynamic": _render_series_stats_dynamic,
    "series_stats": _render_series_stats,
    "parse_path": _render_parse_path,
    ROW_TEXT: _render_row_text,
    SERIES_INDEX: _render_series_index,
    SERIES_LENGTH: _render_series_length,
    TIMESPAN_DIV: _render_timespan_div,
    "bin_at": _render_bin_at,
    "translate": _render_translate,
    "format_timespan": _render_format_timespan,
    NESTED_AGGREGATE: _render_nested_aggregate,
    NESTED_RANK: _render_nested_rank,
    SERIES_BAG: _render_series_bag,
    MULTI_NAMES: _render_multi_names,
    "parse_xml": _render_parse_xml,
    "parse_user_agent": _render_parse_user_agent,
    "geo_info_from_ip_address": _render_geo_info,
    "parse_command_line": _render_parse_command_line,
    "bag_merge": _render_bag_merge,
    WINDOW: _render_window,
    UNDECLARED_FAILS: _render_undeclared_fails,
    TYPE_LITERAL: _render_type_literal,
    RAW_SQL: _render_raw_sql,
    "extract_json": _render_extract_json,
    "extract": _render_extract_typed,
    "datetime_local_to_utc": _timezone_shift(to_utc=True),
    "datetime_utc_to_local": _timezone_shift(to_utc=False),
    **{name: _series_function(name) for name in SERIES_ARITIES},
}

#: Existing special forms replaced by ones taking more arguments (they decline
#: the forms duckdb-kql already handles, which then take the original path).
WIDENED_FORMS: dict[str, Callable[[ir.FunctionCall], str | None]] = {
    "abs": _render_abs_difference,
    "case": _render_mixed_conditional,
    "iff": _render_mixed_conditional,
    "iif": _render_mixed_conditional,
    "split": _render_split,
    "indexof": _render_indexof,
    "bin": _render_bin_timespan,
    "floor": _render_bin_timespan,
    "strrep": _render_strrep,
    "extract_all": _render_extract_all_named,
}

#: Scalar rows: arities for the new special forms (so arity errors name them).
NEW_SCALARS = [
    _functions.FunctionSpec("ipv4_is_in_range", "template", "", (2,), note="special"),
    _functions.FunctionSpec("ipv4_is_match", "template", "", (2, 3), note="special"),
    _functions.FunctionSpec("ipv4_is_private", "template", "", (1,), note="special"),
    _functions.FunctionSpec("ipv4_is_in_any_range", "template", "", tuple(range(2, 65)), note="special"),
    _functions.FunctionSpec("bag_keys", "template", "", (1,), note="special"),
    _functions.FunctionSpec("ingestion_time", "template", "", (0,), note="special"),
    _functions.FunctionSpec("column_ifexists", "template", "", (2,), note="special"),
    # duckdb-kql's own special forms without a scalar row: `summarize` takes a call it
    # finds in no table for an unknown aggregate, so `strcat_array(make_set(x), ",")`
    # (a scalar over an aggregate) was refused.
    _functions.FunctionSpec("strcat_array", "template", "", (2,), note="special"),
    _functions.FunctionSpec("case", "template", "", (), note="special: variadic"),
    _functions.FunctionSpec("datetime_add", "template", "", (3,), note="special"),
    _functions.FunctionSpec("datetime_diff", "template", "", (3,), note="special"),
    _functions.FunctionSpec("datetime_part", "template", "", (2,), note="special"),
    # Kusto takes 2..64 arrays (1..64 arguments for make_string); an arity outside is
    # refused by the table rather than rendered (the special form declines it).
    *(
        _functions.FunctionSpec(name, "template", "", tuple(range(2, 65)), note="special")
        for name in ("set_difference", "set_union", "set_intersect")
    ),
    _functions.FunctionSpec("make_string", "template", "", tuple(range(1, 65)), note="special"),
    _functions.FunctionSpec("url_encode", "template", "", (1,), note="special"),
    _functions.FunctionSpec("url_encode_component", "template", "", (1,), note="special"),
    _functions.FunctionSpec("parse_path", "template", "", (1,), note="special"),
    _functions.FunctionSpec(
        "unicode_codepoints_to_string", "template", "", tuple(range(1, 65)), note="special"
    ),
    _functions.FunctionSpec("unicode_codepoints_from_string", "template", "", (1,), note="special"),
    _functions.FunctionSpec("jaccard_index", "template", "", (2,), note="special"),
    _functions.FunctionSpec("bin_at", "template", "", (3,), note="special"),
    _functions.FunctionSpec("translate", "template", "", (3,), note="special"),
    _functions.FunctionSpec("format_timespan", "template", "", (2,), note="special"),
    _functions.FunctionSpec("series_stats_dynamic", "template", "", (1, 2), note="special"),
    *(
        _functions.FunctionSpec(name, "template", "", arities, note="special")
        for name, arities in SERIES_ARITIES.items()
    ),
    _functions.FunctionSpec("parse_xml", "template", "", (1,), note="special"),
    _functions.FunctionSpec("parse_user_agent", "template", "", (2,), note="special"),
    _functions.FunctionSpec("geo_info_from_ip_address", "template", "", (1,), note="special"),
    _functions.FunctionSpec("parse_command_line", "template", "", (2,), note="special"),
    _functions.FunctionSpec("bag_merge", "template", "", tuple(range(2, 65)), note="special"),
    _functions.FunctionSpec("extract_json", "template", "", (2, 3), note="special"),
    _functions.FunctionSpec("datetime_local_to_utc", "template", "", (2,), note="special"),
    _functions.FunctionSpec("datetime_utc_to_local", "template", "", (2,), note="special"),
    _functions.FunctionSpec("prev", "template", "", (1, 2, 3), note="special: serialized rows"),
    _functions.FunctionSpec("next", "template", "", (1, 2, 3), note="special: serialized rows"),
    _functions.FunctionSpec("row_number", "template", "", (0, 1, 2), note="special: serialized rows"),
    _functions.FunctionSpec("row_cumsum", "template", "", (1, 2), note="special: serialized rows"),
    # series_stats: expanded into one column per statistic by `tree` (never rendered).
    _functions.FunctionSpec("series_stats", "template", "", (1, 2), note="special"),
    _functions.FunctionSpec(
        "string_size",
        "native",
        "strlen(CAST({0} AS VARCHAR))",
        (1,),
        note="UTF-8 bytes; DuckDB's strlen counts bytes",
    ),
    _functions.FunctionSpec("new_guid", "template", "CAST(uuid() AS VARCHAR)", (0,)),
    *(
        _functions.FunctionSpec(f"unixtime_{unit}_todatetime", "template", "", (1,), note="special")
        for unit in ("seconds", "milliseconds", "microseconds", "nanoseconds")
    ),
]


def _conditional_collect(base: str) -> str:
    template = _functions.AGGREGATE_FUNCTIONS[base].template
    plain = "FILTER (WHERE {0} IS NOT NULL)"
    if plain not in template:  # pragma: no cover - guards against a duckdb-kql change
        raise RuntimeError(f"duckdb-kql's {base} template changed; revisit rewrite/functions.py")
    return template.replace(plain, "FILTER (WHERE {0} IS NOT NULL AND ({1}))")


#: ``make_bag`` as a DuckDB aggregate: the group's objects folded with ``json_merge_patch``.
_MAKE_BAG = (
    "coalesce(list_reduce(list(TRY_CAST({{0}} AS JSON)) FILTER (WHERE "
    "json_type(TRY_CAST({{0}} AS JSON)) = 'OBJECT'{where}), "
    "lambda _mb, _mn: json_merge_patch(_mb, _mn)), CAST('{{{{}}}}' AS JSON))"
)


def new_aggregates() -> list[_functions.AggregateSpec]:
    return [
        # make_set_if / make_list_if: make_set / make_list over the rows where
        # the predicate holds (nulls skipped, arrays unioned, as duckdb-kql's
        # make_set does). The optional max size is not enforced, as for make_set.
        _functions.AggregateSpec("make_set_if", _conditional_collect("make_set"), (2, 3), name_prefix="set"),
        _functions.AggregateSpec(
            "make_list_if", _conditional_collect("make_list"), (2, 3), name_prefix="list"
        ),
        # make_bag / make_bag_if: the union of the property bags of the group (a value
        # that is not a bag is skipped). A key in several bags takes one of their
        # values (Kusto: "an arbitrary value"); nested bags are merged as well.
        _functions.AggregateSpec("make_bag", _MAKE_BAG.format(where=""), (1, 2), name_prefix="bag"),
        _functions.AggregateSpec(
            "make_bag_if", _MAKE_BAG.format(where=" AND ({1})"), (2, 3), name_prefix="bag"
        ),
        _functions.AggregateSpec(COUNT_OF, "count({0})", (1,), name_prefix="count"),
        _functions.AggregateSpec(
            SUM_TIMESPAN, _SUM_MICROSECONDS.format("{0}", where=""), (1,), name_prefix="sum"
        ),
        _functions.AggregateSpec(
            SUMIF_TIMESPAN,
            _SUM_MICROSECONDS.format("{0}", where=" FILTER (WHERE {1})"),
            (2,),
            name_prefix="sumif",
        ),
        # make-series: a group's series and its axis (see `tree._lower_make_series`).
        _functions.AggregateSpec(SERIES_VALUES, _SERIES_VALUES, (4,)),
        _functions.AggregateSpec(SERIES_AXIS, _SERIES_AXIS_TIME, (3,)),
        _functions.AggregateSpec(SERIES_AXIS + "_number", _SERIES_AXIS_NUMBER, (3,)),
        # count_distinct is exact in Kusto (dcount is the estimate).
        _functions.AggregateSpec("count_distinct", "count(DISTINCT {0})", (1,)),
        _functions.AggregateSpec("count_distinctif", "count(DISTINCT {0}) FILTER (WHERE {1})", (2,)),
    ]


#: ``avg`` of all-null input is NaN in Kusto, so duckdb-kql renders ``coalesce(avg(x), NaN)``,
#: which DuckDB refuses to bind for a timespan or datetime ``avg`` (Kusto averages both). The
#: fallback is applied in a lambda under ``try``: ``'NaN'`` converts to a number, and where the
#: average is a timespan or datetime the conversion fails and the null stays.
_AVG = "list_transform([avg({0})WHERE], lambda _avg: try(coalesce(_avg, 'NaN')))[1]"


def replaced_aggregates() -> list[_functions.AggregateSpec]:
    """Existing aggregate rows replaced by ones taking the types Kusto allows."""
    aggregates = _functions.AGGREGATE_FUNCTIONS
    return [
        dataclasses.replace(aggregates["avg"], template=_AVG.replace("WHERE", "")),
        dataclasses.replace(aggregates["avgif"], template=_AVG.replace("WHERE", " FILTER (WHERE {1})")),
    ]


#: Existing scalar rows whose arities are widened (the wider forms render in `WIDENED_FORMS`).
WIDENED_ARITIES: dict[str, tuple[int, ...]] = {
    "indexof": (2, 3, 4, 5),
    "split": (2, 3),
    "strrep": (2, 3),
}
