"""Push the telemetry store to a Kusto cluster: create the tables, ingest the events, count arrivals.

``ctirealm telemetry push --cluster URL --database DB`` does three things:

1. **Tables.** ``.create-merge table`` for each table, with the columns and
   Kusto types of our schemas (an endpoint that does not know the command, like
   a local duckdb-kql server, gets an empty ``.set-or-append`` that creates the
   table instead).
2. **Events, in batches.** Rows are read from the built store in a fixed
   order (time column, then id), so batch *n* is always the same rows.
   *queued* ingestion (azure-kusto-ingest, the cluster's ingestion service)
   uploads each batch as JSON with an explicit column mapping and an
   ``ingest-by`` tag plus ``ingestIfNotExists``, so a batch re-sent after a
   crash is not ingested twice. *direct* ingestion (for endpoints without an
   ingestion service, such as ``duckdb-kql serve --allow-write`` or the Kusto
   emulator) sends ``.set-or-append T <| datatable(...) [...]`` through the
   management endpoint.
3. **Arrivals.** ``T | count`` on the cluster is compared with the local
   count; queued ingestion is polled until the counts match or the wait ends.

Progress is kept in a state file (which batches were sent, or arrived, for
which store, cluster, database and batch size), so an interrupted push
resumes where it stopped. Labels are never pushed: they are not tables.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from ..telemetry.schema import TableSchema
from ..telemetry.store import Store
from ..telemetry.values import format_datetime, format_timespan

DIRECT_BATCH_ROWS = 1_000
QUEUED_BATCH_ROWS = 100_000
#: Largest command text sent in one direct batch (the service's request limit is far higher).
MAX_COMMAND_BYTES = 4_000_000
STATE_FORMAT = 1
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Progress = Callable[[str, int, int], None]


class PushError(RuntimeError):
    """The push could not continue; the message says which table or batch and why."""


def ident(name: str) -> str:
    """A table or column name as KQL writes it: bare when it can be, ``['...']`` otherwise."""
    if _IDENT.match(name):
        return name
    return "['" + name.replace("\\", "\\\\").replace("'", "\\'") + "']"


def create_table_command(schema: TableSchema) -> str:
    """``.create-merge table T (c1:type, ...)`` for one of our schemas."""
    columns = ", ".join(f"{ident(c)}:{t}" for c, t in schema.columns)
    return f".create-merge table {ident(schema.name)} ({columns})"


def _string_literal(text: str) -> str:
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def kql_literal(value: Any, kind: str) -> str:
    """One value as a KQL literal of Kusto type *kind* (for a ``datatable``)."""
    if kind in ("string",):
        return '""' if value is None else _string_literal(str(value))
    if value is None:
        return f"{kind}(null)" if kind != "timespan" else "time(null)"
    if kind in ("long", "int"):
        return f"{kind}({int(value)})"
    if kind in ("real", "decimal"):
        number = float(value)
        if math.isnan(number):
            return "real(nan)"
        if math.isinf(number):
            return "real(+inf)" if number > 0 else "real(-inf)"
        return f"real({number!r})"
    if kind == "bool":
        return "true" if value else "false"
    if kind == "datetime":
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return f"datetime({format_datetime(moment)})"
    if kind == "timespan":
        span = value if isinstance(value, timedelta) else timedelta(seconds=float(value))
        return f"time({format_timespan(span)})"
    if kind == "guid":
        return f"guid({value})"
    if kind == "dynamic":
        parsed = json.loads(value) if isinstance(value, str) else value
        if parsed is None:
            return "dynamic(null)"
        return "dynamic(" + json.dumps(parsed, ensure_ascii=False, separators=(",", ":")) + ")"
    return _string_literal(str(value))


def datatable_header(schema: TableSchema) -> str:
    return "datatable(" + ", ".join(f"{ident(c)}:{t}" for c, t in schema.columns) + ")"


def append_command(schema: TableSchema, rendered_rows: list[str]) -> str:
    """``.set-or-append T <| datatable(...) [ rows ]`` for rows already rendered as literals."""
    body = ",\n".join(rendered_rows)
    return f".set-or-append {ident(schema.name)} <| {datatable_header(schema)} [\n{body}\n]"


def json_value(value: Any, kind: str) -> Any:
    """One stored value as the JSON queued ingestion reads back into *kind*."""
    if value is None:
        return None
    if kind == "datetime":
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return format_datetime(moment)
    if kind == "timespan":
        return format_timespan(value)
    if kind == "dynamic":
        return json.loads(value) if isinstance(value, str) else value
    if kind in ("real", "decimal"):
        number = float(value)
        return None if math.isnan(number) or math.isinf(number) else number
    return value


# --------------------------------------------------------------------------- state


@dataclass
class PushState:
    """Which batches of which table were sent (queued) or arrived (direct)."""

    path: Path | None
    key: dict[str, Any]
    done: dict[str, set[int]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None, key: dict[str, Any], *, restart: bool = False) -> PushState:
        if path is None or restart or not path.is_file():
            return cls(path, key)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PushError(f"{path}: unreadable push state ({exc}); use --restart") from exc
        if doc.get("format") != STATE_FORMAT:
            raise PushError(f"{path}: push state of another format; use --restart")
        recorded = doc.get("key", {})
        if recorded != key:
            differs = sorted(k for k in set(recorded) | set(key) if recorded.get(k) != key.get(k))
            raise PushError(
                f"{path}: this push state is for a different {', '.join(differs)} "
                f"({', '.join(f'{k}={recorded.get(k)!r}' for k in differs)}); "
                "use --restart to start over, or --state for another file"
            )
        return cls(path, key, {t: set(v) for t, v in doc.get("done", {}).items()})

    def mark(self, table: str, batch: int) -> None:
        self.done.setdefault(table, set()).add(batch)
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "format": STATE_FORMAT,
            "key": self.key,
            "done": {t: sorted(v) for t, v in sorted(self.done.items())},
        }
        temp = self.path.with_name(self.path.name + f".tmp-{os.getpid()}")
        temp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
        os.replace(temp, self.path)


# --------------------------------------------------------------------------- results


@dataclass
class TablePush:
    """One table's push: rows here, rows sent, batches, and rows counted on the cluster."""

    table: str
    local_rows: int
    sent_rows: int = 0
    batches: int = 0
    skipped_batches: int = 0
    arrived: int | None = None

    @property
    def complete(self) -> bool:
        return self.arrived == self.local_rows


