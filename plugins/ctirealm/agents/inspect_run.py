"""One case run under Inspect: its toolbox as Inspect tools, the submit tool, and the outcome.

`CaseRun` holds a case's `Toolbox` (on the shared ``dev`` engine), the
trajectory it records into, the first accepted submission and why the run
stopped. `CaseRun.tools` are Inspect `ToolDef`s with the toolbox's names,
descriptions and JSON Schemas (the variant's tools, as every other agent gets
them) plus `SUBMIT_TOOL`; each call goes through `Toolbox.call`, so it is
checked, limited and recorded exactly as for the other adapters. `conclude`
gives the trajectory its status and reason by the runner's rules.

The answer is given with ``submit_detection(sigma_rule, kql_query,
query_results)``, not with Inspect's ``submit(answer)``: the three fields are
checked when the tool is called (the runner's own check), so a model learns at
once what is wrong and can call it again, and the Sigma YAML and the result
rows need no second layer of JSON escaping inside one string. The MCP adapter
offers the same tool.
"""

from __future__ import annotations

import json
from typing import Any

from inspect_ai.tool import ToolDef, ToolParams

from ..tools.toolbox import AgentStopped, Toolbox, ToolSpec
from ..tools.trajectory import Step, ToolCall
from .base import Task, _preview
from .parse import SUBMIT_TOOL, SubmissionError, extract_json, submission_schema, to_submission

SUBMIT_SPEC = ToolSpec(
    SUBMIT_TOOL,
    "Submit the final detection and end the run. Only the first accepted submission counts. "
    "query_results must be rows execute_kql_query returned.",
    submission_schema(),
)

INSPECT_NOTE = f"""\
Give the final answer by calling the {SUBMIT_TOOL} tool with sigma_rule, kql_query and
query_results instead of answering with JSON. Only the first accepted submission counts, and it
ends the run. A reply without tool calls also ends the run (its JSON, if any, is the answer).
"""


def inspect_prompt(task: Task) -> str:
    """The system prompt under Inspect: the task's instructions and how to submit."""
    return f"{task.system_prompt.rstrip()}\n\n{INSPECT_NOTE}"


class CaseRun:
    """The state of one sample's run: toolbox, answer, why it stopped. Knows nothing of models."""

    def __init__(self, task: Task, toolbox: Toolbox) -> None:
        self.task = task
        self.toolbox = toolbox
        self.trajectory = toolbox.trajectory
        self.answer: Any = None  # the submitted dict, or a final text reply
        self.submitted = False  # an answer came through submit_detection
        self.stopped: str | None = None  # the tool-call limit, or an Inspect limit
        self.limit: str | None = None  # the Inspect limit type that ended the run
        self.error: str | None = None  # why the solver failed
        self.concluded = False
        self._pending: list[tuple[str, str, dict[str, Any]]] = []  # this turn's calls, in order

    @property
    def ended(self) -> bool:
        return self.answer is not None or self.stopped is not None

    def specs(self) -> list[ToolSpec]:
        return [*self.toolbox.specs(), SUBMIT_SPEC]

    def tools(self, lock: Any = None) -> list[ToolDef]:
        """The variant's tools and the submit tool as Inspect tools (never truncated: the model
        sees the whole result, as other agents do, and the log holds what the trajectory holds)."""
        return [_tool_def(self, spec, lock) for spec in self.specs()]

    def say(self, text: str, reasoning: str = "") -> None:
        """Record an assistant turn's text and reasoning, unless the run is already over."""
        if (text or reasoning) and not self.ended:
            try:
                self.toolbox.say(text, reasoning)
            except AgentStopped:
                # The tool-call limit stopped the tools, not the run: the answer may still be
                # submitted, and the words that come with it are kept.
                self.trajectory.steps.append(Step(kind="assistant", text=text, reasoning=reasoning))

    def expect(self, calls: list[Any]) -> None:
        """The tool calls of the turn about to run (Inspect `ToolCall`s), so each recorded call
        carries the model's call id, as a replay of the log records it."""
        self._pending = [(str(c.id), str(c.function), dict(c.arguments or {})) for c in calls]

    def _call_id(self, name: str, arguments: dict[str, Any]) -> str | None:
        # Inspect runs a turn's calls one by one, in order, skipping those it refused: the
        # first pending call with this name and these arguments is the one running.
        for index, (call_id, function, args) in enumerate(self._pending):
            if function == name and args == arguments:
                del self._pending[: index + 1]
                return call_id
        return None

    def call(self, name: str, arguments: dict[str, Any]) -> str:
        """Run one tool call; returns its text (``Error: ...`` for anything wrong). Never raises."""
        call_id = self._call_id(name, arguments)
        if self.submitted:
            return (
                f"Error: the run has ended: an answer was already submitted with {SUBMIT_TOOL}; "
                "only the first submission counts"
            )
        if self.stopped is not None:
            return f"Error: the run is over: {self.stopped}"
        if name == SUBMIT_TOOL:
            return self._submit(arguments)
        try:
            return self.toolbox.call(name, arguments, call_id=call_id)
        except AgentStopped as exc:
            self._stop(str(exc))
            return f"Error: the run is over: {exc}"

    def record_refused(
        self, name: str, arguments: dict[str, Any], result: str, error: str, call_id: str | None
    ) -> None:
        """A call Inspect refused before it reached a tool (arguments that break the schema, an
        unknown tool), recorded as a failed call with what the model saw, as a replay of the log
        records it."""
        if name == SUBMIT_TOOL:
            self._note(f"{SUBMIT_TOOL} refused: {error}")
        elif not self.ended:
            try:
                self.toolbox.record(name, arguments, result, ok=False, error=error, call_id=call_id)
            except AgentStopped:  # past the tool-call limit: still what the model did
                self.trajectory.steps.append(
                    Step(
                        kind="tool",
                        tool=ToolCall(name, dict(arguments), result, ok=False, error=error, call_id=call_id),
                    )
                )

    def final_reply(self, text: str) -> None:
        """A reply without tool calls ends the run; its JSON, if any, is the answer."""
        if self.ended:
            return
        try:
            self.answer = extract_json(text)
        except SubmissionError:
            self.answer = text  # concluded as an invalid submission, with the reason
        self._note("the model replied without tool calls: its reply is the final answer")

    def stop(self, reason: str, limit: str | None = None) -> None:
        """End the run from outside (an Inspect limit): tool calls are refused."""
        self.limit = limit
        self.toolbox.stop(reason)
        self._stop(reason)

    def answer_text(self) -> str | None:
        if self.answer is None:
            return None
        return self.answer if isinstance(self.answer, str) else json.dumps(self.answer)

    def _stop(self, reason: str) -> None:
        if self.stopped is None:
            self.stopped = reason
            self._note(f"the run was stopped: {reason}")

    def _submit(self, arguments: dict[str, Any]) -> str:
        args = dict(arguments or {})
        try:
            to_submission(args)  # the runner's own check, so an accepted answer is a valid one
        except SubmissionError as exc:
            self._note(f"{SUBMIT_TOOL} refused: {exc}")
            return f"Error: the submission was not accepted: {exc}; fix it and call {SUBMIT_TOOL} again"
        self.answer, self.submitted = args, True
        self._note(f"{SUBMIT_TOOL} accepted: {len(args['query_results'])} result rows")
        return "Submission accepted. The run is over; no further tool calls are needed."

    def _note(self, text: str) -> None:
        # A runner note, not assistant text: never scored.
        self.trajectory.steps.append(Step(kind="note", text=text))


