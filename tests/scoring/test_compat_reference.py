"""Compat scoring against the reference scorer itself (inspect_evals' ``cti_realm``).

Each trajectory is scored twice: by compat, and by the reference's ``_score_sample`` on the
same run rebuilt as an Inspect ``TaskState`` (the recorded answer as the model's output), with
the same deterministic judge on both sides. The checkpoints must agree. The items are the
answers and trajectories real agents produce where the two used to disagree; the sample runs
the built-in and shortcut agents over the fixture cases and six real ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from types import SimpleNamespace
from typing import Any

import pytest

from ctirealm.agents import Task, run_case
from ctirealm.agents.builtin import builtin_agent
from ctirealm.agents.parse import SubmissionError, reference_fields, to_submission
from ctirealm.agents.shortcuts import SHORTCUTS
from ctirealm.cases import Case, load_cases
from ctirealm.engine import LocalEngine
from ctirealm.scoring import score_case
from ctirealm.scoring.compat import RECORDED_ANSWER_CHARS
from ctirealm.telemetry.dataset import Dataset
from ctirealm.telemetry.store import build_store, default_cache_dir
from ctirealm.tools import Step, Toolbox, ToolCall, Trajectory
from tests.helpers import ROOT

ref_scorer = pytest.importorskip(
    "inspect_evals.cti_realm.core.scorer",
    reason="the reference scorer needs inspect-evals (the dev extra); it cannot be installed here",
)
from inspect_ai.model import (  # noqa: E402
    ChatMessageAssistant,
    ChatMessageTool,
    ChatMessageUser,
    ContentReasoning,
    ContentText,
    ModelOutput,
)
from inspect_ai.scorer import Target  # noqa: E402
from inspect_ai.solver import TaskState  # noqa: E402
from inspect_ai.tool import ToolCall as InspectToolCall  # noqa: E402
from inspect_evals.cti_realm.core import parsing_utils as ref_parsing  # noqa: E402
from inspect_evals.cti_realm.core import trajectory_scorer as ref_trajectory  # noqa: E402

# Slow: the reference scorer's package and the default store.
pytestmark = pytest.mark.slow

MINI = ROOT / "tests" / "fixtures" / "mini"
CASES = load_cases(MINI / "cases")
LINUX = CASES.cases["linux_001"]
SIGMA = (MINI / "rules" / "linux" / "linux_001_sigma.yml").read_text()
SYNTAX, SPECIFICITY = 0.8, 0.6
#: compat name -> (reference name, the factor from the reference's value to compat's points)
PAIRS = {
    "C0_cti_reports": ("C0_cti_alignment", 1.0),
    "C1_attack_mapping": ("C1_threat_context", 1.0),
    "C2_data_sources": ("C2_data_exploration", 1.0),
    "C3_query_iteration": ("C3_query_execution", 1.0),
    "C4_kql_detection": ("C4_f1_score", 5.0),
    "C4_sigma_quality": ("C4_sigma_quality", 1.5),
}


# -- one deterministic judge, seen from both sides ----------------------------------------------


def _cti_ratio(tags_line: str, reports_line: str) -> float:
    """The C0 score for what the judge was shown: any change in tags or titles changes it."""
    digest = hashlib.sha256(f"{tags_line}\n{reports_line}".encode()).hexdigest()
    return int(digest[:8], 16) % 101 / 100


class CompatJudge:
    """The compat `Judge`, recording what it was asked."""

    def __init__(self) -> None:
        self.cti: list[tuple[list[str], list[str]]] = []
        self.rules: list[str] = []

    def cti_analysis(self, objective: str, tags: list[str], titles: list[str], reasoning: str) -> float:
        self.cti.append((tags, titles))
        # The lines the reference's prompt carries for the same inputs.
        reports = f"{len(titles)} reports: {', '.join(titles)}" if titles else "No reports accessed"
        return _cti_ratio(", ".join(tags), reports)

    def sigma_quality(self, objective: str, sigma_rule: str) -> tuple[float, float]:
        self.rules.append(sigma_rule)
        return SYNTAX, SPECIFICITY


class ReferenceJudge:
    """The grader model the reference asks (``get_model(role="grader")``), recording prompts."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    async def generate(self, input: str, config: Any = None, **_: Any) -> Any:
        self.prompts.append(input)
        asked = input.rsplit("Now evaluate:", 1)[-1]
        if "CTI Tags Searched: " in asked:
            tags = asked.split("CTI Tags Searched: ", 1)[1].split("\nReports Accessed: ", 1)[0]
            reports = asked.split("\nReports Accessed: ", 1)[1].split("\nAssistant Messages: ", 1)[0]
            reply = {"score": _cti_ratio(tags, reports), "reasoning": "fixed"}
        else:
            reply = {"syntax_score": SYNTAX, "specificity": SPECIFICITY, "critique": "fixed"}
        return SimpleNamespace(completion=json.dumps(reply))


