"""Checks on the shipped benchmark: every case is valid, solvable, trapped, and leaks nothing.

These run over the real ``cases/``, ``rules/`` and ``telemetry/`` with the
default generated background, on every split (``dev`` and its re-simulation
``test``), so a reference solution that starts matching benign activity, or that
only holds on the events it was written against, fails here.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from ctirealm.cases import CaseSet, load_cases
from ctirealm.cli.cases import measure, render_markdown
from ctirealm.engine import LocalEngine
from ctirealm.scoring.detection import evaluate_query, neutral_events
from ctirealm.telemetry.dataset import Dataset
from ctirealm.telemetry.store import Store, build_store

# Slow: every case over the default store (a million rows a split).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CASES = load_cases(ROOT / "cases")
IDS = sorted(CASES.cases)
DATASET = Dataset.load(ROOT / "telemetry")
SPLITS = list(DATASET.splits)
EXPECTED_SPLIT = {"linux": (25, 12), "aks": (17, 9), "cloud": (8, 4)}
SCENARIO_CASES = sorted(p.stem for p in (ROOT / "telemetry" / "scenarios").glob("*.yaml"))


@pytest.fixture(scope="module")
def stores() -> dict[str, Store]:
    return {split: build_store(DATASET, split=split) for split in SPLITS}


@pytest.fixture(scope="module")
def engines(stores: dict[str, Store]):
    engines = {split: LocalEngine.of_store(store, timeout=60) for split, store in stores.items()}
    yield engines
    for engine in engines.values():
        engine.close()


@pytest.fixture(scope="module")
def store(stores: dict[str, Store]) -> Store:
    return stores["dev"]


@pytest.fixture(scope="module")
def engine(engines):
    return engines["dev"]


def test_every_case_and_report_loads() -> None:
    assert not CASES.errors, "\n".join(str(e) for e in CASES.errors)


def test_every_case_is_played_from_a_scenario() -> None:
    """All cases run on the shared organisation, re-simulated per split: none keeps hand-written
    events (which would be the same rows, with the same ids, in dev and test)."""
    assert SCENARIO_CASES == IDS
    assert not DATASET.attack_files() and not DATASET.benign_files()
    assert not any(CASES.cases[c].ground_truth.attack_events for c in IDS)


def test_the_split_matches_cti_realm_50() -> None:
    totals = Counter(c.platform for c in CASES.cases.values())
    small = Counter(c.platform for c in CASES.cases.values() if "realm-25" in c.subsets)
    assert {p: (totals[p], small[p]) for p in EXPECTED_SPLIT} == EXPECTED_SPLIT
    assert all("realm-50" in c.subsets for c in CASES.cases.values())


def test_reports_are_narratives_with_sources() -> None:
    for report in CASES.reports.values():
        words = len(report.content.split())
        assert 300 <= words <= 1400, f"{report.path}: {words} words"
        assert report.source_urls, f"{report.path}: no source_urls"
        assert all(u.startswith(("https://", "http://")) for u in report.source_urls), report.path
    counts = CASES.tags()
    for report in CASES.reports.values():
        assert min(counts[t] for t in report.tags) <= 2, f"{report.path}: no distinctive topic tag"
    used = {r for c in CASES.cases.values() for r in c.reports}
    assert used <= set(CASES.reports)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("case_id", IDS)
def test_case_is_sound(case_id: str, split: str, stores: dict[str, Store], engines) -> None:
    store, engine = stores[split], engines[split]
    case = CASES.cases[case_id].bound(store.labels)
    truth = case.ground_truth
    where = f"{case_id} ({split})"
    assert truth.attack_event_count(), f"{where}: no attack events"
    # attack events exist, are labelled attack, and hard negatives are labelled as such
    for table, ids in truth.attack_events.items():
        for event in ids:
            assert store.labels.kind(table, event) == "attack", (
                f"{where}: {table}:{event} is not an attack event"
            )
    negatives = [(t, i) for t, ids in truth.hard_negatives.items() for i in ids]
    assert len(negatives) >= 3, f"{where}: needs at least 3 hard negatives"
    for table, event in negatives:
        assert store.labels.kind(table, event) == "hard_negative", f"{where}: {table}:{event}"
    kql = (ROOT / str(case.solution.kql)).read_text(encoding="utf-8")
    assert kql.strip() not in case.objective
    if case.platform == "cloud":
        assert len(truth.tables) >= 2, f"{case_id}: cloud cases span at least two tables"
        for table in truth.tables:
            assert re.search(rf"\b{table}\b", kql), f"{case_id}: reference KQL does not use {table}"
    # the reference solution catches every attack event and nothing benign, over the whole store
    result = evaluate_query(
        kql, case, engine, store.labels, engine.schemas, neutral=neutral_events(case, CASES, store.labels)
    )
    assert result.error is None, f"{where}: {result.error}"
    assert result.missed_attack == [], f"{where}: reference misses {result.missed_attack}"
    assert result.fp == 0, f"{where}: reference matches benign events: {result.false_positive_examples}"


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("case_id", IDS)
def test_hard_negatives_are_real_traps(case_id: str, split: str, stores: dict[str, Store], engines) -> None:
    case = CASES.cases[case_id].bound(stores[split].labels)
    engine = engines[split]
    negatives = {(t, str(i)) for t, ids in case.ground_truth.hard_negatives.items() for i in ids}
    assert case.naive_kql, f"{case_id}: no naive_kql traps"
    caught: set[tuple[str, str]] = set()
    for query in case.naive_kql:
        caught |= _ids(engine, query, case.ground_truth.hard_negatives)
    assert caught, f"{case_id} ({split}): no naive query matches a hard negative"
    assert negatives <= caught, (
        f"{case_id} ({split}): hard negatives no naive query matches: {sorted(negatives - caught)}"
    )


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("case_id", IDS)
def test_careless_queries_draw_background_false_positives(
    case_id: str, split: str, stores: dict[str, Store], engines
) -> None:
    """Real base rates: the behaviour also occurs in ordinary, unlabelled background work, so a
    careless query pays for it there, not only on look-alikes an agent could exclude one by one."""
    store = stores[split]
    case = CASES.cases[case_id].bound(store.labels)
    missing = []
    for query in case.naive_kql:
        result = evaluate_query(
            query,
            case,
            engines[split],
            store.labels,
            engines[split].schemas,
            neutral=neutral_events(case, CASES, store.labels),
            examples=0,
        )
        assert result.error is None, f"{case_id}: {query}: {result.error}"
        if not result.background_matched:
            missing.append(query)
    assert not missing, f"{case_id} ({split}): naive queries match no background event: {missing}"


#: Where an event names its host, account, cluster or caller: a re-simulation plays elsewhere.
ENTITY_COLUMNS = (
    "DeviceName",
    "AccountName",
    "InitiatingProcessAccountName",
    "_ResourceId",
    "User",
    "SourceIps",
    "UserPrincipalName",
    "ServicePrincipalId",
    "Caller",
    "CallerIpAddress",
    "CallerIPAddress",
    "IPAddress",
    "UserId",
    "ClientIP",
    "AppId",
    "ResourceId",
)


def _literal(value: str, kind: str | None) -> str:
    return value if kind in ("long", "int") else "'" + value.replace("'", "\\'") + "'"


@pytest.mark.parametrize("case_id", SCENARIO_CASES)
def test_test_split_is_a_re_simulation(case_id: str, stores: dict[str, Store], engines) -> None:
    """test plays the scenario again: other event ids, and other hosts or accounts."""
    assert "test" in stores
    seen = {}
    for split in ("dev", "test"):
        case = CASES.cases[case_id].bound(stores[split].labels)
        ids = {(t, i) for t, v in case.ground_truth.attack_events.items() for i in v}
        places = set()
        for table, values in case.ground_truth.attack_events.items():
            schema = engines[split].schemas[table]
            entities = [c for c in ENTITY_COLUMNS if schema.type_of(c)]
            if not entities:
                continue
            listed = ", ".join(_literal(v, schema.type_of(schema.id_column)) for v in values)
            rows = (
                engines[split]
                .query(f"{table} | where {schema.id_column} in ({listed}) | project {', '.join(entities)}")
                .rows
            )
            places |= {(table, str(v)) for r in rows for v in r}
        seen[split] = (ids, places)
    assert seen["dev"][0].isdisjoint(seen["test"][0]), f"{case_id}: test reuses dev event ids"
    assert seen["dev"][1] != seen["test"][1], f"{case_id}: test plays on the same hosts and accounts"


def test_base_rate_page_is_current(stores: dict[str, Store]) -> None:
    """docs/base-rates.md is what `ctirealm cases check --markdown` measures on these stores."""
    page = ROOT / "docs" / "base-rates.md"
    fresh = render_markdown(measure(CASES, ROOT, stores), CASES)
    assert page.read_text(encoding="utf-8") == fresh, (
        "docs/base-rates.md is out of date: run "
        "`.venv/bin/ctirealm cases check --markdown docs/base-rates.md`"
    )


def _ids(engine, query: str, wanted: dict) -> set[tuple[str, str]]:
    result = engine.query(query, limit=100_000)
    found = set()
    for table, ids in wanted.items():
        id_column = engine.schemas[table].id_column
        if id_column in result.column_names:
            index = result.column_names.index(id_column)
            values = {str(row[index]) for row in result.rows}
            found |= {(table, str(i)) for i in ids if str(i) in values}
    return found


def _pattern_hits(case, column: str, pattern: str, store: Store, engine) -> tuple[int, int]:
    """Events of the case's tables whose *column* matches *pattern*: (the case's attacks, non-attacks)."""
    attack = benign = 0
    for table in case.ground_truth.tables:
        schema = engine.schemas[table]
        if schema.type_of(column) is None:
            continue
        literal = pattern.replace("\\", "\\\\").replace('"', '\\"')
        result = engine.query(
            f'{table} | where tostring({column}) matches regex "(?i){literal}" | project {schema.id_column}',
            limit=100_000,
        )
        ids = {str(row[0]) for row in result.rows}
        attack += len(ids & {str(i) for i in case.ground_truth.attack_events.get(table, [])})
        benign += sum(1 for i in ids if store.labels.kind(table, i) != "attack")
    return attack, benign


#: What a planted marker looks like: a UUID fragment or a ``sim-`` tag.
_MARKER_SHAPE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}|sim-", re.IGNORECASE)


@pytest.mark.parametrize("case_id", IDS)
def test_regex_patterns_are_behavioural(case_id: str, store: Store, engine) -> None:
    """Compat scoring's patterns describe what the attack does, never a value planted to mark it.

    Each pattern matches some of the case's attack events and none is shaped like an id
    fragment or a ``sim-`` tag. A pattern may describe the behaviour so precisely that it
    matches the attack alone: that is a detection, not a label (tests/dataset/
    test_no_label_artefacts.py checks that no value shape separates attack rows).
    """
    case = CASES.cases[case_id].bound(store.labels)
    assert case.ground_truth.regex_patterns, f"{case_id}: no regex_patterns"
    for column, pattern in case.ground_truth.regex_patterns.items():
        where = f"{case_id}: regex_patterns.{column} {pattern!r}"
        assert not _MARKER_SHAPE.search(pattern), f"{where} is shaped like a marker"
        attack, _ = _pattern_hits(case, column, pattern, store, engine)
        assert attack, f"{where} matches none of the case's attack events"


def test_case_set_type() -> None:
    assert isinstance(CASES, CaseSet)
