"""KQL work remembered between runs: translations and table references, on disk.

A benchmark run translates the same few hundred queries as the run before it (the
reference rules, the built-in agents' queries), and scoring resolves the tables each one
reads from the same grammar. Parsing with the Python ANTLR runtime is the costliest part
of both: about a quarter of a warm ``make bench`` at a million rows a split. This memo
keeps the results in the store's cache folder, shared by every process (xdist workers
included) that opens a store there.

An entry is keyed by a digest of what it was computed from (the query text and, for a
translation, the catalogue and the clock) and of a fingerprint of the code that computed
it (duckdb-kql's version and the source of the engine's translation layer and of
attribution), so a changed rewrite never serves an old result. Entries are written to a
temporary file and renamed into place, so concurrent writers never leave half a file; an
entry that cannot be read is a miss, and a folder that cannot be written is no memo.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

#: What a lookup returns when nothing is remembered (None is a value worth remembering).
MISS = object()

_CURRENT: DiskMemo | None = None
_LOCK = threading.Lock()


class DiskMemo:
    """Values by key under one folder: ``<kind>/<digest[:2]>/<digest>.pickle``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, kind: str, key: Any) -> Path:
        digest = hashlib.sha256(repr((kind, key, fingerprint())).encode("utf-8")).hexdigest()
        return self.root / kind / digest[:2] / f"{digest}.pickle"

    def get(self, kind: str, key: Any) -> Any:
        """The value remembered for *key*, or `MISS`."""
        try:
            with self._path(kind, key).open("rb") as handle:
                return pickle.load(handle)
        except Exception:
            return MISS

    def put(self, kind: str, key: Any, value: Any) -> None:
        """Remember *value* for *key* (best effort: a failure to write only loses the entry)."""
        path = self._path(kind, key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            with tmp.open("wb") as handle:
                pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except (OSError, pickle.PicklingError, TypeError, AttributeError):
            return


def use(root: Path | None) -> None:
    """Remember this process's KQL work under *root* (None: remember nothing on disk)."""
    global _CURRENT
    with _LOCK:
        _CURRENT = DiskMemo(root) if root is not None else None


def current() -> DiskMemo | None:
    """The process's memo, set by the last engine opened on a store (`use`)."""
    return _CURRENT


@lru_cache(maxsize=1)
def fingerprint() -> str:
    """duckdb-kql's version and a digest of the code whose results are remembered."""
    import duckdb_kql

    package = Path(__file__).resolve().parents[1]
    engine = package / "engine"
    sources = [
        *sorted((engine / "rewrite").glob("*.py")),
        engine / "local.py",
        package / "telemetry" / "attribution.py",
    ]
    digest = hashlib.sha256(duckdb_kql.__version__.encode())
    for source in sources:
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]
