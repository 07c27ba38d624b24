"""The telemetry store: one DuckDB file per dataset content hash, built once, opened read-only.

Building validates every committed event file (naming file, line and field of
any problem), generates the benign background, loads all of it with DuckDB's
JSON reader, checks ids are unique, and writes two sidecars: ``.meta.json``
(schemas, clock, row counts) and ``.labels.json`` (which events are attacks).
A file lock makes concurrent builders (pytest-xdist workers) safe: one builds,
the others wait and then open the finished file.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from filelock import FileLock

from ..engine import LocalEngine
from ..engine.result import format_datetime
from .dataset import STORE_FORMAT, Dataset, DatasetError
from .events import TelemetryFormatError, read_events
from .labels import Labels
from .schema import DUCKDB_TYPES, TableSchema

Progress = Callable[[str, int, int | None], None]


def default_cache_dir() -> Path:
    """``$CTIREALM_CACHE_DIR``, else ``~/.cache/ctirealm``."""
    env = os.environ.get("CTIREALM_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ctirealm"


@dataclass
class Store:
    """A built store: the DuckDB file, its metadata and its labels."""

    path: Path
    meta: dict[str, Any]
    labels: Labels

    @property
    def now(self) -> datetime:
        return datetime.fromisoformat(self.meta["now"].replace("Z", "+00:00"))

    @property
    def rows(self) -> dict[str, int]:
        return dict(self.meta["rows"])

    def engine(self, **options: Any) -> LocalEngine:
        """A read-only `LocalEngine` on this store (options: timeout, max_rows, memory_limit)."""
        return LocalEngine.open(self.path, **options)

    @classmethod
    def open(cls, path: Path) -> Store:
        meta = json.loads(path.with_suffix(".meta.json").read_text(encoding="utf-8"))
        labels = Labels.load(path.with_suffix(".labels.json"))
        return cls(path, meta, labels)


def _iso(moment: datetime) -> str:
    return format_datetime(moment)


def _normalised(event_values: tuple[Any, ...], schema: TableSchema) -> dict[str, Any]:
    """Coerced values as JSON the DuckDB reader takes back without loss."""
    out: dict[str, Any] = {}
    for (name, kind), value in zip(schema.columns, event_values, strict=True):
        if value is None:
            continue
        if kind == "datetime":
            out[name] = _iso(value)
        elif kind == "dynamic":
            out[name] = json.loads(value)
        elif kind == "timespan":
            out[name] = f"{value.total_seconds()} seconds"
        else:
            out[name] = value
    return out


def _read_json_columns(schema: TableSchema) -> str:
    """The ``columns=`` struct for read_json: datetimes read as text, cast after."""
    parts = []
    for name, kind in schema.columns:
        duck = "VARCHAR" if kind in ("datetime", "timespan") else DUCKDB_TYPES[kind]
        parts.append(f"'{name.replace(chr(39), chr(39) * 2)}': '{duck}'")
    return "{" + ", ".join(parts) + "}"


def _select_list(schema: TableSchema) -> str:
    parts = []
    for name, kind in schema.columns:
        quoted = '"' + name.replace('"', '""') + '"'
        if kind == "datetime":
            parts.append(f"CAST(CAST({quoted} AS TIMESTAMPTZ) AS TIMESTAMP) AS {quoted}")
        elif kind == "timespan":
            parts.append(f"CAST({quoted} AS INTERVAL) AS {quoted}")
        else:
            parts.append(quoted)
    return ", ".join(parts)


def _validate_committed(
    dataset: Dataset, staging: Path, labels: Labels, progress: Progress | None
) -> dict[str, list[Path]]:
    """Validate attack and benign files, stage normalised copies, fill *labels*."""
    files: dict[str, list[Path]] = {}
    seen: dict[tuple[str, str], str] = {}
    for kind, entries in (("attack", dataset.attack_files()), ("hard_negative", dataset.benign_files())):
        for entry in entries:
            schema = dataset.schemas[entry.table]
            out_path = staging / f"{kind}-{len(list(staging.iterdir()))}-{entry.table}.jsonl"
            with out_path.open("w", encoding="utf-8") as out:
                for event in read_events(entry.path, schema, window=dataset.window):
                    key = (entry.table, event.event_id)
                    if key in seen:
                        raise TelemetryFormatError(
                            entry.path, event.line,
                            f"{schema.id_column} {event.event_id} already used at {seen[key]}",
                        )
                    seen[key] = f"{entry.path}:{event.line}"
                    labels.add(entry.table, event.event_id, kind, entry.group)  # type: ignore[arg-type]
                    out.write(json.dumps(_normalised(event.values, schema), ensure_ascii=False))
                    out.write("\n")
            files.setdefault(entry.table, []).append(out_path)
            if progress:
                progress(f"validated {entry.path.relative_to(dataset.root)}", 0, None)
    return files


def build_store(
    dataset: Dataset,
    *,
    cache_dir: Path | None = None,
    rows: int | None = None,
    seed: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> Store:
    """Build (or reuse) the store for *dataset*; safe to call from many processes at once."""
    rows = dataset.rows if rows is None else int(rows)
    seed = dataset.seed if seed is None else int(seed)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = dataset.content_hash(rows=rows, seed=seed)
    final = cache_dir / f"{dataset.name}-{digest}.duckdb"
    with FileLock(str(final) + ".lock"):
        if final.is_file() and not force:
            return Store.open(final)
        started = time.perf_counter()
        staging = cache_dir / f"{final.stem}.staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "committed").mkdir(parents=True)
        try:
            labels = Labels()
            files = _validate_committed(dataset, staging / "committed", labels, progress)
            generated: dict[str, int] = {}
            if rows > 0:
                from .generator import generate

                def tick(n: int) -> None:
                    if progress:
                        progress("generating benign background", n, rows)

                generated = generate(
                    staging / "generated", seed=seed, rows=rows, window=dataset.window,
                    profiles_dir=dataset.generator_dir(), progress=tick,
                )
                for table in generated:
                    files.setdefault(table, []).append(staging / "generated" / f"{table}.jsonl")
            temp_db = staging / "store.duckdb"
            counts = _load(temp_db, dataset, files, progress)
            meta = {
                "format": STORE_FORMAT,
                "hash": digest,
                "dataset": dataset.name,
                "built": datetime.now(UTC).isoformat(timespec="seconds"),
                "build_seconds": round(time.perf_counter() - started, 3),
                "now": _iso(dataset.now),
                "window": [_iso(dataset.window[0]), _iso(dataset.window[1])],
                "generator": {"seed": seed, "rows": rows},
                "rows": counts,
                "schemas": {
                    name: {"id_column": s.id_column, "time_column": s.time_column,
                           "columns": [list(c) for c in s.columns]}
                    for name, s in dataset.schemas.items()
                },
            }
            final.with_suffix(".meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            labels.save(final.with_suffix(".labels.json"))
            os.replace(temp_db, final)  # last: the DuckDB file's presence marks completion
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return Store.open(final)


def _load(
    db_path: Path, dataset: Dataset, files: dict[str, list[Path]], progress: Progress | None
) -> dict[str, int]:
    con = duckdb.connect(str(db_path))
    try:
        con.execute("SET TimeZone='UTC'")
        counts: dict[str, int] = {}
        for name, schema in dataset.schemas.items():
            quoted = '"' + name + '"'
            paths = [str(p) for p in files.get(name, []) if p.stat().st_size > 0]
            if paths:
                sources = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
                order = f'"{schema.time_column}", "{schema.id_column}"'
                con.execute(
                    f"CREATE TABLE {quoted} AS SELECT {_select_list(schema)} FROM read_json("
                    f"{sources}, format='newline_delimited', columns={_read_json_columns(schema)}, "
                    f"maximum_object_size=16777216) ORDER BY {order}"
                )
            else:
                columns = ", ".join(f'"{c}" {DUCKDB_TYPES[t]}' for c, t in schema.columns)
                con.execute(f"CREATE TABLE {quoted} ({columns})")
            dupes = con.execute(
                f'SELECT "{schema.id_column}", count(*) FROM {quoted} GROUP BY 1 '
                "HAVING count(*) > 1 ORDER BY 1 LIMIT 3"
            ).fetchall()
            if dupes:
                raise DatasetError(
                    f"{name}: id column {schema.id_column!r} is not unique: "
                    + ", ".join(f"{v!r} x{n}" for v, n in dupes)
                )
            counts[name] = con.execute(f"SELECT count(*) FROM {quoted}").fetchone()[0]
            if progress:
                progress(f"loaded {name}", counts[name], None)
        con.execute("CHECKPOINT")
        return counts
    finally:
        con.close()
