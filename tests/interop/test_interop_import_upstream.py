"""``ctirealm import cti-realm`` on inputs shaped like the real upstream files.

Covers the upstream ``simulation`` field, the ``download_data.py`` layout,
upstream's column renaming and per-table labelling. Fixtures are the small
made-up dataset, edited here into each shape.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from interop_helpers import UPSTREAM

from ctirealm.cases import load_cases
from ctirealm.cases.upstream import (
    UPSTREAM_TABLES,
    UpstreamFormatError,
    find_layout,
    import_cti_realm,
    sanitize_column,
)
from ctirealm.cli import main
from ctirealm.telemetry.schema import load_schemas

SIMULATIONS = {
    "linux_001": "cron_persistence",
    "aks_001": "k8s_dump_secrets",
    "cloud_001": "password_spray",
    "cloud_002": "password_spray",
}


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "src"
    shutil.copytree(UPSTREAM, target)
    return target / "cti_realm"


def _edit_jsonl(path: Path, change: Any) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    change(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _edit_samples(root: Path, change: Any) -> None:
    for subset in ("25", "50"):
        _edit_jsonl(
            root / "data" / f"dataset_samples_stratified_{subset}.jsonl",
            lambda rows: [change(r) for r in rows],
        )


def _case(out: Path, case_id: str) -> dict[str, Any]:
    platform = case_id.split("_", 1)[0]
    return yaml.safe_load((out / "cases" / platform / f"{case_id}.yaml").read_text())


# --------------------------------------------------------------------------- simulation


def test_simulation_is_kept_without_lenient(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _edit_samples(root, lambda r: r.update(simulation=SIMULATIONS[r["id"]]))
    result = import_cti_realm(root.parent, tmp_path / "out")
    assert result.warnings == []
    assert {c: v["simulation"] for c, v in result.cases.items()} == SIMULATIONS
    assert _case(tmp_path / "out", "cloud_002")["upstream"]["simulation"] == "password_spray"
    assert _case(tmp_path / "out", "linux_001")["upstream"]["simulation"] == "cron_persistence"
    summary = json.loads((tmp_path / "out" / "import.json").read_text())
    assert summary["cases"]["aks_001"]["simulation"] == "k8s_dump_secrets"
    assert load_cases(tmp_path / "out" / "cases").errors == []


def test_simulation_must_be_text_and_agree_across_subsets(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _edit_samples(root, lambda r: r.update(simulation=["not", "text"]))
    with pytest.raises(UpstreamFormatError, match="simulation must be text"):
        import_cti_realm(root, tmp_path / "out")

    root = _copy(tmp_path / "b")
    _edit_jsonl(
        root / "data" / "dataset_samples_stratified_25.jsonl",
        lambda rows: [r.update(simulation="one") for r in rows],
    )
    _edit_jsonl(
        root / "data" / "dataset_samples_stratified_50.jsonl",
        lambda rows: [r.update(simulation="two") for r in rows],
    )
    with pytest.raises(UpstreamFormatError, match="differs from its entry"):
        import_cti_realm(root, tmp_path / "out2")


# --------------------------------------------------------------------------- layouts


def _download_layout(tmp_path: Path) -> Path:
    """The folders ``download_data.py`` writes: telemetry under docker/kusto_init/data/."""
    root = _copy(tmp_path)
    target = root / "docker" / "kusto_init" / "data"
    target.parent.mkdir(parents=True)
    shutil.move(root / "kusto_data", target)
    return root


def test_the_download_data_layout_imports_like_the_snapshot(tmp_path: Path) -> None:
    root = _download_layout(tmp_path)
    layout = find_layout(root)
    assert layout.kind == "download" and layout.telemetry == root / "docker" / "kusto_init" / "data"
    assert find_layout(root.parent).kind == "download"
    assert find_layout(UPSTREAM).kind == "snapshot"
    got = import_cti_realm(root, tmp_path / "out")
    want = import_cti_realm(UPSTREAM, tmp_path / "ref")
    assert got.warnings == want.warnings == []
    assert {c: v["attack_events"] for c, v in got.cases.items()} == {
        c: v["attack_events"] for c, v in want.cases.items()
    }
    assert sorted(got.tables) == sorted(want.tables)
    assert (tmp_path / "out" / "upstream" / "seed_memory" / "workflow.md").is_file()


def test_neither_layout_names_both(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    shutil.rmtree(root / "kusto_data")
    with pytest.raises(UpstreamFormatError) as caught:
        import_cti_realm(root, tmp_path / "out")
    assert "cti_realm/kusto_data/" in str(caught.value)
    assert "docker/kusto_init/data/" in str(caught.value)


# --------------------------------------------------------------------------- column names

NAMES = [
    "a[0]",
    "[Level]",
    "_ResourceId",
    "Properties.Status",
    "Client App (v2);x,y{z}",
    "a__b",
    "x[1].y[2]",
    "1st",
    "9",
    "[]",
    "__",
    "Ok",
    "a b  c",
    "(x)",
    "props{0}.v",
]


def _upstream_loader(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Upstream's loader module; it imports siblings as top-level modules (it runs as a script)."""
    try:
        spec = importlib.util.find_spec("inspect_evals.cti_realm.docker.kusto_init")
    except ImportError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("inspect_evals' CTI-REALM kusto_init is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)))
    # its imports resolve as in the container: the script's folder and the eval's folder
    monkeypatch.syspath_prepend(str(folder.parent.parent))
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    try:
        module = importlib.import_module("init_kusto")
    except ImportError as exc:
        pytest.skip(f"upstream's init_kusto does not import here: {exc}")
    finally:
        # its sibling modules were imported under bare names: do not leave them to other tests
        for name in set(sys.modules) - before:
            if "." not in name and name in ("init_kusto", "data_loader", "runtime_state", "kusto_tables"):
                del sys.modules[name]
    return module


def test_column_names_follow_upstreams_function(monkeypatch: pytest.MonkeyPatch) -> None:
    normalize = _upstream_loader(monkeypatch).normalize_field_name
    for name in NAMES:
        assert sanitize_column(name) == normalize(name), name


def test_column_names_without_upstream() -> None:
    assert sanitize_column("a[0]") == "a0"
    assert sanitize_column("a__b") == "a_b"
    assert sanitize_column("1st") == "Field_1st"
    assert sanitize_column("[]") == "Unknown_Field"
    assert sanitize_column("x[1].y[2]") == "x1_y2"


def test_column_types_follow_upstreams_inference(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Upstream's own schema inference over every table file: the same type per column, except
    an integer beyond 32 bits, which upstream declares ``int`` (its ingestion then fails) and
    the importer ``long``."""
    loader = _upstream_loader(monkeypatch)
    root = _copy(tmp_path)
    import_cti_realm(root, tmp_path / "out")
    schemas = load_schemas(tmp_path / "out" / "telemetry" / "schemas")
    compared = 0
    for path in sorted((root / "kusto_data").glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        ours = dict(schemas[UPSTREAM_TABLES[path.stem]].columns)
        # every row, as the importer reads them (upstream samples the first ten)
        upstream = loader.analyze_jsonl_schema(path, sample_size=len(rows))
        for column, kind in upstream.items():
            values = [r[k] for r in rows for k in r if sanitize_column(k) == column and r[k] is not None]
            wide = any(
                isinstance(v, int) and not isinstance(v, bool) and not -(2**31) <= v < 2**31 for v in values
            )
            expected = "long" if kind == "int" and wide else kind
            if kind == "string" and not values:
                continue  # all null: both say string
            assert ours[column] == expected, (path.name, column, kind, ours[column])
            compared += 1
    assert compared > 40
    assert ours and "int" in {t for s in schemas.values() for _, t in s.columns}


def test_imported_schema_uses_upstream_names(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _edit_jsonl(
        root / "kusto_data" / "signinlogs.jsonl",
        lambda rows: [r.update({"Tags[0]": "x", "2fa": True, "Geo__City": "Oslo"}) for r in rows],
    )
    result = import_cti_realm(root, tmp_path / "out")
    columns = dict(load_schemas(tmp_path / "out" / "telemetry" / "schemas")["SignInLogs"].columns)
    assert {"Tags0", "Field_2fa", "Geo_City"} <= set(columns)
    assert result.tables["SignInLogs"]["renamed_columns"]["Tags[0]"] == "Tags0"


# --------------------------------------------------------------------------- labelling


def test_patterns_do_not_leak_into_tables_lacking_their_columns(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    # a sign-in whose user agent matches aks_001's UserAgent pattern: SignInLogs has no
    # ObjectRef_Resource column, so labelling it by UserAgent alone would be wrong
    _edit_jsonl(
        root / "kusto_data" / "signinlogs.jsonl", lambda rows: rows[0].update(UserAgent="kubectl sim-9d2b41")
    )
    _edit_samples(
        root,
        lambda r: (
            r["ground_truth"].update(data_sources=["AKSAudit", "SignInLogs"])
            if r["id"] == "aks_001"
            else None
        ),
    )
    result = import_cti_realm(root, tmp_path / "out")
    labelling = result.cases["aks_001"]["labelling"]
    assert labelling["events"] == 4
    assert labelling["tables"]["AKSAudit"] == {
        "events": 4,
        "patterns": {"UserAgent": "UserAgent", "ObjectRef_Resource": "ObjectRef_Resource"},
    }
    assert "ObjectRef_Resource" in labelling["tables"]["SignInLogs"]["refused"]
    assert result.warnings == []  # the other table was labelled; the refusal is in the report
    assert list(_case(tmp_path / "out", "aks_001")["ground_truth"]["attack_events"]) == ["AKSAudit"]
    assert result.tables["SignInLogs"]["attack_rows"] == 3  # cloud_001's, as before


def test_a_table_missing_a_pattern_column_is_not_labelled(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _edit_samples(
        root,
        lambda r: (
            r["ground_truth"]["regex_patterns"].update(NoSuchColumn=".*") if r["id"] == "cloud_001" else None
        ),
    )
    result = import_cti_realm(root, tmp_path / "out")
    assert result.cases["cloud_001"]["attack_events"] == 0
    assert result.cases["cloud_001"]["labelling"]["events"] == 0
    assert "NoSuchColumn" in result.cases["cloud_001"]["labelling"]["tables"]["SignInLogs"]["refused"]
    assert any("cloud_001: no table has the columns of all its patterns" in w for w in result.warnings)


def test_nested_and_renamed_pattern_columns(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    # upstream spells nested fields with a dot: a path into a dynamic column, or the
    # flat column upstream's renaming makes of it, names compared case-insensitively
    _edit_samples(
        root,
        lambda r: (
            r["ground_truth"].update(
                regex_patterns={
                    "ObjectRef.resource": "^secrets$",
                    "User.username": "^system:serviceaccount:web:",
                    "useragent": ".*sim-9d2b41.*",
                }
            )
            if r["id"] == "aks_001"
            else None
        ),
    )
    result = import_cti_realm(root, tmp_path / "out")
    entry = result.cases["aks_001"]["labelling"]["tables"]["AKSAudit"]
    assert entry["patterns"] == {
        "ObjectRef.resource": "ObjectRef_Resource",
        "User.username": "User.username",
        "useragent": "UserAgent",
    }
    rows = [json.loads(line) for line in (root / "kusto_data" / "aksaudit.jsonl").read_text().splitlines()]
    want = sum(
        1
        for r in rows
        if r["ObjectRef.Resource"] == "secrets"
        and r["User"]["username"].startswith("system:serviceaccount:web:")
        and "sim-9d2b41" in r["UserAgent"]
    )
    assert want > 0 and entry["events"] == want == result.cases["aks_001"]["attack_events"]


def test_cli_prints_labelling_per_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(tmp_path)
    _edit_samples(root, lambda r: r.update(simulation=SIMULATIONS[r["id"]]))
    assert main(["import", "cti-realm", str(root), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "aks_001 [simulation k8s_dump_secrets]: 4 events" in out
    assert "AKSAudit: 4 events by UserAgent -> UserAgent, ObjectRef_Resource -> ObjectRef_Resource" in out


def test_a_two_table_case_shaped_like_upstreams_linux_cases(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    # upstream's linux cases list both device tables and spell pattern keys in lower case;
    # DeviceFileEvents has FileName but no ProcessCommandLine, so it must stay unlabelled
    _edit_samples(
        root,
        lambda r: (
            r["ground_truth"].update(
                data_sources=["DeviceProcessEvents", "DeviceFileEvents"],
                regex_patterns={"filename": ".*", "processcommandline": ".*c0ffee11-persist.*"},
            )
            if r["id"] == "linux_001"
            else None
        ),
    )
    result = import_cti_realm(root, tmp_path / "out")
    tables = result.cases["linux_001"]["labelling"]["tables"]
    assert tables["DeviceProcessEvents"]["events"] == 5
    assert tables["DeviceProcessEvents"]["patterns"] == {
        "filename": "FileName",
        "processcommandline": "ProcessCommandLine",
    }
    assert tables["DeviceFileEvents"] == {
        "events": 0,
        "patterns": {},
        "refused": "no column for pattern(s) processcommandline",
    }
    assert result.tables["DeviceFileEvents"]["attack_rows"] == 0
    assert result.warnings == []
