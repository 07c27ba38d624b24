"""The benchmark an Inspect task runs on: its cases, its stores and engines, and case scoring.

Built as the pytest plugin builds it (`build_store` over a `Dataset`, leniently;
`load_cases` with the store's tables), once per process and set of paths, so
every sample of an Inspect run shares one ``dev`` engine for its tools and one
engine per split for scoring. `Bench.score` is the plugin's ``_score``: the
final detections executed on one split's store, with that split's labels.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cases import Case, CaseSet, load_cases
from ..engine import Engine
from ..scoring import CaseScore
from ..scoring.run import score_on
from ..telemetry.dataset import Dataset
from ..telemetry.store import Store, build_store
from ..tools.trajectory import Trajectory

DEFAULT_QUERY_TIMEOUT = 30.0


@dataclass
class Bench:
    """Cases and per-split stores and engines of one cases folder and one telemetry folder."""

    cases_root: Path
    telemetry: Path
    cache_dir: Path | None = None
    query_timeout: float = DEFAULT_QUERY_TIMEOUT
    #: Held around every tool call and every scoring, across samples: Inspect runs samples
    #: concurrently, and a case's calls must land in its trajectory in the order they ran.
    lock: threading.Lock = field(default_factory=threading.Lock)
    _stores: dict[str, Store] = field(default_factory=dict)
    _engines: dict[str, Engine] = field(default_factory=dict)
    _cases: CaseSet | None = None
    _dataset: Dataset | None = None

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = Dataset.load(self.telemetry)
        return self._dataset

    @property
    def splits(self) -> list[str]:
        """The dataset's splits, ``dev`` first (a dataset without splits has ``dev`` only)."""
        return list(self.dataset.splits) or ["dev"]

    def scoring_split(self, wanted: str = "test") -> str:
        """Where final detections are scored: *wanted* when the dataset has it; ``test``
        falls back to ``dev`` for a dataset without a held-out split, as under pytest."""
        if wanted in self.splits:
            return wanted
        if wanted == "test":
            return "dev"
        raise ValueError(
            f"{self.telemetry / 'dataset.yaml'}: no split {wanted!r}; splits: {', '.join(self.splits)}"
        )

    def store(self, split: str = "dev") -> Store:
        if split not in self._stores:
            self._stores[split] = build_store(
                self.dataset, cache_dir=self.cache_dir, strict=False, split=split
            )
        return self._stores[split]

    def engine(self, split: str = "dev") -> Engine:
        """The read-only local engine on *split*'s store (``dev``: what the tools query)."""
        if split not in self._engines:
            from ..engine.local import LocalEngine  # DuckDB only when a sample runs

            self._engines[split] = LocalEngine.of_store(self.store(split), timeout=self.query_timeout)
        return self._engines[split]

    @property
    def cases(self) -> CaseSet:
        if self._cases is None:
            self._cases = load_cases(self.cases_root, tables=self.store().known_tables())
        return self._cases

    def score(
        self, case: Case, trajectory: Trajectory, split: str, *, mode: str = "strict", judge: Any = None
    ) -> CaseScore:
        """Every checkpoint of *case*, its final detections executed on *split*'s store."""
        score = score_on(
            case,
            self.cases,
            trajectory,
            engine=self.engine(split),
            labels=self.store(split).labels,
            mode=mode,
            judge=judge,
        )
        score.split = split
        return score

    def close(self) -> None:
        for engine in self._engines.values():
            close = getattr(engine, "close", None)
            if callable(close):
                close()
        self._engines.clear()


_BENCHES: dict[tuple[Path, Path, Path | None, float], Bench] = {}
_BENCHES_LOCK = threading.Lock()


def bench_for(
    cases_root: str | Path,
    telemetry: str | Path,
    *,
    cache_dir: str | Path | None = None,
    query_timeout: float = DEFAULT_QUERY_TIMEOUT,
) -> Bench:
    """The process's `Bench` for these folders (built on first use, then shared)."""
    key = (
        Path(cases_root).resolve(),
        Path(telemetry).resolve(),
        Path(cache_dir).resolve() if cache_dir else None,
        float(query_timeout),
    )
    with _BENCHES_LOCK:
        if key not in _BENCHES:
            _BENCHES[key] = Bench(*key)
        return _BENCHES[key]


__all__ = ["DEFAULT_QUERY_TIMEOUT", "Bench", "bench_for"]
