"""``openai:<model>``: a tool-calling (ReAct) loop over any OpenAI-compatible chat completions API.

The loop: send the system prompt and the objective with the toolbox's tool
schemas; run every tool call the model makes and send the results back; stop
at the first assistant message without tool calls, which is the final answer
(JSON, possibly in a code fence or followed by text). Every message counts
towards the task's message limit (70 by default, as upstream), the system
prompt and the objective included; a model that reaches it without answering
ends with no submission.

It talks to OpenAI, Azure OpenAI's v1 endpoint, vLLM, Ollama, LM Studio,
llama.cpp's server and others through ``base_url`` (``--realm-base-url``).
Malformed tool arguments reach the toolbox as raw text, whose ``Error: ...``
answer lets the model correct itself. Rate limits (429), server errors (5xx),
timeouts and dropped connections are retried with exponential backoff,
honouring ``Retry-After``; other API errors end the case as crashed with the
API's message. Token usage is summed per case and recorded as a note in the
trajectory (and kept on ``last_usage`` / ``usage``).
"""

from __future__ import annotations

import os
import random
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from ..tools.toolbox import AgentStopped, Toolbox
from ..tools.trajectory import Step
from .base import DEFAULT_MESSAGE_LIMIT, Task

DEFAULT_REQUEST_TIMEOUT = 300.0
DEFAULT_MAX_RETRIES = 6
DEFAULT_BACKOFF = 1.0
MAX_BACKOFF = 60.0
#: Non-standard message fields in which servers return a model's reasoning.
REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")
_RETRY_STATUSES = {408, 409, 429}


class ModelAPIError(RuntimeError):
    """The model API refused or failed a request for good; the message says which and why."""


def _note(tools: Toolbox, text: str) -> None:
    """Record a runner note in the trajectory (not assistant text: never scored as analysis)."""
    tools.trajectory.steps.append(Step(kind="note", text=text))


def resolve_api_key(api_key: str | None, base_url: str | None) -> str:
    """The key to send: the given one, else ``OPENAI_API_KEY``, else a placeholder for self-hosted servers.

    Without any key, a server at an explicit base URL (``--realm-base-url`` or
    ``OPENAI_BASE_URL``: a loopback vLLM or Ollama, say) gets the placeholder
    ``unused``; servers that ignore keys accept it, and one that checks keys
    answers 401, reported as such. The default OpenAI endpoint needs a real
    key, so its absence is an error at once rather than at the first request.
    """
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if key:
        return key
    if base_url or os.environ.get("OPENAI_BASE_URL"):
        return "unused"
    raise ModelAPIError(
        "no API key: set OPENAI_API_KEY, or point --realm-base-url at a server that needs none"
    )


def make_client(base_url: str | None, api_key: str | None, timeout: float) -> Any:
    """An ``openai.OpenAI`` client with the SDK's own retries off (callers retry, cancellably)."""
    from openai import OpenAI

    options: dict[str, Any] = {
        "api_key": resolve_api_key(api_key, base_url),
        "timeout": timeout,
        "max_retries": 0,
    }
    if base_url:
        options["base_url"] = base_url
    return OpenAI(**options)


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue
    return None


def _retryable(exc: Exception) -> bool:
    import openai

    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRY_STATUSES or exc.status_code >= 500
    return False


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    message = re.sub(r"^Error code: \d+ - ", "", getattr(exc, "message", None) or str(exc))
    return f"HTTP {status}: {message}" if status else f"{type(exc).__name__}: {message}"


