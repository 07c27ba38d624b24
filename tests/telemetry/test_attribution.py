"""Tracing result rows to events: id columns (join-suffixed too), tables read, values that are
no event, and ids shared by tables."""

from __future__ import annotations

import shutil

import pytest
from tests.conftest import ROOT, process_event, write_jsonl

from ctirealm.sigma.evaluate import evaluate_kql
from ctirealm.telemetry.attribution import canonical, id_columns, tables_in, trace
from ctirealm.telemetry.dataset import Dataset
from ctirealm.telemetry.store import Store, build_store

ATTACK = {"sim": {
    "DeviceProcessEvents": [process_event(111000000001, "curl http://x 77aa-sim"),
                            process_event(111000000002, "sh /tmp/x 77aa-sim")],
    "DeviceFileEvents": [{"Timestamp": "2026-03-05T10:00:01Z", "ReportId": 222000000001,
                          "FileName": "x", "FolderPath": "/tmp/x",
                          "DeviceName": "web01.corp.example"}],
    "AKSAudit": [{"TimeGenerated": "2026-03-05T10:00:00Z", "AuditId": "a-1", "Verb": "get"}],
    "AKSAuditAdmin": [{"TimeGenerated": "2026-03-05T10:00:00Z", "AuditId": "a-1", "Verb": "get"}],
}}
BENIGN = {"neg": {"DeviceProcessEvents": [process_event(333000000001, "curl https://ok")]}}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("t") / "telemetry"
    shutil.copytree(ROOT / "telemetry" / "schemas", root / "schemas")
    shutil.copy(ROOT / "telemetry" / "dataset.yaml", root / "dataset.yaml")
    for kind, groups in (("attack", ATTACK), ("benign", BENIGN)):
        for group, tables in groups.items():
            for table, rows in tables.items():
                write_jsonl(root / kind / group / f"{table}.jsonl", rows)
    return build_store(Dataset.load(root), cache_dir=tmp_path_factory.mktemp("c"), rows=0)


def _trace(store: Store, kql: str, **kw):  # noqa: ANN202
    with store.engine() as engine:
        result = engine.query(kql)
        return trace(kql, result.column_names, result.to_dicts(), engine, engine.schemas,
                     store.labels, **kw)


def test_tables_read_skip_literals_and_comments() -> None:
    known = ["DeviceProcessEvents", "DeviceFileEvents", "SigninLogs"]
    kql = ('// SigninLogs is not read\nDeviceProcessEvents | where ProcessCommandLine has '
           '"DeviceFileEvents"')
    assert tables_in(kql, known) == ["DeviceProcessEvents"]


def test_id_columns_by_name_and_join_suffix() -> None:
    families = {"ReportId": ["DeviceFileEvents", "DeviceProcessEvents"]}
    assert id_columns(["ReportId", "ReportId1", "ReportIdX", "Count"], families) == {
        "ReportId": "ReportId", "ReportId1": "ReportId"}


def test_canonical_values() -> None:
    assert canonical(3.0) == "3" and canonical(None) == "" and canonical({"b": 1, "a": [2]}) == \
        '{"a":[2],"b":1}' and canonical("  x ") == "x"


def test_a_join_traces_both_sides(store: Store) -> None:
    traced = _trace(store, "DeviceProcessEvents | where ProcessCommandLine has '77aa' "
                           "| join kind=inner (DeviceFileEvents) on DeviceName "
                           "| project ReportId, ReportId1")
    assert traced.traceable == ["DeviceFileEvents", "DeviceProcessEvents"]
    named = sorted(e for row in traced.events for e in row)
    assert ("DeviceFileEvents", "222000000001") in named
    assert ("DeviceProcessEvents", "111000000001") in named


def test_values_that_are_no_event_name_nothing(store: Store) -> None:
    traced = _trace(store, "DeviceProcessEvents | summarize ReportId = count() by DeviceName")
    assert traced.id_columns == {"ReportId": "ReportId"}
    assert all(row == [] for row in traced.events)


def test_an_id_column_of_a_table_not_read_names_nothing(store: Store) -> None:
    traced = _trace(store, "print ReportId = 111000000001")
    assert traced.tables == [] and traced.events == [[]]


def test_an_unlabelled_stored_id_is_traced(store: Store) -> None:
    # Background events have no label: the store itself says they exist.
    traced = _trace(store, "DeviceProcessEvents | where ReportId == 333000000001 | project ReportId")
    assert traced.events == [[("DeviceProcessEvents", "333000000001")]]


def test_a_shared_id_goes_to_the_preferred_table(store: Store) -> None:
    kql = "union AKSAudit, AKSAuditAdmin | distinct AuditId"
    assert _trace(store, kql).events == [[("AKSAudit", "a-1")]]
    assert _trace(store, kql, prefer={("AKSAuditAdmin", "a-1")}).events == [[("AKSAuditAdmin", "a-1")]]


def test_the_rules_gate_attributes_a_join_by_its_suffixed_id(store: Store) -> None:
    kql = ("DeviceFileEvents | join kind=inner (DeviceProcessEvents "
           "| where ProcessCommandLine has '77aa') on DeviceName | project ReportId, ReportId1")
    with store.engine() as engine:
        result = evaluate_kql(kql, engine, store.labels,
                              expected={"DeviceProcessEvents": ["111000000001", "111000000002"],
                                        "DeviceFileEvents": ["222000000001"]})
    assert result.attributable and result.tp == 3 and result.fp == 0, result.summary()
