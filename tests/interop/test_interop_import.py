"""``ctirealm import cti-realm`` on a made-up dataset in the exact upstream layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from interop_helpers import UPSTREAM

from ctirealm.cases import load_cases
from ctirealm.cases.upstream import (
    UpstreamFormatError,
    import_cti_realm,
    resolve_type,
    sanitize_column,
)
from ctirealm.cli import main
from ctirealm.engine import LocalEngine
from ctirealm.telemetry.labels import Labels
from ctirealm.telemetry.schema import load_schemas
from ctirealm.telemetry.store import Store


def test_import_produces_cases_reports_and_telemetry(imported: Path, imported_store: Store) -> None:
    summary = json.loads((imported / "import.json").read_text())
    assert summary["warnings"] == []
    cases = load_cases(imported / "cases", tables=set(imported_store.meta["schemas"]))
    assert cases.errors == []
    assert sorted(cases.cases) == ["aks_001", "cloud_001", "cloud_002", "linux_001"]
    linux = cases.cases["linux_001"]
    assert linux.source == "cti-realm" and linux.imported
    assert linux.subsets == ("realm-25", "realm-50")
    assert cases.cases["cloud_002"].subsets == ("realm-50",)
    assert linux.ground_truth.techniques == ("T1053",)
    assert linux.ground_truth.regex_patterns == {"ProcessCommandLine": ".*c0ffee11-persist.*"}
    assert linux.objective.startswith("Detect persistence through cron")
    # attack events: the rows every applicable pattern matches
    counts = {c: v.ground_truth.attack_event_count() for c, v in cases.cases.items()}
    assert counts == {"aks_001": 4, "cloud_001": 3, "cloud_002": 2, "linux_001": 5}
    assert cases.cases["cloud_001"].ground_truth.tables == ("SignInLogs",)
    assert len(cases.reports) == 3 and cases.tags()["credential access"] == 2
    # upstream table names and column sanitisation
    schemas = load_schemas(imported / "telemetry" / "schemas")
    assert sorted(schemas) == [
        "AKSAudit",
        "DeviceFileEvents",
        "DeviceProcessEvents",
        "SignInLogs",
        "StorageBlobLogs",
    ]
    signin = dict(schemas["SignInLogs"].columns)
    assert signin["ResourceId"] == "string" and signin["Client_App"] == "string"
    assert signin["Properties_Status"] == "dynamic" and signin["IsInteractive"] == "bool"
    assert signin["TimeGenerated"] == "datetime"
    assert "_ResourceId" not in signin
    assert dict(schemas["AKSAudit"].columns)["ObjectRef_Resource"] == "string"
    assert dict(schemas["AKSAudit"].columns)["Level"] == "string"
    assert schemas["DeviceProcessEvents"].id_column == "ReportId"
    assert dict(schemas["DeviceProcessEvents"].columns)["ReportId"] == "long"  # beyond 32 bits
    assert dict(schemas["DeviceProcessEvents"].columns)["ProcessId"] == "int"
    # repeating CorrelationIds: a synthetic id column is added
    assert schemas["StorageBlobLogs"].id_column == "RealmEventId"
    assert summary["tables"]["StorageBlobLogs"]["id_synthetic"] is True
    # the store: every row, attack rows labelled, the dataset clock from the data
    assert imported_store.rows == {
        "AKSAudit": 100,
        "DeviceFileEvents": 20,
        "DeviceProcessEvents": 120,
        "SignInLogs": 80,
        "StorageBlobLogs": 60,
    }
    assert len(imported_store.labels.ids("attack")) == 14
    assert imported_store.meta["now"] == "2025-06-07T00:00:00Z"
    with LocalEngine.of_store(imported_store) as engine:
        rows = engine.query("SignInLogs | where UserAgent has 'c1oud-spray-77' | count").rows
        assert rows == [(3,)]
    # upstream extras kept as they were
    assert json.loads((imported / "upstream" / "sigma_rules.json").read_text())[0]["title"]
    assert (imported / "upstream" / "seed_memory" / "workflow.md").is_file()


def test_sanitising_and_type_inference() -> None:
    assert sanitize_column("_ResourceId") == "ResourceId"
    assert sanitize_column("Properties.Status") == "Properties_Status"
    assert sanitize_column("[Level]") == "Level"
    assert sanitize_column("Client App (v2);x,y{z}") == "Client_App_v2_x_y_z"
    assert resolve_type({"int"}) == "int"  # upstream's type for integers
    assert resolve_type({"int", "long"}) == "long"  # one value beyond 32 bits
    assert resolve_type({"int", "float"}) == "real"
    assert resolve_type({"datetime"}) == "datetime"
    assert resolve_type({"datetime", "string"}) == "string"
    assert resolve_type({"bool", "string"}) == "dynamic"
    assert resolve_type(set()) == "string"


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "src"
    shutil.copytree(UPSTREAM, target)
    return target / "cti_realm"


def _edit_jsonl(path: Path, change: Any) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    change(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_missing_files_and_unexpected_fields_name_the_file(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    (root / "cti_reports" / "reports.jsonl").unlink()
    with pytest.raises(UpstreamFormatError, match=r"reports\.jsonl: missing"):
        import_cti_realm(root.parent, tmp_path / "out1")

    root = _copy(tmp_path / "b")
    (root / "data" / "dataset_answers_stratified_25.jsonl").unlink()
    with pytest.raises(UpstreamFormatError, match=r"dataset_answers_stratified_25\.jsonl: missing"):
        import_cti_realm(root, tmp_path / "out2")

    root = _copy(tmp_path / "c")
    samples = root / "data" / "dataset_samples_stratified_50.jsonl"
    _edit_jsonl(samples, lambda rows: rows[1]["ground_truth"].update(severity="high"))
    with pytest.raises(
        UpstreamFormatError,
        match=r"stratified_50\.jsonl:2: ground_truth: unexpected "
        r"field\(s\) severity",
    ):
        import_cti_realm(root, tmp_path / "out3")
    result = import_cti_realm(root, tmp_path / "out3", lenient=True)
    assert any("severity" in w for w in result.warnings)

    root = _copy(tmp_path / "d")
    (root / "kusto_data" / "mystery.jsonl").write_text('{"a": 1}\n')
    with pytest.raises(UpstreamFormatError, match=r"mystery\.jsonl: unexpected table file"):
        import_cti_realm(root, tmp_path / "out4")

    root = _copy(tmp_path / "e")
    _edit_jsonl(
        root / "data" / "dataset_samples_stratified_50.jsonl",
        lambda rows: [
            r["ground_truth"].update(data_sources=["NoSuchTable"]) for r in rows if r["id"] == "cloud_001"
        ],
    )
    with pytest.raises(UpstreamFormatError, match="NoSuchTable"):
        import_cti_realm(root, tmp_path / "out5")

    with pytest.raises(UpstreamFormatError, match="not an upstream CTI-REALM layout"):
        import_cti_realm(tmp_path, tmp_path / "out6")


def test_a_case_whose_patterns_match_nothing_keeps_empty_attack_events(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    for subset in ("25", "50"):
        _edit_jsonl(
            root / "data" / f"dataset_samples_stratified_{subset}.jsonl",
            lambda rows: [
                r["ground_truth"]["regex_patterns"].update(ProcessCommandLine=".*never-seen.*")
                for r in rows
                if r["id"] == "linux_001"
            ],
        )
    result = import_cti_realm(root, tmp_path / "out")
    assert any("linux_001: no event matches" in w for w in result.warnings)
    case = yaml.safe_load((tmp_path / "out" / "cases" / "linux" / "linux_001.yaml").read_text())
    assert case["ground_truth"]["attack_events"] == {} and case["source"] == "cti-realm"
    loaded = load_cases(tmp_path / "out" / "cases")
    assert loaded.errors == [] and loaded.cases["linux_001"].ground_truth.attack_event_count() == 0
    # without the imported flag, the case must find attack events in each split's labels
    # (a scenario of its own): with none, a run fails it as a telemetry problem
    case.pop("source")
    (tmp_path / "out" / "cases" / "linux" / "linux_001.yaml").write_text(yaml.safe_dump(case))
    native = load_cases(tmp_path / "out" / "cases").cases["linux_001"]
    assert not native.imported and native.bound(Labels()).ground_truth.attack_event_count() == 0


def test_cli_import_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "imp"
    assert main(["import", "cti-realm", str(UPSTREAM), "--out", str(out)]) == 0
    assert "imported 4 cases, 3 reports, 5 tables" in capsys.readouterr().out
    assert main(["import", "cti-realm", str(UPSTREAM), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["import", "cti-realm", str(UPSTREAM), "--out", str(out), "--force"]) == 0