@dataclass
class PushResult:
    cluster: str
    database: str
    mode: str
    tables: dict[str, TablePush]
    state_path: Path | None

    @property
    def complete(self) -> bool:
        return all(t.complete for t in self.tables.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "database": self.database,
            "mode": self.mode,
            "complete": self.complete,
            "state": str(self.state_path) if self.state_path else None,
            "tables": {
                name: {
                    "local": t.local_rows,
                    "sent": t.sent_rows,
                    "batches": t.batches,
                    "resumed_batches": t.skipped_batches,
                    "arrived": t.arrived,
                }
                for name, t in sorted(self.tables.items())
            },
        }


# --------------------------------------------------------------------------- pushing


def store_schemas(store: Store) -> dict[str, TableSchema]:
    """The store's table schemas, from its metadata."""
    return {
        name: TableSchema(
            name, tuple((c, t) for c, t in spec["columns"]), spec["id_column"], spec["time_column"]
        )
        for name, spec in sorted(store.meta["schemas"].items())
    }


def _rows(con: duckdb.DuckDBPyConnection, schema: TableSchema, chunk: int) -> Iterator[tuple[Any, ...]]:
    quoted = ", ".join('"' + c.replace('"', '""') + '"' for c in schema.column_names)
    order = f'"{schema.time_column}", "{schema.id_column}"'
    cursor = con.execute(f'SELECT {quoted} FROM "{schema.name}" ORDER BY {order}')
    while True:
        block = cursor.fetchmany(chunk)
        if not block:
            return
        yield from block


