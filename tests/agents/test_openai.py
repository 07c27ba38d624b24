"""The OpenAI-compatible adapter and judge against a scripted chat-completions server on loopback.

No part of the SDK is mocked: requests go over HTTP to a real server that
replays a script of responses and records what it was sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openai", reason="the openai extra is not installed")

from ctirealm.agents import AgentSpecError, Task, resolve_agent, run_case
from ctirealm.agents.openai_chat import ModelAPIError, OpenAIAgent, resolve_api_key
from ctirealm.cases import CaseSet
from ctirealm.engine import LocalEngine
from ctirealm.scoring.judge import JudgeError, OpenAIJudge, parse_reply
from ctirealm.tools import Toolbox, Trajectory

MINI = Path(__file__).resolve().parents[1] / "fixtures" / "mini"
GOOD = {
    "sigma_rule": "title: scripted\n" + "#" * 60,
    "kql_query": "AKSAudit | take 1",
    "query_results": [{"Verb": "list"}],
}


# -- the scripted server ------------------------------------------------------------------


class ScriptedServer:
    """Answers POST /v1/chat/completions from a script; records every request body.

    A script entry is a response body (HTTP 200) or ``(status, body, headers)``.
    When the script runs out, the last entry is repeated if ``repeat_last``,
    otherwise the server answers 400 so the test fails loudly.
    """

    def __init__(self, script: list[Any], *, repeat_last: bool = False) -> None:
        self.script = list(script)
        self.repeat_last = repeat_last
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                status, payload, headers = server.next(self.path, body, dict(self.headers))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def next(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any, dict]:
        with self._lock:
            self.requests.append(body)
            self.headers.append({k.lower(): v for k, v in headers.items()})
            if path != "/v1/chat/completions":
                return 404, {"error": {"message": f"no route {path}"}}, {}
            if not self.script:
                return 400, {"error": {"message": "the test script has no more responses"}}, {}
            entry = self.script[0] if self.repeat_last and len(self.script) == 1 else self.script.pop(0)
        return entry if isinstance(entry, tuple) else (200, entry, {})

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(
    content: str | None = None,
    calls: list[tuple[str, str, Any]] | None = None,
    *,
    reasoning: str | None = None,
    tokens: tuple[int, int] = (100, 20),
) -> dict[str, Any]:
    """A chat.completion body; *calls* are (id, name, arguments — a dict, or raw text sent as is)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [
            {
                "id": cid,
                "type": "function",
                "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
            }
            for cid, name, args in calls
        ]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "scripted",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": {"prompt_tokens": tokens[0], "completion_tokens": tokens[1], "total_tokens": sum(tokens)},
    }


def error(status: int, message: str = "boom", **headers: str) -> tuple[int, Any, dict[str, str]]:
    return status, {"error": {"message": message, "type": "server_error", "code": None}}, headers


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    yield


def _run(
    agent: OpenAIAgent,
    cases: CaseSet,
    engine: LocalEngine,
    *,
    message_limit: int = 70,
    time_limit: float = 20.0,
) -> tuple[Trajectory, Task]:
    case = cases.cases["aks_001"]
    trajectory = Trajectory(case.id, agent.name)
    toolbox = Toolbox(engine, cases, trajectory)
    task = Task.for_case(case, toolbox, message_limit=message_limit, time_limit=time_limit)
    return run_case(agent, task, toolbox), task


def _notes(trajectory: Trajectory) -> list[str]:
    return [s.text for s in trajectory.steps if s.kind == "note"]


# -- the agent ------------------------------------------------------------------------------------


def test_tool_calls_then_a_fenced_answer(cases: CaseSet, engine: LocalEngine) -> None:
    script = [
        completion(
            "Looking at the data first.",
            [("call_1", "list_kusto_tables", {}), ("call_2", "get_table_schema", {"table_name": "AKSAudit"})],
            reasoning="Secret listing by a workload: T1552.007.",
        ),
        completion(None, [("call_3", "execute_kql_query", {"query": "AKSAudit | where Verb == 'list'"})]),
        completion(
            "Here is my answer:\n```json\n" + json.dumps(GOOD) + "\n```\nLet me know!", tokens=(300, 80)
        ),
    ]
    with ScriptedServer(script) as server:
        agent = OpenAIAgent("scripted-model", base_url=server.base_url, temperature=0.2)
        trajectory, task = _run(agent, cases, engine)
    assert trajectory.status == "submitted", trajectory.reason
    assert trajectory.submission is not None and trajectory.submission.to_dict() == GOOD
    assert [(c.name, c.call_id, c.ok) for c in trajectory.tool_calls()] == [
        ("list_kusto_tables", "call_1", True),
        ("get_table_schema", "call_2", True),
        ("execute_kql_query", "call_3", True),
    ]
    assert "T1552.007" in trajectory.assistant_text()  # reasoning is recorded with the text

    first, second, third = server.requests
    assert first["model"] == "scripted-model" and first["temperature"] == 0.2
    assert first["messages"] == [
        {"role": "system", "content": task.system_prompt},
        {"role": "user", "content": task.user_message},
    ]
    assert [t["function"]["name"] for t in first["tools"]] == [s.name for s in task.tools]
    assert server.headers[0]["authorization"] == "Bearer unused"  # no key needed on loopback
    # The second request replays the assistant turn and answers each tool call by id.
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "tool", "tool"]
    assert [c["id"] for c in second["messages"][2]["tool_calls"]] == ["call_1", "call_2"]
    tool_message = second["messages"][4]
    assert tool_message["tool_call_id"] == "call_2" and '"ColumnName": "Verb"' in tool_message["content"]
    assert len(third["messages"]) == 7

    assert agent.last_usage is not None and agent.last_usage.requests == 3
    assert agent.last_usage.prompt_tokens == 500 and agent.last_usage.total_tokens == 620
    assert any("3 requests" in n and "620 tokens" in n for n in _notes(trajectory))


