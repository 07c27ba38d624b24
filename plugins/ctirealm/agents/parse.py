"""Parsing an agent's final answer: JSON possibly wrapped in code fences or followed by text."""

from __future__ import annotations

import json
import re
from typing import Any

from ..tools.toolbox import validate_output
from ..tools.trajectory import Submission

MAX_ANSWER_BYTES = 5_000_000
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)```", re.DOTALL)


class SubmissionError(ValueError):
    """The answer is not a usable submission; the message says why."""


def extract_json(text: str) -> Any:
    """The answer object in *text*: a fenced block, the whole text, or the first object with our keys."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    fallback: Any = None
    for candidate in candidates:
        stripped = candidate.strip()
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            pass
        for match in re.finditer(r"\{", stripped):
            try:
                value, _ = decoder.raw_decode(stripped, match.start())
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict) and "kql_query" in value:
                return value
            if fallback is None and isinstance(value, dict):
                fallback = value
    if fallback is not None:
        return fallback
    raise SubmissionError("no JSON object found in the answer")


def to_submission(answer: Any) -> Submission:
    """Turn what an agent returned (Submission, dict, JSON text or bytes) into a validated Submission."""
    if isinstance(answer, Submission):
        data: Any = answer.to_dict()
    elif isinstance(answer, (bytes, bytearray)):
        if len(answer) > MAX_ANSWER_BYTES:
            raise SubmissionError(f"answer is {len(answer):,} bytes; the limit is {MAX_ANSWER_BYTES:,}")
        data = extract_json(bytes(answer).decode("utf-8", errors="replace"))
    elif isinstance(answer, str):
        if len(answer.encode("utf-8", errors="replace")) > MAX_ANSWER_BYTES:
            raise SubmissionError(f"answer is over the {MAX_ANSWER_BYTES:,}-byte limit")
        data = extract_json(answer)
    elif isinstance(answer, dict):
        data = answer
    else:
        raise SubmissionError(f"answer must be a JSON object, got {type(answer).__name__}")
    problems = validate_output(data)
    if problems:
        raise SubmissionError("; ".join(problems))
    return Submission(sigma_rule=data["sigma_rule"], kql_query=data["kql_query"],
                      query_results=list(data["query_results"]))
