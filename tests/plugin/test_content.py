"""The content gate (pytester): Sentinel analytics rules as reviewer's checks, with test data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.plugin.content_project import (
    MATCH_CSV,
    ROOT,
    add_rule,
    rule,
    write_telemetry,
)

CHECKS = ("parse", "runs", "connectors", "entities", "attack", "true_positives", "false_positives")


def test_a_good_rule_passes_every_check(project: pytest.Pytester) -> None:
    add_rule(project, "shell", rule())
    result = project.runpytest("-v")
    result.assert_outcomes(passed=7)
    for check in CHECKS:
        result.stdout.fnmatch_lines([f"*shell.yaml::{check} PASSED*"])


def test_a_rule_without_test_data_is_marked_untested(project: pytest.Pytester) -> None:
    add_rule(project, "shell", rule(), match=None, nomatch=None)
    result = project.runpytest("-rs")
    result.assert_outcomes(passed=6, skipped=1)
    result.stdout.fnmatch_lines(["*untested: no must-match events in detections/shell.tests/match/*"])


@pytest.mark.parametrize(
    ("changes", "check", "message"),
    [
        (
            {"host_column": "Computer"},
            "entities",
            "*mapped columns missing from the query's output: Host.HostName -> Computer (output columns: "
            "Timestamp, DeviceName, AccountName, ProcessCommandLine, ReportId)*",
        ),
        (
            {"tactic": "Exfiltration"},
            "attack",
            "*T1059.004 (Unix Shell) is under Execution, none of the listed tactics*",
        ),
        ({"tactic": "Sneaking"}, "attack", "*unknown tactic 'Sneaking'*"),
        (
            {"connector": "AzureActiveDirectory"},
            "connectors",
            "*connector AzureActiveDirectory does not deliver DeviceProcessEvents; the query reads "
            "DeviceProcessEvents, which no declared connector delivers*",
        ),
        (
            {"threshold": 5},
            "true_positives",
            "*would not fire: the run ending 2026-03-16T00:00Z that reads the must-match events gives 2 "
            "result rows, and the rule fires when that is > 5 (triggerOperator gt; it runs every 1h over "
            "the last 1h)*",
        ),
        (
            {"condition": '\n  | where AccountName == "nobody"'},
            "true_positives",
            "*raised no alert on its 2 must-match events (DeviceProcessEvents)*",
        ),
        (
            {"condition": ""},
            "false_positives",
            "*raised 1 false-positive alerts over the store's benign activity (max_false_positives: 0) "
            "in 336 runs every 1h over the last 1h, alerting when results > 0: their rows hold "
            "1 hard negatives, 0 background, e.g. the run ending 2026-03-05T14:00Z: *",
        ),
    ],
)
def test_each_check_names_what_is_wrong(
    project: pytest.Pytester, changes: dict, check: str, message: str
) -> None:
    add_rule(project, "shell", rule(**changes))
    result = project.runpytest("-v")
    result.stdout.fnmatch_lines([f"*shell.yaml::{check} FAILED*"])
    result.stdout.fnmatch_lines([f"'Interactive reverse shell' (detections/shell.yaml): {message}"])


def test_must_not_match_events_and_the_budget(project: pytest.Pytester) -> None:
    add_rule(project, "shell", rule(condition=""), settings="max_false_positives: 1\n")
    result = project.runpytest()
    result.assert_outcomes(passed=6, failed=1)
    result.stdout.fnmatch_lines(
        ["*alerted on its must-not-match events: 1 alerting runs with 1 rows from 1 events, e.g. *deploy*"]
    )


def test_broken_yaml_fails_parse_and_skips_the_rest(project: pytest.Pytester) -> None:
    add_rule(project, "broken", rule().replace("  - entityType: Host", "   - entityType: Host"))
    add_rule(project, "shell", rule())
    result = project.runpytest("-rs")
    result.assert_outcomes(passed=7, failed=1, skipped=6)
    result.stdout.fnmatch_lines(
        ["*'broken' (detections/broken.yaml): does not parse: invalid YAML at line *"]
    )


@pytest.mark.slow
def test_schema_fields_are_checked(project: pytest.Pytester) -> None:
    text = (
        rule()
        .replace("triggerOperator: gt", "triggerOperator: above")
        .replace("queryPeriod: 1h", "queryPeriod: 30d")
    )
    add_rule(project, "shell", text)
    result = project.runpytest()
    result.stdout.fnmatch_lines(
        ["*: queryPeriod is over 14d; triggerOperator 'above': expected gt, lt, eq or ne*"]
    )


def test_unknown_test_data_column_names_file_and_line(project: pytest.Pytester) -> None:
    add_rule(project, "shell", rule(), match="Timestamp,Nope\n2025-11-04T14:02:11Z,x\n")
    result = project.runpytest()
    result.stdout.fnmatch_lines(
        [
            "*test data: */shell.tests/match/DeviceProcessEvents.csv:2: "
            "column 'Nope' is not in DeviceProcessEvents*"
        ]
    )


def test_table_read_without_a_schema_is_named(project: pytest.Pytester) -> None:
    text = rule(
        condition="\n  | join kind=leftouter (IdentityInfo) on $left.AccountName == $right.AccountName"
    )
    add_rule(project, "shell", text)
    result = project.runpytest("-rs")
    result.stdout.fnmatch_lines(
        [
            "*shell.yaml): reads IdentityInfo, which the telemetry has no schema for*",
            "*cannot run offline: no schema for IdentityInfo*",
        ]
    )


def test_a_watchlist_is_named_not_called_a_syntax_error(project: pytest.Pytester) -> None:
    add_rule(
        project,
        "shell",
        rule(condition='\n  | where AccountName in (_GetWatchlist("admins") | project SearchKey)'),
    )
    result = project.runpytest("-v")
    result.stdout.fnmatch_lines(["*shell.yaml::parse PASSED*"])
    result.stdout.fnmatch_lines(
        [
            "*shell.yaml): calls _GetWatchlist, a Sentinel workspace function "
            "(a watchlist or an ASIM parser) that cannot run offline*"
        ]
    )


def test_sigma_and_kql_in_the_content_folder_use_the_rules_gate(project: pytest.Pytester) -> None:
    (project.path / "detections" / "shell.yml").write_text(
        textwrap.dedent("""\
        title: Reverse shell
        status: test
        logsource:
            product: linux
            category: process_creation
        detection:
            selection:
                CommandLine|contains: '/dev/tcp/'
            condition: selection
    """)
    )
    (project.path / "detections" / "q.kql").write_text(
        'DeviceProcessEvents | where ProcessCommandLine has "/dev/tcp/"\n'
    )
    (project.path / "detections" / "q.yml").write_text("title: Q\n")
    (project.path / "detections" / "hunt.kql").write_text(
        "DeviceProcessEvents | summarize count() by AccountName\n"
    )
    (project.path / "detections" / "typo.kql").write_text("DeviceProcessEvents | where Nope == 1\n")
    result = project.runpytest("-v")
    result.stdout.fnmatch_lines(["*hunt.kql::parse PASSED*", "*hunt.kql::runs PASSED*"])
    result.stdout.fnmatch_lines(["*q.kql::parse PASSED*"])
    result.stdout.fnmatch_lines(["*shell.yml::validate PASSED*"])
    result.stdout.fnmatch_lines(
        [
            "'typo' (detections/typo.kql): does not run over the store: "
            "semantic error at 1:29: unknown column 'Nope'"
        ]
    )
    result.stdout.fnmatch_lines(["*hunt.kql::true_positives SKIPPED*"])
    result.assert_outcomes(passed=11, failed=1, skipped=2)


def test_a_sentinel_rule_under_rules_is_not_read_as_sigma(project: pytest.Pytester) -> None:
    (project.path / "rules").mkdir()
    (project.path / "rules" / "shell.yaml").write_text(rule())
    result = project.runpytest("rules", "-v")
    result.stdout.fnmatch_lines(["*rules/shell.yaml::connectors PASSED*"])
    result.assert_outcomes(passed=6, skipped=1)


# -- published rules, from `ctirealm init` to a red/green run ------------------------------------

SAMPLE = ROOT / "tests" / "fixtures" / "sentinel"
#: As exported from the Defender portal's advanced hunting: a header row, ISO times.
SHADOW_CSV = """\
Timestamp,DeviceName,AccountName,AccountDomain,AccountUpn,ProcessId,FileName,FolderPath,ProcessCommandLine
2025-10-21T03:14:07.1234567Z,fin-ws-12.corp.example,jdoe,corp,jdoe@corp.example,4412,vssadmin.exe,C:\\Windows\\System32\\vssadmin.exe,vssadmin.exe delete shadows /all /quiet
"""
P, F, S = "PASSED", "FAILED", "SKIPPED"
#: Per published rule, per check: what the gate says over the tiny store.
EXPECTED = {
    "LaZagneCredTheft": dict(
        parse=P, runs=F, connectors=P, entities=S, attack=P, true_positives=S, false_positives=S
    ),
    "MFARejectedbyUser": dict(
        parse=P, runs=F, connectors=F, entities=S, attack=P, true_positives=S, false_positives=S
    ),
    "NRT_NewAppOrServicePrincipalCredential": dict(
        parse=F, runs=S, connectors=S, entities=S, attack=S, true_positives=S, false_positives=S
    ),
    "New-CloudShell-User": dict(
        parse=P, runs=P, connectors=P, entities=P, attack=P, true_positives=S, false_positives=P
    ),
    "exchange_auditlogdisabled": dict(
        parse=P, runs=P, connectors=P, entities=P, attack=P, true_positives=S, false_positives=P
    ),
    "UserAssignedPrivilegedRole": dict(
        parse=P, runs=P, connectors=P, entities=P, attack=P, true_positives=S, false_positives=P
    ),
    "ShadowCopyDeletion": dict(
        parse=P, runs=P, connectors=P, entities=P, attack=P, true_positives=P, false_positives=P
    ),
    "reverse_shell_from_service_account": {check: P for check in CHECKS},
}


@pytest.mark.slow
def test_published_rules_from_init_to_a_verdict(pytester: pytest.Pytester, store_cache: Path) -> None:
    from ctirealm.cli import main

    write_telemetry(pytester.path / "telemetry")
    assert main(["init", str(pytester.path)]) == 0
    ini = pytester.path / "pytest.ini"
    ini.write_text(
        ini.read_text() + f"addopts = --realm-cache-dir={store_cache} --realm-rows=0 -p no:cacheprovider\n"
    )
    assert (pytester.path / ".github" / "workflows" / "detections.yml").is_file()
    for path in SAMPLE.glob("*.yaml"):
        shutil.copy(path, pytester.path / "detections" / path.name)
    match = pytester.path / "detections" / "ShadowCopyDeletion.tests" / "match"
    match.mkdir(parents=True)
    (match / "DeviceProcessEvents.csv").write_text(SHADOW_CSV)

    result = pytester.runpytest("-v", "-rs")
    seen: dict[str, dict[str, str]] = {}
    for line in result.stdout.lines:
        if "::" in line and line.startswith("detections/"):
            node, outcome = line.split()[:2]
            name, check = node.removeprefix("detections/").split(".yaml::")
            seen.setdefault(name, {})[check] = outcome
    assert seen == EXPECTED
    result.stdout.fnmatch_lines(
        [
            "*LaZagneCredTheft.yaml): does not run over the store: semantic error at 5:25: unknown "
            "column 'DeviceName'*"
        ]
    )


@pytest.mark.slow
def test_a_folder_of_rules_and_one_export_in_three_commands(
    pytester: pytest.Pytester, store_cache: Path
) -> None:
    # What docs/gating.md walks through: a few published rules and one portal export in a
    # folder of their own; `ctirealm init` finds them, writes no example, and pytest judges them.
    from ctirealm.cli import main

    write_telemetry(pytester.path / "telemetry")
    analytics = pytester.path / "analytics"
    analytics.mkdir()
    for name in ("ShadowCopyDeletion", "exchange_auditlogdisabled", "LaZagneCredTheft"):
        shutil.copy(SAMPLE / f"{name}.yaml", analytics / f"{name}.yaml")
    match = analytics / "ShadowCopyDeletion.tests" / "match"
    match.mkdir(parents=True)
    (match / "DeviceProcessEvents.csv").write_text(SHADOW_CSV)
    assert main(["init", str(pytester.path)]) == 0
    assert not (pytester.path / "detections").exists()
    ini = pytester.path / "pytest.ini"
    assert "testpaths = analytics\nrealm_content = analytics\n" in ini.read_text()
    ini.write_text(
        ini.read_text() + f"addopts = --realm-cache-dir={store_cache} --realm-rows=0 -p no:cacheprovider\n"
    )
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=16, failed=1, skipped=4)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    (analytics / "LaZagneCredTheft.yaml").unlink()
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=13, skipped=1)
    assert result.ret == pytest.ExitCode.OK


def test_init_never_overwrites(tmp_path: Path) -> None:
    from ctirealm.cli.init import init

    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\naddopts = '-q'\n")
    first = dict(init(tmp_path))
    assert first["pyproject.toml"].startswith("exists, left alone: add 'realm_content = detections'")
    assert not (tmp_path / "pytest.ini").exists()
    (tmp_path / "detections" / "reverse_shell_from_service_account.yaml").write_text("mine\n")
    second = dict(init(tmp_path))
    assert set(second.values()) == {first["pyproject.toml"], "exists, left alone"}
    assert (tmp_path / "detections" / "reverse_shell_from_service_account.yaml").read_text() == "mine\n"


def test_the_content_hooks_load_no_engine_and_no_sigma() -> None:
    # Installed plugins load in every pytest run; only collecting a rule may load the engine.
    code = (
        "import json, sys\nimport ctirealm.plugin.content\n"
        "print(json.dumps(sorted(m for m in ('duckdb', 'duckdb_kql', 'sigma') if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


# -- scheduling: queryFrequency, queryPeriod, triggerOperator/triggerThreshold ---------------------

ANY_SHELL = '\n  | where ProcessCommandLine has "/dev/tcp/"'


def test_a_threshold_is_met_per_run_not_over_the_whole_window(project: pytest.Pytester) -> None:
    # The store's two /dev/tcp events are three hours apart: no hourly run returns more than
    # one row, so "more than 1" never fires over the background; the two must-match events
    # fall in one run and fire it.
    add_rule(project, "shell", rule(condition="", threshold=1), nomatch=None)
    result = project.runpytest("-v")
    result.assert_outcomes(passed=7)
    add_rule(
        project,
        "strict",
        rule(condition="", threshold=2).replace("name: Interactive", "name: Strict"),
        nomatch=None,
    )
    result = project.runpytest("-v", "detections/strict.yaml")
    result.stdout.fnmatch_lines(
        [
            "*'Strict reverse shell' (detections/strict.yaml): would not fire: the run ending "
            "2026-03-16T00:00Z that reads the must-match events gives 2 result rows, and the rule "
            "fires when that is > 2 (triggerOperator gt; it runs every 1h over the last 1h)*"
        ]
    )


@pytest.mark.slow
def test_a_clock_dependent_query_runs_per_window_with_now_pinned(project: pytest.Pytester) -> None:
    # ago() is relative to each run's end: were now() the dataset's clock, no run in the
    # middle of the window would see the store's events at all.
    query = rule(condition="").replace(
        "  DeviceProcessEvents\n", "  DeviceProcessEvents\n  | where Timestamp > ago(2h)\n"
    )
    add_rule(project, "shell", query)
    result = project.runpytest("-v")
    result.stdout.fnmatch_lines(["*shell.yaml::true_positives PASSED*"])
    result.stdout.fnmatch_lines(
        [
            "*raised 1 false-positive alerts over the store's benign activity (max_false_positives: 0) "
            "in 336 runs every 1h over the last 1h, alerting when results > 0: their rows hold "
            "1 hard negatives, 0 background, e.g. the run ending 2026-03-05T14:00Z: *deploy*"
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "336 runs (every 1h over the last 1h, alerting when results > 0), per run: not binned: "
            "it calls ago(); 2 raise alerts"
        ]
    )


@pytest.mark.slow
def test_an_aggregating_rule_counts_within_each_run(project: pytest.Pytester) -> None:
    # Over the whole window the store's two events on app-01 make a group of 2; no hourly
    # run sees more than one of them. The two must-match events share a run on app-07.
    text = rule(condition="").replace(
        "  | project Timestamp, DeviceName, AccountName, ProcessCommandLine, ReportId\n",
        "  | summarize Events = count(), Accounts = make_set(AccountName) by DeviceName\n"
        "  | where Events > 1\n",
    )
    add_rule(project, "shell", text)
    result = project.runpytest("-v", "-rA")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(
        [
            "336 runs (every 1h over the last 1h, alerting when results > 0), per run: not binned: "
            "it aggregates across the lookback (summarize); 0 raise alerts"
        ]
    )


def test_iso_durations_and_a_daily_schedule(project: pytest.Pytester) -> None:
    text = (
        rule()
        .replace("queryFrequency: 1h", "queryFrequency: PT12H")
        .replace("queryPeriod: 1h", "queryPeriod: P1D")
    )
    add_rule(project, "shell", text)
    result = project.runpytest("-v", "-rA")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(
        ["28 runs (every 12h over the last 1d, alerting when results > 0), binned; * raise alerts"]
    )


# -- hunting queries ----------------------------------------------------------------------------

HUNTING = """\
id: 9d1c6b0e-2f4a-4c8e-b1d7-5e3f2a1b0c9d
name: Shells talking to /dev/tcp
description: Every shell whose command line opens a TCP connection through /dev/tcp.
requiredDataConnectors:
  - connectorId: MicrosoftThreatProtection
    dataTypes:
      - DeviceProcessEvents
