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
            temp_db = staging / "store.duckdb"
            with _Loader(temp_db, dataset, files, staging, progress) as loader:
                if rows > 0:
                    from .generator import generate

                    def tick(n: int) -> None:
                        if progress:
                            progress("generating benign background", n, rows)

                    # Each table is loaded as soon as its generated files are complete,
                    # while worker processes go on with the others.
                    generate(
                        loader.generated_dir, seed=seed, rows=rows, window=dataset.window,
                        profiles_dir=dataset.generator_dir(), progress=tick, output="split",
                        workers=None, on_table=loader.load_generated,
                    )
                counts = loader.finish()
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


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _csv_columns(schema: TableSchema) -> str:
    """``columns=`` for the generator's split files: a variant id, then text or number fields."""
    parts = ["'__vid': 'BIGINT'"]
    for name, kind in schema.columns:
        duck = DUCKDB_TYPES[kind] if kind in ("long", "int", "real", "decimal", "bool") else "VARCHAR"
        parts.append(f"'{name.replace(chr(39), chr(39) * 2)}': '{duck}'")
    return "{" + ", ".join(parts) + "}"


def _typed(expr: str, kind: str) -> str:
    """A split-file field as the column's type (the same casts the JSONL path applies)."""
    if kind == "datetime":
        return f"CAST(CAST({expr} AS TIMESTAMPTZ) AS TIMESTAMP)"
    if kind == "timespan":
        return f"CAST({expr} AS INTERVAL)"
    if kind == "dynamic":
        return f"json({expr})"  # normalised as read_json normalises a JSON column
    return expr


def _read_csv(paths: list[Path], schema: TableSchema) -> str:
    return (f"read_csv({_sql_list(paths)}, header=false, delim=',', quote='\"', escape='\"', "
            f"allow_quoted_nulls=false, auto_detect=false, columns={_csv_columns(schema)})")


class _Loader:
    """Loads tables into a new DuckDB file: committed events (JSONL) plus generated rows.

    A table with generated rows is loaded by :meth:`load_generated` as soon as the generator
    reports it complete; :meth:`finish` loads the rest, checks ids and returns row counts.
    Every table is sorted by time then id, so its content and order never depend on how or
    in which order it was loaded.
    """

    def __init__(self, db_path: Path, dataset: Dataset, files: dict[str, list[Path]],
                 staging: Path, progress: Progress | None) -> None:
        self.dataset = dataset
        self.files = files
        self.progress = progress
        self.counts: dict[str, int] = {}
        #: Where the generator writes its split files.
        self.generated_dir = staging / "generated"
        spill_dir = staging / "spill"
        self.con = duckdb.connect(str(db_path))
        self.con.execute("SET TimeZone='UTC'")
        spill_dir.mkdir(parents=True, exist_ok=True)
        self.con.execute(f"SET temp_directory='{str(spill_dir).replace(chr(39), chr(39) * 2)}'")
        self.con.execute(f"SET memory_limit='{os.environ.get('CTIREALM_BUILD_MEMORY', '1.5GB')}'")

    def __enter__(self) -> _Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.con.close()

    def _committed(self, schema: TableSchema) -> str | None:
        paths = [p for p in self.files.get(schema.name, []) if p.stat().st_size > 0]
        if not paths:
            return None
        return (f"SELECT {_select_list(schema)} FROM read_json({_sql_list(paths)}, "
                f"format='newline_delimited', columns={_read_json_columns(schema)}, "
                f"maximum_object_size=16777216)")

    def load_generated(self, table: str) -> None:
        """Load *table*: its committed events and the generator's split files for it."""
        from .generator import split_files

        if table not in self.dataset.schemas:
            return
        schema = self.dataset.schemas[table]
        split = split_files(self.generated_dir, table)
        rows_files = [p for p in split.rows if p.stat().st_size > 0]
        variant_files = [p for p in split.variants if p.stat().st_size > 0]
        if not rows_files:
            self._create(schema, [])
            return
        typed = ", ".join(f"{_typed(_quote(n), k)} AS {_quote(n)}" for n, k in schema.columns)
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE __variants AS SELECT __vid, {typed} "
            f"FROM {_read_csv(variant_files, schema)}"
        )
        # A row's own field wins over its variant's; columns no row supplies come from the
        # variants alone (the generator lists the others), which spares most coalesces.
        merged = ", ".join(
            f"coalesce({_typed('r.' + _quote(n), k)}, v.{_quote(n)}) AS {_quote(n)}"
            if n in split.varying else f"v.{_quote(n)}"
            for n, k in schema.columns
        )
        self._create(schema, [
            f"SELECT {merged} FROM {_read_csv(rows_files, schema)} r "
            "JOIN __variants v ON r.__vid = v.__vid"
        ])
        self.con.execute("DROP TABLE __variants")
        for path in split.paths():
            path.unlink()

    def _create(self, schema: TableSchema, sources: list[str]) -> None:
        committed = self._committed(schema)
        if committed:
            sources = [*sources, committed]
        quoted = _quote(schema.name)
        if sources:
            order = f"{_quote(schema.time_column)}, {_quote(schema.id_column)}"
            union = " UNION ALL ".join(f"({q})" for q in sources)
            self.con.execute(f"CREATE TABLE {quoted} AS SELECT * FROM ({union}) ORDER BY {order}")
        else:
            columns = ", ".join(f"{_quote(c)} {DUCKDB_TYPES[t]}" for c, t in schema.columns)
            self.con.execute(f"CREATE TABLE {quoted} ({columns})")
        dupes = self.con.execute(
            f"SELECT {_quote(schema.id_column)}, count(*) FROM {quoted} GROUP BY 1 "
            "HAVING count(*) > 1 ORDER BY 1 LIMIT 3"
        ).fetchall()
        if dupes:
            raise DatasetError(
                f"{schema.name}: id column {schema.id_column!r} is not unique: "
                + ", ".join(f"{v!r} x{n}" for v, n in dupes)
            )
        row = self.con.execute(f"SELECT count(*) FROM {quoted}").fetchone()
        self.counts[schema.name] = row[0] if row else 0
        if self.progress:
            self.progress(f"loaded {schema.name}", self.counts[schema.name], None)

    def finish(self) -> dict[str, int]:
        """Load the tables not loaded yet, write everything out; row counts in schema order."""
        for name, schema in self.dataset.schemas.items():
            if name not in self.counts:
                self._create(schema, [])
        self.con.execute("CHECKPOINT")
        return {name: self.counts[name] for name in self.dataset.schemas}
