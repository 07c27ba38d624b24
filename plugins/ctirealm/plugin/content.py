"""The content gate: a repository's own detections as test items, offline.

Collected from the content folder (ini ``realm_content``, default ``detections``), from any
folder or file named on the command line, and from the rules folder:

- Microsoft Sentinel analytics rules in the Azure-Sentinel YAML schema, recognised by shape (a
  ``query`` key and an ``id`` or ``name``), whatever the file is called -> items ``parse``,
  ``runs``, ``connectors``, ``entities``, ``attack``, ``true_positives``, ``false_positives``;
- Sigma rules and ``.kql`` queries with a sibling ``.yml`` in the content folder -> the rules
  gate's items (`rule_items`);
- Sentinel hunting queries in the Azure-Sentinel hunting schema (the same shape without any
  scheduling or trigger field) -> ``parse``, ``runs``, ``connectors``, ``entities``,
  ``attack``, ``true_positives``;
- a bare ``.kql`` in the content folder (a Defender or Sentinel hunting query) -> ``parse``,
  ``runs``, ``true_positives``;
- a Markdown page in the content folder with fenced ``kql``/``kusto`` blocks (Defender hunting
  queries as their repositories keep them) -> per block, the items of a bare ``.kql``
  (`content_markdown`);
- Defender custom detection rules as Microsoft Graph's security API exports them (JSON or
  YAML with ``queryCondition.queryText``), recognised by content -> ``parse``, ``runs``,
  ``columns``, ``assets``, ``attack``, ``true_positives``, ``false_positives``
  (`content_defender`).

A hunting query without test data has its ``true_positives`` skipped as "untested".

A rule's recorded test events live beside it in ``<rule>.tests/`` (`content_data`). This module
only hooks into pytest; the collectors and items are in `content_items`, loaded when a rule is
collected.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from . import cases_root, content_root, rules_root, telemetry_root
from .content_data import TESTS_SUFFIX

_SENTINEL_TEXT = re.compile(r"^query\s*:", re.M)
_NAMED_TEXT = re.compile(r"^(id|name)\s*:", re.M)
_SIGMA_TEXT = re.compile(r"^detection\s*:", re.M)
#: A fenced KQL block in Markdown (`content_markdown` reads the blocks themselves).
_KQL_FENCE = re.compile(r"^ {0,3}(?:`{3,}|~{3,})\s*(?:kql|kusto)\b", re.M | re.I)
_DEFENDER_TEXT = re.compile(r"[\"']?queryCondition[\"']?\s*:")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("realm_content", "detection content folder, relative to rootdir", default="detections")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "realm_content(path): a detection under the content gate")
    _telemetry_fallback(config)


def _telemetry_fallback(config: pytest.Config) -> None:
    """A content repository has no ``telemetry/`` of its own: its rules run over ctirealm's
    dataset, found through ``$CTIREALM_TELEMETRY`` or in the installed package
    (``ctirealm/dataset``, which the wheel carries and which links to ``telemetry/`` in a
    source checkout). Only when there is content to gate, so unrelated runs are left alone: a
    run of cases or rules without a dataset is told that no store can be built."""
    if config.getoption("--realm-telemetry") or (telemetry_root(config) / "dataset.yaml").is_file():
        return
    root = content_root(config)
    benchmark = [f for f in (cases_root(config), rules_root(config)) if f is not None]
    content_named = [p for p in _argument_paths(config) if not any(_under(p, f) for f in benchmark)]
    if not (root is not None and root.is_dir()) and not content_named:
        return
    bundled = Path(__file__).resolve().parents[1] / "dataset"  # in the wheel; telemetry/ in a checkout
    for candidate in (os.environ.get("CTIREALM_TELEMETRY"), bundled):
        if candidate and (Path(candidate) / "dataset.yaml").is_file():
            config.option.realm_telemetry = str(Path(candidate).resolve())
            return


def _argument_paths(config: pytest.Config) -> list[Path]:
    """Folders and files named on the command line (not the rootdir itself)."""
    root = Path(config.rootpath).resolve()
    out = []
    for arg in config.args:
        if arg.startswith("-"):
            continue
        path = Path(config.invocation_params.dir, arg.split("::", 1)[0]).resolve()
        if path != root and path.exists():
            out.append(path)
    return out


def _under(path: Path, folder: Path | None) -> bool:
    return folder is not None and (path == folder or folder in path.parents)


def content_kind(path: Path) -> str | None:
    """``sentinel``, ``sentinel_hunting``, ``sigma``, ``kql`` (with expectations), ``hunting``
    (a bare ``.kql``), ``markdown`` (a page with KQL blocks), ``defender`` (a custom detection
    rule) or None, by what the file holds (not its name alone)."""
    if any(p.name.endswith(TESTS_SUFFIX) for p in path.parents):
        return None  # a rule's test data
    if path.suffix == ".kql":
        has_sibling = path.with_suffix(".yml").exists() or path.with_suffix(".yaml").exists()
        return "kql" if has_sibling else "hunting"
    suffix = path.suffix.lower()
    if suffix not in (".yml", ".yaml", ".json", ".md", ".markdown"):
        return None
    if suffix != ".json" and path.with_suffix(".kql").exists():
        return None  # the expectations of a KQL rule
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if suffix in (".md", ".markdown"):
        return "markdown" if _KQL_FENCE.search(text) else None
    try:
        doc = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, ValueError):
        # Broken YAML is still recognised, so its parse item fails instead of it vanishing.
        if _DEFENDER_TEXT.search(text) and "queryText" in text:
            return "defender"
        if suffix == ".json":
            return None
        if _SENTINEL_TEXT.search(text) and _NAMED_TEXT.search(text):
            return "sentinel"
        return "sigma" if _SIGMA_TEXT.search(text) else None
    if not isinstance(doc, dict):
        return None
    condition = doc.get("queryCondition")
    if isinstance(condition, dict) and "queryText" in condition:
        return "defender"
    if suffix == ".json":
        return None
    if "query" in doc and ("id" in doc or "name" in doc) and "detection" not in doc:
        from_scheduling = any(
            key in doc
            for key in (
                "queryFrequency",
                "queryPeriod",
                "kind",
                "triggerOperator",
                "triggerThreshold",
                "severity",
            )
        )
        return "sentinel" if from_scheduling else "sentinel_hunting"
    if "detection" in doc and "logsource" in doc:
        return "sigma"
    return None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    config = parent.config
    path = file_path.resolve()
    in_content = _under(path, content_root(config))
    in_rules = _under(path, rules_root(config))
    named = any(_under(path, a) for a in _argument_paths(config))
    if not (in_content or in_rules or named):
        return None
    kind = content_kind(path)
    if kind == "sentinel":
        from .content_items import SentinelRuleFile

        return SentinelRuleFile.from_parent(parent, path=file_path)
    if kind == "sentinel_hunting":
        from .content_items import HuntingRuleFile

        return HuntingRuleFile.from_parent(parent, path=file_path)
    if kind == "hunting" and in_content and not in_rules:
        from .content_items import HuntingQueryFile

        return HuntingQueryFile.from_parent(parent, path=file_path)
    if kind == "markdown" and in_content and not in_rules:
        from .content_markdown import MarkdownQueryFile

        return MarkdownQueryFile.from_parent(parent, path=file_path)
    if kind == "defender":
        from .content_defender import DefenderRuleFile

        return DefenderRuleFile.from_parent(parent, path=file_path)
    if in_content and not in_rules and kind in ("sigma", "kql"):
        # The rules gate's own collectors (rules/ is collected by its hook module).
        from .rule_items import KqlRuleFile, SigmaRuleFile

        cls = SigmaRuleFile if kind == "sigma" else KqlRuleFile
        return cls.from_parent(parent, path=file_path)
    return None
