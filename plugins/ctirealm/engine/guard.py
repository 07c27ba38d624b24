"""The read-only rule, checked on the query text before any engine sees it.

Kusto control commands start with a dot (``.drop``, ``.set``, ``.ingest``,
``.show`` ...). Every engine refuses all of them: a benchmark query has no
business administering the store, and refusing the whole family is simpler to
reason about than an allow-list.
"""

from __future__ import annotations

import re

from .errors import ReadOnlyViolation

_LEADING = re.compile(r"\A(?:\s+|//[^\n]*(?:\n|\Z))*")
_STATEMENT_START = re.compile(r"(?:^|;)\s*(\.[A-Za-z][\w-]*)", re.MULTILINE)


def check_read_only(kql: str) -> None:
    """Raise `ReadOnlyViolation` if *kql* is, or contains a statement that is, a control command."""
    head = kql[_LEADING.match(kql).end():]  # type: ignore[union-attr]
    if head.startswith("."):
        command = head.split(None, 1)[0] if head.split() else head
        raise ReadOnlyViolation(
            f"control command {command!r} refused: this engine runs read-only queries only "
            "(use `T | getschema` for columns, `T | take 5` for samples)",
            construct=command,
            line=kql[: len(kql) - len(head)].count("\n") + 1,
            column=1,
        )
    for match in _STATEMENT_START.finditer(kql):
        before = kql[: match.start(1)]
        # Only a statement boundary outside string literals counts.
        if before.count('"') % 2 == 0 and before.count("'") % 2 == 0:
            line = before.count("\n") + 1
            column = match.start(1) - (before.rfind("\n") + 1) + 1
            raise ReadOnlyViolation(
                f"control command {match.group(1)!r} refused: this engine runs read-only "
                "queries only",
                construct=match.group(1),
                line=line,
                column=column,
            )
