"""The HTML score report: self-contained, escaped, and complete; checked as text and in Chromium."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from report_helpers import console_messages, needs_chromium, non_white_share, raw

from ctirealm.report import check_results, render_html, write_reports
from ctirealm.report.markup import esc, tag

Load = Callable[[str], dict[str, Any]]
HOSTILE = '<script>alert("x")</script><img src=x onerror="alert(1)">'


@pytest.fixture(autouse=True)
def _no_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def test_tag_escapes_text_and_attributes() -> None:
    assert (
        tag("td", "<b>&", title='"x"', class_="num")
        == '<td title="&quot;x&quot;" class="num">&lt;b&gt;&amp;</td>'
    )
    assert tag("p", esc("<i>"), tag("b", "ok")) == "<p>&lt;i&gt;<b>ok</b></p>"
    assert tag("details", open=True, hidden=False) == "<details open></details>"


def test_the_page_is_self_contained(results: Load) -> None:
    page = render_html(results("baseline"))
    assert "<link" not in page and "@import" not in page and not re.search(r"\ssrc=", page)
    assert not re.search(r"url\(", page)
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert csp and "default-src &#x27;none&#x27;" in csp.group(1) and "sha256-" in csp.group(1)
    assert page.count("<script>") == 1 and page.count("<style>") == 1


def test_hostile_agent_output_is_shown_as_text(results: Load) -> None:
    page = render_html(results("errors"))
    assert HOSTILE not in page and "<img" not in page
    assert page.count("<script>") == 1
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;/pre&gt;" in page


def test_the_overview_and_a_case_carry_what_a_reader_needs(results: Load) -> None:
    page = render_html(results("baseline"))
    for text in (
        "Normalised score",
        "0.237",
        "95% CI 0.000 – 0.703",
        "Score by platform",
        "Score by checkpoint",
        "Checkpoints × cases",
        'href="#case-linux_001-e1"',
        "Why points were lost",
        "Queries run (6)",
        "Final submission",
        "Sigma rule",
        "KQL query",
        "Attack events the final KQL matched (1)",
        "Benign events it matched — false positives (2)",
        "attack · DeviceProcessEvents · 418275039461",
        "Detection rules",
        "cron_from_web_shell.yml",
        "1 of 2 rules passed the gate",
        "crontab /tmp/.c-7e21a9",
        "hard_negative · DeviceProcessEvents · 611928374650",
    ):
        assert text in page, text


def test_trajectory_links_when_files_exist(tmp_path: Path) -> None:
    (tmp_path / "trajectories").mkdir()
    (tmp_path / "trajectories" / "linux_001.e1.json").write_text("{}", encoding="utf-8")
    page = write_reports(raw("baseline"), tmp_path)["html"].read_text(encoding="utf-8")
    assert 'href="trajectories/linux_001.e1.json"' in page
    assert "aks_001.e1.json" not in page


@pytest.mark.slow
@needs_chromium
def test_the_report_renders_in_chromium(tmp_path: Path, chromium: Callable[..., Any]) -> None:
    page = write_reports(raw("baseline"), tmp_path)["html"]
    url = page.as_uri()
    run = chromium(url + "#case-linux_001-e1", "--dump-dom")
    assert run.returncode == 0, run.stderr[-2000:]
    assert console_messages(run.stderr) == []
    dom = run.stdout
    assert "Score report: baseline" in dom and "Checkpoints × cases" in dom
    # the linked case was opened by the page's script, its drill-down is in the DOM
    opened = re.search(r'<details class="case" id="case-linux_001-e1"[^>]*>', dom)
    assert opened and "open" in opened.group(0)
    closed = re.search(r'<details class="case" id="case-aks_001-e1"[^>]*>', dom)
    assert closed and "open" not in closed.group(0)
    assert "Why points were lost" in dom and "the final KQL query matched 1 of 2 attack events" in dom
    shot = tmp_path / "shot.png"
    run = chromium(url, f"--screenshot={shot}", "--window-size=800,600")
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    assert non_white_share(shot) > 0.05


@needs_chromium
def test_hostile_output_does_not_run_in_chromium(tmp_path: Path, chromium: Callable[..., Any]) -> None:
    page = write_reports(raw("errors"), tmp_path)["html"]
    run = chromium(page.as_uri(), "--dump-dom")
    assert run.returncode == 0, run.stderr[-2000:]
    assert console_messages(run.stderr) == []  # no script ran, nothing was blocked
    dom = run.stdout
    assert dom.count("<script>") == 1 and "<img" not in dom
    assert '&lt;script&gt;alert("x")&lt;/script&gt;' in dom
    assert "The case scored zero on every checkpoint" in dom


@needs_chromium
def test_an_empty_run_renders(tmp_path: Path, chromium: Callable[..., Any]) -> None:
    page = write_reports(raw("empty"), tmp_path)["html"]
    run = chromium(page.as_uri(), "--dump-dom")
    assert run.returncode == 0 and console_messages(run.stderr) == []
    assert "No cases ran in this run." in run.stdout


_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["</pre>", "<script>x</script>", '"><svg onload=alert(1)>', "&amp;", "]]>", "\u2028"]
)


@settings(max_examples=40, deadline=None)
@given(title=_TEXT, query=_TEXT, error=_TEXT, agent=_TEXT)
def test_any_agent_text_is_escaped(title: str, query: str, error: str, agent: str) -> None:
    document = raw("baseline")
    document["run"]["agent"] = agent
    case = document["cases"][1]
    case["title"], case["objective"] = title, title
    case["trajectory"]["queries"].append({"query": query, "ok": False, "rows": None, "error": error})
    page = render_html(check_results(document))
    for text in (title, query, error, agent):
        assert esc(text) in page
    parser = _Elements()
    parser.feed(page)
    assert parser.tags <= _OWN_TAGS, parser.tags - _OWN_TAGS
    assert parser.scripts == 1 and not parser.handlers


_OWN_TAGS = {
    "html",
    "head",
    "meta",
    "title",
    "style",
    "body",
    "header",
    "div",
    "h1",
    "h2",
    "h3",
    "p",
    "span",
    "main",
    "footer",
    "script",
    "section",
    "dl",
    "dt",
    "dd",
    "small",
    "svg",
    "rect",
    "g",
    "line",
    "circle",
    "text",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "a",
    "br",
    "i",
    "b",
    "button",
    "details",
    "summary",
    "pre",
    "ul",
    "li",
    "code",
}


class _Elements(HTMLParser):
    """The element names of a page, its script elements and any on* handler attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.scripts = 0
        self.handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.scripts += tag == "script"
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
