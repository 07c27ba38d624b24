"""The Inspect AI task (``inspect eval ctirealm/ctirealm``), run by Inspect's own runtime.

A scripted ``mockllm/model`` makes the oracle's tool calls and submits its
answer; the log's scores must be what ctirealm's own scoring gives the oracle
(`run_case` + `score_case`, test split with dev beside), and a replay of the
log (``inspect:LOG``) must record and score the same run.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.agents.mcp_helpers import oracle_steps

pytest.importorskip("inspect_ai", reason="the inspect extra (inspect-ai) is not installed")

from inspect_ai import eval as inspect_eval
from inspect_ai.log import EvalLog, read_eval_log
from inspect_ai.model import ChatMessageTool, ModelOutput, ModelUsage, get_model

from ctirealm.agents import OracleAgent, Task, resolve_agent, run_case
from ctirealm.agents.inspect_bench import Bench, bench_for
from ctirealm.agents.inspect_log import RUN_STORE_KEY, InspectLogAgent
from ctirealm.agents.inspect_task import case_dataset, ctirealm
from ctirealm.cases import Case, CaseSet
from ctirealm.scoring import CHECKPOINTS, CaseScore
from ctirealm.tools import Toolbox, Trajectory
from ctirealm.tools.toolbox import SPECS, VARIANTS, result_rows

# Slow: Inspect evaluations.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MINI = ROOT / "tests" / "fixtures" / "mini"
MODEL = "mockllm/model"


@pytest.fixture(scope="module")
def realm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mini case set with a held-out ``test`` split, so final detections are scored there."""
    root = tmp_path_factory.mktemp("inspect-mini")
    for part in ("cases", "rules", "telemetry"):
        shutil.copytree(MINI / part, root / part)
    shutil.copytree(ROOT / "telemetry" / "schemas", root / "telemetry" / "schemas")
    dataset = root / "telemetry" / "dataset.yaml"
    dataset.write_text(
        dataset.read_text(encoding="utf-8") + "splits:\n  dev: {seed: 7}\n  test: {seed: 8}\n",
        encoding="utf-8",
    )
    return root


@pytest.fixture(scope="module")
def bench(realm: Path) -> Bench:
    return bench_for(realm / "cases", realm / "telemetry", cache_dir=realm / "cache")


def _args(realm: Path, **extra: Any) -> dict[str, Any]:
    return {
        "cases": str(realm / "cases"),
        "telemetry": str(realm / "telemetry"),
        "cache_dir": str(realm / "cache"),
        **extra,
    }


def _output(name: str | None, arguments: dict[str, Any] | None = None, text: str = "") -> ModelOutput:
    if name is None:
        output = ModelOutput.from_content(MODEL, text)
    else:
        output = ModelOutput.for_tool_call(MODEL, name, arguments or {}, content=text)
    # Usage given, so mockllm does not count tokens (its tokenizer would be downloaded).
    output.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
    return output


Turn = tuple[str | None, dict[str, Any], str]  # tool (None: a reply), arguments, text


def scripted(turns: list[Turn], seen: list[list[str]] | None = None) -> Any:
    """A mockllm model that plays *turns*; ``"ROWS"`` as query_results submits the rows of the
    last tool result that is not an error (as a model copies them), *seen* collects the tool
    names of each request."""
    pending = iter(turns)

    def generate(messages: list[Any], tools: list[Any], tool_choice: Any, config: Any) -> ModelOutput:
        if seen is not None:
            seen.append([t.name for t in tools])
        name, arguments, text = next(pending)
        if arguments.get("query_results") == "ROWS":
            rows = [
                result_rows(m.text)
                for m in messages
                if isinstance(m, ChatMessageTool) and not m.text.startswith("Error")
            ][-1]
            arguments = {**arguments, "query_results": rows}
            text = text.format(rows=len(rows))
        return _output(name, arguments, text)

    return get_model(MODEL, custom_outputs=generate)


def oracle_turns(case: Case, cases: CaseSet) -> list[Turn]:
    """What `OracleAgent` does, as model turns: the walk of `oracle_steps`, its words said with
    the first schema call, and its answer submitted with the rows of its last query."""
    *calls, submit = oracle_steps(case, cases)
    answer = submit["submit"]
    turns: list[Turn] = []
    for step in calls:
        first_schema = step["call"] == "get_table_schema" and all(t[0] != step["call"] for t in turns)
        turns.append((step["call"], step.get("arguments", {}), answer["analysis"] if first_schema else ""))
    arguments = {
        "sigma_rule": answer["sigma_rule"],
        "kql_query": answer["kql_query"],
        "query_results": "ROWS",
    }
    turns.append(("submit_detection", arguments, "Final query returns {rows} rows (first 10 shown)."))
    return turns


