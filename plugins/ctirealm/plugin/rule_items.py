"""The rules gate's collectors and items: parse, validate, convert and execute one rule file.

Loaded by the `rules` hook module when a rule file is collected, so that pySigma and
the engine load only in runs that gate rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..cases import CaseSet, load_cases
from ..engine import EngineError
from ..scoring.detection import evaluate, evaluate_rule, neutral_events
from ..scoring.model import DetectionResult
from ..sigma import DEFAULT_EXCLUDE
from ..sigma.convert import Conversion, convert, schemas_of
from ..sigma.parse import (
    Expectations,
    ParsedRule,
    SigmaRuleError,
    parse_kql_rule,
    parse_rule,
)
from ..sigma.validate import RuleValidator
from . import (
    StoreUnavailable,
    cases_root,
    dataset_splits,
    session_engine,
    session_store,
    split_engine,
)
from .checks import CheckFailed, CheckItem, check_items, relative
from .problems import case_problems

_CASES = pytest.StashKey[CaseSet]()
_VALIDATOR = pytest.StashKey[RuleValidator]()
_SIGMA_ITEMS = ("parse", "validate", "convert", "true_positives", "false_positives")
_KQL_ITEMS = ("parse", "true_positives", "false_positives")
_EXAMPLES = 3


# -- shared state -------------------------------------------------------------------------


def _case_set(config: pytest.Config) -> CaseSet:
    if _CASES not in config.stash:
        tables = session_store(config).known_tables()
        config.stash[_CASES] = load_cases(cases_root(config), tables=tables)
    return config.stash[_CASES]


def _validator(config: pytest.Config) -> RuleValidator:
    if _VALIDATOR not in config.stash:
        exclude = frozenset(str(config.getini("realm_rules_validators_exclude")).split())
        # The run's own tables (--realm-telemetry), whose columns a rule may name.
        config.stash[_VALIDATOR] = RuleValidator(
            exclude | DEFAULT_EXCLUDE, schemas=schemas_of(session_engine(config))
        )
    return config.stash[_VALIDATOR]


class RuleCheckFailed(CheckFailed):
    """A rules gate check failed; the message says exactly what is wrong."""


@dataclass
class Expected:
    """What the rule must catch, resolved against the cases."""

    ids: dict[str, list[str]] | list[str] | None
    label: str  # "attack events of linux_003" / "listed events"
    required: bool  # must_match given
    #: Other cases' attack events that count neither way (a technique shared with the case).
    neutral: frozenset[tuple[str, str]] = frozenset()


def _engine(config: pytest.Config, split: str) -> Any:
    """The engine a rule runs on in *split*: the session's (local or a cluster) for dev, the
    local store of any other split."""
    return session_engine(config) if split == "dev" else split_engine(config, split)


def _expected(config: pytest.Config, exp: Expectations, split: str = "dev") -> Expected:
    case = None
    if exp.case:
        cases = _case_set(config)
        case = cases.cases.get(exp.case)
        if case is None:
            problems = [str(e) for e in cases.errors if Path(e.path).stem == exp.case]
            why = f": {problems[0]}" if problems else f" under {cases.root}"
            raise RuleCheckFailed(f"ctirealm.case: unknown case {exp.case!r}{why}")
        labels = session_store(config, split).labels
        case = case.bound(labels)  # a case played from a scenario: its events in this split
        neutral = neutral_events(case, cases, labels)
    if isinstance(exp.must_match, tuple):
        return Expected(
            list(exp.must_match), "listed events", True, neutral if case is not None else frozenset()
        )
    if case is not None:
        ids = {t: list(v) for t, v in case.ground_truth.attack_events.items()}
        return Expected(ids, f"attack events of {exp.case}", exp.must_match == "all", neutral)
    return Expected(None, "", False)


# -- collectors ----------------------------------------------------------------------------


class RuleFile(pytest.File):
    """One rule file; its items share the parsed rule and one evaluation.

    A subclass says which items it has (``item_names``), how its file is read
    (``read``) and how the rule is executed (``execute``).
    """

    item_names: tuple[str, ...] = ()
    read: Callable[[Path], ParsedRule]
    execute: Callable[[ParsedRule, Expected, Any, Any], DetectionResult]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._parsed: ParsedRule | None = None
        self._conversion: Conversion | SigmaRuleError | None = None
        self._results: dict[str, DetectionResult] = {}

    def collect(self) -> list[pytest.Item]:
        return check_items(
            self, RuleItem, self.item_names, pytest.mark.realm_rule(str(self.path)), f"rule:{self.path}"
        )

    def parsed(self) -> ParsedRule:
        """The rule as read by the subclass's ``read`` (once)."""
        if self._parsed is None:
            self._parsed = type(self).read(self.path)
        return self._parsed

    def result(self, split: str = "dev") -> DetectionResult:
        """The rule executed over *split*'s store by the one detection evaluator (once)."""
        if split not in self._results:
            parsed = self.parsed()
            expected = _expected(self.config, parsed.expectations, split)
            self._results[split] = self.execute(
                parsed, expected, _engine(self.config, split), session_store(self.config, split).labels
            )
        return self._results[split]


