"""The CTI reports carry intelligence, not the answer.

A report is what a threat-intelligence vendor could publish: actors, timeline, what was observed
and how the intrusion progressed. A vendor cannot know the victim's benign activity, nor should a
report hand over the rule or the exact technique set the mapping checkpoint scores, or reading
it would turn C0, C1 and C4 into copy-paste. These tests read the shipped reports and cases.
"""

from __future__ import annotations

import re

import pytest

from ctirealm.attack import extract_technique_ids
from ctirealm.cases import CaseSet, load_cases
from tests.helpers import ROOT

CASES: CaseSet = load_cases(ROOT / "cases")
REPORTS = sorted(CASES.reports.values(), key=lambda r: r.id)
#: Headings of the sections a vendor report cannot honestly contain for this organisation.
FORBIDDEN_HEADING = re.compile(
    r"detect|hunt|benign|look-?alike|false positive|mapping|guidance|mitigat|alert|defend", re.IGNORECASE
)
#: The simulated organisation: the reports are written about the world, not about it.
ORGANISATION = re.compile(r"meridian", re.IGNORECASE)
#: At least this many reports that no case needs: reading every report costs precision.
MIN_DISTRACTORS = 6
#: At least this many cases whose reports name another technique set than their ground truth.
MIN_CASES_NOT_HANDED_THEIR_TECHNIQUES = 40


@pytest.mark.parametrize("report", REPORTS, ids=lambda r: r.id)
def test_a_report_has_no_section_that_hands_over_the_detection(report) -> None:
    headings = [line for line in report.content.splitlines() if line.lstrip().startswith("#")]
    bad = [h for h in headings if FORBIDDEN_HEADING.search(h)]
    assert not bad, f"{report.path}: sections on detection, benign activity or mapping: {bad}"
    assert not ORGANISATION.search(report.content), f"{report.path}: names the simulated organisation"


@pytest.mark.parametrize("report", REPORTS, ids=lambda r: r.id)
def test_a_report_says_when_the_project_wrote_it_and_cites_sources(report) -> None:
    text = (ROOT / "cases" / "reports" / f"{report.id}.md").read_text(encoding="utf-8")
    front = text.split("---")[1]
    assert re.search(r"^written:", front, re.MULTILINE), (
        f"{report.path}: front matter needs `written:` (the project's text, not a publication)"
    )
    assert report.written and report.source_urls, f"{report.path}: `written` and `source_urls`"
    assert all(u.startswith(("https://", "http://")) for u in report.source_urls), report.source_urls


def test_some_reports_are_needed_by_no_case() -> None:
    cited = {r for case in CASES.cases.values() for r in case.reports}
    distractors = sorted(set(CASES.reports) - cited)
    assert len(distractors) >= MIN_DISTRACTORS, distractors


def test_the_reports_do_not_name_the_ground_truth_techniques_exactly() -> None:
    """For most cases, the technique ids its reports name (a campaign covers more than one
    case asks) are not its ground-truth set: C1 needs mapping, not copying."""
    handed = []
    for case in sorted(CASES.cases.values(), key=lambda c: c.id):
        named = {t for r in case.reports for t in extract_technique_ids(CASES.reports[r].content)}
        if named == set(case.ground_truth.techniques):
            handed.append(case.id)
    assert len(CASES.cases) - len(handed) >= MIN_CASES_NOT_HANDED_THEIR_TECHNIQUES, (
        f"{len(handed)} cases' reports name exactly their ground truth: {handed}"
    )
