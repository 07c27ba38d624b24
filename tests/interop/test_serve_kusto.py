"""``ctirealm serve`` as Kusto clients see it: the real azure-kusto-data client and raw
HTTP POSTs against a real loopback server (no mocks)."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from interop_helpers import serving

pytest.importorskip("azure.kusto.data")
from azure.kusto.data import KustoClient, KustoConnectionStringBuilder
from azure.kusto.data.exceptions import KustoApiError, KustoServiceError

from ctirealm.engine.server import build_realm_server, serve_forever

GUID = "0b2f8a4e-1111-2222-3333-444455556666"


@pytest.fixture(scope="module")
def server(conformance_store: tuple[Path, datetime]) -> Iterator[Any]:
    path, now = conformance_store
    with serving(path, now) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[KustoClient]:
    kusto = KustoClient(KustoConnectionStringBuilder.with_no_authentication(server.url))
    yield kusto
    kusto.close()


def post(server: Any, route: str, csl: str, db: str | None = "ctirealm") -> tuple[int, Any]:
    """A raw POST, as a hand-written client sends it: (status, parsed body)."""
    body = json.dumps({"db": db, "csl": csl}).encode()
    request = urllib.request.Request(
        server.url + route, data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def primary(frames: list[dict[str, Any]]) -> dict[str, Any]:
    return next(f for f in frames if f.get("TableKind") == "PrimaryResult")


# --------------------------------------------------------------------------- databases


def test_default_database_is_an_alias_and_unknown_ones_are_named(client: KustoClient) -> None:
    # execute(None, ...) sends the SDK's default database, NetDefaultDB
    assert client.execute(None, "print x = 1").primary_results[0][0]["x"] == 1
    assert client.execute("NetDefaultDB", "Proc | count").primary_results[0][0][0] > 0
    with pytest.raises(KustoApiError) as caught:
        client.execute("Telemetry", "print x = 1")
    message = str(caught.value)
    assert "Entity ID 'Telemetry' of kind 'Database' was not found" in message
    assert "'ctirealm'" in message and "NetDefaultDB" in message
    assert caught.value.http_response.status_code == 400
    assert caught.value.get_api_error().type.endswith("EntityNotFoundException")


def test_show_databases_lists_only_the_served_one(client: KustoClient) -> None:
    rows = client.execute_mgmt("ctirealm", ".show databases").primary_results[0]
    assert [(r["DatabaseName"], r["DatabaseAccessMode"]) for r in rows] == [("ctirealm", "ReadOnly")]


# --------------------------------------------------------------------------- values and types


def test_guid_decimal_bool_and_ticks_match_kusto(client: KustoClient, server: Any) -> None:
    query = (
        f"print g = toguid('{GUID}'), n = new_guid(), d = todecimal(1.5), b = true, "
        "t = datetime(2026-01-01 10:00:00.123456), w = datetime(2026-01-01), "
        "s = 1d + 1s + 1ms"
    )
    table = client.execute("ctirealm", query).primary_results[0]
    kinds = {c.column_name: c.column_type for c in table.columns}
    assert kinds == {
        "g": "guid",
        "n": "guid",
        "d": "decimal",
        "b": "bool",
        "t": "datetime",
        "w": "datetime",
        "s": "timespan",
    }
    row = table[0]
    assert str(row["g"]) == GUID and row["d"] == Decimal("1.5") and row["b"] is True
    assert row["t"].microsecond == 123456
    # the wire: seven fractional digits (ticks) when there is a fraction, none otherwise
    status, frames = post(server, "/v2/rest/query", query)
    assert status == 200
    values = primary(frames)["Rows"][0]
    assert values[2] == "1.5" and values[3] is True
    assert values[4] == "2026-01-01T10:00:00.1234560Z" and values[5] == "2026-01-01T00:00:00Z"
    assert values[6] == "1.00:00:01.0010000"
    # v1 labels bool Boolean and decimal Decimal, as Kusto does
    status, v1 = post(server, "/v1/rest/query", query)
    columns = {c["ColumnName"]: (c["DataType"], c["ColumnType"]) for c in v1["Tables"][0]["Columns"]}
    assert columns["b"] == ("Boolean", "bool") and columns["d"] == ("Decimal", "decimal")
    assert columns["g"] == ("Guid", "guid") and v1["Tables"][0]["Rows"][0][0] == GUID


def test_conversions_inside_strings_and_comments_do_not_retype(client: KustoClient) -> None:
    table = client.execute("ctirealm", "print x = 'y = todecimal(1)', y = 2.5 // z = toguid(")
    kinds = {c.column_name: c.column_type for c in table.primary_results[0].columns}
    assert kinds == {"x": "string", "y": "real"}


def test_case_distinct_columns_keep_their_values(client: KustoClient) -> None:
    row = client.execute("ctirealm", "print user = 1, User = 2").primary_results[0][0]
    assert (row["user"], row["User"]) == (1, 2)


def test_a_wide_result_streams_whole(client: KustoClient, server: Any) -> None:
    query = "range i from 1 to 12345 step 1 | extend t = datetime(2026-01-01) + i * 1ms, s = tostring(i)"
    rows = client.execute("ctirealm", query).primary_results[0]
    assert len(rows) == 12345 and rows[12344]["s"] == "12345"
    assert rows[1]["t"].microsecond == 2000
    status, v1 = post(server, "/v1/rest/query", query)
    assert status == 200 and len(v1["Tables"][0]["Rows"]) == 12345
    # the same connection answers again after a chunked response (keep-alive)
    assert client.execute("ctirealm", "print 1").primary_results[0][0][0] == 1


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("query", "code", "text"),
    [
        (
            "Proc | where nosuch == 1",
            "SEM0100",
            "'where' operator: Failed to resolve scalar expression named 'nosuch'",
        ),
        (
            "Proc | project DeviceName, Nope",
            "SEM0100",
            "'project' operator: Failed to resolve scalar expression named 'Nope'",
        ),
        ("NoSuchTable | take 1", "SEM0100", "Failed to resolve table expression named 'NoSuchTable'"),
        ("print nofunc(1)", "SEM0260", "Unknown function: 'nofunc'"),
        ("Proc | wher x", "SYN0002", "Syntax error: SYN0002"),
    ],
)
def test_errors_read_as_kusto_errors(
    client: KustoClient, server: Any, query: str, code: str, text: str
) -> None:
    with pytest.raises(KustoApiError) as caught:
        client.execute("ctirealm", query)
    error = caught.value.get_api_error()
    assert error.code == "General_BadRequest"
    assert text in error.description and code in error.description
    assert "Binder Error" not in error.description and "Candidate bindings" not in error.description
    if code.startswith("SEM"):
        assert caught.value.is_semantic_error()
    status, body = post(server, "/v2/rest/query", query)
    assert status == 400 and body["error"]["@errorCode"] == code


def test_timeouts_and_writes_are_kusto_errors(client: KustoClient) -> None:
    from azure.kusto.data import ClientRequestProperties

    properties = ClientRequestProperties()
    properties.set_option("servertimeout", timedelta(seconds=0.3))
    with pytest.raises(KustoServiceError, match="E_QUERY_TIMEOUT"):
        client.execute("ctirealm", "range i from 1 to 5000000000 step 1 | summarize sum(i * i)", properties)
    with pytest.raises(KustoServiceError, match="read-only"):
        client.execute_mgmt("ctirealm", ".set-or-append Proc <| Proc | take 1")
    assert client.execute("ctirealm", "Proc | count").primary_results[0][0][0] > 0


# --------------------------------------------------------------------------- schema commands


def test_schema_commands(client: KustoClient, conformance_store: tuple[Path, datetime]) -> None:
    meta = json.loads(conformance_store[0].with_suffix(".meta.json").read_text(encoding="utf-8"))
    expected = {name: [tuple(c) for c in spec["columns"]] for name, spec in meta["schemas"].items()}

    table = client.execute_mgmt("ctirealm", ".show database schema").primary_results[0]
    assert [c.column_name for c in table.columns] == [
        "DatabaseName",
        "TableName",
        "ColumnName",
        "ColumnType",
        "IsDefaultTable",
        "IsDefaultColumn",
        "PrettyName",
        "Version",
    ]
    proc = [(r["ColumnName"], r["ColumnType"]) for r in table if r["TableName"] == "Proc" and r["ColumnName"]]
    assert proc[0] == ("Timestamp", "System.DateTime") and len(proc) == len(expected["Proc"])

    for command in (
        ".show database schema as json",
        ".show database ctirealm schema as json",
        ".show database ['ctirealm'] schema as json",
        ".show databases (ctirealm) schema as json with (Tables=true, Functions=true)",
    ):
        text = client.execute_mgmt("ctirealm", command).primary_results[0][0]["DatabaseSchema"]
        database = json.loads(text)["Databases"]["ctirealm"]
        assert {
            t: [(c["Name"], c["CslType"]) for c in spec["OrderedColumns"]]
            for t, spec in database["Tables"].items()
        } == expected

    schema = client.execute_mgmt("ctirealm", ".show table Proc schema as json").primary_results[0][0]
    assert schema["TableName"] == "Proc" and schema["DatabaseName"] == "ctirealm"
    columns = json.loads(schema["Schema"])["OrderedColumns"]
    assert [(c["Name"], c["CslType"]) for c in columns] == expected["Proc"]
    assert columns[0]["Type"] == "System.DateTime"

    csl = client.execute_mgmt("ctirealm", ".show table Proc cslschema").primary_results[0][0]
    assert csl["Schema"] == ",".join(f"{c}:{t}" for c, t in expected["Proc"])
    every = client.execute_mgmt("ctirealm", ".show database ctirealm cslschema").primary_results[0]
    assert {r["TableName"]: r["Schema"] for r in every} == {
        t: ",".join(f"{c}:{k}" for c, k in cols) for t, cols in expected.items()
    }

    details = client.execute_mgmt("ctirealm", ".show tables details").primary_results[0]
    counts = {r["TableName"]: r["TotalRowCount"] for r in details}
    assert set(counts) == set(expected)
    assert counts["Proc"] == client.execute("ctirealm", "Proc | count").primary_results[0][0][0]
    assert "RetentionPolicy" in [c.column_name for c in details.columns]
    one = client.execute_mgmt("ctirealm", ".show table Proc details").primary_results[0]
    assert [(r["TableName"], r["TotalRowCount"]) for r in one] == [("Proc", counts["Proc"])]


def test_schema_commands_refuse_unknown_names(client: KustoClient) -> None:
    with pytest.raises(KustoApiError, match="Entity ID 'other' of kind 'Database'"):
        client.execute_mgmt("ctirealm", ".show database other schema as json")
    with pytest.raises(KustoApiError, match="Entity ID 'other' of kind 'Database'"):
        client.execute_mgmt("ctirealm", ".show databases (ctirealm, other) schema as json")
    with pytest.raises(KustoApiError, match="Failed to resolve table expression named 'Nope'"):
        client.execute_mgmt("ctirealm", ".show table Nope cslschema")


# --------------------------------------------------------------------------- IPv6


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_ipv6_url_is_bracketed_and_served(conformance_store: tuple[Path, datetime]) -> None:
    if not _ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback")
    path, now = conformance_store
    server = build_realm_server(path, port=0, host="::1", now=now)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        assert server.url == f"http://[::1]:{port}"
        assert server.kusto_url == f"kusto://[::1]:{port}/ctirealm"
        kusto = KustoClient(KustoConnectionStringBuilder.with_no_authentication(server.url))
        assert kusto.execute("ctirealm", "print x = 1").primary_results[0][0]["x"] == 1
        kusto.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_serve_announces_a_bracketed_ipv6_url(conformance_store: tuple[Path, datetime]) -> None:
    if not _ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback")
    path, now = conformance_store
    server = build_realm_server(path, port=0, host="::1", now=now)

    def interrupted() -> None:
        raise KeyboardInterrupt

    server.serve_forever = interrupted
    lines: list[str] = []
    serve_forever(server, announce=lines.append)
    port = server.server_address[1]
    assert f"http://[::1]:{port}" in lines[1] and f"kusto://[::1]:{port}/ctirealm" in lines[1]
    assert lines[-1] == "stopped"


# --------------------------------------------------------------------------- the two encoders


@pytest.mark.parametrize(
    "query",
    [
        "Proc",
        "File",
        "Act",
        "Diag",
        "Str",
        "Gap",
        "print n = real(nan), i = real(+inf), j = real(-inf), z = real(null), e = 1e20, f = 0.1, "
        "t = datetime(null), u = datetime(2026-03-01 12:00:00.000001), b = bool(null), s = '\"é\\\\'",
        "range i from 1 to 3 step 1 | extend g = toguid(strcat('0b2f8a4e-1111-2222-3333-44445555666', "
        "tostring(i))), d = parse_json('{\"a\": [1, 2.5, null]}')",
    ],
)
def test_duckdb_writes_the_rows_python_would(server: Any, query: str) -> None:
    """The fast path (DuckDB writes each row's JSON) and the Python one agree value for value."""
    from duckdb_kql.engine import kql

    from ctirealm.engine import server as module

    with server._lock:
        rel = kql(server._con, query, None, None, False, query_now=server.now)
        types = [str(t).upper() for t in rel.types]
        encoded = module._json_rows_sql(list(rel.columns), types, set())
        assert encoded is not None, types
        fast = module._fetch(rel, encoded)
        slow = rel.fetchall()
    assert isinstance(fast, module.JsonRows) and len(fast) == len(slow)
    kinds = [module.kusto_type(t) for t in rel.types]
    columns = [module.RestColumn(n, k, "", k) for n, k in zip(rel.columns, kinds, strict=True)]
    as_text = [b"".join(module._rows_json(module.Result(columns, rows))).decode() for rows in (fast, slow)]
    # through dumps again, so true and 1, or 1 and 1.0, do not pass as equal
    fast_rows, slow_rows = (json.dumps(json.loads(f"[{t}]")) for t in as_text)
    assert fast_rows == slow_rows


def test_a_failure_while_writing_rows_reaches_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Headers are sent before the rows: a failure after that is an in-data Kusto error."""
    from azure.kusto.data.exceptions import KustoMultiApiError
    from azure.kusto.data.response import KustoResponseDataSetV1, KustoResponseDataSetV2

    from ctirealm.engine import server as module

    def broken(kind: str) -> Any:
        def encode(values: Any) -> list[Any]:
            raise ValueError("cannot write this value")

        return encode if kind == "long" else None

    monkeypatch.setattr(module, "_CHUNK_ROWS", 2)
    monkeypatch.setattr(module, "_column_encoder", broken)
    result = module.Result([module.RestColumn("n", "long", "Int64", "long")], [(1,), (2,), (3,)])
    frames = json.loads(b"".join(module._v2_chunks(result, "request")))
    assert frames[-1]["HasErrors"] is True
    with pytest.raises(KustoMultiApiError, match="writing the result failed"):
        KustoResponseDataSetV2(frames)
    with pytest.raises(KustoMultiApiError, match="cannot write this value"):
        KustoResponseDataSetV1(json.loads(b"".join(module._v1_chunks(result))))