class SigmaRuleFile(RuleFile):
    item_names = _SIGMA_ITEMS
    read = staticmethod(parse_rule)

    def conversion(self) -> Conversion:
        if self._conversion is None:
            engine = session_engine(self.config)
            try:
                self._conversion = convert(self.parsed(), schemas=schemas_of(engine))
            except SigmaRuleError as exc:
                self._conversion = exc
        if isinstance(self._conversion, SigmaRuleError):
            raise RuleCheckFailed(f"does not convert to KQL: {self._conversion.reason}")
        return self._conversion

    def execute(self, parsed: ParsedRule, expected: Expected, engine: Any, labels: Any) -> DetectionResult:
        return evaluate_rule(
            parsed,
            engine,
            labels,
            expected=expected.ids,
            neutral=expected.neutral,
            examples=_EXAMPLES,
            conversion=self.conversion(),
        )


class KqlRuleFile(RuleFile):
    item_names = _KQL_ITEMS
    read = staticmethod(parse_kql_rule)

    def execute(self, parsed: ParsedRule, expected: Expected, engine: Any, labels: Any) -> DetectionResult:
        # Like a Sigma rule, a gated query is held to the expected events of the tables it reads.
        return evaluate(
            parsed.text or "",
            engine,
            labels,
            expected=expected.ids,
            neutral=expected.neutral,
            within_tables_read=True,
            examples=_EXAMPLES,
        )


# -- items -----------------------------------------------------------------------------------


