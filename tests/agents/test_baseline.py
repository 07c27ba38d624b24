"""The built-in baseline reads a report relevant to the objective, through the report tools only."""

from __future__ import annotations

from pathlib import Path

from ctirealm.agents.builtin import BaselineAgent, on_platform, platform_of, report_relevance
from ctirealm.cases import load_cases
from ctirealm.tools import Toolbox, Trajectory
from ctirealm.tools.facade import facade

CASES = Path(__file__).resolve().parents[2] / "cases"


def test_platform_of_objectives() -> None:
    assert platform_of("theft of local password hashes from Linux hosts") == "linux"
    assert platform_of("password spraying against Entra ID accounts") == "cloud"
    assert platform_of("a DaemonSet deployed to every node of the cluster") == "aks"


def test_reports_are_kept_on_their_platform() -> None:
    aks = {"tags": ["azure", "kubernetes", "credential access"]}
    cloud = {"tags": ["azure", "entra id", "password spray"]}
    linux = {"tags": ["linux", "credential access"]}
    assert on_platform(aks, "aks") and not on_platform(aks, "cloud")
    assert on_platform(cloud, "cloud") and not on_platform(cloud, "linux")
    assert on_platform(linux, "linux") and not on_platform(linux, "aks")


def test_relevance_counts_distinct_words_not_length() -> None:
    words = {"shadow", "hashes", "cracking"}
    short = {"title": "Shadow file theft", "tags": [], "content": "hashes taken for cracking"}
    long = {"title": "Other", "tags": [], "content": "shadow " * 500}
    assert report_relevance(short, words) > report_relevance(long, words)


def test_the_baseline_reads_a_relevant_report_for_most_shipped_cases() -> None:
    """Through the agent's report tools (the ones an agent gets): the chosen report is one of
    the case's own for most of the 50 objectives; measured 46 (a platform-blind choice by word
    occurrences found 35)."""
    cases = load_cases(CASES)
    hits = []
    for case_id, case in sorted(cases.cases.items()):
        tools = facade(Toolbox(None, cases, Trajectory(case_id, "test")))
        report = BaselineAgent.read_reports(tools, case.objective)
        assert platform_of(case.objective) == case.platform, case_id
        assert report is not None and on_platform(report, case.platform), case_id
        hits.append(report["id"] in case.reports)
    assert sum(hits) >= 44, f"{sum(hits)} of {len(hits)}"
