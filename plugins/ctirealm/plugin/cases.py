"""Benchmark cases as test items: one group per case, one item per checkpoint.

``cases/aks/aks_003.yaml::aks_003::C1_attack_mapping`` runs the agent once per
case (and epoch) through the ``realm_run`` fixture, scores every checkpoint,
and passes when its checkpoint reaches ``realm_pass_ratio`` of its maximum.
Scores travel in ``item.user_properties`` (so JUnit XML carries them and they
cross xdist workers); each worker also writes its case results under
``<report-dir>/.parts``, which the controller merges into ``results.json``.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from .. import __version__
from ..agents import AgentSpecError, resolve_agent, trajectory_path
from ..cases import PLATFORMS, Case, CaseError, CaseSet, load_cases, parse_case
from ..report.load import generalisation
from ..scoring import CHECKPOINTS, MODES, CaseScore, summarize
from ..scoring.run import RunSettings, run_agent, score_on
from ..tools import Trajectory
from ..tools.toolbox import VARIANTS, parse_toolsets
from . import (
    StoreUnavailable,
    benchmark_requested,
    cases_root,
    dataset_splits,
    scoring_split,
    session_engine,
    session_store,
    split_engine,
)
from .problems import case_problems, known_tables, run_problems

SUBSETS = {"25": "realm-25", "50": "realm-50", "all": None}
_RUNS = pytest.StashKey[dict[tuple[str, int], "CaseRun"]]()
_SESSION = pytest.StashKey[str]()
_RULES = pytest.StashKey[dict[str, dict[str, Any]]]()
_CASESET = pytest.StashKey[CaseSet]()
_STARTED = pytest.StashKey[str]()
#: Set when the plugin's own ``realm_agent`` fixture built the agent from ``--realm-agent``
#: (a conftest that overrides the fixture never runs it).
_AGENT_FROM_SPEC = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ctirealm")
    group.addoption("--realm-agent", default=None, metavar="SPEC",
                    help="agent under test: baseline (default), oracle, null, python:mod:attr, "
                         'command:"argv", mcp:COMMAND, openai:<model>, replay:<dir>, '
                         "inspect:<log>")
    group.addoption("--realm-scoring", choices=MODES, default=None,
                    help="strict (default, deterministic) or compat (the reference's formulas)")
    group.addoption("--realm-judge", default=None, metavar="MODEL",
                    help="OpenAI-compatible model judging compat C0 and Sigma quality")
    group.addoption("--realm-subset", choices=sorted(SUBSETS), default=None,
                    help="25, 50 or all (default all)")
    group.addoption("--realm-variant", choices=sorted(VARIANTS), default=None,
                    help="full (default), minimal (no CTI/ATT&CK/Sigma tools) or seeded")
    group.addoption("--realm-tools", default=None, metavar="+TOOLSET",
                    help="opt-in toolsets beside the variant's tools: +sandbox (bash and python "
                         "without network, under bubblewrap)")
    group.addoption("--realm-epochs", type=int, default=None, metavar="N",
                    help="runs per case (default 1)")
    group.addoption("--realm-min-score", type=float, default=None, metavar="X",
                    help="fail the session when the normalised score is below X")
    group.addoption("--realm-report-dir", default=None, metavar="DIR",
                    help="where results.json, trajectories and reports go (default reports/)")
    group.addoption("--realm-engine", default=None, metavar="URL",
                    help="local (default) or kusto://HOST/DATABASE")
    group.addoption("--realm-agent-timeout", type=float, default=None, metavar="SECONDS",
                    help="wall-time limit per case (default 600)")
    group.addoption("--realm-base-url", default=None, help="base URL of an OpenAI-compatible API")
    group.addoption("--realm-temperature", type=float, default=None, help="sampling temperature")
    parser.addini("realm_agent", "default agent spec", default="baseline")
    parser.addini("realm_scoring", "default scoring mode", default="strict")
    parser.addini("realm_subset", "default subset", default="all")
    parser.addini("realm_variant", "default tool variant", default="full")
    parser.addini("realm_tools", "opt-in toolsets (e.g. +sandbox)", default="")
    parser.addini("realm_epochs", "default runs per case", default="1")
    parser.addini("realm_pass_ratio", "share of a checkpoint's maximum an item needs to pass",
                  default="0.5")
    parser.addini("realm_report_dir", "report directory, relative to rootdir", default="reports")
    parser.addini("realm_agent_timeout", "wall-time limit per case in seconds", default="600")
    parser.addini("realm_max_tool_calls", "tool-call limit per case", default="200")


def _opt(config: pytest.Config, option: str, ini: str) -> Any:
    value = config.getoption(option)
    return value if value is not None else config.getini(ini)


@dataclass(frozen=True)
class Settings:
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


def _marker(name: str) -> str:
    return re.sub(r"\W", "_", name)


def pytest_configure(config: pytest.Config) -> None:
    for platform in PLATFORMS:
        config.addinivalue_line("markers", f"{platform}: ctirealm {platform} cases")
    for subset in ("realm-25", "realm-50"):
        config.addinivalue_line("markers", f"{_marker(subset)}: cases in the {subset} subset")
    config.addinivalue_line("markers", "realm_case(id): a ctirealm benchmark case")
    config.stash[_RUNS] = {}
    config.stash[_RULES] = {}
    config.stash[_STARTED] = datetime.now(UTC).isoformat(timespec="seconds")
    # Each session writes its case parts under its own id, so two sessions sharing a
    # report directory never mix their results.
    worker = getattr(config, "workerinput", None)
    config.stash[_SESSION] = worker["realm_session"] if worker and "realm_session" in worker \
        else uuid.uuid4().hex
    if worker is None:
        config.pluginmanager.register(RulesLog(config), "ctirealm-rules-log")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    node.workerinput["realm_session"] = node.config.stash[_SESSION]


def _parts_dir(config: pytest.Config) -> Path:
    return settings(config).report_dir / ".parts" / config.stash[_SESSION]


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    # One case's items must share a worker so its agent runs once. A case is one file, so
    # `loadfile` groups them (and a rule file's items, which share one evaluation). Not
    # `loadgroup`: with pytest 9.2 and xdist 3.8 it silently stops grouping (xdist#1386).
    args = " ".join(config.invocation_params.args)
    if getattr(config.option, "numprocesses", None) and "--dist" not in args and "-d " not in args \
            and benchmark_requested(config):
        config.option.dist = "loadfile"


def case_set(config: pytest.Config) -> CaseSet:
    if _CASESET not in config.stash:
        tables = known_tables(session_store(config))
        config.stash[_CASESET] = load_cases(cases_root(config), tables=tables)
    return config.stash[_CASESET]


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    root = cases_root(parent.config)
    if (file_path.suffix == ".yaml" and file_path.parent.parent == root
            and file_path.parent.name in PLATFORMS):
        return CaseFile.from_parent(parent, path=file_path)
    return None


class CaseFile(pytest.File):
    """``cases/<platform>/<id>.yaml``: one case collector.

    A case that cannot run becomes one failing item instead of its checkpoints:
    ``load`` for a bad case file, ``telemetry`` for a case whose events were left
    out of the store (a bad telemetry file) or are missing from it.
    """

    def collect(self) -> list[pytest.Item | pytest.Collector]:
        config = self.config
        try:
            found = case_set(config)
            case = found.cases.get(self.path.stem)
            if case is None:
                error = next((e for e in found.errors if Path(e.path) == self.path), None)
                raise error or parse_case(self.path)  # type: ignore[misc]
        except CaseError as exc:
            return [BrokenCase.from_parent(self, name="load", error=str(exc))]
        except StoreUnavailable as exc:
            return [BrokenCase.from_parent(self, name="telemetry", error=str(exc))]
        problems = case_problems(config, case)
        if problems:
            error = f"{case.id} cannot be scored:\n" + "\n".join(f"  {m}" for m in problems)
            item = BrokenCase.from_parent(self, name="telemetry", error=error)
            item.realm_case = case  # selected like the case's checkpoints (-m, --realm-subset)
            for mark in _case_marks(case):
                item.add_marker(mark)
            return [item]
        return [CaseGroup.from_parent(self, name=case.id, case=case)]


class BrokenCase(pytest.Item):
    """A case that cannot run: fails with the reason (named file, line and field)."""

    def __init__(self, *, error: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error

    def runtest(self) -> None:
        raise CaseNotRunnable(self.error)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        return self.error

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, self.name


class CaseNotRunnable(Exception):
    """Raised by a `BrokenCase`: its message says which file, line or field stops the case."""


def _case_marks(case: Case) -> list[pytest.MarkDecorator]:
    """``realm_case(id)``, the platform and the subsets: how ``-m`` selects a case."""
    return [pytest.mark.realm_case(case.id), getattr(pytest.mark, case.platform),
            *(getattr(pytest.mark, _marker(subset)) for subset in case.subsets)]


class CaseGroup(pytest.Collector):
    """One case: its checkpoint items (times epochs)."""

    def __init__(self, *, case: Case, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        for mark in _case_marks(case):
            self.add_marker(mark)
        self.add_marker(pytest.mark.xdist_group(case.id))

    def collect(self) -> list[pytest.Item]:
        epochs = settings(self.config).epochs
        items = []
        for epoch in range(1, epochs + 1):
            for checkpoint in CHECKPOINTS:
                name = checkpoint if epochs == 1 else f"{checkpoint}[epoch{epoch}]"
                item = CheckpointItem.from_parent(self, name=name, callobj=_check_checkpoint)
                item.realm_case, item.realm_checkpoint, item.realm_epoch = self.case, checkpoint, epoch
                items.append(item)
        return items


class CheckpointItem(pytest.Function):
    realm_case: Case
    realm_checkpoint: str
    realm_epoch: int

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CheckpointFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)  # type: ignore[arg-type]


class CheckpointFailure(AssertionError):
    """A checkpoint below its pass ratio: the message is the graded breakdown."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    subset = settings(config).subset
    if subset:
        kept, dropped = [], []
        for item in items:
            case = getattr(item, "realm_case", None)
            (dropped if case is not None and subset not in case.subsets else kept).append(item)
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = kept
    # Sorted, so every xdist worker sees the same order.
    order = {name: i for i, name in enumerate(CHECKPOINTS)}
    items.sort(key=lambda it: (str(it.path), getattr(it, "realm_epoch", 0),
                               order.get(getattr(it, "realm_checkpoint", ""), -1), it.name)
               if hasattr(it, "realm_case") else (str(it.path), 0, -1, it.nodeid))


