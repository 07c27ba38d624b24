"""No simple column-value pattern tells a case's attack events from the rest of their table.

A label artefact is a value that marks attack rows without describing the attack: a UUID or
``sim-`` suffix, a subscription, tenant, host, account or address range only attacks use. A
query that keys on one finds the attack without understanding it (see the shortcut agents). For
every case, table and string column of the default store (dev split), the patterns below are
derived from the case's attack events; one that selects at least 80% of them and no row that is
not an attack (background or look-alike) is an artefact:

- on every string column: shapes that no behaviour explains — a UUID fragment, a ``sim-`` tag, a
  long hex run;
- on the categorical columns that describe the context of an event rather than the behaviour
  (host, account, tenant, subscription, resource, address, user agent, ...): the exact value,
  the suffix after the last ``-`` or ``/``, and every prefix ending at a separator.

Columns that hold the behaviour itself (command lines, file names and paths, request URIs,
operation names, hashes) are left to the first kind: that a crontab command line occurs only in
the attack is what a detection should find.

What is known not yet fixed is listed per case in ``label_artefacts.yaml`` and held exactly (a
fixed case fails until it is removed from the list), so the list is always the current state.
A value that is the attack's own (a credential or an application the intrusion itself creates)
can be listed under ``accepted`` with the reason.
"""

from __future__ import annotations

import re
import shutil
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctirealm.cases import CaseSet, load_cases
from ctirealm.engine import LocalEngine
from ctirealm.telemetry.dataset import Dataset
from ctirealm.telemetry.store import Store, build_store

# Slow: every case over the default store (a million rows a split).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CASES = load_cases(ROOT / "cases")
IDS = sorted(CASES.cases)
KNOWN_FILE = Path(__file__).with_name("label_artefacts.yaml")
_LISTED = yaml.safe_load(KNOWN_FILE.read_text(encoding="utf-8")) or {}
#: case -> ["Table.Column", ...]: artefacts known, not yet fixed.
KNOWN: dict[str, list[str]] = _LISTED.get("known") or {}
#: case -> {"Table.Column": reason}: values judged to be the attack's own (an entity it creates).
ACCEPTED: dict[str, dict[str, str]] = _LISTED.get("accepted") or {}
#: Share of a case's attack events in a table a pattern must select to count.
COVERAGE = 0.8
#: A column is categorical (checked for exact values, prefixes, suffixes) when it holds at most
#: this many distinct values, or this share of its table's rows if that is more.
CATEGORICAL_MIN, CATEGORICAL_SHARE = 200, 0.01
SHAPES = {
    "uuid fragment": re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}([^-0-9a-f]|$)", re.IGNORECASE),
    "sim- tag": re.compile(r"(^|[^a-z])sim-", re.IGNORECASE),
    "long hex": re.compile(r"(^|[^0-9a-f])[0-9a-f]{16,}([^0-9a-f]|$)", re.IGNORECASE),
}
#: Name fragments of columns holding the behaviour an attack is detected by.
BEHAVIOUR = (
    "CommandLine",
    "FileName",
    "FolderPath",
    "Path",
    "SHA1",
    "SHA256",
    "MD5",
    "Uri",
    "Url",
    "Operation",
    "ActionType",
    "Activity",
    "Verb",
    "Stage",
    "Level",
    "Category",
    "ResultType",
    "ResultDescription",
    "StatusCode",
    "StatusText",
    "Result",
)
_SEPARATORS = re.compile(r"[-/.:@\\ _]")


@dataclass(frozen=True)
class Artefact:
    case: str
    table: str
    column: str
    pattern: str
    covered: int
    of: int

    @property
    def key(self) -> str:
        return f"{self.table}.{self.column}"

    def __str__(self) -> str:
        return (
            f"{self.case}: {self.table}.{self.column} {self.pattern} selects {self.covered} of "
            f"its {self.of} attack events and no other row"
        )


def is_context(column: str) -> bool:
    return not any(fragment.lower() in column.lower() for fragment in BEHAVIOUR)


