"""``tables.yaml``, the Sigma mapping as data: read once, checked for shape, and looked up.

Kept apart from `pipelines` (which turns it into pySigma items) so that reading it does not
import pySigma: a built-in agent names a table's logsource without loading the converter.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

KINDS: tuple[str, ...] = ("scalar", "list", "json")  # what tables.yaml may declare


class PipelineSpecError(ValueError):
    """``tables.yaml`` (or a spec given in its place) is malformed."""


@lru_cache(maxsize=1)
def _spec_text() -> str:
    return resources.files(__package__).joinpath("tables.yaml").read_text(encoding="utf-8")


def load_spec(text: str | None = None) -> dict[str, Any]:
    """The raw mapping spec (``tables.yaml`` unless *text* is given), checked for shape.

    The shipped spec is parsed once per process and shared: callers read it, never change
    it (scoring binds it to a store's schemas twice per case; parsing the YAML cost 65 ms).
    """
    if text is None:
        return _shipped_spec()
    return _checked_spec(text)


def table_logsource(table: str) -> dict[str, str]:
    """The logsource a Sigma rule for *table* names: the first that ``tables.yaml`` lists for it
    (without its extra ``conditions``). KeyError for a table the spec does not map."""
    first = _shipped_spec()["tables"][table]["logsources"][0]
    return {k: str(v) for k, v in first.items() if k != "conditions"}


@lru_cache(maxsize=1)
def _shipped_spec() -> dict[str, Any]:
    return _checked_spec(_spec_text())


def _checked_spec(text: str) -> dict[str, Any]:
    doc = yaml.safe_load(text) or {}
    tables = doc.get("tables")
    if not isinstance(tables, dict) or not tables:
        raise PipelineSpecError("spec: a non-empty `tables` mapping is required")
    for table, entry in tables.items():
        if not isinstance(entry, dict) or not entry.get("logsources"):
            raise PipelineSpecError(f"spec: {table}: `logsources` is required")
        for target in (entry.get("fields") or {}).values():
            if isinstance(target, dict):
                if "element" in target:
                    if "value" not in target:
                        raise PipelineSpecError(f"spec: {table}: element fields need `value`")
                    continue
                if "expr" not in target:
                    raise PipelineSpecError(f"spec: {table}: expression fields need `expr`")
                if target.get("kind", "scalar") not in KINDS:
                    raise PipelineSpecError(f"spec: {table}: kind must be one of {KINDS}")
            elif not isinstance(target, str):
                raise PipelineSpecError(f"spec: {table}: field targets are names or mappings")
    return doc
