"""Benchmark cases and CTI reports: the models, and loading a ``cases/`` folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..attack import load_attack
from .model import (
    PLATFORMS,
    Case,
    CaseError,
    GroundTruth,
    Report,
    Solution,
    parse_case,
    parse_report,
)


@dataclass
class CaseSet:
    """Every case and report under one folder, plus the files that failed to load."""

    root: Path
    cases: dict[str, Case] = field(default_factory=dict)
    reports: dict[str, Report] = field(default_factory=dict)
    errors: list[CaseError] = field(default_factory=list)

    def select(self, subset: str | None = None, platform: str | None = None) -> list[Case]:
        """Cases in id order, filtered by subset (``realm-25``) and platform."""
        out = []
        for case in sorted(self.cases.values(), key=lambda c: (PLATFORMS.index(c.platform), c.id)):
            if subset and subset not in case.subsets:
                continue
            if platform and case.platform != platform:
                continue
            out.append(case)
        return out

    def tags(self) -> dict[str, int]:
        """Report tags with counts, most frequent first, then by name."""
        counts: dict[str, int] = {}
        for report in self.reports.values():
            for tag in report.tags:
                counts[tag] = counts.get(tag, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def load_cases(root: str | Path, *, tables: set[str] | None = None) -> CaseSet:
    """Load ``<root>/<platform>/*.yaml`` and ``<root>/reports/*.md``, collecting errors per file."""
    root = Path(root)
    found = CaseSet(root)
    attack = load_attack()
    for path in sorted((root / "reports").glob("*.md")) if (root / "reports").is_dir() else []:
        try:
            report = parse_report(path)
            found.reports[report.id] = report
        except CaseError as exc:
            found.errors.append(exc)
    for platform in PLATFORMS:
        folder = root / platform
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            try:
                case = parse_case(path, attack=attack, tables=tables)
            except CaseError as exc:
                found.errors.append(exc)
                continue
            missing = [r for r in case.reports if r not in found.reports]
            if missing:
                found.errors.append(CaseError(path, "reports", f"unknown report ids {missing}"))
                continue
            found.cases[case.id] = case
    return found


__all__ = [
    "Case",
    "CaseError",
    "CaseSet",
    "GroundTruth",
    "Report",
    "Solution",
    "load_cases",
    "parse_case",
    "parse_report",
]
