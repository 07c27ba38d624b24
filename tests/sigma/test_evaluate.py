"""Evaluation: execute over the store, trace matches by id, precision/recall/F1."""

from __future__ import annotations

from ctirealm.sigma.evaluate import evaluate, evaluate_kql

CRON = {"title": "Cron from tmp", "logsource": {"product": "linux", "category": "process_creation"},
        "detection": {"sel": {"Image|endswith": "/crontab"}, "condition": "sel"}}
EXPECTED = {"DeviceProcessEvents": ["482913377104", "590114783321"]}


def test_evaluate_traces_attacks_and_false_positives(tiny_store, tiny_engine) -> None:
    result = evaluate(CRON, tiny_engine, tiny_store.labels, expected=EXPECTED)
    assert result.ok and result.table == "DeviceProcessEvents"
    assert result.attack == {"sim_cron": ["482913377104"]}
    assert result.true_positives == ["482913377104"] and result.missed == ["590114783321"]
    assert result.hard_negatives == ["300918273645", "771029384455"] and result.background == []
    assert (result.tp, result.fp, result.fn) == (1, 2, 1)
    assert result.precision == 1 / 3 and result.recall == 0.5
    assert abs(result.f1 - 0.4) < 1e-9
    assert [e["label"] for e in result.examples][:2] == ["hard_negative", "hard_negative"]
    assert "missed" not in result.summary() and "caught 1 of 2" in result.summary()


def test_evaluate_without_expected_reports_matches_only(tiny_store, tiny_engine) -> None:
    result = evaluate(CRON, tiny_engine, tiny_store.labels, examples=0)
    assert result.expected is None and result.precision is None and result.examples == []
    assert result.matched == 3


def test_evaluate_reports_conversion_errors(tiny_store, tiny_engine) -> None:
    bad = {**CRON, "detection": {"sel": {"Nope": "x"}, "condition": "sel"}}
    result = evaluate(bad, tiny_engine, tiny_store.labels)
    assert result.stage == "convert" and "unknown field 'Nope'" in result.error


def test_evaluate_kubernetes_rule(tiny_store, tiny_engine) -> None:
    rule = {"title": "CSR create", "logsource": {"product": "kubernetes", "service": "audit"},
            "detection": {"sel": {"objectRef.resource": "certificatesigningrequests",
                                  "verb": "create"},
                          "filter": {"user.groups": "system:masters"},
                          "condition": "sel and not filter"}}
    expected = {"AKSAudit": ["9a1c6f0e-0001-4c1e-9b7e-1c0de0000001"]}
    result = evaluate(rule, tiny_engine, tiny_store.labels, expected=expected)
    assert result.f1 == 1.0 and result.fp == 0


def test_evaluate_kql_attributes_by_id_column(tiny_store, tiny_engine) -> None:
    kql = 'DeviceProcessEvents | where ProcessCommandLine has "4b1f0c7e" | project ReportId'
    result = evaluate_kql(kql, tiny_engine, tiny_store.labels, expected=EXPECTED)
    assert result.attributable and result.f1 == 1.0
    expected_elsewhere = {**EXPECTED, "DeviceFileEvents": ["1"]}
    assert evaluate_kql(kql, tiny_engine, tiny_store.labels,
                        expected=expected_elsewhere).expected_elsewhere == 1


def test_evaluate_kql_without_id_column_is_not_attributable(tiny_store, tiny_engine) -> None:
    kql = "DeviceProcessEvents | summarize n = count() by AccountName"
    result = evaluate_kql(kql, tiny_engine, tiny_store.labels, expected=EXPECTED)
    assert not result.attributable and "ReportId for DeviceProcessEvents" in result.reason
    assert result.tp == 0 and result.matched == 3


def test_evaluate_kql_reports_engine_errors(tiny_store, tiny_engine) -> None:
    result = evaluate_kql("DeviceProcessEvents | where Nope == 1", tiny_engine, tiny_store.labels)
    assert result.stage == "execute" and "Nope" in result.error
