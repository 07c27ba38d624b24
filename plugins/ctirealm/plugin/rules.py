"""The rules gate: ``rules/**/*.yml`` (Sigma) and ``rules/**/*.kql`` as test items.

Each Sigma rule becomes ``parse``, ``validate``, ``convert``, ``true_positives`` and
``false_positives``; each KQL rule (``name.kql`` with a sibling ``name.yml`` of expectations)
becomes ``parse``, ``true_positives`` and ``false_positives``. Rules are executed over the whole
telemetry store (`session_engine`) and their matches traced to labelled events; the
expectations in the ``ctirealm:`` key decide pass or fail::

    ctirealm:
      case: linux_003              # whose attack events count as expected
      must_match: all              # or a list of event ids
      max_false_positives: 0

A rule without expectations still gets parse/validate/convert and a report of what it matches.
One rule's items come from one file, so ``--dist loadfile`` (the plugin's
default under xdist) executes each rule once. This module only hooks into
pytest; the collectors and items are in `rule_items`, loaded when a rule
file is collected.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ..sigma import FILENAME_VALIDATORS
from . import rules_root


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("realm_rules", "rules folder, relative to rootdir", default="rules")
    parser.addini(
        "realm_rules_validators_exclude",
        "validators not run by the rules gate (space separated; default: the file-name "
        "convention validators, since rule files follow the project's naming)",
        default=" ".join(sorted(FILENAME_VALIDATORS)),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "realm_rule(path): a rule under CI gating in rules/")


def _in_rules(config: pytest.Config, path: Path) -> bool:
    root = rules_root(config)
    if root is None:
        return False
    resolved = path.resolve()
    return resolved == root or root in resolved.parents


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if not _in_rules(parent.config, file_path):
        return None
    if file_path.suffix in (".yml", ".yaml"):
        if file_path.with_suffix(".kql").exists():
            return None  # the expectations of a KQL rule, collected with it
        if _not_sigma(file_path):
            return None  # a Sentinel rule or test data: the content gate's (plugin/content.py)
        from .rule_items import SigmaRuleFile

        return SigmaRuleFile.from_parent(parent, path=file_path)
    if file_path.suffix == ".kql":
        from .rule_items import KqlRuleFile

        return KqlRuleFile.from_parent(parent, path=file_path)
    return None


def _not_sigma(path: Path) -> bool:
    """A rule's test data (``x.tests/``), a Sentinel analytics rule or hunting query, or a
    Defender custom detection rule: the content gate's, not a Sigma rule."""
    from .content import content_kind
    from .content_data import TESTS_SUFFIX

    if any(p.name.endswith(TESTS_SUFFIX) for p in path.parents):
        return True
    return content_kind(path) in ("sentinel", "sentinel_hunting", "defender")
