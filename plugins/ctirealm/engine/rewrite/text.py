"""Rewrites of the query text, for syntax duckdb-kql's grammar does not parse.

The least invasive place for them: nothing in duckdb-kql changes, and the text
keeps its length and line breaks, so every line:column an error reports still
points into the text the author wrote. Comments and string literals are left
alone.

* ``table("T")`` (and ``table('T')``) is the table ``T``: Kusto's ``table()``
  function with a constant name, which detection queries use to read a table
  whose name is chosen in a ``let`` or written as a string.
* ``let f = view () { ... }`` is ``let f = () { ... }``: ``view`` only adds the
  function to what ``union *`` and ``search *`` read, and tabular ``let``
  functions are expanded where they are called (see ``tree``).
* ``| serialize`` without columns is ``| where 1>0``: it changes no row, and the
  order ``prev``/``next``/``row_number`` read is the preceding sort's (see ``tree``).
"""

from __future__ import annotations

import re

#: What is not code: comments and every form of string literal.
_NOT_CODE = (
    r"//[^\n]*|@'(?:[^']|'')*'|@\"(?:[^\"]|\"\")*\"|'(?:\\.|[^'\\\n])*'|\"(?:\\.|[^\"\\\n])*\""
)
_TABLE_CALL = r"(?<![\w.$])table\s*\(\s*(?:\"(?P<dq>[^\"\\\n]*)\"|'(?P<sq>[^'\\\n]*)')\s*\)"
_VIEW = r"(?<![\w.$])let\s+(?:\w+|\[\s*(?:'[^'\n]*'|\"[^\"\n]*\")\s*\])\s*=\s*(?P<view>view)(?=\s*\()"
#: ``| serialize`` with no column: duckdb-kql's grammar wants one. Nine letters, as ``where 1>0``.
_SERIALIZE = r"(?<=\|)(?P<pre>\s*)(?P<serialize>serialize)(?![\w-])(?!\s*[\w\[(])"
_SCAN = re.compile(f"(?P<table>{_TABLE_CALL})|{_VIEW}|{_SERIALIZE}|{_NOT_CODE}")


def _table_ref(match: re.Match[str]) -> str:
    if match.group("view") is not None:  # the keyword blanked, positions kept
        start, end = match.start("view") - match.start(), match.end("view") - match.start()
        text = match.group(0)
        return text[:start] + " " * (end - start) + text[end:]
    if match.group("serialize") is not None:  # a no-op filter of the same length
        return match.group("pre") + "where 1>0"
    if match.group("table") is None:
        return match.group(0)  # a comment or a string literal: left as written
    name = match.group("dq") if match.group("dq") is not None else match.group("sq")
    quoted = f"['{name}']" if "'" not in name else f'["{name}"]'
    # Padded to the call's length, so positions after it on the line do not move.
    return quoted + " " * (len(match.group(0)) - len(quoted))


def rewrite_text(kql: str) -> str:
    """*kql* with the constructs above spelled as duckdb-kql parses them."""
    if "table" not in kql and "view" not in kql and "serialize" not in kql:
        return kql
    return _SCAN.sub(_table_ref, kql)
