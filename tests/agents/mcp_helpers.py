"""What the MCP and Inspect tests share: the stdio client script, and `OracleAgent`'s walk
written as a plan (the same calls, the same answer) that the MCP client follows and the Inspect
tests turn into model turns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ctirealm.cases import Case, CaseSet

CLIENT = Path(__file__).resolve().parent / "mcp_client.py"


def oracle_steps(case: Case, cases: CaseSet) -> list[dict[str, Any]]:
    """The calls `OracleAgent` makes, as a plan: the same walk, the same answer, its words as analysis."""
    root = Path(case.path).resolve().parents[2]
    counts = cases.tags()
    steps: list[dict[str, Any]] = [{"call": "list_cti_report_tags"}]
    retrieved: set[str] = set()
    for report_id in case.reports:
        if report_id in retrieved:
            continue
        tag = min(cases.reports[report_id].tags, key=lambda t: (counts.get(t, 0), t))
        retrieved |= {r.id for r in cases.reports.values() if tag in r.tags}
        steps.append({"call": "get_cti_reports_by_tag", "arguments": {"tag": tag}})
    truth = case.ground_truth
    for table in truth.tables:
        steps.append({"call": "get_table_schema", "arguments": {"table_name": table}})
        steps.append({"call": "sample_table_data", "arguments": {"table_name": table, "rows": 3}})
    kql = (root / str(case.solution.kql)).read_text(encoding="utf-8").strip()
    sigma = (root / str(case.solution.sigma)).read_text(encoding="utf-8")
    steps.append(
        {"call": "execute_kql_query", "arguments": {"query": f"{truth.tables[0]} | summarize count()"}}
    )
    steps.append({"call": "execute_kql_query", "arguments": {"query": kql}})
    analysis = (
        f"The objective maps to ATT&CK {', '.join(truth.techniques)}; the evidence is in "
        f"{', '.join(truth.tables)}."
    )
    steps.append(
        {"submit": {"sigma_rule": sigma, "kql_query": kql, "analysis": analysis}, "rows_from": len(steps) - 1}
    )
    return steps