# -- fixtures -----------------------------------------------------------------


@pytest.fixture(scope="session")
def realm_cases(pytestconfig: pytest.Config) -> CaseSet:
    """Every case and report of the benchmark."""
    return case_set(pytestconfig)


@pytest.fixture(scope="session")
def realm_agent(pytestconfig: pytest.Config, realm_cases: CaseSet) -> Any:
    """The agent under test, from ``--realm-agent``; override in conftest.py to supply your own."""
    options = {"base_url": pytestconfig.getoption("--realm-base-url"),
               "temperature": pytestconfig.getoption("--realm-temperature")}
    pytestconfig.stash[_AGENT_FROM_SPEC] = True
    try:
        return resolve_agent(settings(pytestconfig).agent, realm_cases,
                             **{k: v for k, v in options.items() if v is not None})
    except AgentSpecError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.fixture
def realm_case(request: pytest.FixtureRequest) -> Case:
    """The case of the current checkpoint item."""
    return request.node.realm_case


@dataclass
class CaseRun:
    trajectory: Trajectory
    score: CaseScore


@pytest.fixture
def realm_run(request: pytest.FixtureRequest, realm_agent: Any, realm_cases: CaseSet) -> CaseRun:
    """Runs the agent once per case and epoch (cached for the session) and scores it."""
    config = request.config
    case: Case = request.node.realm_case
    epoch: int = request.node.realm_epoch
    runs = config.stash[_RUNS]
    key = (case.id, epoch)
    if key not in runs:
        runs[key] = _run_and_score(config, realm_agent, realm_cases, case, epoch)
    return runs[key]