tactics:
  - Execution
relevantTechniques:
  - T1059.004
query: |
  DeviceProcessEvents
  | where ProcessCommandLine has "/dev/tcp/"
  | project Timestamp, DeviceName, AccountName, ProcessCommandLine, ReportId
entityMappings:
  - entityType: Host
    fieldMappings:
      - identifier: HostName
        columnName: DeviceName
"""


def test_a_hunting_query_without_test_data_is_checked_and_marked_untested(project: pytest.Pytester) -> None:
    (project.path / "detections" / "hunt.yaml").write_text(HUNTING)
    (project.path / "detections" / "bare.kql").write_text(
        '// Defender advanced hunting\nDeviceProcessEvents | where ProcessCommandLine has "/dev/tcp/"\n'
    )
    result = project.runpytest("-v", "-rs")
    for check in ("parse", "runs", "connectors", "entities", "attack"):
        result.stdout.fnmatch_lines([f"*hunt.yaml::{check} PASSED*"])
    result.stdout.fnmatch_lines(["*bare.kql::parse PASSED*", "*bare.kql::runs PASSED*"])
    result.stdout.fnmatch_lines(["*untested: no must-match events in detections/bare.tests/match/*"])
    result.stdout.fnmatch_lines(["*untested: no must-match events in detections/hunt.tests/match/*"])
    result.assert_outcomes(passed=7, skipped=2)


def test_a_hunting_query_returns_its_must_match_events(project: pytest.Pytester) -> None:
    (project.path / "detections" / "hunt.yaml").write_text(HUNTING)
    match = project.path / "detections" / "hunt.tests" / "match"
    match.mkdir(parents=True)
    (match / "DeviceProcessEvents.csv").write_text(MATCH_CSV)
    (project.path / "detections" / "narrow.kql").write_text(
        'DeviceProcessEvents | where ProcessCommandLine has "4444" | project ReportId, DeviceName\n'
    )
    match = project.path / "detections" / "narrow.tests" / "match"
    match.mkdir(parents=True)
    (match / "DeviceProcessEvents.csv").write_text(MATCH_CSV)
    result = project.runpytest("-v")
    result.stdout.fnmatch_lines(["*hunt.yaml::true_positives PASSED*"])
    result.stdout.fnmatch_lines(["'narrow' (detections/narrow.kql): missed 1 of 2 must-match events: *"])
    result.assert_outcomes(passed=8, failed=1)


# -- entity mappings, strictly ------------------------------------------------------------------


def test_a_mapped_column_must_hold_a_value_on_every_matched_row(project: pytest.Pytester) -> None:
    text = rule().replace(
        """        columnName: DeviceName
""",
        """        columnName: DeviceName
  - entityType: Account
    fieldMappings:
      - identifier: Name
        columnName: AccountName
""",
    )
    blank = MATCH_CSV.replace(
        '"11/4/2025, 2:09:40.000 PM",app-07,svc-tomcat,', '"11/4/2025, 2:09:40.000 PM",app-07,,'
    )
    add_rule(project, "shell", text, match=blank)
    result = project.runpytest("-v")
    result.stdout.fnmatch_lines(["*shell.yaml::entities FAILED*"])
    result.stdout.fnmatch_lines(
        [
            "'Interactive reverse shell' (detections/shell.yaml): mapped columns without a value on "
            "the rows the must-match events raise (Sentinel drops such an entity from the alert): "
            "entity Account, identifier Name: column AccountName is empty on 1 of 2, e.g. *"
        ]
    )
    result.assert_outcomes(passed=6, failed=1)
