"""Test data beside detection content: reading exported files, ids and times, the overlay engine."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ctirealm.engine import LocalEngine
from ctirealm.plugin.content_data import ContentDataError, load_test_data, overlay_engine
from ctirealm.telemetry.dataset import Dataset
from ctirealm.telemetry.schema import load_schemas
from ctirealm.telemetry.store import Store, build_store

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 16, tzinfo=UTC)


@pytest.fixture(scope="module")
def schemas():
    return load_schemas(ROOT / "telemetry" / "schemas")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("telemetry")
    shutil.copytree(ROOT / "telemetry" / "schemas", root / "schemas")
    shutil.copy(ROOT / "telemetry" / "dataset.yaml", root / "dataset.yaml")
    events = root / "attack" / "sim" / "SigninLogs.jsonl"
    events.parent.mkdir(parents=True)
    events.write_text(
        json.dumps(
            {
                "Id": "stored-1",
                "TimeGenerated": "2026-03-05T10:00:00Z",
                "UserPrincipalName": "a@corp.example",
                "ResultType": "50126",
            }
        )
        + "\n"
    )
    return build_store(Dataset.load(root), cache_dir=tmp_path_factory.mktemp("cache"), rows=0)


def rule_with(tmp_path: Path, files: dict[str, str]) -> Path:
    rule = tmp_path / "spray.yaml"
    rule.write_text("id: x\n")
    for relative, text in files.items():
        path = tmp_path / "spray.tests" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return rule


def test_portal_csv_is_read_and_moved_before_the_clock(tmp_path: Path, schemas: dict) -> None:
    rule = rule_with(
        tmp_path,
        {
            "match/SigninLogs.csv": (
                "TimeGenerated [UTC],UserPrincipalName,ResultType,Status,_ResourceId\n"
                '"11/4/2025, 2:00:00.000 PM",b@corp.example,50126,"{""errorCode"": 50126}",/x\n'
                "2025-11-04T14:30:00Z,b@corp.example,50126,,/x\n"
            ),
            "nomatch/signinlogs.jsonl": json.dumps({"UserPrincipalName": "c@corp.example"}) + "\n",
            "tests.yaml": "max_false_positives: 3\n",
        },
    )
    data = load_test_data(rule, schemas, NOW)
    assert data is not None and data.max_false_positives == 3
    first, second = data.rows("match")["SigninLogs"]
    # The latest event lands 5 minutes before the clock; the spacing is kept.
    assert (first["TimeGenerated"], second["TimeGenerated"]) == (
        "2026-03-15T23:25:00Z",
        "2026-03-15T23:55:00Z",
    )
    assert first["Status"] == {"errorCode": 50126} and "Status" not in second
    assert first["Id"] == "ctirealm-test-match-000001"
    assert data.rows("nomatch")["SigninLogs"][0]["TimeGenerated"] == "2026-03-15T23:55:00Z"


def test_a_file_for_no_table_is_named(tmp_path: Path, schemas: dict) -> None:
    rule = rule_with(tmp_path, {"match/Signins.csv": "TimeGenerated\n2025-11-04T14:30:00Z\n"})
    with pytest.raises(ContentDataError, match=r"Signins.csv: no table named 'Signins'"):
        load_test_data(rule, schemas, NOW)


def test_a_bad_value_names_file_line_and_column(tmp_path: Path, schemas: dict) -> None:
    rule = rule_with(tmp_path, {"match/DeviceProcessEvents.jsonl": '{"ProcessId": "twelve"}\n'})
    with pytest.raises(ContentDataError, match=r"DeviceProcessEvents.jsonl:1: column 'ProcessId'"):
        load_test_data(rule, schemas, NOW)


def test_the_overlay_adds_events_without_touching_the_store(store: Store) -> None:
    engine = LocalEngine.of_store(store)
    overlay = overlay_engine(
        store.path,
        engine.schemas,
        store.now,
        {
            "SigninLogs": [
                {
                    "Id": "test-1",
                    "TimeGenerated": "2026-03-15T23:55:00Z",
                    "UserPrincipalName": "b@corp.example",
                    "ResultType": "50126",
                }
            ]
        },
    )
    query = "SigninLogs | where ResultType == '50126' | project Id, UserPrincipalName | order by Id asc"
    try:
        assert overlay.query(query).to_dicts() == [
            {"Id": "stored-1", "UserPrincipalName": "a@corp.example"},
            {"Id": "test-1", "UserPrincipalName": "b@corp.example"},
        ]
        # Kusto's empty strings hold for the test rows too.
        empty = overlay.query("SigninLogs | where AppDisplayName == '' | count").to_dicts()
        assert empty == [{"Count": 2}]
    finally:
        overlay.close()
    assert [r["Id"] for r in engine.query(query).to_dicts()] == ["stored-1"]
    engine.close()