def candidates(value: str) -> Iterable[tuple[str, str]]:
    """(kind, text) patterns derived from one context value: exact, suffix, prefixes."""
    yield "exact", value
    cut = max(value.rfind("-"), value.rfind("/"))
    if 0 <= cut < len(value) - 1:
        yield "suffix", value[cut + 1 :]
    for match in _SEPARATORS.finditer(value):
        if match.end() >= 3 and match.end() < len(value):
            yield "prefix", value[: match.end()]


def matches(kind: str, text: str, value: str) -> bool:
    if kind == "exact":
        return value == text
    if kind == "suffix":
        cut = max(value.rfind("-"), value.rfind("/"))
        return cut >= 0 and value[cut + 1 :] == text
    return value.startswith(text)


def _literal(value: str, numeric: bool) -> str:
    return value if numeric else "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def find_artefacts(cases: CaseSet, store: Store, engine: Any) -> dict[str, list[Artefact]]:
    """Every case's artefacts (see the module docstring), by case id."""
    labels = store.labels
    found: dict[str, list[Artefact]] = defaultdict(list)
    bound = {case_id: case.bound(labels) for case_id, case in sorted(cases.cases.items())}
    for table, schema in sorted(engine.schemas.items()):
        attack_ids = labels.ids("attack", table)
        per_case = {
            case_id: [str(i) for i in case.ground_truth.attack_events.get(table, ())]
            for case_id, case in bound.items()
        }
        per_case = {k: v for k, v in per_case.items() if v}
        if not per_case:
            continue
        columns = [c for c, t in schema.columns if t == "string" and c != schema.id_column]
        numeric = schema.type_of(schema.id_column) in ("long", "int")
        ids = ", ".join(_literal(i, numeric) for i in attack_ids)
        rows = engine.query(
            f"{table} | where {schema.id_column} in ({ids}) "
            f"| project {schema.id_column}, {', '.join(columns)}",
            limit=len(attack_ids) + 1,
        ).to_dicts()
        by_id = {str(r[schema.id_column]): r for r in rows}
        others = f"{table} | where not({schema.id_column} in ({ids}))"
        # Shapes: which (column, shape) cover a case; then one query counts them in other rows.
        shaped: dict[tuple[str, str], list[tuple[str, int, int]]] = defaultdict(list)
        for case_id, events in per_case.items():
            values = [by_id.get(e, {}) for e in events]
            for column in columns:
                for name, shape in SHAPES.items():
                    covered = sum(bool(shape.search(str(v.get(column) or ""))) for v in values)
                    if covered and covered >= COVERAGE * len(events):
                        shaped[(column, name)].append((case_id, covered, len(events)))
        if shaped:
            keys = sorted(shaped)
            counts = engine.query(
                others
                + " | summarize "
                + ", ".join(
                    f's{i} = countif({column} matches regex @"(?i){SHAPES[name].pattern}")'
                    for i, (column, name) in enumerate(keys)
                ),
                limit=2,
            ).to_dicts()[0]
            for i, (column, name) in enumerate(keys):
                if int(counts[f"s{i}"] or 0) == 0:
                    for case_id, covered, total in shaped[(column, name)]:
                        found[case_id].append(Artefact(case_id, table, column, name, covered, total))
        # Context values: exact, suffix and prefixes, checked against the other rows' values, on
        # categorical columns only: a per-request id or a JSON blob is unique to its rows anyway.
        wanted: dict[str, dict[tuple[str, str], list[tuple[str, int, int]]]] = {}
        for column in (c for c in columns if is_context(c)):
            for case_id, events in per_case.items():
                tally: dict[tuple[str, str], int] = defaultdict(int)
                for event in events:
                    value = str(by_id.get(event, {}).get(column) or "")
                    for pattern in set(candidates(value)) if value else ():
                        tally[pattern] += 1
                for pattern, covered in tally.items():
                    if covered >= COVERAGE * len(events):
                        wanted.setdefault(column, defaultdict(list))[pattern].append(
                            (case_id, covered, len(events))
                        )
        if wanted:
            stats = engine.query(
                f"{table} | summarize n = count(), "
                + ", ".join(f"d{i} = dcount({c})" for i, c in enumerate(sorted(wanted))),
                limit=2,
            ).to_dicts()[0]
            limit = max(CATEGORICAL_MIN, int(stats["n"]) * CATEGORICAL_SHARE)
            wanted = {c: p for i, (c, p) in enumerate(sorted(wanted.items())) if int(stats[f"d{i}"]) <= limit}
        if not wanted:
            continue
        # One scan: every other row's distinct values of the columns a pattern was derived on
        # ("=" prefixed: make_set reads a string holding a JSON array as that array).
        named = sorted(wanted)
        sets = engine.query(
            others
            + " | summarize "
            + ", ".join(f'v{i} = make_set(strcat("=", {c}), 1000000)' for i, c in enumerate(named)),
            limit=2,
        ).to_dicts()[0]
        for i, column in enumerate(named):
            seen = {str(v)[1:] for v in sets[f"v{i}"] or ()}
            for (kind, text), hits in wanted[column].items():
                if not any(matches(kind, text, value) for value in seen):
                    for case_id, covered, total in hits:
                        found[case_id].append(
                            Artefact(case_id, table, column, f"{kind} {text!r}", covered, total)
                        )
    return found


