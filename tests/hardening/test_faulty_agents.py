"""Faulty agents through the whole plugin: the run completes, each case gets the right reason,
and nothing can be gamed (fabrication earns no detection credit, match-everything almost none)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import mini_project

AGENTS = """
import json, os, time

GOOD_SIGMA = "title: t\\nlogsource: {product: linux, category: process_creation}\\n" + "#" * 40


def _rows(text):
    table = json.loads(text)["Tables"][0]
    names = [c["ColumnName"] for c in table["Columns"]]
    return [dict(zip(names, r)) for r in table["Rows"]]


class Crash:
    name = "crash"
    def run(self, task, tools):
        tools.list_kusto_tables()
        raise KeyError("boom")


class Hang:
    name = "hang"
    def run(self, task, tools):
        while True:
            time.sleep(0.05)
            tools.list_kusto_tables()


class Garbage:
    name = "garbage"
    def run(self, task, tools):
        return b"\\xff\\xfe not json at all"


class WrongTypes:
    name = "wrong-types"
    def run(self, task, tools):
        return {"sigma_rule": ["a"], "kql_query": 42, "query_results": {}}


class Huge:
    name = "huge"
    def run(self, task, tools):
        return "x" * 100_000_000


class Fabricator:
    name = "fabricator"
    def run(self, task, tools):
        table = "AKSAudit" if "Kubernetes" in task.objective else "DeviceProcessEvents"
        tools.execute_kql_query(query=f"{table} | count")
        kql = (f"{table} | where AuditId != '' | project AuditId" if table == "AKSAudit"
               else f"{table} | where AccountName == 'www-data' | project ReportId")
        # rows no query returned
        return {"sigma_rule": GOOD_SIGMA, "kql_query": kql,
                "query_results": [{"ReportId": 1, "Note": "trust me"}]}


class Everything:
    name = "everything"
    def run(self, task, tools):
        table = "AKSAudit" if "Kubernetes" in task.objective else "DeviceProcessEvents"
        rows = _rows(tools.execute_kql_query(query=f"{table} | take 10"))
        return {"sigma_rule": GOOD_SIGMA, "kql_query": f"{table} | take 10", "query_results": rows}
"""


@pytest.fixture
def project(pytester: pytest.Pytester, store_cache: Path) -> pytest.Pytester:
    pytester.makepyfile(faulty_agents=AGENTS)
    pytester.syspathinsert()
    return mini_project(pytester, store_cache, "realm_agent_timeout = 2")


def _results(project: pytest.Pytester, agent: str) -> dict:
    result = project.runpytest(f"--realm-agent=python:faulty_agents:{agent}")
    assert result.ret in (0, 1), result.stdout.str()[-2000:]
    return json.loads((project.path / "reports" / "results.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("agent", "status", "reason"),
    [
        ("Crash", "crashed", "KeyError"),
        ("Hang", "timeout", "time limit of 2 s"),
        ("Garbage", "invalid_submission", "no JSON object"),
        ("WrongTypes", "invalid_submission", "sigma_rule must be a string"),
        ("Huge", "invalid_submission", "limit"),
    ],
)
def test_failures_end_the_case_not_the_run(
    project: pytest.Pytester, agent: str, status: str, reason: str
) -> None:
    results = _results(project, agent)
    assert len(results["cases"]) == 2
    for case in results["cases"]:
        assert case["status"] == status
        assert reason in case["reason"]
        assert case["normalized_score"] == 0.0


def test_fabricated_results_earn_no_detection_credit(project: pytest.Pytester) -> None:
    results = _results(project, "Fabricator")
    for case in results["cases"]:
        kql = case["checkpoints"]["C4_kql_detection"]
        assert kql["score"] == 0.0
        assert "was not returned by any execute_kql_query call" in kql["message"]


def test_match_everything_earns_little(project: pytest.Pytester) -> None:
    results = _results(project, "Everything")
    for case in results["cases"]:
        detection = case["detection"]["kql"]
        # `take 10` of a 5-event table is everything: every benign event is a false positive
        assert detection["fp"] >= 3
        assert case["checkpoints"]["C4_kql_detection"]["score"] <= 5 * 0.6
