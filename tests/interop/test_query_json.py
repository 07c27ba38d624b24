"""``ctirealm query --json``: Kusto's v1 JSON for every column type, guids included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ctirealm.cli import main
from tests.helpers import process_event

GUID = "0b2f8a4e-1111-2222-3333-444455556666"


def test_guid_columns_serialise_as_their_text(make_telemetry: Any, tmp_path: Path, capsys: Any) -> None:
    root = make_telemetry({"s": {"DeviceProcessEvents": [process_event(111111111111, "id -a")]}})
    args = ["--telemetry", str(root), "--rows", "0", "--cache-dir", str(tmp_path / "cache")]
    assert (
        main(
            [
                "query",
                "--json",
                f"print g = toguid('{GUID}'), t = datetime(2026-01-01 00:00:00.5), w = datetime(2026-01-01)",
                *args,
            ]
        )
        == 0
    )
    table = json.loads(capsys.readouterr().out)["Tables"][0]
    assert table["Columns"][0] == {"ColumnName": "g", "DataType": "Guid", "ColumnType": "guid"}
    assert table["Rows"] == [[GUID, "2026-01-01T00:00:00.5000000Z", "2026-01-01T00:00:00Z"]]
    assert main(["query", "--json", "DeviceProcessEvents | extend g = new_guid() | project g", *args]) == 0
    rows = json.loads(capsys.readouterr().out)["Tables"][0]["Rows"]
    assert len(rows) == 1 and len(rows[0][0]) == 36 and rows[0][0].count("-") == 4
