"""The dataset on disk: window, schemas, attack and benign event files, and its content hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from .events import FileProblem
from .schema import SchemaError, TableSchema, parse_datetime

#: Bumped whenever the store's layout changes, so old caches are not reused.
STORE_FORMAT = 3


def bundled_root() -> Path:
    """The benchmark's own dataset shipped with the package (``ctirealm/dataset``: a link to
    ``telemetry/`` in a checkout, a copy in the wheel): schemas, organisation, profiles."""
    return Path(__file__).resolve().parents[1] / "dataset"


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
    #: Split name -> seed, in dataset.yaml order: ``dev`` (what the agent's tools query)
    #: first, then ``test`` (where final detections are scored). A dataset without
    #: ``splits`` has one, ``dev``, seeded by ``generator.seed``.
    splits: dict[str, int] = field(default_factory=dict)

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
        seed = int(generator.get("seed", 0))
        splits = _splits(config.get("splits"), seed, config_path)
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
                problems.append(FileProblem(f"schemas/{path.name}", None, "schema", path.stem, "", detail))
        return cls(
            root=root,
            name=str(config.get("name", root.name)),
            window=window,
            seed=seed,
            rows=int(generator.get("rows", 100_000)),
            schemas=schemas,
            problems=problems,
            splits=splits,
        )

    def split_seed(self, split: str) -> int:
        """The seed of *split*; `DatasetError` names the known splits otherwise."""
        if split not in self.splits:
            raise DatasetError(
                f"{self.root / 'dataset.yaml'}: no split {split!r}; splits: {', '.join(self.splits)}"
            )
        return self.splits[split]

    def split_position(self, split: str) -> int:
        """Where *split* stands among the splits (scenarios deal candidates out by it); 0 if
        the dataset does not name it."""
        return list(self.splits).index(split) if split in self.splits else 0

    def scenarios_dir(self) -> Path:
        """``scenarios/``: attack stories, look-alikes and base rates (may be absent)."""
        return self.root / "scenarios"

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
        return f"file name must be a table name; known tables: {', '.join(sorted(self.schemas))}"

    def attack_files(self) -> list[EventFile]:
        """``attack/<simulation>/<Table>.jsonl``, sorted."""
        return self._event_files("attack")

    def benign_files(self) -> list[EventFile]:
        """``benign/**/<Table>.jsonl`` (committed hard negatives), sorted."""
        return self._event_files("benign")

    def generator_dir(self) -> Path:
        return self.root / "generator"

    def content_hash(self, *, rows: int, seed: int, split: str = "dev") -> str:
        """Hash of everything the store is built from, so it is rebuilt only when that changes."""
        digest = hashlib.sha256()
        position = self.split_position(split)
        digest.update(
            f"format={STORE_FORMAT};rows={rows};seed={seed};split={split}:{position}/"
            f"{len(self.splits)}\n".encode()
        )
        inputs = [self.root / "dataset.yaml", *sorted((self.root / "schemas").glob("*.json"))]
        for kind in ("attack", "benign", "generator", "scenarios"):
            base = self.root / kind
            if base.is_dir():
                inputs += sorted(p for p in base.rglob("*") if p.is_file())
        # The generator's code shapes the background as much as its profiles do.
        code = Path(__file__).parent
        inputs += sorted((code / "generator").glob("*.py"))
        inputs.append(code / "scenarios.py")
        for path in inputs:
            if not path.is_file():
                continue
            # Names relative to the dataset (or to the code's package): the folder's own name and
            # place (telemetry/ in a checkout, ctirealm/dataset/ installed) do not count.
            name = path.relative_to(self.root) if path.is_relative_to(self.root) else path.relative_to(code)
            digest.update(Path(name).as_posix().encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
            digest.update(b"\0")
        return digest.hexdigest()[:16]


def _splits(value: Any, seed: int, path: Path) -> dict[str, int]:
    """``splits: {dev: {seed: N}, test: {seed: M}}`` (or ``{dev: N}``); dev must come first."""
    if value is None:
        return {"dev": seed}
    if not isinstance(value, dict) or not value:
        raise DatasetError(f"{path}: splits: expected a mapping of split name -> {{seed: N}}")
    out: dict[str, int] = {}
    for name, spec in value.items():
        raw: Any = spec.get("seed") if isinstance(spec, dict) else spec  # YAML: int() checks it
        try:
            out[str(name)] = int(raw)
        except (TypeError, ValueError):
            raise DatasetError(f"{path}: splits.{name}.seed: expected an integer") from None
    if next(iter(out)) != "dev":
        raise DatasetError(f"{path}: splits: the first split must be dev (what agents query)")
    if len(set(out.values())) != len(out):
        raise DatasetError(f"{path}: splits: every split needs its own seed")
    return out
