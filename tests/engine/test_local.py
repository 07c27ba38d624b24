"""LocalEngine's API: construction, catalogue, results, errors, caching and the rewrite hook."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ctirealm.engine import (
    Engine,
    EngineError,
    KqlSemanticError,
    KqlSyntaxError,
    KqlUnsupportedError,
    LocalEngine,
    QueryResult,
    rewrite,
)

NOW = "2026-03-16T00:00:00Z"


def _store(path: Path) -> Path:
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE Events AS SELECT TIMESTAMP '2026-03-15 10:00:00' AS Timestamp, "
        "'x' AS Name, NULL::VARCHAR AS Note, '{\"a\": [1, 2]}'::JSON AS Extra, 7 AS Id"
    )
    con.close()
    meta = {
        "now": NOW,
        "schemas": {
            "Events": {
                "id_column": "Id",
                "time_column": "Timestamp",
                "columns": [
                    ["Timestamp", "datetime"],
                    ["Name", "string"],
                    ["Note", "string"],
                    ["Extra", "dynamic"],
                    ["Id", "int"],
                ],
            }
        },
    }
    path.with_suffix(".meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return path


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return _store(tmp_path / "events.duckdb")


def test_open_reads_schemas_and_clock(store: Path) -> None:
    with LocalEngine.open(store) as engine:
        assert isinstance(engine, Engine)
        assert engine.tables() == ["Events"]
        assert engine.schema("Events")[0] == ("Timestamp", "datetime")
        assert engine.query("print n = now()").rows == [(datetime(2026, 3, 16, tzinfo=UTC),)]
        with pytest.raises(KqlSemanticError):
            engine.schema("Nope")


def test_the_same_store_opens_twice_in_one_process(store: Path) -> None:
    first = LocalEngine.open(store, memory_limit="512MB")
    second = LocalEngine.open(store, memory_limit="256MB", timeout=3.0)
    try:
        assert first.query("Events | count").rows == second.query("Events | count").rows
    finally:
        first.close()
        second.close()


def test_a_store_without_sidecar_reads_the_catalogue(tmp_path: Path) -> None:
    path = tmp_path / "bare.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE T AS SELECT 1::BIGINT AS n, 'a' AS s")
    con.close()
    with LocalEngine.open(path) as engine:
        assert engine.schema("T") == [("n", "long"), ("s", "string")]
        assert engine.query("T | where s == 'a' | project n").rows == [(1,)]


def test_missing_strings_read_as_empty(store: Path) -> None:
    with LocalEngine.open(store) as engine:
        assert engine.query("Events | where Note == '' | count").rows == [(1,)]
        assert engine.query("Events | project Note").rows == [("",)]


def test_result_shapes(store: Path) -> None:
    with LocalEngine.open(store) as engine:
        result = engine.query("Events | project Timestamp, Name, Extra, Id")
    assert isinstance(result, QueryResult)
    assert result.columns == [
        ("Timestamp", "datetime"),
        ("Name", "string"),
        ("Extra", "dynamic"),
        ("Id", "int"),
    ]
    assert result.to_dicts() == [
        {
            "Timestamp": datetime(2026, 3, 15, 10, tzinfo=UTC),
            "Name": "x",
            "Extra": {"a": [1, 2]},
            "Id": 7,
        }
    ]
    table = result.to_kusto_json()["Tables"][0]
    assert [c["DataType"] for c in table["Columns"]] == ["DateTime", "String", "Object", "Int32"]
    assert table["Rows"] == [["2026-03-15T10:00:00Z", "x", {"a": [1, 2]}, 7]]
    json.loads(result.to_json())


def test_limit_and_truncation(store: Path) -> None:
    with LocalEngine.open(store, max_rows=5) as engine:
        result = engine.query("range x from 1 to 10 step 1")
        assert len(result) == 5 and result.truncated
        assert len(engine.query("range x from 1 to 10 step 1", limit=3)) == 3
        assert len(engine.query("range x from 1 to 10 step 1", limit=50)) == 5


def test_translation_is_cached(store: Path) -> None:
    with LocalEngine.open(store) as engine:
        first = engine.translate("Events | count")
        assert engine.translate("Events | count") is first


def test_engines_of_one_catalogue_share_translations(tmp_path: Path) -> None:
    """The dev and test stores of a dataset parse each query once; another catalogue does not
    reuse a translation made for different columns."""
    with (
        LocalEngine.open(_store(tmp_path / "a.duckdb")) as a,
        LocalEngine.open(_store(tmp_path / "b.duckdb")) as b,
    ):
        assert a.translate("Events | where Name == 'x'") is b.translate("Events | where Name == 'x'")
    other = LocalEngine.from_tables(
        tables={"Events": [{"Id": 1, "Name": "x"}]},
        schemas={"Events": [("Id", "long"), ("Name", "string")]},
        now=NOW,
    )
    with LocalEngine.open(_store(tmp_path / "c.duckdb")) as c:
        assert other.translate("Events | where Name == 'x'") is not c.translate("Events | where Name == 'x'")
        assert other.query("Events | where Name == 'x'").column_names == ["Id", "Name"]


@pytest.mark.parametrize("bad", ["", "   ", None, 42])
def test_non_queries_are_syntax_errors(store: Path, bad: object) -> None:
    with LocalEngine.open(store) as engine, pytest.raises(KqlSyntaxError):
        engine.query(bad)  # type: ignore[arg-type]


def test_from_tables_validates_its_input() -> None:
    with pytest.raises(ValueError, match="without a schema"):
        LocalEngine.from_tables(tables={"T": [{"a": 1}]}, schemas={})
    with pytest.raises(ValueError, match="unknown Kusto type"):
        LocalEngine.from_tables(tables={}, schemas={"T": [("a", "varchar")]})
    with pytest.raises(ValueError, match="row 0"):
        LocalEngine.from_tables(tables={"T": [{"a": "x"}]}, schemas={"T": [("a", "long")]})
    with pytest.raises(ValueError, match="differ only in case"):
        LocalEngine.from_tables(tables={}, schemas={"T": [("a", "long")], "t": [("a", "long")]})


def test_every_error_is_an_engine_error_with_a_position() -> None:
    engine = LocalEngine.from_tables(tables={}, schemas={"T": [("a", "long")]}, now=NOW)
    for kql in ("T | wher a > 1", "T | where b > 1", "T | evaluate autocluster()"):
        with pytest.raises(EngineError) as info:
            engine.query(kql)
        assert info.value.line == 1 and info.value.column is not None, str(info.value)
        assert f"at 1:{info.value.column}" in str(info.value)


def test_rewrites_can_be_removed_and_restored() -> None:
    engine = LocalEngine.from_tables(
        tables={"T": [{"a": 1, "b": 2}]}, schemas={"T": [("a", "long"), ("b", "long")]}, now=NOW
    )
    assert engine.query("T | project-reorder b").column_names == ["b", "a"]
    with rewrite.disabled():
        assert not rewrite.installed()
        fresh = LocalEngine.from_tables(
            tables={"T": [{"a": 1, "b": 2}]}, schemas={"T": [("a", "long"), ("b", "long")]}
        )
        with pytest.raises(KqlUnsupportedError):
            fresh.query("T | project-reorder b")
    assert rewrite.installed()
    assert fresh.query("T | project-reorder b").column_names == ["b", "a"]


def test_kusto_function_names() -> None:
    assert rewrite.is_kusto_function("geo_info_from_ip_address")
    assert rewrite.is_kusto_function("ARG_MAX")
    assert not rewrite.is_kusto_function("read_csv")


@pytest.mark.parametrize("id_type", ["long", "string"])
def test_lookup_returns_what_the_kql_in_filter_returns(id_type: str) -> None:
    """Scoring's id look-up binds the ids instead of parsing them: the same rows and columns."""
    ids = [f"{100000000000 + n * 7}" for n in range(60)]
    rows = [
        {"Id": int(i) if id_type == "long" else i, "Name": f"n{k}", "Timestamp": NOW}
        for k, i in enumerate(ids)
    ]
    engine = LocalEngine.from_tables(
        tables={"T": rows},
        schemas={"T": [("Id", id_type), ("Timestamp", "datetime"), ("Name", "string")]},
    )
    wanted = [*ids[::3], "999", "not-an-id", "O'Brien"]
    literals = ", ".join(
        i if id_type == "long" and i.isdigit() else "'" + i.replace("'", "\\'") + "'"
        for i in wanted
        if id_type == "string" or i.isdigit()
    )
    by_kql = engine.query(f"T | where Id in ({literals})", limit=1000)
    by_lookup = engine.lookup("T", wanted)
    assert by_lookup.column_names == by_kql.column_names
    assert sorted(map(str, by_lookup.rows)) == sorted(map(str, by_kql.rows))
    assert len(by_lookup.rows) == 20
    assert engine.lookup("T", wanted, ids_only=True).column_names == ["Id"]


