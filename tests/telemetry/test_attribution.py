"""Tracing result rows to events: id columns (join-suffixed too), the tables a query reads
(resolved with the KQL parser), values that are no event, and ids shared by tables."""

from __future__ import annotations

import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctirealm.engine import LocalEngine
from ctirealm.scoring.detection import evaluate
from ctirealm.telemetry.attribution import canonical, id_columns, tables_in, trace
from ctirealm.telemetry.dataset import Dataset
from ctirealm.telemetry.schema import load_schemas
from ctirealm.telemetry.store import Store, build_store
from tests.helpers import ROOT, process_event, write_jsonl

ATTACK = {
    "sim": {
        "DeviceProcessEvents": [
            process_event(111000000001, "curl http://x 77aa-sim"),
            process_event(111000000002, "sh /tmp/x 77aa-sim"),
        ],
        "DeviceFileEvents": [
            {
                "Timestamp": "2026-03-05T10:00:01Z",
                "ReportId": 222000000001,
                "FileName": "x",
                "FolderPath": "/tmp/x",
                "DeviceName": "web01.corp.example",
            }
        ],
        "AKSAudit": [{"TimeGenerated": "2026-03-05T10:00:00Z", "AuditId": "a-1", "Verb": "get"}],
        "AKSAuditAdmin": [{"TimeGenerated": "2026-03-05T10:00:00Z", "AuditId": "a-1", "Verb": "get"}],
    }
}
BENIGN = {"neg": {"DeviceProcessEvents": [process_event(333000000001, "curl https://ok")]}}


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


def _trace(store: Store, kql: str, **kw):
    with LocalEngine.of_store(store) as engine:
        result = engine.query(kql)
        return trace(kql, result.column_names, result.to_dicts(), engine, engine.schemas, store.labels, **kw)


KNOWN = sorted(load_schemas(ROOT / "telemetry" / "schemas"))


def test_tables_read_skip_literals_and_comments() -> None:
    known = ["DeviceProcessEvents", "DeviceFileEvents", "SigninLogs"]
    kql = '// SigninLogs is not read\nDeviceProcessEvents | where ProcessCommandLine has "DeviceFileEvents"'
    assert tables_in(kql, known) == ["DeviceProcessEvents"]
    kql = "table('DeviceFileEvents') | where x == 'table(\"SigninLogs\")' // table('AuditLogs')"
    assert tables_in(kql, KNOWN) == ["DeviceFileEvents"]


@pytest.mark.parametrize(
    ("kql", "tables"),
    [
        ("['DeviceProcessEvents'] | project ReportId", ["DeviceProcessEvents"]),
        ('["DeviceProcessEvents"] | project ReportId', ["DeviceProcessEvents"]),
        ('table("DeviceProcessEvents") | take 1', ["DeviceProcessEvents"]),
        ("union DeviceProcessEvents, ['DeviceFileEvents']", ["DeviceFileEvents", "DeviceProcessEvents"]),
        ("union withsource=T AKS* | take 1", ["AKSAudit", "AKSAuditAdmin"]),
        (
            "DeviceProcessEvents | join kind=inner DeviceFileEvents on DeviceName",
            ["DeviceFileEvents", "DeviceProcessEvents"],
        ),
        (
            "DeviceProcessEvents | lookup (SigninLogs | project Id) on $left.ReportId == $right.Id",
            ["DeviceProcessEvents", "SigninLogs"],
        ),
        ("let x = AuditLogs | where 1 == 1; let unused = SigninLogs; x | take 1", ["AuditLogs"]),
        # a let shadows a table of the same name
        ("let DeviceProcessEvents = AuditLogs; DeviceProcessEvents | take 1", ["AuditLogs"]),
        ("let f = () { OfficeActivity | take 1 }; f() | take 1", ["OfficeActivity"]),
        ("let n = toscalar(SigninLogs | count); AuditLogs | where 1 < n", ["AuditLogs", "SigninLogs"]),
        ('search in (StorageBlobLogs, AKS*) "x"', ["AKSAudit", "AKSAuditAdmin", "StorageBlobLogs"]),
        ('search "x" | take 1', KNOWN),
        ('find in (AuditLogs) where Id == "x"', ["AuditLogs"]),
        ('AuditLogs | search "SigninLogs"', ["AuditLogs"]),  # after a pipe, search filters its input
        # a parenthesised name in a predicate is a column, a pipeline in it is a subquery
        ("AuditLogs | where (SigninLogs) == 1", ["AuditLogs"]),
        ("AuditLogs | where Id in ((SigninLogs | project Id))", ["AuditLogs", "SigninLogs"]),
        ("print x = 1", []),
        (".show tables", []),
    ],
)
def test_tables_read_by_the_parser(kql: str, tables: list[str]) -> None:
    assert tables_in(kql, KNOWN) == tables


