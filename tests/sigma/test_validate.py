"""Offline validation: shipped data, no network, deterministic issues, the syntax score."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

from ctirealm.sigma import validate as validate_module
from ctirealm.sigma.validate import (
    Issue,
    ValidationResult,
    configure_offline,
    syntax_score,
    validate,
    validate_many,
)

GOOD = textwrap.dedent("""\
    title: Crontab Replaced From a Temporary Directory
    id: 2b4c6d8e-1f3a-4b5c-9d7e-0a1b2c3d4e5f
    status: test
    description: Detects crontab being loaded from a file in /tmp, a common persistence step.
    author: ctirealm
    date: 2026-03-01
    tags:
        - attack.execution
        - attack.persistence
        - attack.privilege-escalation
        - attack.t1053.003
    logsource:
        product: linux
        category: process_creation
    detection:
        selection:
            Image|endswith: '/crontab'
            CommandLine|contains: '/tmp/'
        condition: selection
    falsepositives:
        - Administrators staging crontabs in /tmp
    level: medium
""")


@pytest.fixture(scope="module")
def no_network(tmp_path_factory: pytest.TempPathFactory):
    """Any socket use fails; the loaders are seeded into a fresh, empty cache directory."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted during validation")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "create_connection", refuse)
        patch.setattr(socket, "getaddrinfo", refuse)
        configure_offline(tmp_path_factory.mktemp("pysigma-cache"), force=True)
        patch.setattr(validate_module, "_DEFAULT", None)
        yield
    configure_offline(force=True)


def test_validation_is_offline_and_clean_for_a_good_rule(no_network: None) -> None:
    result = validate(GOOD)
    assert result.parsed and result.ok, result.issues
    assert result.score == 1.0


def test_attack_tags_are_checked_against_shipped_data(no_network: None) -> None:
    bad = GOOD.replace("attack.t1053.003", "attack.t9999")
    result = validate(bad)
    assert any(i.validator == "attacktag" and "t9999" in i.details for i in result.issues)
    assert result.score == pytest.approx(
        1 - 0.10 * len(result.warnings) - 0.05 * len(result.notes) - 0.25 * len(result.errors)
    )


def test_native_columns_are_valid_field_names(no_network: None) -> None:
    native = GOOD.replace("CommandLine|contains", "ProcessCommandLine|contains")
    assert not [i for i in validate(native).issues if "fieldname" in i.validator]
    typo = GOOD.replace("CommandLine|contains", "CommandLin|contains")
    assert any(i.validator == "sigmahq_invalid_fieldname" for i in validate(typo).errors)


def test_one_malformed_file_does_not_stop_the_others(tmp_path: Path, no_network: None) -> None:
    (tmp_path / "a.yml").write_text(GOOD)
    (tmp_path / "b.yml").write_text("title: broken\ndetection: [\n")
    (tmp_path / "c.yml").write_text(GOOD.replace("2b4c6d8e", "3b4c6d8e"))
    results = validate_many(sorted(tmp_path.glob("*.yml")))
    assert [r.parsed for r in results] == [True, False, True]
    assert "invalid YAML" in results[1].error and results[1].score == 0.0


def test_issues_are_sorted_deterministically(no_network: None) -> None:
    messy = GOOD.replace("attack.t1053.003", "attack.t9999").replace("level: medium", "level: x")
    first = [str(i) for i in validate(messy).issues]
    assert first == [str(i) for i in validate(messy).issues]
    ranks = ["error", "warning", "note"]
    levels = [i.level for i in validate(messy).issues]
    assert levels == sorted(levels, key=ranks.index)


def test_score_formula() -> None:
    issues = [Issue("x", "high", "d"), Issue("y", "medium", "d"), Issue("z", "low", "d")]
    assert syntax_score(ValidationResult("r", True, None, issues)) == pytest.approx(0.6)
    assert syntax_score(ValidationResult("r", False, "bad")) == 0.0
    assert syntax_score(ValidationResult("r", True, None, [Issue("x", "high", "d")] * 5)) == 0.0


def test_a_runs_own_tables_name_the_valid_columns(
    no_network: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run from a folder without telemetry/ (as a team's repository runs with
    --realm-telemetry): the columns come from the schemas given, not the working directory."""
    from ctirealm.telemetry.schema import load_schemas
    from tests.helpers import ROOT

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CTIREALM_TELEMETRY", raising=False)
    schemas = load_schemas(ROOT / "telemetry" / "schemas")
    native = GOOD.replace("CommandLine|contains", "InitiatingProcessCommandLine|contains")
    assert not [i for i in validate(native, schemas=schemas).issues if "fieldname" in i.validator]
    # The same rule, with tables that have no such column: the validator says so.
    bare = {"DeviceProcessEvents": [("Timestamp", "datetime"), ("FileName", "string")]}
    assert any(i.validator == "sigmahq_invalid_fieldname" for i in validate(native, schemas=bare).errors)