def conclude(run: CaseRun, duration: float | None = None) -> None:
    """The trajectory's status, reason and submission, by the runner's rules (once)."""
    if run.concluded:
        return
    run.concluded = True
    trajectory = run.trajectory
    if duration is not None:
        trajectory.duration = round(duration, 3)
    if run.answer is not None:
        trajectory.raw_answer = _preview(run.answer)  # as the runner records an answer
        try:
            trajectory.submission = to_submission(run.answer)
            trajectory.status = "submitted"
        except SubmissionError as exc:
            trajectory.status = "invalid_submission"
            trajectory.reason = f"the answer is not a valid submission: {exc}"
    elif run.error is not None:
        trajectory.status = "crashed"
        trajectory.reason = f"the agent raised {run.error}"
    elif run.limit in ("time", "working"):
        trajectory.status = "timeout"
        trajectory.reason = f"the model did not finish within the time limit: {run.stopped}"
    elif run.limit == "message":
        trajectory.status = "no_submission"  # as the openai adapter: the conversation ran out
        trajectory.reason = f"the message limit was reached without a final answer: {run.stopped}"
    elif run.stopped is not None:
        trajectory.status = "limit_exceeded"
        trajectory.reason = f"the agent was stopped: {run.stopped}"
    else:
        trajectory.status = "no_submission"
        trajectory.reason = "the model finished without submitting an answer"


def _tool_def(run: CaseRun, spec: ToolSpec, lock: Any) -> ToolDef:
    import anyio

    def invoke(arguments: dict[str, Any]) -> str:
        if lock is None:
            return run.call(spec.name, arguments)
        with lock:
            return run.call(spec.name, arguments)

    async def execute(**kwargs: Any) -> str:
        # Queries block for seconds: off the event loop, so other samples go on meanwhile.
        return await anyio.to_thread.run_sync(invoke, kwargs)

    return ToolDef(
        execute,
        name=spec.name,
        description=spec.description,
        parameters=ToolParams.model_validate(spec.parameters),
        max_output=0,
    )


__all__ = ["INSPECT_NOTE", "SUBMIT_SPEC", "SUBMIT_TOOL", "CaseRun", "conclude", "inspect_prompt"]
