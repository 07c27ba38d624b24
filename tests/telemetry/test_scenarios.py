"""Scenarios: stories played onto the organisation per split, labelled beside the store."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest

from ctirealm.cases import load_cases
from ctirealm.engine import LocalEngine
from ctirealm.telemetry.dataset import Dataset, DatasetError
from ctirealm.telemetry.generator import ProfileError
from ctirealm.telemetry.scenarios import Player, load_scenario
from ctirealm.telemetry.store import build_store

ROOT = Path(__file__).resolve().parents[2]

STORY = textwrap.dedent("""\
    case: linux_900
    attack:
      name: operator stages a tool
      instances: 2
      when: engineering
      bind:
        host: 'hosts[role=build]'
        person: 'users[team=dev]'
        folder: [/var/tmp/.cache-a, /dev/shm/.cache-b, /tmp/.cache-c, /var/tmp/.cache-d]
      steps:
        - table: DeviceProcessEvents
          user: '{person.unix}'
          chain:
            - [bash, -bash]
            - [bash, 'bash stage.sh']
            - [cp, 'cp tool {folder}/tool']
        - table: DeviceFileEvents
          after: [1, 3]
          user: '{person.unix}'
          chain:
            - [bash, 'bash stage.sh']
            - [cp, 'cp tool {folder}/tool']
          files:
            - {path: '{folder}/tool', size: [1000, 2000]}
    lookalikes:
      - name: developer copies a build output
        instances: 3
        when: engineering
        bind: {host: 'hosts[role=build]', person: 'users[team=dev]'}
        steps:
          - table: DeviceProcessEvents
            user: '{person.unix}'
            chain:
              - [bash, -bash]
              - [bash, 'bash build.sh']
              - [cp, 'cp dist/app /tmp/app']
    background:
      DeviceProcessEvents:
        - name: nightly copy of build outputs
          weight: 40
          bind: {host: 'hosts[role=build]'}
          chain:
            - [systemd, /sbin/init]
            - [bash, 'bash /usr/local/bin/publish.sh']
            - [cp, 'cp dist/app /srv/artifacts/app']
    """)


@pytest.fixture
def telemetry(tmp_path: Path) -> Path:
    """The real schemas, window and profiles, and one scenario of a case ``linux_900``."""
    root = tmp_path / "telemetry"
    for part in ("schemas", "generator"):
        shutil.copytree(ROOT / "telemetry" / part, root / part)
    shutil.copy(ROOT / "telemetry" / "dataset.yaml", root / "dataset.yaml")
    (root / "scenarios").mkdir()
    (root / "scenarios" / "linux_900.yaml").write_text(STORY, encoding="utf-8")
    return root


def _play(telemetry: Path, split: int, tmp: Path) -> dict[str, list[dict]]:
    dataset = Dataset.load(telemetry)
    player = Player(
        dataset.generator_dir(),
        telemetry / "schemas",
        dataset.scenarios_dir(),
        list(dataset.splits.values())[split],
        dataset.window,
        split,
        2,
    )
    scenario = load_scenario(telemetry / "scenarios" / "linux_900.yaml")
    out: dict[str, list[dict]] = {}
    for played in player.play_scenario(scenario, tmp / f"split{split}"):
        rows = [json.loads(line) for line in played.path.read_text().splitlines()]
        out.setdefault(played.kind, []).extend(rows)
    return out


def test_playing_is_deterministic(telemetry: Path, tmp_path: Path) -> None:
    assert _play(telemetry, 0, tmp_path / "a") == _play(telemetry, 0, tmp_path / "b")


def test_test_split_replays_on_other_entities(telemetry: Path, tmp_path: Path) -> None:
    """Lists of two or more candidates are dealt out: dev and test never share a choice."""
    dev, test = _play(telemetry, 0, tmp_path), _play(telemetry, 1, tmp_path)
    assert len(dev["attack"]) == len(test["attack"]) == 4  # 2 instances x 2 steps

    def used(rows: list[dict], column: str) -> set[str]:
        return {str(r[column]) for r in rows if column in r}

    assert used(dev["attack"], "DeviceName").isdisjoint(used(test["attack"], "DeviceName"))
    folders = re.compile(r"(/var/tmp|/dev/shm|/tmp)/\.cache-\w")
    dev_folders = {folders.search(c).group(0) for c in used(dev["attack"], "ProcessCommandLine")}
    test_folders = {folders.search(c).group(0) for c in used(test["attack"], "ProcessCommandLine")}
    assert dev_folders and test_folders and dev_folders.isdisjoint(test_folders)
    assert used(dev["attack"], "ReportId").isdisjoint(used(test["attack"], "ReportId"))


@pytest.mark.slow
def test_scenario_rows_are_shaped_like_the_background(telemetry: Path, tmp_path: Path) -> None:
    """Same id space, millisecond times and organisation: nothing but behaviour differs."""
    played = _play(telemetry, 0, tmp_path)
    store = build_store(Dataset.load(telemetry), cache_dir=tmp_path / "cache", rows=3000)
    engine = LocalEngine.of_store(store)
    background = engine.query(
        "DeviceProcessEvents | project ReportId, Timestamp, DeviceName, TenantId | take 500",
    ).to_dicts()
    for row in played["attack"] + played["hard_negative"]:
        assert re.fullmatch(r"\d{12}", str(row["ReportId"]))
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", row["Timestamp"])
        assert row["DeviceName"].endswith(".ci.meridianfreight.com")
        assert row["TenantId"] == background[0]["TenantId"]
    lengths = {len(str(r["ReportId"])) for r in background}
    assert lengths == {12}


@pytest.mark.slow
def test_store_labels_scenario_events_with_their_case(telemetry: Path, tmp_path: Path) -> None:
    dataset = Dataset.load(telemetry)
    dev = build_store(dataset, cache_dir=tmp_path, rows=3000, split="dev")
    test = build_store(dataset, cache_dir=tmp_path, rows=3000, split="test")
    assert dev.path != test.path and dev.meta["split"] == "dev" and test.meta["split"] == "test"
    for store in (dev, test):
        attacks = store.labels.by_table("attack", "linux_900")
        negatives = store.labels.by_table("hard_negative", "linux_900")
        assert {t: len(v) for t, v in attacks.items()} == {"DeviceFileEvents": 2, "DeviceProcessEvents": 2}
        assert sum(len(v) for v in negatives.values()) == 3
    assert set(dev.labels.ids("attack")).isdisjoint(test.labels.ids("attack"))
    # The background template is generated, unlabelled, in both splits.
    for store in (dev, test):
        rows = (
            LocalEngine.of_store(store)
            .query(
                'DeviceProcessEvents | where ProcessCommandLine == "cp dist/app /srv/artifacts/app" '
                "| project ReportId"
            )
            .to_dicts()
        )
        assert rows and all(store.labels.kind("DeviceProcessEvents", r["ReportId"]) == "benign" for r in rows)


@pytest.mark.slow
def test_a_case_without_listed_events_is_bound_to_each_split(telemetry: Path, tmp_path: Path) -> None:
    cases_dir = tmp_path / "cases" / "linux"
    cases_dir.mkdir(parents=True)
    (tmp_path / "cases" / "reports").mkdir()
    (cases_dir / "linux_900.yaml").write_text(
        textwrap.dedent("""\
        id: linux_900
        platform: linux
        title: Tool staged in a hidden temporary folder
        objective: Detect tools copied into hidden folders under world-writable directories.
        ground_truth:
          techniques: [T1105]
          tables: [DeviceProcessEvents]
        """),
        encoding="utf-8",
    )
    dataset = Dataset.load(telemetry)
    case = load_cases(tmp_path / "cases", tables=set(dataset.schemas)).cases["linux_900"]
    assert not case.ground_truth.attack_events
    bound = {
        split: case.bound(build_store(dataset, cache_dir=tmp_path, rows=3000, split=split).labels)
        for split in dataset.splits
    }
    assert bound["dev"].ground_truth.attack_event_count() == 4
    assert bound["dev"].ground_truth.attack_events != bound["test"].ground_truth.attack_events


@pytest.mark.slow
def test_a_broken_scenario_is_left_out_and_named(telemetry: Path, tmp_path: Path) -> None:
    (telemetry / "scenarios" / "linux_901.yaml").write_text(
        textwrap.dedent("""\
        attack:
          name: broken
          steps:
            - table: DeviceProcessEvents
              chain:
                - [bash, -bash]
                - [bash, 'bash x.sh']
                - [cp, 'cp {nothing} /tmp/x']
        """),
        encoding="utf-8",
    )
    dataset = Dataset.load(telemetry)
    with pytest.raises(ProfileError, match=r"linux_901\.yaml: attack\.broken\.steps\.0: .*nothing"):
        build_store(dataset, cache_dir=tmp_path / "strict", rows=2000)
    store = build_store(dataset, cache_dir=tmp_path / "lenient", rows=2000, strict=False)
    [problem] = store.problems
    assert (problem.path, problem.kind, problem.group) == (
        "scenarios/linux_901.yaml",
        "scenario",
        "linux_901",
    )
    assert "nothing" in problem.message
    assert store.labels.by_table("attack", "linux_900")  # the other scenario still played


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        ("{test: {seed: 1}, dev: {seed: 2}}", "first split must be dev"),
        ("{dev: {seed: 1}, test: {seed: 1}}", "its own seed"),
        ("{dev: {seed: x}}", r"splits\.dev\.seed"),
    ],
)
def test_bad_splits_are_named(telemetry: Path, splits: str, message: str) -> None:
    config = telemetry / "dataset.yaml"
    text = re.sub(r"splits:\n(  .*\n)+", f"splits: {splits}\n", config.read_text())
    config.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        Dataset.load(telemetry)


def test_story_structure_errors_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "linux_902.yaml"
    path.write_text(
        "attack:\n  name: x\n  steps:\n    - table: DeviceProcessEvents\n      bind: {host: hosts}\n",
        encoding="utf-8",
    )
    with pytest.raises(ProfileError, match=r"attack\.steps\.0\.bind: bind entities on the story"):
        load_scenario(path)
    path.write_text(
        "attack:\n  steps:\n    - table: DeviceProcessEvents\n      after: [5, 1]\n", encoding="utf-8"
    )
    with pytest.raises(ProfileError, match=r"steps\.0\.after: expected \[min, max\]"):
        load_scenario(path)


@pytest.mark.slow
def test_a_broken_background_template_leaves_only_its_scenario_out(telemetry: Path, tmp_path: Path) -> None:
    """A background template is compiled before the build: one typo does not stop every case."""
    (telemetry / "scenarios" / "linux_903.yaml").write_text(
        textwrap.dedent("""\
        attack:
          name: fine
          bind: {host: hosts}
          steps:
            - table: DeviceProcessEvents
              chain:
                - [bash, -bash]
                - [bash, 'bash x.sh']
                - [cp, 'cp a /tmp/x']
        background:
          DeviceProcessEvents:
            - name: typo
              bind: {host: hosts}
              chain:
                - [systemd, /sbin/init]
                - [bash, 'bash {hots.name}']
                - [cp, 'cp a b']
        """),
        encoding="utf-8",
    )
    store = build_store(Dataset.load(telemetry), cache_dir=tmp_path, rows=2000, strict=False)
    [problem] = store.problems
    assert problem.group == "linux_903" and "hots.name" in problem.message
    assert store.labels.by_table("attack", "linux_900")


@pytest.mark.slow
def test_a_binary_defined_twice_differently_leaves_the_later_scenario_out(
    telemetry: Path, tmp_path: Path
) -> None:
    for name, size in (("linux_904", 1), ("linux_905", 2)):
        (telemetry / "scenarios" / f"{name}.yaml").write_text(
            textwrap.dedent(f"""\
            attack:
              name: uses a tool
              bind: {{host: hosts}}
              steps:
                - table: DeviceProcessEvents
                  chain:
                    - [bash, -bash]
                    - [bash, 'bash x.sh']
                    - [sometool, 'sometool --run']
            binaries:
              sometool: {{path: /opt/sometool, size: {size}}}
            """),
            encoding="utf-8",
        )
    store = build_store(Dataset.load(telemetry), cache_dir=tmp_path, rows=2000, strict=False)
    assert [(p.group, p.message) for p in store.problems] == [
        ("linux_905", "binaries.sometool: already defined differently")
    ]
    assert store.labels.by_table("attack", "linux_904")


AKS_STORY = textwrap.dedent("""\
    case: aks_900
    attack:
      name: operator reads then rewrites a config map
      instances: 2
      bind:
        cluster: clusters
        admin: 'users[team=platform]'
        seat: k8s_seats
        name: [feature-flags, routing-table]
      steps:
        - table: AKSAudit
          rows:
            - {Verb: get, RequestUri: '/api/v1/namespaces/default/configmaps/{name}',
               ObjectRef: {resource: configmaps, namespace: default, name: '{name}', apiVersion: v1},
               ResponseStatus: {metadata: {}, code: 200},
               User: {username: '{admin.upn}', groups: [system:authenticated]},
               UserAgent: '{seat.ua}', SourceIps: ['{seat.ip}'],
               Annotations: {authorization.k8s.io/decision: allow}}
        - table: AKSAuditAdmin
          after: [2, 5]
          rows:
            - {Verb: patch, RequestUri: '/api/v1/namespaces/default/configmaps/{name}',
               ObjectRef: {resource: configmaps, namespace: default, name: '{name}', apiVersion: v1},
               ResponseStatus: {metadata: {}, code: 200},
               User: {username: '{admin.upn}', groups: [system:authenticated]},
               UserAgent: '{seat.ua}', SourceIps: ['{seat.ip}'],
               Annotations: {authorization.k8s.io/decision: allow}}
    routine:
      - name: operator reads a config map
        instances: 5
        bind: {cluster: clusters, admin: 'users[team=platform]', seat: k8s_seats}
        steps:
          - table: AKSAudit
            rows:
              - {Verb: get, RequestUri: '/api/v1/namespaces/default/configmaps/kube-root-ca.crt',
                 ObjectRef: {resource: configmaps, namespace: default, name: kube-root-ca.crt,
                             apiVersion: v1},
                 ResponseStatus: {metadata: {}, code: 200},
                 User: {username: '{admin.upn}', groups: [system:authenticated]},
                 UserAgent: '{seat.ua}', SourceIps: ['{seat.ip}'],
                 Annotations: {authorization.k8s.io/decision: allow}}
    """)


@pytest.mark.slow
def test_aks_writes_are_mirrored_into_aksaudit_with_their_labels(telemetry: Path, tmp_path: Path) -> None:
    """As AKS writes both diagnostic categories: a write is in AKSAuditAdmin and in AKSAudit
    with the same AuditId (and label); a read only in AKSAudit; routine work is unlabelled."""
    (telemetry / "scenarios" / "aks_900.yaml").write_text(AKS_STORY, encoding="utf-8")
    store = build_store(Dataset.load(telemetry), cache_dir=tmp_path, rows=3000)
    engine = LocalEngine.of_store(store)
    admin = {
        r["AuditId"]: r
        for r in engine.query(
            "AKSAuditAdmin | project AuditId, Verb, RequestUri, Type", limit=100_000
        ).to_dicts()
    }
    audit = {
        r["AuditId"]: r
        for r in engine.query("AKSAudit | project AuditId, Verb, RequestUri, Type", limit=100_000).to_dicts()
    }
    assert admin and set(admin) <= set(audit)
    assert {audit[i]["Type"] for i in admin} == {"AKSAudit"}
    assert all(
        (audit[i]["Verb"], audit[i]["RequestUri"]) == (r["Verb"], r["RequestUri"]) for i, r in admin.items()
    )
    assert not any(r["Verb"] in ("get", "list", "watch") for r in admin.values())
    attacks = store.labels.by_table("attack", "aks_900")
    assert len(attacks["AKSAuditAdmin"]) == 2 and len(attacks["AKSAudit"]) == 4
    assert set(attacks["AKSAuditAdmin"]) < set(attacks["AKSAudit"])
    routine = engine.query(
        'AKSAudit | where RequestUri endswith "/configmaps/kube-root-ca.crt" | project AuditId', limit=1000
    ).to_dicts()
    assert len(routine) >= 5
    assert all(store.labels.kind("AKSAudit", r["AuditId"]) == "benign" for r in routine)
    # A mirrored event is one event to score: found by a query on either table, counted once
    # by a query on both, and the reads stay events of their own.
    from ctirealm.scoring.detection import evaluate

    expected = store.labels.by_table("attack", "aks_900")
    writes = 'where Verb == "patch" and RequestUri has "/configmaps/"'
    # (AKSAuditAdmin holds no read: the two reads are elsewhere for a rule on it alone.)
    for kql, missed, elsewhere in (
        (f"AKSAuditAdmin | {writes}", 0, 2),
        (f"AKSAudit | {writes}", 2, 0),
        (f"union AKSAudit, AKSAuditAdmin | {writes}", 2, 0),
    ):
        result = evaluate(kql, engine, store.labels, expected=expected, within_tables_read=True)
        assert (result.tp, result.fp, result.fn, result.expected_elsewhere) == (2, 0, missed, elsewhere), kql
    listed = ", ".join(f"'{i}'" for i in expected["AKSAudit"])
    result = evaluate(
        f"union AKSAudit, AKSAuditAdmin | where AuditId in ({listed})",
        engine,
        store.labels,
        expected=expected,
    )
    assert (result.tp, result.fp, result.fn, result.rows) == (4, 0, 0, 6)
    # The store is sorted by time then id after the copy, as every table is.
    times = engine.query("AKSAudit | project TimeGenerated", limit=100_000).rows
    assert [t for (t,) in times] == sorted(t for (t,) in times)
