"""Checks on the shipped benchmark: every case is valid, solvable, trapped, and leaks nothing.

These run over the real ``cases/``, ``rules/`` and ``telemetry/`` with the
default generated background, so a reference solution that starts matching
benign activity fails here.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from ctirealm.cases import CaseSet, load_cases
from ctirealm.scoring.detection import evaluate_query, neutral_events
from ctirealm.telemetry.dataset import Dataset
from ctirealm.telemetry.store import Store, build_store

ROOT = Path(__file__).resolve().parents[2]
CASES = load_cases(ROOT / "cases")
IDS = sorted(CASES.cases)
EXPECTED_SPLIT = {"linux": (25, 12), "aks": (17, 9), "cloud": (8, 4)}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return build_store(Dataset.load(ROOT / "telemetry"))


@pytest.fixture(scope="module")
def engine(store: Store):
    with store.engine(timeout=60) as engine:
        yield engine


def test_every_case_and_report_loads() -> None:
    assert not CASES.errors, "\n".join(str(e) for e in CASES.errors)


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


@pytest.mark.parametrize("case_id", IDS)
def test_case_is_sound(case_id: str, store: Store, engine) -> None:
    case = CASES.cases[case_id]
    truth = case.ground_truth
    # attack events exist, are labelled attack, and hard negatives are labelled as such
    for table, ids in truth.attack_events.items():
        for event in ids:
            assert store.labels.kind(table, event) == "attack", f"{case_id}: {table}:{event} is not an attack event"
    negatives = [(t, i) for t, ids in truth.hard_negatives.items() for i in ids]
    assert len(negatives) >= 3, f"{case_id}: needs at least 3 hard negatives"
    for table, event in negatives:
        assert store.labels.kind(table, event) == "hard_negative", f"{case_id}: {table}:{event}"
    # the objective gives away neither the marker nor the answer
    for column, pattern in marker_patterns(case, store, engine).items():
        assert not re.search(pattern, case.objective, re.IGNORECASE), f"{case_id}: objective leaks {column}"
    kql = (ROOT / str(case.solution.kql)).read_text(encoding="utf-8")
    assert kql.strip() not in case.objective
    if case.platform == "cloud":
        assert len(truth.tables) >= 2, f"{case_id}: cloud cases span at least two tables"
        for table in truth.tables:
            assert re.search(rf"\b{table}\b", kql), f"{case_id}: reference KQL does not use {table}"
    # the reference solution catches every attack event and nothing benign, over the whole store
    result = evaluate_query(kql, case, engine, store.labels, engine.schemas,
                            neutral=neutral_events(case, CASES, store.labels))
    assert result.error is None, f"{case_id}: {result.error}"
    assert result.missed_attack == [], f"{case_id}: reference misses {result.missed_attack}"
    assert result.fp == 0, f"{case_id}: reference matches benign events: {result.false_positive_examples}"


@pytest.mark.parametrize("case_id", IDS)
def test_hard_negatives_are_real_traps(case_id: str, engine) -> None:
    case = CASES.cases[case_id]
    negatives = {(t, str(i)) for t, ids in case.ground_truth.hard_negatives.items() for i in ids}
    assert case.naive_kql, f"{case_id}: no naive_kql traps"
    caught: set[tuple[str, str]] = set()
    for query in case.naive_kql:
        hits = _ids(engine, query, case.ground_truth.hard_negatives)
        assert hits, f"{case_id}: naive query matches no hard negative: {query}"
        caught |= hits
    assert negatives <= caught, f"{case_id}: hard negatives no naive query matches: {sorted(negatives - caught)}"


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
        result = engine.query(f'{table} | where tostring({column}) matches regex "(?i){literal}" '
                              f"| project {schema.id_column}", limit=100_000)
        ids = {str(row[0]) for row in result.rows}
        attack += len(ids & {str(i) for i in case.ground_truth.attack_events.get(table, [])})
        benign += sum(1 for i in ids if store.labels.kind(table, i) != "attack")
    return attack, benign


def marker_patterns(case, store: Store, engine) -> dict[str, str]:
    """The case's regex patterns that match no benign event: values that pin the simulation alone."""
    return {column: pattern for column, pattern in case.ground_truth.regex_patterns.items()
            if not _pattern_hits(case, column, pattern, store, engine)[1]}


#: What a planted marker looks like: a UUID fragment or a ``sim-`` tag.
_MARKER_SHAPE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}|sim-", re.IGNORECASE)


@pytest.mark.parametrize("case_id", IDS)
def test_regex_patterns_are_behavioural(case_id: str, store: Store, engine) -> None:
    """Compat scoring's patterns describe what the attack does, never a value planted to mark it.

    Each pattern matches some of the case's attack events and some benign events too (a pattern
    that matches the attack alone is a marker), and none is shaped like an id fragment.
    """
    case = CASES.cases[case_id]
    assert case.ground_truth.regex_patterns, f"{case_id}: no regex_patterns"
    for column, pattern in case.ground_truth.regex_patterns.items():
        where = f"{case_id}: regex_patterns.{column} {pattern!r}"
        assert not _MARKER_SHAPE.search(pattern), f"{where} is shaped like a marker"
        attack, benign = _pattern_hits(case, column, pattern, store, engine)
        assert attack, f"{where} matches none of the case's attack events"
        assert benign, f"{where} matches attack events only: a marker, not a behaviour"


def test_case_set_type() -> None:
    assert isinstance(CASES, CaseSet)
