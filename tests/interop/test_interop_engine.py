"""KustoEngine with the real azure-kusto-data client against ``ctirealm serve`` on loopback.

The engine conformance suite (tests/engine/conformance.yaml) runs on both
engines over the same tables: every query must give the same rows, or the
same kind of error, through the REST endpoint as in process.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from interop_helpers import ROOT, serving

from ctirealm.engine import (
    EngineError,
    KqlSemanticError,
    KqlSyntaxError,
    LocalEngine,
    QueryTimeout,
    ReadOnlyViolation,
)
from ctirealm.engine.kusto import (
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    ENV_TENANT,
    ENV_URL,
    KustoEngine,
    classify_error,
    connection_builder,
    parse_kusto_url,
)
from ctirealm.engine.server import build_realm_server, normalise_request, timespan_seconds
from ctirealm.telemetry.values import to_json_value

# Slow: the conformance suite through a served engine.
pytestmark = pytest.mark.slow

CASES: list[dict[str, Any]] = yaml.safe_load(
    (ROOT / "tests" / "engine" / "conformance.yaml").read_text(encoding="utf-8")
)["cases"]


@pytest.fixture(scope="module")
def engines(conformance_store: tuple[Path, datetime]) -> Iterator[tuple[LocalEngine, KustoEngine]]:
    path, now = conformance_store
    local = LocalEngine.open(path, now=now)
    with serving(path, now) as server:
        remote = KustoEngine.connect(server.kusto_url, schemas=local.schemas, now=now)
        yield local, remote
        remote.close()
    local.close()


def _norm(value: Any) -> Any:
    value = to_json_value(value)
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else float(f"{value:.9g}")
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def _outcome(engine: Any, kql: str) -> Any:
    try:
        result = engine.query(kql)
    except EngineError as exc:
        return type(exc).__name__
    rows = [json.dumps([_norm(v) for v in row], sort_keys=True, default=str) for row in result.rows]
    return [list(c) for c in result.columns], sorted(rows), result.truncated


def test_conformance_queries_give_the_same_results(engines: tuple[LocalEngine, KustoEngine]) -> None:
    local, remote = engines
    differences = []
    for case in CASES:
        here, there = _outcome(local, case["kql"]), _outcome(remote, case["kql"])
        if here != there:
            differences.append(f"{case['name']}: local {str(here)[:200]} / kusto {str(there)[:200]}")
    assert not differences, "\n".join(differences)
    assert len(CASES) > 100


def test_clock_limits_and_truncation(engines: tuple[LocalEngine, KustoEngine]) -> None:
    local, remote = engines
    query = "print n = now(), a = ago(1d)"
    assert remote.query(query).rows == local.query(query).rows
    assert to_json_value(remote.query(query).rows[0][0]) == "2026-03-16T00:00:00Z"
    result = remote.query("Proc | project ReportId | order by ReportId asc", limit=2)
    assert len(result.rows) == 2 and result.truncated
    assert not remote.query("Proc | take 1", limit=5).truncated
    assert remote.tables() == local.tables()
    assert remote.schema("Proc") == local.schema("Proc")
    assert remote.schemas["Proc"].id_column == local.schemas["Proc"].id_column


def test_errors_map_to_the_engine_errors(engines: tuple[LocalEngine, KustoEngine]) -> None:
    _, remote = engines
    for kql, kind in [
        ("Proc | wher x", KqlSyntaxError),
        ("Proc | where nosuch == 1", KqlSemanticError),
        ("NoSuchTable | take 1", KqlSemanticError),
        (".drop table Proc", ReadOnlyViolation),
        ("Proc | take 1; .set-or-append Proc <| Proc", ReadOnlyViolation),
    ]:
        with pytest.raises(kind):
            remote.query(kql)
    with pytest.raises(QueryTimeout):
        remote.query("range i from 1 to 5000000000 step 1 | summarize sum(i * i)", timeout=0.5)
    assert remote.query("Proc | count").rows  # the endpoint is still fine afterwards


def test_url_parsing_and_authentication(monkeypatch: pytest.MonkeyPatch) -> None:
    target = parse_kusto_url("kusto://127.0.0.1:8080/Telemetry")
    assert (target.url, target.database, target.loopback) == ("http://127.0.0.1:8080", "Telemetry", True)
    target = parse_kusto_url("kusto://mycluster.westeurope.kusto.windows.net/db1")
    assert target.url == "https://mycluster.westeurope.kusto.windows.net" and not target.loopback
    assert parse_kusto_url("https://c.kusto.windows.net/db2").database == "db2"
    for bad in ("kusto://host.example", "http://cluster.example/db", "ftp://x/db", "nonsense"):
        with pytest.raises(ValueError):
            parse_kusto_url(bad)
    monkeypatch.setenv(ENV_URL, "kusto://localhost:9000/envdb")
    assert parse_kusto_url(None).url == "http://localhost:9000"
    assert parse_kusto_url("kusto").database == "envdb"
    # application key from the environment; all three parts are required
    monkeypatch.setenv(ENV_CLIENT_ID, "app")
    with pytest.raises(ValueError, match=ENV_CLIENT_SECRET):
        connection_builder(parse_kusto_url("kusto://c.example.net/db"))
    monkeypatch.setenv(ENV_CLIENT_SECRET, "secret")
    monkeypatch.setenv(ENV_TENANT, "tenant")
    builder = connection_builder(parse_kusto_url("kusto://c.example.net/db"))
    assert builder.application_client_id == "app"
    for name in (ENV_CLIENT_ID, ENV_CLIENT_SECRET, ENV_TENANT):
        monkeypatch.delenv(name)
    # no credentials on loopback; azure-identity's chain elsewhere
    assert connection_builder(parse_kusto_url("kusto://127.0.0.1:1/db")).application_client_id is None
    sentinel = object()
    builder = connection_builder(parse_kusto_url("kusto://c.example.net/db"), credential=sentinel)
    assert builder.azure_credential is sentinel


def test_service_errors_are_classified_by_code_and_message() -> None:
    cases = {
        "Syntax error: SYN0002: A recognition error occurred. [line:position=1:9]": KqlSyntaxError,
        "Semantic error: SEM0100: 'where' operator: Failed to resolve scalar expression named "
        "'nosuch'": KqlSemanticError,
        "Query execution has exceeded the allowed limits (80DA0001): E_LOW_MEMORY_CONDITION": EngineError,
        "Request is invalid: E_QUERY_TIMEOUT": QueryTimeout,
        "Cannot invoke a control command that writes as this request is read-only": ReadOnlyViolation,
    }
    for text, kind in cases.items():
        assert isinstance(classify_error(text, "T | where nosuch == 1"), kind), text
    error = classify_error("Failed to resolve scalar expression named 'nosuch'", "T | where nosuch == 1")
    assert (error.construct, error.line, error.column) == ("nosuch", 1, 11)


def test_serve_is_loopback_only_and_read_only(conformance_store: tuple[Path, datetime]) -> None:
    path, now = conformance_store
    for host in ("0.0.0.0", "192.0.2.1", "example.com"):
        with pytest.raises(ValueError, match="loopback"):
            build_realm_server(path, port=0, host=host, now=now)
    from ctirealm.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--telemetry", str(path.parent)]) == 2
    from azure.kusto.data.exceptions import KustoServiceError

    from ctirealm.engine.kusto import make_client

    with serving(path, now) as server:
        client = make_client(parse_kusto_url(server.kusto_url))
        with pytest.raises(KustoServiceError):  # the server itself refuses writes too
            client.execute_mgmt("ctirealm", ".set-or-append Proc <| Proc | take 1")
        with pytest.raises(KustoServiceError):
            client.execute_query("ctirealm", "externaldata (x:string) ['https://example.com/x.csv']")
        count = client.execute_query("ctirealm", "Proc | count").primary_results[0].raw_rows
        assert count[0][0] == len(
            yaml.safe_load((ROOT / "tests" / "engine" / "conformance_tables.yaml").read_text())["tables"][
                "Proc"
            ]["rows"]
        )
        # a client that sends no query_now gets the dataset clock
        rows = client.execute_query("ctirealm", "print now()").primary_results[0].raw_rows
        assert rows[0][0].startswith("2026-03-16T00:00:00")


def test_request_normalisation() -> None:
    body = json.dumps(
        {
            "db": "d",
            "csl": "T",
            "properties": json.dumps({"Options": {"servertimeout": "0:00:30", "request_readonly": True}}),
        }
    ).encode()
    request = json.loads(normalise_request(body, datetime(2026, 3, 16)))
    options = request["properties"]["Options"]
    assert options == {"servertimeout": 30.0, "request_readonly": True, "query_now": "2026-03-16T00:00:00Z"}
    assert timespan_seconds("1 day, 0:00:01") == 86401
    assert timespan_seconds("00:01:00") == 60
    assert normalise_request(b"not json", None) == b"not json"
