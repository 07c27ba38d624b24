"""``parse_user_agent``, ``geo_info_from_ip_address``, ``parse_command_line``: run in Python.

Like the series analytics (test_series_xml.py), they are kept out of ``conformance.yaml``,
which tests/interop also runs through ``ctirealm serve``, whose connection does not carry
them. Expected values are the documented examples of each function, cited at each test;
where the documentation gives no example the rule the module docstring states is pinned.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctirealm.engine import (
    KqlSemanticError,
    KqlUnsupportedError,
    LocalEngine,
    QueryTimeout,
    cmdline,
    geoip,
    useragent,
)
from ctirealm.engine.local import translate_kql

# https://learn.microsoft.com/kusto/query/parse-user-agent-function: the two examples.
ADOBE_AIR = "Mozilla/5.0 (Windows; U; en-US) AppleWebKit/531.9 (KHTML, like Gecko) AdobeAIR/2.5.1"
NOKIA = (
    "Mozilla/5.0 (SymbianOS/9.2; U; Series60/3.1 NokiaN81-3/10.0.032 Profile/MIDP-2.0 "
    "Configuration/CLDC-1.1 ) AppleWebKit/413 (KHTML, like Gecko) Safari/4"
)


def _one(engine: LocalEngine, kql: str) -> dict:
    rows = engine.query(kql).to_dicts()
    assert len(rows) == 1
    return rows[0]


def test_parse_user_agent_documented_examples(engine: LocalEngine) -> None:
    row = _one(engine, f'print x = parse_user_agent("{ADOBE_AIR}", "browser")')
    assert row["x"] == {
        "Browser": {"Family": "AdobeAIR", "MajorVersion": "2", "MinorVersion": "5", "Patch": "1"}
    }
    row = _one(
        engine,
        f'print x = parse_user_agent("{NOKIA}", dynamic(["browser", "os", "device"]))'
        " | extend family = tostring(x.OperatingSystem.Family)",
    )
    assert row["x"]["Browser"] == {
        "Family": "Nokia OSS Browser",
        "MajorVersion": "3",
        "MinorVersion": "1",
        "Patch": "",
    }
    assert row["x"]["OperatingSystem"] == {
        "Family": "Symbian OS",
        "MajorVersion": "9",
        "MinorVersion": "2",
        "Patch": "",
        "PatchMinor": "",
    }
    assert row["x"]["Device"]["Family"] == "Nokia N81"
    assert row["x"]["Device"]["Brand"] == "Nokia"
    assert row["family"] == "Symbian OS"


def test_parse_user_agent_over_a_column_and_unknown_agents(engine: LocalEngine) -> None:
    rows = engine.query(
        'datatable(ua: string) ["curl/8.5.0", "", "not a browser at all"] '
        '| extend b = tostring(parse_user_agent(ua, "browser").Browser.Family) '
        "| order by ua asc"
    ).to_dicts()
    assert [r["b"] for r in rows] == ["Other", "curl", "Other"]


def test_parse_user_agent_bad_targets_are_refused(engine: LocalEngine) -> None:
    with pytest.raises(KqlSemanticError, match="browser"):
        engine.query('print parse_user_agent("x", "cpu")')
    with pytest.raises(KqlSemanticError, match="browser"):
        engine.query('print parse_user_agent("x", dynamic(["os", 1]))')
    with pytest.raises(useragent.UserAgentError):
        useragent.parse_user_agent("x", ["gpu"])


def test_parse_user_agent_long_input_is_null() -> None:
    assert (
        useragent.parse_user_agent("Mozilla/5.0 " + "x" * useragent.MAX_USER_AGENT_CHARS, "browser") is None
    )
    assert useragent.parse_user_agent(None, "os") is None


def test_parse_user_agent_stops_at_the_time_limit() -> None:
    def stopped() -> None:
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        useragent.sql_function(stopped)("Mozilla/5.0", '"browser"')


# https://learn.microsoft.com/kusto/query/geo-info-from-ip-address-function: the examples
# (country, state, city; the coordinates come from another database, so compared loosely).
def test_geo_info_documented_examples(engine: LocalEngine) -> None:
    row = _one(engine, "print g = geo_info_from_ip_address('20.53.203.50')")
    g = row["g"]
    assert set(g) == {"country", "state", "city", "latitude", "longitude"}
    assert (g["country"], g["state"], g["city"]) == ("Australia", "New South Wales", "Sydney")
    assert abs(g["latitude"] + 33.87) < 0.5 and abs(g["longitude"] - 151.2) < 0.5
    row = _one(
        engine, "print c = tostring(geo_info_from_ip_address('2a03:2880:f12c:83:face:b00c::25de').country)"
    )
    assert row["c"] == "United States"


def test_geo_info_invalid_and_private_addresses_are_null(engine: LocalEngine) -> None:
    row = _one(
        engine,
        "print a = geo_info_from_ip_address('not an address'), "
        "b = geo_info_from_ip_address('10.1.2.3'), "
        "c = isnull(geo_info_from_ip_address(''))",
    )
    assert row == {"a": None, "b": None, "c": True}


def test_geo_info_without_the_geo_extra_is_refused_naming_it(
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(geoip, "available", lambda: False)
    with pytest.raises(KqlUnsupportedError) as caught:
        engine.query("print without_extra = geo_info_from_ip_address('192.0.2.77')")
    message = str(caught.value)
    assert "geo_info_from_ip_address" in message and "ctirealm[geo]" in message


def test_geo_info_attribution_is_stated() -> None:
    assert "DB-IP" in geoip.ATTRIBUTION and "CC BY 4.0" in geoip.ATTRIBUTION


# https://learn.microsoft.com/kusto/query/parse-command-line-function: the example, and the
# CommandLineToArgvW rules the module docstring gives.
def test_parse_command_line_documented_example(engine: LocalEngine) -> None:
    row = _one(engine, 'print a = parse_command_line(\'echo \\"hello world!\\" print$?\', "windows")')
    assert row["a"] == ["echo", "hello world!", "print$?"]


@pytest.mark.parametrize(
    ("text", "args"),
    [
        ('"C:\\Program Files\\x.exe" /a "b c"', ["C:\\Program Files\\x.exe", "/a", "b c"]),
        ('a\\\\b d\\\\\\"e', ["a\\\\b", 'd\\"e']),  # backslashes kept unless before a quote
        ('a "b\\\\" c', ["a", "b\\", "c"]),  # 2n backslashes, quote: n, and it closes
        # "" inside quotes: a literal quote, and the quoted part ends (CommandLineToArgvW's rule,
        # not the C runtime's newer one): the next quote opens another.
        ('x "a""b" c', ["x", 'a"b c']),
        ('x "a"""b" c', ["x", 'a"b', "c"]),  # """ inside: a quote, still inside
        ("x   y\t z ", ["x", "y", "z"]),
        ('C:\\dir\\p.exe "unterminated arg', ["C:\\dir\\p.exe", "unterminated arg"]),
        ('"quoted program"rest x', ["quoted program", "rest", "x"]),
        ("", []),
    ],
)
def test_parse_command_line_rules(text: str, args: list[str]) -> None:
    assert cmdline.split_windows(text) == args


