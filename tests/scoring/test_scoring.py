"""Scoring on hand-built trajectories; every expected value is worked out in the comments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctirealm.cases import load_cases
from ctirealm.engine import LocalEngine
from ctirealm.scoring import score_case, summarize
from ctirealm.scoring.strict import technique_jaccard
from ctirealm.telemetry.dataset import Dataset
from ctirealm.telemetry.store import Store, build_store
from ctirealm.tools import Step, Submission, ToolCall, Trajectory
from tests.helpers import ROOT

MINI = ROOT / "tests" / "fixtures" / "mini"
SIGMA = "title: t\nlogsource: {product: linux, category: process_creation}\n" + "#" * 40


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, LocalEngine, dict]:
    root = tmp_path_factory.mktemp("mini")
    import shutil

    shutil.copytree(MINI / "telemetry", root / "telemetry")
    shutil.copytree(ROOT / "telemetry" / "schemas", root / "telemetry" / "schemas")
    store = build_store(Dataset.load(root / "telemetry"), cache_dir=root / "cache")
    cases = load_cases(MINI / "cases")
    return store, LocalEngine.of_store(store), cases.cases


def call(name: str, args: dict, result: object, rows: int | None = None) -> Step:
    text = result if isinstance(result, str) else json.dumps(result)
    return Step("tool", tool=ToolCall(name, args, text, not text.startswith("Error"), rows=rows))


def kusto(engine: LocalEngine, kql: str) -> tuple[str, int]:
    result = engine.query(kql)
    return json.dumps(result.to_kusto_json(), default=str), len(result.rows)


def trajectory_a(engine: LocalEngine, kql: str, results: list | None = None) -> Trajectory:
    q1, n1 = kusto(engine, "DeviceProcessEvents | where FileName == 'crontab'")
    q2, n2 = kusto(engine, kql)
    rows = (
        results
        if results is not None
        else [
            dict(zip([c["ColumnName"] for c in json.loads(q2)["Tables"][0]["Columns"]], r, strict=True))
            for r in json.loads(q2)["Tables"][0]["Rows"]
        ]
    )
    steps = [
        call(
            "get_cti_reports_by_tag",
            {"tag": "persistence"},
            [{"id": "cron-persistence", "title": "a"}, {"id": "k8s-secret-theft", "title": "b"}],
        ),
        Step("assistant", text="This is T1053.003; maybe T1059, and the T1053 family."),
        call("get_table_schema", {"table_name": "DeviceProcessEvents"}, {"Columns": []}),
        call("sample_table_data", {"table_name": "DeviceFileEvents"}, {"Tables": []}, rows=0),
        call("execute_kql_query", {"query": "DeviceProcessEvents | where FileName == 'crontab'"}, q1, n1),
        call("execute_kql_query", {"query": "DeviceProcessEvents  |  where FileName == 'crontab'"}, q1, n1),
        call("execute_kql_query", {"query": kql}, q2, n2),
    ]
    return Trajectory(
        "linux_001", "hand", steps=steps, status="submitted", submission=Submission(SIGMA, kql, rows)
    )


def _score(world, trajectory: Trajectory, mode: str = "strict"):
    store, engine, cases = world
    return score_case(
        cases["linux_001"], trajectory, engine=engine, labels=store.labels, schemas=engine.schemas, mode=mode
    )


def test_strict_checkpoints_by_hand(world) -> None:
    kql = (
        "DeviceProcessEvents | where ProcessCommandLine has 'crontab' | project ReportId, ProcessCommandLine"
    )
    score = _score(world, trajectory_a(world[1], kql))
    c = {k: v.score for k, v in score.checkpoints.items()}
    earned = {k: v.details.get("earned", v.score) for k, v in score.checkpoints.items()}
    # C0: read 2 reports, 1 relevant: P 1/2, R 1 -> F1 2/3 -> 1.25 * 2/3
    assert earned["C0_cti_reports"] == pytest.approx(1.25 * 2 / 3)
    # C1: T1053.003 matched, T1053 neutral (parent of the expected sub), T1059 extra -> 1/2
    assert earned["C1_attack_mapping"] == pytest.approx(0.75 * 0.5)
    # C2: explored {DPE, DFE}, expected {DPE} -> Jaccard 1/2
    assert earned["C2_data_sources"] == pytest.approx(0.5)
    # C3: two distinct successful queries (the whitespace variant is the same query)
    assert earned["C3_query_iteration"] == pytest.approx(0.5)
    # C4: has 'crontab' catches 1 of 2 attack events and 2 hard negatives (crontab -l/-e):
    # P 1/3, R 1/2 -> F1 0.4 -> 5 * 0.4
    assert c["C4_kql_detection"] == pytest.approx(2.0)
    # The workflow is paid F1 / 0.5 = 0.8 of what it earned (no Sigma scorer here: the KQL's F1)
    for name in ("C0_cti_reports", "C1_attack_mapping", "C2_data_sources", "C3_query_iteration"):
        assert c[name] == pytest.approx(earned[name] * 0.8)
        assert score.checkpoints[name].details["detection_factor"] == pytest.approx(0.8)
        assert "paid ×0.80" in score.checkpoints[name].message
    detection = score.detection["kql"]
    assert (detection.tp, detection.fp, detection.fn, detection.hard_negatives_matched) == (1, 2, 1, 2)
    assert (
        "matched 1 of 2 attack events, 2 false positives (2 hard negatives)"
        in score.checkpoints["C4_kql_detection"].message
    )


def test_fabricated_results_earn_no_detection_credit(world) -> None:
    kql = "DeviceProcessEvents | where AccountName == 'www-data' | project ReportId"
    score = _score(
        world, trajectory_a(world[1], kql, results=[{"ReportId": 418275039461, "Note": "made up"}])
    )
    assert score.checkpoints["C4_kql_detection"].score == 0.0
    assert "was not returned by any execute_kql_query call" in score.checkpoints["C4_kql_detection"].message


@pytest.mark.parametrize(
    ("kql", "tp", "fp", "f1"),
    [
        # no id column, one column: the marker token proves nothing, 2 rows traced to no event
        (
            "DeviceProcessEvents | where ProcessCommandLine has '7e21a9' | project ProcessCommandLine",
            0,
            2,
            0.0,
        ),
        # no id column, but four columns whose values identify one attack event each
        (
            "DeviceProcessEvents | where AccountName == 'www-data' "
            "| project Timestamp, DeviceName, AccountName, ProcessCommandLine",
            2,
            0,
            1.0,
        ),
        # bracket-quoted and bare names read the same table
        ("['DeviceProcessEvents'] | where AccountName == 'www-data' | project ReportId", 2, 0, 1.0),
        ("DeviceProcessEvents | where AccountName == 'www-data' | project ReportId", 2, 0, 1.0),
        # everything: 2 attack + 3 benign -> P 0.4, R 1 -> F1 4/7
        ("DeviceProcessEvents | project ReportId", 2, 3, 4 / 7),
        # an aggregate proves nothing: 1 unattributable row
        ("DeviceProcessEvents | summarize count() by DeviceName", 0, 1, 0.0),
        # join suffixes still trace events (ReportId and ReportId1)
        (
            "DeviceProcessEvents | where AccountName == 'www-data' | join kind=inner "
            "(DeviceProcessEvents | project ReportId, X = 1) on ReportId",
            2,
            0,
            1.0,
        ),
    ],
)
def test_attribution_rules(world, kql: str, tp: int, fp: int, f1: float) -> None:
    score = _score(world, trajectory_a(world[1], kql))
    detection = score.detection["kql"]
    assert (detection.tp, detection.fp) == (tp, fp)
    assert detection.f1 == pytest.approx(f1)


def test_c3_counts_only_queries_over_the_case_tables(world) -> None:
    _store, engine, _cases = world
    kql = "DeviceProcessEvents | where AccountName == 'www-data' | project ReportId"
    base = trajectory_a(engine, kql)
    # Only queries over another table (AKSAudit; linux_001 needs DeviceProcessEvents): nothing.
    aks = ("AKSAudit | take 3", "AKSAudit | project AuditId")
    # (What C3 earned is checked: without the final query's call its evidence is unproven, so
    # the workflow is paid nothing.)
    steps = [s for s in base.steps if not (s.tool and s.tool.name == "execute_kql_query")]
    steps += [call("execute_kql_query", {"query": q}, *kusto(engine, q)) for q in aks]
    other = Trajectory("linux_001", "hand", steps=steps, status="submitted", submission=base.submission)
    c3 = _score(world, other).checkpoints["C3_query_iteration"]
    assert c3.details["distinct_successful_any_table"] == 2  # they ran and returned rows
    assert (
        c3.details["earned"] == 0.0 and "0 distinct successful queries over the case's tables" in c3.message
    )
    # One of them over the case's table, bracket-quoted: half.
    quoted = "['DeviceProcessEvents'] | take 2"
    steps.append(call("execute_kql_query", {"query": quoted}, *kusto(engine, quoted)))
    one = Trajectory("linux_001", "hand", steps=steps, status="submitted", submission=base.submission)
    assert _score(world, one).checkpoints["C3_query_iteration"].details["earned"] == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("kql", "factor"),
    [
        # exact: F1 1 -> the workflow pays in full
        ("DeviceProcessEvents | where AccountName == 'www-data' | project ReportId", 1.0),
        # everything: F1 4/7 >= 0.5 -> still full (the mini store has 3 benign rows only)
        ("DeviceProcessEvents | project ReportId", 1.0),
        # has 'crontab': F1 0.4 -> 0.8
        ("DeviceProcessEvents | where ProcessCommandLine has 'crontab' | project ReportId", 0.8),
        # catches nothing (a benign user): F1 0 -> the same walk earns nothing
        ("DeviceProcessEvents | where AccountName == 'root' | project ReportId", 0.0),
    ],
)
def test_the_workflow_is_paid_by_the_detection_it_led_to(world, kql: str, factor: float) -> None:
    score = _score(world, trajectory_a(world[1], kql))
    for name in ("C0_cti_reports", "C1_attack_mapping", "C2_data_sources", "C3_query_iteration"):
        checkpoint = score.checkpoints[name]
        earned = checkpoint.details["earned"]
        assert earned > 0, name  # the walk itself is the same in every row
        assert checkpoint.score == pytest.approx(earned * factor), name


def test_fabricated_evidence_pays_no_workflow_either(world) -> None:
    kql = "DeviceProcessEvents | where AccountName == 'www-data' | project ReportId"
    score = _score(
        world, trajectory_a(world[1], kql, results=[{"ReportId": 418275039461, "Note": "made up"}])
    )
    # The query is exact, but its evidence was not returned by a tool call: no KQL credit, and
    # without a Sigma scorer no other detection the workflow could be paid by.
    assert score.total == 0.0


def test_compat_reproduces_the_reference_formulas(world) -> None:
    kql = (
        "DeviceProcessEvents | where ProcessCommandLine has 'crontab' | project ReportId, ProcessCommandLine"
    )
    score = _score(world, trajectory_a(world[1], kql), mode="compat")
    c = {k: v.score for k, v in score.checkpoints.items()}
    assert c["C0_cti_reports"] is None and c["C4_sigma_quality"] is None  # no judge: not scored
    assert c["C1_attack_mapping"] == pytest.approx(0.75)  # recall-like: extras cost nothing
    assert c["C2_data_sources"] == pytest.approx(1.0)
    assert c["C3_query_iteration"] == pytest.approx(0.5)
    # 3 rows submitted (crontab /tmp/.c-7e21a9, crontab -l, crontab -e); one matches the pattern:
    # slots 1 / (1 pattern x 3 rows) = 1/3, recall 1 -> F1 0.5 -> 5 * 0.5
    assert c["C4_kql_detection"] == pytest.approx(2.5)
    assert score.normalized == pytest.approx((0.75 + 1.0 + 0.5 + 2.5) / (10 - 1.25 - 1.5))


def test_technique_jaccard_rules() -> None:
    assert technique_jaccard(["T1053.003"], ["T1053"])[0] == 1.0  # a sub credits its parent
    assert technique_jaccard(["T1053"], ["T1053.003"])[0] == 0.0  # a parent does not credit a sub
    assert technique_jaccard(["T1053", "T1053.003"], ["T1053.003"])[0] == 1.0  # ...nor costs
    assert technique_jaccard(["T1110", "T1078"], ["T1110.003"])[0] == 0.0
    assert technique_jaccard([], ["T1110"])[0] == 0.0


def test_a_failed_run_scores_zero_everywhere(world) -> None:
    crashed = Trajectory("linux_001", "hand", status="crashed", reason="the agent raised KeyError")
    score = _score(world, crashed)
    assert score.total == 0 and all("KeyError" in c.message for c in score.checkpoints.values())


def test_summary_confidence_interval(world) -> None:
    kql = "DeviceProcessEvents | project ReportId"
    scores = [
        _score(world, trajectory_a(world[1], kql)),
        _score(world, Trajectory("linux_001", "x", epoch=2, status="no_submission")),
    ]
    summary = summarize(scores)
    assert summary["by_platform"]["linux"]["cases"] == 2
    low, high = summary["ci95"]
    assert low <= summary["normalized_score"] <= high
    assert summary["statuses"] == {"no_submission": 1, "submitted": 1}


def test_store_path_type(world) -> None:
    assert isinstance(world[0].path, Path)
