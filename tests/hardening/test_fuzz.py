"""Fuzzing the entry points agents reach: only documented error types ever escape."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctirealm.agents.parse import SubmissionError, to_submission
from ctirealm.cases import load_cases
from ctirealm.engine import EngineError, LocalEngine
from ctirealm.sigma.convert import convert
from ctirealm.sigma.parse import SigmaRuleError
from ctirealm.sigma.validate import validate
from ctirealm.tools import Toolbox, Trajectory

MINI = Path(__file__).resolve().parents[1] / "fixtures" / "mini"
ENGINE = LocalEngine.from_tables(
    {"DeviceProcessEvents": [{"ReportId": 1, "ProcessCommandLine": "crontab -l", "FileName": "crontab"}]},
    {"DeviceProcessEvents": [("ReportId", "long"), ("ProcessCommandLine", "string"), ("FileName", "string")]},
    timeout=2.0,
)
CASES = load_cases(MINI / "cases")
KQL_WORDS = st.sampled_from(
    [
        "DeviceProcessEvents",
        "|",
        "where",
        "project",
        "extend",
        "summarize",
        "count()",
        "by",
        "take",
        "10",
        "ProcessCommandLine",
        "has",
        "contains",
        "==",
        "'crontab'",
        '"x"',
        "(",
        ")",
        ",",
        "and",
        "or",
        "not",
        "let",
        "=",
        ";",
        ".drop",
        "table",
        "join",
        "on",
        "ReportId",
        "matches regex",
        "'(a+)+$'",
        "tostring",
        "parse_json",
        "mv-expand",
        "union",
        "*",
        "ago(1d)",
        "bin",
        "datetime(2026-03-05)",
        "//",
        "\n",
        "externaldata",
        "read_csv('/etc/passwd')",
        "'; DROP TABLE x; --",
        "sort",
        "asc",
        "top",
        "dynamic",
    ]
)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(KQL_WORDS, max_size=14).map(" ".join) | st.text(max_size=80))
def test_kql_entry_raises_only_engine_errors(query: str) -> None:
    try:
        ENGINE.query(query, limit=5)
    except EngineError:
        pass
    assert ENGINE.query("DeviceProcessEvents | count").rows == [(1,)]


SIGMA_LINES = st.sampled_from(
    [
        "title: t",
        "logsource:",
        "  product: linux",
        "  category: process_creation",
        "  service: audit",
        "  product: kubernetes",
        "detection:",
        "  selection:",
        "    CommandLine|contains: x",
        "    Image|endswith:",
        "      - /crontab",
        "    Nope: 1",
        "    verb|re: '(a'",
        "  condition: selection",
        "  condition: 1 of sel*",
        "  condition: selection and not filter",
        "  keywords:",
        "    - evil",
        "  filter:",
        "    User: root",
        "correlation:",
        "  type: event_count",
        "- [",
        "{",
        "tags: [attack.t1053]",
    ]
)


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(SIGMA_LINES, max_size=14).map("\n".join) | st.text(max_size=120))
def test_sigma_entry_raises_only_rule_errors(text: str) -> None:
    result = validate(text)
    assert 0.0 <= result.score <= 1.0
    try:
        convert(text)
    except SigmaRuleError:
        pass


@settings(max_examples=120, deadline=None)
@given(
    st.sampled_from(
        [
            "execute_kql_query",
            "get_table_schema",
            "sample_table_data",
            "search_sigma_rules",
            "get_cti_reports_by_tag",
            "search_mitre_techniques",
            "validate_output_json",
            "list_kusto_tables",
            "nope",
        ]
    ),
    st.one_of(
        st.text(max_size=40),
        st.dictionaries(
            st.text(max_size=12),
            st.one_of(st.none(), st.integers(), st.text(max_size=30), st.lists(st.integers(), max_size=3)),
            max_size=4,
        ),
    ),
)
def test_tools_never_raise_into_the_agent(name: str, arguments: object) -> None:
    toolbox = Toolbox(ENGINE, CASES, Trajectory("linux_001", "fuzz"))
    result = toolbox.call(name, arguments)  # type: ignore[arg-type]
    assert isinstance(result, str)
    assert toolbox.trajectory.tool_calls()[-1].ok == (not result.startswith("Error: "))


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from(["sigma_rule", "kql_query", "query_results", "x"]),
            st.one_of(
                st.text(max_size=80),
                st.lists(st.dictionaries(st.text(max_size=5), st.integers(), max_size=2), max_size=2),
            ),
            max_size=4,
        ),
    )
)
def test_answers_parse_or_fail_with_a_reason(answer: object) -> None:
    try:
        to_submission(answer)
    except SubmissionError as exc:
        assert str(exc)