def _direct_batches(
    rows: Iterator[tuple[Any, ...]], schema: TableSchema, batch_rows: int, max_bytes: int
) -> Iterator[tuple[int, list[str]]]:
    """Rendered rows grouped into batches by count and size (deterministic for the same data)."""
    kinds = [t for _, t in schema.columns]
    batch: list[str] = []
    size = 0
    for row in rows:
        text = ", ".join(kql_literal(v, k) for v, k in zip(row, kinds, strict=True))
        if batch and (len(batch) >= batch_rows or size + len(text) > max_bytes):
            yield len(batch), batch
            batch, size = [], 0
        batch.append(text)
        size += len(text) + 2
    if batch:
        yield len(batch), batch


def _queued_batches(
    rows: Iterator[tuple[Any, ...]], schema: TableSchema, batch_rows: int
) -> Iterator[tuple[int, bytes]]:
    names, kinds = schema.column_names, [t for _, t in schema.columns]
    lines: list[str] = []
    for row in rows:
        record = {n: json_value(v, k) for n, v, k in zip(names, row, kinds, strict=True)}
        lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
        if len(lines) >= batch_rows:
            yield len(lines), ("\n".join(lines) + "\n").encode("utf-8")
            lines = []
    if lines:
        yield len(lines), ("\n".join(lines) + "\n").encode("utf-8")


def _mgmt(client: Any, database: str, command: str) -> list[dict[str, Any]]:
    response = client.execute_mgmt(database, command)
    if not response.primary_results:
        return []
    table = response.primary_results[0]
    names = [c.column_name for c in table.columns]
    return [dict(zip(names, row.to_list(), strict=False)) for row in table]


def _count(client: Any, database: str, table: str) -> int | None:
    try:
        response = client.execute_query(database, f"{ident(table)} | count")
        rows = response.primary_results[0].raw_rows
        return int(rows[0][0]) if rows else 0
    except Exception:
        return None


def ensure_tables(client: Any, database: str, schemas: Mapping[str, TableSchema]) -> None:
    """Create (or merge) every table on the cluster with our columns and types.

    An endpoint that does not know ``.create-merge table`` (a local duckdb-kql
    server) gets an empty ``.set-or-append`` per table instead, which creates it.
    """
    merge = True
    for schema in schemas.values():
        if merge:
            try:
                _mgmt(client, database, create_table_command(schema))
                continue
            except Exception as exc:
                text = str(exc)
                if "unsupported" not in text.lower() and "not supported" not in text.lower():
                    raise PushError(
                        f"{schema.name}: cannot create the table: {text.splitlines()[0]}"
                    ) from exc
                merge = False
        try:
            _mgmt(client, database, append_command(schema, []))
        except Exception as inner:
            raise PushError(
                f"{schema.name}: cannot create the table: {str(inner).splitlines()[0]}"
            ) from inner


def _ingestion_properties(database: str, schema: TableSchema, tag: str) -> Any:
    from azure.kusto.data.data_format import DataFormat, IngestionMappingKind
    from azure.kusto.ingest import ColumnMapping, IngestionProperties

    mappings = [
        ColumnMapping(column_name=c, column_type=t, path="$['" + c.replace("'", "\\'") + "']")
        for c, t in schema.columns
    ]
    return IngestionProperties(
        database=database,
        table=schema.name,
        data_format=DataFormat.MULTIJSON,
        ingestion_mapping_kind=IngestionMappingKind.JSON,
        column_mappings=mappings,
        ingest_by_tags=[tag],
        ingest_if_not_exists=[tag],
    )


