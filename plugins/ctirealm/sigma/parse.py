"""Reading Sigma rules: YAML text, files or mappings, with the project's ``ctirealm:`` expectations.

`parse_rule` never lets a malformed rule escape as a bare exception: it returns a `ParsedRule`
whose ``error`` says what is wrong (invalid YAML with line and column, a missing section, a
pySigma parse error), so one bad file never stops the others.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError, SigmaRuleLocation
from sigma.rule import SigmaRule

EXPECTATIONS_KEY = "ctirealm"


class SigmaRuleError(ValueError):
    """A rule could not be used; the message names the rule, the construct and the reason."""

    def __init__(
        self, rule: str, message: str, *, construct: str | None = None, stage: str = "convert"
    ) -> None:
        self.rule = rule
        self.construct = construct
        self.reason = message
        self.stage = stage
        super().__init__(f"{rule}: {message}")


@dataclass(frozen=True)
class Expectations:
    """The ``ctirealm:`` key: which case's attack events a rule must catch, and FP budget."""

    case: str | None = None
    must_match: str | tuple[str, ...] | None = None  # "all", event ids, or None
    max_false_positives: int | None = None

    @classmethod
    def from_mapping(cls, doc: Any, where: str = "ctirealm") -> Expectations:
        if doc is None:
            return cls()
        if not isinstance(doc, Mapping):
            raise ValueError(f"{where}: expected a mapping with case, must_match, max_false_positives")
        unknown = sorted(set(doc) - {"case", "must_match", "max_false_positives"})
        if unknown:
            raise ValueError(
                f"{where}: unknown keys {unknown}; expected case, must_match, max_false_positives"
            )
        must = doc.get("must_match")
        if isinstance(must, str):
            if must != "all":
                raise ValueError(f"{where}.must_match: expected 'all' or a list of event ids")
        elif isinstance(must, list):
            must = tuple(str(v) for v in must)
        elif must is not None:
            raise ValueError(f"{where}.must_match: expected 'all' or a list of event ids")
        fp = doc.get("max_false_positives")
        if fp is not None and (isinstance(fp, bool) or not isinstance(fp, int) or fp < 0):
            raise ValueError(f"{where}.max_false_positives: expected a whole number >= 0")
        case = doc.get("case")
        if must == "all" and not case:
            raise ValueError(f"{where}: must_match: all needs a case")
        return cls(case=str(case) if case else None, must_match=must, max_false_positives=fp)

    @property
    def declared(self) -> bool:
        return any(v is not None for v in (self.case, self.must_match, self.max_false_positives))


@dataclass
class ParsedRule:
    """A rule and its expectations, or the reason it could not be read."""

    label: str
    rule: SigmaRule | None = None
    expectations: Expectations = field(default_factory=Expectations)
    path: Path | None = None
    text: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.rule is not None and self.error is None

    def require(self) -> SigmaRule:
        if self.rule is None:
            raise SigmaRuleError(self.label, self.error or "not parsed", stage="parse")
        return self.rule


def rule_label(
    rule: SigmaRule | SigmaCorrelationRule | None, path: Path | None = None, fallback: str = "rule"
) -> str:
    """``'Title' (path)`` — how errors and reports name a rule."""
    title = getattr(rule, "title", None) if rule is not None else None
    rule_id = getattr(rule, "id", None)
    where = str(path) if path is not None else (str(rule_id) if rule_id else "")
    if title and where:
        return f"{title!r} ({where})"
    return repr(title) if title else (where or fallback)


def _yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"invalid YAML{where}: {getattr(exc, 'problem', None) or exc}"


