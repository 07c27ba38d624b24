"""Microsoft's KQL analyzer (Kusto.Language, npm ``@kusto/language-service-next``) as a test helper.

``tests/interop/kql-analyzer`` is a small Node tool pinned by its ``package-lock.json`` (``make test``
installs it with ``npm ci`` when node and npm exist). :func:`analyze` sends queries to it and
returns, per query, the analyzer's diagnostics and the result columns it infers, for a database
built from table schemas (by default the 12 tables of ``telemetry/schemas``, with their declared
Kusto types). :func:`unavailable_reason` says why the tool cannot run, for ``pytest.skip``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TOOL = Path(__file__).resolve().parent / "kql-analyzer"
SCRIPT = TOOL / "analyze.js"
PACKAGE = TOOL / "node_modules" / "@kusto" / "language-service-next"
SCHEMAS = ROOT / "telemetry" / "schemas"


@dataclass(frozen=True)
class Diagnostic:
    """One diagnostic of the analyzer: ``severity`` is ``Error``, ``Warning``, ``Suggestion``..."""

    severity: str
    code: str
    message: str
    start: int
    length: int
    line: int
    column: int
    category: str = ""

    def __str__(self) -> str:
        return f"{self.severity} {self.code} at {self.line}:{self.column}: {self.message}"


@dataclass(frozen=True)
class Analysis:
    """What the analyzer says about one query."""

    diagnostics: tuple[Diagnostic, ...]
    columns: tuple[tuple[str, str], ...] | None

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "Error"]

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Analysis:
        """From the tool's output line (or :meth:`to_record`)."""
        columns = record.get("columns")
        return cls(
            tuple(Diagnostic(**d) for d in record["diagnostics"]),
            None if columns is None else tuple((str(n), str(t)) for n, t in columns),
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "diagnostics": [vars(d) for d in self.diagnostics],
            "columns": None if self.columns is None else [list(c) for c in self.columns],
        }


def unavailable_reason() -> str | None:
    """None when the analyzer can run, else why not (a skip reason)."""
    if shutil.which("node") is None:
        return "Microsoft's KQL analyzer needs node (not found); install node and npm, then `make test`"
    if not PACKAGE.is_dir():
        return (
            "Microsoft's KQL analyzer is not installed: run `make kql-analyzer` "
            "(npm ci in tests/interop/kql-analyzer)"
        )
    return None


def version() -> str:
    """The analyzer package and version, e.g. ``@kusto/language-service-next 12.4.1``."""
    out = subprocess.run(
        ["node", str(SCRIPT), "--version"], capture_output=True, text=True, check=True, timeout=60
    )
    return out.stdout.strip()


def analyze(
    queries: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    schemas: Path | Mapping[str, Iterable[Iterable[str]]] = SCHEMAS,
    database: str = "ctirealm",
    timeout: float = 900.0,
) -> dict[str, Analysis]:
    """Analyze every query (id -> KQL) in one run of the tool; returns id -> :class:`Analysis`.

    *schemas* is a folder of telemetry schema files, one such file, or ``{table: [(column,
    kusto_type), ...]}``.
    """
    items = list(queries.items() if isinstance(queries, Mapping) else queries)
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(schemas, Path):
            schema_path = schemas
        else:
            schema_path = Path(tmp) / "schemas.json"
            schema_path.write_text(
                json.dumps({"tables": {t: [list(c) for c in cols] for t, cols in schemas.items()}}),
                encoding="utf-8",
            )
        stdin = "".join(json.dumps({"id": qid, "query": q}) + "\n" for qid, q in items)
        proc = subprocess.run(
            ["node", str(SCRIPT), "--schemas", str(schema_path), "--database", database],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"kql-analyzer exited {proc.returncode}: {proc.stderr.strip()}")
    out: dict[str, Analysis] = {}
    for line in proc.stdout.splitlines():
        record: dict[str, Any] = json.loads(line)
        if "error" in record:
            raise RuntimeError(f"kql-analyzer, query {record.get('id')!r}: {record['error']}")
        out[record["id"]] = Analysis.from_record(record)
    missing = [qid for qid, _ in items if qid not in out]
    if missing:
        raise RuntimeError(f"kql-analyzer returned nothing for {missing[:5]}")
    return out