def push_store(
    store: Store,
    client: Any,
    database: str,
    *,
    cluster: str = "",
    mode: str = "direct",
    ingest_client: Any = None,
    batch_rows: int | None = None,
    max_batch_bytes: int = MAX_COMMAND_BYTES,
    state_path: Path | None = None,
    restart: bool = False,
    tables: list[str] | None = None,
    wait: float = 600.0,
    poll: float = 10.0,
    progress: Progress | None = None,
) -> PushResult:
    """Create the tables on the cluster and ingest every row of *store* (see the module docstring).

    *client* is an azure-kusto-data ``KustoClient`` on the cluster; *ingest_client*
    an azure-kusto-ingest client (queued mode only). Returns per-table counts:
    local, sent, and counted on the cluster afterwards.
    """
    if mode not in ("direct", "queued"):
        raise ValueError(f"unknown push mode {mode!r}; use direct or queued")
    if mode == "queued" and ingest_client is None:
        raise ValueError("queued ingestion needs an ingest client")
    schemas = store_schemas(store)
    if tables:
        unknown = sorted(set(tables) - set(schemas))
        if unknown:
            raise PushError(f"unknown tables {unknown}; tables are {', '.join(schemas)}")
        schemas = {t: schemas[t] for t in schemas if t in tables}
    size = int(batch_rows or (DIRECT_BATCH_ROWS if mode == "direct" else QUEUED_BATCH_ROWS))
    if size < 1:
        raise ValueError("batch size must be at least 1 row")
    key = {
        "store": store.meta["hash"],
        "cluster": cluster,
        "database": database,
        "mode": mode,
        "batch_rows": size,
    }
    state = PushState.load(state_path, key, restart=restart)
    counts = store.rows
    result = PushResult(
        cluster, database, mode, {t: TablePush(t, int(counts.get(t, 0))) for t in schemas}, state_path
    )
    ensure_tables(client, database, schemas)
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        con.execute("SET TimeZone='UTC'")
        for name, schema in schemas.items():
            entry = result.tables[name]
            done = state.done.get(name, set())
            total = entry.local_rows
            sent = 0
            rows = _rows(con, schema, 10_000)
            batches: Iterator[tuple[int, Any]] = (
                _direct_batches(rows, schema, size, max_batch_bytes)
                if mode == "direct"
                else _queued_batches(rows, schema, size)
            )
            for index, (count, payload) in enumerate(batches):
                entry.batches += 1
                sent += count
                if index in done:
                    entry.skipped_batches += 1
                    entry.sent_rows += count
                    if progress:
                        progress(name, sent, total)
                    continue
                if mode == "direct":
                    try:
                        answer = _mgmt(client, database, append_command(schema, payload))
                    except Exception as exc:
                        raise PushError(
                            f"{name}: batch {index} ({count} rows) was refused: {str(exc).splitlines()[0]}"
                        ) from exc
                    arrived = sum(int(r.get("RowCount") or 0) for r in answer)
                    if arrived != count:
                        raise PushError(
                            f"{name}: batch {index}: sent {count} rows, the endpoint "
                            f"reports {arrived} ingested"
                        )
                else:
                    from azure.kusto.ingest import StreamDescriptor

                    tag = f"ctirealm:{store.meta['hash']}:{name}:{size}:{index}"
                    try:
                        ingest_client.ingest_from_stream(
                            StreamDescriptor(io.BytesIO(payload), stream_name=f"{name}-{index}.json"),
                            ingestion_properties=_ingestion_properties(database, schema, tag),
                        )
                    except Exception as exc:
                        raise PushError(
                            f"{name}: batch {index} could not be queued: {str(exc).splitlines()[0]}"
                        ) from exc
                entry.sent_rows += count
                state.mark(name, index)
                if progress:
                    progress(name, sent, total)
            if progress and total == 0:
                progress(name, 0, 0)
    finally:
        con.close()
    deadline = time.monotonic() + (wait if mode == "queued" else 0.0)
    while True:
        for name, entry in result.tables.items():
            if not entry.complete:
                entry.arrived = _count(client, database, name)
        if result.complete or time.monotonic() >= deadline:
            return result
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))


def default_state_path(store: Store, cluster: str, database: str) -> Path:
    """``<store>.push-<host>-<database>.json`` beside the store."""
    host = re.sub(r"[^A-Za-z0-9.-]+", "_", cluster.split("://", 1)[-1]).strip("_") or "cluster"
    return store.path.with_name(f"{store.path.stem}.push-{host}-{database}.json")
