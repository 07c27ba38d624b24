"""Defender advanced hunting queries kept in Markdown: one hunting query per fenced KQL block.

Microsoft's and the community's Defender hunting repositories keep a query as a ``.md`` page:
a heading, some prose, and the query in a fenced block tagged ``kql`` or ``kusto``. Each such
block is gated like a bare ``.kql`` (``parse``, ``runs``, ``true_positives``), under a node
named by the heading above it. Its test data lives in ``<page>.tests/<block>/`` (the block's
heading, lower-cased, non-alphanumerics as ``-``), or in ``<page>.tests/`` when the page holds
one block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .checks import relative
from .content_data import tests_folder
from .content_items import RuleCollector
from .content_rule import HUNTING_QUERY_ITEMS, SentinelRule

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)[^`]*$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_LANGUAGES = {"kql", "kusto"}
#: ``at 3:5`` in an engine message: a line and column of the query.
_POSITION = re.compile(r"\bat (\d+):(\d+)")


@dataclass(frozen=True)
class QueryBlock:
    """One fenced KQL block: the heading above it, the query, and where the query starts."""

    heading: str
    query: str
    line: int  # the file line of the query's first line (the one after the fence)


def query_blocks(text: str) -> list[QueryBlock]:
    """The fenced ``kql``/``kusto`` blocks of a Markdown text, in order. An unclosed fence runs
    to the end of the file, as CommonMark reads it."""
    blocks: list[QueryBlock] = []
    heading = ""
    lines = text.splitlines()
    n = 0
    while n < len(lines):
        fence = _FENCE.match(lines[n])
        if fence is None:
            title = _HEADING.match(lines[n])
            if title:
                heading = title.group(2).strip()
            n += 1
            continue
        marker, language = fence.group(1), fence.group(2).lower()
        start = n + 1
        end = start
        while end < len(lines) and not re.match(
            rf"^ {{0,3}}{re.escape(marker[0])}{{{len(marker)},}}\s*$", lines[end]
        ):
            end += 1
        if language in _LANGUAGES:
            blocks.append(QueryBlock(heading, "\n".join(lines[start:end]) + "\n", start + 1))
        n = end + 1
    return blocks


def has_query_block(text: str) -> bool:
    return bool(query_blocks(text))


def slug(heading: str) -> str:
    """``Shells talking to /dev/tcp`` -> ``shells-talking-to-dev-tcp``."""
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")


class MarkdownQueryFile(pytest.File):
    """A Markdown page with KQL blocks: one group of hunting-query items per block."""

    def collect(self) -> list[Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise pytest.UsageError(f"{self.path}: cannot read: {exc}") from None
        blocks = query_blocks(text)
        names: dict[str, int] = {}
        out = []
        for block in blocks:
            # "::" separates node names in pytest's ids.
            base = block.heading.replace("::", ":") or f"query at line {block.line}"
            names[base] = names.get(base, 0) + 1
            # Two blocks under one heading: the second is named by its line.
            name = base if names[base] == 1 else f"{base} (line {block.line})"
            out.append(MarkdownQuery.from_parent(self, name=name, block=block, single=len(blocks) == 1))
        return out


class MarkdownQuery(RuleCollector):
    """One KQL block of a Markdown page, gated as a bare hunting query."""

    item_names = HUNTING_QUERY_ITEMS
    hunting = True
    fields = "none"

    def __init__(self, *, block: QueryBlock, single: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.block = block
        self.single = single

    def rule(self) -> SentinelRule:
        if self._rule is None:
            self._rule = SentinelRule(self.path, {"name": self.name, "query": self.block.query})
        return self._rule

    @property
    def label(self) -> str:
        return f"{self.name!r} ({relative(self.config, self.path)}, line {self.block.line})"

    def tests_folder(self) -> Path:
        folder = tests_folder(self.path)
        return folder if self.single else folder / (slug(self.name) or f"line-{self.block.line}")

    def locate(self, message: str) -> str:
        """``syntax error at 3:5`` -> ``syntax error at line 14, column 5 of the file``."""
        return _POSITION.sub(
            lambda m: f"at line {int(m.group(1)) + self.block.line - 1}, column {m.group(2)} of the file",
            message,
        )

    def first_line(self) -> int:
        return self.block.line - 1

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, self.first_line(), self.name
