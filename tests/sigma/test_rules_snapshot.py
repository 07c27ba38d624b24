"""Converted KQL of every Sigma rule under rules/, snapshotted: a conversion change shows up in
review (update with ``pytest tests/sigma --snapshot-update``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctirealm.sigma.convert import convert
from ctirealm.sigma.parse import SigmaRuleError

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules"
SIGMA_RULES = (
    sorted(p for p in [*RULES.rglob("*.yml"), *RULES.rglob("*.yaml")] if not p.with_suffix(".kql").exists())
    if RULES.is_dir()
    else []
)


@pytest.mark.parametrize(
    "path", SIGMA_RULES or [None], ids=[str(p.relative_to(RULES)) for p in SIGMA_RULES] or ["no-rules"]
)
def test_rule_conversion_snapshot(path: Path | None, schemas: dict, snapshot) -> None:
    if path is None:
        pytest.skip("no Sigma rules under rules/")
    try:
        text = convert(path, schemas=schemas).kql
    except SigmaRuleError as exc:
        text = f"error: {exc.reason}"
    assert text == snapshot