def test_a_query_that_does_not_parse_falls_back_to_identifiers() -> None:
    # The fallback sees identifiers only: a bracket-quoted name is missed there.
    assert tables_in("DeviceProcessEvents | where", KNOWN) == ["DeviceProcessEvents"]
    assert tables_in("['DeviceProcessEvents'] | where", KNOWN) == []


_FORMS = [
    "{t}",
    "[{q}{t}{q}]",
    "table({q}{t}{q})",
    "union {t}, {t}",
    "union withsource=S {t}",
    "let x = {t} | where 1 == 1;\nx",
    'search in ({t}) "a"',
    "print 1 | join ({t}) on $left.a == $right.b",
]


@settings(max_examples=60, deadline=None)
@given(
    table=st.sampled_from(KNOWN),
    form=st.sampled_from(_FORMS),
    quote=st.sampled_from("'\""),
    decoy=st.sampled_from(KNOWN),
)
def test_every_quoting_form_resolves_its_table(table: str, form: str, quote: str, decoy: str) -> None:
    head = form.format(t=table, q=quote)
    # The decoy appears only in a string literal and a comment: never read.
    kql = f"{head}\n| where Note has {quote}{decoy}{quote} // {decoy}\n| project ReportId"
    assert tables_in(kql, KNOWN) == [table]


def test_id_columns_by_name_and_join_suffix() -> None:
    families = {"ReportId": ["DeviceFileEvents", "DeviceProcessEvents"]}
    assert id_columns(["ReportId", "ReportId1", "ReportIdX", "Count"], families) == {
        "ReportId": "ReportId",
        "ReportId1": "ReportId",
    }


def test_canonical_values() -> None:
    assert (
        canonical(3.0) == "3"
        and canonical(None) == ""
        and canonical({"b": 1, "a": [2]}) == '{"a":[2],"b":1}'
        and canonical("  x ") == "x"
    )


def test_a_join_traces_both_sides(store: Store) -> None:
    traced = _trace(
        store,
        "DeviceProcessEvents | where ProcessCommandLine has '77aa' "
        "| join kind=inner (DeviceFileEvents) on DeviceName "
        "| project ReportId, ReportId1",
    )
    assert traced.traceable == ["DeviceFileEvents", "DeviceProcessEvents"]
    named = sorted(e for row in traced.events for e in row)
    assert ("DeviceFileEvents", "222000000001") in named
    assert ("DeviceProcessEvents", "111000000001") in named


def test_values_that_are_no_event_name_nothing(store: Store) -> None:
    traced = _trace(store, "DeviceProcessEvents | summarize ReportId = count() by DeviceName")
    assert traced.id_columns == {"ReportId": "ReportId"}
    assert all(row == [] for row in traced.events)


def test_an_id_column_of_a_table_not_read_names_nothing(store: Store) -> None:
    traced = _trace(store, "print ReportId = 111000000001")
    assert traced.tables == [] and traced.events == [[]]


def test_an_unlabelled_stored_id_is_traced(store: Store) -> None:
    # Background events have no label: the store itself says they exist.
    traced = _trace(store, "DeviceProcessEvents | where ReportId == 333000000001 | project ReportId")
    assert traced.events == [[("DeviceProcessEvents", "333000000001")]]


def test_a_shared_id_goes_to_the_preferred_table(store: Store) -> None:
    kql = "union AKSAudit, AKSAuditAdmin | distinct AuditId"
    assert _trace(store, kql).events == [[("AKSAudit", "a-1")]]
    assert _trace(store, kql, prefer={("AKSAuditAdmin", "a-1")}).events == [[("AKSAuditAdmin", "a-1")]]


def test_the_evaluator_attributes_a_join_by_its_suffixed_id(store: Store) -> None:
    kql = (
        "DeviceFileEvents | join kind=inner (DeviceProcessEvents "
        "| where ProcessCommandLine has '77aa') on DeviceName | project ReportId, ReportId1"
    )
    with LocalEngine.of_store(store) as engine:
        result = evaluate(
            kql,
            engine,
            store.labels,
            within_tables_read=True,
            expected={
                "DeviceProcessEvents": ["111000000001", "111000000002"],
                "DeviceFileEvents": ["222000000001"],
            },
        )
    assert (result.tp, result.fp) == (3, 0), result.summary()
    assert result.tables == ["DeviceFileEvents", "DeviceProcessEvents"]


_TOKENS = [
    *"()[]|;,'\"*=. \n",
    "let ",
    "union ",
    "join ",
    "table",
    "search ",
    "in ",
    "x",
    "//",
    "@",
    "AuditLogs",
    "Signin*",
]


@settings(max_examples=80, deadline=None)
@given(text=st.lists(st.sampled_from(_TOKENS), max_size=40).map("".join))
def test_any_text_resolves_to_known_tables_without_raising(text: str) -> None:
    found = tables_in(text, KNOWN)
    assert set(found) <= set(KNOWN) and found == sorted(found, key=KNOWN.index)
