"""The rules gate (pytester): items per rule, exact failure messages, broken files isolated."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

CASE = """\
id: linux_003
platform: linux
title: Cron persistence
objective: Detect persistence through cron by monitoring crontab loaded from temporary files.
reports: [linux-cron]
ground_truth:
  techniques: [T1053.003]
  tables: [DeviceProcessEvents]
  attack_events:
    DeviceProcessEvents: [482913377104, 590114783321]
"""
REPORT = """\
---
id: linux-cron
title: Cron persistence
tags: [linux, persistence]
written: 2024-05-14
---
Attackers drop crontab entries.
"""
HEADER = """\
title: {title}
status: test
logsource:
    product: linux
    category: process_creation
"""


def sigma(title: str, detection: str, expectations: str = "") -> str:
    return (
        HEADER.format(title=title)
        + "detection:\n"
        + textwrap.indent(textwrap.dedent(detection), "    ")
        + textwrap.dedent(expectations)
    )


@pytest.fixture
def project(pytester: pytest.Pytester, store_cache: Path, telemetry_writer: object) -> pytest.Pytester:
    telemetry_writer(pytester.path / "telemetry")
    (pytester.path / "cases" / "linux").mkdir(parents=True)
    (pytester.path / "cases" / "reports").mkdir()
    (pytester.path / "cases" / "linux" / "linux_003.yaml").write_text(CASE)
    (pytester.path / "cases" / "reports" / "linux-cron.md").write_text(REPORT)
    (pytester.path / "rules").mkdir()
    cache = store_cache
    pytester.makeini(f"""
        [pytest]
        testpaths = rules
        addopts = --realm-cache-dir={cache} --realm-rows=0 -p no:cacheprovider
    """)
    return pytester


def write(project: pytest.Pytester, name: str, text: str) -> Path:
    path = project.path / "rules" / name
    path.write_text(text)
    return path


EXPECT = """\
ctirealm:
    case: linux_003
    must_match: all
    max_false_positives: 0
"""


def test_passing_rule(project: pytest.Pytester) -> None:
    write(
        project,
        "good.yml",
        sigma(
            "Good",
            """\
        selection:
            CommandLine|contains: '4b1f0c7e'
        condition: selection
    """,
            EXPECT,
        ),
    )
    result = project.runpytest("-v")
    result.assert_outcomes(passed=5)
    for check in ("parse", "validate", "convert", "true_positives", "false_positives"):
        result.stdout.fnmatch_lines([f"*good.yml::{check} PASSED*"])


def test_rule_missing_attack_events_lists_them(project: pytest.Pytester) -> None:
    write(
        project,
        "narrow.yml",
        sigma(
            "Narrow",
            """\
        selection:
            Image|endswith: '/bin/sh'
        condition: selection
    """,
            EXPECT,
        ),
    )
    result = project.runpytest()
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*'Narrow'*: missed 1 of 2 attack events of linux_003: 482913377104*"])


def test_rule_with_false_positives_shows_examples(project: pytest.Pytester) -> None:
    write(
        project,
        "broad.yml",
        sigma(
            "Broad",
            """\
        selection:
            Image|endswith: '/crontab'
        condition: selection
    """,
            "ctirealm:\n    case: linux_003\n    max_false_positives: 0\n",
        ),
    )
    result = project.runpytest()
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*'Broad'*: raised 2 false positives (max_false_positives: 0): 2 hard negatives, "
            "0 background, e.g. DeviceProcessEvents 300918273645 [[]hard_negative] FolderPath=*"
        ]
    )


def test_broken_rule_does_not_stop_the_others(project: pytest.Pytester) -> None:
    write(project, "broken.yml", "title: broken\ndetection: [\n")
    write(
        project,
        "unknown_field.yml",
        sigma(
            "Unknown field",
            """\
        selection:
            Nope: 'x'
        condition: selection
    """,
        ),
    )
    write(
        project,
        "good.yml",
        sigma(
            "Good",
            """\
        selection:
            CommandLine|contains: '4b1f0c7e'
        condition: selection
    """,
            EXPECT,
        ),
    )
    result = project.runpytest("-rs")
    result.assert_outcomes(passed=5 + 1, failed=1 + 2, skipped=4 + 2)
    for line in (
        "*broken.yml*does not parse: invalid YAML at line 3*",
        "*'Unknown field'*does not convert to KQL: unknown field 'Nope'*",
        "*'Unknown field'*validator error(s): sigmahq_invalid_fieldname*field=Nope*",
    ):
        result.stdout.fnmatch_lines([line])


def test_kql_rule_with_sibling_expectations(project: pytest.Pytester) -> None:
    write(
        project,
        "cron.kql",
        'DeviceProcessEvents\n| where ProcessCommandLine has "4b1f0c7e"\n'
        "| project ReportId, ProcessCommandLine\n",
    )
    write(project, "cron.yml", "title: Cron KQL\n" + EXPECT)
    write(project, "summary.kql", "DeviceProcessEvents | summarize count() by AccountName\n")
    write(project, "summary.yml", "title: Summary\nctirealm:\n    max_false_positives: 0\n")
    result = project.runpytest("-v")
    result.assert_outcomes(passed=3 + 2, failed=1)
    result.stdout.fnmatch_lines(["*cron.kql::parse PASSED*"])
    result.stdout.fnmatch_lines(["*cron.kql::true_positives PASSED*"])
    result.stdout.fnmatch_lines(
        [
            "*'Summary'*raised 3 false positives (max_false_positives: 0): 0 hard negatives, "
            "0 background, 3 rows traced to no event (the result has no id column*ReportId*"
        ]
    )


NEIGHBOUR = """\
id: aks_009
platform: aks
title: Workload that also schedules things
objective: Detect a certificate signing request created by a developer outside provisioning.
reports: [linux-cron]
ground_truth:
  techniques: [{technique}]
  tables: [AKSAudit]
  attack_events:
    AKSAudit: [9a1c6f0e-0001-4c1e-9b7e-1c0de0000001]
"""
BOTH = (
    'union DeviceProcessEvents, AKSAudit\n| where ProcessCommandLine has "4b1f0c7e" '
    'or Verb == "create"\n| project ReportId, AuditId\n'
)


@pytest.mark.parametrize(("technique", "outcome"), [("T1053.007", "passed"), ("T1552.007", "failed")])
def test_another_cases_attack_is_a_false_positive_unless_a_technique_is_shared(
    project: pytest.Pytester, technique: str, outcome: str
) -> None:
    (project.path / "cases" / "aks").mkdir()
    (project.path / "cases" / "aks" / "aks_009.yaml").write_text(NEIGHBOUR.format(technique=technique))
    write(project, "both.kql", BOTH)
    write(project, "both.yml", "title: Both\n" + EXPECT)
    result = project.runpytest("-v")
    # linux_003 is T1053.003: aks_009's event is neutral under T1053.007, a false positive else.
    result.stdout.fnmatch_lines([f"*both.kql::false_positives {outcome.upper()}*"])
    if outcome == "failed":
        result.stdout.fnmatch_lines(
            [
                "*'Both'*raised 1 false positives (max_false_positives: 0): 0 hard negatives, "
                "0 background, 1 attack events of cases sharing no technique, e.g. AKSAudit "
                "9a1c6f0e-0001-4c1e-9b7e-1c0de0000001 [[]attack]*"
            ]
        )
    result.stdout.fnmatch_lines(["*both.kql::true_positives PASSED*"])
