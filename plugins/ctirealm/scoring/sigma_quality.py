"""Sigma quality for strict scoring: syntax (parse + validators) and the converted rule's executed F1."""

from __future__ import annotations

from collections.abc import Mapping

from ..engine import Engine
from ..telemetry.labels import Labels
from ..telemetry.schema import TableSchema
from . import SigmaScorer


def sigma_scorer_for(engine: Engine, labels: Labels,
                     schemas: Mapping[str, TableSchema]) -> SigmaScorer | None:
    """A scorer bound to one engine and store, or None when the Sigma layer is unavailable."""
    return None
