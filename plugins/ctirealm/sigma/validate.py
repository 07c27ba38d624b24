"""Validation: parse, then run the core and SigmaHQ validators — offline — and score the result.

pySigma's ATT&CK and D3FEND tag validators and the SigmaHQ validators download reference data
on first use (``sigma.data.mitre_attack``, ``sigma.data.mitre_d3fend`` and
``sigma.validators.sigmahq.data.*``). `configure_offline` points each loader at the copy shipped
in ``data/`` (see ``data/NOTICE.md``) and at a cache directory of ctirealm's own, then loads it
once so the cache is seeded: no validator ever opens a connection.

Syntax-quality score, in [0, 1]::

    parse failure                      -> 0
    otherwise 1 - 0.25 * errors - 0.10 * warnings - 0.05 * notes   (floored at 0)

where errors are issues of severity high (or critical), warnings medium and notes low or
informational. Issues are sorted deterministically (severity, then validator, then text).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from sigma.plugins import InstalledSigmaPlugins
from sigma.rule import SigmaRule
from sigma.validators.base import SigmaValidationIssue, SigmaValidationIssueSeverity

from ..telemetry.store import default_cache_dir
from . import DEFAULT_EXCLUDE
from .parse import ParsedRule, parse_rule
from .pipelines import SchemaMap, table_specs

#: Cost of one issue per severity name in the syntax-quality score.
SEVERITY_COST: dict[str, float] = {
    "critical": 0.25,
    "high": 0.25,
    "medium": 0.10,
    "low": 0.05,
    "informational": 0.05,
    "internal": 0.0,  # a validator that crashed on the rule: reported, never charged
}
_SEVERITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3, "informational": 4, "internal": 5}
_LEVEL = {
    "critical": "error",
    "high": "error",
    "medium": "warning",
    "low": "note",
    "informational": "note",
    "internal": "note",
}

DATA_FILES: dict[str, str] = {
    "sigma.validators.sigmahq.data.data_taxonomy": "sigmahq_taxonomy.json",
    "sigma.validators.sigmahq.data.data_filename": "sigmahq_filename.json",
    "sigma.validators.sigmahq.data.data_windows_eventid": "sigmahq_windows_eventid.json",
    "sigma.validators.sigmahq.data.data_windows_provider": "sigmahq_windows_provider.json",
    "sigma.data.mitre_attack": "mitre_attack.json",
    "sigma.data.mitre_d3fend": "mitre_d3fend.json",
}
#: One attribute per loader, read once to load the shipped file into the cache.
_SEED_ATTRIBUTE: dict[str, str] = {
    "sigma.validators.sigmahq.data.data_taxonomy": "sigmahq_taxonomy_fieldsname",
    "sigma.validators.sigmahq.data.data_filename": "sigmahq_filename_pattern",
    "sigma.validators.sigmahq.data.data_windows_eventid": "sigmahq_category_no_eventid",
    "sigma.validators.sigmahq.data.data_windows_provider": "sigmahq_provider_name",
    "sigma.data.mitre_attack": "mitre_attack_techniques",
    "sigma.data.mitre_d3fend": "mitre_d3fend_techniques",
}

_LOCK = threading.Lock()
_CONFIGURED: Path | None = None
#: A digest of the tables' columns the configured taxonomy learnt.
_CONFIGURED_FOR: str = ""
_MODULES: dict[str, int] = {}


def data_dir() -> Path:
    """The folder of shipped validator data."""
    return Path(str(resources.files(__package__).joinpath("data")))


def _data_hash() -> str:
    digest = hashlib.sha256()
    for name in sorted(DATA_FILES.values()):
        digest.update(name.encode())
        digest.update((data_dir() / name).read_bytes())
    return digest.hexdigest()[:12]


def _merged_taxonomy(base: Path, schemas: SchemaMap) -> Path:
    """The shipped taxonomy plus, for each logsource the pipelines map whose SigmaHQ field list
    is not empty, the mapped aliases and the table's columns (as ``custom`` fields): a rule
    written against the table's own columns is valid, as it converts."""
    doc = json.loads((data_dir() / "sigmahq_taxonomy.json").read_text(encoding="utf-8"))
    taxonomy = doc["taxonomy"]
    for spec in table_specs(schemas).values():
        names = sorted({*spec.aliases, *(c for c, _ in spec.columns)}, key=str.casefold)
        for ls in spec.logsources:
            key = f"{ls.product or 'none'}_{ls.category or 'none'}_{ls.service or 'none'}"
            entry = taxonomy.get(key)
            if entry and entry["field"]["native"]:
                custom = set(entry["field"].get("custom") or ()) | set(names)
                entry["field"]["custom"] = sorted(custom - set(entry["field"]["native"]), key=str.casefold)
    text = json.dumps(doc, sort_keys=True)
    path = base / f"sigmahq_taxonomy-{hashlib.sha256(text.encode()).hexdigest()[:12]}.json"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return path


