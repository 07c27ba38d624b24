"""Why a case cannot be scored: telemetry files left out of the store, events the store lacks.

The store is built leniently under pytest: a truncated JSONL line or a broken
schema leaves that file out and is recorded in the store's metadata. Each case
is then checked against the store before it runs; a case that needs what is
missing becomes one failing item naming the file and line, and every other
case runs as usual. The same messages go into ``results.json`` ("problems").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ..cases import Case, CaseSet
from ..telemetry.events import FileProblem
from ..telemetry.store import Store
from . import dataset_splits, session_store, telemetry_root


def located(config: pytest.Config, problem: FileProblem) -> str:
    """*problem* with its path relative to the rootdir (``telemetry/attack/...``)."""
    path = _relative(config, telemetry_root(config) / problem.path)
    return str(FileProblem(path, problem.line, problem.kind, problem.table, problem.group, problem.message))


def case_problems(config: pytest.Config, case: Case) -> list[str]:
    """What keeps *case* from being scored fairly in any split; empty when its telemetry is
    complete."""
    files, absent = _all_gaps(config, case)
    return [f"telemetry left out of the store: {located(config, p)}" for p in files] + absent


def _all_gaps(config: pytest.Config, case: Case) -> tuple[list[FileProblem], list[str]]:
    """`_case_gaps` over every split's store, each problem once."""
    files: list[FileProblem] = []
    absent: list[str] = []
    for split in dataset_splits(config):
        more, missing = _case_gaps(session_store(config, split), case)
        files += [p for p in more if p not in files]
        absent += [m for m in missing if m not in absent]
    return files, absent


def _case_gaps(store: Store, case: Case) -> tuple[list[FileProblem], list[str]]:
    """The left-out files that concern *case*, and its events the store lacks.

    A left-out file concerns the case when it sits in the case's folder
    (``attack/<id>/``, ``benign/<id>/``), is its scenario, or is the schema of a
    table the case names. Every listed attack event and hard negative must also
    be in the store with that label: otherwise recall or false positives would be
    measured against events that are not there; a case that lists none needs
    attack events labelled with its id (played from its scenario). When events are
    missing, left-out files of their tables elsewhere are named too, as the likely
    cause.
    """
    split = store.meta.get("split", "dev")
    case = case.bound(store.labels)
    truth = case.ground_truth
    tables = set(truth.tables) | set(truth.attack_events) | set(truth.hard_negatives)
    files = [p for p in store.problems if p.group == case.id or (p.kind == "schema" and p.table in tables)]
    absent: list[str] = []
    absent_tables: set[str] = set()
    for field, kind, ids in (
        ("attack_events", "attack", truth.attack_events),
        ("hard_negatives", "hard_negative", truth.hard_negatives),
    ):
        for table, values in sorted(ids.items()):
            wrong = [v for v in values if store.labels.kind(table, v) != kind]
            if wrong:
                absent_tables.add(table)
                absent.append(
                    f"ground_truth.{field}.{table}: {len(wrong)} of {len(values)} ids are not "
                    f"{kind.replace('_', ' ')} events in the telemetry: {', '.join(wrong[:5])}"
                    + (" ..." if len(wrong) > 5 else "")
                )
    if not truth.attack_event_count() and not case.imported:
        absent.append(
            f"no attack events in the {split} split: list ground_truth.attack_events "
            f"or add a scenario for {case.id} (telemetry/scenarios/{case.id}.yaml)"
        )
    if absent and not files:
        files = [p for p in store.problems if p.table in absent_tables]
    return files, absent


def run_problems(config: pytest.Config, cases: CaseSet) -> list[dict[str, Any]]:
    """Everything left out of this run, for ``results.json``: bad case files, telemetry files
    left out (with the cases they stop), cases whose listed events are missing."""
    problems = [p for split in dataset_splits(config) for p in session_store(config, split).problems]
    out: list[dict[str, Any]] = []
    for error in sorted(cases.errors, key=lambda e: str(e.path)):
        path = _relative(config, Path(error.path))
        out.append(
            {
                "kind": "case",
                "path": path,
                "case": Path(error.path).stem,
                "message": path + str(error).removeprefix(error.path),
            }
        )
    stopped: dict[FileProblem, list[str]] = {p: [] for p in problems}
    for case_id, case in sorted(cases.cases.items()):
        files, absent = _all_gaps(config, case)
        for problem in files:
            stopped[problem].append(case_id)
        if files:
            continue  # the missing events are the left-out files' doing, listed below
        path = _relative(config, Path(case.path))
        out += [
            {"kind": "case", "path": path, "case": case_id, "message": f"{path}: {message}"}
            for message in absent
        ]
    for problem, hit in stopped.items():
        out.append(
            {
                "kind": "telemetry",
                "path": _relative(config, telemetry_root(config) / problem.path),
                "line": problem.line,
                "message": located(config, problem),
                "cases": hit,
            }
        )
    return out


def _relative(config: pytest.Config, path: Path) -> str:
    return Path(os.path.relpath(path, config.rootpath)).as_posix()