# -- the reference's view of a trajectory ------------------------------------------------------


def task_state(case: Case, trajectory: Trajectory, completion: str) -> TaskState:
    """The run as an Inspect sample: one assistant message per step, each tool call answered by
    its tool message, and *completion* as the model's final output."""
    objective = f"DETECTION OBJECTIVE:\n{case.objective}"
    messages: list[Any] = [ChatMessageUser(content=objective)]
    for index, step in enumerate(trajectory.steps):
        if step.kind == "assistant":
            content: list[Any] = [ContentReasoning(reasoning=step.reasoning)] if step.reasoning else []
            if step.text:
                content.append(ContentText(text=step.text))
            messages.append(ChatMessageAssistant(content=content))
        elif step.tool is not None:
            call_id = step.tool.call_id or f"call_{index}"
            messages.append(
                ChatMessageAssistant(
                    content="",
                    tool_calls=[
                        InspectToolCall(
                            id=call_id, function=step.tool.name, arguments=dict(step.tool.arguments)
                        )
                    ],
                )
            )
            messages.append(
                ChatMessageTool(content=step.tool.result, tool_call_id=call_id, function=step.tool.name)
            )
    return TaskState(
        model="mockllm/model",
        sample_id=case.id,
        epoch=trajectory.epoch,
        input=objective,
        messages=messages,
        output=ModelOutput.from_content("mockllm/model", completion),
    )


