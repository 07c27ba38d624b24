"""The pytest plugin on a two-case project: collection, selection, scoring outputs, gating."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

CHECKPOINTS = [
    "C0_cti_reports",
    "C1_attack_mapping",
    "C2_data_sources",
    "C3_query_iteration",
    "C4_kql_detection",
    "C4_sigma_quality",
]


def test_collection_ids_read_naturally(mini: pytest.Pytester) -> None:
    result = mini.runpytest("--collect-only", "-q")
    ids = [line for line in result.outlines if "::" in line]
    assert ids[:6] == [f"cases/aks/aks_001.yaml::aks_001::{c}" for c in CHECKPOINTS]
    assert len(ids) == 12


def test_selection_by_keyword_and_markers(mini: pytest.Pytester) -> None:
    result = mini.runpytest("--collect-only", "-q", "-k", "linux_001 and C1")
    assert [line for line in result.outlines if "::" in line] == [
        "cases/linux/linux_001.yaml::linux_001::C1_attack_mapping"
    ]
    result = mini.runpytest("--collect-only", "-q", "-m", "realm_25 and linux")
    assert len([line for line in result.outlines if "::" in line]) == 6
    result = mini.runpytest("--collect-only", "-q", "--realm-subset", "25")
    assert len([line for line in result.outlines if "::" in line]) == 6


def test_oracle_scores_full_marks_and_writes_results(mini: pytest.Pytester) -> None:
    result = mini.runpytest("--realm-agent", "oracle", "--junitxml=junit.xml")
    result.assert_outcomes(passed=12)
    results = json.loads((mini.path / "reports" / "results.json").read_text())
    assert [c["id"] for c in results["cases"]] == ["aks_001", "linux_001"]
    for case in results["cases"]:
        assert case["status"] == "submitted"
        assert case["checkpoints"]["C4_kql_detection"]["score"] == 5.0
        assert case["detection"]["kql"]["fp"] == 0
    assert results["run"]["agent"] == "oracle"
    assert results["summary"]["by_platform"].keys() == {"aks", "linux"}
    result.stdout.fnmatch_lines(["*ctirealm score*", "*normalised score*"])
    # scores travel as JUnit properties
    tree = ET.parse(mini.path / "junit.xml")
    props = {p.get("name"): p.get("value") for p in tree.iter("property")}
    assert {"case", "platform", "checkpoint", "score", "max_score"} <= set(props)


def test_null_agent_scores_zero_and_min_score_gates(mini: pytest.Pytester) -> None:
    result = mini.runpytest("--realm-agent", "null", "--realm-min-score", "0.1")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    results = json.loads((mini.path / "reports" / "results.json").read_text())
    assert results["summary"]["normalized_score"] == 0.0
    assert {c["status"] for c in results["cases"]} == {"no_submission"}
    result.stdout.fnmatch_lines(["*min score 0.100: FAILED*"])


def test_failure_message_shows_graded_breakdown(mini: pytest.Pytester) -> None:
    result = mini.runpytest("--realm-agent", "null", "-k", "linux_001 and C1")
    result.stdout.fnmatch_lines(["*C1 0.00/0.75: case scored zero: the agent finished without*"])


def test_an_unexpected_error_in_a_checkpoint_is_a_plain_failure(mini: pytest.Pytester) -> None:
    # anything but a CheckpointFailure gets pytest's own report (traceback), not an internal error
    mini.makeconftest("""
        import pytest

        @pytest.hookimpl(tryfirst=True)
        def pytest_runtest_call(item):
            if item.name == "C1_attack_mapping":
                raise RuntimeError("scoring broke")
    """)
    result = mini.runpytest("--realm-agent", "oracle", "-k", "linux_001 and C1")
    result.stdout.fnmatch_lines(["*RuntimeError: scoring broke*"])
    result.stdout.no_fnmatch_line("*INTERNALERROR*")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.parseoutcomes()["failed"] == 1


def test_a_broken_case_fails_alone(mini: pytest.Pytester) -> None:
    (mini.path / "cases" / "linux" / "linux_002.yaml").write_text("id: linux_002\nplatform: linux\n")
    result = mini.runpytest("--realm-agent", "oracle", "-k", "linux")
    result.stdout.fnmatch_lines(["*linux_002.yaml: objective: required field is missing*"])
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 1 and outcomes["passed"] >= 5


@pytest.mark.slow
def test_xdist_gives_the_same_results_as_one_process(mini: pytest.Pytester) -> None:
    mini.runpytest_subprocess("--realm-agent", "baseline", "-n", "0")
    one = json.loads((mini.path / "reports" / "results.json").read_text())
    mini.runpytest_subprocess("--realm-agent", "baseline", "-n", "2")
    two = json.loads((mini.path / "reports" / "results.json").read_text())
    for doc in (one, two):
        doc["run"].pop("started"), doc["run"].pop("finished")
        for case in doc["cases"]:
            case.pop("duration")
            for query in case["trajectory"]["queries"]:
                query.pop("duration")
    assert one == two


@pytest.mark.slow
def test_under_xdist_each_case_runs_its_agent_once(mini: pytest.Pytester) -> None:
    # Every agent run appends a line; a case whose items were spread over workers would be
    # run once per worker (and its results written twice, racing).
    log = mini.path / "runs.log"
    mini.makepyfile(
        counting_agent=f"""
        import os
        from ctirealm.agents.builtin import BaselineAgent

        class Counting(BaselineAgent):
            name = "counting"
            def run(self, task, tools):
                with open({str(log)!r}, "a") as out:
                    out.write(task.case_id + " " + os.environ.get("PYTEST_XDIST_WORKER", "-") + "\\n")
                return super().run(task, tools)
    """
    )
    mini.syspathinsert()
    result = mini.runpytest_subprocess(
        "--realm-agent", "python:counting_agent:Counting", "-n", "2", "--realm-epochs", "2", "-v"
    )
    runs = sorted(log.read_text().split("\n")[:-1])
    assert [r.split()[0] for r in runs] == ["aks_001", "aks_001", "linux_001", "linux_001"], runs
    result.stdout.fnmatch_lines(["*scheduling tests via LoadFileScheduling*"])


def test_epochs_multiply_items_and_runs(mini: pytest.Pytester) -> None:
    result = mini.runpytest("--realm-agent", "oracle", "--realm-epochs", "2", "-k", "linux_001")
    result.assert_outcomes(passed=12)
    results = json.loads((mini.path / "reports" / "results.json").read_text())
    assert [(c["id"], c["epoch"]) for c in results["cases"]] == [("linux_001", 1), ("linux_001", 2)]
    result = mini.runpytest("--collect-only", "-q", "--realm-epochs", "2", "-k", "linux_001 and C3")
    assert [line for line in result.outlines if "::" in line] == [
        "cases/linux/linux_001.yaml::linux_001::C3_query_iteration[epoch1]",
        "cases/linux/linux_001.yaml::linux_001::C3_query_iteration[epoch2]",
    ]


@pytest.mark.slow
def test_replaying_recorded_trajectories_gives_the_same_scores(mini: pytest.Pytester) -> None:
    mini.runpytest("--realm-agent", "baseline", "--realm-report-dir", "first")
    first = json.loads((mini.path / "first" / "results.json").read_text())
    mini.runpytest(
        "--realm-agent", f"replay:{mini.path / 'first' / 'trajectories'}", "--realm-report-dir", "second"
    )
    second = json.loads((mini.path / "second" / "results.json").read_text())
    assert first["summary"] == second["summary"]
    assert [c["checkpoints"] for c in first["cases"]] == [c["checkpoints"] for c in second["cases"]]
