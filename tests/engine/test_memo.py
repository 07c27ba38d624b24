"""The on-disk memo of translations and table references: served again, never stale, never fatal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ctirealm.engine import LocalEngine, geoip
from ctirealm.telemetry import attribution, memo

SCHEMAS = {
    "AKSAudit": [("AuditId", "string"), ("Verb", "string")],
    "SigninLogs": [("Id", "string"), ("UserPrincipalName", "string")],
}
ROWS = {"AKSAudit": [{"AuditId": "a", "Verb": "create"}, {"AuditId": "b", "Verb": "list"}]}


@pytest.fixture
def disk(tmp_path: Path):
    memo.use(tmp_path / "kql-memo")
    yield memo.current()
    memo.use(None)


def test_a_translation_is_remembered_on_disk_and_served_from_it(disk: memo.DiskMemo) -> None:
    engine = LocalEngine.from_tables(ROWS, SCHEMAS)
    query = "AKSAudit | where Verb == 'create' | project AuditId // memo test 1"
    first = engine.query(query)
    files = list(disk.root.rglob("*.pickle"))
    assert [f.parent.parent.name for f in files] == ["sql"]
    key = (query, engine._catalogue, True, geoip.available())  # as LocalEngine.translate keys it
    assert disk.get("sql", key) == engine.translate(query)
    assert [list(r) for r in first.rows] == [["a"]]


def test_a_remembered_translation_serves_another_process(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from ctirealm.engine import LocalEngine\n"
        "from ctirealm.telemetry import memo\n"
        "from ctirealm.engine import local\n"
        f"memo.use(__import__('pathlib').Path({str(tmp_path / 'm')!r}))\n"
        f"e = LocalEngine.from_tables({ROWS!r}, {SCHEMAS!r}, now='2026-03-15T00:00:00Z')\n"
        "called = []\n"
        "real = local.translate_kql\n"
        "local.translate_kql = lambda *a, **k: called.append(1) or real(*a, **k)\n"
        "print(e.query(\"AKSAudit | where Verb == 'list' | project AuditId\").rows, len(called))\n"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    assert runs[0][-1] == "1"  # translated, then remembered
    assert runs[1][-1] == "0"  # served from the folder, no translation
    assert runs[0][:-1] == runs[1][:-1]


def test_table_references_are_remembered(disk: memo.DiskMemo) -> None:
    query = "let x = AKSAudit | where Verb == 'get'; x | join (SigninLogs) on $left.AuditId == $right.Id"
    assert attribution.tables_in(query, ["AKSAudit", "SigninLogs"]) == ["AKSAudit", "SigninLogs"]
    assert disk.get("tables", query) == frozenset({"AKSAudit", "SigninLogs"})


def test_an_unreadable_entry_is_a_miss_and_an_unwritable_folder_no_memo(tmp_path: Path) -> None:
    folder = memo.DiskMemo(tmp_path / "m")
    folder.put("sql", "k", "SELECT 1")
    entry = next((tmp_path / "m").rglob("*.pickle"))
    entry.write_bytes(b"\x80\x05not a pickle")
    assert folder.get("sql", "k") is memo.MISS
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    memo.DiskMemo(blocked).put("sql", "k", "SELECT 1")  # no error
    assert memo.DiskMemo(blocked).get("sql", "k") is memo.MISS


def test_entries_are_keyed_by_the_code_that_made_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = memo.DiskMemo(tmp_path / "m")
    folder.put("sql", "k", "SELECT 1")
    assert folder.get("sql", "k") == "SELECT 1"
    monkeypatch.setattr(memo, "fingerprint", lambda: "another rewrite")
    assert folder.get("sql", "k") is memo.MISS


def test_a_store_engine_remembers_beside_the_store(tmp_path: Path, make_telemetry) -> None:
    from ctirealm.telemetry.dataset import Dataset
    from ctirealm.telemetry.store import build_store

    root = make_telemetry()
    try:
        store = build_store(Dataset.load(root), cache_dir=tmp_path / "cache", rows=0)
        with LocalEngine.of_store(store) as engine:
            engine.query("AKSAudit | count // memo test store")
        assert list((tmp_path / "cache" / "kql-memo" / "sql").rglob("*.pickle"))
    finally:
        memo.use(None)
