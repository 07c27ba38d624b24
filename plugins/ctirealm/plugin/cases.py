"""Benchmark cases as test items: the cases plugin's hooks and fixtures.

``cases/aks/aks_003.yaml::aks_003::C1_attack_mapping`` runs the agent once per
case (and epoch) through the ``realm_run`` fixture, scores every checkpoint,
and passes when its checkpoint reaches ``realm_pass_ratio`` of its maximum.
Scores travel in ``item.user_properties`` (so JUnit XML carries them and they
cross xdist workers). The items are `case_items`; the session's state and its
outputs (``results.json``, reports, the terminal summary) are `session`; the
options are `settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ..agents import AgentSpecError, resolve_agent
from ..cases import PLATFORMS, Case, CaseSet
from ..scoring import CHECKPOINTS
from . import benchmark_requested, cases_root
from .case_items import CaseFile
from .session import CaseRun, realm_session, start_session
from .settings import add_options, marker_name, settings


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for platform in PLATFORMS:
        config.addinivalue_line("markers", f"{platform}: ctirealm {platform} cases")
    for subset in ("realm-25", "realm-50"):
        config.addinivalue_line("markers", f"{marker_name(subset)}: cases in the {subset} subset")
    config.addinivalue_line("markers", "realm_case(id): a ctirealm benchmark case")
    start_session(config)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    # One case's items must share a worker so its agent runs once. A case is one file, so
    # `loadfile` groups them (and a rule file's items, which share one evaluation). Not
    # `loadgroup`: with pytest 9.2 and xdist 3.8 it silently stops grouping (xdist#1386).
    args = " ".join(config.invocation_params.args)
    if (
        getattr(config.option, "numprocesses", None)
        and "--dist" not in args
        and "-d " not in args
        and benchmark_requested(config)
    ):
        config.option.dist = "loadfile"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    root = cases_root(parent.config)
    if file_path.suffix == ".yaml" and file_path.parent.parent == root and file_path.parent.name in PLATFORMS:
        return CaseFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    subset = settings(config).subset
    if subset:
        kept: list[pytest.Item] = []
        dropped: list[pytest.Item] = []
        for item in items:
            case = getattr(item, "realm_case", None)
            (dropped if case is not None and subset not in case.subsets else kept).append(item)
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = kept
    # Sorted, so every xdist worker sees the same order.
    order = {name: i for i, name in enumerate(CHECKPOINTS)}
    items.sort(
        key=lambda it: (
            (
                str(it.path),
                getattr(it, "realm_epoch", 0),
                order.get(getattr(it, "realm_checkpoint", ""), -1),
                it.name,
            )
            if hasattr(it, "realm_case")
            else (str(it.path), 0, -1, it.nodeid)
        )
    )


# -- fixtures -----------------------------------------------------------------


@pytest.fixture(scope="session")
def realm_cases(pytestconfig: pytest.Config) -> CaseSet:
    """Every case and report of the benchmark."""
    return realm_session(pytestconfig).case_set()


@pytest.fixture(scope="session")
def realm_agent(pytestconfig: pytest.Config, realm_cases: CaseSet) -> Any:
    """The agent under test, from ``--realm-agent``; override in conftest.py to supply your own."""
    options = {
        "base_url": pytestconfig.getoption("--realm-base-url"),
        "temperature": pytestconfig.getoption("--realm-temperature"),
    }
    realm_session(pytestconfig).agent_from_spec = True
    try:
        return resolve_agent(
            settings(pytestconfig).agent, realm_cases, **{k: v for k, v in options.items() if v is not None}
        )
    except AgentSpecError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.fixture
def realm_case(request: pytest.FixtureRequest) -> Case:
    """The case of the current checkpoint item."""
    return request.node.realm_case


@pytest.fixture
def realm_run(request: pytest.FixtureRequest, realm_agent: Any, realm_cases: CaseSet) -> CaseRun:
    """Runs the agent once per case and epoch (cached for the session) and scores it."""
    node = request.node
    return realm_session(request.config).run(realm_agent, realm_cases, node.realm_case, node.realm_epoch)
