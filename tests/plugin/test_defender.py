"""Defender custom detection rules (Graph's detectionRule, JSON or YAML) under the content gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from ctirealm.plugin.content import content_kind
from ctirealm.plugin.content_schedule import Schedule

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "defender"
CHECKS = ("parse", "runs", "columns", "assets", "attack", "true_positives", "false_positives")


def fixture_rule() -> dict:
    return json.loads((FIXTURE / "HistoryWipe.json").read_text())


def add(
    project: pytest.Pytester, doc: dict | str, *, name: str = "HistoryWipe.json", tests: bool = True
) -> Path:
    path = project.path / "detections" / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=2))
    if tests:
        shutil.copytree(FIXTURE / "HistoryWipe.tests", path.with_name(path.stem + ".tests"))
    return path


def test_the_fixture_rule_passes_every_check(project: pytest.Pytester) -> None:
    add(project, fixture_rule())
    result = project.runpytest("-v", "-rA")
    result.assert_outcomes(passed=7)
    for check in CHECKS:
        result.stdout.fnmatch_lines([f"*HistoryWipe.json::{check} PASSED*"])
    # Every hour over the last 4 hours; the must-match events, 3 minutes apart, fall in the
    # last run.
    result.stdout.fnmatch_lines(
        [
            "336 runs (every 1h over the last 4h (the first run over the last 30d), an alert per new "
            "result row (at most 100 a run)), binned; * raise alerts"
        ]
    )


def test_recognised_by_content_not_by_name(project: pytest.Pytester, tmp_path: Path) -> None:
    as_yaml = tmp_path / "anything.yml"
    as_yaml.write_text(yaml.safe_dump(fixture_rule()))
    other = tmp_path / "settings.json"
    other.write_text(json.dumps({"displayName": "not a rule", "query": "x"}))
    broken = tmp_path / "broken.json"
    broken.write_text('{"displayName": "x", "queryCondition": {"queryText": "T"},,}')
    assert content_kind(as_yaml) == "defender"
    assert content_kind(other) is None
    assert content_kind(broken) == "defender"
    add(project, yaml.safe_dump(fixture_rule()), name="history.yaml", tests=False)
    result = project.runpytest("-v", "-rs")
    result.stdout.fnmatch_lines(["*history.yaml::columns PASSED*"])
    result.stdout.fnmatch_lines(["*untested: no must-match events in detections/history.tests/match/*"])


def test_broken_json_names_the_line(project: pytest.Pytester) -> None:
    text = json.dumps(fixture_rule(), indent=2).replace('"isEnabled": true,', '"isEnabled": true,,')
    add(project, text, tests=False)
    result = project.runpytest("-v")
    result.stdout.fnmatch_lines(
        [
            "*'HistoryWipe' (detections/HistoryWipe.json): does not parse: "
            "invalid JSON at line 5, column 21: Expecting property name enclosed in double quotes*"
        ]
    )
    result.assert_outcomes(failed=1, skipped=6)


def _with(changes: dict) -> dict:
    doc = fixture_rule()
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = doc
        for part in parents:
            node = node[part]
        node[last] = value
    return doc


QUERY = fixture_rule()["queryCondition"]["queryText"]


@pytest.mark.parametrize(
    ("changes", "check", "message"),
    [
        (
            {"schedule.period": "2H"},
            "parse",
            "*schedule.period '2H': expected one of '0', '1H', '3H', '12H', '24H' (\"0\" is continuous, NRT)*",
        ),
        (
            {"schedule.period": "0", "queryCondition.queryText": "// wipes\n" + QUERY},
            "parse",
            "*a continuous (NRT) rule's query may not hold comments*",
        ),
        (
            {"detectionAction.alertTemplate.severity": "critical"},
            "parse",
            "*alertTemplate.severity 'critical': expected one of informational, low, medium, high*",
        ),
        (
            {"queryCondition.queryText": QUERY.replace("Timestamp, ReportId, ", "")},
            "columns",
            "*the results lack Timestamp, ReportId (Defender requires Timestamp and ReportId)*",
        ),
        (
            {"queryCondition.queryText": QUERY.replace(", DeviceId", "")},
            "columns",
            "*impacted asset impactedDeviceAsset deviceId: no column DeviceId in the results; response "
            "action collectInvestigationPackageResponseAction acts on deviceId: no column DeviceId*",
        ),
        (
            {
                "detectionAction.alertTemplate.impactedAssets": [
                    {"@odata.type": "#microsoft.graph.security.impactedUserAsset", "identifier": "accountUpn"}
                ]
            },
            "columns",
            "*impacted asset impactedUserAsset accountUpn: no column AccountUpn in the results*",
        ),
        (
            {"detectionAction.alertTemplate.category": "Exfiltration"},
            "attack",
            "*T1070.003 (Clear Command History) is under DefenseEvasion, not the category Exfiltration*",
        ),
        (
            {"detectionAction.alertTemplate.category": "Malware"},
            "attack",
            "*category Malware takes no mitreTechniques*",
        ),
        (
            {"detectionAction.alertTemplate.mitreTechniques": ["T9999"]},
            "attack",
            "*unknown technique 'T9999'*",
        ),
        (
            {"queryCondition.queryText": QUERY.replace("history\\s+-c|", "")},
            "true_positives",
            "*missed 1 of 2 must-match events (no alerting run returns them): *",
        ),
    ],
)
def test_each_check_names_what_is_wrong(
    project: pytest.Pytester, changes: dict, check: str, message: str
) -> None:
    add(project, _with(changes))
    result = project.runpytest("-v")
    result.stdout.fnmatch_lines([f"*HistoryWipe.json::{check} FAILED*"])
    result.stdout.fnmatch_lines(
        [f"'Shell history wiped on a Linux host' (detections/HistoryWipe.json): {message}"]
    )


def test_an_impacted_asset_must_hold_a_value_on_every_alert(project: pytest.Pytester) -> None:
    path = add(project, fixture_rule())
    match = path.with_name("HistoryWipe.tests") / "match" / "DeviceProcessEvents.csv"
    match.write_text(match.read_text().replace("web-03.corp.example,www-data,ln", "web-03.corp.example,,ln"))
    result = project.runpytest("-v")
    result.stdout.fnmatch_lines(["*HistoryWipe.json::assets FAILED*"])
    result.stdout.fnmatch_lines(
        [
            "*impacted assets without a value on the rows the must-match events raise (the alert "
            "cannot name its entity): impacted asset impactedUserAsset accountName: column "
            "AccountName is empty on 1 of 2, e.g. *"
        ]
    )
    result.assert_outcomes(passed=6, failed=1)


SHELL = (
    'DeviceProcessEvents\n| where ProcessCommandLine has "/dev/tcp/"\n'
    "| project Timestamp, ReportId, DeviceId, DeviceName, AccountName, ProcessCommandLine"
)


@pytest.mark.parametrize(
    ("period", "runs", "cadence"),
    [
        ("24H", 14, "every 1d over the last 30d"),
        ("1H", 336, "every 1h over the last 4h (the first run over the last 30d)"),
    ],
)
def test_a_benign_row_read_by_several_runs_is_one_alert(
    project: pytest.Pytester, period: str, runs: int, cadence: str
) -> None:
    # The store's look-alike is read by every daily run after it (each looks back 30 days), or
    # by four hourly runs: Defender alerts on a row once.
    doc = _with(
        {
            "queryCondition.queryText": SHELL,
            "schedule.period": period,
            "detectionAction.alertTemplate.category": "Execution",
            "detectionAction.alertTemplate.mitreTechniques": ["T1059.004"],
        }
    )
    add(project, doc, tests=False)
    result = project.runpytest("-v", "-rA")
    result.stdout.fnmatch_lines(
        [
            f"*raised 1 false-positive alerts over the store's benign activity (max_false_positives: 0) "
            f"in {runs} runs {cadence}, an alert per new result row (at most 100 a run): their rows "
            "hold 1 hard negatives, 0 background, e.g. *deploy*"
        ]
    )
    # Without test data, the assets are checked on what it alerts on over the store: the tiny
    # store's two events carry no DeviceId.
    result.stdout.fnmatch_lines(
        [
            "*impacted assets without a value on the rows it alerts on over the store (the alert "
            "cannot name its entity): impacted asset impactedDeviceAsset deviceId: column DeviceId "
            "is empty on 2 of 2, e.g. *"
        ]
    )


def test_defender_schedules() -> None:
    hourly = Schedule.defender("1H")
    assert (hourly.frequency.total_seconds(), hourly.period.total_seconds()) == (3600, 4 * 3600)
    assert hourly.first_period is not None and hourly.first_period.days == 30
    nrt = Schedule.defender("0")
    assert nrt.nrt and nrt.describe() == (
        "every minute (NRT), an alert per new result row (at most 100 a run)"
    )


def test_a_defender_rule_under_rules_is_not_read_as_sigma(project: pytest.Pytester) -> None:
    (project.path / "rules").mkdir()
    (project.path / "rules" / "history.yml").write_text(yaml.safe_dump(fixture_rule()))
    result = project.runpytest("rules", "-v", "-rs")
    result.stdout.fnmatch_lines(["*rules/history.yml::columns PASSED*"])
    assert "::validate" not in result.stdout.str()
    # Nothing over the store to check its impacted assets on, and no test data.
    result.stdout.fnmatch_lines(
        [
            "*untested: no alert to check its impacted assets on (no "
            "must-match events in rules/history.tests/match/ and none over "
            "the store)*"
        ]
    )
    result.assert_outcomes(passed=5, skipped=2)


def test_a_clock_dependent_rule_runs_per_window(project: pytest.Pytester) -> None:
    # ago() makes each run's rows depend on its clock: per run, with only the runs that read
    # the test events executed again.
    query = QUERY.replace("DeviceProcessEvents\r\n", "DeviceProcessEvents\r\n| where Timestamp > ago(4h)\r\n")
    add(project, _with({"queryCondition.queryText": query, "schedule.period": "24H"}))
    result = project.runpytest("-v", "-rA")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(
        [
            "14 runs (every 1d over the last 30d, an alert per new result row (at most 100 a run)), "
            "per run: not binned: it calls ago(); 1 raise alerts"
        ]
    )
