"""Import the upstream CTI-REALM dataset layout into a ctirealm case set and telemetry folder.

Input (a folder holding ``cti_realm/``, or that folder itself), the Hugging Face
snapshot layout below or the reference's ``download_data.py`` layout (the same
files, tables under ``docker/kusto_init/data/`` instead of ``kusto_data/``)::

    cti_realm/data/dataset_samples_stratified_{25,50}.jsonl   id, simulation, ground_truth{mitre_techniques,
                                                              data_sources, regex_patterns}
    cti_realm/data/dataset_answers_stratified_{25,50}.jsonl   id, detection_description, subtasks
    cti_realm/data/sigma_rules.json
    cti_realm/kusto_data/<table lower case>.jsonl             e.g. signinlogs.jsonl, storageboblogs.jsonl
    cti_realm/cti_reports/reports.jsonl                       id, title, content, tags, link
    cti_realm/seed_memory/*.md

Output (``--out DIR``)::

    cases/<platform>/<id>.yaml    source: cti-realm, subsets realm-25/realm-50
    cases/reports/<slug>.md       one per upstream report
    telemetry/dataset.yaml        window from the data, no generated background
    telemetry/schemas/<T>.json    inferred column types, id and time columns
    telemetry/attack/<case>/<T>.jsonl   events matching a case's regex patterns
    telemetry/benign/upstream/<T>.jsonl every other event
    upstream/                     sigma_rules.json and seed_memory/, kept as they were
    import.json                   what was done: counts, renamed columns, labelling, warnings

Decisions (docs/interop.md explains each):

* **Table and column names are upstream's**: ``SignInLogs`` stays spelt so,
  ``storageboblogs.jsonl`` is ``StorageBlobLogs``, and column names go
  through upstream's ``normalize_field_name`` exactly, so queries written for
  the reference run here.
* **Types** are inferred from every row (upstream reads the first rows only;
  reading all of them gives a column that appears late a type too).
* **Ids.** Each table's natural id column is used when every row has a unique
  value; otherwise a ``RealmEventId`` column is added (a hash of the table and
  the row's line, so it reveals nothing).
* **Attack events** are derived from the ground truth, per table: an event of
  one of the case's tables is an attack event of the case when every regex
  pattern of the case matches it (``re.search`` on ``str(value)``, column
  names compared case-insensitively, as upstream scores; ``A.b`` may name a
  renamed or nested column). A table lacking a pattern's column is not
  labelled, and the labelling is reported per case. A case none of whose
  patterns match keeps ``attack_events: {}``; strict C4 then gives no detection
  credit for it, while compat C4 (the reference's marker formula) is unaffected.
* **Unexpected fields are errors** naming the file and line (``lenient=True``
  turns them into warnings, for a newer upstream revision).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from ..attack import load_attack
from ..telemetry.dataset import bundled_root
from ..telemetry.schema import load_schemas, parse_datetime

#: Tables upstream spells otherwise than the shipped schemas.
UPSTREAM_SPELLINGS: dict[str, str] = {"SigninLogs": "SignInLogs"}
#: File stems of upstream's download that are not a table's name in lower case.
UPSTREAM_FILE_ALIASES: dict[str, str] = {"storageboblogs": "StorageBlobLogs"}
_SHIPPED = load_schemas(bundled_root() / "schemas")
#: Upstream file stem (lower case) -> table name, upstream's spellings.
UPSTREAM_TABLES: dict[str, str] = {
    **{UPSTREAM_SPELLINGS.get(n, n).lower(): UPSTREAM_SPELLINGS.get(n, n) for n in sorted(_SHIPPED)},
    **UPSTREAM_FILE_ALIASES,
}
#: Each table's natural id column (used when unique and always present): the shipped schema's.
NATURAL_IDS: dict[str, str] = {
    UPSTREAM_SPELLINGS.get(n, n): s.id_column for n, s in sorted(_SHIPPED.items()) if s.id_column
}
TIME_COLUMNS = ("TimeGenerated", "Timestamp")
SYNTHETIC_ID = "RealmEventId"
SOURCE = "cti-realm"
BACKGROUND = "upstream"

#: ``simulation`` names the attack run whose telemetry a task uses (tasks sharing one share events).
SAMPLE_FIELDS = {"id", "ground_truth", "simulation"}
SAMPLE_REQUIRED = {"id", "ground_truth"}
GROUND_TRUTH_FIELDS = {"mitre_techniques", "data_sources", "regex_patterns"}
ANSWER_FIELDS = {"id", "detection_description", "subtasks"}
REPORT_FIELDS = {"id", "title", "content", "tags", "link"}
SUBSETS = ("25", "50")

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|z|[+-]\d{2}:\d{2})?$")
_CASE_ID = re.compile(r"^(linux|aks|cloud)_\d{3}$")

Progress = Callable[[str], None]


class UpstreamFormatError(ValueError):
    """The upstream layout is incomplete or malformed; the message names the file (and line)."""

    def __init__(self, path: Path | str, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}")


def sanitize_column(name: str) -> str:
    """Upstream's ``normalize_field_name``, step for step, so reference queries name the same columns.

    ``[]`` removed, spaces and ``(){}.,;`` -> ``_``, runs of ``_`` collapsed, outer ``_``
    stripped, ``Field_`` before a leading digit, ``Unknown_Field`` when nothing is left.
    """
    normalized = str(name).replace("[", "").replace("]", "").replace(" ", "_")
    for char in "(){}.,;":
        normalized = normalized.replace(char, "_")
    while "__" in normalized:
        normalized = normalized.replace("__", "_")
    normalized = normalized.strip("_")
    if normalized and normalized[0].isdigit():
        normalized = "Field_" + normalized
    return normalized or "Unknown_Field"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")


# --------------------------------------------------------------------------- reading


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        handle = path.open("r", encoding="utf-8")
    except OSError as exc:
        raise UpstreamFormatError(path, f"cannot read: {exc.strerror}") from exc
    with handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UpstreamFormatError(
                    path, f"invalid JSON at column {exc.colno}: {exc.msg}", number
                ) from None
            if not isinstance(value, dict):
                raise UpstreamFormatError(path, "each line must be a JSON object", number)
            yield number, value


@dataclass
class _Checker:
    lenient: bool
    warnings: list[str] = field(default_factory=list)

    def fields(
        self,
        path: Path,
        line: int | None,
        record: dict[str, Any],
        allowed: set[str],
        required: set[str],
        what: str,
    ) -> None:
        missing = sorted(required - set(record))
        if missing:
            raise UpstreamFormatError(path, f"{what}: missing field(s) {', '.join(missing)}", line)
        extra = sorted(set(record) - allowed)
        if extra:
            message = f"{what}: unexpected field(s) {', '.join(extra)}; expected {', '.join(sorted(allowed))}"
            if not self.lenient:
                raise UpstreamFormatError(path, message + " (use --lenient to import anyway)", line)
            self.warnings.append(f"{path}:{line}: {message} (ignored)" if line else f"{path}: {message}")


#: Where each layout keeps the telemetry, relative to the folder holding ``data/``:
#: the Hugging Face snapshot, and the reference's ``download_data.py`` (which
#: copies the same files next to the emulator's init script).
TELEMETRY_DIRS = {"snapshot": Path("kusto_data"), "download": Path("docker") / "kusto_init" / "data"}


@dataclass
class Layout:
    root: Path  # holds data/, cti_reports/, seed_memory/
    telemetry: Path  # the <table>.jsonl files
    kind: str  # a key of TELEMETRY_DIRS


def find_layout(path: str | Path) -> Layout:
    """Detect the layout at *path* (or its ``cti_realm`` child); an error names both when neither fits."""
    base = Path(path)
    if not base.exists():
        raise UpstreamFormatError(base, "no such folder")
    for candidate in (base / "cti_realm", base):
        if not (candidate / "data").is_dir():
            continue
        for kind, sub in TELEMETRY_DIRS.items():
            if (candidate / sub).is_dir():
                return Layout(candidate, candidate / sub, kind)
    raise UpstreamFormatError(
        base,
        "not an upstream CTI-REALM layout: expected either the Hugging Face "
        "snapshot (cti_realm/data/ and cti_realm/kusto_data/) or the download_data.py "
        "layout (data/ and docker/kusto_init/data/) here",
    )


def find_root(path: str | Path) -> Path:
    """The folder holding ``data/`` (kept for callers that need only that)."""
    return find_layout(path).root


@dataclass
class UpstreamCase:
    id: str
    techniques: list[str]
    data_sources: list[str]
    regex_patterns: dict[str, str]
    description: str = ""
    subtasks: Any = None
    simulation: str | None = None
    subsets: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def _str_list(value: Any, path: Path, line: int, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UpstreamFormatError(path, f"{what} must be a list of strings", line)
    return list(value)


def read_cases(root: Path, checker: _Checker) -> dict[str, UpstreamCase]:
    """Ground truth and objectives from ``data/``, merged by id over the 25 and 50 subsets."""
    data = root / "data"
    cases: dict[str, UpstreamCase] = {}
    pairs = 0
    for subset in SUBSETS:
        samples = data / f"dataset_samples_stratified_{subset}.jsonl"
        answers = data / f"dataset_answers_stratified_{subset}.jsonl"
        if not samples.is_file() and not answers.is_file():
            continue
        for present, absent in ((samples, answers), (answers, samples)):
            if present.is_file() and not absent.is_file():
                raise UpstreamFormatError(absent, f"missing (it pairs with {present.name})")
        pairs += 1
        truth: dict[str, tuple[int, dict[str, Any]]] = {}
        for line, record in _jsonl(samples):
            checker.fields(samples, line, record, SAMPLE_FIELDS | ANSWER_FIELDS, SAMPLE_REQUIRED, "sample")
            simulation = record.get("simulation")
            if simulation is not None and not isinstance(simulation, str):
                raise UpstreamFormatError(samples, "simulation must be text", line)
            gt = record["ground_truth"]
            if not isinstance(gt, dict):
                raise UpstreamFormatError(samples, "ground_truth must be an object", line)
            checker.fields(samples, line, gt, GROUND_TRUTH_FIELDS, GROUND_TRUTH_FIELDS, "ground_truth")
            case_id = str(record["id"])
            if case_id in truth:
                raise UpstreamFormatError(samples, f"id {case_id!r} appears twice", line)
            truth[case_id] = (line, record)
        seen: set[str] = set()
        for line, record in _jsonl(answers):
            checker.fields(answers, line, record, ANSWER_FIELDS, {"id", "detection_description"}, "answer")
            case_id = str(record["id"])
            if case_id in seen:
                raise UpstreamFormatError(answers, f"id {case_id!r} appears twice", line)
            seen.add(case_id)
            if case_id not in truth:
                raise UpstreamFormatError(
                    answers, f"id {case_id!r} has no ground truth in {samples.name}", line
                )
            sample_line, sample = truth[case_id]
            gt = sample["ground_truth"]
            patterns = gt["regex_patterns"]
            if not isinstance(patterns, dict) or not all(isinstance(v, str) for v in patterns.values()):
                raise UpstreamFormatError(
                    samples, "ground_truth.regex_patterns must map column -> regex", sample_line
                )
            for column, pattern in patterns.items():
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise UpstreamFormatError(
                        samples, f"regex for {column!r} does not compile: {exc}", sample_line
                    ) from exc
            description = record["detection_description"]
            if not isinstance(description, str) or not description.strip():
                raise UpstreamFormatError(answers, "detection_description must be non-empty text", line)
            candidate = UpstreamCase(
                id=case_id,
                techniques=_str_list(
                    gt["mitre_techniques"], samples, sample_line, "ground_truth.mitre_techniques"
                ),
                data_sources=_str_list(gt["data_sources"], samples, sample_line, "ground_truth.data_sources"),
                regex_patterns={str(k): v for k, v in patterns.items()},
                description=description.strip(),
                subtasks=record.get("subtasks"),
                simulation=sample.get("simulation"),
            )
            existing = cases.get(case_id)
            if existing is None:
                cases[case_id] = candidate
            elif (
                existing.techniques,
                existing.data_sources,
                existing.regex_patterns,
                existing.description,
                existing.simulation,
            ) != (
                candidate.techniques,
                candidate.data_sources,
                candidate.regex_patterns,
                candidate.description,
                candidate.simulation,
            ):
                raise UpstreamFormatError(
                    samples,
                    f"id {case_id!r} differs from its entry in {', '.join(existing.files)}",
                    sample_line,
                )
            entry = cases[case_id]
            entry.subsets.append(f"realm-{subset}")
            entry.files.append(samples.name)
        missing_answers = sorted(set(truth) - seen)
        if missing_answers:
            raise UpstreamFormatError(answers, f"no entry for id(s) {', '.join(missing_answers[:5])}")
    if not pairs:
        raise UpstreamFormatError(
            data / "dataset_samples_stratified_50.jsonl",
            "missing (and no _25 files either): no cases to import",
        )
    return cases


@dataclass
class UpstreamReport:
    id: str
    slug: str
    title: str
    content: str
    tags: list[str]
    link: str


def read_reports(root: Path, checker: _Checker) -> list[UpstreamReport]:
    path = root / "cti_reports" / "reports.jsonl"
    if not path.is_file():
        raise UpstreamFormatError(path, "missing: the CTI reports file is required")
    reports: list[UpstreamReport] = []
    slugs: dict[str, int] = {}
    for line, record in _jsonl(path):
        checker.fields(path, line, record, REPORT_FIELDS, {"id", "title", "content"}, "report")
        for key in ("title", "content"):
            if not isinstance(record[key], str) or not record[key].strip():
                raise UpstreamFormatError(path, f"report {key} must be non-empty text", line)
        tags = record.get("tags") or []
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.split(",") if t.strip()]
        tags = _str_list(tags, path, line, "tags")
        slug = _slug(str(record["id"])) or f"report-{line}"
        if not slug[0].isalnum():
            slug = f"report-{slug}"
        if slug in slugs:
            raise UpstreamFormatError(
                path, f"report id {record['id']!r} clashes with line {slugs[slug]}", line
            )
        slugs[slug] = line
        reports.append(
            UpstreamReport(
                str(record["id"]),
                slug,
                record["title"].strip(),
                record["content"].strip(),
                [t.strip().lower() for t in tags if t.strip()] or ["untagged"],
                str(record.get("link") or ""),
            )
        )
    return reports


# --------------------------------------------------------------------------- telemetry


@dataclass
class _Column:
    name: str  # sanitized
    kinds: set[str] = field(default_factory=set)
    present: int = 0  # rows with a non-null value


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        # Upstream declares integers `int`; one that does not fit 32 bits needs `long`
        # (upstream's ingestion would fail on it), one beyond 64 bits `real`.
        if -(2**31) <= value < 2**31:
            return "int"
        return "long" if -(2**63) <= value < 2**63 else "float"
    if isinstance(value, float):
        return "float"
    if isinstance(value, (dict, list)):
        return "dynamic"
    if isinstance(value, str) and _ISO.match(value):
        try:
            parse_datetime(value)
            return "datetime"
        except ValueError:
            return "string"
    return "string"


def resolve_type(kinds: set[str]) -> str:
    """The Kusto type for the kinds of values one column holds."""
    if not kinds:
        return "string"
    if "dynamic" in kinds or ("bool" in kinds and len(kinds) > 1):
        return "dynamic"
    if kinds == {"bool"}:
        return "bool"
    if kinds == {"int"}:
        return "int"
    if kinds <= {"int", "long"}:
        return "long"
    if kinds <= {"int", "long", "float"}:
        return "real"
    if kinds == {"datetime"}:
        return "datetime"
    return "string"


@dataclass
class TableScan:
    """What the first pass over one upstream table file learnt."""

    table: str
    path: Path
    rows: int = 0
    columns: dict[str, _Column] = field(default_factory=dict)  # raw key -> column
    renamed: dict[str, str] = field(default_factory=dict)  # raw key -> sanitized (when different)
    ids: dict[str, set[str]] = field(default_factory=dict)  # candidate id column -> values seen
    id_unique: dict[str, bool] = field(default_factory=dict)
    times: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)

    def schema(self) -> list[tuple[str, str]]:
        return [(c.name, resolve_type(c.kinds)) for c in self.columns.values()]


def _sanitized_names(path: Path, keys: list[str], warnings: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    used: dict[str, str] = {}
    for key in keys:
        name = sanitize_column(key)
        base, n = name, 2
        while name.lower() in used:
            name = f"{base}_{n}"
            n += 1
        if name != base:
            warnings.append(
                f"{path}: column {key!r} renamed {name!r} (clashes with "
                f"{used[base.lower()]!r} once sanitized)"
            )
        used[name.lower()] = key
        out[key] = name
    return out


def scan_table(path: Path, table: str, warnings: list[str]) -> TableScan:
    """First pass: columns in order of appearance, kinds of values, id uniqueness, time range."""
    scan = TableScan(table, path)
    natural = NATURAL_IDS.get(table)
    for _line, record in _jsonl(path):
        scan.rows += 1
        for key, value in record.items():
            column = scan.columns.get(key)
            if column is None:
                column = scan.columns[key] = _Column(key)
            if value is not None:
                column.present += 1
                column.kinds.add(_kind(value))
        if natural is not None:
            for key in record:
                if sanitize_column(key) == natural:
                    value = record[key]
                    seen = scan.ids.setdefault(key, set())
                    text = None if value is None else str(value)
                    if text is None or text in seen:
                        scan.id_unique[key] = False
                    else:
                        seen.add(text)
                        scan.id_unique.setdefault(key, True)
        for key in record:
            if sanitize_column(key) in TIME_COLUMNS and isinstance(record[key], str):
                try:
                    moment = parse_datetime(record[key])
                except ValueError:
                    continue
                low, high = scan.times.get(key, (moment, moment))
                scan.times[key] = (min(low, moment), max(high, moment))
    names = _sanitized_names(path, list(scan.columns), warnings)
    for key, column in scan.columns.items():
        column.name = names[key]
        if names[key] != key:
            scan.renamed[key] = names[key]
    return scan


def _choose_id(scan: TableScan) -> tuple[str, str | None]:
    """(id column name, raw key) — the raw key is None when a synthetic id is added."""
    for key, unique in scan.id_unique.items():
        if unique and len(scan.ids.get(key, ())) == scan.rows and scan.rows > 0:
            column = scan.columns[key]
            if resolve_type(column.kinds) in ("string", "long"):
                return column.name, key
    taken = {c.name.lower() for c in scan.columns.values()}
    name, n = SYNTHETIC_ID, 2
    while name.lower() in taken:
        name = f"{SYNTHETIC_ID}{n}"
        n += 1
    return name, None


def _choose_time(scan: TableScan) -> str:
    for preferred in TIME_COLUMNS:
        for key, column in scan.columns.items():
            if (
                column.name == preferred
                and resolve_type(column.kinds) == "datetime"
                and key in scan.times
                and column.present == scan.rows
            ):
                return key
    for key, column in scan.columns.items():
        if resolve_type(column.kinds) == "datetime" and column.present == scan.rows and key in scan.times:
            return key
    raise UpstreamFormatError(
        scan.path, "no time column: expected TimeGenerated or Timestamp with an ISO-8601 value in every row"
    )


@dataclass
class _Matcher:
    """One ground-truth pattern bound to a column (and a path inside it) of one table."""

    pattern_column: str
    path: tuple[str, ...]  # sanitized column, then keys inside a dynamic value
    pattern: re.Pattern[str]

    def matches(self, row: dict[str, Any]) -> bool:
        value: Any = row.get(self.path[0])
        for key in self.path[1:]:
            if not isinstance(value, dict):
                return False
            value = next((v for k, v in value.items() if str(k).lower() == key.lower()), None)
        # upstream compares str(value) of whatever the column holds
        return value is not None and self.pattern.search(str(value)) is not None


def _resolve_pattern_column(scan: TableScan, column: str) -> tuple[str, ...] | None:
    """Where a pattern's column is in *scan*: a column (names compared case-insensitively, as
    upstream scores, and after upstream's renaming), or ``Column.key`` inside a dynamic column."""
    by_lower = {c.name.lower(): c.name for c in scan.columns.values()}
    for name in (column, sanitize_column(column)):
        if name.lower() in by_lower:
            return (by_lower[name.lower()],)
    head, _, rest = column.partition(".")
    target = by_lower.get(sanitize_column(head).lower()) if rest else None
    if target is not None and any(c.name == target and "dynamic" in c.kinds for c in scan.columns.values()):
        return (target, *rest.split("."))
    return None


