"""The benchmark run's options and ini keys, read once per session into `Settings`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..scoring import MODES
from ..tools.toolbox import VARIANTS, parse_toolsets

SUBSETS = {"25": "realm-25", "50": "realm-50", "all": None}


def add_options(parser: pytest.Parser) -> None:
    """The benchmark's command-line options and ini keys."""
    group = parser.getgroup("ctirealm")
    group.addoption(
        "--realm-agent",
        default=None,
        metavar="SPEC",
        help="agent under test: baseline (default), oracle, null, python:mod:attr, "
        'command:"argv", mcp:COMMAND, openai:<model>, replay:<dir>, '
        "inspect:<log>",
    )
    group.addoption(
        "--realm-scoring",
        choices=MODES,
        default=None,
        help="strict (default, deterministic) or compat (the reference's formulas)",
    )
    group.addoption(
        "--realm-judge",
        default=None,
        metavar="MODEL",
        help="OpenAI-compatible model judging compat C0 and Sigma quality",
    )
    group.addoption(
        "--realm-subset", choices=sorted(SUBSETS), default=None, help="25, 50 or all (default all)"
    )
    group.addoption(
        "--realm-variant",
        choices=sorted(VARIANTS),
        default=None,
        help="full (default), minimal (no CTI/ATT&CK/Sigma tools) or seeded",
    )
    group.addoption(
        "--realm-tools",
        default=None,
        metavar="+TOOLSET",
        help="opt-in toolsets beside the variant's tools: +sandbox (bash and python "
        "without network, under bubblewrap)",
    )
    group.addoption("--realm-epochs", type=int, default=None, metavar="N", help="runs per case (default 1)")
    group.addoption(
        "--realm-min-score",
        type=float,
        default=None,
        metavar="X",
        help="fail the session when the normalised score is below X",
    )
    group.addoption(
        "--realm-report-dir",
        default=None,
        metavar="DIR",
        help="where results.json, trajectories and reports go (default reports/)",
    )
    group.addoption(
        "--realm-engine", default=None, metavar="URL", help="local (default) or kusto://HOST/DATABASE"
    )
    group.addoption(
        "--realm-agent-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wall-time limit per case (default 600)",
    )
    group.addoption("--realm-base-url", default=None, help="base URL of an OpenAI-compatible API")
    group.addoption("--realm-temperature", type=float, default=None, help="sampling temperature")
    parser.addini("realm_agent", "default agent spec", default="baseline")
    parser.addini("realm_scoring", "default scoring mode", default="strict")
    parser.addini("realm_subset", "default subset", default="all")
    parser.addini("realm_variant", "default tool variant", default="full")
    parser.addini("realm_tools", "opt-in toolsets (e.g. +sandbox)", default="")
    parser.addini("realm_epochs", "default runs per case", default="1")
    parser.addini("realm_pass_ratio", "share of a checkpoint's maximum an item needs to pass", default="0.5")
    parser.addini("realm_report_dir", "report directory, relative to rootdir", default="reports")
    parser.addini("realm_agent_timeout", "wall-time limit per case in seconds", default="600")
    parser.addini("realm_max_tool_calls", "tool-call limit per case", default="200")


def _opt(config: pytest.Config, option: str, ini: str) -> Any:
    value = config.getoption(option)
    return value if value is not None else config.getini(ini)


@dataclass(frozen=True)
class Settings:
    """One session's run settings: options over ini keys over defaults."""

    agent: str
    scoring: str
    subset: str | None
    variant: str
    toolsets: tuple[str, ...]
    epochs: int
    pass_ratio: float
    report_dir: Path
    time_limit: float
    max_tool_calls: int
    min_score: float | None

    @classmethod
    def of(cls, config: pytest.Config) -> Settings:
        subset = str(_opt(config, "--realm-subset", "realm_subset"))
        if subset not in SUBSETS:
            raise pytest.UsageError(f"realm_subset must be one of {sorted(SUBSETS)}, got {subset!r}")
        report = Path(str(_opt(config, "--realm-report-dir", "realm_report_dir")))
        try:
            toolsets = parse_toolsets(str(_opt(config, "--realm-tools", "realm_tools")))
        except ValueError as exc:
            raise pytest.UsageError(f"--realm-tools: {exc}") from None
        return cls(
            agent=str(_opt(config, "--realm-agent", "realm_agent")),
            scoring=str(_opt(config, "--realm-scoring", "realm_scoring")),
            subset=SUBSETS[subset],
            variant=str(_opt(config, "--realm-variant", "realm_variant")),
            toolsets=toolsets,
            epochs=max(1, int(_opt(config, "--realm-epochs", "realm_epochs"))),
            pass_ratio=float(config.getini("realm_pass_ratio")),
            report_dir=report if report.is_absolute() else Path(config.rootpath) / report,
            time_limit=float(_opt(config, "--realm-agent-timeout", "realm_agent_timeout")),
            max_tool_calls=int(config.getini("realm_max_tool_calls")),
            min_score=config.getoption("--realm-min-score"),
        )


_SETTINGS = pytest.StashKey[Settings]()


def settings(config: pytest.Config) -> Settings:
    if _SETTINGS not in config.stash:
        config.stash[_SETTINGS] = Settings.of(config)
    return config.stash[_SETTINGS]


def marker_name(name: str) -> str:
    """A subset's name as a pytest marker (``realm-25`` -> ``realm_25``)."""
    return re.sub(r"\W", "_", name)