def configure_offline(
    cache_dir: str | Path | None = None, *, force: bool = False, schemas: SchemaMap | None = None
) -> Path:
    """Point pySigma's data loaders at the shipped data and seed their caches (once per process).

    The taxonomy also learns the columns of the tables in *schemas* (default: the telemetry
    folder's) for the logsources mapped to them. Returns the cache directory used (default:
    ``<ctirealm cache>/pysigma-<data hash>``).
    """
    global _CONFIGURED, _CONFIGURED_FOR
    import importlib

    with _LOCK:
        # A cache folder removed under us (a temporary cache dir of an earlier session in the
        # same process) would leave the validators without data: configure again.
        # Also when pySigma's data modules were re-imported (a test harness restoring
        # sys.modules): fresh module objects know nothing of our data. And when the caller names
        # tables other than those the taxonomy learnt (a run's own telemetry folder).
        current = {name: id(sys.modules.get(name)) for name in DATA_FILES}
        schemas = _default_schemas() if schemas is None else schemas
        wanted = _schemas_key(schemas)
        if (
            _CONFIGURED is not None
            and not force
            and cache_dir is None
            and _CONFIGURED.is_dir()
            and current == _MODULES
            and wanted == _CONFIGURED_FOR
        ):
            return _CONFIGURED
        base = Path(cache_dir) if cache_dir else default_cache_dir() / f"pysigma-{_data_hash()}"
        base.mkdir(parents=True, exist_ok=True)
        taxonomy = _merged_taxonomy(base, schemas)
        for module_name, filename in DATA_FILES.items():
            module = importlib.import_module(module_name)
            sub = base / module_name.rsplit(".", 1)[-1]
            sub.mkdir(parents=True, exist_ok=True)
            module.set_cache_dir(str(sub))
            source = taxonomy if filename == "sigmahq_taxonomy.json" else data_dir() / filename
            module.set_url(str(source))
            getattr(module, _SEED_ATTRIBUTE[module_name])  # load the local file into the cache
        _CONFIGURED = base
        _CONFIGURED_FOR = wanted
        _MODULES.clear()
        _MODULES.update({name: id(sys.modules.get(name)) for name in DATA_FILES})
        return base


def _default_schemas() -> SchemaMap:
    """The telemetry folder's tables (``$CTIREALM_TELEMETRY`` or the working directory's), or
    none."""
    try:
        from .convert import default_schemas

        return default_schemas()
    except (FileNotFoundError, OSError, ValueError):
        return {}


def _schemas_key(schemas: SchemaMap) -> str:
    """A digest of the tables' columns: the taxonomy is configured again when they change.
    Remembered by identity (the object is kept, so its id is not reused): a validator checks
    it before every rule."""
    known = _KEYS.get(id(schemas))
    if known is not None and known[0] is schemas:
        return known[1]
    key = _digest(schemas)
    if len(_KEYS) >= 32:  # a process sees a handful of stores; never grow without bound
        _KEYS.clear()
    _KEYS[id(schemas)] = (schemas, key)
    return key


_KEYS: dict[int, tuple[SchemaMap, str]] = {}


def _digest(schemas: SchemaMap) -> str:
    specs = table_specs(schemas)
    text = json.dumps(
        {name: sorted(c for c, _ in spec.columns) for name, spec in specs.items()}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Issue:
    """One validator finding, flattened for reports."""

    validator: str
    severity: str  # critical | high | medium | low | informational
    description: str
    details: str = ""

    @property
    def level(self) -> str:
        """error (high/critical), warning (medium) or note (low/informational)."""
        return _LEVEL.get(self.severity, "note")

    def __str__(self) -> str:
        extra = f" ({self.details})" if self.details else ""
        return f"{self.level}: {self.validator}: {self.description}{extra}"


@dataclass
class ValidationResult:
    """Parse outcome, sorted issues and the syntax-quality score."""

    rule: str
    parsed: bool
    error: str | None = None
    issues: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.level == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.level == "warning"]

    @property
    def notes(self) -> list[Issue]:
        return [i for i in self.issues if i.level == "note"]

    @property
    def ok(self) -> bool:
        """Parsed, and no error-level issue."""
        return self.parsed and not self.errors

    @property
    def score(self) -> float:
        return syntax_score(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "parsed": self.parsed,
            "error": self.error,
            "score": self.score,
            "issues": [
                {
                    "validator": i.validator,
                    "severity": i.severity,
                    "level": i.level,
                    "description": i.description,
                    "details": i.details,
                }
                for i in self.issues
            ],
        }


def syntax_score(result: ValidationResult) -> float:
    """The documented syntax-quality score (see the module docstring)."""
    if not result.parsed:
        return 0.0
    cost = sum(SEVERITY_COST.get(i.severity, 0.05) for i in result.issues)
    return round(max(0.0, 1.0 - cost), 4)


def _details(issue: SigmaValidationIssue) -> str:
    parts = []
    for name, value in sorted(vars(issue).items()):
        if name in ("rules", "severity", "description") or value is None:
            continue
        if isinstance(value, (str, list, tuple, set)) and not value:
            continue
        if all(hasattr(value, a) for a in ("product", "category", "service")):
            value = (
                "{"
                + ", ".join(
                    f"{a}: {getattr(value, a)}"
                    for a in ("product", "category", "service")
                    if getattr(value, a)
                )
                + "}"
            )
        parts.append(f"{name}={value}")
    return " ".join(parts)


