"""Inspect AI logs (written by inspect-ai's own writer) replayed and scored in both modes.

The logged runs are on the imported upstream-layout fixture, so this is also
the end-to-end check that ``pytest --realm-cases=... --realm-telemetry=...
--realm-scoring compat`` on an import gives the reference's numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from interop_helpers import write_inspect_log

pytest.importorskip("inspect_ai", reason="the inspect extra (inspect-ai) is not installed")

from ctirealm.agents.inspect_log import InspectLogAgent
from ctirealm.cases import load_cases
from ctirealm.cli import main
from ctirealm.engine import LocalEngine
from ctirealm.scoring.rescore import rescore
from ctirealm.telemetry.store import Store

FIRST = (
    "DeviceProcessEvents | where ProcessCommandLine has 'crontab' "
    "| project ReportId, ProcessCommandLine | order by ReportId asc"
)
FINAL = (
    "DeviceProcessEvents | where ProcessCommandLine contains 'c0ffee11-persist' "
    "| project ReportId, DeviceName, ProcessCommandLine"
)
SIGMA = """title: Cron persistence through hidden scripts
logsource: {product: linux, category: process_creation}
detection:
  selection: {CommandLine|contains: c0ffee11-persist}
  condition: selection
tags: [attack.persistence, attack.t1053.003]
"""


def _rows(result_json: str) -> list[dict[str, Any]]:
    table = json.loads(result_json)["Tables"][0]
    names = [c["ColumnName"] for c in table["Columns"]]
    return [dict(zip(names, row, strict=True)) for row in table["Rows"]]


@pytest.fixture(scope="module")
def logs(imported_store: Store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two logged samples, as an upstream run would have recorded them (.eval and .json)."""
    with LocalEngine.of_store(imported_store) as engine:
        first = json.dumps(engine.query(FIRST + " | take 10", limit=10).to_kusto_json())
        final = json.dumps(engine.query(FINAL + " | take 10", limit=10).to_kusto_json())
        sample = json.dumps(engine.query("AKSAudit | take 2").to_kusto_json())
        schema = json.dumps(
            {
                "TableName": "DeviceProcessEvents",
                "Columns": [
                    {"ColumnName": c, "ColumnType": t} for c, t in engine.schema("DeviceProcessEvents")
                ],
            }
        )
    marked = [r for r in _rows(final)][:2]
    benign = next(r for r in _rows(first) if "c0ffee11" not in r["ProcessCommandLine"])
    submitted = [
        {"ReportId": r["ReportId"], "ProcessCommandLine": r["ProcessCommandLine"]} for r in marked
    ] + [benign]
    answer = json.dumps({"sigma_rule": SIGMA, "kql_query": FINAL, "query_results": submitted})
    linux = {
        "id": "linux_001",
        "completion": answer,
        "messages": [
            ("assistant", {"text": "Start with the reports.", "calls": [("c1", "list_cti_report_tags", {})]}),
            (
                "tool",
                {"id": "c1", "function": "list_cti_report_tags", "result": '[{"tag": "linux", "count": 1}]'},
            ),
            (
                "assistant",
                {
                    "reasoning": "Cron persistence is T1053; the scripts run through T1059.",
                    "calls": [("c2", "get_cti_reports_by_tag", {"tag": "linux"})],
                },
            ),
            (
                "tool",
                {
                    "id": "c2",
                    "function": "get_cti_reports_by_tag",
                    "result": '[{"id": "rep-linux-cron", "title": "Cron persistence in a '
                    'cryptomining campaign", "content": "..."}]',
                },
            ),
            ("assistant", {"calls": [("c3", "get_table_schema", {"table_name": "DeviceProcessEvents"})]}),
            ("tool", {"id": "c3", "function": "get_table_schema", "result": schema}),
            ("assistant", {"calls": [("c4", "execute_kql_query", {"query": FIRST})]}),
            ("tool", {"id": "c4", "function": "execute_kql_query", "result": first}),
            ("assistant", {"calls": [("c5", "execute_kql_query", {"query": FINAL})]}),
            ("tool", {"id": "c5", "function": "execute_kql_query", "result": final}),
            ("assistant", {"text": answer}),
        ],
    }
    aks_answer = json.dumps(
        {
            "sigma_rule": SIGMA,
            "kql_query": "AKSAudit | where UserAgent has 'sim'",
            "query_results": [{"AuditId": "not-from-any-tool"}],
        }
    )
    aks = {
        "id": "aks_001",
        "messages": [
            (
                "assistant",
                {
                    "text": "T1552.007 fits a secret listing.",
                    "calls": [("a1", "execute_kql_query", {"query": "AKSAudit | where x"})],
                },
            ),
            ("tool", {"id": "a1", "function": "execute_kql_query", "error": "query timed out"}),
            ("assistant", {"calls": [("a2", "sample_table_data", {"table_name": "AKSAudit", "rows": 2})]}),
            ("tool", {"id": "a2", "function": "sample_table_data", "result": sample}),
            ("assistant", {"calls": [("a3", "submit", {"answer": aks_answer})]}),
            ("tool", {"id": "a3", "function": "submit", "result": "submitted"}),
        ],
    }
    folder = tmp_path_factory.mktemp("inspect-logs")
    write_inspect_log(folder / "run-linux.eval", [linux])
    write_inspect_log(folder / "run-aks.json", [aks])
    return folder


