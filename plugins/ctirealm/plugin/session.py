"""One benchmark session's state and outputs: `RealmSession`, registered in ``pytest_configure``.

As pytest's junitxml keeps its state in one object registered as a plugin, the session
object holds what a run accumulates — the cases, each (case, epoch) run, the rules gate's
outcomes, the results document — and carries the hooks that turn it into outputs:
``results.json`` and the reports at session end, the score in the terminal summary. Every
other module reaches it through `realm_session` (one stash key).

Under xdist each worker runs its cases and writes each entry under
``<report-dir>/.parts/<session id>``; the controller merges them into ``results.json``.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ..agents import trajectory_path
from ..cases import Case, CaseSet, load_cases
from ..scoring import CaseScore
from ..scoring.results import build_results, case_entry
from ..scoring.run import RunSettings, run_agent, score_on
from ..tools import Trajectory
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
from .problems import run_problems
from .settings import settings

_SESSION = pytest.StashKey["RealmSession"]()


@dataclass
class CaseRun:
    """One agent run of one case (and epoch): what it did and its score."""

    trajectory: Trajectory
    score: CaseScore


class RealmSession:
    """The benchmark's session state, and the hooks that write its outputs."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        worker = getattr(config, "workerinput", None)
        self.is_worker = worker is not None
        # Each session writes its case parts under its own id, so two sessions sharing a
        # report directory never mix their results.
        self.id: str = worker["realm_session"] if worker and "realm_session" in worker else uuid.uuid4().hex
        self.started = datetime.now(UTC).isoformat(timespec="seconds")
        self.runs: dict[tuple[str, int], CaseRun] = {}
        self.rules: dict[str, dict[str, Any]] = {}
        #: Set when the plugin's own ``realm_agent`` fixture built the agent from
        #: ``--realm-agent`` (a conftest that overrides the fixture never runs it).
        self.agent_from_spec = False
        self.results: dict[str, Any] | None = None
        self.report_error: str | None = None
        self._cases: CaseSet | None = None

    # -- state ------------------------------------------------------------------------

    def case_set(self) -> CaseSet:
        """Every case and report, checked against the store's tables (loaded once)."""
        if self._cases is None:
            tables = session_store(self.config).known_tables()
            self._cases = load_cases(cases_root(self.config), tables=tables)
        return self._cases

    @property
    def parts_dir(self) -> Path:
        return settings(self.config).report_dir / ".parts" / self.id

    def run(self, agent: Any, cases: CaseSet, case: Case, epoch: int) -> CaseRun:
        """The agent's run of *case* (once per case and epoch in a session), scored."""
        key = (case.id, epoch)
        if key not in self.runs:
            self.runs[key] = self._run_and_score(agent, cases, case, epoch)
        return self.runs[key]

    def _run_and_score(self, agent: Any, cases: CaseSet, case: Case, epoch: int) -> CaseRun:
        config, opts = self.config, settings(self.config)
        engine = session_engine(config)
        trajectory = run_agent(
            agent,
            case,
            cases,
            engine,
            RunSettings(
                variant=opts.variant,
                max_tool_calls=opts.max_tool_calls,
                toolsets=opts.toolsets,
                time_limit=opts.time_limit,
            ),
            epoch=epoch,
        )
        # Final detections are scored on the held-out split; dev (what the agent queried) beside.
        split = scoring_split(config)
        score = self._score(case, cases, trajectory, split)
        score.split = split
        if split != "dev" and opts.scoring == "strict":
            score.dev = self._score(case, cases, trajectory, "dev")
        trajectory.save(trajectory_path(opts.report_dir / "trajectories", case.id, epoch))
        entry = case_entry(
            score,
            case,
            trajectory,
            tables=engine.schemas,
            agent_spec=opts.agent if self.agent_from_spec else None,
        )
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        (self.parts_dir / f"{case.id}.e{epoch}.json").write_text(
            json.dumps(entry, default=str, indent=1), encoding="utf-8"
        )
        return CaseRun(trajectory, score)

    def _score(self, case: Case, cases: CaseSet, trajectory: Trajectory, split: str) -> CaseScore:
        """Every checkpoint of *case*, its final detections executed on *split*'s store."""
        return score_on(
            case,
            cases,
            trajectory,
            engine=split_engine(self.config, split),
            labels=session_store(self.config, split).labels,
            mode=settings(self.config).scoring,
            judge=self._judge(),
        )

    def _judge(self) -> Any:
        model = self.config.getoption("--realm-judge")
        if not model:
            return None
        from ..scoring.judge import OpenAIJudge  # the openai SDK only when judging

        return OpenAIJudge(model, base_url=self.config.getoption("--realm-base-url"))

    # -- hooks ------------------------------------------------------------------------

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["realm_session"] = self.id

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Rules-gate outcomes, collected on the controller (they cross xdist in
        ``user_properties``)."""
        if self.is_worker:
            return
        props = dict(report.user_properties)
        if "rule" not in props or (report.when != "call" and not report.failed and not report.skipped):
            return
        entry = self.rules.setdefault(
            str(props["rule"]),
            {
                "path": str(props["rule"]),
                "title": str(props.get("rule_title", "")),
                "status": "passed",
                "tp": None,
                "fp": None,
                "expected": props.get("rule_case"),
                "message": "",
                "checks": {},
            },
        )
        outcome = "failed" if report.failed else "skipped" if report.skipped else "passed"
        entry["checks"][str(props.get("rule_check", report.nodeid))] = outcome
        for key in ("tp", "fp"):
            if props.get(key) is not None:
                entry[key] = props[key]
        if report.failed:
            entry["status"] = "failed"
            if not entry["message"] and report.longreprtext:
                entry["message"] = report.longreprtext.strip().splitlines()[-1][:500]

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.is_worker:
            return
        config, opts = self.config, settings(self.config)
        parts = self.parts_dir
        entries = (
            [json.loads(p.read_text(encoding="utf-8")) for p in sorted(parts.glob("*.json"))]
            if parts.is_dir()
            else []
        )
        rules = [self.rules[k] for k in sorted(self.rules)]
        shutil.rmtree(parts, ignore_errors=True)
        wanted = self._cases is not None or entries or benchmark_requested(config)
        try:
            problems = run_problems(config, self.case_set()) if wanted else []
        except StoreUnavailable as exc:
            problems = [{"kind": "telemetry", "path": None, "line": None, "message": str(exc), "cases": []}]
        if not entries and not rules and not problems:
            return
        results = build_results(
            entries,
            run={
                "scoring": opts.scoring,
                "variant": opts.variant,
                "subset": opts.subset or "all",
                "epochs": opts.epochs,
                "pass_ratio": opts.pass_ratio,
            },
            agent=opts.agent,
            dataset=self._dataset(),
            started=self.started,
        )
        results["rules"] = rules
        results["problems"] = problems
        opts.report_dir.mkdir(parents=True, exist_ok=True)
        (opts.report_dir / "results.json").write_text(
            json.dumps(results, indent=1, default=str), encoding="utf-8"
        )
        self.results = results
        try:
            from ..report import write_reports

            write_reports(results, opts.report_dir)
        except Exception as exc:  # a report bug must not hide the results or the exit status
            self.report_error = f"{type(exc).__name__}: {exc}"
        if opts.min_score is not None and entries and results["summary"]["normalized_score"] < opts.min_score:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _dataset(self) -> dict[str, Any]:
        config = self.config
        try:
            store = session_store(config)
            return {
                "name": store.meta["dataset"],
                "hash": store.meta["hash"],
                "rows": sum(store.rows.values()),
                "window": store.meta["window"],
                "scored_on": scoring_split(config),
                "splits": {
                    split: session_store(config, split).meta["hash"] for split in dataset_splits(config)
                },
            }
        except StoreUnavailable as exc:
            return {"error": str(exc)}

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        results = self.results
        if not results:
            return
        summary = results["summary"]
        write = terminalreporter.write_line
        terminalreporter.section("ctirealm score")
        if self.report_error:
            write(f"reports could not be written: {self.report_error}", red=True)
        problems = results.get("problems", [])
        if problems:
            write(f"left out of this run ({len(problems)}; not scored, listed in results.json):", red=True)
            for problem in problems[:10]:
                stops = f"  [cases: {', '.join(problem['cases'])}]" if problem.get("cases") else ""
                write(f"  {problem['message'].splitlines()[0]}{stops}", red=True)
            if len(problems) > 10:
                write(f"  ... and {len(problems) - 10} more", red=True)
        opts = settings(config)
        if not results["cases"]:
            failed = sum(1 for r in results["rules"] if r["status"] == "failed")
            write(f"rules gated: {len(results['rules'])}, failing: {failed}")
            write(f"results: {opts.report_dir / 'results.json'}")
            return
        run = results["run"]
        low, high = summary["ci95"]
        write(
            f"agent {run['agent']}  scoring {run['scoring']}  variant {run['variant']}  "
            f"cases {len(summary['cases'])}  epochs {run['epochs']}"
        )
        write(f"normalised score {summary['normalized_score']:.3f}  (95% CI {low:.3f}–{high:.3f})")
        gap = summary.get("generalisation")
        if gap:
            on, dev = gap[gap["scored_on"]], gap["dev"]
            write(
                f"  final detections scored on {gap['scored_on']}: KQL F1 {on['kql_f1']:.2f}, "
                f"Sigma F1 {on['sigma_f1']:.2f}; on dev (what the agent queried): score "
                f"{dev['normalized_score']:.3f}, KQL F1 {dev['kql_f1']:.2f}, "
                f"Sigma F1 {dev['sigma_f1']:.2f}"
            )
        for platform, values in summary["by_platform"].items():
            write(f"  {platform:<8} {values['normalized_score']:.3f}  ({values['cases']} runs)")
        for name, values in summary["by_checkpoint"].items():
            mean = values["mean_score"]
            shown = "not scored" if mean is None else f"{mean:.2f}/{values['max']:g}"
            write(f"  {name:<20} {shown}")
        write(f"results: {opts.report_dir / 'results.json'}")
        if opts.min_score is not None:
            verdict = "PASSED" if summary["normalized_score"] >= opts.min_score else "FAILED"
            write(f"min score {opts.min_score:.3f}: {verdict}")


def start_session(config: pytest.Config) -> RealmSession:
    """Create this session's `RealmSession` and register it (its hooks then run)."""
    session = RealmSession(config)
    config.stash[_SESSION] = session
    config.pluginmanager.register(session, "ctirealm-session")
    return session


def realm_session(config: pytest.Config) -> RealmSession:
    """This session's `RealmSession` (the cases plugin creates it in ``pytest_configure``)."""
    return config.stash[_SESSION]


def session_results(config: pytest.Config) -> dict[str, Any] | None:
    """The results document this session wrote, if any (None before its end, or without it)."""
    session = config.stash.get(_SESSION, None)
    return session.results if session is not None else None