def _run_and_score(config: pytest.Config, agent: Any, cases: CaseSet, case: Case,
                   epoch: int) -> CaseRun:
    opts = settings(config)
    engine = session_engine(config)
    trajectory = run_agent(agent, case, cases, engine, RunSettings(
        variant=opts.variant, max_tool_calls=opts.max_tool_calls, toolsets=opts.toolsets,
        time_limit=opts.time_limit), epoch=epoch)
    # Final detections are scored on the held-out split; dev (what the agent queried) beside.
    split = scoring_split(config)
    score = _score(config, case, cases, trajectory, split)
    score.split = split
    if split != "dev" and opts.scoring == "strict":
        score.dev = _score(config, case, cases, trajectory, "dev")
    parts = _parts_dir(config)
    trajectory.save(trajectory_path(opts.report_dir / "trajectories", case.id, epoch))
    parts.mkdir(parents=True, exist_ok=True)
    entry = {**score.to_dict(), "title": case.title, "objective": case.objective,
             "ground_truth": {"techniques": list(case.ground_truth.techniques),
                              "tables": list(case.ground_truth.tables), "reports": list(case.reports)},
             "difficulty": case.difficulty, "subsets": list(case.subsets),
             "trajectory": {**_trajectory_summary(trajectory, engine.schemas),
                            # The --realm-agent spec, when it built the agent (not an override).
                            "agent_spec": opts.agent if config.stash.get(_AGENT_FROM_SPEC, False)
                            else None},
             "duration": trajectory.duration}
    (parts / f"{case.id}.e{epoch}.json").write_text(json.dumps(entry, default=str, indent=1),
                                                    encoding="utf-8")
    return CaseRun(trajectory, score)