def _severity_name(issue: SigmaValidationIssue) -> str:
    severity = issue.severity
    return (
        severity.name.lower() if isinstance(severity, SigmaValidationIssueSeverity) else str(severity).lower()
    )


def _installed_validators() -> tuple[tuple[str, type], ...]:
    """pySigma's validator classes, discovered once per process (a scan of the installed
    plugin modules that cost 17 ms per validator built) — again when the data modules they
    read were imported anew (a test harness restoring ``sys.modules``)."""
    return _discovered(tuple(id(sys.modules.get(name)) for name in (*DATA_FILES, *_VALIDATORS)))


#: The validator modules whose identity `_installed_validators` watches beside the data's.
_VALIDATORS = ("sigma.validators.sigmahq", "sigma.validators.sigmahq.fieldname")


@lru_cache(maxsize=4)
def _discovered(_modules: tuple[int, ...]) -> tuple[tuple[str, type], ...]:
    # pySigma annotates the values as validator instances; they are the classes
    return tuple(sorted(InstalledSigmaPlugins.autodiscover().validators.items()))  # type: ignore[arg-type]


@dataclass
class RuleValidator:
    """A reusable validator set (build once, validate many rules)."""

    exclude: frozenset[str] = DEFAULT_EXCLUDE
    validators: dict[str, type] = field(default_factory=dict)
    #: The tables whose columns a rule may name (default: the telemetry folder's).
    schemas: SchemaMap | None = None

    def __post_init__(self) -> None:
        configure_offline(schemas=self.schemas)
        if not self.validators:
            self.validators = {k: v for k, v in _installed_validators() if k not in self.exclude}

    def issues(self, rules: Iterable[SigmaRule]) -> list[list[Issue]]:
        """Validate *rules* together (uniqueness checks see all of them); issues per rule."""
        rules = list(rules)
        instances = {name: cls() for name, cls in self.validators.items()}
        per_rule: list[list[Issue]] = [[] for _ in rules]
        for index, rule in enumerate(rules):
            for name, validator in instances.items():
                try:
                    found = validator.validate(rule)
                except Exception as exc:
                    per_rule[index].append(
                        Issue(name, "internal", "the validator itself failed", f"{type(exc).__name__}: {exc}")
                    )
                    continue
                per_rule[index].extend(_flatten(name, i) for i in found)
        for name, validator in instances.items():
            try:
                final = validator.finalize()
            except Exception:
                final = []
            for issue in final:
                for index, rule in enumerate(rules):
                    if any(r is rule for r in issue.rules):
                        per_rule[index].append(_flatten(name, issue))
        for flat in per_rule:
            flat.sort(
                key=lambda i: (_SEVERITY_RANK.get(i.severity, 9), i.validator, i.description, i.details)
            )
        return per_rule

    def validate(self, rule: str | Path | Mapping[str, Any] | SigmaRule | ParsedRule) -> ValidationResult:
        # Cheap when nothing changed; re-seeds the data modules if they did.
        configure_offline(schemas=self.schemas)
        parsed = rule if isinstance(rule, ParsedRule) else parse_rule(rule)
        if not parsed.ok:
            return ValidationResult(parsed.label, False, parsed.error)
        return ValidationResult(parsed.label, True, None, self.issues([parsed.require()])[0])


def _flatten(validator: str, issue: SigmaValidationIssue) -> Issue:
    return Issue(validator, _severity_name(issue), str(issue.description), _details(issue))


_DEFAULT: RuleValidator | None = None


def validate(
    rule: str | Path | Mapping[str, Any] | SigmaRule | ParsedRule,
    *,
    exclude: Iterable[str] | None = None,
    schemas: SchemaMap | None = None,
) -> ValidationResult:
    """Parse and validate one rule offline. Never raises for a bad rule: see ``error``.

    *schemas* are the tables whose columns a rule may name (default: the telemetry folder's,
    found from ``$CTIREALM_TELEMETRY`` or the working directory).
    """
    global _DEFAULT
    if exclude is not None or schemas is not None:
        return RuleValidator(frozenset(exclude or ()) | DEFAULT_EXCLUDE, schemas=schemas).validate(rule)
    if _DEFAULT is None:
        _DEFAULT = RuleValidator()
    return _DEFAULT.validate(rule)


def validate_many(
    rules: Iterable[str | Path | Mapping[str, Any] | SigmaRule | ParsedRule],
    *,
    exclude: Iterable[str] | None = None,
) -> list[ValidationResult]:
    """Validate several rules together; one unreadable rule never stops the others."""
    validator = RuleValidator(frozenset(exclude or ()) | DEFAULT_EXCLUDE)
    parsed = [r if isinstance(r, ParsedRule) else parse_rule(r) for r in rules]
    good = [p for p in parsed if p.ok]
    issues = dict(zip((id(p) for p in good), validator.issues(p.require() for p in good), strict=True))
    return [
        ValidationResult(p.label, True, None, issues[id(p)])
        if p.ok
        else ValidationResult(p.label, False, p.error)
        for p in parsed
    ]