def test_malformed_tool_arguments_come_back_as_an_error(cases: CaseSet, engine: LocalEngine) -> None:
    script = [
        completion(None, [("bad", "execute_kql_query", '{"query": "AKSAudit | take 1')]),
        completion(None, [("good", "execute_kql_query", {"query": "AKSAudit | take 1"})]),
        completion(json.dumps(GOOD)),
    ]
    with ScriptedServer(script) as server:
        trajectory, _ = _run(OpenAIAgent("m", base_url=server.base_url), cases, engine)
    assert trajectory.status == "submitted"
    reply = server.requests[1]["messages"][-1]
    assert reply["role"] == "tool" and reply["tool_call_id"] == "bad"
    assert reply["content"].startswith("Error: arguments are not valid JSON")
    assert "temperature" not in server.requests[0]  # not sent unless asked for
    first = trajectory.tool_calls()[0]
    assert not first.ok and first.arguments == {"_raw": '{"query": "AKSAudit | take 1'}


def test_a_model_that_never_answers_stops_at_the_message_limit(cases: CaseSet, engine: LocalEngine) -> None:
    loop = completion("Let me check again.", [("c", "list_kusto_tables", {})])
    with ScriptedServer([loop], repeat_last=True) as server:
        trajectory, _ = _run(OpenAIAgent("m", base_url=server.base_url), cases, engine, message_limit=8)
    assert trajectory.status == "no_submission"
    # system + user, then three assistant/tool pairs make 8 messages: three requests.
    assert len(server.requests) == 3
    assert len(trajectory.tool_calls()) == 3
    assert any("message limit of 8 reached" in n for n in _notes(trajectory))


def test_transient_errors_are_retried_with_backoff(cases: CaseSet, engine: LocalEngine) -> None:
    script = [
        error(500),
        error(429, "slow down", **{"retry-after-ms": "20"}),
        error(503),
        completion(json.dumps(GOOD)),
    ]
    with ScriptedServer(script) as server:
        agent = OpenAIAgent("m", base_url=server.base_url, backoff=0.01)
        trajectory, _ = _run(agent, cases, engine)
    assert trajectory.status == "submitted", trajectory.reason
    assert len(server.requests) == 4
    assert agent.last_usage is not None and agent.last_usage.retries == 3


def test_a_permanent_api_error_is_reported(cases: CaseSet, engine: LocalEngine) -> None:
    with ScriptedServer([error(401, "invalid api key")]) as server:
        trajectory, _ = _run(OpenAIAgent("m", base_url=server.base_url, backoff=0.01), cases, engine)
    assert trajectory.status == "crashed"
    assert "ModelAPIError" in trajectory.reason and "HTTP 401" in trajectory.reason
    assert "invalid api key" in trajectory.reason
    assert len(server.requests) == 1  # 4xx other than 408/409/429 is not retried

    with ScriptedServer([error(502)], repeat_last=True) as server:
        trajectory, _ = _run(
            OpenAIAgent("m", base_url=server.base_url, backoff=0.001, max_retries=2), cases, engine
        )
    assert trajectory.status == "crashed" and "after 2 retries" in trajectory.reason
    assert len(server.requests) == 3


def test_a_timeout_interrupts_the_retry_wait(cases: CaseSet, engine: LocalEngine) -> None:
    with ScriptedServer([error(503, **{"retry-after": "30"})], repeat_last=True) as server:
        agent = OpenAIAgent("m", base_url=server.base_url)
        started = time.perf_counter()
        trajectory, _ = _run(agent, cases, engine, time_limit=0.5)
        elapsed = time.perf_counter() - started
    assert trajectory.status == "timeout"
    assert elapsed < 3  # cancel() wakes the 30 s wait at once
    assert len(server.requests) == 1


