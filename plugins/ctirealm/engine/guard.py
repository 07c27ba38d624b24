"""The read-only rule, checked on the query text before any engine sees it.

Kusto control commands start with a dot (``.drop``, ``.set``, ``.ingest``,
``.show`` ...). Every engine refuses all of them: a benchmark query has no
business administering the store, and refusing the whole family is simpler to
reason about than an allow-list.

A statement starts at the beginning of the text or after a ``;``; the scan
skips ``//`` comments and string literals (``'...'``, ``"..."`` with backslash
escapes, verbatim ``@'...'``/``@"..."`` with doubled quotes, and multi-line
`````...````` blocks), so a dot inside a string is never taken for a command.
"""

from __future__ import annotations

import re

from .errors import KqlSyntaxError, ReadOnlyViolation, ResourceLimitExceeded

_COMMAND = re.compile(r"\.[A-Za-z][\w-]*")


def _statement_starts(kql: str) -> list[int]:
    """Offsets of the first significant character of every statement."""
    starts: list[int] = []
    expecting = True  # at the start of a statement, before its first token
    i, n = 0, len(kql)
    while i < n:
        ch = kql[i]
        if kql.startswith("//", i):
            end = kql.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if ch.isspace():
            i += 1
            continue
        if expecting:
            starts.append(i)
            expecting = False
        if ch == ";":
            expecting = True
            i += 1
        elif kql.startswith("```", i):
            end = kql.find("```", i + 3)
            i = n if end < 0 else end + 3
        elif ch == "@" and i + 1 < n and kql[i + 1] in "'\"":
            quote, i = kql[i + 1], i + 2
            while i < n:
                if kql[i] == quote and kql[i + 1 : i + 2] == quote:
                    i += 2
                elif kql[i] == quote:
                    i += 1
                    break
                else:
                    i += 1
        elif ch in "'\"":
            quote, i = ch, i + 1
            while i < n and kql[i] != quote and kql[i] != "\n":
                i += 2 if kql[i] == "\\" else 1
            i += 1
        else:
            i += 1
    return starts


def check_read_only(kql: str) -> None:
    """Raise `ReadOnlyViolation` if *kql* is, or contains a statement that is, a control command."""
    for start in _statement_starts(kql):
        match = _COMMAND.match(kql, start)
        if match is None:
            continue
        before = kql[:start]
        line = before.count("\n") + 1
        column = start - (before.rfind("\n") + 1) + 1
        raise ReadOnlyViolation(
            f"control command {match.group(0)!r} refused: this engine runs read-only "
            "queries only (use `T | getschema` for columns, `T | take 5` for samples)",
            construct=match.group(0),
            line=line,
            column=column,
        )


#: Longest query text any engine accepts (long indicator lists belong in a table, not a literal).
MAX_QUERY_CHARS = 1_000_000


def check_query_text(kql: object) -> None:
    """The checks every engine makes before translating: text, not empty, not huge."""
    if not isinstance(kql, str):
        raise KqlSyntaxError(f"query must be text, got {type(kql).__name__}")
    if not kql.strip():
        raise KqlSyntaxError("empty query")
    if len(kql) > MAX_QUERY_CHARS:
        raise ResourceLimitExceeded(
            f"query text is {len(kql):,} characters; the limit is {MAX_QUERY_CHARS:,} "
            "(keep long indicator lists short, or split the query)",
            construct="query size",
        )
