"""Parsing an agent's final answer: JSON possibly wrapped in code fences or followed by text."""

from __future__ import annotations

import json
import re
from typing import Any

from ..tools.toolbox import validate_output
from ..tools.trajectory import Submission

MAX_ANSWER_BYTES = 5_000_000
SUBMIT_TOOL = "submit_detection"


def submission_schema(**extra: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of a ``submit_detection`` call (the output contract's three fields), plus
    *extra* optional properties: the one definition the tool-offering adapters share."""
    return {
        "type": "object",
        "properties": {
            "sigma_rule": {"type": "string", "description": "the Sigma rule as YAML text"},
            "kql_query": {"type": "string", "description": "the final KQL query"},
            "query_results": {
                "type": "array",
                "items": {"type": "object"},
                "description": "rows the final query returned, as column: value objects",
            },
            **extra,
        },
        "required": ["sigma_rule", "kql_query", "query_results"],
        "additionalProperties": False,
    }


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
    return Submission(
        sigma_rule=data["sigma_rule"], kql_query=data["kql_query"], query_results=list(data["query_results"])
    )


# -- the reference's reading of an answer (compat scoring only) ----------------------------------

# A json fence opening a line, or a fence closing one, wherever it is: the reference strips both
# before trying the whole text as JSON.
_REF_FENCES = re.compile(r"^```json\s*|\s*```$", re.MULTILINE)


def _ref_strings(key: str) -> tuple[str, ...]:
    # Double quotes, single quotes, then a double-quoted key with a single-quoted value.
    return (
        rf'"{key}"\s*:\s*"((?:[^"\\]|\\.)*)"',
        rf"'{key}'\s*:\s*'((?:[^'\\]|\\.)*)'",
        rf'"{key}"\s*:\s*\'((?:[^\'\\]|\\.)*)\'',
    )


# The array ends at the first "]" followed by "," or "}" (or the end): a lazy match.
_REF_ARRAYS = (
    r'"query_results"\s*:\s*(\[.*?\](?=\s*[,}]|\s*$))',
    r"'query_results'\s*:\s*(\[.*?\](?=\s*[,}]|\s*$))",
)
_REF_ARRAY_BODIES = (
    r'"query_results"\s*:\s*\[(.*?)\](?=\s*[,}]|\s*$)',
    r"'query_results'\s*:\s*\[(.*?)\](?=\s*[,}]|\s*$)",
)


def reference_fields(output: str) -> dict[str, Any]:
    """The answer as the reference scorer reads it; ``{}`` when it finds nothing.

    Compat scoring only. The whole text is tried as JSON once its fences are stripped (an
    object, or nothing); if it is not JSON, each field is looked for with a regular
    expression: the array match stops at the first ``]`` followed by ``,`` or ``}`` (so
    ``query_results`` can be lost), and string values are unescaped for ``\\n``, ``\\t`` and
    quotes only. Nothing is validated: keys and types are whatever was written. Strict scoring
    uses `to_submission`.
    """
    try:
        value = json.loads(_REF_FENCES.sub("", output.strip()))
    except json.JSONDecodeError:
        return _reference_fallback(output)
    return value if isinstance(value, dict) else {}


def _reference_fallback(output: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key in ("sigma_rule", "kql_query"):
        for pattern in _ref_strings(key):  # each quoting over the whole text, in turn
            match = re.search(pattern, output, re.DOTALL)
            if match:
                found[key] = (
                    match.group(1)
                    .replace("\\n", "\n")
                    .replace("\\t", "\t")
                    .replace('\\"', '"')
                    .replace("\\'", "'")
                )
                break
    for pattern in _REF_ARRAYS:
        match = re.search(pattern, output, re.DOTALL)
        if match:
            try:
                found["query_results"] = json.loads(match.group(1))
                break
            except json.JSONDecodeError:
                continue
    if "query_results" not in found:
        match = re.search(_REF_ARRAY_BODIES[0], output, re.DOTALL) or re.search(
            _REF_ARRAY_BODIES[1], output, re.DOTALL
        )
        if match:
            body = match.group(1).strip()
            try:
                found["query_results"] = json.loads(f"[{body}]") if body else []
            except json.JSONDecodeError:
                pass
    return found