def test_an_answer_that_is_not_json_is_an_invalid_submission(cases: CaseSet, engine: LocalEngine) -> None:
    with ScriptedServer([completion("I could not find anything.")]) as server:
        trajectory, _ = _run(OpenAIAgent("m", base_url=server.base_url), cases, engine)
    assert trajectory.status == "invalid_submission"
    assert trajectory.raw_answer == "I could not find anything."


def test_spec_and_api_key_resolution(cases: CaseSet, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = resolve_agent("openai:gpt-test", cases, base_url="http://127.0.0.1:9/v1", temperature=0.0)
    assert isinstance(agent, OpenAIAgent)
    assert (agent.model, agent.base_url, agent.temperature, agent.name) == (
        "gpt-test",
        "http://127.0.0.1:9/v1",
        0.0,
        "openai:gpt-test",
    )
    with pytest.raises(ModelAPIError, match="OPENAI_API_KEY"):
        resolve_api_key(None, None)
    with pytest.raises(AgentSpecError, match="openai:gpt-test: no API key"):
        resolve_agent("openai:gpt-test", cases)
    assert resolve_api_key(None, "http://localhost:11434/v1") == "unused"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    assert resolve_api_key(None, "http://localhost:11434/v1") == "sk-from-env"
    assert resolve_api_key("sk-given", None) == "sk-given"


# -- the judge --------------------------------------------------------------------------------------


def test_judge_scores_both_questions() -> None:
    script = [
        completion('```json\n{"score": 0.8, "reason": "relevant tags, details used"}\n```'),
        completion('Verdict: {"syntax": 1, "specificity": "70%", "reason": "keys on the marker"}'),
    ]
    with ScriptedServer(script) as server:
        judge = OpenAIJudge("judge-model", base_url=server.base_url)
        score = judge.cti_analysis(
            "detect secret listing", ["kubernetes"], ["K8s secret theft"], "The report names T1552.007."
        )
        syntax, specificity = judge.sigma_quality("detect secret listing", "title: x\nlogsource: {}\n")
    assert score == 0.8
    assert (syntax, specificity) == (1.0, 0.7)
    cti, sigma = server.requests
    assert cti["temperature"] == 0 and cti["model"] == "judge-model"
    assert "K8s secret theft" in cti["messages"][1]["content"]
    assert '"score"' in cti["messages"][0]["content"]
    assert "title: x" in sigma["messages"][1]["content"]


def test_judge_drops_temperature_for_models_that_refuse_it() -> None:
    script = [
        error(400, "Unsupported value: 'temperature' does not support 0 with this model."),
        completion('{"score": 0.5}'),
        completion('{"score": 0.25}'),
    ]
    with ScriptedServer(script) as server:
        judge = OpenAIJudge("reasoner", base_url=server.base_url)
        assert judge.cti_analysis("o", ["t"], [], "") == 0.5
        assert judge.cti_analysis("o", ["t"], [], "") == 0.25
    assert "temperature" in server.requests[0]
    assert "temperature" not in server.requests[1] and "temperature" not in server.requests[2]


def test_judge_failures_are_clear_errors() -> None:
    with ScriptedServer([completion("I think it is pretty good.")]) as server:
        with pytest.raises(JudgeError, match=r"unreadable reply on CTI analysis \(no score"):
            OpenAIJudge("j", base_url=server.base_url).cti_analysis("o", ["t"], [], "")
    with ScriptedServer([error(404, "model 'j' not found")]) as server:
        with pytest.raises(JudgeError, match="HTTP 404: model 'j' not found"):
            OpenAIJudge("j", base_url=server.base_url, max_retries=0).sigma_quality("o", "title: x")
    with pytest.raises(JudgeError, match="no API key"):
        OpenAIJudge("j").cti_analysis("o", ["t"], [], "")
    assert OpenAIJudge("j").sigma_quality("o", "  ") == (0.0, 0.0)  # nothing to judge, no request


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"score": 0.6}', 0.6),
        ('```\n{"Score": "0.3", "reason": "x"}\n```', 0.3),
        ("score: 7/10.", 0.7),
        ('{"score": 85}', 0.85),
        ('{"score": 8}', 0.8),
        ("Score = 40%", 0.4),
    ],
)
def test_judge_reply_parsing(reply: str, expected: float) -> None:
    assert parse_reply(reply, ("score",)) == {"score": pytest.approx(expected)}


@pytest.mark.parametrize("reply", ['{"score": "high"}', '{"score": 250}', '{"score": -1}', "no"])
def test_judge_reply_parsing_rejects_nonsense(reply: str) -> None:
    with pytest.raises(ValueError):
        parse_reply(reply, ("score",))
