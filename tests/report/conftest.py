"""Fixtures of the report tests: committed results files and a headless Chromium."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from report_helpers import CHROMIUM, DATA


@pytest.fixture
def results() -> Callable[[str], dict[str, Any]]:
    """Load and validate a committed results file by name."""
    from ctirealm.report import load_results

    return lambda name: load_results(DATA / f"{name}.json")


@pytest.fixture
def chromium(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run headless Chromium on a URL with the given extra flags; stdout and stderr captured."""

    def run(url: str, *flags: str) -> subprocess.CompletedProcess[str]:
        command = [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--enable-logging=stderr",
            "--v=0",
            *flags,
            url,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)

    return run
