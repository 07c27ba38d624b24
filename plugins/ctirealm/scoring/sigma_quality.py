"""Sigma quality for strict scoring: syntax (parse + SigmaHQ validators) and executed F1.

The rule is converted with the project's pipelines and executed over the whole
store like any detection. Recall is measured against the case's attack events
in the table the rule's logsource maps to, since a Sigma rule covers one
logsource (for multi-table cases, the decisive step).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ..cases import Case
from ..engine import Engine
from ..telemetry.labels import Labels
from ..telemetry.schema import TableSchema
from . import SigmaScorer
from .detection import evaluate_query
from .model import DetectionResult


def sigma_scorer_for(engine: Engine, labels: Labels,
                     schemas: Mapping[str, TableSchema]) -> SigmaScorer:
    """A scorer bound to one engine and store."""
    from ..sigma.convert import convert
    from ..sigma.parse import SigmaRuleError, parse_rule
    from ..sigma.validate import validate

    def score(rule_text: str, case: Case) -> tuple[float, DetectionResult | None, str]:
        parsed = parse_rule(rule_text)
        if not parsed.ok:
            return 0.0, DetectionResult(error=f"the Sigma rule does not parse: {parsed.error}"), \
                "the rule does not parse"
        checked = validate(parsed)
        syntax = checked.score
        try:
            conversion = convert(parsed, schemas=schemas)
        except SigmaRuleError as exc:
            return syntax, DetectionResult(error=f"the Sigma rule does not convert: {exc}"), \
                "the rule does not convert"
        truth = case.ground_truth
        in_table = {t: ids for t, ids in truth.attack_events.items() if t == conversion.table}
        if not in_table:
            result = evaluate_query(conversion.kql, case, engine, labels, schemas)
            return syntax, result, (f"the rule reads {conversion.table}, where this case has no "
                                    "attack events")
        scoped = dataclasses.replace(case, ground_truth=dataclasses.replace(truth, attack_events=in_table))
        result = evaluate_query(conversion.kql, scoped, engine, labels, schemas)
        issues = len(checked.issues)
        return syntax, result, (f"{issues} validator issue{'s' if issues != 1 else ''}; "
                                f"converted to {conversion.table}")

    return score
