"""The benchmark case and CTI report models, loaded from YAML/Markdown with validation.

A malformed file raises `CaseError` naming the file and the field; loading a
whole folder collects such errors per file instead of stopping, so one bad
case never hides the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from ..attack import Attack, load_attack
from ..telemetry.labels import Labels

PLATFORMS = ("linux", "aks", "cloud")
#: ``source`` values of cases imported from the upstream dataset: their attack events
#: may be empty (the upstream ground truth is regex patterns, not event ids).
IMPORTED_SOURCES = ("cti-realm",)
DIFFICULTIES = ("easy", "medium", "hard")
_CASE_ID = re.compile(r"^(linux|aks|cloud)_\d{3}$")
_REPORT_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class CaseError(ValueError):
    """A case or report file is malformed; names the file and the field."""

    def __init__(self, path: Path | str, field_name: str | None, message: str) -> None:
        self.path = str(path)
        self.field = field_name
        where = f"{path}: {field_name}: " if field_name else f"{path}: "
        super().__init__(where + message)


@dataclass(frozen=True)
class GroundTruth:
    techniques: tuple[str, ...]
    tables: tuple[str, ...]
    regex_patterns: dict[str, str]
    attack_events: dict[str, tuple[str, ...]]
    hard_negatives: dict[str, tuple[str, ...]]

    def attack_event_count(self) -> int:
        """Attack events, a mirrored event once (its copies share the id: AKSAudit and
        AKSAuditAdmin list the same AuditId; no two other events of a store share an id)."""
        return len({str(i) for ids in self.attack_events.values() for i in ids})


@dataclass(frozen=True)
class Solution:
    sigma: str | None
    kql: str | None


@dataclass(frozen=True)
class Case:
    """One benchmark task. ``objective`` is the only text the agent is given.

    ``objective`` is terse, as upstream's: the behaviour to detect, in a sentence or two.
    ``guidance`` is the longer description the ``seeded`` variant gives instead (empty:
    the objective). Neither names the exclusions that make the rule precise: those are
    found in the telemetry.
    """

    id: str
    platform: str
    title: str
    objective: str
    reports: tuple[str, ...]
    subsets: tuple[str, ...]
    difficulty: str
    ground_truth: GroundTruth
    naive_kql: tuple[str, ...] = ()
    solution: Solution = field(default_factory=lambda: Solution(None, None))
    path: str = ""
    source: str = "ctirealm"
    guidance: str = ""

    def objective_for(self, variant: str) -> str:
        """What the agent is told in *variant*: the guidance in ``seeded``, else the objective."""
        return self.guidance if variant == "seeded" and self.guidance else self.objective

    def bound(self, labels: Labels) -> Case:
        """This case with its events in one split's store.

        A case that lists ``attack_events`` (hand-written telemetry, imported cases)
        is returned as it is. Otherwise its attack events and hard negatives are the
        store's events labelled with the case's id: a scenario is played anew for
        each split, so the ids differ between ``dev`` and ``test``.
        """
        if any(self.ground_truth.attack_events.values()):
            return self
        truth = replace(
            self.ground_truth,
            attack_events=labels.by_table("attack", self.id),
            hard_negatives=labels.by_table("hard_negative", self.id),
        )
        return replace(self, ground_truth=truth)

    @property
    def imported(self) -> bool:
        """Whether the case was imported from the upstream CTI-REALM dataset (``source: cti-realm``)."""
        return self.source in IMPORTED_SOURCES

    @property
    def group(self) -> str:
        """The xdist group and marker-friendly key for this case."""
        return self.id


@dataclass(frozen=True)
class Report:
    """A CTI report: front matter plus the narrative (``content``)."""

    id: str
    title: str
    tags: tuple[str, ...]
    #: When the report's text was written (the reports are the project's own, citing sources).
    written: str
    source_urls: tuple[str, ...]
    content: str
    path: str = ""

    def to_tool_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "tags": list(self.tags),
            "written": self.written,
            "link": self.source_urls[0] if self.source_urls else "",
            "source_urls": list(self.source_urls),
            "content": self.content,
        }


# -- parsing helpers ----------------------------------------------------------


def _require(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if key not in doc or doc[key] is None:
        raise CaseError(path, key, "required field is missing")
    value = doc[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise CaseError(path, key, f"expected {names}, got {type(value).__name__}")
    return value


def _str_list(value: Any, path: Path, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise CaseError(path, name, "expected a list of strings")
    return tuple(str(v) for v in value)


def _id_map(value: Any, path: Path, name: str, tables: set[str] | None) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CaseError(path, name, "expected a mapping of table -> list of event ids")
    out = {}
    for table, ids in value.items():
        if tables is not None and table not in tables:
            raise CaseError(path, f"{name}.{table}", f"unknown table; known: {', '.join(sorted(tables))}")
        out[str(table)] = _str_list(ids, path, f"{name}.{table}")
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CaseError(path, None, f"cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise CaseError(path, None, f"invalid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(doc, dict):
        raise CaseError(path, None, "expected a YAML mapping at the top level")
    return doc


def parse_case(path: Path, *, attack: Attack | None = None, tables: set[str] | None = None) -> Case:
    """Read and validate one ``cases/<platform>/<id>.yaml``."""
    attack = attack or load_attack()
    doc = _read_yaml(path)
    case_id = _require(doc, "id", str, path)
    if not _CASE_ID.match(case_id):
        raise CaseError(path, "id", f"{case_id!r} must look like linux_001, aks_001 or cloud_001")
    if path.stem != case_id:
        raise CaseError(path, "id", f"{case_id!r} does not match the file name {path.stem!r}")
    platform = _require(doc, "platform", str, path)
    if platform not in PLATFORMS:
        raise CaseError(path, "platform", f"{platform!r} is not one of {', '.join(PLATFORMS)}")
    if not case_id.startswith(platform + "_"):
        raise CaseError(path, "platform", f"{platform!r} does not match the id {case_id!r}")
    objective = _require(doc, "objective", str, path).strip()
    if len(objective) < 20:
        raise CaseError(path, "objective", "too short to be a detection objective")
    guidance = doc.get("guidance") or ""
    if not isinstance(guidance, str):
        raise CaseError(path, "guidance", "expected text (the seeded variant's longer objective)")
    difficulty = str(doc.get("difficulty", "medium"))
    if difficulty not in DIFFICULTIES:
        raise CaseError(path, "difficulty", f"{difficulty!r} is not one of {', '.join(DIFFICULTIES)}")
    truth = _require(doc, "ground_truth", dict, path)
    techniques = _str_list(truth.get("techniques"), path, "ground_truth.techniques")
    if not techniques:
        raise CaseError(path, "ground_truth.techniques", "at least one technique is required")
    for technique in techniques:
        if technique not in attack:
            raise CaseError(
                path,
                "ground_truth.techniques",
                f"{technique!r} is not an ATT&CK technique in the bundled data (v18.1)",
            )
    case_tables = _str_list(truth.get("tables"), path, "ground_truth.tables")
    if not case_tables:
        raise CaseError(path, "ground_truth.tables", "at least one table is required")
    for table in case_tables:
        if tables is not None and table not in tables:
            raise CaseError(path, "ground_truth.tables", f"unknown table {table!r}")
    patterns = truth.get("regex_patterns") or {}
    if not isinstance(patterns, dict):
        raise CaseError(path, "ground_truth.regex_patterns", "expected a mapping column -> regex")
    for column, pattern in patterns.items():
        try:
            re.compile(str(pattern))
        except re.error as exc:
            raise CaseError(path, f"ground_truth.regex_patterns.{column}", f"invalid regex: {exc}") from exc
    source = str(doc.get("source") or "ctirealm")
    if source != "ctirealm" and source not in IMPORTED_SOURCES:
        raise CaseError(path, "source", f"{source!r} is not one of ctirealm, " + ", ".join(IMPORTED_SOURCES))
    # Cases played from scenarios list no ids: each split's store labels them (see `Case.bound`).
    attack_events = _id_map(truth.get("attack_events"), path, "ground_truth.attack_events", tables)
    hard_negatives = _id_map(truth.get("hard_negatives"), path, "ground_truth.hard_negatives", tables)
    solution = doc.get("solution") or {}
    if not isinstance(solution, dict):
        raise CaseError(path, "solution", "expected a mapping with sigma and kql paths")
    naive = doc.get("naive_kql") or []
    if not isinstance(naive, list) or not all(isinstance(q, str) for q in naive):
        raise CaseError(path, "naive_kql", "expected a list of KQL strings")
    return Case(
        id=case_id,
        platform=platform,
        title=str(doc.get("title") or case_id),
        objective=objective,
        reports=_str_list(doc.get("reports"), path, "reports"),
        subsets=_str_list(doc.get("subsets") or ["realm-50"], path, "subsets"),
        difficulty=difficulty,
        ground_truth=GroundTruth(
            techniques=techniques,
            tables=case_tables,
            regex_patterns={str(k): str(v) for k, v in patterns.items()},
            attack_events=attack_events,
            hard_negatives=hard_negatives,
        ),
        naive_kql=tuple(naive),
        solution=Solution(solution.get("sigma"), solution.get("kql")),
        path=str(path),
        source=source,
        guidance=guidance.strip(),
    )


_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n(.*)\Z", re.DOTALL)


def parse_report(path: Path) -> Report:
    """Read and validate one ``cases/reports/<id>.md``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CaseError(path, None, f"cannot read: {exc.strerror}") from exc
    match = _FRONT_MATTER.match(text)
    if not match:
        raise CaseError(path, None, "expected YAML front matter between '---' lines")
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise CaseError(path, "front matter", f"invalid YAML: {exc}") from exc
    if not isinstance(meta, dict):
        raise CaseError(path, "front matter", "expected a mapping")
    report_id = _require(meta, "id", str, path)
    if not _REPORT_ID.match(report_id) or report_id != path.stem:
        raise CaseError(path, "id", f"{report_id!r} must be kebab-case and match the file name")
    # ``published`` is the older spelling, still read in a team's own reports.
    written = meta.get("written", meta.get("published"))
    if isinstance(written, date):
        written = written.isoformat()
    tags = tuple(t.lower() for t in _str_list(meta.get("tags"), path, "tags"))
    if not tags:
        raise CaseError(path, "tags", "at least one tag is required")
    content = match.group(2).strip()
    if not content:
        raise CaseError(path, None, "the report has no narrative")
    return Report(
        id=report_id,
        title=_require(meta, "title", str, path),
        tags=tags,
        written=str(written or ""),
        source_urls=_str_list(meta.get("source_urls"), path, "source_urls"),
        content=content,
        path=str(path),
    )
