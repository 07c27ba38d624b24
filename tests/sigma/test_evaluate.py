"""Sigma rules through the one detection evaluator: converted by the sigma layer, executed over
the store, matches traced to events, precision/recall/F1."""

from __future__ import annotations

from ctirealm.scoring.detection import evaluate, evaluate_rule

CRON = {
    "title": "Cron from tmp",
    "logsource": {"product": "linux", "category": "process_creation"},
    "detection": {"sel": {"Image|endswith": "/crontab"}, "condition": "sel"},
}
EXPECTED = {"DeviceProcessEvents": ["482913377104", "590114783321"]}


def test_evaluate_rule_traces_attacks_and_false_positives(tiny_store, tiny_engine) -> None:
    result = evaluate_rule(CRON, tiny_engine, tiny_store.labels, expected=EXPECTED)
    assert result.ok and result.tables == ["DeviceProcessEvents"]
    assert result.kql == 'DeviceProcessEvents\n| where FolderPath endswith "/crontab"'
    assert result.attack_groups == {"sim_cron": ["DeviceProcessEvents:482913377104"]}
    assert result.matched_attack == ["DeviceProcessEvents:482913377104"]
    assert result.missed_attack == ["DeviceProcessEvents:590114783321"]
    assert (result.tp, result.fp, result.fn, result.hard_negatives_matched) == (1, 2, 1, 2)
    assert result.precision == 1 / 3 and result.recall == 0.5
    assert abs(result.f1 - 0.4) < 1e-9
    assert [e["kind"] for e in result.false_positive_examples] == ["hard_negative"] * 2
    assert [e["id"] for e in result.false_positive_examples] == ["300918273645", "771029384455"]
    assert result.false_positive_examples[0]["row"]["ProcessCommandLine"] == "crontab -e"
    assert "caught 1 of 2 expected" in result.summary()


def test_evaluate_rule_without_expected_reports_matches_only(tiny_store, tiny_engine) -> None:
    result = evaluate_rule(CRON, tiny_engine, tiny_store.labels, examples=0)
    assert result.expected is None and result.false_positive_examples == []
    assert result.rows == 3 and (result.tp, result.fp) == (1, 2)


def test_evaluate_rule_reports_conversion_errors(tiny_store, tiny_engine) -> None:
    bad = {**CRON, "detection": {"sel": {"Nope": "x"}, "condition": "sel"}}
    result = evaluate_rule(bad, tiny_engine, tiny_store.labels)
    assert result.stage == "convert" and "unknown field 'Nope'" in result.error


def test_evaluate_rule_counts_expected_events_of_its_table_only(tiny_store, tiny_engine) -> None:
    # A Sigma rule reads one table: expected events elsewhere are set aside, not missed.
    expected = {**EXPECTED, "AKSAudit": ["9a1c6f0e-0001-4c1e-9b7e-1c0de0000001"]}
    result = evaluate_rule(CRON, tiny_engine, tiny_store.labels, expected=expected)
    assert (result.expected, result.expected_elsewhere, result.fn) == (2, 1, 1)


def test_evaluate_kubernetes_rule(tiny_store, tiny_engine) -> None:
    rule = {
        "title": "CSR create",
        "logsource": {"product": "kubernetes", "service": "audit"},
        "detection": {
            "sel": {"objectRef.resource": "certificatesigningrequests", "verb": "create"},
            "filter": {"user.groups": "system:masters"},
            "condition": "sel and not filter",
        },
    }
    expected = {"AKSAudit": ["9a1c6f0e-0001-4c1e-9b7e-1c0de0000001"]}
    result = evaluate_rule(rule, tiny_engine, tiny_store.labels, expected=expected)
    assert result.f1 == 1.0 and result.fp == 0


def test_a_query_and_the_rule_it_converts_to_are_judged_alike(tiny_store, tiny_engine) -> None:
    rule = evaluate_rule(CRON, tiny_engine, tiny_store.labels, expected=EXPECTED)
    query = evaluate(
        rule.kql or "", tiny_engine, tiny_store.labels, expected=EXPECTED, within_tables_read=True
    )
    assert (query.tp, query.fp, query.fn, query.f1) == (rule.tp, rule.fp, rule.fn, rule.f1)


def test_evaluate_kql_without_id_column_counts_rows_as_false_positives(tiny_store, tiny_engine) -> None:
    kql = "DeviceProcessEvents | summarize n = count() by AccountName"
    result = evaluate(kql, tiny_engine, tiny_store.labels, expected=EXPECTED)
    assert (result.tp, result.fp, result.unattributed, result.rows) == (0, 3, 3, 3)
    assert "project ReportId for DeviceProcessEvents" in result.hint


def test_evaluate_kql_reports_engine_errors(tiny_store, tiny_engine) -> None:
    result = evaluate("DeviceProcessEvents | where Nope == 1", tiny_engine, tiny_store.labels)
    assert result.stage == "execute" and "Nope" in result.error
