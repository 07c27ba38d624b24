"""The telemetry store: one DuckDB file per dataset content hash, built once, opened read-only.

Building validates every committed event file (naming file, line and field of
any problem: a strict build stops at the first, a lenient one leaves that file
out and lists it in the metadata), generates the benign background, loads all of it, checks ids are
unique, and writes two sidecars: ``.meta.json`` (schemas, clock, row counts) and
``.labels.json`` (which events are attacks). Committed events are loaded with
DuckDB's JSON reader; the background comes from the generator's compact ``split``
files (constant columns once per row variant, per-row fields in time buckets),
table by table as soon as the generator (in worker processes for large sizes) has
finished each one, several tables at a time. Every table is stored sorted by time
then id, so its content and order depend on the inputs only: the same dataset,
seed and size give the same tables however the build was scheduled.
A file lock makes concurrent builders (pytest-xdist workers) safe: one builds,
the others wait and then open the finished file.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from .dataset import STORE_FORMAT, Dataset, DatasetError, EventFile
from .events import FileProblem, TelemetryFormatError, read_events
from .generator import Mirror, ProfileError, check_background, load_profiles, mirrors
from .labels import Labels
from .scenarios import Player, Scenario, load_scenario, scenario_files
from .schema import DUCKDB_TYPES, SchemaError, TableSchema
from .values import format_datetime

if TYPE_CHECKING:
    import duckdb

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

    def known_tables(self) -> set[str]:
        """Tables cases may name: the store's, plus those whose schema file did not load (so a
        case on such a table reports the schema problem, not an unknown table)."""
        return set(self.meta["schemas"]) | {p.table for p in self.problems if p.kind == "schema"}

    @property
    def problems(self) -> list[FileProblem]:
        """Files left out of a leniently built store (paths relative to the dataset)."""
        return [FileProblem.from_dict(p) for p in self.meta.get("problems", [])]

    @classmethod
    def open(cls, path: Path) -> Store:
        meta = json.loads(path.with_suffix(".meta.json").read_text(encoding="utf-8"))
        labels = Labels.load(path.with_suffix(".labels.json"))
        labels.mirrors = dict(meta.get("mirrors") or {})
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
    dataset: Dataset,
    staging: Path,
    labels: Labels,
    problems: list[FileProblem],
    strict: bool,
    progress: Progress | None,
    played: Sequence[tuple[str, EventFile, Path]] = (),
) -> dict[str, list[Path]]:
    """Validate attack and benign files, stage normalised copies, fill *labels*.

    *played* adds the scenario rows of this split: ``(kind, file, scenario path)``; a
    problem in them is reported against the scenario file. Routine rows are loaded but
    not labelled. A file with a problem is
    left out whole (none of its events, no labels) and the problem recorded; with
    *strict* the first problem is raised instead.
    """
    files: dict[str, list[Path]] = {}
    seen: dict[tuple[str, str], str] = {}
    entries: list[tuple[str, EventFile, Path]] = [
        *(("attack", e, e.path) for e in dataset.attack_files()),
        *(("hard_negative", e, e.path) for e in dataset.benign_files()),
        *played,
    ]
    for kind, entry, source in entries:
        out_path = staging / f"{kind}-{len(list(staging.iterdir()))}-{entry.table}.jsonl"
        try:
            ids = _validate_file(dataset, entry, out_path, seen)
        except TelemetryFormatError as exc:
            out_path.unlink(missing_ok=True)
            if strict:
                raise
            problems.append(
                FileProblem(
                    source.relative_to(dataset.root).as_posix(),
                    exc.line if source == entry.path else None,
                    kind,
                    entry.table,
                    entry.group,
                    exc.detail,
                )
            )
            continue
        for event_id, line in ids:
            seen[(entry.table, event_id)] = (
                f"{source}:{line}" if source == entry.path else f"{source} ({entry.table} row {line})"
            )
            if kind != "routine":  # normal work played from a scenario: background, unlabelled
                labels.add(entry.table, event_id, kind, entry.group)  # type: ignore[arg-type]
        files.setdefault(entry.table, []).append(out_path)
        if progress:
            progress(f"validated {source.relative_to(dataset.root)}", 0, None)
    return files


def _mirrors(dataset: Dataset) -> list[Mirror]:
    """The dataset's mirrored tables (none without generator profiles)."""
    profiles = dataset.generator_dir()
    if not profiles.is_dir() or not any(profiles.glob("*.yaml")):
        return []
    return [
        m
        for m in mirrors(load_profiles(profiles))
        if m.table in dataset.schemas and m.source in dataset.schemas
    ]