def _argv_quote(arg: str) -> str:
    """How a program quotes one argument so that CommandLineToArgvW gives it back."""
    if arg and not any(c in arg for c in ' \t"'):
        return arg
    out, backslashes = ['"'], 0
    for ch in arg:
        if ch == "\\":
            backslashes += 1
            continue
        if ch == '"':
            out.append("\\" * (2 * backslashes + 1) + '"')
        else:
            out.append("\\" * backslashes + ch)
        backslashes = 0
    out.append("\\" * (2 * backslashes) + '"')
    return "".join(out)


@given(st.lists(st.text(alphabet='ab \t"\\', max_size=8), min_size=1, max_size=5))
def test_parse_command_line_inverts_argument_quoting(args: list[str]) -> None:
    line = " ".join(["prog.exe", *(_argv_quote(a) for a in args)])
    assert cmdline.split_windows(line) == ["prog.exe", *args]


def test_parse_command_line_refusals(engine: LocalEngine) -> None:
    with pytest.raises(KqlSemanticError, match="windows"):
        engine.query('print parse_command_line("a b", "linux")')
    assert cmdline.parse_command_line("x" * (cmdline.MAX_COMMAND_LINE_CHARS + 1), "windows") is None
    assert json.loads(cmdline.sql_function("a b", "Windows") or "") == ["a", "b"]


def test_translation_without_the_engine_refuses_them() -> None:
    for call in (
        'parse_user_agent("x", "os")',
        "geo_info_from_ip_address('1.1.1.1')",
        'parse_command_line("a", "windows")',
    ):
        with pytest.raises(KqlUnsupportedError, match="LocalEngine"):
            translate_kql(f"print {call}", schema={}, now=None)


def test_a_time_limit_still_stops_a_query_using_them(engine: LocalEngine) -> None:
    with pytest.raises(QueryTimeout):
        engine.query(
            "range i from 1 to 3000000 step 1 "
            "| extend u = parse_user_agent(strcat('Mozilla/5.0 x', i), 'browser') "
            "| summarize dcount(tostring(u))",
            timeout=0.5,
        )