def _eval(model: Any, realm: Path, log_dir: Path, **task_args: Any) -> EvalLog:
    sample_id = task_args.pop("sample_id", "linux_001")
    logs = inspect_eval(
        ctirealm(**_args(realm, **task_args)),
        model=model,
        sample_id=sample_id,
        log_dir=str(log_dir),
        display="none",
    )
    assert len(logs) == 1 and logs[0].status == "success", logs[0].error
    return logs[0]


def _values(score: CaseScore) -> dict[str, float | None]:
    return {name: score.checkpoints[name].score for name in CHECKPOINTS}


def _logged(value: dict[str, Any]) -> dict[str, float | None]:
    return {name: None if math.isnan(value[name]) else value[name] for name in CHECKPOINTS}


def _oracle(bench: Bench, case_id: str = "linux_001") -> Trajectory:
    case = bench.cases.cases[case_id]
    trajectory = Trajectory(case.id, "oracle")
    toolbox = Toolbox(bench.engine("dev"), bench.cases, trajectory)
    return run_case(OracleAgent(bench.cases), Task.for_case(case, toolbox), toolbox)


@pytest.fixture(scope="module")
def oracle_log(realm: Path, bench: Bench, tmp_path_factory: pytest.TempPathFactory) -> EvalLog:
    case = bench.cases.cases["linux_001"]
    return _eval(scripted(oracle_turns(case, bench.cases)), realm, tmp_path_factory.mktemp("logs"))


def test_samples_are_the_cases(bench: Bench) -> None:
    samples = list(case_dataset(bench))
    assert [s.id for s in samples] == ["aks_001", "linux_001"]
    linux = samples[1]
    assert linux.input == bench.cases.cases["linux_001"].objective
    assert linux.metadata == {
        "platform": "linux",
        "subsets": ["realm-25", "realm-50"],
        "difficulty": "medium",
        "title": bench.cases.cases["linux_001"].title,
    }
    assert [s.id for s in case_dataset(bench, platforms=["aks"])] == ["aks_001"]
    with pytest.raises(ValueError, match="no cases"):
        case_dataset(bench, subset="realm-nothing")
    task = ctirealm(
        subset=25,
        platform="linux",
        cases=str(bench.cases_root),
        telemetry=str(bench.telemetry),
        cache_dir=str(bench.cache_dir),
    )  # as `-T subset=25` passes it
    assert [s.id for s in task.dataset] == ["linux_001"]
    with pytest.raises(ValueError, match="unknown platform"):
        ctirealm(platform="windows", cases=str(bench.cases_root), telemetry=str(bench.telemetry))


def test_oracle_run_scores_as_ctirealm_scores_it(oracle_log: EvalLog, bench: Bench) -> None:
    sample = oracle_log.samples[0]
    score = sample.scores["realm_scorer"]
    trajectory = _oracle(bench)
    case = bench.cases.cases["linux_001"]
    on_test, on_dev = bench.score(case, trajectory, "test"), bench.score(case, trajectory, "dev")
    assert trajectory.status == "submitted" and _values(on_test)["C4_kql_detection"] == 5.0
    assert _logged(score.value) == pytest.approx(_values(on_test))
    assert score.value["normalized"] == pytest.approx(on_test.normalized)
    assert score.metadata["split"] == "test" and score.metadata["status"] == "submitted"
    assert score.metadata["dev"]["normalized"] == pytest.approx(on_dev.normalized)
    assert score.metadata["dev"]["checkpoints"] == pytest.approx(_values(on_dev))
    for name in CHECKPOINTS:
        assert f"{name} " in score.explanation
        assert on_test.checkpoints[name].message in score.explanation
    assert score.answer == trajectory.submission.kql_query
    assert sample.store[RUN_STORE_KEY]["status"] == "submitted"
    assert json.loads(sample.output.completion)["kql_query"] == trajectory.submission.kql_query
    # Inspect's own metrics: one per checkpoint and the normalised score.
    metrics = {s.name: s.metrics["mean"].value for s in oracle_log.results.scores}
    assert metrics["normalized"] == pytest.approx(on_test.normalized)
    assert set(metrics) == {*CHECKPOINTS, "normalized"}


