"""Determinism of the telemetry store: the same inputs give the same tables, whatever way it is built.

Two builds of the real dataset (attack and benign events plus a generated background) must
hold identical tables: same column types, same rows, in the same physical order, and the
same answer to ``T | order by <id>`` through the engine. That must hold whether the
background is generated in this process or in worker processes, in one shard or several,
loaded in one time bucket or many, and through the store's fallback paths. The compact
``split`` files the store loads must also give exactly the rows of the ``jsonl`` output.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pytest

from ctirealm.engine import LocalEngine
from ctirealm.telemetry import generator, store
from ctirealm.telemetry.dataset import Dataset
from ctirealm.telemetry.scenarios import Player, load_scenario, scenario_files
from ctirealm.telemetry.store import Store, build_store

# Slow: several builds of the same store.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ROWS = 5_000


def _physical(path: Path) -> dict[str, tuple]:
    """Per table: column types, row count and a hash of every row in storage order."""
    con = duckdb.connect(":memory:")
    con.execute(f"ATTACH '{path}' AS s (READ_ONLY)")
    try:
        out: dict[str, tuple] = {}
        tables = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = 's' ORDER BY 1"
        ).fetchall()
        for (table,) in tables:
            types = con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                f"WHERE table_catalog = 's' AND table_name = '{table}' ORDER BY ordinal_position"
            ).fetchall()
            count, digest = con.execute(
                "SELECT count(*), md5(string_agg(md5(CAST(x AS VARCHAR)), '' ORDER BY n)) "
                f'FROM (SELECT *, rowid AS n FROM s."{table}") x'
            ).fetchone()
            out[table] = (tuple(types), count, digest)
        return out
    finally:
        con.close()


def _queried(built: Store) -> dict[str, str]:
    """Per table: a hash of ``T | order by <id column> asc`` run through the engine."""
    out = {}
    with LocalEngine.of_store(built) as engine:
        for table, spec in sorted(built.meta["schemas"].items()):
            result = engine.query(f"{table} | order by {spec['id_column']} asc")
            assert not result.truncated
            text = json.dumps([list(row) for row in result.rows], default=str, sort_keys=True)
            out[table] = hashlib.sha256(text.encode()).hexdigest()
    return out


def _build(cache: Path) -> Store:
    return build_store(Dataset.load(ROOT / "telemetry"), cache_dir=cache, rows=ROWS)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """The store as the benchmark builds it by default (one process, one shard, one bucket)."""
    return _build(tmp_path_factory.mktemp("reference"))


def test_two_builds_give_identical_tables_and_query_results(reference: Store, tmp_path: Path) -> None:
    again = _build(tmp_path)
    assert again.path.name == reference.path.name  # same inputs, same content hash
    assert again.rows == reference.rows
    assert _physical(again.path) == _physical(reference.path)
    assert _queried(again) == _queried(reference)
    assert again.labels.events == reference.labels.events


def test_worker_processes_give_the_same_store(
    reference: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generator, "PARALLEL_MIN_ROWS", 0)  # generate in worker processes
    parallel = _build(tmp_path)
    assert _physical(parallel.path) == _physical(reference.path)
    assert _queried(parallel) == _queried(reference)


def test_buckets_give_the_same_store(
    reference: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generator.workers, "BUCKET_ROWS", 150)  # many time buckets per table
    bucketed = _build(tmp_path)
    assert _physical(bucketed.path) == _physical(reference.path)


@pytest.mark.parametrize("path", ["wide", "resort"])
def test_fallback_paths_give_the_same_store(
    reference: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """Sorting whole rows, or re-sorting a table found out of order, changes nothing."""
    narrow = store._Loader._bucket_narrow

    def wide(self: store._Loader, con, schema, paths, own, filled, where, loaded, committed) -> int:
        self._bucket_wide(con, schema, frozenset(n for n, _ in own), paths, where, committed)
        return 0

    def resort(self: store._Loader, *args) -> int:
        return narrow(self, *args) + 1  # claim a misplaced row: the table is re-sorted

    monkeypatch.setattr(generator.workers, "BUCKET_ROWS", 400)
    monkeypatch.setattr(store._Loader, "_bucket_narrow", wide if path == "wide" else resort)
    built = _build(tmp_path)
    assert _physical(built.path) == _physical(reference.path)


def test_shards_are_deterministic_and_workers_do_not_matter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table larger than SHARD_ROWS is cut into shards; the store is the same either way
    it is generated, and sharded ids stay unique."""
    monkeypatch.setattr(generator.workers, "SHARD_ROWS", 600)
    monkeypatch.setattr(generator.workers, "BUCKET_ROWS", 500)
    one = _build(tmp_path / "one")
    monkeypatch.setattr(generator, "PARALLEL_MIN_ROWS", 0)
    two = _build(tmp_path / "two")
    assert one.rows == two.rows
    assert _physical(one.path) == _physical(two.path)
    assert _queried(one) == _queried(two)


