"""Case and report files: valid ones load, each kind of mistake names its file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ctirealm.cases import CaseError, load_cases, parse_case, parse_report

REPORT = """---
id: linux-cron-persistence
title: Cron persistence in cryptomining campaigns
tags: [Linux, persistence]
published: 2024-05-14
source_urls: [https://attack.mitre.org/techniques/T1053/003/]
---
Attackers add cron entries so that their miner restarts.
"""

CASE = {
    "id": "linux_003",
    "platform": "linux",
    "title": "Cron persistence",
    "objective": "Write a detection rule to identify cron persistence by monitoring crontab writes.",
    "reports": ["linux-cron-persistence"],
    "subsets": ["realm-25", "realm-50"],
    "difficulty": "medium",
    "ground_truth": {
        "techniques": ["T1053.003"],
        "tables": ["DeviceProcessEvents"],
        "regex_patterns": {"ProcessCommandLine": ".*4b1f0c7e.*"},
        "attack_events": {"DeviceProcessEvents": [482913377104]},
        "hard_negatives": {"DeviceProcessEvents": [771029384455]},
    },
    "solution": {"sigma": "rules/linux/linux_003_sigma.yml", "kql": "rules/linux/linux_003.kql"},
}
TABLES = {"DeviceProcessEvents", "DeviceFileEvents"}


def write_case(root: Path, doc: dict, name: str | None = None) -> Path:
    path = root / doc.get("platform", "linux") / f"{name or doc['id']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_a_valid_case_and_report_load(tmp_path: Path) -> None:
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "linux-cron-persistence.md").write_text(REPORT)
    write_case(tmp_path, CASE)
    found = load_cases(tmp_path, tables=TABLES)
    assert not found.errors
    case = found.cases["linux_003"]
    assert case.ground_truth.attack_events == {"DeviceProcessEvents": ("482913377104",)}
    assert case.subsets == ("realm-25", "realm-50")
    report = found.reports["linux-cron-persistence"]
    assert (
        report.tags == ("linux", "persistence") and report.written == "2024-05-14"
    )  # the older `published:`
    assert found.tags() == {"linux": 1, "persistence": 1}
    assert [c.id for c in found.select(subset="realm-25", platform="linux")] == ["linux_003"]


def _with(path: str, value: object) -> dict:
    doc = yaml.safe_load(yaml.safe_dump(CASE))
    target = doc
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[key]
    if value is None:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "field", "message"),
    [
        ("objective", None, "objective", "required field is missing"),
        ("platform", "windows", "platform", "is not one of"),
        ("ground_truth.techniques", ["T9999"], "ground_truth.techniques", "not an ATT&CK technique"),
        ("ground_truth.tables", ["DeviceEvents"], "ground_truth.tables", "unknown table"),
        ("ground_truth.regex_patterns", {"X": "(["}, "ground_truth.regex_patterns.X", "invalid regex"),
        ("ground_truth.attack_events", {"Nope": [1]}, "ground_truth.attack_events.Nope", "unknown table"),
        ("difficulty", "trivial", "difficulty", "is not one of"),
        ("id", "linux_004", "id", "does not match the file name"),
        ("guidance", ["a", "list"], "guidance", "expected text"),
    ],
)
def test_case_errors_name_file_and_field(
    tmp_path: Path, path: str, value: object, field: str, message: str
) -> None:
    case_path = write_case(tmp_path, _with(path, value), name="linux_003")
    with pytest.raises(CaseError) as info:
        parse_case(case_path, tables=TABLES)
    assert info.value.field == field
    assert str(info.value).startswith(f"{case_path}: {field}: ")
    assert message in str(info.value)


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    bad = tmp_path / "linux" / "linux_001.yaml"
    bad.parent.mkdir()
    bad.write_text("id: linux_001\nobjective: [unclosed\n")
    with pytest.raises(CaseError, match=r"invalid YAML at line \d+"):
        parse_case(bad)


def test_one_bad_case_does_not_hide_the_others(tmp_path: Path) -> None:
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "linux-cron-persistence.md").write_text(REPORT)
    write_case(tmp_path, CASE)
    write_case(tmp_path, {**_with("objective", None), "id": "linux_004"})
    write_case(tmp_path, {**CASE, "id": "linux_005", "reports": ["missing-report"]})
    found = load_cases(tmp_path, tables=TABLES)
    assert list(found.cases) == ["linux_003"]
    assert sorted(Path(e.path).name for e in found.errors) == ["linux_004.yaml", "linux_005.yaml"]


def test_report_without_front_matter_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "x.md"
    path.write_text("just text")
    with pytest.raises(CaseError, match="front matter"):
        parse_report(path)


def test_the_seeded_variant_is_given_the_guidance(tmp_path: Path) -> None:
    """Two tiers: the terse objective by default, the longer guidance in ``seeded``."""
    from ctirealm.agents.base import Task

    class NoTools:  # Task.for_case reads only the tool specs
        def specs(self) -> list:
            return []

    guidance = "Write a detection for crontab entries that fetch and run remote scripts."
    case = parse_case(write_case(tmp_path, {**CASE, "guidance": guidance}), tables=TABLES)
    assert case.objective_for("full") == case.objective_for("minimal") == CASE["objective"]
    assert case.objective_for("seeded") == guidance
    plain = parse_case(write_case(tmp_path / "plain", CASE), tables=TABLES)
    assert plain.objective_for("seeded") == CASE["objective"]
    for variant, expected in (("full", CASE["objective"]), ("seeded", guidance)):
        task = Task.for_case(case, NoTools(), variant=variant)  # type: ignore[arg-type]
        assert task.objective == expected and task.user_message.endswith(expected)
