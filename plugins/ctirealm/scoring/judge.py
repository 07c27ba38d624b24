"""An LLM judge for compat scoring (``--realm-judge MODEL``), over any OpenAI-compatible API.

It answers the reference benchmark's two judged questions — how well the
agent used threat intelligence (C0) and how good its Sigma rule is (Sigma
quality: syntax and specificity) — with prompts in this project's own words.
Each question asks for a JSON object with scores between 0 and 1 and a short
reason; the reply is parsed leniently (code fences, text around the JSON,
scores written as ``"0.8"``, ``80%``, ``8/10`` or on a 0–10 or 0–100 scale).
Requests use temperature 0 (dropped automatically for models that accept
only their default), the SDK's retries for rate limits and server errors, and
fail with `JudgeError` naming the model and what went wrong — a judge failure
is never silently scored as zero.
"""

from __future__ import annotations

import json
import os
import re
import threading
from typing import Any

DEFAULT_TIMEOUT = 120.0
DEFAULT_RETRIES = 4
MAX_REASONING_CHARS = 24_000
MAX_TITLES = 60
MAX_RULE_CHARS = 20_000

CTI_SYSTEM = """\
You grade one step of a detection-engineering exercise: finding and using threat intelligence.
An analyst was given a detection objective and a library of threat-intelligence reports that can
be browsed by tag. Judge whether the analyst looked for reports relevant to the objective and
used what they read to understand the attack (its techniques, tooling, artefacts) before
writing detections.

Score from 0 to 1:
- 1.0: searched tags that fit the objective, found the relevant reports and drew concrete
  details from them into the analysis;
- about 0.5: partly relevant searching, or relevant reports found but little use made of them;
- 0.0: irrelevant searching, or no sign the intelligence informed the work.

Reply with only a JSON object: {"score": <number from 0 to 1>, "reason": "<one or two sentences>"}
"""

SIGMA_SYSTEM = """\
You review a Sigma detection rule written for a stated detection objective. Give two scores,
each from 0 to 1:

- "syntax": is it a well-formed Sigma rule? YAML that parses; title, logsource and detection
  present; selections referenced by a valid condition; sensible field modifiers. 1.0 means a
  Sigma converter would accept it as is; 0.0 means it is not a Sigma rule.
- "specificity": does the detection logic single out the behaviour in the objective? 1.0 means
  it keys on the distinctive fields and values of that behaviour (and would stay quiet on normal
  activity); about 0.5 means it is on topic but broad or missing key conditions; 0.0 means it
  detects something else or almost everything.

Reply with only a JSON object:
{"syntax": <number from 0 to 1>, "specificity": <number from 0 to 1>, "reason": "<one or two sentences>"}
"""


class JudgeError(RuntimeError):
    """The judge could not give a score; the message names the model and the cause."""


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit:,} characters omitted ...]\n{text[-half:]}"


_NUMBER = r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def parse_reply(text: str, keys: tuple[str, ...]) -> dict[str, float]:
    """The scores named *keys* in a judge's reply, each normalised into [0, 1].

    Raises ValueError when a score is missing or cannot be read as a number.
    """
    found: dict[str, Any] = {}
    decoder = json.JSONDecoder()
    for candidate in [m.group(1) for m in _FENCE.finditer(text)] + [text]:
        for match in re.finditer(r"\{", candidate):
            try:
                value, _ = decoder.raw_decode(candidate, match.start())
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                lowered = {str(k).strip().lower(): v for k, v in value.items()}
                for key in keys:
                    if key not in found and key in lowered:
                        found[key] = lowered[key]
            if all(key in found for key in keys):
                break
        if all(key in found for key in keys):
            break
    for key in keys:  # not JSON: "score: 0.7", "Specificity = 8/10"
        if key not in found:
            pattern = rf'"?{key}"?\s*[:=]\s*"?({_NUMBER}\s*(?:%|/\s*{_NUMBER})?)'
            loose = re.search(pattern, text, re.IGNORECASE)
            if loose:
                found[key] = loose.group(1)
    missing = [key for key in keys if key not in found]
    if missing:
        raise ValueError(f"no {', '.join(missing)} in the reply")
    return {key: _unit(found[key], key) for key in keys}


