"""The dataset on disk: window, schemas, attack and benign event files, and its content hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from .events import FileProblem
from .schema import SchemaError, TableSchema, parse_datetime

#: Bumped whenever the store's layout changes, so old caches are not reused.
STORE_FORMAT = 1


class DatasetError(ValueError):
    """The dataset folder or ``dataset.yaml`` is missing or malformed."""


@dataclass(frozen=True)
class EventFile:
    """One JSONL file: its table, the folder it belongs to (simulation or source), its path."""

    table: str
    group: str
    path: Path


@dataclass
class Dataset:
    """A telemetry folder: ``dataset.yaml``, ``schemas/``, ``attack/``, ``benign/``, ``generator/``.

    A schema file that does not load leaves its table out of `schemas` and is
    listed in `problems` instead: the store decides whether that stops a build.
    """

    root: Path
    name: str
    window: tuple[datetime, datetime]
    seed: int
    rows: int
    schemas: dict[str, TableSchema]
    problems: list[FileProblem]

    @classmethod
    def load(cls, root: str | Path) -> Dataset:
        root = Path(root)
        config_path = root / "dataset.yaml"
        if not config_path.is_file():
            raise DatasetError(f"{config_path}: dataset file not found")
        try:
            config: dict[str, Any] = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise DatasetError(f"{config_path}: invalid YAML: {exc}") from exc
        try:
            window_cfg = config["window"]
            window = (parse_datetime(str(window_cfg["start"])), parse_datetime(str(window_cfg["end"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{config_path}: window.start and window.end required: {exc}") from exc
        if window[0] >= window[1]:
            raise DatasetError(f"{config_path}: window.start must be before window.end")
        generator = config.get("generator") or {}
        schema_dir = root / "schemas"
        if not schema_dir.is_dir():
            raise DatasetError(f"{schema_dir}: schema directory not found")
        schemas: dict[str, TableSchema] = {}
        problems: list[FileProblem] = []
        for path in sorted(schema_dir.glob("*.json")):
            try:
                schemas[path.stem] = TableSchema.load(path)
            except SchemaError as exc:
                detail = str(exc).removeprefix(f"{path}").lstrip(":0123456789 ")
                problems.append(FileProblem(f"schemas/{path.name}", None, "schema", path.stem, "",
                                            detail))
        return cls(
            root=root,
            name=str(config.get("name", root.name)),
            window=window,
            seed=int(generator.get("seed", 0)),
            rows=int(generator.get("rows", 100_000)),
            schemas=schemas,
            problems=problems,
        )

    @property
    def now(self) -> datetime:
        """The dataset clock: ``now()`` in every query is the window's end."""
        return self.window[1]

    def _event_files(self, kind: str) -> list[EventFile]:
        base = self.root / kind
        files = []
        # A file whose name is not a usable table is still listed: the store reports it.
        for path in sorted(base.rglob("*.jsonl")) if base.is_dir() else []:
            group = path.parent.relative_to(base).as_posix()
            files.append(EventFile(path.stem, "" if group == "." else group, path))
        return files

    def unusable_table(self, table: str) -> str | None:
        """Why events of *table* cannot be loaded (no schema, or a broken one), else None."""
        if table in self.schemas:
            return None
        broken = next((p for p in self.problems if p.kind == "schema" and p.table == table), None)
        if broken:
            return f"the schema of {table} did not load ({broken})"
        return (f"file name must be a table name; known tables: {', '.join(sorted(self.schemas))}")

    def attack_files(self) -> list[EventFile]:
        """``attack/<simulation>/<Table>.jsonl``, sorted."""
        return self._event_files("attack")

    def benign_files(self) -> list[EventFile]:
        """``benign/**/<Table>.jsonl`` (committed hard negatives), sorted."""
        return self._event_files("benign")

    def generator_dir(self) -> Path:
        return self.root / "generator"

    def content_hash(self, *, rows: int, seed: int) -> str:
        """Hash of everything the store is built from, so it is rebuilt only when that changes."""
        digest = hashlib.sha256()
        digest.update(f"format={STORE_FORMAT};rows={rows};seed={seed}\n".encode())
        inputs = [self.root / "dataset.yaml", *sorted((self.root / "schemas").glob("*.json"))]
        for kind in ("attack", "benign", "generator"):
            base = self.root / kind
            if base.is_dir():
                inputs += sorted(p for p in base.rglob("*") if p.is_file())
        # The generator's code shapes the background as much as its profiles do.
        inputs.append(Path(__file__).with_name("generator.py"))
        for path in inputs:
            if not path.is_file():
                continue
            digest.update(path.relative_to(path.parent.parent).as_posix().encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
            digest.update(b"\0")
        return digest.hexdigest()[:16]