def parse_rule(source: str | Path | Mapping[str, Any] | SigmaRule, *, path: Path | None = None) -> ParsedRule:
    """Parse a Sigma rule from YAML text, a ``.yml`` path, a mapping or a `SigmaRule`."""
    if isinstance(source, SigmaRule):
        return ParsedRule(rule_label(source, path), rule=source, path=path)
    text: str | None = None
    if isinstance(source, Path):
        path = source
        try:
            text = source.read_text(encoding="utf-8")
        except OSError as exc:
            return ParsedRule(str(source), path=source, error=f"cannot read: {exc.strerror}")
        except UnicodeDecodeError as exc:
            return ParsedRule(str(source), path=source, error=f"not UTF-8 text: {exc.reason}")
    elif isinstance(source, str):
        text = source
    label = str(path) if path else "rule"
    if text is not None:
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            return ParsedRule(label, path=path, text=text, error=_yaml_error(exc))
        if not docs:
            return ParsedRule(label, path=path, text=text, error="empty document: no Sigma rule")
        if len(docs) > 1:
            return ParsedRule(
                label,
                path=path,
                text=text,
                error=(
                    "several YAML documents: give one Sigma rule per file (rule collections and "
                    "correlation rules are not supported)"
                ),
            )
        doc = docs[0]
    else:
        doc = source
    if not isinstance(doc, Mapping):
        return ParsedRule(
            label,
            path=path,
            text=text,
            error=f"expected a YAML mapping (a Sigma rule), got {type(doc).__name__}",
        )
    doc = copy.deepcopy(dict(doc))
    title = doc.get("title")
    if isinstance(title, str) and title.strip():
        label = f"{title!r} ({path})" if path else repr(title)
    try:
        expectations = Expectations.from_mapping(doc.pop(EXPECTATIONS_KEY, None))
    except ValueError as exc:
        return ParsedRule(label, path=path, text=text, error=str(exc))
    if "correlation" in doc:
        return ParsedRule(
            label,
            path=path,
            text=text,
            expectations=expectations,
            error=("correlation rules are not supported: convert and gate their base rules"),
        )
    for key in ("logsource", "detection"):
        if key not in doc:
            return ParsedRule(
                label,
                path=path,
                text=text,
                expectations=expectations,
                error=f"missing required section {key!r}",
            )
    try:
        collection = SigmaCollection.from_dicts([doc], collect_errors=False)
        rule = collection.rules[0]
    except SigmaError as exc:
        return ParsedRule(
            label, path=path, text=text, expectations=expectations, error=f"not a valid Sigma rule: {exc}"
        )
    except (TypeError, AttributeError, KeyError, ValueError) as exc:
        return ParsedRule(
            label,
            path=path,
            text=text,
            expectations=expectations,
            error=f"not a valid Sigma rule: {type(exc).__name__}: {exc}",
        )
    if not isinstance(rule, SigmaRule):
        return ParsedRule(
            label,
            path=path,
            text=text,
            expectations=expectations,
            error="correlation rules are not supported",
        )
    if path is not None:
        rule.source = SigmaRuleLocation(path)
    # Errors pySigma defers to first use of the condition surface here, at parse time.
    try:
        for condition in rule.detection.parsed_condition:
            condition.parsed  # noqa: B018
    except SigmaError as exc:
        return ParsedRule(
            label, path=path, text=text, expectations=expectations, error=f"invalid condition: {exc}"
        )
    return ParsedRule(rule_label(rule, path), rule=rule, expectations=expectations, path=path, text=text)


def parse_kql_rule(path: Path) -> ParsedRule:
    """A ``.kql`` rule: its text, and the expectations of the sibling ``.yml``/``.yaml``."""
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return ParsedRule(label, path=path, error=f"cannot read: {exc}")
    if not text.strip():
        return ParsedRule(label, path=path, text=text, error="empty query")
    sibling = next((p for p in (path.with_suffix(".yml"), path.with_suffix(".yaml")) if p.exists()), None)
    expectations = Expectations()
    if sibling is not None:
        try:
            doc = yaml.safe_load(sibling.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            return ParsedRule(label, path=path, text=text, error=f"{sibling.name}: invalid YAML{where}")
        if not isinstance(doc, dict):
            return ParsedRule(label, path=path, text=text, error=f"{sibling.name}: expected a mapping")
        try:
            expectations = Expectations.from_mapping(doc.get("ctirealm"), f"{sibling.name}: ctirealm")
        except ValueError as exc:
            return ParsedRule(label, path=path, text=text, error=str(exc))
        if doc.get("title"):
            label = f"{doc['title']!r} ({path})"
    return ParsedRule(label, path=path, text=text, expectations=expectations)
