"""Kusto's ``parse_user_agent``: a user-agent string to a dynamic bag, through uap-core.

https://learn.microsoft.com/kusto/query/parse-user-agent-function: the second argument
names what to look for, ``"browser"``, ``"os"`` or ``"device"``, or a dynamic array of
them; the result has one bag per target asked for, in Kusto's key names:

* ``Browser``: ``Family``, ``MajorVersion``, ``MinorVersion``, ``Patch``;
* ``OperatingSystem``: ``Family``, ``MajorVersion``, ``MinorVersion``, ``Patch``,
  ``PatchMinor``;
* ``Device``: ``Family``, ``Brand``, ``Model``.

The parsing is the ``ua-parser`` package's (the uap-core regular expressions, the
same project Kusto's implementation follows); a part the string does not give is
``""``, and an unrecognised browser, system or device is the family ``"Other"``, as
uap-core names it. A user agent longer than `MAX_USER_AGENT_CHARS` gives null: the
regular expressions' cost grows with the length, and no browser sends one that long.

`LocalEngine` registers the function on its connection as `FUNCTION_NAME`:
``(user agent, targets as JSON text) -> JSON text``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

FUNCTION_NAME = "__ctirealm_parse_user_agent"
#: Longer user agents give null (bounds the regular expressions' work per row).
MAX_USER_AGENT_CHARS = 4096
#: Kusto's target names -> the result's key.
TARGETS = {"browser": "Browser", "os": "OperatingSystem", "device": "Device"}


class UserAgentError(ValueError):
    """A target list the function cannot take (the query fails with this message)."""


def targets(look_for: Any) -> list[str]:
    """The targets of *look_for*: one name or a list of names, each checked."""
    names = look_for if isinstance(look_for, list) else [look_for]
    out: list[str] = []
    for name in names:
        key = name.strip().lower() if isinstance(name, str) else None
        if key not in TARGETS:
            raise UserAgentError(
                f'parse_user_agent: look-for must be "browser", "os" or "device" '
                f"(or a dynamic array of them), got {json.dumps(name)}"
            )
        if key not in out:
            out.append(key)
    return out


def _text(value: str | None) -> str:
    return value or ""


@functools.lru_cache(maxsize=4096)
def _parse(user_agent: str) -> tuple[Any, Any, Any]:
    from ua_parser import parse

    result = parse(user_agent)
    return result.user_agent, result.os, result.device


def parse_user_agent(user_agent: str | None, look_for: Any) -> dict[str, Any] | None:
    """The bag Kusto returns for *user_agent* and the targets *look_for* names."""
    wanted = targets(look_for)
    if user_agent is None or len(user_agent) > MAX_USER_AGENT_CHARS:
        return None
    browser, system, device = _parse(user_agent)
    out: dict[str, Any] = {}
    for target in wanted:
        if target == "browser":
            out["Browser"] = {
                "Family": browser.family if browser else "Other",
                "MajorVersion": _text(browser and browser.major),
                "MinorVersion": _text(browser and browser.minor),
                "Patch": _text(browser and browser.patch),
            }
        elif target == "os":
            out["OperatingSystem"] = {
                "Family": system.family if system else "Other",
                "MajorVersion": _text(system and system.major),
                "MinorVersion": _text(system and system.minor),
                "Patch": _text(system and system.patch),
                "PatchMinor": _text(system and system.patch_minor),
            }
        else:
            out["Device"] = {
                "Family": device.family if device else "Other",
                "Brand": _text(device and device.brand),
                "Model": _text(device and device.model),
            }
    return out


def sql_function(check: Callable[[], None]) -> Callable[[str | None, str | None], str | None]:
    """`parse_user_agent` as DuckDB calls it, bound to an engine's stop flag.

    *look_for* arrives as text: a JSON array (``dynamic([...])``) or one name.
    """

    def function(user_agent: str | None, look_for: str | None) -> str | None:
        check()
        if look_for is None:
            return None
        try:
            wanted: Any = json.loads(look_for)
        except ValueError:
            wanted = look_for
        value = parse_user_agent(user_agent, wanted)
        return None if value is None else json.dumps(value)

    return function