def test_replay_reads_logs_with_inspects_reader(logs: Path) -> None:
    agent = InspectLogAgent(logs)
    assert agent.name == "inspect:openai/gpt-test"
    assert agent.cases() == ["aks_001", "linux_001"]
    linux = agent.find("linux_001")
    assert [c.name for s in linux.steps for c in s.calls][:2] == [
        "list_cti_report_tags",
        "get_cti_reports_by_tag",
    ]
    assert "T1053" in linux.steps[1].reasoning
    aks = agent.find("aks_001", epoch=2)  # falls back to epoch 1
    assert aks.answer and "not-from-any-tool" in aks.answer  # the submit tool's argument
    failed = aks.steps[0].calls[0]
    assert failed.error == "query timed out" and failed.result == "Error: query timed out"


def test_both_modes_score_every_sample(logs: Path, imported: Path, imported_store: Store) -> None:
    cases = load_cases(imported / "cases", tables=set(imported_store.meta["schemas"]))
    with LocalEngine.of_store(imported_store) as engine:
        entries = rescore(logs, cases, engine=engine, labels=imported_store.labels)
    by_id = {e["id"]: e for e in entries}
    assert sorted(by_id) == ["aks_001", "linux_001"]
    compat = {k: v.score for k, v in by_id["linux_001"]["scores"]["compat"].checkpoints.items()}
    # the reference's formulas, worked by hand: C1 recall of {T1053} = 1; C2 1 of 1 table;
    # C3 two distinct queries with rows; C4 F1 of precision 2/3 (2 of 3 rows match the one
    # pattern) and recall 1 = 0.8; C0 and Sigma need the judge.
    assert compat == pytest.approx(
        {
            "C0_cti_reports": None,
            "C1_attack_mapping": 0.75,
            "C2_data_sources": 1.0,
            "C3_query_iteration": 0.5,
            "C4_kql_detection": 4.0,
            "C4_sigma_quality": None,
        }
    )
    strict = by_id["linux_001"]["scores"]["strict"]
    detection = strict.detection["kql"]
    assert (detection.tp, detection.fp) == (5, 0)  # the final query, executed over the store
    assert strict.checkpoints["C4_kql_detection"].score == pytest.approx(5.0)
    assert strict.checkpoints["C1_attack_mapping"].score == pytest.approx(0.375)  # T1059 is extra
    aks = {k: v.score for k, v in by_id["aks_001"]["scores"]["compat"].checkpoints.items()}
    assert aks["C1_attack_mapping"] == 0.0  # T1552.007 does not count for T1552
    assert aks["C2_data_sources"] == 1.0 and aks["C3_query_iteration"] == 0.0
    assert aks["C4_kql_detection"] == 0.0  # a submitted row no tool returned
    assert by_id["aks_001"]["scores"]["strict"].checkpoints["C4_kql_detection"].score == 0.0


def test_pytest_runs_the_import_with_the_inspect_agent(
    pytester: pytest.Pytester, logs: Path, imported: Path, imported_store: Store
) -> None:
    pytester.makeini(f"""
        [pytest]
        addopts = --realm-cache-dir={imported_store.path.parent} -p no:cacheprovider
    """)
    result = pytester.runpytest(
        f"--realm-cases={imported / 'cases'}",
        f"--realm-telemetry={imported / 'telemetry'}",
        "--realm-scoring",
        "compat",
        f"--realm-agent=inspect:{logs}",
        f"--rootdir={pytester.path}",
        str(imported / "cases"),
        "-k",
        "linux_001 or aks_001",
    )
    results = json.loads((pytester.path / "reports" / "results.json").read_text())
    assert results["run"]["scoring"] == "compat"
    cases = {c["id"]: c for c in results["cases"]}
    assert cases["linux_001"]["normalized_score"] == pytest.approx(6.25 / 7.25, abs=1e-6)
    # no tag was searched, so C0 is reached and scores 0 (not "needs a judge"): 1 of 8.5
    assert cases["aks_001"]["normalized_score"] == pytest.approx(1.0 / 8.5, abs=1e-6)
    assert cases["linux_001"]["trajectory"]["agent"] == "inspect:openai/gpt-test"
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped") == 3  # judge-only checkpoints: linux C0, both Sigma qualities


def test_cli_rescores_logs(
    logs: Path, imported: Path, imported_store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "import",
            "inspect",
            str(logs),
            "--cases",
            str(imported / "cases"),
            "--telemetry",
            str(imported / "telemetry"),
            "--cache-dir",
            str(imported_store.path.parent),
            "--json",
        ]
    )
    assert code == 0
    entries = json.loads(capsys.readouterr().out)
    linux = next(e for e in entries if e["id"] == "linux_001")
    assert linux["scores"]["compat"]["checkpoints"]["C4_kql_detection"]["score"] == pytest.approx(4.0)
    assert linux["scores"]["strict"]["checkpoints"]["C4_kql_detection"]["score"] == pytest.approx(5.0)


def test_unknown_log_is_a_usage_error(tmp_path: Path) -> None:
    from ctirealm.agents import AgentSpecError, resolve_agent

    with pytest.raises(AgentSpecError, match="no such Inspect log"):
        resolve_agent(f"inspect:{tmp_path / 'missing.eval'}", load_cases(tmp_path))