def _score(config: pytest.Config, case: Case, cases: CaseSet, trajectory: Trajectory,
           split: str) -> CaseScore:
    """Every checkpoint of *case*, its final detections executed on *split*'s store."""
    return score_on(case, cases, trajectory, engine=split_engine(config, split),
                    labels=session_store(config, split).labels, mode=settings(config).scoring,
                    judge=_judge(config))


def _judge(config: pytest.Config) -> Any:
    model = config.getoption("--realm-judge")
    if not model:
        return None
    from ..scoring.judge import OpenAIJudge

    return OpenAIJudge(model, base_url=config.getoption("--realm-base-url"))


def _trajectory_summary(trajectory: Trajectory, tables: Iterable[str]) -> dict[str, Any]:
    """What results.json keeps of a trajectory; *tables* are the store's (explored ones are
    named from them)."""
    from ..scoring.strict import reports_read, tables_explored, techniques_found

    queries = [{"query": c.arguments.get("query", c.arguments.get("_raw", "")), "ok": c.ok,
                "rows": c.rows, "error": c.error, "duration": c.duration}
               for c in trajectory.tool_calls("execute_kql_query")]
    sub = trajectory.submission
    return {
        "agent": trajectory.agent, "status": trajectory.status, "reason": trajectory.reason,
        "tool_calls": len(trajectory.tool_calls()), "reports_read": reports_read(trajectory),
        "techniques_named": techniques_found(trajectory),
        "tables_explored": tables_explored(trajectory, tables),
        "queries": queries,
        "submission": sub.to_dict() if sub else None,
    }


