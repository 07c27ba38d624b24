"""Bad files through the whole plugin: each names its file, line or field, fails only the case
that needs it, and every other case still runs and is scored."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import mini_project

PROCESS = Path("telemetry/attack/linux_001/DeviceProcessEvents.jsonl")
BENIGN = Path("telemetry/benign/linux_001/DeviceProcessEvents.jsonl")
CASE = Path("cases/linux/linux_001.yaml")


@pytest.fixture
def project(pytester: pytest.Pytester, store_cache: Path) -> pytest.Pytester:
    return mini_project(pytester, store_cache, "realm_agent = oracle")


def _truncate(root: Path) -> None:
    text = (root / PROCESS).read_text()
    (root / PROCESS).write_text(text[: len(text) - 25])  # the last line cut short, no newline


def _bad_row(root: Path) -> None:
    with (root / BENIGN).open("a") as out:
        out.write('{"Timestamp": "2026-03-05T10:00:00Z", "ReportId": 999000111222, "Shell": "sh"}\n')


def _clashing_id(root: Path) -> None:
    row = json.loads((root / PROCESS).read_text().splitlines()[0])
    with (root / BENIGN).open("a") as out:
        out.write(json.dumps(row) + "\n")


def _broken_schema(root: Path) -> None:
    (root / "telemetry/schemas/DeviceProcessEvents.json").write_text('{"table": "DeviceProcessEvents"')


def _missing_schema(root: Path) -> None:
    (root / "telemetry/schemas/DeviceProcessEvents.json").unlink()


def _edit_case(old: str, new: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        text = (root / CASE).read_text()
        assert old in text
        (root / CASE).write_text(text.replace(old, new))

    return edit


# (how to break linux_001, its failing item, fragments of the message that must name the place)
BREAKS = {
    "truncated-jsonl": (
        _truncate,
        "telemetry",
        [
            f"{PROCESS}:2: invalid JSON at column",
            "(truncated line?)",
            "ground_truth.attack_events.DeviceProcessEvents: 2 of 2 ids are not attack events",
        ],
    ),
    "malformed-row": (
        _bad_row,
        "telemetry",
        [
            f"{BENIGN}:4: column 'Shell' is not in DeviceProcessEvents",
            "ground_truth.hard_negatives.DeviceProcessEvents: 3 of 3 ids are not hard negative events",
        ],
    ),
    "clashing-id": (_clashing_id, "telemetry", [f"{BENIGN}:4: ReportId 418275039461 already used at"]),
    "broken-schema": (
        _broken_schema,
        "telemetry",
        [
            "telemetry/schemas/DeviceProcessEvents.json: invalid JSON",
            f"{PROCESS}: the schema of DeviceProcessEvents did not load",
        ],
    ),
    "missing-schema": (
        _missing_schema,
        "load",
        [f"{CASE.name}: ground_truth.tables: unknown table 'DeviceProcessEvents'"],
    ),
    "unknown-technique": (
        _edit_case("techniques: [T1053.003]", "techniques: [T9999.123]"),
        "load",
        [f"{CASE.name}: ground_truth.techniques: 'T9999.123' is not an ATT&CK technique"],
    ),
    "unknown-event": (
        _edit_case("[418275039461, 527193846120]", "[418275039461, 527193846999]"),
        "telemetry",
        [
            "ground_truth.attack_events.DeviceProcessEvents: 1 of 2 ids are not attack events in the "
            "telemetry: 527193846999"
        ],
    ),
    "malformed-yaml": (
        lambda root: (root / CASE).write_text("id: linux_001\nplatform: [linux\n"),
        "load",
        [f"{CASE.name}: invalid YAML"],
    ),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_a_bad_file_fails_only_its_case(project: pytest.Pytester, name: str) -> None:
    breaker, item, fragments = BREAKS[name]
    breaker(project.path)
    result = project.runpytest()
    # the broken case is one failing item with the whole reason; the other case runs in full
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed") == 1 and outcomes.get("passed") == 6, result.stdout.str()
    result.stdout.fnmatch_lines([f"FAILED {CASE}::{item}*"])
    text = result.stdout.str()
    for fragment in fragments:
        assert fragment in text, fragment
    results = json.loads((project.path / "reports" / "results.json").read_text())
    assert [c["id"] for c in results["cases"]] == ["aks_001"]
    assert results["summary"]["normalized_score"] > 0.9
    # nothing is lost: results.json names what was left out and what it stopped
    listed = "\n".join(p["message"] for p in results["problems"])
    assert fragments[0].split(": ")[0] in listed
    assert all(p["kind"] in ("case", "telemetry") for p in results["problems"])


def test_a_case_left_without_telemetry_is_selected_like_its_checkpoints(project: pytest.Pytester) -> None:
    _truncate(project.path)
    assert project.runpytest("-m", "aks").parseoutcomes() == {"passed": 6, "deselected": 1}
    outcomes = project.runpytest("-m", "linux").parseoutcomes()
    assert outcomes["failed"] == 1 and "passed" not in outcomes


def test_left_out_telemetry_fails_the_rules_that_need_it(project: pytest.Pytester) -> None:
    _truncate(project.path)
    result = project.runpytest("cases", "rules")
    failed = {line.split()[1] for line in result.stdout.lines if line.startswith("FAILED")}
    assert failed == {
        f"{CASE}::telemetry",
        *(
            f"rules/linux/{f}::{c}"
            for f in ("linux_001.kql", "linux_001_sigma.yml")
            for c in ("true_positives", "false_positives")
        ),
    }
    result.stdout.fnmatch_lines(
        [
            f"*case linux_001 cannot be checked: telemetry left out of the store: {PROCESS}:2: invalid JSON*",
            "*left out of this run (1; not scored, listed in results.json):*",
            f"*{PROCESS}:2: invalid JSON*[[]cases: linux_001[]]",
        ]
    )
    results = json.loads((project.path / "reports" / "results.json").read_text())
    assert results["problems"] == [
        {
            "kind": "telemetry",
            "path": str(PROCESS),
            "line": 2,
            "message": results["problems"][0]["message"],
            "cases": ["linux_001"],
        }
    ]
    rules = {r["path"]: r["status"] for r in results["rules"]}
    assert rules["rules/aks/aks_001.kql"] == "passed" and rules["rules/linux/linux_001.kql"] == "failed"
    summary = (project.path / "reports" / "summary.md").read_text()
    assert f"{PROCESS}:2: invalid JSON" in summary and "(stops linux_001)" in summary
    assert 'id="problems"' in (project.path / "reports" / "score.html").read_text()


def test_the_cli_build_names_left_out_files_and_exits_1(
    project: pytest.Pytester, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ctirealm.cli import main

    args = [
        "telemetry",
        "build",
        "--telemetry",
        str(project.path / "telemetry"),
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    assert main(args) == 0
    _truncate(project.path)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"left out of the store: {project.path / PROCESS}:2: invalid JSON" in err
    info = [
        "telemetry",
        "info",
        "--json",
        "--telemetry",
        str(project.path / "telemetry"),
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    assert main(info) == 0
    listed = json.loads(capsys.readouterr().out)["problems"]
    assert [(p["path"], p["line"]) for p in listed] == [(str(PROCESS.relative_to("telemetry")), 2)]


def test_a_dataset_that_cannot_be_built_ends_the_run_with_one_message(project: pytest.Pytester) -> None:
    (project.path / "telemetry" / "dataset.yaml").write_text("window: {start: 2026-03-16}\n")
    result = project.runpytest("-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(
        [
            "*ctirealm: the telemetry store cannot be built: *dataset.yaml: "
            "window.start and window.end required*"
        ]
    )
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


@pytest.mark.slow
def test_without_a_dataset_each_item_says_why(project: pytest.Pytester) -> None:
    (project.path / "telemetry" / "dataset.yaml").unlink()
    result = project.runpytest("cases", "-n", "2")
    assert result.parseoutcomes() == {"failed": 2}
    result.stdout.fnmatch_lines(
        ["*the telemetry store cannot be built: *dataset.yaml: dataset file not found*"]
    )
    assert "INTERNALERROR" not in result.stdout.str()


@pytest.mark.slow
def test_unrelated_test_runs_never_touch_the_store(pytester: pytest.Pytester) -> None:
    # The plugin is active wherever it is installed: a project without a dataset, run with
    # xdist, must neither build nor fail on a store.
    pytester.makepyfile(test_plain="def test_one():\n    assert True\n")
    (pytester.path / "rules").mkdir()
    result = pytester.runpytest("-n", "2", "-p", "no:cacheprovider")
    assert result.ret == 0 and result.parseoutcomes() == {"passed": 1}


def _bench(project: pytest.Pytester, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).with_name("ctirealm")),
        "bench",
        "--workers",
        "2",
        "--cache-dir",
        str(tmp_path / "bench-cache"),
        "--",
        "--realm-agent=oracle",
    ]
    return subprocess.run(command, cwd=project.path, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_the_bench_writes_reports_and_fails_when_a_case_could_not_run(
    project: pytest.Pytester, tmp_path: Path
) -> None:
    done = _bench(project, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = project.path / "reports"
    for name in ("results.json", "score.html", "summary.md", "junit.xml", "telemetry.json"):
        assert (reports / name).is_file(), name
    assert json.loads((reports / "results.json").read_text())["problems"] == []
    _truncate(project.path)
    broken = _bench(project, tmp_path)
    assert broken.returncode == 1
    assert f"warning: left out of the store: telemetry/{PROCESS.relative_to('telemetry')}:2" in broken.stderr
    assert "1 problem(s) left cases out of this run:" in broken.stderr
    assert [c["id"] for c in json.loads((reports / "results.json").read_text())["cases"]] == ["aks_001"]
