"""Kusto's ``parse_command_line``: a Windows command line to a dynamic array of arguments.

https://learn.microsoft.com/kusto/query/parse-command-line-function: the only parser
type is ``"windows"``, which splits the way ``CommandLineToArgvW`` does:

* the first argument (the program) runs to the next space or tab, or, when it starts
  with a quote, to the next quote; backslashes are plain characters in it;
* the others are separated by spaces and tabs outside quotes; ``2n`` backslashes
  before a quote are ``n`` backslashes and the quote opens or closes a quoted part;
  ``2n + 1`` backslashes before a quote are ``n`` backslashes and a literal quote;
  backslashes before anything else are kept; inside a quoted part, a run of quotes
  gives a literal quote for every third (``CommandLineToArgvW``'s ``""`` rule).

A command line longer than `MAX_COMMAND_LINE_CHARS` (Windows' own limit, 32,767
characters) gives null, as does null input.

`LocalEngine` registers the function on its connection as `FUNCTION_NAME`:
``(command line, parser type) -> JSON text``.
"""

from __future__ import annotations

import json

FUNCTION_NAME = "__ctirealm_parse_command_line"
#: Windows' limit on a command line; longer input gives null.
MAX_COMMAND_LINE_CHARS = 32767
PARSER_TYPES = frozenset({"windows"})

_BLANK = " \t"


class CommandLineError(ValueError):
    """A parser type Kusto does not have (the query fails with this message)."""


def split_windows(text: str) -> list[str]:
    """*text* split into arguments as ``CommandLineToArgvW`` splits it."""
    if not text:
        return []
    i, n = 0, len(text)
    if text[0] == '"':
        end = text.find('"', 1)
        end = n if end < 0 else end
        args = [text[1:end]]
        i = end + 1
    else:
        while i < n and text[i] not in _BLANK:
            i += 1
        args = [text[:i]]
    current: list[str] = []
    started = False
    quotes = 0  # odd: inside a quoted part
    backslashes = 0
    while i < n:
        ch = text[i]
        if ch in _BLANK and quotes == 0:
            current.extend("\\" * backslashes)
            backslashes = 0
            if started:
                args.append("".join(current))
                current, started = [], False
            i += 1
            continue
        started = True
        if ch == "\\":
            backslashes += 1
            i += 1
            continue
        if ch == '"':
            current.extend("\\" * (backslashes // 2))
            if backslashes % 2:
                current.append('"')
            else:
                quotes += 1
            backslashes = 0
            i += 1
            # A run of quotes: every third one is a literal quote.
            while i < n and text[i] == '"':
                quotes += 1
                if quotes == 3:
                    current.append('"')
                    quotes = 0
                i += 1
            if quotes == 2:
                quotes = 0
            continue
        current.extend("\\" * backslashes)
        backslashes = 0
        current.append(ch)
        i += 1
    current.extend("\\" * backslashes)
    if started:
        args.append("".join(current))
    return args


def parse_command_line(command_line: str | None, parser: str | None) -> list[str] | None:
    """The arguments of *command_line*, or None (null input, or over the length limit)."""
    if parser is None or parser.strip().lower() not in PARSER_TYPES:
        raise CommandLineError(
            f'parse_command_line: the parser type must be "windows", got {json.dumps(parser)}'
        )
    if command_line is None or len(command_line) > MAX_COMMAND_LINE_CHARS:
        return None
    return split_windows(command_line)


def sql_function(command_line: str | None, parser: str | None) -> str | None:
    """`parse_command_line` as DuckDB calls it: a JSON array as text."""
    value = parse_command_line(command_line, parser)
    return None if value is None else json.dumps(value)