@pytest.fixture
def reference(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``reference(case, trajectory)``: the reference's Score values, its judge's prompts.

    The reference reads its dataset files and grader model from fixed places; both are given
    here (the cases' ground truth, the deterministic judge).
    """
    judge = ReferenceJudge()
    monkeypatch.setattr(ref_scorer, "get_model", lambda *a, **k: judge)
    monkeypatch.setattr(ref_trajectory, "get_model", lambda *a, **k: judge)
    monkeypatch.setitem(ref_scorer._DATASETS_CACHE, 50, ({}, {}))

    def score(case: Case, trajectory: Trajectory, completion: str | None = None) -> dict[str, float]:
        judge.prompts.clear()
        truth = case.ground_truth
        ref_scorer._DATASETS_CACHE[50] = (
            {case.id: {"id": case.id, "detection_description": case.objective, "subtasks": {}}},
            {
                case.id: {
                    "id": case.id,
                    "ground_truth": {
                        "mitre_techniques": list(truth.techniques),
                        "data_sources": list(truth.tables),
                        "regex_patterns": dict(truth.regex_patterns),
                    },
                }
            },
        )
        text = trajectory.raw_answer if completion is None else completion
        state = task_state(case, trajectory, text or "")
        return asyncio.run(ref_scorer._score_sample(state, Target(""), stratified_size=50)).value

    score.judge = judge  # type: ignore[attr-defined]
    return score


def compat(case: Case, trajectory: Trajectory, judge: CompatJudge | None = None) -> Any:
    # Compat reads only the trajectory: no engine, labels or schemas are needed.
    return score_case(
        case,
        trajectory,
        engine=None,
        labels=None,
        schemas={},  # type: ignore[arg-type]
        mode="compat",
        judge=judge or CompatJudge(),
    )


def assert_same(
    case: Case, trajectory: Trajectory, ref_values: dict[str, float], judge: CompatJudge | None = None
) -> Any:
    ours = compat(case, trajectory, judge)
    got = {name: ours.checkpoints[name].score for name in PAIRS}
    want = {name: ref_values[key] * factor for name, (key, factor) in PAIRS.items()}
    assert got == pytest.approx(want, abs=1e-9), {n: ours.checkpoints[n].message for n in PAIRS}
    assert ours.normalized == pytest.approx(ref_values["normalized_score"], abs=1e-9)
    return ours


# -- hand-built runs on linux_001 ---------------------------------------------------------------

ROWS = [
    {"ReportId": 418275039461, "ProcessCommandLine": "crontab /tmp/.c-7e21a9", "Note": None},
    {"ReportId": 611928374650, "ProcessCommandLine": "crontab -l", "Note": None},
]
KQL = "DeviceProcessEvents | where FileName == 'crontab' | project ReportId, ProcessCommandLine, Note"


def kusto(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0]) if rows else []
    return json.dumps(
        {
            "Tables": [
                {
                    "TableName": "PrimaryResult",
                    "Columns": [{"ColumnName": c, "ColumnType": "string"} for c in columns],
                    "Rows": [[r.get(c) for c in columns] for r in rows],
                }
            ]
        }
    )


def tool(name: str, arguments: dict[str, Any], result: str) -> Step:
    return Step("tool", tool=ToolCall(name, arguments, result, not result.startswith("Error")))


def run(
    answer: Any,
    *,
    text: str = "This is T1053.003 (cron).",
    tags: tuple[str, ...] = ("cron",),
    titles: str = '"title": "Cron persistence from web shells"',
    rows: list | None = None,
    status: str | None = None,
) -> Trajectory:
    """A linux_001 run whose answer is *answer* (text, or an object the runner records as JSON)."""
    rows = ROWS if rows is None else rows
    steps = [tool("list_cti_report_tags", {}, '[{"tag": "cron", "count": 1}]')]
    steps += [tool("get_cti_reports_by_tag", {"tag": tag}, f'[{{{titles}, "id": "r"}}]') for tag in tags]
    steps += [
        Step("assistant", text=text),
        tool("get_table_schema", {"table_name": "DeviceProcessEvents"}, '{"Columns": []}'),
        tool("execute_kql_query", {"query": "DeviceProcessEvents | take 2"}, kusto(rows[:1])),
        tool("execute_kql_query", {"query": KQL}, kusto(rows)),
    ]
    raw = answer if isinstance(answer, str) else json.dumps(answer)
    trajectory = Trajectory(LINUX.id, "hand", steps=steps, raw_answer=raw)
    try:  # the runner's verdict
        trajectory.submission = to_submission(raw)
        trajectory.status = "submitted"
    except SubmissionError:
        trajectory.status = "invalid_submission"
    trajectory.status = status or trajectory.status
    return trajectory


GOOD = {"sigma_rule": SIGMA, "kql_query": KQL, "query_results": ROWS}


def test_the_reference_and_compat_agree_on_a_plain_answer(reference) -> None:
    trajectory = run(GOOD)
    ours = assert_same(LINUX, trajectory, reference(LINUX, trajectory))
    assert ours.checkpoints["C4_kql_detection"].score == pytest.approx(5 * 2 / 3)  # P 1/2, R 1
    assert ours.total > 7


@pytest.mark.parametrize(
    "text", ["the technique is t1053.003", "tags: [attack.persistence, attack.t1053.003]"]
)
def test_technique_ids_in_lower_case_count(reference, text: str) -> None:
    trajectory = run(GOOD, text=text)
    ours = assert_same(LINUX, trajectory, reference(LINUX, trajectory))
    assert ours.checkpoints["C1_attack_mapping"].score == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("answer", "f1"),
    [
        ({**GOOD, "notes": "an extra key"}, 2 / 3),
        ({**GOOD, "sigma_rule": "title: short"}, 2 / 3),
        ({**GOOD, "query_results": []}, 0.0),
        ({**GOOD, "query_results": json.dumps(ROWS)}, 2 / 3),
        ({**GOOD, "query_results": "not json"}, 0.0),
        ({"sigma_rule": SIGMA}, 0.0),
        ({"kql_query": KQL, "query_results": ROWS}, 2 / 3),
    ],
    ids=[
        "extra-key",
        "short-sigma",
        "empty-results",
        "results-as-json-string",
        "results-bad-string",
        "sigma-only",
        "no-sigma",
    ],
)
def test_what_strict_rejects_is_scored_as_far_as_it_parsed(reference, answer: dict, f1: float) -> None:
    trajectory = run(answer)
    assert trajectory.status == "invalid_submission"
    ours = assert_same(LINUX, trajectory, reference(LINUX, trajectory))
    assert ours.checkpoints["C4_kql_detection"].score == pytest.approx(5 * f1)
    assert ours.checkpoints["C2_data_sources"].score == pytest.approx(1.0)  # the run still counts


def test_strict_still_zeroes_an_answer_outside_the_contract() -> None:
    with pytest.raises(SubmissionError, match="unexpected keys: notes"):
        to_submission({**GOOD, "notes": "x"})


def test_an_empty_tag_is_no_search(reference) -> None:
    judge = CompatJudge()
    trajectory = run(GOOD, tags=("",))
    ours = assert_same(LINUX, trajectory, reference(LINUX, trajectory), judge)
    assert judge.cti == [] and ours.checkpoints["C0_cti_reports"].score == 0.0
    assert not any("CTI Tags Searched" in p.rsplit("Now evaluate:", 1)[-1] for p in reference.judge.prompts)
    both = run(GOOD, tags=("", "cron"))
    assert_same(LINUX, both, reference(LINUX, both), judge)
    assert judge.cti[-1][0] == ["cron"]


def test_null_in_a_tool_row_matches_an_empty_string(reference) -> None:
    answer = {**GOOD, "query_results": [{**ROWS[0], "Note": ""}]}
    trajectory = run(answer)
    ours = assert_same(LINUX, trajectory, reference(LINUX, trajectory))
    assert ours.checkpoints["C4_kql_detection"].score == pytest.approx(5.0)


def test_a_fabricated_row_fails_provenance_on_both_sides(reference) -> None:
    answer = {**GOOD, "query_results": [{**ROWS[0], "ProcessCommandLine": "crontab /tmp/x-7e21a9"}]}
    trajectory = run(answer)
    ours = assert_same(LINUX, trajectory, reference(LINUX, trajectory))
    assert ours.checkpoints["C4_kql_detection"].details["provenance"] is False


@pytest.mark.parametrize("prose", ["Here is my final answer:\n", ""])
def test_prose_before_a_fenced_pretty_answer_loses_nested_rows(reference, prose: str) -> None:
    """The fallback parser ends ``query_results`` at the first ``]`` before a comma: a row with a
    list value (dynamic columns) cuts it, and the rows are lost with prose before the fence."""
    rows = [{**ROWS[0], "Tags": ["a", "b"]}]
    answer = f"{prose}```json\n{json.dumps({**GOOD, 'query_results': rows}, indent=2)}\n```"
    trajectory = run(answer, rows=rows)
    assert trajectory.status == "submitted"  # strict finds the object
    ours = assert_same(LINUX, trajectory, reference(LINUX, trajectory))
    assert ours.checkpoints["C4_kql_detection"].score == pytest.approx(0.0 if prose else 5.0)


def test_prose_around_a_flat_answer_still_parses(reference) -> None:
    answer = "Done. Final answer:\n```json\n" + json.dumps(GOOD, indent=2) + "\n```\nThanks."
    trajectory = run(answer)
    assert_same(LINUX, trajectory, reference(LINUX, trajectory))


@pytest.mark.parametrize("separator", [": ", " : ", ":", " :\n  "])
def test_titles_reach_the_judge_as_the_reference_shows_them(reference, separator: str) -> None:
    judge = CompatJudge()
    titles = (
        f'"title"{separator}"Zeta report", "x": 1}}, {{"title"{separator}"Alpha report", '
        f'"y": {{"title": "Zeta report"}}, "z": {{"title": ""}}'
    )
    trajectory = run(GOOD, titles=titles, tags=("cron", "linux"))
    assert_same(LINUX, trajectory, reference(LINUX, trajectory), judge)
    assert judge.cti == [(["cron", "linux"], ["Zeta report", "Alpha report"])]


def test_a_row_that_is_not_an_object_crashes_the_reference_and_scores_zero_in_compat(reference) -> None:
    trajectory = run({**GOOD, "query_results": [ROWS[0], "a row as text"]})
    with pytest.raises(AttributeError):
        reference(LINUX, trajectory)
    ours = compat(LINUX, trajectory)
    assert ours.checkpoints["C4_kql_detection"].score == 0.0
    assert ours.checkpoints["C2_data_sources"].score == pytest.approx(1.0)


def test_an_unreadable_answer_zeroes_every_checkpoint(reference) -> None:
    trajectory = run("I found nothing worth submitting.")
    ours = assert_same(LINUX, trajectory, reference(LINUX, trajectory))
    assert ours.total == 0.0 and "parser finds no answer" in ours.checkpoints["C1_attack_mapping"].message


@pytest.mark.parametrize(
    "answer",
    [
        'Final answer: {"sigma_rule": "title: cron\\ndetection: {}", "kql_query": "DeviceProcessEvents | take 1", '
        '"query_results": [{"ReportId": 418275039461}]} -- done',
        "{'sigma_rule': 'title: x', 'kql_query': 'T | take 1', 'query_results': [{'ReportId': 1}]}",
        "[1, 2, 3]",
        '```json\n{"sigma_rule": "", "kql_query": "x", "query_results": [{"ReportId": "418275039461"}]}\n```',
    ],
)
def test_other_answer_texts(reference, answer: str) -> None:
    assert reference_fields(answer) == ref_parsing.parse_model_output(answer)
    trajectory = run(answer)
    assert_same(LINUX, trajectory, reference(LINUX, trajectory))


def test_a_failed_run_is_zero_on_both_sides(reference) -> None:
    trajectory = run(GOOD, status="crashed")
    trajectory.raw_answer = None
    ours = compat(LINUX, trajectory)
    assert ours.total == 0.0
    # The reference has no status: a crashed run reaches it with an empty output.
    assert reference(LINUX, trajectory, completion="")["normalized_score"] == 0.0


# -- real runs: the built-in and shortcut agents over the fixture cases and some real ones -------


@pytest.fixture(scope="module")
def mini_engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("mini")
    shutil.copytree(MINI / "telemetry", root / "telemetry")
    shutil.copytree(ROOT / "telemetry" / "schemas", root / "telemetry" / "schemas")
    return LocalEngine.of_store(build_store(Dataset.load(root / "telemetry"), cache_dir=root / "cache"))


@pytest.fixture(scope="module")
def real_engine() -> Any:
    # The default store, shared with the other tests that run agents over the real cases.
    return LocalEngine.of_store(build_store(Dataset.load(ROOT / "telemetry"), cache_dir=default_cache_dir()))


REAL = load_cases(ROOT / "cases")
AGENTS = ["oracle", "baseline", *sorted(SHORTCUTS)]
#: Every agent on the fixture cases; on real cases, all but the two slow shortcuts (seconds a case).
RUNS = [(a, "mini", c) for a in AGENTS for c in sorted(CASES.cases)] + [
    (a, "real", c)
    for a in AGENTS
    if a not in ("keywords", "memorise")
    for c in ("linux_001", "linux_004", "aks_001", "aks_002", "cloud_001", "cloud_002")
]


@pytest.mark.parametrize(("agent_name", "where", "case_id"), RUNS, ids=["-".join(r) for r in RUNS])
def test_real_trajectories_score_the_same(
    request, reference, agent_name: str, where: str, case_id: str
) -> None:
    cases, engine = (
        (CASES, request.getfixturevalue("mini_engine"))
        if where == "mini"
        else (REAL, request.getfixturevalue("real_engine"))
    )
    case = cases.cases[case_id]
    agent = SHORTCUTS[agent_name]() if agent_name in SHORTCUTS else builtin_agent(agent_name, cases)
    trajectory = Trajectory(case.id, agent_name)
    toolbox = Toolbox(engine, cases, trajectory)
    run_case(agent, Task.for_case(case, toolbox, time_limit=120), toolbox)
    assert trajectory.status in ("submitted", "invalid_submission"), trajectory.reason
    # The whole answer (the record keeps its first 20,000 characters), as the reference reads it.
    answer = trajectory.submission.to_dict() if trajectory.submission else json.loads(trajectory.raw_answer)
    judge = CompatJudge()
    ours = assert_same(case, trajectory, reference(case, trajectory, json.dumps(answer)), judge)
    if agent_name == "oracle":  # the control: the workflow the ground truth prescribes scores
        assert ours.checkpoints["C1_attack_mapping"].score == pytest.approx(0.75)
        assert ours.checkpoints["C2_data_sources"].score == pytest.approx(1.0)
    # The same run answered in text, as a chat model would: pretty, then after prose and a fence.
    for text in (
        json.dumps(answer, indent=2),
        "Final answer:\n```json\n" + json.dumps(answer, indent=2) + "\n```",
    ):
        trajectory.raw_answer = text
        if len(text) < RECORDED_ANSWER_CHARS:
            assert_same(case, trajectory, reference(case, trajectory), judge)