def test_a_replay_of_the_log_records_and_scores_the_same_run(oracle_log: EvalLog, bench: Bench) -> None:
    agent = resolve_agent(f"inspect:{oracle_log.location}", bench.cases)
    assert isinstance(agent, InspectLogAgent) and agent.name == f"inspect:{MODEL}"
    case = bench.cases.cases["linux_001"]
    replayed = Trajectory(case.id, agent.name)
    toolbox = Toolbox(bench.engine("dev"), bench.cases, replayed)
    run_case(agent, Task.for_case(case, toolbox), toolbox)
    oracle = _oracle(bench)
    assert replayed.status == "submitted"
    assert replayed.submission == oracle.submission
    assert [(c.name, c.arguments, c.result, c.ok) for c in replayed.tool_calls()] == [
        (c.name, c.arguments, c.result, c.ok) for c in oracle.tool_calls()
    ]
    assert replayed.assistant_text() == oracle.assistant_text()
    logged = oracle_log.samples[0].scores["realm_scorer"].value
    assert _values(bench.score(case, replayed, "test")) == pytest.approx(_logged(logged))


def test_the_variant_sets_the_tools_with_their_schemas(realm: Path, tmp_path: Path) -> None:
    seen: list[list[str]] = []
    model = scripted([(None, {}, "nothing to do")], seen)
    log = _eval(model, realm, tmp_path, variant="minimal")
    assert seen == [[*VARIANTS["minimal"], "submit_detection"]]
    resolved = read_eval_log(log.location, resolve_attachments=True)
    event = next(e for e in resolved.samples[0].events if e.event == "model")
    tools = {t.name: t for t in event.tools}
    for name in VARIANTS["minimal"]:
        assert tools[name].description == SPECS[name].description
        assert tools[name].parameters.model_dump(exclude_none=True) == SPECS[name].parameters
    score = log.samples[0].scores["realm_scorer"]
    assert score.metadata["status"] == "invalid_submission"  # a reply without JSON
    assert score.value["normalized"] == 0.0


def test_refused_calls_are_recorded_as_the_log_shows_them(realm: Path, bench: Bench, tmp_path: Path) -> None:
    turns: list[Turn] = [
        ("get_table_schema", {}, "T1053.003 looks right."),  # Inspect refuses: table_name missing
        ("no_such_tool", {"x": 1}, ""),
        ("execute_kql_query", {"query": "DeviceProcessEvents | take 2"}, ""),
        (
            "submit_detection",
            {"sigma_rule": "too short", "kql_query": "DeviceProcessEvents", "query_results": []},
            "",
        ),
        (
            None,
            {},
            '{"sigma_rule": "' + "x" * 60 + '", "kql_query": "DeviceProcessEvents | take 2", '
            '"query_results": [{"a": 1}]}',
        ),
    ]
    log = _eval(scripted(turns), realm, tmp_path)
    sample = log.samples[0]
    assert sample.scores["realm_scorer"].metadata["status"] == "submitted"  # the final reply's JSON
    errors = [m.error.message for m in sample.messages if isinstance(m, ChatMessageTool) and m.error]
    assert len(errors) == 2 and "table_name" in errors[0] and "no_such_tool" in errors[1]
    agent = InspectLogAgent(log.location)
    case = bench.cases.cases["linux_001"]
    replayed = Trajectory(case.id, agent.name)
    toolbox = Toolbox(bench.engine("dev"), bench.cases, replayed)
    run_case(agent, Task.for_case(case, toolbox), toolbox)
    assert [(c.name, c.ok) for c in replayed.tool_calls()] == [
        ("get_table_schema", False),
        ("no_such_tool", False),
        ("execute_kql_query", True),
    ]
    assert replayed.status == "submitted"
    logged = sample.scores["realm_scorer"].value
    assert _values(bench.score(case, replayed, "test")) == pytest.approx(_logged(logged))


def test_limits_end_the_run(realm: Path, tmp_path: Path) -> None:
    query = ("execute_kql_query", {"query": "DeviceProcessEvents | take 1"}, "")
    log = _eval(scripted([query] * 5), realm, tmp_path / "calls", tool_calls=2)
    score = log.samples[0].scores["realm_scorer"]
    assert score.metadata["status"] == "limit_exceeded"
    assert "tool-call limit of 2" in score.metadata["reason"]
    assert score.value["normalized"] == 0.0
    # The call that reaches the limit is refused; the answer may still be submitted, with words.
    answer = (
        "submit_detection",
        {
            "sigma_rule": "title: x\n" + "#" * 60,
            "kql_query": "DeviceProcessEvents | take 1",
            "query_results": "ROWS",
        },
        "Submitting what I have: T1053.003.",
    )
    log = _eval(scripted([query, query, query, answer]), realm, tmp_path / "submit", tool_calls=2)
    score = log.samples[0].scores["realm_scorer"]
    assert score.metadata["status"] == "submitted"
    assert "T1053.003" in score.metadata["case"]["checkpoints"]["C1_attack_mapping"]["details"]["named"]
    log = _eval(scripted([query] * 10), realm, tmp_path / "messages", message_limit=6)
    sample = log.samples[0]
    assert sample.limit is not None and sample.limit.type == "message"
    score = sample.scores["realm_scorer"]
    assert score.metadata["status"] == "no_submission" and "message limit" in score.metadata["reason"]