@dataclass
class Usage:
    """Tokens and requests summed over one case (or, on the agent, over all its cases)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int = 0
    retries: int = 0

    def add(self, usage: Any) -> None:
        self.requests += 1
        if usage is None:
            return
        self.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
        self.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
        self.total_tokens += int(getattr(usage, "total_tokens", 0) or 0)
        details = getattr(usage, "completion_tokens_details", None)
        self.reasoning_tokens += int(getattr(details, "reasoning_tokens", 0) or 0)

    def merge(self, other: Usage) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def summary(self) -> str:
        text = (
            f"{self.requests} requests, {self.prompt_tokens:,} prompt + "
            f"{self.completion_tokens:,} completion = {self.total_tokens:,} tokens"
        )
        if self.reasoning_tokens:
            text += f" ({self.reasoning_tokens:,} reasoning)"
        if self.retries:
            text += f", {self.retries} retries"
        return text


@dataclass
class _Run:
    cancelled: threading.Event = field(default_factory=threading.Event)
    usage: Usage = field(default_factory=Usage)


class OpenAIAgent:
    """A ReAct loop through ``chat.completions`` with the toolbox's function-calling schemas.

    Options: *base_url* (an OpenAI-compatible API; default: OpenAI or
    ``OPENAI_BASE_URL``), *api_key* (default ``OPENAI_API_KEY``), *temperature*
    (not sent when None, for models that refuse it), *request_timeout* per
    request in seconds, *max_retries* and *backoff* (first delay in seconds,
    doubled per retry, capped at 60 s), *max_tokens* per response,
    *parallel_tool_calls* (None: the server's default), *extra_body* (sent
    with every request, e.g. ``{"reasoning_effort": "medium"}``).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        max_tokens: int | None = None,
        parallel_tool_calls: bool | None = None,
        extra_body: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        model = model.strip()
        if not model:
            raise ValueError("openai agent needs a model name, e.g. openai:gpt-4.1")
        self.model = model
        self.base_url = base_url or None
        self.temperature = temperature
        self.request_timeout = float(request_timeout)
        self.max_retries = max(0, int(max_retries))
        self.backoff = max(0.0, float(backoff))
        self.max_tokens = max_tokens
        self.parallel_tool_calls = parallel_tool_calls
        self.extra_body = dict(extra_body or {})
        self.name = name or f"openai:{model}"
        self.usage = Usage()  # over every case this agent ran
        self.last_usage: Usage | None = None
        try:
            self._client = make_client(self.base_url, api_key, self.request_timeout)
        except ModelAPIError as exc:
            from . import AgentSpecError  # a usage error, reported before any case runs

            raise AgentSpecError(f"openai:{model}: {exc}") from None
        self._active: dict[int, _Run] = {}
        self._lock = threading.Lock()

    # -- the runner's interface ---------------------------------------------------

    def run(self, task: Task, tools: Toolbox) -> Any:
        run = _Run()
        key = id(run)
        with self._lock:
            self._active[key] = run
        try:
            return self._loop(run, task, tools)
        finally:
            with self._lock:
                self._active.pop(key, None)
                self.usage.merge(run.usage)
            self.last_usage = run.usage
            _note(tools, f"model usage ({self.model}): {run.usage.summary()}")

    def cancel(self) -> None:
        """Stop every run in progress at its next request or retry wait (called on timeout)."""
        with self._lock:
            for run in self._active.values():
                run.cancelled.set()

    # -- the loop -----------------------------------------------------------------

    def _loop(self, run: _Run, task: Task, tools: Toolbox) -> Any:
        limit = task.message_limit or DEFAULT_MESSAGE_LIMIT
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": task.system_prompt},
            {"role": "user", "content": task.user_message},
        ]
        schemas = tools.openai_tools()
        while True:
            if len(messages) >= limit:
                _note(
                    tools,
                    f"message limit of {limit} reached without a final answer ({len(messages)} messages)",
                )
                return None
            message, finish = self._complete(run, messages, schemas)
            text = message.content if isinstance(message.content, str) else ""
            reasoning = _reasoning(message)
            calls = list(message.tool_calls or [])
            if text or reasoning:
                tools.say(text, reasoning)
            if not calls:
                messages.append({"role": "assistant", "content": text})
                if finish == "length":
                    _note(tools, "the final answer was cut off by the response token limit")
                # The text as written: the runner parses it (and says why when it is no
                # submission), and compat scoring reads the record as the reference would.
                return text
            messages.append(
                {
                    "role": "assistant",
                    "content": text or None,
                    "tool_calls": [_call_dict(call, index) for index, call in enumerate(calls)],
                }
            )
            for index, call in enumerate(calls):
                call_id = call.id or f"call_{index}"
                function = getattr(call, "function", None)
                if getattr(call, "type", "function") != "function" or function is None:
                    content = f"Error: only function tools are available; use one of {', '.join(tools.names)}"
                else:
                    content = tools.call(function.name or "", function.arguments or "", call_id=call_id)
                messages.append({"role": "tool", "tool_call_id": call_id, "content": content})

    def _complete(
        self, run: _Run, messages: list[dict[str, Any]], schemas: list[dict[str, Any]]
    ) -> tuple[Any, str | None]:
        """One chat completion, retried on transient failures; the first choice's message."""
        request: dict[str, Any] = {"model": self.model, "messages": messages}
        if schemas:
            request["tools"] = schemas
        if self.temperature is not None:
            request["temperature"] = self.temperature
        if self.max_tokens is not None:
            request["max_tokens"] = self.max_tokens
        if self.parallel_tool_calls is not None and schemas:
            request["parallel_tool_calls"] = self.parallel_tool_calls
        if self.extra_body:
            request["extra_body"] = self.extra_body
        attempt = 0
        while True:
            if run.cancelled.is_set():
                raise AgentStopped("the run was cancelled")
            try:
                response = self._client.chat.completions.create(**request)
            except Exception as exc:
                if not _retryable(exc) or attempt >= self.max_retries:
                    raise ModelAPIError(
                        f"{self.model} at {self.base_url or 'the default endpoint'}: {_describe(exc)}"
                        + (f" (after {attempt} retries)" if attempt else "")
                    ) from exc
                delay = _retry_after(exc)
                if delay is None:
                    delay = min(self.backoff * 2**attempt, MAX_BACKOFF) * (0.75 + random.random() / 4)
                attempt += 1
                run.usage.retries += 1
                if run.cancelled.wait(min(delay, MAX_BACKOFF)):
                    raise AgentStopped("the run was cancelled") from None
                continue
            run.usage.add(getattr(response, "usage", None))
            choices = getattr(response, "choices", None) or []
            if not choices or getattr(choices[0], "message", None) is None:
                raise ModelAPIError(
                    f"{self.model}: the API returned no message (response {str(response)[:300]})"
                )
            return choices[0].message, getattr(choices[0], "finish_reason", None)


def _reasoning(message: Any) -> str:
    extra = getattr(message, "model_extra", None) or {}
    parts = []
    for name in REASONING_FIELDS:
        value = extra[name] if name in extra else getattr(message, name, None)
        if isinstance(value, str) and value.strip():
            parts.append(value)
    return "\n".join(dict.fromkeys(parts))


def _call_dict(call: Any, index: int) -> dict[str, Any]:
    """A tool call as sent back in the assistant message (ids are required by the API)."""
    function = getattr(call, "function", None)
    if function is None:  # a non-function (custom) tool call: echo it back as-is
        data = call.model_dump(exclude_none=True) if hasattr(call, "model_dump") else {}
        data.setdefault("id", getattr(call, "id", None) or f"call_{index}")
        return data
    return {
        "id": call.id or f"call_{index}",
        "type": "function",
        "function": {"name": function.name or "", "arguments": function.arguments or ""},
    }
