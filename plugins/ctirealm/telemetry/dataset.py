"""The dataset on disk: window, schemas, attack and benign event files, and its content hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from .schema import TableSchema, load_schemas, parse_datetime

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
    """A telemetry folder: ``dataset.yaml``, ``schemas/``, ``attack/``, ``benign/``, ``generator/``."""

    root: Path
    name: str
    window: tuple[datetime, datetime]
    seed: int
    rows: int
    schemas: dict[str, TableSchema]

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
        return cls(
            root=root,
            name=str(config.get("name", root.name)),
            window=window,
            seed=int(generator.get("seed", 0)),
            rows=int(generator.get("rows", 100_000)),
            schemas=load_schemas(root / "schemas"),
        )

    @property
    def now(self) -> datetime:
        """The dataset clock: ``now()`` in every query is the window's end."""
        return self.window[1]

    def _event_files(self, kind: str) -> list[EventFile]:
        base = self.root / kind
        files = []
        for path in sorted(base.rglob("*.jsonl")) if base.is_dir() else []:
            if path.stem not in self.schemas:
                raise DatasetError(
                    f"{path}: file name must be a table name; known tables: "
                    f"{', '.join(sorted(self.schemas))}"
                )
            group = path.parent.relative_to(base).as_posix()
            files.append(EventFile(path.stem, "" if group == "." else group, path))
        return files

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
