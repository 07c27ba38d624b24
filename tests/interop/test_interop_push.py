"""``ctirealm telemetry push`` into a writable Kusto endpoint (a separate duckdb-kql server on a scratch file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from interop_helpers import MINI, ROOT, writable_endpoint

from ctirealm.cli import main
from ctirealm.engine import LocalEngine
from ctirealm.engine.kusto import KustoEngine, make_client, parse_kusto_url
from ctirealm.engine.push import (
    PushError,
    append_command,
    create_table_command,
    kql_literal,
    push_store,
    store_schemas,
)
from ctirealm.telemetry.dataset import Dataset
from ctirealm.telemetry.store import Store, build_store

# Slow: a push to a local Kusto ingestion endpoint.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mini_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("mini")
    import shutil

    shutil.copytree(MINI / "telemetry", root / "telemetry")
    shutil.copytree(ROOT / "telemetry" / "schemas", root / "telemetry" / "schemas")
    return build_store(Dataset.load(root / "telemetry"), cache_dir=root / "cache")


def test_push_creates_tables_ingests_rows_and_resumes(
    mini_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "push-state.json"
    with writable_endpoint(tmp_path / "scratch.duckdb") as url:
        cluster = url.replace("http://", "kusto://")
        code = main(
            [
                "telemetry",
                "push",
                "--cluster",
                cluster,
                "--database",
                "scratch",
                "--telemetry",
                str(_telemetry_of(mini_store)),
                "--cache-dir",
                str(mini_store.path.parent),
                "--state",
                str(state),
                "--batch-rows",
                "2",
                "--json",
            ]
        )
        report = json.loads(capsys.readouterr().out)
        assert code == 0 and report["complete"] and report["mode"] == "direct"
        for table, counts in report["tables"].items():
            assert counts["arrived"] == counts["local"] == mini_store.rows[table], table
        assert report["tables"]["AKSAudit"]["batches"] == 3  # 5 rows, 2 per batch
        assert json.loads(state.read_text())["done"]["AKSAudit"] == [0, 1, 2]

        # resumed: nothing is sent twice, the counts still match
        client = make_client(parse_kusto_url(f"{cluster}/scratch"))
        again = push_store(
            mini_store,
            client,
            "scratch",
            cluster=parse_kusto_url(f"{cluster}/x").url,
            batch_rows=2,
            state_path=state,
        )
        assert again.complete
        assert again.tables["AKSAudit"].skipped_batches == 3
        assert again.tables["AKSAudit"].arrived == 5

        # a state file for another batch size is refused, not silently mixed
        with pytest.raises(PushError, match="batch_rows"):
            push_store(
                mini_store,
                client,
                "scratch",
                cluster=parse_kusto_url(f"{cluster}/x").url,
                batch_rows=3,
                state_path=state,
            )

        # the pushed rows are the store's rows, value for value
        local = LocalEngine.of_store(mini_store)
        remote = KustoEngine(client, "scratch", schemas=local.schemas, now=mini_store.now)
        for query in ("AKSAudit | order by AuditId asc", "DeviceProcessEvents | order by ReportId asc"):
            assert remote.query(query).to_dicts() == local.query(query).to_dicts()
        local.close()


def _telemetry_of(store: Store) -> Path:
    return store.path.parent.parent / "telemetry"


class _FakeQueuedIngest:
    """Stands in for azure-kusto-ingest's QueuedIngestClient: appends what it is given, later."""

    def __init__(self, client: Any, database: str) -> None:
        self.client, self.database = client, database
        self.queued: list[tuple[Any, list[dict[str, Any]]]] = []

    def ingest_from_stream(self, stream: Any, ingestion_properties: Any) -> None:
        props = ingestion_properties
        assert props.ingest_by_tags == props.ingest_if_not_exists
        assert [m.column for m in props.ingestion_mapping][:1] == [props.ingestion_mapping[0].column]
        rows = [json.loads(line) for line in stream.stream.read().decode().splitlines()]
        self.queued.append((props, rows))

    def deliver(self, schemas: dict[str, Any]) -> None:
        for props, rows in self.queued:
            schema = schemas[props.table]
            rendered = [", ".join(kql_literal(row.get(c), t) for c, t in schema.columns) for row in rows]
            self.client.execute_mgmt(self.database, append_command(schema, rendered))
        self.queued.clear()


def test_queued_push_waits_for_arrival(mini_store: Store, tmp_path: Path) -> None:
    with writable_endpoint(tmp_path / "scratch.duckdb") as url:
        client = make_client(parse_kusto_url(f"{url}/scratch"))
        ingest = _FakeQueuedIngest(client, "scratch")
        tables = ["AKSAudit", "DeviceProcessEvents"]
        pending = push_store(
            mini_store,
            client,
            "scratch",
            cluster=url,
            mode="queued",
            ingest_client=ingest,
            state_path=tmp_path / "q.json",
            wait=0,
            tables=tables,
        )
        assert not pending.complete and pending.tables["AKSAudit"].arrived == 0
        assert pending.tables["AKSAudit"].sent_rows == 5
        ingest.deliver(store_schemas(mini_store))
        done = push_store(
            mini_store,
            client,
            "scratch",
            cluster=url,
            mode="queued",
            ingest_client=ingest,
            state_path=tmp_path / "q.json",
            wait=5,
            poll=0.1,
            tables=tables,
        )
        assert done.complete and not ingest.queued  # resumed: nothing queued again
        assert sorted(done.tables) == tables


def test_commands_and_literals() -> None:
    schemas = store_schemas(
        Store(
            Path("x"),
            {
                "schemas": {
                    "T x": {
                        "id_column": "a",
                        "time_column": "t",
                        "columns": [["a", "long"], ["t", "datetime"], ["d", "dynamic"], ["s", "string"]],
                    }
                }
            },
            None,
        )
    )  # type: ignore[arg-type]
    schema = schemas["T x"]
    assert (
        create_table_command(schema) == ".create-merge table ['T x'] (a:long, t:datetime, "
        "d:dynamic, s:string)"
    )
    assert kql_literal(None, "string") == '""'
    assert kql_literal('a "q"\nb\\', "string") == '"a \\"q\\"\\nb\\\\"'
    assert kql_literal(None, "long") == "long(null)"
    assert kql_literal(float("nan"), "real") == "real(nan)"
    assert kql_literal('{"k": [1, "x)"]}', "dynamic") == 'dynamic({"k":[1,"x)"]})'
