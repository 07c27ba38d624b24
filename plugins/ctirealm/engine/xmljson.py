"""Kusto's ``parse_xml``: XML text to a dynamic value, as its documentation converts it.

https://learn.microsoft.com/kusto/query/parse-xml-function gives the rules, followed
here: ``<e/>`` is ``{"e": null}``, ``<e>text</e>`` is ``{"e": "text"}``, attributes are
``"@name"`` keys, text beside attributes or elements is ``"#text"``, repeated elements
become an array, and only elements, attributes and text are kept (comments, processing
instructions and the declaration are skipped). Names are kept as written (``ns:tag``,
``xmlns`` an attribute like any other). Invalid XML, or more than 1 MB of it (Kusto's
documented maximum), gives null. Text stays text: the documented example prints
``"value": 118.0`` without quotes, but its conversion table keeps element text as a
string, and so does this.

The parser is expat without namespace processing. Documents declaring entities are
refused (null), so no entity expansion (the "billion laughs") and no external entity
ever happen; nothing is read but the string itself. Nesting deeper than `MAX_DEPTH`
gives null too.

`LocalEngine` registers `parse_xml` on its connection as `FUNCTION_NAME`.
"""

from __future__ import annotations

import json
from typing import Any
from xml.parsers import expat

FUNCTION_NAME = "__ctirealm_parse_xml"
#: Kusto's documented limit: longer input gives null.
MAX_XML_BYTES = 1_048_576
#: Deepest element nesting converted (deeper documents give null).
MAX_DEPTH = 256


class _Refused(Exception):
    pass


class _Element:
    __slots__ = ("attributes", "children", "text")

    def __init__(self, attributes: dict[str, str]) -> None:
        self.attributes = attributes
        self.children: list[tuple[str, Any]] = []
        self.text: list[str] = []


def _value(element: _Element) -> Any:
    text = "".join(element.text).strip()
    if not element.attributes and not element.children:
        return text or None
    out: dict[str, Any] = {f"@{k}": v for k, v in element.attributes.items()}
    if text:
        out["#text"] = text
    for name, value in element.children:
        if name in out:
            existing = out[name]
            if isinstance(existing, _Repeated):
                existing.append(value)
            else:
                out[name] = _Repeated([existing, value])
        else:
            out[name] = value
    return {k: list(v) if isinstance(v, _Repeated) else v for k, v in out.items()}


class _Repeated(list[Any]):
    """Values of an element name seen more than once (a list the document did not write)."""


def parse_xml(text: str | None) -> Any:
    """The dynamic value of *text*, or None (invalid, too long, entities, too deep)."""
    if text is None or len(text.encode("utf-8", "surrogatepass")) > MAX_XML_BYTES:
        return None
    parser = expat.ParserCreate()
    stack: list[_Element] = []
    root: list[tuple[str, Any]] = []

    def start(name: str, attributes: dict[str, str]) -> None:
        if len(stack) >= MAX_DEPTH:
            raise _Refused
        stack.append(_Element(dict(attributes)))

    def end(name: str) -> None:
        element = stack.pop()
        target = stack[-1].children if stack else root
        target.append((name, _value(element)))

    def characters(data: str) -> None:
        if stack:
            stack[-1].text.append(data)

    def refuse(*_: Any) -> None:
        raise _Refused

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse  # type: ignore[assignment]
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    try:
        parser.Parse(text, True)
    except (expat.ExpatError, _Refused, ValueError):
        return None
    if len(root) != 1:
        return None
    name, value = root[0]
    return {name: value}


def sql_function(text: str | None) -> str | None:
    """`parse_xml` as DuckDB calls it: JSON text out, SQL NULL for an invalid document."""
    value = parse_xml(text)
    return None if value is None else json.dumps(value)