def _mirror_labels(labels: Labels, mirrored: list[Mirror]) -> None:
    """A mirrored event carries its source's label in the mirror table too (same id)."""
    labels.mirrors = {m.table: m.source for m in mirrored}
    for mirror in mirrored:
        own = labels.events.get(mirror.table, {})
        for event_id, entry in sorted(labels.events.get(mirror.source, {}).items()):
            if event_id not in own:
                labels.add(mirror.table, event_id, entry["kind"], entry["group"])  # type: ignore[arg-type]


def _play_scenarios(
    dataset: Dataset,
    split: str,
    seed: int,
    staging: Path,
    problems: list[FileProblem],
    strict: bool,
) -> tuple[list[tuple[str, EventFile, Path]], Path | None]:
    """Play this split's scenarios into *staging*; the files to validate, and the folder of
    the scenario files whose ``background`` the generator merges (the good ones only).

    A scenario that does not load or play is left out whole and recorded as a problem
    of its case (strict: raised), so one broken scenario fails its own case only.
    """
    paths = scenario_files(dataset.scenarios_dir())
    if not paths:
        return [], None
    good_dir = staging / "scenarios"
    good_dir.mkdir()
    played_dir = staging / "played"
    profiles_dir = dataset.generator_dir()
    base = load_profiles(profiles_dir)
    loaded: list[Scenario] = []
    for path in paths:
        try:
            scenario = load_scenario(path)
            check_background(base, path, dataset.root / "schemas", dataset.window)
        except ProfileError as exc:
            if strict:
                raise
            problems.append(_scenario_problem(dataset, path, path.stem, exc))
            continue
        shutil.copy(path, good_dir / path.name)
        loaded.append(scenario)
        # Later scenarios are checked against the executables this one adds: two files
        # defining one binary differently leave the later one out, not the build.
        base["binaries"] = {**base.get("binaries", {}), **scenario.binaries}
    player = Player(
        profiles_dir,
        dataset.root / "schemas",
        good_dir,
        seed,
        dataset.window,
        dataset.split_position(split),
        max(1, len(dataset.splits)),
    )
    out: list[tuple[str, EventFile, Path]] = []
    for scenario in loaded:
        try:
            written = player.play_scenario(scenario, played_dir)
        except ProfileError as exc:
            if strict:
                raise
            problems.append(_scenario_problem(dataset, scenario.path, scenario.case, exc))
            continue
        for played in written:
            out.append((played.kind, EventFile(played.table, played.case, played.path), scenario.path))
    return out, good_dir


def _scenario_problem(dataset: Dataset, path: Path, case: str, exc: Exception) -> FileProblem:
    message = str(exc).removeprefix(f"{path}: ").removeprefix(f"{path}")
    return FileProblem(path.relative_to(dataset.root).as_posix(), None, "scenario", "", case, message)


