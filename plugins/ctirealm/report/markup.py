"""Safe HTML for the reports: `tag` builds elements and escapes every text and attribute value
it is given (agent output is always shown as text), and `_page` wraps a body in the shell
under ``templates/`` with a Content-Security-Policy holding the hashes of its own inline
style and script, so nothing else runs.
"""

from __future__ import annotations

import base64
import hashlib
import html as _html
from collections.abc import Iterable
from functools import cache
from importlib import resources
from string import Template
from typing import Any

_VOID = frozenset({"br", "hr", "img", "meta", "wbr"})


class Markup(str):
    """Text that is already HTML: `tag` and `esc` insert it as is."""


def esc(value: object) -> Markup:
    """Escape for HTML text and attribute values (Markup passes through)."""
    if isinstance(value, Markup):
        return value
    return Markup(_html.escape("" if value is None else str(value), quote=True))


def _flatten(children: Iterable[Any]) -> Iterable[Any]:
    for child in children:
        if isinstance(child, (list, tuple)):
            yield from _flatten(child)
        elif child is not None and child is not False:
            yield child


def tag(name: str, *children: Any, **attrs: Any) -> Markup:
    """``tag("td", text, class_="num")``: children and attribute values are escaped."""
    parts = [name]
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        attr = key.rstrip("_").replace("_", "-")
        parts.append(attr if value is True else f'{attr}="{esc(value)}"')
    opening = "<" + " ".join(parts) + ">"
    if name in _VOID:
        return Markup(opening)
    return Markup(opening + "".join(esc(c) for c in _flatten(children)) + f"</{name}>")


# -- templates -----------------------------------------------------------------------------


@cache
def _template(name: str) -> str:
    return resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def _page(*, title: str, heading: str, subheading: Markup, body: Markup, footer: Markup) -> str:
    style, script = _template("report.css"), _template("report.js")
    csp = (
        f"default-src 'none'; style-src '{_sha256(style)}'; script-src '{_sha256(script)}'; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    from .. import __version__

    return Template(_template("page.html")).substitute(
        csp=esc(csp),
        version=esc(__version__),
        title=esc(title),
        heading=esc(heading),
        subheading=subheading,
        body=body,
        footer=footer,
        style=style,
        script=script,
    )


# -- small pieces --------------------------------------------------------------------------
