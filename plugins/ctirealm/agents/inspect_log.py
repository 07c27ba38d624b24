"""Inspect AI logs of CTI-REALM runs, replayed as trajectories (``--realm-agent=inspect:LOG``).

A log (``.eval`` or ``.json``, read with inspect-ai's own ``read_eval_log``)
holds, per sample and epoch, the model's messages: assistant text and
reasoning, tool calls with arguments, and the tool messages that answered
them. `InspectLogAgent` turns one sample into one trajectory without running
any model or tool again:

* assistant text and reasoning are said as recorded (``Toolbox.say``);
* each tool call is *recorded* with the output the model saw
  (``Toolbox.record``): query results, errors and report texts are the logged
  ones, so compat scoring reads exactly what the reference scorer read;
* the answer is the argument of the last ``submit`` call when the agent had a
  submit tool, else the sample's final completion.

Logs of ctirealm's own Inspect task (``inspect eval ctirealm/ctirealm``; their
samples carry `RUN_STORE_KEY` in the store) are read by that task's rules, so a
replay records what the live run recorded: the answer is the first accepted
``submit_detection`` call's arguments, else the text of a final reply without
tool calls, else nothing; ``submit_detection`` calls are not tool calls of the
toolbox and are not replayed as such, nor is anything after the accepted one.

Strict scoring then executes the submitted KQL and Sigma rule over the local
store, so both modes score the same run (`ctirealm.scoring.rescore` scores a whole
log). Install with the ``inspect`` extra.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..tools.toolbox import Toolbox
from .base import Task
from .parse import SUBMIT_TOOL

LOG_SUFFIXES = (".eval", ".json")
SUBMIT_TOOLS = ("submit",)
#: ctirealm's Inspect task: its answer tool and the sample-store key that marks its logs.
DETECTION_TOOL = SUBMIT_TOOL
RUN_STORE_KEY = "ctirealm:run"


class InspectLogError(ValueError):
    """A log cannot be read or holds no usable sample; names the file."""


@dataclass
class RecordedCall:
    """One tool call as the log holds it, with the output the model saw."""

    name: str
    arguments: dict[str, Any]
    result: str
    error: str | None = None
    call_id: str | None = None


@dataclass
class RecordedStep:
    """An assistant turn: its text and reasoning, then the tool calls it made."""

    text: str = ""
    reasoning: str = ""
    calls: list[RecordedCall] = field(default_factory=list)


@dataclass
class RecordedSample:
    """One sample (case) and epoch of a log, ready to replay."""

    id: str
    epoch: int
    model: str
    task: str
    log: str
    steps: list[RecordedStep]
    answer: str | None
    error: str | None = None
    limit: str | None = None


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for item in content:
        kind = getattr(item, "type", None)
        if kind == "text":
            parts.append(str(getattr(item, "text", "")))
    return "\n".join(p for p in parts if p)


def _reasoning_of(content: Any) -> str:
    if content is None or isinstance(content, str):
        return ""
    parts = []
    for item in content:
        if getattr(item, "type", None) == "reasoning" and not getattr(item, "redacted", False):
            parts.append(str(getattr(item, "reasoning", "") or getattr(item, "summary", "") or ""))
    return "\n".join(p for p in parts if p)


def _arguments(call: Any) -> dict[str, Any]:
    arguments = getattr(call, "arguments", None)
    if isinstance(arguments, dict):
        return dict(arguments)
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError:
            return {"_raw": arguments}
        return parsed if isinstance(parsed, dict) else {"_raw": arguments}
    return {}


def sample_from_log(sample: Any, *, model: str, task: str, log: str) -> RecordedSample:
    """An inspect-ai ``EvalSample`` -> `RecordedSample` (pure conversion, nothing executed)."""
    messages = list(getattr(sample, "messages", None) or [])
    answers: dict[str, Any] = {}
    for message in messages:
        if getattr(message, "role", None) == "tool" and getattr(message, "tool_call_id", None):
            answers[str(message.tool_call_id)] = message
    ours = RUN_STORE_KEY in (getattr(sample, "store", None) or {})
    steps: list[RecordedStep] = []
    submitted: str | None = None
    accepted = False  # this task's run ended at its first accepted submit_detection
    final_reply: str | None = None
    for message in messages:
        if getattr(message, "role", None) != "assistant" or accepted:
            continue
        step = RecordedStep(text=_text_of(message.content), reasoning=_reasoning_of(message.content))
        calls = getattr(message, "tool_calls", None) or []
        final_reply = None if calls else step.text
        for call in calls:
            name = str(call.function)
            arguments = _arguments(call)
            reply = answers.get(str(call.id))
            error = None
            if reply is None:
                result, error = "", "no tool result was recorded for this call"
            else:
                result = _text_of(reply.content)
                if reply.error is not None:
                    error = str(reply.error.message)
                    if not result.strip():
                        result = f"Error: {error}"
            if getattr(call, "parse_error", None):
                error = error or f"arguments could not be parsed: {call.parse_error}"
            if ours and name == DETECTION_TOOL:
                if error is None and not result.lstrip().startswith("Error"):
                    submitted = json.dumps(arguments, ensure_ascii=False, default=str)
                    accepted = True
                    break
                continue
            step.calls.append(RecordedCall(name, arguments, result, error, str(call.id)))
            if name in SUBMIT_TOOLS:
                value = arguments.get("answer", arguments.get("_raw"))
                submitted = value if isinstance(value, str) else json.dumps(value)
        steps.append(step)
    answer = submitted
    if ours:
        answer = submitted if accepted else _reply_answer(final_reply)
    elif answer is None:
        output = getattr(sample, "output", None)
        completion = getattr(output, "completion", None) if output is not None else None
        if completion:
            answer = str(completion)
        else:
            last = next((s.text for s in reversed(steps) if s.text.strip()), None)
            answer = last
    error = getattr(sample, "error", None)
    limit = getattr(sample, "limit", None)
    return RecordedSample(
        id=str(sample.id),
        epoch=int(getattr(sample, "epoch", 1) or 1),
        model=model,
        task=task,
        log=log,
        steps=steps,
        answer=answer,
        error=str(getattr(error, "message", error)) if error is not None else None,
        limit=f"{getattr(limit, 'type', 'limit')} limit {getattr(limit, 'limit', '')}".strip()
        if limit is not None
        else None,
    )


def _reply_answer(text: str | None) -> str | None:
    """A final reply as the task took it: its JSON object when it holds one, else the text."""
    if not text:
        return text
    from .parse import SubmissionError, extract_json

    try:
        return json.dumps(extract_json(text), ensure_ascii=False, default=str)
    except SubmissionError:
        return text


def log_files(location: str | Path) -> list[Path]:
    """The ``.eval``/``.json`` logs at *location* (a file, or a folder searched recursively)."""
    path = Path(location)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in LOG_SUFFIXES)
        if not found:
            raise InspectLogError(f"{path}: no Inspect logs (*.eval, *.json) in this folder")
        return found
    raise InspectLogError(f"{path}: no such Inspect log file or folder")


def read_samples(location: str | Path) -> dict[tuple[str, int], RecordedSample]:
    """Every sample of every log at *location*, by ``(sample id, epoch)``; the first log wins."""
    try:
        from inspect_ai.log import read_eval_log
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ImportError(
            f"reading Inspect logs needs inspect-ai (pip install 'ctirealm[inspect]'): {exc}"
        ) from exc
    samples: dict[tuple[str, int], RecordedSample] = {}
    for path in log_files(location):
        try:
            log = read_eval_log(str(path), resolve_attachments=True)
        except Exception as exc:
            raise InspectLogError(f"{path}: not a readable Inspect log: {exc}") from exc
        model = str(getattr(log.eval, "model", "") or "")
        task = str(getattr(log.eval, "task", "") or "")
        for sample in log.samples or []:
            recorded = sample_from_log(sample, model=model, task=task, log=str(path))
            samples.setdefault((recorded.id, recorded.epoch), recorded)
    if not samples:
        raise InspectLogError(
            f"{location}: the logs hold no samples (was the log written with samples, not header only?)"
        )
    return samples


def replay(sample: RecordedSample, tools: Toolbox) -> str | None:
    """Put *sample* into the toolbox's trajectory as recorded; return its answer text."""
    for step in sample.steps:
        if step.text or step.reasoning:
            tools.say(step.text, step.reasoning)
        for call in step.calls:
            tools.record(
                call.name,
                call.arguments,
                call.result,
                error=call.error,
                ok=None if call.error is None else False,
                call_id=call.call_id,
            )
    if sample.error and not sample.answer:
        raise RuntimeError(f"the recorded sample failed: {sample.error}")
    return sample.answer


class InspectLogAgent:
    """``inspect:LOG``: replays the logged sample whose id is the case id (same epoch, else epoch 1)."""

    def __init__(self, location: str | Path) -> None:
        self.location = Path(location)
        self.samples = read_samples(self.location)
        models = sorted({s.model for s in self.samples.values() if s.model})
        self.name = "inspect:" + (models[0] if len(models) == 1 else self.location.name)

    def cases(self) -> list[str]:
        """Sample ids found in the logs, sorted."""
        return sorted({key[0] for key in self.samples})

    def find(self, case_id: str, epoch: int = 1) -> RecordedSample:
        sample = self.samples.get((case_id, epoch)) or self.samples.get((case_id, 1))
        if sample is None:
            raise LookupError(
                f"no sample {case_id!r} in the Inspect logs at {self.location} "
                f"(samples: {', '.join(self.cases()[:10])}"
                f"{' ...' if len(self.cases()) > 10 else ''})"
            )
        return sample

    def run(self, task: Task, tools: Toolbox) -> str | None:
        return replay(self.find(task.case_id, task.epoch), tools)
