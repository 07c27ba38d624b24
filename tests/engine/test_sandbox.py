"""The engine's sandbox: hostile queries are refused or stopped, and nothing leaks.

Agents send arbitrary text. Each query here is refused with a clear
`EngineError`, or stopped by its time, row or memory limit; the store file is
byte-identical afterwards; the engine answers the next query normally.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from ctirealm.engine import (
    EngineError,
    KqlRuntimeError,
    KqlSyntaxError,
    KqlUnsupportedError,
    LocalEngine,
    QueryTimeout,
    ReadOnlyViolation,
    ResourceLimitExceeded,
)
from ctirealm.engine.guard import MAX_QUERY_CHARS

ROWS = 4000
NOW = "2026-03-16T00:00:00Z"
SCHEMA = [
    ("Timestamp", "datetime"),
    ("DeviceId", "string"),
    ("FileName", "string"),
    ("ProcessCommandLine", "string"),
    ("FileSize", "long"),
    ("ReportId", "long"),
]


def _build_store(path: Path) -> Path:
    """A small store file (4,000 process events) with its ``.meta.json`` sidecar."""
    con = duckdb.connect(str(path))
    con.execute(
        f"""CREATE TABLE DeviceProcessEvents AS SELECT
              TIMESTAMP '2026-03-15 00:00:00' + to_seconds(i * 17) AS Timestamp,
              'dev' || (i % 40) AS DeviceId,
              ['bash', 'curl', 'python3', 'sshd'][i % 4 + 1] AS FileName,
              'cmd --arg ' || i AS ProcessCommandLine,
              i * 13 AS FileSize,
              i AS ReportId
            FROM range({ROWS}) t(i)"""
    )
    con.execute("CHECKPOINT")
    con.close()
    meta = {
        "now": NOW,
        "schemas": {
            "DeviceProcessEvents": {
                "id_column": "ReportId",
                "time_column": "Timestamp",
                "columns": [list(c) for c in SCHEMA],
            }
        },
    }
    path.with_suffix(".meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_store(tmp_path_factory.mktemp("store") / "sandbox.duckdb")


@pytest.fixture(scope="module")
def engine(store: Path) -> Iterator[LocalEngine]:
    eng = LocalEngine.open(store, timeout=5.0, memory_limit="256MB", threads=2)
    yield eng
    eng.close()


def _still_works(engine: LocalEngine) -> None:
    assert engine.query("DeviceProcessEvents | count").rows == [(ROWS,)]


# --------------------------------------------------------------------------- control commands

CONTROL_COMMANDS = [
    ".drop table DeviceProcessEvents",
    ".set T <| DeviceProcessEvents | take 1",
    ".append DeviceProcessEvents <| DeviceProcessEvents | take 1",
    ".set-or-append DeviceProcessEvents <| print 1",
    ".set-or-replace DeviceProcessEvents <| print 1",
    ".ingest into table DeviceProcessEvents ('https://example.com/x.csv')",
    ".ingest inline into table DeviceProcessEvents <| 1,2,3",
    ".create table T (a: string)",
    ".create-merge table DeviceProcessEvents (x: string)",
    ".alter table DeviceProcessEvents (x: string)",
    ".alter-merge table DeviceProcessEvents policy retention softdelete = 0d",
    ".delete table DeviceProcessEvents records <| DeviceProcessEvents",
    ".purge table DeviceProcessEvents records in database db <| where true",
    ".rename table DeviceProcessEvents to X",
    ".show tables",
    ".show database schema",
    ".execute database script <| .drop table DeviceProcessEvents",
    "  // a comment first\n.drop table DeviceProcessEvents",
    "\n\n.drop table DeviceProcessEvents",
    "let x = 1;\n.drop table DeviceProcessEvents",
    "DeviceProcessEvents | take 1;\n.drop table DeviceProcessEvents",
]


@pytest.mark.parametrize("command", CONTROL_COMMANDS)
def test_control_commands_are_refused(engine: LocalEngine, command: str) -> None:
    with pytest.raises(ReadOnlyViolation) as info:
        engine.query(command)
    assert info.value.construct and info.value.construct.startswith(".")
    assert info.value.line is not None and info.value.column is not None
    _still_works(engine)


def test_a_dot_inside_a_string_is_not_a_command(engine: LocalEngine) -> None:
    result = engine.query('print x = ".drop table DeviceProcessEvents"')
    assert result.rows == [(".drop table DeviceProcessEvents",)]


# --------------------------------------------------------------------------- reaching SQL

INERT_LITERALS = [
    "x'; DROP TABLE DeviceProcessEvents; --",
    'x"); DROP TABLE DeviceProcessEvents; --',
    "x' OR '1'='1",
    "*/ ATTACH '/tmp/evil.db' AS evil; /*",
    "'; COPY DeviceProcessEvents TO '/tmp/stolen.csv'; --",
    "'; INSTALL httpfs; LOAD httpfs; --",
    "'); SELECT * FROM read_csv('/etc/passwd'); --",
    "/etc/passwd",
    "file:///etc/passwd",
    "https://example.com/payload.sh",
    "\\x00\\n\\r;",
]


@pytest.mark.parametrize("literal", INERT_LITERALS)
def test_sql_in_string_literals_is_just_text(engine: LocalEngine, literal: str) -> None:
    kql_string = "'" + literal.replace("\\", "\\\\").replace("'", "\\'") + "'"
    result = engine.query(f"DeviceProcessEvents | where ProcessCommandLine == {kql_string} | count")
    assert result.rows == [(0,)]
    echoed = engine.query(f"print s = {kql_string}")
    assert echoed.rows == [(literal,)]
    _still_works(engine)


def test_sql_in_identifiers_is_just_a_name(engine: LocalEngine) -> None:
    result = engine.query(
        'DeviceProcessEvents | take 1 | extend ["x\\"; DROP TABLE DeviceProcessEvents; --"] = 1 | count'
    )
    assert result.rows == [(1,)]
    _still_works(engine)


REFUSED = [
    ("print x = read_csv('/etc/passwd')", EngineError),
    ("read_csv('/etc/passwd')", EngineError),
    ("read_parquet('/tmp/x.parquet') | take 1", EngineError),
    ("print x = glob('/etc/*')", EngineError),
    ("duckdb_settings()", EngineError),
    ("print x = getenv('HOME')", EngineError),
    ("externaldata(line: string) [@'file:///etc/passwd'] with (format='txt')", ReadOnlyViolation),
    ("externaldata(x: string) [h@'https://example.com/x.csv']", ReadOnlyViolation),
    ("database('information_schema').tables", KqlUnsupportedError),
    ("database('temp').DeviceProcessEvents | take 1", KqlUnsupportedError),
    ("cluster('https://evil.example').database('db').T", EngineError),
    ("DeviceProcessEvents | evaluate python(typeof(*), 'import os')", KqlUnsupportedError),
    ("DeviceProcessEvents | take 1; DeviceProcessEvents | take 2", KqlUnsupportedError),
    ("print 1; ATTACH '/tmp/evil.db'", KqlSyntaxError),
]


@pytest.mark.parametrize(("kql", "error"), REFUSED, ids=[k for k, _ in REFUSED])
def test_reaching_outside_the_store_is_refused(
    engine: LocalEngine, kql: str, error: type[EngineError]
) -> None:
    with pytest.raises(error):
        engine.query(kql)
    _still_works(engine)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "ATTACH '/tmp/ctirealm-evil.duckdb' AS evil",
        "COPY (SELECT 1) TO '/tmp/ctirealm-evil.csv'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "SET memory_limit = '100GB'",
        "SET lock_configuration = false",
        "CREATE TABLE main.x (a INTEGER)",
        "DROP TABLE main.DeviceProcessEvents",
    ],
)
def test_the_connection_itself_is_locked(engine: LocalEngine, sql: str) -> None:
    """Defence in depth: even SQL that never comes out of translation cannot escape."""
    with pytest.raises(duckdb.Error):
        engine._con.execute(sql)
    _still_works(engine)


# --------------------------------------------------------------------------- size and shape


def test_enormous_query_text_is_refused_before_parsing(engine: LocalEngine) -> None:
    started = time.perf_counter()
    with pytest.raises(ResourceLimitExceeded):
        engine.query('print x = "' + "a" * (MAX_QUERY_CHARS + 1) + '"')
    assert time.perf_counter() - started < 1.0
    _still_works(engine)


def test_large_indicator_list_still_works(engine: LocalEngine) -> None:
    iocs = ", ".join(f'"{i:064x}"' for i in range(2000))
    result = engine.query(
        f"let iocs = dynamic([{iocs}]);\nDeviceProcessEvents | where FileName in (iocs) | count"
    )
    assert result.rows == [(0,)]


@pytest.mark.parametrize(
    "kql",
    [
        "print x = " + "(" * 5000 + "1" + ")" * 5000,
        "print x = 1" + " + 1" * 3000,
        "print x = " + "strcat(" * 2000 + "'a'" + ")" * 2000,
        "DeviceProcessEvents" + " | where FileSize > 0" * 800 + " | count",
    ],
    ids=["parentheses", "sum-chain", "nested-calls", "long-pipeline"],
)
def test_deep_nesting_is_refused_or_answered(engine: LocalEngine, kql: str) -> None:
    started = time.perf_counter()
    try:
        engine.query(kql)
    except EngineError:
        pass
    assert time.perf_counter() - started < 10.0
    _still_works(engine)


def test_catastrophic_regex_runs_in_linear_time(engine: LocalEngine) -> None:
    started = time.perf_counter()
    result = engine.query(
        'print s = strcat(strrep("a", 1000), "!") '
        '| extend m1 = s matches regex "(a+)+$", m2 = s matches regex "(a|aa)*b" '
        "| project m1, m2"
    )
    assert result.rows == [(False, False)]
    assert time.perf_counter() - started < 3.0


def test_unbuildable_regex_is_a_runtime_error(engine: LocalEngine) -> None:
    with pytest.raises(KqlRuntimeError):
        engine.query('DeviceProcessEvents | where FileName matches regex "a{1000}{1000}"')
    _still_works(engine)


def test_strrep_is_capped(engine: LocalEngine) -> None:
    assert engine.query("print n = strlen(strrep('ab', 100000000))").rows == [(2048,)]
    with pytest.raises(KqlRuntimeError):
        engine.query("print n = strlen(strrep(strrep(strrep('ab', 1024), 1024), 1024))")
    _still_works(engine)


def test_user_function_expansion_is_bounded(engine: LocalEngine) -> None:
    """Each call of a tabular `let` function is expanded afresh: twenty levels of
    `union f(), f()` would be a million expansions, translated before any time limit."""
    lets = ["let f0 = () { DeviceProcessEvents | take 1 };"]
    lets += [f"let f{i} = () {{ union f{i - 1}(), f{i - 1}() }};" for i in range(1, 21)]
    started = time.perf_counter()
    with pytest.raises(KqlUnsupportedError) as info:
        engine.query("\n".join(lets) + "\nf20() | count")
    assert time.perf_counter() - started < 5.0
    assert "user-defined functions" in str(info.value)
    small = "\n".join(lets[:4]) + "\nf3() | count"  # 8 expansions: fine
    assert engine.query(small).rows == [(8,)]
    _still_works(engine)


def test_recursive_user_function_is_refused(engine: LocalEngine) -> None:
    with pytest.raises(KqlUnsupportedError):
        engine.query("let f = () { f() | take 1 }; f() | count")
    with pytest.raises(KqlUnsupportedError):
        engine.query("let g = view () { g | take 1 }; g | count")
    _still_works(engine)


def test_mv_apply_over_a_huge_expansion_is_stopped(engine: LocalEngine) -> None:
    kql = (
        "DeviceProcessEvents | extend k = 1 "
        "| join kind=inner (range x from 1 to 200000 step 1 | summarize a = make_list(x) "
        "| extend k = 1) on k "
        "| mv-apply v = a to typeof(long) on (where v % 2 == 0) | count"
    )
    started = time.perf_counter()
    with pytest.raises((QueryTimeout, ResourceLimitExceeded)):
        engine.query(kql, timeout=1.0)
    assert time.perf_counter() - started < 3.0
    _still_works(engine)


def test_bag_unpack_of_too_many_keys_is_refused(engine: LocalEngine) -> None:
    """A bag with a key per row would ask for a table of as many columns."""
    started = time.perf_counter()
    with pytest.raises(KqlUnsupportedError) as info:
        engine.query(
            'range x from 1 to 5000 step 1 | extend b = bag_pack(strcat("k", x), x) | evaluate bag_unpack(b)'
        )
    assert time.perf_counter() - started < 5.0
    assert "distinct keys" in str(info.value)
    _still_works(engine)


def test_pivot_of_too_many_values_is_refused(engine: LocalEngine) -> None:
    started = time.perf_counter()
    with pytest.raises(KqlUnsupportedError) as info:
        engine.query("DeviceProcessEvents | project ReportId, DeviceId | evaluate pivot(ReportId)")
    assert time.perf_counter() - started < 5.0
    assert "distinct values" in str(info.value)
    _still_works(engine)


def test_bag_unpack_key_discovery_is_bounded_in_time(engine: LocalEngine) -> None:
    kql = (
        "DeviceProcessEvents | extend k = 1 "
        "| join kind=inner (DeviceProcessEvents | extend k = 1) on k "
        "| join kind=inner (DeviceProcessEvents | extend k = 1) on k "
        '| extend b = bag_pack("a", k) | evaluate bag_unpack(b)'
    )
    started = time.perf_counter()
    with pytest.raises(QueryTimeout):
        engine.query(kql, timeout=1.0)
    assert time.perf_counter() - started < 2.5
    _still_works(engine)


def test_make_series_of_many_groups_and_bins_is_stopped(engine: LocalEngine) -> None:
    """Each group's series is one value: bins are capped, and groups times bins is bounded
    by the time and memory limits."""
    with pytest.raises(KqlRuntimeError, match="bins"):
        engine.query(
            "DeviceProcessEvents | make-series c = count() on Timestamp "
            "from datetime(2020-01-01) to datetime(2030-01-01) step 1s"
        )
    kql = (
        "range x from 1 to 200000 step 1 | extend t = datetime(2026-01-01) + x * 1s "
        "| make-series c = count() on t from datetime(2026-01-01) to datetime(2026-01-02) "
        "step 1s by x | summarize n = sum(array_length(c))"
    )
    started = time.perf_counter()
    with pytest.raises((QueryTimeout, ResourceLimitExceeded)):
        engine.query(kql, timeout=1.0)
    assert time.perf_counter() - started < 3.0
    _still_works(engine)


# --------------------------------------------------------------------------- limits


def test_cross_join_is_stopped_by_the_timeout(engine: LocalEngine) -> None:
    kql = (
        "DeviceProcessEvents | extend k = 1 "
        "| join kind=inner (DeviceProcessEvents | extend k = 1) on k "
        "| join kind=inner (DeviceProcessEvents | extend k = 1) on k "
        "| summarize count()"
    )
    started = time.perf_counter()
    with pytest.raises(QueryTimeout) as info:
        engine.query(kql, timeout=1.0)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0 + 1.0, f"stopped after {elapsed:.2f} s"
    assert "time limit" in str(info.value)
    _still_works(engine)


def test_a_search_over_every_table_crossed_with_itself_is_stopped(engine: LocalEngine) -> None:
    kql = (
        'search "*e*" | extend k = 1 '
        '| join kind=inner (search "*e*" | extend k = 1) on k '
        '| join kind=inner (search "*e*" | extend k = 1) on k | summarize count()'
    )
    with pytest.raises(QueryTimeout):
        engine.query(kql, timeout=1.0)
    _still_works(engine)


def test_huge_range_is_streamed_and_stopped(engine: LocalEngine) -> None:
    started = time.perf_counter()
    with pytest.raises(QueryTimeout):
        engine.query("range x from 1 to 100000000000 step 1 | where x % 7 == 3 | count", timeout=1.0)
    assert time.perf_counter() - started < 2.0
    _still_works(engine)


def test_memory_hungry_query_is_stopped(engine: LocalEngine) -> None:
    started = time.perf_counter()
    with pytest.raises((ResourceLimitExceeded, QueryTimeout)):
        engine.query(
            "range x from 1 to 200000000 step 1 | summarize make_list(x) | project n = array_length(list_x)",
            timeout=5.0,
        )
    assert time.perf_counter() - started < 6.0
    _still_works(engine)


def test_row_limit_truncates(engine: LocalEngine) -> None:
    result = engine.query("range x from 1 to 1000000 step 1", limit=1000)
    assert len(result) == 1000 and result.truncated
    result = engine.query("DeviceProcessEvents | take 10", limit=1000)
    assert len(result) == 10 and not result.truncated


def test_an_interrupt_does_not_leak_into_the_next_query(engine: LocalEngine) -> None:
    engine._con.interrupt()  # as if the timer fired just after a query finished
    _still_works(engine)
    for _ in range(3):
        with pytest.raises(QueryTimeout):
            engine.query(
                "DeviceProcessEvents | extend k = 1 | join kind=inner "
                "(DeviceProcessEvents | extend k = 1) on k "
                "| join kind=inner (DeviceProcessEvents | extend k = 1) on k | count",
                timeout=0.2,
            )
        _still_works(engine)


def test_concurrent_queries_are_serialised(engine: LocalEngine) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                _still_works(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# --------------------------------------------------------------------------- the store

HOSTILE = [
    *CONTROL_COMMANDS,
    *(kql for kql, _ in REFUSED),
    "DeviceProcessEvents | where ProcessCommandLine == 'x\\'; DROP TABLE DeviceProcessEvents; --'",
    "DeviceProcessEvents | extend k = 1 | join kind=inner (DeviceProcessEvents | extend k = 1) on k"
    " | join kind=inner (DeviceProcessEvents | extend k = 1) on k | count",
    "range x from 1 to 200000000 step 1 | summarize make_list(x)",
]


def test_store_file_is_byte_identical_after_hostile_queries(tmp_path: Path) -> None:
    store = _build_store(tmp_path / "hostile.duckdb")
    before = {p.name: _digest(p) for p in sorted(tmp_path.iterdir()) if p.is_file()}
    with LocalEngine.open(store, timeout=0.5, memory_limit="256MB") as eng:
        for kql in HOSTILE:
            try:
                eng.query(kql)
            except EngineError:
                pass
        assert eng.query("DeviceProcessEvents | count").rows == [(ROWS,)]
    after = {p.name: _digest(p) for p in sorted(tmp_path.iterdir()) if p.is_file()}
    assert after == before


@pytest.mark.parametrize(
    ("kql", "refused"),
    [
        ('print "a\\"b"; .drop table T', True),
        ("print @'a''b'; .drop table T", True),
        ("print @'a''; .drop'", False),
        ("print ```a;\n.drop table T```", False),
        ("DeviceProcessEvents | where FileName == 'x;' | take 1", False),
        ("let x = 1;\n  // comment\n  .drop table T", True),
        ("print x = .5", False),
    ],
)
def test_the_guard_reads_strings_and_comments(kql: str, refused: bool) -> None:
    from ctirealm.engine import check_read_only

    if refused:
        with pytest.raises(ReadOnlyViolation):
            check_read_only(kql)
    else:
        check_read_only(kql)


@pytest.mark.parametrize(
    "name",
    [
        "__ctirealm_raw_sql",
        "__CTIREALM_series_bag",
        "__ctirealm_window",
        "__ctirealm_row_text",
        "__ctirealm_typeof",
    ],
)
def test_internal_functions_cannot_be_called(engine: LocalEngine, name: str) -> None:
    """The rewrites' internal functions take rendered SQL or trusted arguments (one passes
    SQL through as written): a query naming one is told Kusto has no such function."""
    from ctirealm.engine import KqlSemanticError

    with pytest.raises(KqlSemanticError, match="Kusto has no function of that name"):
        engine.query(f'print a = {name}("1); SELECT 1 --", dynamic([1]))')
    _still_works(engine)
