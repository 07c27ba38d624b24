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
* a column named ``table`` written bare (``mv-apply table = ...``, ``by table``,
  ``on table``): a keyword of duckdb-kql's grammar, where Kusto reads a name (the only
  ``table`` syntax is the call ``table(...)``). It is quoted as ``['table']``, the one
  rewrite that lengthens a line (columns after it on that line move four to the right).
* a ``render`` property set by an expression (``title=strcat(name, " chart")``), which
  Kusto takes and duckdb-kql's grammar does not (it wants a string literal): the call
  becomes a string literal of the same length. ``render`` only tells a client how to
  draw the rows; the engine returns the rows either way.
"""

from __future__ import annotations

import re

#: What is not code: comments and every form of string literal.
_NOT_CODE = r"//[^\n]*|@'(?:[^']|'')*'|@\"(?:[^\"]|\"\")*\"|'(?:\\.|[^'\\\n])*'|\"(?:\\.|[^\"\\\n])*\""
_TABLE_CALL = r"(?<![\w.$])table\s*\(\s*(?:\"(?P<dq>[^\"\\\n]*)\"|'(?P<sq>[^'\\\n]*)')\s*\)"
_VIEW = r"(?<![\w.$])let\s+(?:\w+|\[\s*(?:'[^'\n]*'|\"[^\"\n]*\")\s*\])\s*=\s*(?P<view>view)(?=\s*\()"
#: ``| serialize`` with no column: duckdb-kql's grammar wants one. Nine letters, as ``where 1>0``.
_SERIALIZE = r"(?<=\|)(?P<pre>\s*)(?P<serialize>serialize)(?![\w-])(?!\s*[\w\[(])"
#: ``table`` as a bare name: not a call, not part of a longer name, ``$table`` or ``.table``.
_BARE_TABLE = r"(?<![\w.$-])(?P<bare>table)(?![\w-])(?!\s*\()"
_SCAN = re.compile(f"(?P<table>{_TABLE_CALL})|{_VIEW}|{_SERIALIZE}|{_BARE_TABLE}|{_NOT_CODE}")


def _table_ref(match: re.Match[str]) -> str:
    if match.group("view") is not None:  # the keyword blanked, positions kept
        start, end = match.start("view") - match.start(), match.end("view") - match.start()
        text = match.group(0)
        return text[:start] + " " * (end - start) + text[end:]
    if match.group("serialize") is not None:  # a no-op filter of the same length
        return match.group("pre") + "where 1>0"
    if match.group("bare") is not None:
        return "['table']"
    if match.group("table") is None:
        return match.group(0)  # a comment or a string literal: left as written
    name = match.group("dq") if match.group("dq") is not None else match.group("sq")
    quoted = f"['{name}']" if "'" not in name else f'["{name}"]'
    # Padded to the call's length, so positions after it on the line do not move.
    return quoted + " " * (len(match.group(0)) - len(quoted))


_CODE_OR_RENDER = re.compile(f"{_NOT_CODE}|(?P<render>\\|\\s*render(?![\\w-]))")
#: ``name = f(`` inside a ``render`` clause: a property set by a call.
_RENDER_CALL = re.compile(r"(?<=\w)\s*=\s*(?=[A-Za-z_]\w*\s*\()")


def _call_end(text: str, start: int) -> int | None:
    """The index after the call starting at *start* (``f(...)``), or None if it does not
    close on its line."""
    depth, i = 0, start
    while i < len(text):
        ch = text[i]
        if ch == "\n":
            return None
        if ch in "'\"":
            end = text.find(ch, i + 1)
            if end < 0:
                return None
            i = end
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _render_properties(kql: str) -> str:
    out, last = [], 0
    matches = list(_CODE_OR_RENDER.finditer(kql))
    not_code = [(m.start(), m.end()) for m in matches if m.group("render") is None]
    for match in matches:
        if match.group("render") is None or match.start() < last:
            continue
        end = len(kql)
        for stop in ("|", ";"):  # the clause ends at the next operator or statement
            found = kql.find(stop, match.end())
            if found >= 0:
                end = min(end, found)
        pos = match.end()
        while (call := _RENDER_CALL.search(kql, pos, end)) is not None:
            if any(a <= call.start() < b for a, b in not_code):
                pos = call.end()
                continue
            close = _call_end(kql, call.end())
            if close is None:
                break
            out.append(kql[last : call.end()])
            out.append('"' + " " * (close - call.end() - 2) + '"')
            last = pos = close
    return "".join(out) + kql[last:] if out else kql


def rewrite_text(kql: str) -> str:
    """*kql* with the constructs above spelled as duckdb-kql parses them."""
    if "render" in kql:
        kql = _render_properties(kql)
    if "table" not in kql and "view" not in kql and "serialize" not in kql:
        return kql
    return _SCAN.sub(_table_ref, kql)