def test_uninstall_restores_duckdb_kql_exactly() -> None:
    from duckdb_kql import lower, schema, translate
    from duckdb_kql.translate import functions

    def snapshot() -> tuple[Any, ...]:
        return (
            dict(translate._SPECIAL_FORMS),
            dict(functions.SCALAR_FUNCTIONS),
            dict(functions.AGGREGATE_FUNCTIONS),
            {
                name: getattr(module, name)
                for module in (lower, schema, translate)
                for name in dir(module)
                if not name.startswith("__")
            },
        )

    rewrite.install()
    with rewrite.disabled():
        shipped = snapshot()
        assert "makeset" not in functions.AGGREGATE_FUNCTIONS
    assert "makeset" in functions.AGGREGATE_FUNCTIONS
    rewrite.uninstall()
    try:
        assert snapshot() == shipped
    finally:
        rewrite.install()


def test_importing_the_engine_installs_nothing_until_an_engine_is_made() -> None:
    code = (
        "from ctirealm.engine import local, rewrite\n"
        "assert not rewrite.installed()\n"
        "local.LocalEngine.from_tables(tables={}, schemas={'T': [('a', 'long')]})\n"
        "assert rewrite.installed()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# evaluate bag_unpack: its columns are the keys found in the data, so it needs the engine
# (translation reads them from the store) and is tested here rather than in the conformance
# suite, which also runs through `ctirealm serve` (where it is refused).


def test_bag_unpack_makes_a_column_per_key(engine: LocalEngine) -> None:
    result = engine.query(
        "Proc | where ReportId in (1, 2) | project ReportId, AdditionalFields "
        "| evaluate bag_unpack(AdditionalFields) | order by ReportId asc"
    )
    assert result.columns == [
        ("ReportId", "long"),
        ("net", "dynamic"),
        ("tags", "dynamic"),
        ("tty", "dynamic"),
        ("uid", "dynamic"),
    ]
    assert result.rows == [
        (1, None, ["interactive", "ssh"], "pts/0", 0),
        (2, {"dst": "198.51.100.7", "port": 80}, None, None, 0),
    ]


def test_bag_unpack_with_a_prefix_then_filtered(engine: LocalEngine) -> None:
    result = engine.query(
        "Proc | project ReportId, AdditionalFields "
        '| evaluate bag_unpack(AdditionalFields, "af_") '
        "| where toint(af_uid) >= 998 | project ReportId, af_uid"
    )
    assert sorted(result.rows) == [(4, 1000), (5, 998)]


def test_bag_unpack_of_no_rows_removes_the_bag(engine: LocalEngine) -> None:
    result = engine.query(
        "Proc | where ReportId < 0 | project ReportId, AdditionalFields "
        "| evaluate bag_unpack(AdditionalFields)"
    )
    assert result.column_names == ["ReportId"] and result.rows == []


def test_bag_unpack_key_naming_an_existing_column_is_an_error(engine: LocalEngine) -> None:
    with pytest.raises(KqlSemanticError) as info:
        engine.query(
            'Proc | where ReportId == 1 | project ReportId, b = bag_pack("ReportId", 5) '
            "| evaluate bag_unpack(b)"
        )
    assert info.value.construct == "ReportId"


def test_bag_unpack_is_not_cached_across_stores() -> None:
    """Engines with one catalogue share translations; bag_unpack's depend on the data."""
    schemas = {"T": [("id", "long"), ("b", "dynamic")]}
    one = LocalEngine.from_tables(tables={"T": [{"id": 1, "b": {"x": 1}}]}, schemas=schemas, now=NOW)
    two = LocalEngine.from_tables(tables={"T": [{"id": 1, "b": {"y": 2}}]}, schemas=schemas, now=NOW)
    kql = "T | evaluate bag_unpack(b)"
    assert one.query(kql).column_names == ["id", "x"]
    assert two.query(kql).column_names == ["id", "y"]


def test_deprecated_spellings_are_kusto_functions(engine: LocalEngine) -> None:
    from ctirealm.engine.rewrite.names import DEPRECATED_ALIASES

    assert all(rewrite.is_kusto_function(alias) for alias in DEPRECATED_ALIASES)
    # A deprecated spelling of a function the engine lacks: refused as a Kusto function.
    with pytest.raises(KqlUnsupportedError, match="Kusto has the function"):
        engine.query('print parseurlquery("a=1")')
    # ... and one whose replacement it has answers as the replacement does.
    assert engine.query("""print extractjson("$.a", '{"a": 1}')""").rows == [("1",)]


# evaluate pivot: a column per value in the data, so (like bag_unpack) engine-only.


def test_pivot_counts_per_value_grouped_by_the_other_columns(engine: LocalEngine) -> None:
    result = engine.query("Proc | project DeviceId, AccountName | evaluate pivot(DeviceId)")
    assert result.column_names == ["AccountName", "d1", "d2", "d3"]
    assert sorted(result.rows) == [
        ("Administrator", 0, 0, 1),
        ("SYSTEM", 0, 0, 1),
        ("azureuser", 0, 1, 0),
        ("root", 3, 0, 0),
        ("svc_backup", 0, 1, 0),
        ("www-data", 1, 0, 0),
    ]


def test_pivot_with_an_aggregate_and_group_columns(engine: LocalEngine) -> None:
    result = engine.query("Proc | where DeviceId == 'd1' | evaluate pivot(FileName, count(), AccountName)")
    assert result.column_names == ["AccountName", "base64", "bash", "curl", "sh"]
    assert sorted(result.rows) == [("root", 0, 1, 1, 1), ("www-data", 1, 0, 0, 0)]


def test_pivot_of_no_rows_keeps_the_groups_only(engine: LocalEngine) -> None:
    result = engine.query(
        "Proc | where ReportId < 0 | project DeviceId, AccountName | evaluate pivot(DeviceId)"
    )
    assert result.column_names == ["AccountName"] and result.rows == []


def test_pivot_values_differing_only_in_case_are_refused(engine: LocalEngine) -> None:
    with pytest.raises(KqlUnsupportedError, match="differ only in case"):
        engine.query("Str | where Id in (1, 2) | project s, Id | evaluate pivot(s)")
