"""Fuzzing the constructs added for real hunting queries: `has_any`/`has_all` needles built
into one regex, `format_timespan` formats, `translate` lists, `top-nested`, `ipv4_lookup`
and `ipv4_is_in_any_range`, `parse_user_agent`, `geo_info_from_ip_address`,
`parse_command_line`, `render` properties. Only engine errors escape, needles are data
(never SQL or regex syntax), and the answers agree with the plain forms they abbreviate."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctirealm.engine import EngineError, LocalEngine

# Slow: property tests of whole constructs against their definitions.
pytestmark = pytest.mark.slow

LINES = [
    "wget http://x/a.sh",
    "curl -s x",
    "a.b c",
    "50% of a_b",
    "C:\\Windows\\x.exe",
    "sh -c 'x|y'",
    "(a+)+$ [z]",
    "",
    "Ünïcode wörds",
    "x/dev/tcp/1.2.3.4/80",
]
ENGINE = LocalEngine.from_tables(
    {"L": [{"Line": line, "N": i} for i, line in enumerate(LINES)]},
    {"L": [("Line", "string"), ("N", "long")]},
    timeout=2.0,
)
#: Needles mixing term characters, LIKE and regex metacharacters, quotes and SQL.
NEEDLE = st.one_of(
    st.sampled_from(["curl", "wget", "a.b", "/dev/tcp", "a_b", "50%", "\\Windows\\"]),
    st.text(alphabet=st.sampled_from(list("abcwgetxsh.-_%\\/'\"()[]+*?$^|{}: ;Ü")), min_size=1, max_size=6),
)
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def kql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ids(kql: str) -> list[int]:
    return sorted(row[0] for row in ENGINE.query(kql).rows)


@SETTINGS
@given(st.lists(NEEDLE, min_size=1, max_size=5), st.booleans())
def test_has_any_and_has_all_agree_with_has(needles: list[str], every: bool) -> None:
    listed = ", ".join(kql_string(n) for n in needles)
    joiner = " and " if every else " or "
    spelled = joiner.join(f"Line has {kql_string(n)}" for n in needles)
    operator = "has_all" if every else "has_any"
    try:
        got = _ids(f"L | where Line {operator} ({listed}) | project N")
    except EngineError:
        return
    assert got == _ids(f"L | where {spelled} | project N")
    assert ENGINE.query("L | count").rows == [(len(LINES),)]


@SETTINGS
@given(st.text(alphabet=st.sampled_from(list("dhHmsfF.:-[] '\\\"qx")), max_size=12))
def test_format_timespan_formats_answer_or_refuse(form: str) -> None:
    try:
        ENGINE.query(f"L | extend s = format_timespan(N * 1h + 1.5s, {kql_string(form)})", limit=3)
    except EngineError:
        pass
    assert ENGINE.query("L | count").rows == [(len(LINES),)]


@SETTINGS
@given(NEEDLE, st.text(max_size=4))
def test_translate_lists_are_data(search: str, replacement: str) -> None:
    try:
        ENGINE.query(
            f"L | extend s = translate({kql_string(search)}, {kql_string(replacement)}, Line)", limit=3
        )
    except EngineError:
        pass
    assert ENGINE.query("L | count").rows == [(len(LINES),)]


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(-2, 3)),
            st.sampled_from(["Line", "N", "strlen(Line)", "N % 2"]),
            st.sampled_from(
                ["count()", "sum(N)", "dcount(Line)", "max(N)", "make_set(N)", "avg(N)", "countif(N > 2)"]
            ),
            st.sampled_from(["", " asc", " desc"]),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_top_nested_answers_or_refuses(levels: list[tuple[int | None, str, str, str]]) -> None:
    clauses = ", ".join(
        f"top-nested {'' if n is None else n} of {key} by {agg}{order}" for n, key, agg, order in levels
    )
    try:
        result = ENGINE.query(f"L | {clauses}", limit=50)
    except EngineError:
        return
    first = levels[0][0]
    if first is not None and first >= 0:
        assert len({row[0] for row in result.rows}) <= first


#: Addresses and ranges: valid, out of range, prefixes too long, text, quotes.
OCTET = st.integers(0, 300).map(str)
ADDRESS = st.one_of(
    st.builds(lambda a, b, c, d: f"{a}.{b}.{c}.{d}", OCTET, OCTET, OCTET, OCTET),
    st.text(alphabet=st.sampled_from(list("0123456789./:'\"ab ")), max_size=15),
)
RANGE = st.one_of(st.builds(lambda ip, p: f"{ip}/{p}", ADDRESS, st.integers(0, 40)), ADDRESS)


@SETTINGS
@given(st.lists(ADDRESS, min_size=1, max_size=4), st.lists(RANGE, min_size=1, max_size=4), st.booleans())
def test_ipv4_lookup_agrees_with_ipv4_is_in_range(ips: list[str], ranges: list[str], unmatched: bool) -> None:
    """Each (address, range) row of the lookup is one ipv4_is_in_range holds for; with
    return_unmatched every address comes back at least once."""
    source = (
        "datatable(ip: string, k: long) ["
        + ", ".join(f"{kql_string(ip)}, {i}" for i, ip in enumerate(ips))
        + "]"
    )
    table = (
        "datatable(net: string, r: long) ["
        + ", ".join(f"{kql_string(net)}, {j}" for j, net in enumerate(ranges))
        + "]"
    )
    flag = ", return_unmatched = true" if unmatched else ""
    try:
        got = ENGINE.query(
            f"let R = {table}; {source} | evaluate ipv4_lookup(R, ip, net{flag}) | project k, r"
        ).rows
    except EngineError:
        return
    expected = ENGINE.query(
        f"let R = {table}; {source} | extend one = 1 "
        "| join kind=inner (R | extend one = 1) on one "
        "| where ipv4_is_in_range(ip, net) | project k, r"
    ).rows
    matched = sorted((k, r) for k, r in got if r is not None)
    assert matched == sorted(expected)
    if unmatched:
        assert {k for k, _ in got} == set(range(len(ips)))


@SETTINGS
@given(
    st.text(max_size=60),
    st.sampled_from(['"browser"', '"os"', '"device"', 'dynamic(["browser", "os", "device"])']),
)
def test_parse_user_agent_answers_any_text(agent: str, look_for: str) -> None:
    try:
        rows = ENGINE.query(f"print u = parse_user_agent({kql_string(agent)}, {look_for})").rows
    except EngineError:
        return
    assert isinstance(rows[0][0], dict)


@SETTINGS
@given(ADDRESS)
def test_geo_info_answers_any_text(address: str) -> None:
    try:
        rows = ENGINE.query(f"print g = geo_info_from_ip_address({kql_string(address)})").rows
    except EngineError:
        return
    assert rows[0][0] is None or set(rows[0][0]) == {"country", "state", "city", "latitude", "longitude"}


@SETTINGS
@given(st.text(alphabet=st.sampled_from(list("ab \"\\\t'c;|()")), max_size=30))
def test_parse_command_line_answers_any_text(line: str) -> None:
    try:
        rows = ENGINE.query(f"print a = parse_command_line({kql_string(line)}, 'windows')").rows
    except EngineError:
        return
    assert isinstance(rows[0][0], list)


@SETTINGS
@given(st.text(alphabet=st.sampled_from(list("abc\"'()|;=, ")), max_size=20))
def test_render_properties_never_reach_sql(title: str) -> None:
    try:
        ENGINE.query(f"L | render columnchart title=strcat({kql_string(title)}, Line)", limit=3)
    except EngineError:
        pass
    assert ENGINE.query("L | count").rows == [(len(LINES),)]
