"""Microsoft Defender XDR custom detection rules, as Microsoft Graph's security API defines and
exports them (``detectionRule``: ``displayName``, ``queryCondition.queryText``,
``schedule.period``, ``detectionAction.alertTemplate``), kept as JSON or YAML.

Items, as a reviewer would check such a rule:

- ``parse``: the file loads; the fields Graph requires are there with allowed values; a
  continuous (NRT, ``period: "0"``) rule reads one supported table, with no join, union,
  ``externaldata`` or comment; the KQL translates;
- ``runs``: the query executes over the store (and with its test events);
- ``columns``: the results hold ``Timestamp``, ``ReportId``, one entity column, and the column
  every impacted asset and response action names;
- ``assets``: every impacted asset's column holds a value on every row the rule alerts on;
- ``attack``: ``mitreTechniques`` are ATT&CK techniques under the ``category`` tactic;
- ``true_positives``/``false_positives``: Defender's schedule simulated over the store and the
  rule's test events (`content_schedule.Schedule.defender`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..attack import load_attack
from ..telemetry.attribution import tables_in
from .checks import platform_data, relative
from .content_items import RuleCollector, SentinelItem, unfilled
from .content_rule import ContentCheckFailed, SentinelRule, attack_version, camel, tactic_key
from .content_schedule import Schedule, strip_literals

ITEMS = ("parse", "runs", "columns", "assets", "attack", "true_positives", "false_positives")
_REQUIRED = (
    "displayName",
    "queryCondition.queryText",
    "schedule.period",
    "detectionAction.alertTemplate.title",
    "detectionAction.alertTemplate.severity",
    "detectionAction.alertTemplate.category",
)
_STRING = re.compile(r"@?'(?:[^'\\\n]|\\.)*'|@?\"(?:[^\"\\\n]|\\.)*\"")


def defender_data() -> dict[str, Any]:
    """``plugin/data/defender.yaml``: periods, severities, categories, impacted assets."""
    return platform_data("defender")


class DefenderRule(SentinelRule):
    """A custom detection rule as read from its file (the Graph ``detectionRule`` object)."""

    @property
    def name(self) -> str:
        return str(self.doc.get("displayName") or self.doc.get("id") or self.path.stem)

    @property
    def query(self) -> str:
        return str(_get(self.doc, "queryCondition.queryText") or "")

    @property
    def template(self) -> dict[str, Any]:
        found = _get(self.doc, "detectionAction.alertTemplate")
        return found if isinstance(found, dict) else {}

    @property
    def period(self) -> str:
        return str(_get(self.doc, "schedule.period") or "").strip().upper()


def read_defender(path: Path) -> DefenderRule:
    """Read a custom detection rule; never raises (a bad file comes back with ``error``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return DefenderRule(path, error=f"cannot read: {exc}")
    try:
        doc = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        return DefenderRule(path, error=f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return DefenderRule(path, error=f"invalid YAML{where}: {getattr(exc, 'problem', None) or exc}")
    if not isinstance(doc, dict):
        return DefenderRule(path, error="expected an object (one detectionRule)")
    return DefenderRule(path, doc)


def _get(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _column_of(identifier: str) -> str:
    """A response action's identifier as the column it names: ``deviceId`` -> ``DeviceId``,
    ``initiatingProcessSHA1`` -> ``InitiatingProcessSHA1``, ``sha256`` -> ``SHA256``."""
    text = re.sub(r"^sha(\d)", r"SHA\1", identifier.strip())
    return text[:1].upper() + text[1:]


def asset_columns(rule: DefenderRule) -> tuple[list[tuple[str, str, str]], list[str]]:
    """``([(asset kind, identifier, column)], problems)`` of the rule's impacted assets."""
    known = defender_data()["assets"]
    out, problems = [], []
    assets = rule.template.get("impactedAssets")
    if assets is None:
        assets = []
    if not isinstance(assets, list):
        return [], ["impactedAssets: expected a list"]
    for n, asset in enumerate(assets, 1):
        kind = str((asset or {}).get("@odata.type", ""))
        identifier = str((asset or {}).get("identifier", ""))
        short = kind.rsplit(".", 1)[-1]
        if kind not in known:
            problems.append(
                f"impactedAssets[{n}]: unknown @odata.type {kind!r} (known: "
                f"{', '.join(k.rsplit('.', 1)[-1] for k in known)})"
            )
            continue
        if identifier not in known[kind]:
            problems.append(
                f"impactedAssets[{n}] ({short}): identifier {identifier!r} is not one "
                f"of {', '.join(known[kind])}"
            )
            continue
        out.append((short, identifier, known[kind][identifier]))
    return out, problems


def defender_problems(rule: DefenderRule, schemas: dict[str, Any]) -> list[str]:
    """What Graph's ``detectionRule`` (and Defender's continuous frequency) refuses."""
    data, doc, out = defender_data(), rule.doc, []
    for dotted in _REQUIRED:
        if _get(doc, dotted) in (None, "", []):
            out.append(f"{dotted} is missing")
    if "isEnabled" in doc and not isinstance(doc["isEnabled"], bool):
        out.append(f"isEnabled {doc['isEnabled']!r}: expected true or false")
    period = _get(doc, "schedule.period")
    if period not in (None, "") and rule.period not in data["periods"]:
        out.append(
            f"schedule.period {period!r}: expected one of "
            f'{", ".join(repr(p) for p in data["periods"])} ("0" is continuous, NRT)'
        )
    severity = rule.template.get("severity")
    if severity and str(severity).lower() not in data["severities"]:
        out.append(f"alertTemplate.severity {severity!r}: expected one of {', '.join(data['severities'])}")
    out.extend(asset_columns(rule)[1])
    actions = _get(doc, "detectionAction.responseActions") or []
    if not isinstance(actions, list):
        out.append("detectionAction.responseActions: expected a list")
    if rule.period == "0" and rule.query.strip():
        out.extend(_nrt_problems(rule.query, schemas, data["nrt_tables"]))
    return out


def _nrt_problems(query: str, schemas: dict[str, Any], supported: list[str]) -> list[str]:
    """Defender runs a query continuously only when it reads one supported table and has no
    join, union, externaldata or comment."""
    out = []
    bare = strip_literals(query)
    if "//" in _STRING.sub("''", query):
        out.append("a continuous (NRT) rule's query may not hold comments")
    for operator in ("join", "union", "externaldata"):
        if re.search(rf"\b{operator}\b", bare, re.I):
            out.append(f"a continuous (NRT) rule's query may not use {operator}")
    read = tables_in(query, schemas)
    if len(read) > 1:
        out.append(f"a continuous (NRT) rule reads one table (it reads {', '.join(read)})")
    unsupported = [t for t in read if t not in supported]
    if unsupported:
        out.append(f"{', '.join(unsupported)} does not support continuous (NRT) frequency")
    return out


class DefenderRuleFile(RuleCollector, pytest.File):
    """One custom detection rule file."""

    item_names = ITEMS
    fields = "defender"

    @property
    def item_class(self) -> type[SentinelItem]:
        return DefenderItem

    def rule(self) -> DefenderRule:
        if self._rule is None:
            self._rule = read_defender(self.path)
        assert isinstance(self._rule, DefenderRule)
        return self._rule

    def schedule(self) -> Schedule:
        # Defender schedules by the event's Timestamp, not its ingestion time: no delay.
        return Schedule.defender(self.rule().period or "24H")


class DefenderItem(SentinelItem):
    """One reviewer's check of one custom detection rule."""

    @property
    def defender_file(self) -> DefenderRuleFile:
        assert isinstance(self.parent, DefenderRuleFile)
        return self.parent

    def field_problems(self, rule: SentinelRule) -> list[str]:
        assert isinstance(rule, DefenderRule)
        return defender_problems(rule, self.rule_file.schemas())

    # columns --------------------------------------------------------------------------------
    def _check_columns(self) -> None:
        rule = self._require(runs=True)
        assert isinstance(rule, DefenderRule)
        data = defender_data()
        output = self.rule_file.run("background").columns
        problems = []
        missing = [c for c in data["required_columns"] if c not in output]
        if missing:
            problems.append(
                f"the results lack {', '.join(missing)} (Defender requires "
                f"{' and '.join(data['required_columns'])})"
            )
        if not any(c in output for c in data["entity_columns"]):
            problems.append(
                "the results hold no column identifying a device, user or mailbox "
                f"(one of {', '.join(data['entity_columns'])})"
            )
        for kind, identifier, column in asset_columns(rule)[0]:
            if column not in output:
                problems.append(f"impacted asset {kind} {identifier}: no column {column} in the results")
        for action in _get(rule.doc, "detectionAction.responseActions") or []:
            kind = str((action or {}).get("@odata.type", "")).rsplit(".", 1)[-1]
            for identifier in str((action or {}).get("identifier") or "").split(","):
                if identifier.strip() and _column_of(identifier) not in output:
                    problems.append(
                        f"response action {kind} acts on {identifier.strip()}: no "
                        f"column {_column_of(identifier)} in the results"
                    )
        if problems:
            raise ContentCheckFailed("; ".join(problems) + f" (output columns: {', '.join(output)})")

    # assets ---------------------------------------------------------------------------------
    def _check_assets(self) -> None:
        rule = self._require(runs=True)
        assert isinstance(rule, DefenderRule)
        assets, problems = asset_columns(rule)
        if problems:
            raise ContentCheckFailed("; ".join(problems))
        if not assets:
            raise ContentCheckFailed(
                "alertTemplate.impactedAssets is empty: name the column of "
                "the device, user or mailbox each alert is about"
            )
        file = self.rule_file
        output = file.run("background").columns
        assets = [a for a in assets if a[2] in output]  # the columns check reports the others
        test = file.test_data()
        if test is not None and test.has("match"):
            rows, what = file.match_alerts(), "the rows the must-match events raise"
        else:
            sim = file.simulated("background")
            if sim.error:
                raise ContentCheckFailed(f"its scheduled runs over the store failed: {sim.error}")
            rows = [sim.rows[n] for _, group in sim.alert_groups() for n in group]
            what = "the rows it alerts on over the store"
        if not rows:
            pytest.skip(
                f"untested: no alert to check its impacted assets on (no must-match "
                f"events in {relative(self.config, file.tests_folder())}/match/ and "
                "none over the store)"
            )
        empty = unfilled(rows, [(f"impacted asset {kind} {ident}", col) for kind, ident, col in assets])
        if empty:
            raise ContentCheckFailed(
                f"impacted assets without a value on {what} (the alert "
                "cannot name its entity): " + "; ".join(empty)
            )

    # attack ---------------------------------------------------------------------------------
    def _check_attack(self) -> None:
        rule = self._require()
        assert isinstance(rule, DefenderRule)
        data = defender_data()
        attack = load_attack()
        by_key = {tactic_key(t.shortname): t for t in attack.tactics}
        category = str(rule.template.get("category") or "")
        techniques = rule.template.get("mitreTechniques") or []
        problems = []
        if not isinstance(techniques, list):
            raise ContentCheckFailed("alertTemplate.mitreTechniques: expected a list")
        tactic = by_key.get(tactic_key(category))
        plain = {tactic_key(c): c for c in data["categories_without_techniques"]}
        other = {tactic_key(c) for c in data["categories_other"]}
        if not category:
            problems.append("alertTemplate.category is missing")
        elif tactic is None and tactic_key(category) not in set(plain) | other:
            names = sorted(
                {camel(t.shortname) for t in attack.tactics}
                | set(data["categories_without_techniques"])
                | set(data["categories_other"])
            )
            problems.append(f"unknown category {category!r} (expected one of {', '.join(names)})")
        if tactic_key(category) in plain and techniques:
            problems.append(f"category {category} takes no mitreTechniques (Defender hides them for it)")
        for technique_id in techniques:
            technique = attack.get(str(technique_id).strip())
            if technique is None:
                problems.append(f"unknown technique {technique_id!r} (ATT&CK v{attack_version()})")
                continue
            if tactic is not None and tactic.shortname not in technique.tactics:
                under = ", ".join(camel(t) for t in technique.tactics)
                problems.append(
                    f"{technique.id} ({technique.name}) is under {under}, not the category {category}"
                )
        if problems:
            raise ContentCheckFailed("; ".join(problems))