@pytest.fixture(scope="module")
def store() -> Store:
    return build_store(Dataset.load(ROOT / "telemetry"))


@pytest.fixture(scope="module")
def artefacts(store: Store) -> dict[str, list[Artefact]]:
    with LocalEngine.of_store(store, timeout=120) as engine:
        return find_artefacts(CASES, store, engine)


def test_the_lists_name_real_cases_and_give_reasons() -> None:
    for section in (KNOWN, ACCEPTED):
        assert set(section) <= set(IDS), f"{KNOWN_FILE.name}: unknown cases {set(section) - set(IDS)}"
    for case_id, entries in ACCEPTED.items():
        for key, reason in entries.items():
            assert isinstance(reason, str) and reason.strip(), (
                f"{KNOWN_FILE.name}: accepted.{case_id}.{key} needs a reason"
            )


def test_the_check_finds_the_markers_planted_in_the_test_fixture(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    mini = ROOT / "tests" / "fixtures" / "mini"
    telemetry = tmp_path_factory.mktemp("mini") / "telemetry"
    shutil.copytree(mini / "telemetry", telemetry)
    shutil.copytree(ROOT / "telemetry" / "schemas", telemetry / "schemas")
    small = build_store(Dataset.load(telemetry), cache_dir=tmp_path_factory.mktemp("cache"))
    with LocalEngine.of_store(small, timeout=60) as engine:
        found = find_artefacts(load_cases(mini / "cases"), small, engine)
    # The fixture's AKS attack rows carry a `kubectl/... sim-5a1e77` user agent, as the
    # dataset's did before the issue that added this test.
    assert any(a.key == "AKSAudit.UserAgent" and a.pattern == "sim- tag" for a in found["aks_001"]), found


def test_the_patterns() -> None:
    assert all(
        SHAPES["uuid fragment"].search(v) for v in ("kubectl/v1.29 a7b8c9d0-1e2f", "/tmp/x-e9a9d6d6-9538 -q")
    )
    assert not SHAPES["uuid fragment"].search("4da300f7-fdbe-44c4-8466-3f7bd657ef9d")
    assert ("suffix", "c24e8549") in set(candidates("/subscriptions/c24e8549"))
    assert ("prefix", "203.0.113.") in set(candidates("203.0.113.7"))
    assert is_context("_ResourceId") and is_context("UserAgent")
    assert not is_context("ProcessCommandLine") and not is_context("RequestUri")


@pytest.mark.parametrize("case_id", IDS)
def test_no_pattern_tells_attack_events_from_the_rest(
    case_id: str, artefacts: dict[str, list[Artefact]]
) -> None:
    found = [a for a in artefacts.get(case_id, []) if a.key not in ACCEPTED.get(case_id, {})]
    keys = sorted({a.key for a in found})
    known = sorted(KNOWN.get(case_id, []))
    listing = "\n".join(str(a) for a in found[:20])
    assert not sorted(set(keys) - set(known)), f"label artefacts:\n{listing}"
    assert not sorted(set(known) - set(keys)), (
        f"{case_id}: {', '.join(sorted(set(known) - set(keys)))} no longer carry an artefact: "
        f"remove them from {KNOWN_FILE.name}"
    )
    if found:
        pytest.xfail(f"known, not yet fixed ({KNOWN_FILE.name}):\n{listing}")