def _validate_file(
    dataset: Dataset, entry: EventFile, out_path: Path, seen: dict[tuple[str, str], str]
) -> list[tuple[str, int]]:
    """Validate one event file into a normalised copy; its ``(id, line)`` pairs."""
    unusable = dataset.unusable_table(entry.table)
    if unusable:
        raise TelemetryFormatError(entry.path, None, unusable)
    schema = dataset.schemas[entry.table]
    ids: list[tuple[str, int]] = []
    here: dict[str, int] = {}
    with out_path.open("w", encoding="utf-8") as out:
        for event in read_events(entry.path, schema, window=dataset.window):
            before = seen.get((entry.table, event.event_id))
            if event.event_id in here:
                before = f"{entry.path}:{here[event.event_id]}"
            if before:
                raise TelemetryFormatError(
                    entry.path, event.line, f"{schema.id_column} {event.event_id} already used at {before}"
                )
            here[event.event_id] = event.line
            ids.append((event.event_id, event.line))
            out.write(json.dumps(_normalised(event.values, schema), ensure_ascii=False))
            out.write("\n")
    return ids


def build_store(
    dataset: Dataset,
    *,
    cache_dir: Path | None = None,
    rows: int | None = None,
    seed: int | None = None,
    force: bool = False,
    strict: bool = True,
    progress: Progress | None = None,
    split: str = "dev",
) -> Store:
    """Build (or reuse) the store of one *split* of *dataset*; safe to call from many
    processes at once.

    *split* ``dev`` is what agents query, ``test`` (when the dataset has it) the
    re-simulation final detections are scored on: another seed, so other background
    rows and ids, and scenarios played on other entities (`telemetry.scenarios`).

    With *strict* (the default) the first problem in a committed file or schema
    raises, naming file, line and field. Otherwise each bad file is left out and
    listed in `Store.problems`, and the rest is built: a benchmark run then fails
    only the cases that need the missing events.
    """
    rows = dataset.rows if rows is None else int(rows)
    if seed is None:
        seed = dataset.split_seed(split) if dataset.splits else dataset.seed
    seed = int(seed)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = dataset.content_hash(rows=rows, seed=seed, split=split)
    final = cache_dir / f"{dataset.name}-{split}-{digest}.duckdb"
    with FileLock(str(final) + ".lock"):
        if final.is_file() and not force:
            return _checked(Store.open(final), dataset, strict)
        started = time.perf_counter()
        staging = cache_dir / f"{final.stem}.staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "committed").mkdir(parents=True)
        try:
            labels = Labels()
            problems = list(dataset.problems)
            if strict and problems:
                raise SchemaError(f"{dataset.root / problems[0].path}: {problems[0].message}")
            played, scenarios_dir = _play_scenarios(dataset, split, seed, staging, problems, strict)
            files = _validate_committed(
                dataset, staging / "committed", labels, problems, strict, progress, played
            )
            mirrored = _mirrors(dataset)
            _mirror_labels(labels, mirrored)
            temp_db = staging / "store.duckdb"
            with _Loader(temp_db, dataset, files, staging, progress, mirrored) as loader:
                if rows > 0:
                    from .generator import generate

                    def tick(n: int) -> None:
                        loader.report("generating benign background", n, rows)

                    # Each table is loaded as soon as its generated files are complete,
                    # while worker processes go on with the others.
                    generate(
                        loader.generated_dir,
                        seed=seed,
                        rows=rows,
                        window=dataset.window,
                        profiles_dir=dataset.generator_dir(),
                        progress=tick,
                        output="split",
                        workers=None,
                        on_table=loader.load_generated,
                        scenarios_dir=scenarios_dir,
                    )
                counts = loader.finish()
            meta = {
                "format": STORE_FORMAT,
                "hash": digest,
                "dataset": dataset.name,
                "split": split,
                "splits": list(dataset.splits),
                "built": datetime.now(UTC).isoformat(timespec="seconds"),
                "build_seconds": round(time.perf_counter() - started, 3),
                "now": _iso(dataset.now),
                "window": [_iso(dataset.window[0]), _iso(dataset.window[1])],
                "generator": {"seed": seed, "rows": rows},
                "mirrors": labels.mirrors,
                "rows": counts,
                "schemas": {
                    name: {
                        "id_column": s.id_column,
                        "time_column": s.time_column,
                        "columns": [list(c) for c in s.columns],
                    }
                    for name, s in dataset.schemas.items()
                },
                "problems": [p.to_dict() for p in problems],
            }
            final.with_suffix(".meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            labels.save(final.with_suffix(".labels.json"))
            os.replace(temp_db, final)  # last: the DuckDB file's presence marks completion
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return Store.open(final)


def _checked(store: Store, dataset: Dataset, strict: bool) -> Store:
    """A cached store built leniently still fails a strict caller, as a fresh build would."""
    if strict and store.problems:
        first = store.problems[0]
        if first.kind == "schema":
            raise SchemaError(f"{dataset.root / first.path}: {first.message}")
        raise TelemetryFormatError(dataset.root / first.path, first.line, first.message)
    return store


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


def _typed(expr: str, kind: str, row: bool = False) -> str:
    """A split-file field as the column's type (the same casts the JSONL path applies).

    A row's datetime field is either ISO-8601 text or epoch milliseconds (no ``-``).
    """
    if kind == "datetime":
        iso = f"CAST(CAST({expr} AS TIMESTAMPTZ) AS TIMESTAMP)"
        if row:
            return f"CASE WHEN contains({expr}, '-') THEN {iso} ELSE epoch_ms(CAST({expr} AS BIGINT)) END"
        return iso
    if kind == "timespan":
        return f"CAST({expr} AS INTERVAL)"
    if kind == "dynamic":
        return f"json({expr})"  # normalised as read_json normalises a JSON column
    return expr


def _read_csv(paths: list[Path], schema: TableSchema) -> str:
    return (
        f"read_csv({_sql_list(paths)}, header=false, delim=',', quote='\"', escape='\"', "
        f"allow_quoted_nulls=false, auto_detect=false, columns={_csv_columns(schema)})"
    )


class _Loader:
    """Loads tables into a new DuckDB file: committed events (JSONL) plus generated rows.

    :meth:`load_generated` is called as soon as the generator reports a table complete; it
    loads the table on a pool of threads (each with its own cursor, each statement on one
    DuckDB thread), so tables load side by side while the generator goes on with others.
    :meth:`finish` waits, loads the tables that have no generated rows and returns row
    counts. Every table is sorted by time then id, so its content and order never depend
    on how, or in which order, it was loaded.
    """

    def __init__(
        self,
        db_path: Path,
        dataset: Dataset,
        files: dict[str, list[Path]],
        staging: Path,
        progress: Progress | None,
        mirrored: Sequence[Mirror] = (),
    ) -> None:
        from .generator import available_cpus

        self.dataset = dataset
        self.mirrored = list(mirrored)
        self.files = files
        self.progress = progress
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        #: Where the generator writes its split files.
        self.generated_dir = staging / "generated"
        spill_dir = staging / "spill"
        spill_dir.mkdir(parents=True, exist_ok=True)
        import duckdb  # here, not at import: the pytest plugin imports this module in every run

        self.con = duckdb.connect(str(db_path))
        self.con.execute(f"SET temp_directory='{str(spill_dir).replace(chr(39), chr(39) * 2)}'")
        self.con.execute(f"SET memory_limit='{os.environ.get('CTIREALM_BUILD_MEMORY', '1.5GB')}'")
        # One DuckDB thread per statement: the order-keeping joins need it, and tables load
        # in parallel instead.
        self.con.execute("SET threads = 1")
        self.pool = ThreadPoolExecutor(max(1, available_cpus()), thread_name_prefix="store-load")
        self.pending: list[Future[None]] = []

    def __enter__(self) -> _Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        for future in self.pending:
            future.cancel()
        self.pool.shutdown(wait=True)
        self.con.close()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        con = self.con.cursor()
        con.execute("SET TimeZone='UTC'")
        return con

    def _committed(self, schema: TableSchema) -> str | None:
        paths = [p for p in self.files.get(schema.name, []) if p.stat().st_size > 0]
        if not paths:
            return None
        return (
            f"SELECT {_select_list(schema)} FROM read_json({_sql_list(paths)}, "
            f"format='newline_delimited', columns={_read_json_columns(schema)}, "
            f"maximum_object_size=16777216)"
        )

    def load_generated(self, table: str) -> None:
        """Queue *table* (committed events plus the generator's split files) for loading."""
        if table not in self.dataset.schemas:
            return
        for future in [f for f in self.pending if f.done()]:
            future.result()  # a failed load stops the build now
        self.pending.append(self.pool.submit(self._load_generated, self.dataset.schemas[table]))

    def finish(self) -> dict[str, int]:
        """Wait for queued loads, load the tables not loaded yet; row counts in schema order."""
        for future in self.pending:
            future.result()
        con = self._cursor()
        try:
            for name, schema in self.dataset.schemas.items():
                if name not in self.counts:
                    self._create(con, schema)
            for mirror in self.mirrored:
                self._mirror(con, mirror)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        return {name: self.counts[name] for name in self.dataset.schemas}

    def _load_generated(self, schema: TableSchema) -> None:
        """Rows come bucket by bucket (the generator cuts the window into time buckets), each
        bucket sorted on its own and appended, which keeps every sort in memory. Only the
        rows' own fields are sorted (a few columns); the variant columns are joined on after,
        on one thread, which keeps the sorted order. Both the order and the buckets' time
        ranges are then checked; should either fail, the table is re-sorted as a whole.
        """
        from .generator import split_files

        split = split_files(self.generated_dir, schema.name)
        variant_files = [p for p in split.variants if p.stat().st_size > 0]
        con = self._cursor()
        try:
            if not variant_files:
                self._create(con, schema)
                return
            q = _quote
            typed = ", ".join(f"{_typed(q(n), k)} AS {q(n)}" for n, k in schema.columns)
            con.execute(
                f"CREATE TEMP TABLE __variants AS SELECT __vid, {typed} "
                f"FROM {_read_csv(variant_files, schema)}"
            )
            keys = [schema.time_column, schema.id_column]
            # The sort keys must be rows' own fields (they are: {$time}, {$id}).
            own_keys = all(k in split.varying for k in keys) and con.execute(
                "SELECT " + " + ".join(f"count({q(k)})" for k in keys) + " FROM __variants"
            ).fetchone() == (0,)
            quoted, time_column = q(schema.name), q(schema.time_column)
            columns = ", ".join(f"{q(c)} {DUCKDB_TYPES[t]}" for c, t in schema.columns)
            # One transaction per table: its buckets append to one run of row groups, which
            # the final checkpoint then keeps as they are instead of merging them.
            con.execute("BEGIN TRANSACTION")
            con.execute(f"CREATE TABLE {quoted} ({columns})")
            committed = self._committed(schema)
            if committed:
                con.execute(
                    f"CREATE TEMP TABLE __committed AS SELECT "
                    f"-row_number() OVER () AS __vid, * FROM ({committed})"
                )
            own = [(n, k) for n, k in schema.columns if n in split.varying]
            # Columns some variant fills (many tables have dozens the generator never uses;
            # those are written as nulls instead of being joined on for every row).
            filled = con.execute(
                "SELECT " + ", ".join(f"count({q(n)}) > 0" for n, _ in schema.columns) + " FROM __variants"
            ).fetchone()
            variant_columns = {n for (n, _), used in zip(schema.columns, filled or (), strict=True) if used}
            last = len(split.buckets) - 1
            loaded = 0
            misplaced = 0
            for b, paths in enumerate(split.buckets):
                inside = []
                if b > 0:
                    inside.append(f"{time_column} >= epoch_ms({int(split.bounds[b])})")
                if b < last:
                    inside.append(f"{time_column} < epoch_ms({int(split.bounds[b + 1])})")
                where = f" WHERE {' AND '.join(inside)}" if inside else ""
                paths = [p for p in paths if p.stat().st_size > 0]
                if not paths and not committed:
                    continue
                if own_keys:
                    misplaced += self._bucket_narrow(
                        con, schema, paths, own, variant_columns, where, loaded, bool(committed)
                    )
                else:
                    self._bucket_wide(con, schema, split.varying, paths, where, bool(committed))
                if inside:
                    row = con.execute(
                        f"SELECT count(*) FROM (SELECT {time_column} FROM {quoted} "
                        f"OFFSET {loaded}) WHERE NOT ({' AND '.join(inside)})"
                    ).fetchone()
                    misplaced += row[0] if row else 0
                row = con.execute(f"SELECT count(*) FROM {quoted}").fetchone()
                loaded = row[0] if row else 0
            if misplaced:
                order = ", ".join(q(k) for k in keys)
                con.execute(f"CREATE TEMP TABLE __sorted AS SELECT * FROM {quoted}")
                con.execute(f"DROP TABLE {quoted}")
                con.execute(f"CREATE TABLE {quoted} AS SELECT * FROM __sorted ORDER BY {order}")
            self._check(con, schema)
            con.execute("COMMIT")
        finally:
            con.close()  # drops the cursor's temp tables
        for path in split.paths():
            path.unlink()

    def _bucket_narrow(
        self,
        con: duckdb.DuckDBPyConnection,
        schema: TableSchema,
        paths: list[Path],
        own: list[tuple[str, str]],
        variant_columns: set[str],
        where: str,
        loaded: int,
        committed: bool,
    ) -> int:
        """Append one bucket: sort the rows' own fields, then join the rest on, in order.

        Returns how many appended rows are out of the sorted order (0 unless the engine
        reordered the join, which the caller repairs).
        """
        q = _quote
        parts = []
        if paths:
            fields = ", ".join(f"{_typed(q(n), k, row=True)} AS {q(n)}" for n, k in own)
            parts.append(f"SELECT __vid, {fields} FROM {_read_csv(paths, schema)}")
        if committed:
            parts.append(f"SELECT __vid, {', '.join(q(n) for n, _ in own)} FROM __committed{where}")
        order = f"{q(schema.time_column)}, {q(schema.id_column)}"
        union = " UNION ALL ".join(f"({p})" for p in parts)
        con.execute(f"CREATE OR REPLACE TEMP TABLE __rows AS SELECT * FROM ({union}) ORDER BY {order}")
        names = {n for n, _ in own}
        merged = []
        for n, kind in schema.columns:
            exprs = [
                e.format(c=q(n))
                for e in (
                    "r.{c}" if n in names else "",
                    "v.{c}" if n in variant_columns else "",
                    "c.{c}" if committed else "",
                )
                if e
            ]
            if not exprs:
                merged.append(f"CAST(NULL AS {DUCKDB_TYPES[kind]}) AS {q(n)}")
            elif len(exprs) == 1:
                merged.append(f"{exprs[0]} AS {q(n)}")
            else:
                merged.append(f"coalesce({', '.join(exprs)}) AS {q(n)}")
        joins = "LEFT JOIN __variants v ON r.__vid = v.__vid"
        if committed:
            joins += " LEFT JOIN __committed c ON r.__vid = c.__vid"
        con.execute(f"INSERT INTO {q(schema.name)} SELECT {', '.join(merged)} FROM __rows r {joins}")
        idc = q(schema.id_column)
        row = con.execute(
            f"SELECT count(*) FROM (SELECT {idc} AS a FROM {q(schema.name)} OFFSET {loaded}) "
            f"POSITIONAL JOIN (SELECT {idc} AS b FROM __rows) WHERE a IS DISTINCT FROM b"
        ).fetchone()
        return row[0] if row else 0

    def _bucket_wide(
        self,
        con: duckdb.DuckDBPyConnection,
        schema: TableSchema,
        varying: frozenset[str],
        paths: list[Path],
        where: str,
        committed: bool,
    ) -> None:
        """Append one bucket by sorting whole rows (when the sort keys are not rows' own)."""
        q = _quote
        merged = ", ".join(
            f"coalesce({_typed('r.' + q(n), k, row=True)}, v.{q(n)}) AS {q(n)}"
            if n in varying
            else f"v.{q(n)}"
            for n, k in schema.columns
        )
        sources = []
        if paths:
            sources.append(
                f"SELECT {merged} FROM {_read_csv(paths, schema)} r JOIN __variants v ON r.__vid = v.__vid"
            )
        if committed:
            columns = ", ".join(q(n) for n, _ in schema.columns)
            sources.append(f"SELECT {columns} FROM __committed{where}")
        order = f"{q(schema.time_column)}, {q(schema.id_column)}"
        union = " UNION ALL ".join(f"({s})" for s in sources)
        con.execute(f"INSERT INTO {q(schema.name)} SELECT * FROM ({union}) ORDER BY {order}")

    def _mirror(self, con: duckdb.DuckDBPyConnection, mirror: Mirror) -> None:
        """Copy the source's rows into the mirror table (ids it lacks), then sort it again."""
        schema, source = self.dataset.schemas[mirror.table], self.dataset.schemas[mirror.source]
        q = _quote
        names = [n for n, _ in schema.columns]
        if [n for n, _ in source.columns] != names:
            raise DatasetError(f"{mirror.table} mirrors {mirror.source}, but their schemas differ")
        values = ", ".join(
            "'" + mirror.force[n].replace("'", "''") + "'" if n in mirror.force else q(n) for n in names
        )
        idc, order = q(schema.id_column), f"{q(schema.time_column)}, {q(schema.id_column)}"
        table = q(schema.name)
        con.execute(
            f"CREATE TEMP TABLE __mirrored AS SELECT * FROM {table} UNION ALL "
            f"SELECT {values} FROM {q(source.name)} "
            f"WHERE {idc} NOT IN (SELECT {idc} FROM {table})"
        )
        con.execute(f"DROP TABLE {table}")
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM __mirrored ORDER BY {order}")
        con.execute("DROP TABLE __mirrored")
        self._check(con, schema)

    def _create(self, con: duckdb.DuckDBPyConnection, schema: TableSchema) -> None:
        """A table of committed events only (or an empty one)."""
        committed = self._committed(schema)
        quoted = _quote(schema.name)
        if committed:
            order = f"{_quote(schema.time_column)}, {_quote(schema.id_column)}"
            con.execute(f"CREATE TABLE {quoted} AS SELECT * FROM ({committed}) ORDER BY {order}")
        else:
            columns = ", ".join(f"{_quote(c)} {DUCKDB_TYPES[t]}" for c, t in schema.columns)
            con.execute(f"CREATE TABLE {quoted} ({columns})")
        self._check(con, schema)

    def _check(self, con: duckdb.DuckDBPyConnection, schema: TableSchema) -> None:
        """Ids unique (else a DatasetError naming a few); record the row count."""
        quoted = _quote(schema.name)
        dupes = con.execute(
            f"SELECT {_quote(schema.id_column)}, count(*) FROM {quoted} GROUP BY 1 "
            "HAVING count(*) > 1 ORDER BY 1 LIMIT 3"
        ).fetchall()
        if dupes:
            raise DatasetError(
                f"{schema.name}: id column {schema.id_column!r} is not unique: "
                + ", ".join(f"{v!r} x{n}" for v, n in dupes)
            )
        row = con.execute(f"SELECT count(*) FROM {quoted}").fetchone()
        with self.lock:
            self.counts[schema.name] = row[0] if row else 0
        self.report(f"loaded {schema.name}", self.counts[schema.name], None)

    def report(self, message: str, done: int, total: int | None) -> None:
        """Call the build's progress callback (from any thread, one call at a time)."""
        if self.progress:
            with self.lock:
                self.progress(message, done, total)
