"""The KQL backend: pySigma's Kusto backend with Sigma's matching semantics kept exactly.

It builds on ``KustoBackend`` (pySigma-backend-kusto) and changes what the stock backend gets
wrong for our purpose:

* fields are KQL expressions chosen by the pipeline (``tostring(ObjectRef.resource)``), emitted
  as they are, never quoted as string literals;
* every comparison is type- and kind-aware, reading what the pipeline recorded for each field:
  numbers against string columns compare as text, text against numeric columns as numbers (or
  through ``tostring``), list fields (JSON arrays) match elements, values inside arrays of
  objects match when any element's does, other JSON fields only ``contains``;
* value lists: plain equalities on a field become one ``in~``, other terms a balanced tree of
  parenthesised groups (a flat chain of hundreds of terms is too deeply nested for KQL parsers);
* a wildcard inside a value becomes an anchored, case-insensitive regex (``(?is)^a.*b$``) —
  not the stock backend's unordered ``contains`` pairs — and ``?`` matches one character;
* ``|cased`` uses the ``_cs`` operators, an empty value means "empty or missing" and ``*``
  alone means "not empty" (Kusto has no null strings);
* constructs KQL cannot express here raise `SigmaFeatureNotSupportedByBackendError` naming the
  construct: keyword (field-less) values, placeholders (``|expand``), timestamp parts,
  regex or exact matching inside JSON, field references other than equality.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from sigma.backends.kusto import KustoBackend
from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.conversion.deferred import DeferredQueryExpression
from sigma.conversion.state import ConversionState
from sigma.exceptions import SigmaFeatureNotSupportedByBackendError
from sigma.types import (
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCompareExpression,
    SigmaFieldReference,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SpecialChars,
)

from .pipelines import STATE_FIELDS

_NUMERIC = ("long", "int", "real", "decimal")
_RE_SPECIAL = set("\\.^$|?*+()[]{}")
_RE2_UNSUPPORTED = re.compile(r"\(\?<?[=!]|\(\?>|\\[1-9]|\(\?P=")
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")

#: Most terms joined flat by one `or`/`and`. KQL parsers nest a chain of terms one level per
#: term and refuse a few hundred (the local engine and Kusto's analyzer both do), so a longer
#: list becomes parenthesised groups of at most this many: nesting grows with log(n).
MAX_FLAT_TERMS = 64


def balanced(terms: list[str], joiner: str, limit: int = MAX_FLAT_TERMS) -> str:
    """*terms* joined by *joiner*, as a tree of parenthesised groups of at most *limit*."""
    if len(terms) <= limit:
        return joiner.join(terms)
    size = -(-len(terms) // limit)
    groups = [terms[i : i + size] for i in range(0, len(terms), size)]
    return joiner.join(
        group[0] if len(group) == 1 else f"({balanced(group, joiner, limit)})" for group in groups
    )


def kql_string(text: str) -> str:
    """A KQL double-quoted string literal for *text*."""
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


#: Texts found verbatim in JSON text: nothing a JSON writer escapes (some escape <>&'+ too).
_PREFILTER_SAFE = re.compile(r"^[A-Za-z0-9 _.:@,;=#%()\[\]{}!?-]+$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _access(key: str) -> str:
    """``.key`` or ``['key']``: a step into a dynamic value."""
    return f".{key}" if _IDENT.match(key) else "['" + key.replace("'", "\\'") + "']"


def _re_escape(text: str) -> str:
    return "".join("\\" + c if c in _RE_SPECIAL else c for c in text)


def _unsupported(message: str) -> SigmaFeatureNotSupportedByBackendError:
    return SigmaFeatureNotSupportedByBackendError(message)


class CtiRealmKustoBackend(KustoBackend):
    """KQL for the ctirealm tables; use with `ctirealm.sigma.pipelines.build_pipeline`."""

    name: ClassVar[str] = "ctirealm Kusto backend"
    identifier: ClassVar[str] = "ctirealm_kusto"
    convert_and_as_in: ClassVar[bool] = False
    # expanded to prefix matches (portable KQL); pySigma's base allows None, the Kusto backend's
    # annotation does not
    cidr_expression: ClassVar[str | None] = None  # type: ignore[assignment]
    cidr_in_list_expression: ClassVar[str | None] = None  # type: ignore[assignment]
    field_equals_field_expression: ClassVar[str | None] = "{field1} =~ {field2}"
    re_flag_prefix: bool = False

    # -- fields ----------------------------------------------------------------------

    def escape_and_quote_field(self, field_name: str) -> str:
        return field_name

    @staticmethod
    def _info(field: str, state: ConversionState) -> dict[str, str]:
        known = state.processing_state.get(STATE_FIELDS, {})
        return known.get(field) or {"field": field, "type": "string", "kind": "scalar"}

    # -- value decomposition -----------------------------------------------------------

    @staticmethod
    def _parts(value: SigmaString) -> list[Any]:
        parts = list(value.s)
        for part in parts:
            if isinstance(part, Placeholder):
                raise _unsupported(
                    f"placeholder %{part.name}% (|expand) has no value here: replace it with the "
                    "values it stands for"
                )
        return parts

    @staticmethod
    def _plain(parts: list[Any]) -> str | None:
        """The text when *parts* holds no wildcard, else None."""
        if any(isinstance(p, SpecialChars) for p in parts):
            return None
        return "".join(parts)

    @staticmethod
    def _shape(parts: list[Any]) -> tuple[str, str | None]:
        """(operator, text): eq, contains, startswith, endswith, any, or regex (text None)."""
        multi = SpecialChars.WILDCARD_MULTI
        if parts == [multi] or (parts and all(p == multi for p in parts)):
            return "any", None
        inner = parts
        lead = bool(parts) and parts[0] == multi
        trail = bool(parts) and parts[-1] == multi
        inner = parts[(1 if lead else 0) : (len(parts) - 1 if trail else len(parts))]
        if any(isinstance(p, SpecialChars) for p in inner):
            return "regex", None
        text = "".join(inner)
        if lead and trail:
            return "contains", text
        if lead:
            return "endswith", text
        if trail:
            return "startswith", text
        return "eq", text

    @staticmethod
    def _regex(parts: list[Any], *, within_element: bool = False) -> str:
        out = []
        for part in parts:
            if part == SpecialChars.WILDCARD_MULTI:
                out.append('[^"]*' if within_element else ".*")
            elif part == SpecialChars.WILDCARD_SINGLE:
                out.append('[^"]' if within_element else ".")
            else:
                out.append(_re_escape(part))
        return "".join(out)

    # -- string matching ---------------------------------------------------------------

    def _match_scalar_text(self, field: str, parts: list[Any], cased: bool) -> str:
        op, text = self._shape(parts)
        cs = "_cs" if cased else ""
        if op == "any":
            return f"isnotempty({field})"
        if text is None:  # op "regex": wildcards inside the text
            flags = "(?s)" if cased else "(?is)"
            return f"{field} matches regex {kql_string(flags + '^' + self._regex(parts) + '$')}"
        if op == "eq":
            if text == "":
                return f"isempty({field})"
            return f"{field} {'==' if cased else '=~'} {kql_string(text)}"
        # contains, startswith, endswith
        if text == "":
            return f"isnotempty({field})"  # every non-empty value contains, starts, ends with ""
        return f"{field} {op}{cs} {kql_string(text)}"

    def _match_list(self, field: str, info: dict[str, str], parts: list[Any], cased: bool) -> str:
        op, text = self._shape(parts)
        cs = "_cs" if cased else ""
        if op == "any":
            return f"{field} contains {kql_string(chr(34))}"
        if op == "regex":
            flags = "(?s)" if cased else "(?is)"
            pattern = '"' + self._regex(parts, within_element=True) + '"'
            return f"{field} matches regex {kql_string(flags + pattern)}"
        escaped = json.dumps(text, ensure_ascii=False)[1:-1]
        needle = {
            "eq": f'"{escaped}"',
            "contains": escaped,
            "startswith": f'"{escaped}',
            "endswith": f'{escaped}"',
        }[op]
        return f"{field} contains{cs} {kql_string(needle)}"

    def _match_json(self, field: str, info: dict[str, str], parts: list[Any], cased: bool) -> str:
        op, text = self._shape(parts)
        if op == "any":
            return f"isnotempty({field})"
        if op == "contains" and text:  # matched against the compact JSON text, as written
            return f"{field} contains{'_cs' if cased else ''} {kql_string(text)}"
        if "array" in info.get("how", ""):
            advice = "only |contains matching is possible (on its JSON text)"
        else:
            advice = (
                f"only |contains matching is possible; name a path to a single value "
                f"inside it (e.g. {info['field']}.<key>) or use |contains"
            )
        raise _unsupported(
            f"field {info['field']!r} is a JSON (dynamic) value ({info.get('how', 'dynamic')}), so {advice}"
        )

    def _match_elements(self, info: dict[str, Any], parts: list[Any], cased: bool) -> str:
        """Any element of a JSON array matches: the rows whose expanded elements match, by key.

        A scalar test, so it composes with and/or/not. The subquery first keeps the rows whose
        JSON text holds the literal texts (a cheap prefilter the exact test implies).
        """
        head, *nested = info["array"].split(".")
        steps = [f"mv-expand __e1 = {info.get('source', head)}"]
        for depth, key in enumerate(nested, start=2):
            steps.append(f"mv-expand __e{depth} = __e{depth - 1}{_access(key)}")
        element = f"__e{len(nested) + 1}"

        def value_of(path: str) -> str:
            return f"tostring({element}{''.join(_access(k) for k in path.split('.'))})"

        target = value_of(info["value"])
        if info.get("unquote"):
            target = f"trim('\"', {target})"
        tests = [f"{value_of(k)} =~ {kql_string(v)}" for k, v in info.get("where", {}).items()]
        tests.append(self._match_scalar_text(target, parts, cased))
        op, text = self._shape(parts)
        needles = list(info.get("where", {}).values())
        if op in ("eq", "contains", "startswith", "endswith") and text:
            needles.append(text)
        text_of = info.get("text", f"tostring({head})")
        prefilter = [
            f"{text_of} contains{'_cs' if cased else ''} {kql_string(n)}"
            for n in needles
            if _PREFILTER_SAFE.match(n)
        ]
        query = " | ".join(
            [
                info["table"],
                *([f"where {' and '.join(prefilter)}"] if prefilter else []),
                *steps,
                f"where {' and '.join(tests)}",
                f"project {info['row_key']}",
            ]
        )
        return f"{info['row_key']} in (({query}))"

    def _match_string(self, field: str, value: SigmaString, cased: bool, state: ConversionState) -> str:
        info = self._info(field, state)
        parts = self._parts(value)
        kind = info.get("kind", "scalar")
        if kind == "list":
            return self._match_list(field, info, parts, cased)
        if kind == "json":
            return self._match_json(field, info, parts, cased)
        if kind == "elements":
            return self._match_elements(info, parts, cased)
        kusto_type = info.get("type", "string")
        plain = self._plain(parts)
        if kusto_type in _NUMERIC:
            if plain is not None and _NUMBER.match(plain.strip()):
                return f"{field} == {plain.strip()}"
            return self._match_scalar_text(f"tostring({field})", parts, cased)
        if kusto_type == "bool":
            if plain is not None and plain.strip().lower() in ("true", "false"):
                return f"{field} == {plain.strip().lower()}"
            return self._match_scalar_text(f"tostring({field})", parts, cased)
        if kusto_type not in ("string", "guid"):
            return self._match_scalar_text(f"tostring({field})", parts, cased)
        return self._match_scalar_text(field, parts, cased)

    def convert_condition_field_eq_val_str(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        assert isinstance(cond.value, SigmaString), "pySigma dispatches here on the value type"
        return self._match_string(cond.field, cond.value, False, state)

    def convert_condition_field_eq_val_str_case_sensitive(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        assert isinstance(cond.value, SigmaCasedString), "pySigma dispatches here on the value type"
        return self._match_string(cond.field, cond.value, True, state)

    # -- other value types -------------------------------------------------------------

    @staticmethod
    def _not_elements(info: dict[str, Any], what: str) -> None:
        if info.get("kind") == "elements":
            raise _unsupported(
                f"{what} on field {info['field']!r} is not supported: it is a value inside the "
                f"elements of the array {info['array']}, which an element may lack"
            )

    def _scalar_only(self, info: dict[str, str], what: str) -> None:
        if info.get("kind", "scalar") != "scalar":
            held = {"list": "a list", "elements": "values inside array elements"}
            raise _unsupported(
                f"{what} on field {info['field']!r} is not supported: it holds "
                f"{held.get(info.get('kind', ''), 'JSON')}, not a single value"
            )

    def convert_condition_field_eq_val_num(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        info = self._info(cond.field, state)
        if info.get("kind") == "list":
            return self._match_list(cond.field, info, [str(cond.value)], False)
        if info.get("kind") == "elements":
            return self._match_elements(info, [str(cond.value)], False)
        self._scalar_only(info, "a number match")
        if info.get("type") in _NUMERIC:
            return f"{cond.field} == {cond.value}"
        if info.get("type") == "bool":
            return f"tostring({cond.field}) == {kql_string(str(cond.value))}"
        return f"{cond.field} =~ {kql_string(str(cond.value))}"

    def convert_condition_field_eq_val_bool(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        info = self._info(cond.field, state)
        self._scalar_only(info, "a boolean match")
        assert isinstance(cond.value, SigmaBool), "pySigma dispatches here on the value type"
        text = "true" if cond.value.boolean else "false"
        if info.get("type") == "bool":
            return f"{cond.field} == {text}"
        return f"tostring({cond.field}) =~ {kql_string(text)}"

    def convert_condition_field_eq_val_re(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        info = self._info(cond.field, state)
        self._scalar_only(info, "a regular expression (|re)")
        value = cond.value
        assert isinstance(value, SigmaRegularExpression), "pySigma dispatches here on the value type"
        flags = "".join(
            sorted(
                {
                    SigmaRegularExpressionFlag.IGNORECASE: "i",
                    SigmaRegularExpressionFlag.MULTILINE: "m",
                    SigmaRegularExpressionFlag.DOTALL: "s",
                }[f]
                for f in value.flags
            )
        )
        prefix = f"(?{flags})" if flags else ""
        if value.regexp.contains_placeholder():
            raise _unsupported("placeholders (|expand) inside a regular expression are not supported")
        pattern = str(value.regexp)
        unsupported = _RE2_UNSUPPORTED.search(pattern)
        if unsupported:
            raise _unsupported(
                f"regular expression construct {unsupported.group(0)!r} (lookaround, "
                "backreference or atomic group) is not supported: KQL uses RE2"
            )
        field = cond.field if info.get("type") in ("string", "guid") else f"tostring({cond.field})"
        return f"{field} matches regex {kql_string(prefix + pattern)}"

    def convert_condition_field_eq_val_null(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        info = self._info(cond.field, state)
        self._not_elements(info, "null or |exists")
        if info.get("kind") == "scalar" and info.get("type") not in ("string", "guid"):
            return f"isnull({cond.field})"
        return f"isempty({cond.field})"

    explicit_not_exists_expression: ClassVar[bool] = True

    def convert_condition_field_exists(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        info = self._info(cond.field, state)
        self._not_elements(info, "null or |exists")
        if info.get("kind") == "scalar" and info.get("type") not in ("string", "guid"):
            return f"isnotnull({cond.field})"
        return f"isnotempty({cond.field})"

    def convert_condition_field_not_exists(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        return self.convert_condition_field_eq_val_null(cond, state)

    def convert_condition_field_compare_op_val(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        info = self._info(cond.field, state)
        self._scalar_only(info, "a numeric comparison (|lt, |gt, ...)")
        value = cond.value
        assert isinstance(value, SigmaCompareExpression), "pySigma dispatches here on the value type"
        operator = self.compare_operators[value.op]
        field = cond.field if info.get("type") in _NUMERIC else f"todouble({cond.field})"
        return f"{field} {operator} {value.number}"

    def convert_condition_field_eq_field(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        value = cond.value
        assert isinstance(value, SigmaFieldReference), "pySigma dispatches here on the value type"
        for name in (cond.field, value.field):
            self._scalar_only(self._info(name, state), "a field reference (|fieldref)")
        if value.starts_with or value.ends_with:
            raise _unsupported(
                "|fieldref combined with |startswith, |endswith or |contains is not supported; "
                "only field equality is"
            )
        return f"{cond.field} =~ {value.field}"

    def convert_condition_field_eq_val_timestamp_part(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        raise _unsupported("timestamp-part modifiers (|minute, |hour, |day, ...) are not supported")

    # -- value lists -------------------------------------------------------------------

    def _in_value(self, arg: Any, state: ConversionState) -> tuple[tuple[str, bool], str] | None:
        """((field, cased), text) when *arg* is a plain equality an `in~`/`in` list can hold."""
        if not isinstance(arg, ConditionFieldEqualsValueExpression):
            return None
        value = arg.value
        if type(value) is not SigmaString and type(value) is not SigmaCasedString:
            return None
        if value.contains_special():
            return None
        if value.contains_placeholder():
            return None
        info = self._info(arg.field, state)
        if info.get("kind", "scalar") != "scalar" or info.get("type") not in ("string", "guid"):
            return None
        text = self._plain(list(value.s))
        return None if text in ("", None) else ((arg.field, type(value) is SigmaCasedString), text)

    def decide_convert_condition_as_in_expression(
        self, cond: ConditionOR | ConditionAND, state: ConversionState
    ) -> bool:
        # Value lists go through `convert_condition_or`, which also splits mixed lists.
        return False

    def _terms(self, cond: ConditionOR | ConditionAND, args: list[Any], state: ConversionState) -> list[str]:
        out = []
        for arg in args:
            converted = (
                self.convert_condition(arg, state)
                if self.compare_precedence(cond, arg)
                else self.convert_condition_group(arg, state)
            )
            if converted is not None and not isinstance(converted, DeferredQueryExpression):
                out.append(converted)
        return out

    def convert_condition_or(self, cond: ConditionOR, state: ConversionState) -> Any:
        # Plain equalities on one field become one `field in~ (...)` (as Sigma, case-insensitive;
        # `in` when |cased), whatever else the list holds; the other terms are joined as a
        # balanced tree.
        lists: dict[tuple[str, bool], list[str]] = {}
        slots: list[Any] = []  # in order: a (field, cased) key of an `in~` list, or a condition
        for arg in cond.args:
            found = self._in_value(arg, state)
            if found is None:
                slots.append(arg)
            elif found[0] in lists:
                lists[found[0]].append(found[1])
            else:
                lists[found[0]] = [found[1]]
                slots.append(found[0])
        terms = []
        for slot in slots:
            if not isinstance(slot, tuple):
                terms += self._terms(cond, [slot], state)
                continue
            (field, cased), values = slot, lists[slot]
            if len(values) == 1:
                terms.append(f"{field} {'==' if cased else '=~'} {kql_string(values[0])}")
            else:
                listed = ", ".join(kql_string(v) for v in values)
                terms.append(f"{field} {'in' if cased else 'in~'} ({listed})")
        if not terms:
            return self.empty_or_expression
        return balanced(terms, " or ")

    def convert_condition_and(self, cond: ConditionAND, state: ConversionState) -> Any:
        terms = self._terms(cond, list(cond.args), state)
        return balanced(terms, " and ") if terms else self.empty_and_expression

    # -- keywords ------------------------------------------------------------------------

    def _keyword(self, cond: ConditionValueExpression) -> SigmaFeatureNotSupportedByBackendError:
        return _unsupported(
            f"keyword (field-less) value {str(cond.value)!r} is not supported: KQL matches "
            "columns, so name the column the keyword should be found in"
        )

    def convert_condition_val_str(self, cond: ConditionValueExpression, state: ConversionState) -> str:
        raise self._keyword(cond)

    def convert_condition_val_num(self, cond: ConditionValueExpression, state: ConversionState) -> str:
        raise self._keyword(cond)

    def convert_condition_val_re(self, cond: ConditionValueExpression, state: ConversionState) -> str:
        raise self._keyword(cond)

    # -- output ----------------------------------------------------------------------------

    def finalize_query_default(self, rule: Any, query: str, index: int, state: ConversionState) -> str:
        return query