def _synthetic_id(table: str, line: int, text: str) -> str:
    return hashlib.sha256(f"{table}\0{line}\0{text}".encode()).hexdigest()[:20]


# --------------------------------------------------------------------------- the import


@dataclass
class ImportResult:
    """What an import produced, also written to ``import.json``."""

    out: Path
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    reports: int = 0
    window: tuple[str, str] = ("", "")
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": SOURCE,
            "out": str(self.out),
            "window": list(self.window),
            "reports": self.reports,
            "tables": self.tables,
            "cases": self.cases,
            "warnings": self.warnings,
        }


def _table_files(folder: Path, checker: _Checker) -> dict[str, Path]:
    if not folder.is_dir():
        raise UpstreamFormatError(folder, "missing: the telemetry folder is required")
    files: dict[str, Path] = {}
    for path in sorted(folder.glob("*.jsonl")):
        table = UPSTREAM_TABLES.get(path.stem.lower())
        if table is None:
            message = (
                f"unexpected table file; known: "
                f"{', '.join(sorted(set(UPSTREAM_TABLES) - {'storagebloblogs'}))}"
            )
            if not checker.lenient:
                raise UpstreamFormatError(path, message + " (use --lenient to skip it)")
            checker.warnings.append(f"{path}: {message} (skipped)")
            continue
        if table in files:
            raise UpstreamFormatError(path, f"a second file for table {table} (first: {files[table].name})")
        files[table] = path
    if not files:
        raise UpstreamFormatError(folder, "no table files (<table>.jsonl) found")
    return files