class RuleItem(CheckItem):
    """One check of one rule."""

    expected_failures = (RuleCheckFailed, SigmaRuleError, StoreUnavailable)

    def failure_label(self) -> str:
        return self.rule_file.parsed().label

    @property
    def rule_file(self) -> RuleFile:
        assert isinstance(self.parent, RuleFile)
        return self.parent

    def _require_parsed(self) -> ParsedRule:
        parsed = self.rule_file.parsed()
        broken = parsed.error is not None or (
            isinstance(self.rule_file, SigmaRuleFile) and parsed.rule is None
        )
        if broken:
            pytest.skip(f"the rule does not parse: {parsed.error}")
        return parsed

    def runtest(self) -> None:
        self.user_properties.extend([("rule", relative(self.config, self.path)), ("rule_check", self.check)])
        parsed = self.rule_file.parsed()
        self.user_properties.append(("rule_title", parsed.label))
        if parsed.expectations is not None and getattr(parsed.expectations, "case", None):
            self.user_properties.append(("rule_case", parsed.expectations.case))
        self.run_check()

    # parse ----------------------------------------------------------------------------------
    def _check_parse(self) -> None:
        parsed = self.rule_file.parsed()
        if isinstance(self.rule_file, KqlRuleFile):
            if parsed.error:
                raise RuleCheckFailed(parsed.error)
            translate = getattr(session_engine(self.config), "translate", None)
            if translate is None:  # an engine without a translate step: run it instead
                self.rule_file.result()
                return
            try:
                translate(parsed.text or "")
            except EngineError as exc:
                raise RuleCheckFailed(f"the query does not compile: {exc}") from None
            return
        if not parsed.ok:
            raise RuleCheckFailed(f"does not parse: {parsed.error}")

    # validate -------------------------------------------------------------------------------
    def _check_validate(self) -> None:
        parsed = self._require_parsed()
        result = _validator(self.config).validate(parsed)
        self.user_properties.append(("syntax_score", result.score))
        lines = [str(i) for i in result.issues]
        if lines:
            self.add_report_section("call", "validators", "\n".join(lines))
        if result.errors:
            raise RuleCheckFailed(
                f"{len(result.errors)} validator error(s): "
                + "; ".join(
                    f"{i.validator}: {i.description}" + (f" ({i.details})" if i.details else "")
                    for i in result.errors
                )
            )

    # convert --------------------------------------------------------------------------------
    def _check_convert(self) -> None:
        self._require_parsed()
        assert isinstance(self.rule_file, SigmaRuleFile)
        conversion = self.rule_file.conversion()
        self.add_report_section("call", "kql", conversion.kql)

    # execution ------------------------------------------------------------------------------
    def _evaluated(self) -> dict[str, DetectionResult]:
        """The rule's result in every split: a detection must hold on the re-simulation too."""
        parsed = self._require_parsed()
        case = _case_set(self.config).cases.get(parsed.expectations.case or "")
        problems = case_problems(self.config, case) if case else []
        if case and problems:  # its events were left out of the store: matches would mean nothing
            raise RuleCheckFailed(f"case {case.id} cannot be checked: " + "; ".join(problems))
        rule_file = self.rule_file
        if isinstance(rule_file, SigmaRuleFile):
            try:
                rule_file.conversion()
            except RuleCheckFailed as exc:  # reported once, by the convert item
                pytest.skip(f"the rule {exc}")
        splits = dataset_splits(self.config)
        results = {split: rule_file.result(split) for split in splits}
        for split, result in results.items():
            if result.error:
                where = f" on {split}" if len(splits) > 1 else ""
                raise RuleCheckFailed(f"{result.stage} failed{where}: {result.error}")
            suffix = "" if split == "dev" else f"_{split}"
            self.user_properties.extend(
                [(f"matched{suffix}", result.rows), (f"tp{suffix}", result.tp), (f"fp{suffix}", result.fp)]
            )
            self.add_report_section("call", f"matches ({split})", result.summary())
        return results

    def _check_true_positives(self) -> None:
        results = self._evaluated()
        parsed = self.rule_file.parsed()
        failures = []
        for split, result in results.items():
            expected = _expected(self.config, parsed.expectations, split)
            where = f"on {split}: " if len(results) > 1 else ""
            if result.expected is not None and split == "dev":
                self.user_properties.append(("recall", result.recall))
            if not expected.required or result.expected is None:
                continue
            total = result.expected
            if total == 0:
                failures.append(
                    f"{where}must_match: no {expected.label} in the table(s) this rule reads "
                    f"({', '.join(result.tables) or 'none'}); {result.expected_elsewhere} are in "
                    "other tables"
                )
            elif result.missed_attack:
                missed = [_bare(e) for e in result.missed_attack]
                shown = ", ".join(missed[:20]) + (" ..." if len(missed) > 20 else "")
                message = f"{where}missed {len(missed)} of {total} {expected.label}: {shown}"
                if result.unattributed and result.hint:
                    message += f"; {result.hint}"
                if result.fp:
                    message += f"; raised {result.fp} false positives{_examples_text(self, result)}"
                failures.append(message)
        if failures:
            raise RuleCheckFailed("\n".join(failures))

    def _check_false_positives(self) -> None:
        results = self._evaluated()
        limit = self.rule_file.parsed().expectations.max_false_positives
        failures = []
        for split, result in results.items():
            if limit is None or result.fp <= limit:
                continue
            where = f"on {split}: " if len(results) > 1 else ""
            parts = [
                f"{result.hard_negatives_matched} hard negatives",
                f"{result.background_matched} background",
            ]
            if result.foreign_attacks_matched:
                parts.append(f"{result.foreign_attacks_matched} attack events of cases sharing no technique")
            if result.unattributed:
                parts.append(f"{result.unattributed} rows traced to no event ({result.hint})")
            failures.append(
                f"{where}raised {result.fp} false positives (max_false_positives: {limit}): "
                + ", ".join(parts)
                + _examples_text(self, result)
            )
        if failures:
            raise RuleCheckFailed("\n".join(failures))

    # reporting ------------------------------------------------------------------------------
    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, self.name


def _bare(event: str) -> str:
    """``DeviceProcessEvents:482913377104`` -> ``482913377104`` (rule authors list bare ids)."""
    return event.split(":", 1)[-1]


def _examples_text(item: RuleItem, result: DetectionResult) -> str:
    examples = [e for e in result.false_positive_examples if "table" in e]
    if not examples:
        return ""
    schemas = getattr(session_engine(item.config), "schemas", {})
    shown = []
    kql = result.kql or ""
    for example in examples[:_EXAMPLES]:
        row = example["row"]
        schema = schemas.get(example["table"])
        skip = {schema.id_column if schema else "", "TimeGenerated", "Timestamp"}
        used = [k for k in row if k not in skip and re.search(rf"\b{re.escape(k)}\b", kql)]
        keys = (used + [k for k in row if k not in skip and k not in used])[:4]
        fields = ", ".join(f"{k}={_short(row[k])}" for k in keys)
        shown.append(f"{example['table']} {example['id']} [{example['kind']}] {fields}")
    return ", e.g. " + "; ".join(shown)


def _short(value: Any, width: int = 80) -> str:
    text = (
        value
        if isinstance(value, str)
        else yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    )
    return text if len(text) <= width else text[: width - 3] + "..."
