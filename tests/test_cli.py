"""The ctirealm command: telemetry info, query output, and clean errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

from ctirealm.cli import main
from tests.helpers import process_event


def _args(root: Path, tmp_path: Path) -> list[str]:
    return ["--telemetry", str(root), "--rows", "0", "--cache-dir", str(tmp_path / "cache")]


def test_info_and_query(make_telemetry, tmp_path: Path, capsys) -> None:
    root = make_telemetry({"s": {"DeviceProcessEvents": [process_event(111111111111, "id -a")]}})
    assert main(["telemetry", "info", "--json", *_args(root, tmp_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"]["DeviceProcessEvents"] == 1
    assert info["attack_events"]["DeviceProcessEvents"] == 1
    assert info["now"] == "2026-03-16T00:00:00Z"
    assert (
        main(["query", "--json", "DeviceProcessEvents | project ReportId, Timestamp", *_args(root, tmp_path)])
        == 0
    )
    table = json.loads(capsys.readouterr().out)["Tables"][0]
    assert table["Columns"][0] == {"ColumnName": "ReportId", "DataType": "Int64", "ColumnType": "long"}
    assert table["Rows"] == [[111111111111, "2026-03-05T10:00:00Z"]]


def test_query_errors_are_one_line_with_exit_2(make_telemetry, tmp_path: Path, capsys) -> None:
    root = make_telemetry()
    assert main(["query", "DeviceProcessEvents | where Nope == 1", *_args(root, tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "ctirealm: error: semantic error at 1:29: unknown column 'Nope'"
    assert main(["query", ".drop table SigninLogs", *_args(root, tmp_path)]) == 2
    assert "control command '.drop' refused" in capsys.readouterr().err