def _schema_json(
    table: str, id_column: str, time_column: str, columns: list[tuple[str, str]], source: str
) -> str:
    """A schema file in the layout of ``telemetry/schemas`` (one column per line)."""
    head = json.dumps(
        {
            "table": table,
            "id_column": id_column,
            "time_column": time_column,
            "source": f"inferred from the upstream CTI-REALM file {source}",
        },
        indent=2,
    )
    lines = ",\n".join(f"    {json.dumps(list(c))}" for c in columns)
    return head[:-2] + f',\n  "columns": [\n{lines}\n  ]\n}}\n'


def _dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def import_cti_realm(
    source: str | Path,
    out: str | Path,
    *,
    lenient: bool = False,
    force: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    """Read the upstream layout at *source* and write a case set and telemetry folder under *out*."""
    layout = find_layout(source)
    root = layout.root
    out = Path(out)
    _clear_output(out, force)
    checker = _Checker(lenient)
    result = ImportResult(out)
    say = progress or (lambda message: None)

    cases = read_cases(root, checker)
    reports = read_reports(root, checker)
    files = _table_files(layout.telemetry, checker)
    _check_cases(cases, files, layout)

    scans: dict[str, TableScan] = {}
    for table, path in sorted(files.items()):
        say(f"scanning {path.name}")
        scans[table] = scan_table(path, table, checker.warnings)
    telemetry = out / "telemetry"
    times = _write_dataset(telemetry, scans, layout, result)
    matchers, labelling = _plan_labelling(cases, scans, checker)
    attack_events: dict[str, dict[str, list[str]]] = {c: {} for c in cases}
    for table, scan in sorted(scans.items()):
        say(f"writing {table}")
        result.tables[table] = _write_table(
            telemetry, table, scan, times.get(table), matchers.get(table, []), labelling, attack_events
        )

    _write_reports(out / "cases" / "reports", reports)
    result.reports = len(reports)
    _write_cases(out / "cases", cases, attack_events, labelling, result, checker)
    _copy_extras(root, out / "upstream", checker)
    result.warnings = checker.warnings
    (out / "import.json").write_text(json.dumps(result.to_dict(), indent=1) + "\n", encoding="utf-8")
    return result


def _clear_output(out: Path, force: bool) -> None:
    """Refuse a non-empty *out*, or with *force* remove what an earlier import wrote there."""
    if not (out.exists() and any(out.iterdir())):
        return
    if not force:
        raise UpstreamFormatError(out, "output folder is not empty (use --force to replace it)")
    for part in ("cases", "telemetry", "upstream", "import.json"):
        target = out / part
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _check_cases(cases: dict[str, UpstreamCase], files: dict[str, Path], layout: Layout) -> None:
    """Each case's id, description and techniques are valid; its data sources become the table
    names of *files* (upstream spells them in any case)."""
    attack = load_attack()
    folded = {t.lower(): t for t in files}
    root = layout.root
    for case in cases.values():
        where = root / "data" / case.files[0]
        if not _CASE_ID.match(case.id):
            raise UpstreamFormatError(where, f"id {case.id!r} must look like linux_001, aks_001 or cloud_001")
        if len(case.description) < 20:
            raise UpstreamFormatError(where, f"{case.id}: detection_description is too short")
        for technique in case.techniques:
            if technique not in attack:
                raise UpstreamFormatError(
                    where, f"{case.id}: {technique!r} is not an ATT&CK technique in the bundled data"
                )
        resolved = []
        for table in case.data_sources:
            name = folded.get(table.lower())
            if name is None:
                raise UpstreamFormatError(
                    where,
                    f"{case.id}: data source {table!r} has no table file in "
                    f"{layout.telemetry.relative_to(root)}/ "
                    f"(tables: {', '.join(sorted(files))})",
                )
            resolved.append(name)
        case.data_sources = resolved
        if not case.techniques or not case.data_sources:
            raise UpstreamFormatError(where, f"{case.id}: mitre_techniques and data_sources may not be empty")


def _write_dataset(
    telemetry: Path, scans: dict[str, TableScan], layout: Layout, result: ImportResult
) -> dict[str, str]:
    """dataset.yaml with the whole days the rows cover; returns each table's time column key."""
    times: dict[str, str] = {t: _choose_time(s) for t, s in scans.items() if s.rows}
    moments = [scans[t].times[k] for t, k in times.items()]
    if not moments:
        raise UpstreamFormatError(layout.telemetry, "the table files hold no rows")
    first = min(m[0] for m in moments)
    last = max(m[1] for m in moments)
    start = first.replace(hour=0, minute=0, second=0, microsecond=0)
    end = last.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    (telemetry / "schemas").mkdir(parents=True, exist_ok=True)
    result.window = (start.isoformat() + "Z", end.isoformat() + "Z")
    (telemetry / "dataset.yaml").write_text(
        _dump_yaml(
            {
                "name": "cti-realm",
                "source": SOURCE,
                "window": {"start": result.window[0], "end": result.window[1]},
                "generator": {"seed": 0, "rows": 0},
            }
        ),
        encoding="utf-8",
    )
    return times


Matchers = list[tuple[str, list[_Matcher]]]


def _plan_labelling(
    cases: dict[str, UpstreamCase], scans: dict[str, TableScan], checker: _Checker
) -> tuple[dict[str, Matchers], dict[str, dict[str, Any]]]:
    """Per table, the cases whose every pattern has a column there (with their matchers), and
    the labelling report per case (tables refused with the reason, events counted later)."""
    matchers: dict[str, Matchers] = {}
    labelling: dict[str, dict[str, Any]] = {}
    for case in sorted(cases.values(), key=lambda c: c.id):
        case_report = labelling[case.id] = {"events": 0, "tables": {}}
        for table in case.data_sources:
            entry: dict[str, Any] = {"events": 0, "patterns": {}}
            case_report["tables"][table] = entry
            pattern_paths = {col: _resolve_pattern_column(scans[table], col) for col in case.regex_patterns}
            missing = sorted(col for col, path in pattern_paths.items() if path is None)
            if missing:
                # ignoring a pattern would label more than upstream's ground truth means
                entry["refused"] = f"no column for pattern(s) {', '.join(missing)}"
                continue
            applicable = [
                _Matcher(col, path, re.compile(case.regex_patterns[col]))
                for col, path in pattern_paths.items()
                if path is not None
            ]
            if not applicable:
                entry["refused"] = "the case has no regex patterns"
                continue
            entry["patterns"] = {m.pattern_column: ".".join(m.path) for m in applicable}
            matchers.setdefault(table, []).append((case.id, applicable))
        # a multi-table case normally has its patterns' columns in one table only: the others
        # are reported as not labelled; a warning only when no table could be labelled at all
        if case_report["tables"] and all("refused" in e for e in case_report["tables"].values()):
            checker.warnings.append(
                f"{case.id}: no table has the columns of all its patterns; "
                "nothing labelled (see labelling in import.json)"
            )
    return matchers, labelling


def _write_table(
    telemetry: Path,
    table: str,
    scan: TableScan,
    time_key: str | None,
    matchers: Matchers,
    labelling: dict[str, dict[str, Any]],
    attack_events: dict[str, dict[str, list[str]]],
) -> dict[str, Any]:
    """The table's schema file and its rows, each in the attack folder of the first case whose
    patterns it matches or in the background; returns the table's entry of import.json."""
    id_name, id_key = _choose_id(scan)
    columns = scan.schema()
    if id_key is None:
        columns = [(id_name, "string"), *columns]
    if scan.rows and time_key is not None:
        time_name = scan.columns[time_key].name
    else:
        time_name = next((c for c, t in columns if t == "datetime"), None) or "TimeGenerated"
        if all(c != time_name for c, _ in columns):
            columns.append((time_name, "datetime"))
    (telemetry / "schemas" / f"{table}.json").write_text(
        _schema_json(table, id_name, time_name, columns, scan.path.name), encoding="utf-8"
    )
    handles: dict[str, Any] = {}
    matched_rows = 0
    try:
        for line, record in _jsonl(scan.path):
            row = {scan.renamed.get(k, k): v for k, v in record.items()}
            if id_key is None:
                raw = json.dumps(record, sort_keys=True, ensure_ascii=False)
                row = {id_name: _synthetic_id(table, line, raw), **row}
            event_id = str(row[id_name])
            group = BACKGROUND
            owners = []
            for case_id, applicable in matchers:
                if all(m.matches(row) for m in applicable):
                    owners.append(case_id)
                    labelling[case_id]["tables"][table]["events"] += 1
                    labelling[case_id]["events"] += 1
            if owners:
                matched_rows += 1
                group = owners[0]
                for case_id in owners:
                    attack_events[case_id].setdefault(table, []).append(event_id)
            kind = "benign" if group == BACKGROUND else "attack"
            target = telemetry / kind / group / f"{table}.jsonl"
            handle = handles.get(str(target))
            if handle is None:
                target.parent.mkdir(parents=True, exist_ok=True)
                handle = handles[str(target)] = target.open("w", encoding="utf-8")
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    finally:
        for handle in handles.values():
            handle.close()
    return {
        "file": scan.path.name,
        "rows": scan.rows,
        "attack_rows": matched_rows,
        "id_column": id_name,
        "id_synthetic": id_key is None,
        "time_column": time_name,
        "renamed_columns": dict(scan.renamed),
        "columns": len(columns),
    }


def _write_reports(report_dir: Path, reports: list[UpstreamReport]) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    for report in reports:
        front = {
            "id": report.slug,
            "title": report.title,
            "tags": report.tags,
            "source_urls": [report.link] if report.link else [],
            "upstream_id": report.id,
        }
        (report_dir / f"{report.slug}.md").write_text(
            f"---\n{_dump_yaml(front)}---\n{report.content}\n", encoding="utf-8"
        )


def _write_cases(
    folder: Path,
    cases: dict[str, UpstreamCase],
    attack_events: dict[str, dict[str, list[str]]],
    labelling: dict[str, dict[str, Any]],
    result: ImportResult,
    checker: _Checker,
) -> None:
    """One case file per upstream sample (its attack events as labelled), and its import.json entry."""
    for case in sorted(cases.values(), key=lambda c: c.id):
        platform = case.id.split("_", 1)[0]
        events = {t: ids_ for t, ids_ in sorted(attack_events[case.id].items())}
        title = re.split(r"(?<=[.!?])\s", case.description, maxsplit=1)[0]
        doc: dict[str, Any] = {
            "id": case.id,
            "platform": platform,
            "source": SOURCE,
            "title": title if len(title) <= 120 else title[:117].rstrip() + "...",
            "objective": case.description,
            "reports": [],
            "subsets": sorted(set(case.subsets)),
            "difficulty": "medium",
            "ground_truth": {
                "techniques": case.techniques,
                "tables": case.data_sources,
                "regex_patterns": case.regex_patterns,
                "attack_events": events,
            },
        }
        extra: dict[str, Any] = {}
        if case.simulation is not None:
            extra["simulation"] = case.simulation
        if case.subtasks is not None:
            extra["subtasks"] = case.subtasks
        if extra:
            doc["upstream"] = extra
        (folder / platform).mkdir(parents=True, exist_ok=True)
        (folder / platform / f"{case.id}.yaml").write_text(_dump_yaml(doc), encoding="utf-8")
        result.cases[case.id] = {
            "subsets": doc["subsets"],
            "attack_events": sum(len(v) for v in events.values()),
            "simulation": case.simulation,
            "labelling": labelling[case.id],
        }
        if not events:
            checker.warnings.append(
                f"{case.id}: no event matches its regex patterns; "
                "attack_events is empty (strict C4 gives no detection credit)"
            )


def _copy_extras(root: Path, upstream: Path, checker: _Checker) -> None:
    """Upstream's Sigma rule list and seed memory, kept as they are."""
    sigma = root / "data" / "sigma_rules.json"
    if sigma.is_file():
        try:
            json.loads(sigma.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise UpstreamFormatError(sigma, f"invalid JSON: {exc}") from exc
        upstream.mkdir(parents=True, exist_ok=True)
        shutil.copy2(sigma, upstream / "sigma_rules.json")
    else:
        checker.warnings.append(f"{sigma}: missing (not needed to run; kept when present)")
    seeds = sorted((root / "seed_memory").glob("*.md")) if (root / "seed_memory").is_dir() else []
    if seeds:
        (upstream / "seed_memory").mkdir(parents=True, exist_ok=True)
        for path in seeds:
            shutil.copy2(path, upstream / "seed_memory" / path.name)