def test_the_time_limit_is_a_timeout(realm: Path, tmp_path: Path) -> None:
    async def slow(messages: list[Any], tools: list[Any], tool_choice: Any, config: Any) -> ModelOutput:
        await anyio.sleep(30)
        return _output(None, {}, "too late")

    log = _eval(get_model(MODEL, custom_outputs=slow), realm, tmp_path, time_limit=1)
    sample = log.samples[0]
    assert sample.limit is not None and sample.limit.type == "time"
    score = sample.scores["realm_scorer"]
    assert score.metadata["status"] == "timeout" and score.value["normalized"] == 0.0


def test_compat_scoring_leaves_judged_checkpoints_unscored(
    oracle_log: EvalLog, realm: Path, bench: Bench, tmp_path: Path
) -> None:
    case = bench.cases.cases["linux_001"]
    log = _eval(scripted(oracle_turns(case, bench.cases)), realm, tmp_path, scoring="compat")
    value = log.samples[0].scores["realm_scorer"].value
    expected = _values(bench.score(case, _oracle(bench), "test", mode="compat"))
    assert expected["C0_cti_reports"] is None and expected["C4_sigma_quality"] is None
    assert _logged(value) == pytest.approx(expected)
    scored = {s.name: s for s in log.results.scores}
    assert scored["C0_cti_reports"].unscored_samples == 1  # NaN: left out of the metric


def test_pytest_rescores_the_log_with_the_inspect_agent(
    pytester: pytest.Pytester, oracle_log: EvalLog, realm: Path
) -> None:
    pytester.makeini(f"[pytest]\naddopts = --realm-cache-dir={realm / 'cache'} -p no:cacheprovider\n")
    pytester.runpytest(
        f"--realm-cases={realm / 'cases'}",
        f"--realm-telemetry={realm / 'telemetry'}",
        f"--realm-agent=inspect:{oracle_log.location}",
        f"--rootdir={pytester.path}",
        str(realm / "cases"),
        "-k",
        "linux_001",
    )
    results = json.loads((pytester.path / "reports" / "results.json").read_text())
    [case] = results["cases"]
    logged = oracle_log.samples[0].scores["realm_scorer"].value
    assert case["split"] == "test" and case["trajectory"]["agent"] == f"inspect:{MODEL}"
    assert {k: v["score"] for k, v in case["checkpoints"].items()} == pytest.approx(_logged(logged))
    assert case["normalized_score"] == pytest.approx(logged["normalized"])


def _entry_point_installed() -> bool:
    return any(ep.value == "ctirealm.agents.inspect_task" for ep in entry_points(group="inspect_ai"))


# Offline, mockllm's default replies would download a tokenizer to count their tokens.
CLI = """
import sys
from inspect_ai.model._providers.mockllm import MockLLM

async def _uncounted(self, output, input, tools):
    pass

MockLLM._ensure_default_usage = _uncounted
from inspect_ai._cli.main import main
sys.argv = ["inspect", *sys.argv[1:]]
main()
"""


@pytest.mark.skipif(
    not _entry_point_installed(),
    reason="the package's inspect_ai entry point is not installed (pip install -e .)",
)
def test_inspect_eval_finds_the_task_by_its_registry_name(realm: Path, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-c",
        CLI,
        "eval",
        "ctirealm/ctirealm",
        "--model",
        MODEL,
        *[a for k, v in _args(realm, platform="aks").items() for a in ("-T", f"{k}={v}")],
        "--log-dir",
        str(tmp_path),
        "--display",
        "none",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    [path] = list(tmp_path.glob("*.eval"))
    log = read_eval_log(str(path))
    assert log.eval.task == "ctirealm/ctirealm" and log.status == "success"
    assert [s.id for s in log.samples] == ["aks_001"]
    assert log.samples[0].scores["realm_scorer"].metadata["status"] == "invalid_submission"
