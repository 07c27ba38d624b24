"""The KQL backend: pySigma's Kusto backend with Sigma's matching semantics kept exactly.

It builds on ``KustoBackend`` (pySigma-backend-kusto) and changes what the stock backend gets
wrong for our purpose:

* fields are KQL expressions chosen by the pipeline (``tostring(ObjectRef.resource)``), emitted
  as they are, never quoted as string literals;
* every comparison is type- and kind-aware, reading what the pipeline recorded for each field:
  numbers against string columns compare as text, text against numeric columns as numbers (or
  through ``tostring``), list fields (JSON arrays) match elements, JSON fields only ``contains``;
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
from sigma.conversion.state import ConversionState
from sigma.exceptions import SigmaFeatureNotSupportedByBackendError
from sigma.types import (
    Placeholder,
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


def _re_escape(text: str) -> str:
    return "".join("\\" + c if c in _RE_SPECIAL else c for c in text)


def _unsupported(message: str) -> SigmaFeatureNotSupportedByBackendError:
    return SigmaFeatureNotSupportedByBackendError(message)


class CtiRealmKustoBackend(KustoBackend):
    """KQL for the ctirealm tables; use with `ctirealm.sigma.pipelines.build_pipeline`."""

    name: ClassVar[str] = "ctirealm Kusto backend"
    identifier: ClassVar[str] = "ctirealm_kusto"
    convert_and_as_in: ClassVar[bool] = False
    cidr_expression: ClassVar[str | None] = None  # expanded to prefix matches: portable KQL
    cidr_in_list_expression: ClassVar[str | None] = None
    field_equals_field_expression: ClassVar[str | None] = "{field1} =~ {field2}"
    re_flag_prefix: ClassVar[bool] = False

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
        inner = parts[(1 if lead else 0): (len(parts) - 1 if trail else len(parts))]
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
        if op == "eq":
            if text == "":
                return f"isempty({field})"
            return f"{field} {'==' if cased else '=~'} {kql_string(text)}"
        if op in ("contains", "startswith", "endswith"):
            if text == "":
                return f"isnotempty({field})" if op == "contains" else f"isnotempty({field})"
            return f"{field} {op}{cs} {kql_string(text)}"
        flags = "(?s)" if cased else "(?is)"
        return f"{field} matches regex {kql_string(flags + '^' + self._regex(parts) + '$')}"

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
        needle = {"eq": f'"{escaped}"', "contains": escaped, "startswith": f'"{escaped}',
                  "endswith": f'{escaped}"'}[op]
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
            advice = (f"only |contains matching is possible; name a path to a single value "
                      f"inside it (e.g. {info['field']}.<key>) or use |contains")
        raise _unsupported(
            f"field {info['field']!r} is a JSON (dynamic) value ({info.get('how', 'dynamic')}), "
            f"so {advice}"
        )

    def _match_string(
        self, field: str, value: SigmaString, cased: bool, state: ConversionState
    ) -> str:
        info = self._info(field, state)
        parts = self._parts(value)
        kind = info.get("kind", "scalar")
        if kind == "list":
            return self._match_list(field, info, parts, cased)
        if kind == "json":
            return self._match_json(field, info, parts, cased)
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
        return self._match_string(cond.field, cond.value, False, state)

    def convert_condition_field_eq_val_str_case_sensitive(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        return self._match_string(cond.field, cond.value, True, state)

    # -- other value types -------------------------------------------------------------

    def _scalar_only(self, info: dict[str, str], what: str) -> None:
        if info.get("kind", "scalar") != "scalar":
            raise _unsupported(
                f"{what} on field {info['field']!r} is not supported: it holds "
                f"{'a list' if info.get('kind') == 'list' else 'JSON'}, not a single value"
            )

    def convert_condition_field_eq_val_num(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        info = self._info(cond.field, state)
        if info.get("kind") == "list":
            return self._match_list(cond.field, info, [str(cond.value)], False)
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
        text = "true" if cond.value.boolean else "false"
        if info.get("type") == "bool":
            return f"{cond.field} == {text}"
        return f"tostring({cond.field}) =~ {kql_string(text)}"

    def convert_condition_field_eq_val_re(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        info = self._info(cond.field, state)
        self._scalar_only(info, "a regular expression (|re)")
        value: SigmaRegularExpression = cond.value
        flags = "".join(sorted(
            {SigmaRegularExpressionFlag.IGNORECASE: "i", SigmaRegularExpressionFlag.MULTILINE: "m",
             SigmaRegularExpressionFlag.DOTALL: "s"}[f] for f in value.flags))
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
        if info.get("kind") == "scalar" and info.get("type") not in ("string", "guid"):
            return f"isnull({cond.field})"
        return f"isempty({cond.field})"

    explicit_not_exists_expression: ClassVar[bool] = True

    def convert_condition_field_exists(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        info = self._info(cond.field, state)
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
        value: SigmaCompareExpression = cond.value
        operator = self.compare_operators[value.op]
        field = cond.field if info.get("type") in _NUMERIC else f"todouble({cond.field})"
        return f"{field} {operator} {value.number}"

    def convert_condition_field_eq_field(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        value: SigmaFieldReference = cond.value
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

    def decide_convert_condition_as_in_expression(
        self, cond: ConditionOR | ConditionAND, state: ConversionState
    ) -> bool:
        if not isinstance(cond, ConditionOR) or not super().decide_convert_condition_as_in_expression(
            cond, state
        ):
            return False
        info = self._info(cond.args[0].field, state)
        if info.get("kind", "scalar") != "scalar" or info.get("type") not in ("string", "guid"):
            return False
        for arg in cond.args:
            value = arg.value
            if type(value) is not SigmaString or value.contains_special():
                return False
            if value.contains_placeholder() or self._plain(list(value.s)) in ("", None):
                return False
        return True

    def convert_condition_as_in_expression(
        self, cond: ConditionOR | ConditionAND, state: ConversionState
    ) -> str:
        field = cond.args[0].field
        values = ", ".join(kql_string(self._plain(list(arg.value.s)) or "") for arg in cond.args)
        return f"{field} in~ ({values})"

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

    def finalize_query_default(
        self, rule: Any, query: str, index: int, state: ConversionState
    ) -> str:
        return query

