"""The wheel carries the benchmark's dataset, so `pip install ctirealm` can build the baseline."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import ctirealm
from ctirealm.telemetry.dataset import Dataset

ROOT = Path(__file__).resolve().parents[1]


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