def _check_checkpoint(realm_run: CaseRun, request: pytest.FixtureRequest) -> None:
    item = request.node
    score = realm_run.score
    checkpoint = score.checkpoints[item.realm_checkpoint]
    item.user_properties.extend([
        ("case", score.case_id), ("platform", score.platform), ("checkpoint", checkpoint.name),
        ("epoch", score.epoch), ("score", None if checkpoint.score is None else round(checkpoint.score, 4)),
        ("max_score", checkpoint.max), ("status", score.status),
    ])
    if checkpoint.score is None:
        pytest.skip(f"{checkpoint.name}: {checkpoint.message}")
    ratio = settings(request.config).pass_ratio
    if checkpoint.score + 1e-9 < ratio * checkpoint.max:
        raise CheckpointFailure(
            f"{checkpoint.name.split('_')[0]} {checkpoint.score:.2f}/{checkpoint.max:g}: "
            f"{checkpoint.message}")


# -- session outputs ----------------------------------------------------------


class RulesLog:
    """Collects rules-gate outcomes on the controller (they cross xdist in ``user_properties``)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        if "rule" not in props or (report.when != "call" and not report.failed and not report.skipped):
            return
        rules = self.config.stash[_RULES]
        entry = rules.setdefault(str(props["rule"]), {
            "path": str(props["rule"]), "title": str(props.get("rule_title", "")), "status": "passed",
            "tp": None, "fp": None, "expected": props.get("rule_case"), "message": "", "checks": {}})
        outcome = "failed" if report.failed else "skipped" if report.skipped else "passed"
        entry["checks"][str(props.get("rule_check", report.nodeid))] = outcome
        for key in ("tp", "fp"):
            if props.get(key) is not None:
                entry[key] = props[key]
        if report.failed:
            entry["status"] = "failed"
            if not entry["message"] and report.longreprtext:
                entry["message"] = report.longreprtext.strip().splitlines()[-1][:500]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if hasattr(config, "workerinput") or _RUNS not in config.stash:
        return
    opts = settings(config)
    parts = _parts_dir(config)
    entries = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(parts.glob("*.json"))] \
        if parts.is_dir() else []
    rules = [config.stash[_RULES][k] for k in sorted(config.stash[_RULES])]
    shutil.rmtree(parts, ignore_errors=True)
    wanted = _CASESET in config.stash or entries or benchmark_requested(config)
    try:
        problems = run_problems(config, case_set(config)) if wanted else []
    except StoreUnavailable as exc:
        problems = [{"kind": "telemetry", "path": None, "line": None, "message": str(exc), "cases": []}]
    if not entries and not rules and not problems:
        return
    results = build_results(config, entries)
    results["rules"] = rules
    results["problems"] = problems
    opts.report_dir.mkdir(parents=True, exist_ok=True)
    (opts.report_dir / "results.json").write_text(json.dumps(results, indent=1, default=str),
                                                  encoding="utf-8")
    config.stash[_RESULTS] = results
    try:
        from ..report import write_reports

        write_reports(results, opts.report_dir)
    except Exception as exc:  # a report bug must not hide the results or the exit status
        config.stash[_REPORT_ERROR] = f"{type(exc).__name__}: {exc}"
    if opts.min_score is not None and entries and \
            results["summary"]["normalized_score"] < opts.min_score:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_REPORT_ERROR = pytest.StashKey[str]()


_RESULTS = pytest.StashKey[dict[str, Any]]()


def build_results(config: pytest.Config, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """results.json: run settings, the summary, and every case (sorted: deterministic)."""
    opts = settings(config)
    try:
        store = session_store(config)
        dataset = {"name": store.meta["dataset"], "hash": store.meta["hash"],
                   "rows": sum(store.rows.values()), "window": store.meta["window"],
                   "scored_on": scoring_split(config),
                   "splits": {split: session_store(config, split).meta["hash"]
                              for split in dataset_splits(config)}}
    except StoreUnavailable as exc:
        dataset = {"error": str(exc)}
    entries.sort(key=lambda e: (e["id"], e["epoch"]))
    summary = _summary_from_entries(entries)
    gap = generalisation(entries)
    if gap:
        summary["generalisation"] = gap
    agent = opts.agent
    ran = [e["trajectory"] for e in entries if isinstance(e.get("trajectory"), dict)]
    if any(t.get("agent_spec") != opts.agent for t in ran):
        # realm_agent was overridden (a conftest supplies the agent): --realm-agent names
        # nothing that ran, so say what the trajectories say ran.
        agent = ", ".join(sorted({str(t.get("agent")) for t in ran})) or agent
    return {
        "format": 1,
        "run": {
            "agent": agent, "scoring": opts.scoring, "variant": opts.variant,
            "subset": opts.subset or "all", "epochs": opts.epochs, "pass_ratio": opts.pass_ratio,
            "dataset": dataset,
            "started": config.stash[_STARTED],
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": _versions(),
        },
        "summary": summary,
        "cases": entries,
    }


def _summary_from_entries(entries: list[dict[str, Any]]) -> dict[str, Any]:
    from ..scoring.model import CaseScore, CheckpointScore

    scores = []
    for e in entries:
        checkpoints = {k: CheckpointScore(k, v["score"], v["max"], v["message"])
                       for k, v in e["checkpoints"].items()}
        scores.append(CaseScore(e["id"], e["platform"], e["epoch"], e["status"], e["reason"],
                                checkpoints))
    return summarize(scores)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"ctirealm": __version__}
    for name in ("duckdb", "duckdb-kql", "pysigma", "pytest"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS, None)
    if not results:
        return
    summary = results["summary"]
    write = terminalreporter.write_line
    terminalreporter.section("ctirealm score")
    if config.stash.get(_REPORT_ERROR, None):
        write(f"reports could not be written: {config.stash[_REPORT_ERROR]}", red=True)
    problems = results.get("problems", [])
    if problems:
        write(f"left out of this run ({len(problems)}; not scored, listed in results.json):", red=True)
        for problem in problems[:10]:
            stops = f"  [cases: {', '.join(problem['cases'])}]" if problem.get("cases") else ""
            write(f"  {problem['message'].splitlines()[0]}{stops}", red=True)
        if len(problems) > 10:
            write(f"  ... and {len(problems) - 10} more", red=True)
    if not results["cases"]:
        failed = sum(1 for r in results["rules"] if r["status"] == "failed")
        write(f"rules gated: {len(results['rules'])}, failing: {failed}")
        write(f"results: {settings(config).report_dir / 'results.json'}")
        return
    run = results["run"]
    low, high = summary["ci95"]
    write(f"agent {run['agent']}  scoring {run['scoring']}  variant {run['variant']}  "
          f"cases {len(summary['cases'])}  epochs {run['epochs']}")
    write(f"normalised score {summary['normalized_score']:.3f}  (95% CI {low:.3f}–{high:.3f})")
    gap = summary.get("generalisation")
    if gap:
        on, dev = gap[gap["scored_on"]], gap["dev"]
        write(f"  final detections scored on {gap['scored_on']}: KQL F1 {on['kql_f1']:.2f}, Sigma F1 "
              f"{on['sigma_f1']:.2f}; on dev (what the agent queried): score "
              f"{dev['normalized_score']:.3f}, KQL F1 {dev['kql_f1']:.2f}, Sigma F1 {dev['sigma_f1']:.2f}")
    for platform, values in summary["by_platform"].items():
        write(f"  {platform:<8} {values['normalized_score']:.3f}  ({values['cases']} runs)")
    for name, values in summary["by_checkpoint"].items():
        mean = values["mean_score"]
        shown = "not scored" if mean is None else f"{mean:.2f}/{values['max']:g}"
        write(f"  {name:<20} {shown}")
    opts = settings(config)
    write(f"results: {opts.report_dir / 'results.json'}")
    if opts.min_score is not None:
        verdict = "PASSED" if summary["normalized_score"] >= opts.min_score else "FAILED"
        write(f"min score {opts.min_score:.3f}: {verdict}")
