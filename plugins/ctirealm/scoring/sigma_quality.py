"""Sigma quality for strict scoring: syntax (parse + SigmaHQ validators) and executed F1.

The rule is converted to KQL by the sigma layer and executed over the whole store
by the one detection evaluator (`detection.evaluate_rule`), like any detection.
Recall is measured against the case's attack events in the table the rule's
logsource maps to, since a Sigma rule covers one logsource (for multi-table
cases, the decisive step).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from ..cases import Case
from ..engine import Engine
from ..telemetry.labels import Labels
from ..telemetry.schema import TableSchema
from . import SigmaScorer
from .detection import evaluate, evaluate_rule
from .model import DetectionResult


def sigma_scorer_for(engine: Engine, labels: Labels, schemas: Mapping[str, TableSchema]) -> SigmaScorer:
    """A scorer bound to one engine and store."""
    from ..sigma.convert import convert
    from ..sigma.parse import SigmaRuleError, parse_rule
    from ..sigma.validate import RuleValidator

    # Built once per store: a rule may name the columns of these tables, as it converts.
    validator = RuleValidator(schemas=schemas)

    def score(
        rule_text: str, case: Case, neutral: Collection[tuple[str, str]] = ()
    ) -> tuple[float, DetectionResult | None, str]:
        parsed = parse_rule(rule_text)
        if not parsed.ok:
            return (
                0.0,
                DetectionResult(error=f"the Sigma rule does not parse: {parsed.error}", stage="parse"),
                "the rule does not parse",
            )
        checked = validator.validate(parsed)
        syntax = checked.score
        try:
            conversion = convert(parsed, schemas=schemas)
        except SigmaRuleError as exc:
            return (
                syntax,
                DetectionResult(error=f"the Sigma rule does not convert: {exc}", stage="convert"),
                "the rule does not convert",
            )
        truth = case.ground_truth
        if conversion.table not in truth.attack_events:
            # Nothing to catch there: every attack event of the case counts as missed.
            result = evaluate(
                conversion.kql, engine, labels, schemas=schemas, expected=truth.attack_events, neutral=neutral
            )
            return (
                syntax,
                result,
                (f"the rule reads {conversion.table}, where this case has no attack events"),
            )
        result = evaluate_rule(
            parsed,
            engine,
            labels,
            schemas=schemas,
            expected=truth.attack_events,
            neutral=neutral,
            conversion=conversion,
        )
        issues = len(checked.issues)
        return (
            syntax,
            result,
            (f"{issues} validator issue{'s' if issues != 1 else ''}; converted to {conversion.table}"),
        )

    return score