def _routine_ids(dataset: Dataset, tmp_path: Path) -> dict[str, set[str]]:
    """Ids of the scenarios' routine rows in the dev split: played, unlabelled, not generated."""
    player = Player(
        dataset.generator_dir(),
        dataset.root / "schemas",
        dataset.scenarios_dir(),
        dataset.split_seed("dev"),
        dataset.window,
        dataset.split_position("dev"),
        len(dataset.splits),
    )
    ids: dict[str, set[str]] = {}
    for path in scenario_files(dataset.scenarios_dir()):
        for played in player.play_scenario(load_scenario(path), tmp_path / "played"):
            if played.kind == "routine":
                id_column = dataset.schemas[played.table].id_column
                ids.setdefault(played.table, set()).update(
                    str(json.loads(line)[id_column]) for line in played.path.read_text().splitlines()
                )
    return ids


def test_split_output_holds_the_jsonl_rows(reference: Store, tmp_path: Path) -> None:
    """The generated rows of the store are exactly the ``jsonl`` output, loaded as JSON (the
    store also holds labelled scenario rows, routine scenario rows and mirrored copies)."""
    dataset = Dataset.load(ROOT / "telemetry")
    out = tmp_path / "jsonl"
    generator.generate(
        out,
        seed=dataset.seed,
        rows=ROWS,
        window=dataset.window,
        profiles_dir=dataset.generator_dir(),
        scenarios_dir=dataset.scenarios_dir(),
    )
    routine = _routine_ids(dataset, tmp_path)
    mirrors = reference.labels.mirrors
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone='UTC'")
    con.execute(f"ATTACH '{reference.path}' AS s (READ_ONLY)")
    try:
        for table, schema in dataset.schemas.items():
            path = out / f"{table}.jsonl"
            if not path.stat().st_size:
                continue
            key = f'"{schema.time_column}", "{schema.id_column}"'
            played = set(reference.labels.events.get(table, {})) | routine.get(table, set())
            ids = ", ".join(f"'{i}'" for i in played) or "NULL"
            idc = f'"{schema.id_column}"'
            copies = f' AND {idc} NOT IN (SELECT {idc} FROM s."{mirrors[table]}")' if table in mirrors else ""
            ours = con.execute(
                f"SELECT md5(string_agg(md5(CAST(x AS VARCHAR)), '' ORDER BY {key})) FROM "
                f'(SELECT * FROM s."{table}" WHERE CAST({idc} AS VARCHAR) '
                f"NOT IN ({ids}){copies}) x"
            ).fetchone()
            theirs = con.execute(
                f"SELECT md5(string_agg(md5(CAST(x AS VARCHAR)), '' ORDER BY {key})) FROM "
                f"(SELECT {store._select_list(schema)} FROM read_json('{path}', "
                f"format='newline_delimited', columns={store._read_json_columns(schema)})) x"
            ).fetchone()
            assert ours == theirs, table
    finally:
        con.close()
