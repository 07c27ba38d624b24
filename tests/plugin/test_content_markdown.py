"""Defender hunting queries kept in Markdown: one group of hunting items per KQL block."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ctirealm.plugin.content import content_kind
from ctirealm.plugin.content_markdown import query_blocks, slug
from tests.plugin.content_project import MATCH_CSV

PAGE = textwrap.dedent("""\
    # Reverse shells

    Shells whose standard streams go to a TCP socket.

    ## Shells talking to /dev/tcp

    ```kql
    DeviceProcessEvents
    | where ProcessCommandLine has "/dev/tcp/"
    | project Timestamp, DeviceName, AccountName, ProcessCommandLine, ReportId
    ```

    Run it over 30 days. A Python snippet that is not a query:

    ```python
    print("DeviceProcessEvents")
    ```

    ## Counted by account

    ~~~Kusto
    DeviceProcessEvents
    | where ProcessCommandLine has "/dev/tcp/"
    | summarize count() by AccountName
    | where
    ~~~
    """)


def test_blocks_headings_and_lines() -> None:
    blocks = query_blocks(PAGE)
    assert [(b.heading, b.line) for b in blocks] == [
        ("Shells talking to /dev/tcp", 8),
        ("Counted by account", 22),
    ]
    assert blocks[0].query.startswith("DeviceProcessEvents\n| where")
    assert blocks[1].query.endswith("| where\n")
    # An unclosed fence runs to the end; a block under no heading is named by its line.
    assert query_blocks("intro\n```kusto\nT | take 1\n")[0].query == "T | take 1\n"
    assert query_blocks("```kql\nT\n```\n")[0].heading == ""
    assert query_blocks("```\nT\n```\n````md\n```kql\nT\n```\n````\n") == []
    assert slug("Shells talking to /dev/tcp") == "shells-talking-to-dev-tcp"


def test_only_pages_with_kql_blocks_are_content(tmp_path: Path) -> None:
    page, readme = tmp_path / "hunts.md", tmp_path / "README.md"
    page.write_text(PAGE)
    readme.write_text("# Hunting\n\n```sh\npytest\n```\n")
    assert content_kind(page) == "markdown"
    assert content_kind(readme) is None


@pytest.mark.slow
def test_each_block_is_a_hunting_query(project: pytest.Pytester) -> None:
    (project.path / "detections" / "hunts.md").write_text(PAGE)
    (project.path / "detections" / "README.md").write_text("# Our hunts\n\nNo queries here.\n")
    match = project.path / "detections" / "hunts.tests" / "shells-talking-to-dev-tcp" / "match"
    match.mkdir(parents=True)
    (match / "DeviceProcessEvents.csv").write_text(MATCH_CSV)
    result = project.runpytest("-v", "-rs")
    result.stdout.fnmatch_lines(
        [
            "*hunts.md::Shells talking to /dev/tcp::parse PASSED*",
            "*hunts.md::Shells talking to /dev/tcp::runs PASSED*",
            "*hunts.md::Shells talking to /dev/tcp::true_positives PASSED*",
        ],
        consecutive=False,
    )
    result.stdout.fnmatch_lines(["*hunts.md::Counted by account::parse FAILED*"])
    # The failure names the file and the block's line, and the position in the file.
    result.stdout.fnmatch_lines(
        [
            "'Counted by account' (detections/hunts.md, line 22): the query "
            "does not translate: syntax error at line 25, column 1 of the "
            "file: *"
        ]
    )
    result.stdout.fnmatch_lines(["*detections/hunts.md:22: the query does not run (see the runs check)*"])
    result.assert_outcomes(passed=3, failed=2, skipped=1)


def test_a_page_with_one_block_keeps_its_test_data_beside_it(project: pytest.Pytester) -> None:
    page = '# Reverse shell\n\n```kql\nDeviceProcessEvents | where ProcessCommandLine has "4444"\n```\n'
    (project.path / "detections" / "shell.md").write_text(page)
    match = project.path / "detections" / "shell.tests" / "match"
    match.mkdir(parents=True)
    (match / "DeviceProcessEvents.csv").write_text(MATCH_CSV)
    (project.path / "detections" / "other.md").write_text(page.replace("4444", "443"))
    result = project.runpytest("-v", "-rs")
    result.stdout.fnmatch_lines(
        ["'Reverse shell' (detections/shell.md, line 4): missed 1 of 2 must-match events: *"]
    )
    result.stdout.fnmatch_lines(["*untested: no must-match events in detections/other.tests/match/*"])
    result.assert_outcomes(passed=4, failed=1, skipped=1)