def _unit(value: Any, key: str) -> float:
    """A score as a number in [0, 1]: accepts 0–1, percentages, fractions and 0–10 / 0–100 scales."""
    if isinstance(value, bool):
        raise ValueError(f"{key} is not a number: {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if match := re.fullmatch(rf"({_NUMBER})\s*%", text):
            number = float(match.group(1)) / 100
        elif match := re.fullmatch(rf"({_NUMBER})\s*/\s*({_NUMBER})", text):
            denominator = float(match.group(2))
            if not denominator:
                raise ValueError(f"{key} is not a number: {value!r}")
            number = float(match.group(1)) / denominator
        else:
            try:
                number = float(text)
            except ValueError:
                raise ValueError(f"{key} is not a number: {value!r}") from None
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        raise ValueError(f"{key} is not a number: {value!r}")
    if number != number or number < 0:  # NaN or negative
        raise ValueError(f"{key} is out of range: {value!r}")
    if number > 1:
        if number <= 10:
            number /= 10
        elif number <= 100:
            number /= 100
        else:
            raise ValueError(f"{key} is out of range: {value!r}")
    return min(1.0, number)


class OpenAIJudge:
    """The compat `Judge` protocol answered by a chat model (see the module docstring)."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_RETRIES,
    ) -> None:
        if not model or not model.strip():
            raise JudgeError("the judge needs a model name (--realm-judge MODEL)")
        self.model = model.strip()
        self.base_url = base_url or None
        self.api_key = api_key
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.temperature: float | None = 0.0
        self._client: Any = None
        self._lock = threading.Lock()

    # -- the Judge protocol ---------------------------------------------------------

    def cti_analysis(self, objective: str, tags: list[str], titles: list[str], reasoning: str) -> float:
        """How well the agent found and used threat intelligence for *objective*, in [0, 1]."""
        shown = titles[:MAX_TITLES]
        more = f"\n(and {len(titles) - len(shown)} more)" if len(titles) > len(shown) else ""
        prompt = (
            f"DETECTION OBJECTIVE:\n{objective.strip()}\n\n"
            f"TAGS THE ANALYST SEARCHED:\n{json.dumps(list(tags), ensure_ascii=False)}\n\n"
            "TITLES OF THE REPORTS THE ANALYST SAW:\n"
            + ("\n".join(f"- {t}" for t in shown) + more if shown else "(none)")
            + "\n\nTHE ANALYST'S NOTES AND REASONING:\n"
            + (_clip(reasoning.strip(), MAX_REASONING_CHARS) or "(none)")
        )
        return self._ask(CTI_SYSTEM, prompt, ("score",), "CTI analysis")["score"]

    def sigma_quality(self, objective: str, sigma_rule: str) -> tuple[float, float]:
        """(syntax, specificity) of *sigma_rule* for *objective*, each in [0, 1]."""
        if not sigma_rule.strip():
            return 0.0, 0.0
        prompt = (
            f"DETECTION OBJECTIVE:\n{objective.strip()}\n\n"
            f"SIGMA RULE:\n```yaml\n{_clip(sigma_rule, MAX_RULE_CHARS)}\n```"
        )
        scores = self._ask(SIGMA_SYSTEM, prompt, ("syntax", "specificity"), "Sigma quality")
        return scores["syntax"], scores["specificity"]

    # -- plumbing ---------------------------------------------------------------------

    def _where(self) -> str:
        return f"judge {self.model!r} at {self.base_url or os.environ.get('OPENAI_BASE_URL') or 'OpenAI'}"

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    from openai import OpenAI
                except ImportError as exc:
                    raise JudgeError(
                        "the LLM judge needs the openai package: pip install 'ctirealm[openai]'"
                    ) from exc
                key = self.api_key or os.environ.get("OPENAI_API_KEY")
                if not key:
                    if not (self.base_url or os.environ.get("OPENAI_BASE_URL")):
                        raise JudgeError(f"{self._where()}: no API key; set OPENAI_API_KEY")
                    key = "unused"
                options: dict[str, Any] = {
                    "api_key": key,
                    "timeout": self.timeout,
                    "max_retries": self.max_retries,
                }
                if self.base_url:
                    options["base_url"] = self.base_url
                self._client = OpenAI(**options)
            return self._client

    def _ask(self, system: str, prompt: str, keys: tuple[str, ...], what: str) -> dict[str, float]:
        import openai

        client = self._get_client()
        messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
        request: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.temperature is not None:
            request["temperature"] = self.temperature
        try:
            try:
                response = client.chat.completions.create(**request)
            except openai.BadRequestError as exc:
                # Some reasoning models accept only their default temperature: ask again without it.
                if "temperature" not in request or "temperature" not in str(exc).lower():
                    raise
                self.temperature = None
                del request["temperature"]
                response = client.chat.completions.create(**request)
        except openai.OpenAIError as exc:
            status = getattr(exc, "status_code", None)
            detail = f"HTTP {status}: " if status else f"{type(exc).__name__}: "
            message = re.sub(r"^Error code: \d+ - ", "", getattr(exc, "message", None) or str(exc))
            raise JudgeError(f"{self._where()} failed on {what}: {detail}{message}") from exc
        choices = getattr(response, "choices", None) or []
        content = choices[0].message.content if choices and choices[0].message else None
        if not isinstance(content, str) or not content.strip():
            raise JudgeError(f"{self._where()} gave an empty reply on {what}")
        try:
            return parse_reply(content, keys)
        except ValueError as exc:
            raise JudgeError(
                f"{self._where()} gave an unreadable reply on {what} ({exc}): {content.strip()[:300]!r}"
            ) from None
