"""Parse-tree and IR rewrites: operators that need the input's columns, and lowering gaps.

The riskiest rewrites: they replace functions of duckdb-kql's lowering
(parse tree -> IR) and emission, each wrapping the original and deferring to
it for everything it does not handle. Two kinds:

* **Lowering** (``lower._lower_*``): ``project-reorder``, ``project-keep``,
  wildcard ``project-away``, ``* has "x"`` and ``search`` become placeholders;
  ``mv-apply`` (row-wise subqueries) and ``make-series`` become operators
  duckdb-kql has; ``evaluate bag_unpack`` a placeholder; a parenthesized
  pipeline at the head is flattened; unnamed ``mv-expand f(col)`` / ``A.B``
  are named; ``.[n]`` path steps, ``parse`` with a leading column or quoted
  names, tabular ``let`` functions (expanded as stored functions, at most
  `MAX_FUNCTION_EXPANSIONS` times) and the `text` spellings are accepted;
  ``serialize`` becomes an ``extend`` (or nothing), ``(a, b) = f(x)`` keeps all
  its names, ``typeof(T)`` arguments are carried, and the rewrites' internal
  functions cannot be named by a query.
* **IR passes** (from the one ``translate.to_sql`` wrapper, before emission):
  deprecated function names become their replacements, a computed ``arg_max``
  expression is extended first, functions returning several columns
  (``series_fit_line``, ...) are expanded into them, ``prev``/``next``/
  ``row_number``/``row_cumsum`` become window functions over the last sort's
  keys, names differing only in case are carried apart and restored on the
  result, and placeholders are resolved with the schema (``column_ifexists``
  too). ``database(...)`` is refused.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from duckdb_kql import ir
from duckdb_kql import lower as _lower
from duckdb_kql import parser as _parser
from duckdb_kql import schema as _schema
from duckdb_kql import translate as _translate
from duckdb_kql.errors import KqlError, KqlSchemaError, KqlUnsupportedError

from .functions import (
    CONVERSIONS,
    COUNT_OF,
    JOINABLE_STAR_OPS,
    MULTI_NAMES,
    NESTED_AGGREGATE,
    NESTED_RANK,
    ROW_TEXT,
    SERIES_AXIS,
    SERIES_BAG,
    SERIES_INDEX,
    SERIES_LENGTH,
    SERIES_VALUES,
    SUM_TIMESPAN,
    SUMIF_TIMESPAN,
    TIMESPAN_DIV,
    TYPE_LITERAL,
    UNDECLARED_FAILS,
    WINDOW,
)
from .names import DEPRECATED_ALIASES
from .text import rewrite_text


@dataclasses.dataclass(frozen=True)
class _ColumnPlaceholder(ir.Operator):
    """An operator whose output depends on its input's columns; resolved before emission."""

    operator: str
    #: (pattern, is_wildcard, order) with order one of "", asc, desc, granny-asc, granny-desc.
    items: tuple[tuple[str, bool, str], ...]

    def resolve(self, columns: list[str]) -> list[ir.Operator]:
        matched: list[str] = []
        for pattern, wildcard, order in self.items:
            if wildcard:
                regex = re.compile(".*".join(re.escape(p) for p in pattern.split("*")))
                found = [c for c in columns if regex.fullmatch(c) and c not in matched]
                found = _ordered(found, order)
            else:
                if pattern not in columns:
                    raise KqlSchemaError(
                        pattern,
                        hint=f"{self.operator}: no column {pattern!r} in its input; "
                        f"columns are {', '.join(columns)}",
                    )
                found = [pattern] if pattern not in matched else []
            matched.extend(found)
        if self.operator == "project-away":
            return [ir.ProjectAway(tuple(matched))] if matched else []
        if self.operator == "project-keep":
            keep = [c for c in columns if c in matched]
        else:  # project-reorder
            keep = matched + [c for c in columns if c not in matched]
        return [ir.Project(tuple(ir.NamedExpr(ir.ColumnRef(c)) for c in keep))]


@dataclasses.dataclass(frozen=True)
class _StarMatch(ir.Expr):
    """``* has "x"`` (any string operator): true when any input column matches.

    Resolved with the operator's input columns into an ``or`` of the operator
    over ``tostring(column)`` for every column, which is how Kusto reads the
    star. Negated operators are refused: "no column has" and "some column has
    not" are different questions and Kusto's choice is not documented.
    """

    op: str
    right: ir.Expr

    def expand(self, columns: list[str], types: dict[str, str] | None = None) -> ir.Expr:
        """The test over *columns*; with their Kusto *types*, string columns are read as
        they are instead of through ``tostring`` (a CASE over every type: about 2 KB of
        SQL a column, which over hundreds of columns made planning the query's main cost).

        The term operators (``has``, ``hasprefix``, ``hassuffix``, ``contains``) test
        all the columns at once, joined by a separator that is not a letter or digit,
        so a term cannot span two columns; the others are an ``or`` over the columns.
        """
        if not columns:
            return ir.Literal(False, "bool")
        types = types or {}
        texts = [
            ir.ColumnRef(c) if types.get(c) == "string" else ir.FunctionCall("tostring", (ir.ColumnRef(c),))
            for c in columns
        ]
        if self.op in JOINABLE_STAR_OPS and len(texts) > 1:
            return ir.BinaryOp(self.op, ir.FunctionCall(ROW_TEXT, tuple(texts)), self.right)
        expr: ir.Expr = ir.BinaryOp(self.op, texts[0], self.right)
        for text in texts[1:]:
            expr = ir.BinaryOp("or", expr, ir.BinaryOp(self.op, text, self.right))
        return expr


def _lower_expr(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def lower_expr(node: Any) -> Any:
        collapsed = _lower._collapse(node)
        if _lower._cls(collapsed) == "StringStarOperatorExpression":
            ops = _lower._find_all(collapsed, "StringBinaryOperator")
            rules = _lower._rule_children(collapsed)
            op = ops[0].getText() if ops else ""
            if not op or op.startswith("!") or len(rules) < 2:
                raise _lower._unsupported(collapsed, f"* {op}")
            return _StarMatch(op, lower_expr(rules[-1]))
        if _lower._cls(collapsed) == "TypeLiteralExpression":  # `typeof(long)` as an argument
            match = re.fullmatch(r"typeof\((\w+)\)", collapsed.getText())
            if match:
                return ir.FunctionCall(TYPE_LITERAL, (ir.Literal(match.group(1).lower(), "string"),))
        if _lower._cls(collapsed) == "CountExpression":
            rules = _lower._rule_children(collapsed)
            if len(rules) == 1:  # `count(x)`, which duckdb-kql lowered as a call of `x`
                return ir.FunctionCall(COUNT_OF, (lower_expr(rules[0]),))
        lowered = original(node)
        if isinstance(lowered, ir.FunctionCall) and lowered.name.lower().startswith(_INTERNAL):
            # The rewrites' internal functions take rendered SQL and trusted arguments: a
            # query never reaches them by name.
            raise KqlUnsupportedError(
                f"function:{lowered.name}", hint="no DuckDB mapping: not a Kusto function"
            )
        return _timespan_by_number(lowered)

    return lower_expr


#: The prefix of the rewrites' internal function names.
_INTERNAL = "__ctirealm"


_NUMERIC_KINDS = frozenset({"long", "int", "real", "decimal"})


def _is_number_literal(node: Any) -> bool:
    if isinstance(node, ir.UnaryOp) and node.op == "-":
        return _is_number_literal(node.operand)
    return isinstance(node, ir.Literal) and node.kind in _NUMERIC_KINDS


def _timespan_by_number(node: Any) -> Any:
    """``2h / 4``: a timespan divided by a number is a timespan (duckdb-kql divides it as two
    timespans and fails to bind). Only a literal divisor is taken: a column's type is unknown,
    and a timespan column divided by a timespan must stay a ratio."""
    if (
        isinstance(node, ir.BinaryOp)
        and node.op == "/"
        and _is_number_literal(node.right)
        and _translate._is_timespan_expr(node.left)
    ):
        return ir.FunctionCall(TIMESPAN_DIV, (node.left, node.right))
    return node


def _substitute_once(original: Callable[..., Any]) -> Callable[..., Any]:
    """duckdb-kql's scalar-``let`` substitution, taught to look inside `_StarMatch`."""

    def substitute_once(node: Any, scalars: Any, memo: dict[int, Any]) -> Any:
        if isinstance(node, _StarMatch):
            return dataclasses.replace(node, right=_lower._substitute_memo(node.right, scalars, memo))
        return original(node, scalars, memo)

    return substitute_once


def _children(node: Any) -> list[Any]:
    """The children `_rebuilt` visits: items of lists and tuples, fields of IR dataclasses."""
    if isinstance(node, (list, tuple)):
        return list(node)
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return [getattr(node, f.name) for f in dataclasses.fields(node)]
    return []


def _rebuilt(node: Any, visit: Callable[[Any], Any]) -> Any:
    """*node* with *visit* applied to its children (items of lists and tuples, fields of IR
    dataclasses); a node none of whose children changed is returned as it is."""
    if isinstance(node, (list, tuple)):
        items = [visit(n) for n in node]
        if all(a is b for a, b in zip(items, node, strict=True)):
            return node
        return type(node)(items)
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        changes = {}
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            new = visit(value)
            if new is not value:
                changes[f.name] = new
        return dataclasses.replace(node, **changes) if changes else node
    return node


def _column_ifexists(node: ir.FunctionCall, columns: list[str]) -> ir.Expr:
    """``column_ifexists("name", default)``: the column when the input has it, else *default*.

    Kusto decides it when the query is compiled, from the input's schema, which is
    what the engine knows at translation; the name is compared case-sensitively.
    """
    given = node.args[0] if node.args else None
    while isinstance(given, ir.LetRef):  # a `let` or a function parameter: a constant too
        given = given.value
    if len(node.args) != 2 or not isinstance(given, ir.Literal) or given.kind != "string":
        raise KqlUnsupportedError(
            "function:column_ifexists",
            hint="the column name must be a string constant (Kusto requires one)",
        )
    name = str(given.value)
    return ir.ColumnRef(name) if name in columns else node.args[1]


def _expand_stars(node: Any, columns: list[str], types: dict[str, str] | None = None) -> Any:
    """*node* with what depends on its input's columns resolved over *columns*:
    ``* has "x"`` and ``column_ifexists``."""
    if isinstance(node, _StarMatch):
        return node.expand(columns, types)
    if isinstance(node, ir.FunctionCall) and node.name == "column_ifexists":
        return _column_ifexists(node, columns)
    if isinstance(node, ir.Query):
        return node  # a nested query has its own input
    return _rebuilt(node, lambda n: _expand_stars(n, columns, types))


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _ordered(names: list[str], order: str) -> list[str]:
    if order == "asc":
        return sorted(names)
    if order == "desc":
        return sorted(names, reverse=True)
    if order == "granny-asc":
        return sorted(names, key=_natural_key)
    if order == "granny-desc":
        return sorted(names, key=_natural_key, reverse=True)
    return names


def _placeholder_items(node: Any) -> tuple[tuple[str, bool, str], ...]:
    items: list[tuple[str, bool, str]] = []
    for ref in _lower._find_all(node, "SimpleOrWildcardedNameReference"):
        order = ""
        parent = ref.parentCtx
        if parent is not None and _lower._cls(parent) == "ProjectReorderExpression":
            tokens = [c.getText().lower() for c in _lower._children(parent) if c is not ref]
            order = next((t for t in tokens if t in ("asc", "desc", "granny-asc", "granny-desc")), "")
        wild = _lower._find_all(ref, "WildcardedName")
        if wild:
            items.append((wild[0].getText(), True, order))
        else:
            names = _lower._find_names(ref)
            if not names:
                raise _lower._unsupported(ref)
            items.append((names[0], False, order))
    return tuple(items)


#: Reads distinct values from the rows the engine produces, for the operators whose
#: output columns are values in the data: ``(sql, parameters, column, kind) -> values``
#: with *kind* ``"keys"`` (the keys of the bags in *column*) or ``"values"`` (the values
#: of *column*, as strings), sorted, at most ``MAX_DATA_COLUMNS + 1``. Set by the engine
#: while it translates; None where no data can be read (then those operators are refused).
READ_DISTINCT: contextvars.ContextVar[Callable[[str, dict[str, Any], str, str], list[str]] | None] = (
    contextvars.ContextVar("ctirealm_read_distinct", default=None)
)
#: Most columns ``bag_unpack`` or ``pivot`` may create: a key or value per row would
#: otherwise ask for a table of a million columns.
MAX_DATA_COLUMNS = 1024


def _read_distinct(
    operator: str,
    query: ir.Query,
    source: ir.Source,
    operators: list[ir.Operator],
    schema: dict[str, list[str]],
    column: str,
    kind: str,
) -> tuple[list[str], list[str]]:
    """(the input's columns, the distinct keys or values of *column* in the rows reaching
    the operator), the input translated and run by the engine (`READ_DISTINCT`)."""
    from duckdb_kql.schema import output_columns

    read = READ_DISTINCT.get()
    if read is None:
        raise KqlUnsupportedError(
            f"evaluate {operator}",
            hint="its columns are values found in the data, which only the engine reads",
        )
    prefix_query = ir.Query(source, list(operators), lets=list(query.lets))
    columns = output_columns(prefix_query, schema)
    if column not in columns:
        raise KqlSchemaError(column, hint=f"{operator}: no such column in its input")
    sql = _translate.to_sql(prefix_query, schema)
    parameters = dict(getattr(sql, "parameters", None) or {})
    active = _translate._ACTIVE_CLOCK_STATE.get()
    if f"${_translate.CLOCK_SLOT}" in sql and active is not None and active.moment:
        parameters[_translate.CLOCK_SLOT] = active.moment
    found = read(str(sql), parameters, column, kind)
    if len(found) > MAX_DATA_COLUMNS:
        raise KqlUnsupportedError(
            f"evaluate {operator}",
            hint=f"the data holds more than {MAX_DATA_COLUMNS} distinct {kind}, one column "
            "each; filter first, or pick the ones you need with extend",
        )
    return columns, found


@dataclasses.dataclass(frozen=True)
class _BagUnpack(ir.Operator):
    """``evaluate bag_unpack(column[, prefix])``: one column per key of the bags.

    Its output columns are the keys found in the data, which no schema says; the
    engine reads them (`READ_DISTINCT`) from the rows reaching this operator, just
    before the query is emitted, and the operator becomes an ``extend`` of one
    column per key (``prefix`` + key, sorted, each the bag's value, dynamic)
    followed by a ``project-away`` of the bag. A key naming an existing column is
    an error, Kusto's default (``columnsConflict='error'``).
    """

    column: str
    prefix: str

    def resolve(
        self, query: ir.Query, source: ir.Source, operators: list[ir.Operator], schema: dict[str, list[str]]
    ) -> list[ir.Operator]:
        columns, keys = _read_distinct("bag_unpack", query, source, operators, schema, self.column, "keys")
        remaining = [c for c in columns if c != self.column]
        names = [self.prefix + key for key in keys]
        _refuse_clashes(
            "bag_unpack",
            names,
            remaining,
            "a key of the bag names a column the input already has (Kusto: columnsConflict='error')",
        )
        extend = tuple(
            ir.NamedExpr(ir.PathAccess(ir.ColumnRef(self.column), (ir.PathStep(name=key),)), name)
            for key, name in zip(keys, names, strict=True)
        )
        return [*([ir.Extend(extend)] if extend else []), ir.ProjectAway((self.column,))]


@dataclasses.dataclass(frozen=True)
class _LetCount(ir.Operator):
    """``take n`` / ``top n by x`` with *n* a ``let`` name: Kusto takes any constant
    expression there; duckdb-kql a number literal only. duckdb-kql substitutes the
    ``let``'s value into *count* like into any expression; before emission it must be a
    whole-number literal (else a semantic error, as in Kusto)."""

    operator: str
    count: ir.Expr
    keys: tuple[ir.SortKey, ...] = ()

    def resolve(self) -> ir.Operator:
        value = _whole_number(self.count)
        if value is None:
            # Kusto refuses both: an unknown name, and a count that is not a whole number.
            if isinstance(self.count, ir.ColumnRef):
                raise KqlSchemaError(
                    self.count.name, hint=f"{self.operator}: no scalar `let` of that name for the count"
                )
            raise KqlSchemaError(
                getattr(self.count, "name", self.operator),
                hint=f"{self.operator}: the count must be a whole number",
            )
        if self.operator == "take":
            return ir.Take(value)
        return ir.Top(value, self.keys)


def _whole_number(node: ir.Expr) -> int | None:
    """The value of a whole-number literal (a literal keeps its lexical text), else None."""
    while isinstance(node, ir.LetRef):  # a `let` name, carrying the value it stands for
        node = node.value
    if not isinstance(node, ir.Literal) or node.kind not in ("long", "int"):
        return None
    if isinstance(node.value, bool):
        return None
    if isinstance(node.value, int):
        return node.value
    text = str(node.value).strip()
    return int(text) if re.fullmatch(r"[0-9]+", text) else None


def _lower_let_count(inner: Any, kind: str) -> _LetCount | None:
    """``take n`` / ``top n by x`` whose count is a name; None for any other count."""
    kids = _lower._rule_children(inner)
    if kind == "TakeOperator" and kids:
        count = _lower._lower_expr(kids[-1])
        if isinstance(count, ir.ColumnRef):
            return _LetCount("take", count)
    if kind == "TopOperator" and len(kids) == 2:
        count = _lower._lower_expr(kids[0])
        if isinstance(count, ir.ColumnRef):
            return _LetCount("top", count, (_lower._lower_sort_key(kids[1]),))
    return None


def _substitute_operator(original: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """duckdb-kql's scalar ``let`` substitution, reaching a `_LetCount`'s count too."""

    def substitute_operator(op: Any, scalars: Any) -> Any:
        if isinstance(op, _LetCount):
            return dataclasses.replace(op, count=_lower._substitute(op.count, scalars))
        return original(op, scalars)

    return substitute_operator


@dataclasses.dataclass(frozen=True)
class _As(ir.Operator):
    """``| as T``: names the rows reaching it ``T`` for the rest of the query; the rows pass
    unchanged. Resolved before emission: ``A | as T | B`` is ``let T = A; T | B``."""

    name: str


def _lower_as(inner: Any) -> _As:
    names = [k for k in _lower._rule_children(inner) if _lower._cls(k) == "IdentifierOrKeywordOrEscapedName"]
    if len(names) != 1:
        raise _lower._unsupported(inner, "as")
    found = _lower._find_names(names[0])
    return _As(found[0] if found else names[0].getText())


def _split_as(query: ir.Query) -> ir.Query:
    """The query with its last ``as T`` turned into ``let T = <rows before it>``."""
    at = max(i for i, op in enumerate(query.operators) if isinstance(op, _As))
    name = query.operators[at].name  # type: ignore[attr-defined]
    if any(bound == name for bound, _ in query.lets):
        raise KqlUnsupportedError(
            "as",
            hint=f"a `let` of this query already binds {name!r}; "
            "the embedded engine does not rebind a name with `as`",
        )
    before = _split_as_all(ir.Query(query.source, list(query.operators[:at]), lets=[]))
    # An earlier `as` of the same pipeline binds a name the rest of the query reads too.
    hoisted, before = list(before.lets), dataclasses.replace(before, lets=[])
    return dataclasses.replace(
        query,
        lets=[*query.lets, *hoisted, (name, before)],
        source=ir.TableRef(name),
        operators=list(query.operators[at + 1 :]),
    )


def _split_as_all(query: ir.Query) -> ir.Query:
    if any(isinstance(op, _As) for op in query.operators):
        return _split_as(query)
    return query


def _refuse_clashes(operator: str, names: list[str], existing: list[str], why: str) -> None:
    """New column *names* must not repeat *existing* ones, nor differ from another only in
    case (DuckDB's names are case-insensitive; Kusto would keep both)."""
    clash = sorted(set(names) & set(existing))
    if clash:
        raise KqlSchemaError(clash[0], hint=f"{operator}: {why}")
    folded: dict[str, str] = {}
    for name in [*existing, *names]:
        other = folded.setdefault(name.casefold(), name)
        if other != name:
            raise KqlUnsupportedError(
                f"evaluate {operator}",
                hint=f"it would make columns {other!r} and {name!r}, which differ only in case",
            )


@dataclasses.dataclass(frozen=True)
class _Pivot(ir.Operator):
    """``evaluate pivot(column[, aggregate()][, group, ...])``: a column per value of *column*.

    Kusto: the rows are grouped by the columns given (all the input's columns but
    *column* and those the aggregate reads, when none are), and each distinct value
    of *column* becomes a column holding the aggregate (default ``count()``) over
    the group's rows with that value. The values are read from the data
    (`READ_DISTINCT`); the operator becomes a ``summarize`` of one conditional
    aggregate (``countif``, ``sumif``, ...) per value, in sorted order.
    """

    column: str
    aggregate: ir.FunctionCall
    groups: tuple[str, ...] | None
    #: ``: (Name: type, ...)``, the declared output schema, when given.
    declared: tuple[tuple[str, str], ...] | None = None

    def resolve(
        self, query: ir.Query, source: ir.Source, operators: list[ir.Operator], schema: dict[str, list[str]]
    ) -> list[ir.Operator]:
        if self.declared is not None:
            return self._resolve_declared(query, source, operators, schema)
        columns, values = _read_distinct("pivot", query, source, operators, schema, self.column, "values")
        return self._operators(columns, values)

    def _operators(self, columns: list[str], values: list[str]) -> list[ir.Operator]:
        read: set[str] = set()
        _column_refs(self.aggregate, read, [])
        groups = (
            list(self.groups)
            if self.groups is not None
            else [c for c in columns if c != self.column and c not in read]
        )
        _refuse_clashes("pivot", values, groups, "a value names a grouping column")
        aggregates = []
        for value in values:
            test = ir.BinaryOp(
                "==", ir.FunctionCall("tostring", (ir.ColumnRef(self.column),)), ir.Literal(value, "string")
            )
            aggregates.append(
                ir.NamedExpr(
                    ir.FunctionCall(_PIVOT_AGGREGATES[self.aggregate.name], (*self.aggregate.args, test)),
                    value,
                )
            )
        return [ir.Summarize(tuple(aggregates), tuple(ir.NamedExpr(ir.ColumnRef(g)) for g in groups))]

    def _resolve_declared(
        self, query: ir.Query, source: ir.Source, operators: list[ir.Operator], schema: dict[str, list[str]]
    ) -> list[ir.Operator]:
        """With ``: (OutputSchema)``: the declared columns, in their order and types, without
        reading the data. Kusto raises an error when the output does not match the schema;
        here a value of the data the schema does not declare is that error, at run time, and
        a declared value the data lacks is a column of the aggregate over no rows
        (``count()``: 0)."""
        from duckdb_kql.schema import output_columns

        declared = self.declared or ()
        columns = output_columns(ir.Query(source, list(operators), lets=list(query.lets)), schema)
        if self.column not in columns:
            raise KqlSchemaError(self.column, hint="pivot: no such column in its input")
        read: set[str] = set()
        _column_refs(self.aggregate, read, [])
        groups = (
            list(self.groups)
            if self.groups is not None
            else [c for c in columns if c != self.column and c not in read]
        )
        missing = [g for g in groups if g not in {name for name, _ in declared}]
        if missing:
            raise KqlSchemaError(
                missing[0], hint="evaluate pivot: a grouping column the declared output schema leaves out"
            )
        values = [name for name, _ in declared if name not in groups]
        # A value the schema does not declare fails at run time, as in Kusto: each group keeps
        # one such value it holds ("" when none), which the first output column reads.
        text = ir.FunctionCall("tostring", (ir.ColumnRef(self.column),))
        fits: ir.Expr = ir.FunctionCall("isempty", (text,))
        for value in values:
            fits = ir.BinaryOp("or", fits, ir.BinaryOp("==", text, ir.Literal(value, "string")))
        undeclared = ir.NamedExpr(
            ir.FunctionCall("max", (ir.FunctionCall("iff", (fits, ir.Literal("", "string"), text)),)),
            _PIVOT_UNDECLARED,
        )
        pivoted = self._operators(groups, values)[0] if values else None
        aggregates = pivoted.aggregates if isinstance(pivoted, ir.Summarize) else ()
        outputs = [ir.NamedExpr(_declared_as(ir.ColumnRef(n), kind), n) for n, kind in declared]
        if outputs:
            checked = ir.FunctionCall(UNDECLARED_FAILS, (outputs[0].expr, ir.ColumnRef(_PIVOT_UNDECLARED)))
            outputs[0] = dataclasses.replace(outputs[0], expr=checked)
        by = tuple(ir.NamedExpr(ir.ColumnRef(g)) for g in groups)
        return [ir.Summarize((*aggregates, undeclared), by), ir.Project(tuple(outputs))]


#: The value of the data a declared ``pivot`` schema leaves out, per group (internal).
_PIVOT_UNDECLARED = "__ctirealm_pivot_undeclared"


#: A declared output column's type -> the conversion giving it (others are left as they are).
def _declared_as(expr: ir.Expr, kind: str) -> ir.Expr:
    """*expr* converted to a declared output column's type (the conversions of ``typeof(T)``)."""
    conversion = CONVERSIONS.get(kind.lower())
    return ir.FunctionCall(conversion, (expr,)) if conversion else expr


def _declared_schema(node: Any) -> tuple[tuple[str, str], ...] | None:
    """``evaluate ...: (Name: type, ...)``: the declared columns, None without a schema."""
    clauses = _lower._find_all(node, "EvaluateOperatorSchemaClause")
    if not clauses:
        return None
    if "*" in clauses[0].getText():
        raise _lower._unsupported(node, "evaluate pivot with '*' in its output schema")
    out = []
    for declaration in _lower._find_all(clauses[0], "RowSchemaColumnDeclaration"):
        name, kind = _lower._rule_children(declaration)[:2]
        text = name.getText()
        if text[:2] in ("['", '["') and text[-2:] in ("']", '"]'):
            text = text[2:-2]
        out.append((text, kind.getText()))
    return tuple(out)


#: pivot's aggregates -> the conditional form each cell is computed with.
_PIVOT_AGGREGATES = {
    "count": "countif",
    "sum": "sumif",
    "avg": "avgif",
    "dcount": "dcountif",
    "make_set": "make_set_if",
    "make_list": "make_list_if",
}


def _lower_evaluate(node: Any) -> ir.Operator | list[ir.Operator] | None:
    """``evaluate bag_unpack(...)``, ``evaluate pivot(...)``, ``evaluate ipv4_lookup(...)``;
    None for other plugins."""
    calls = _lower._find_all(node, "NamedFunctionCallExpression")
    if not calls:
        return None
    kids = _lower._rule_children(calls[0])
    plugin = kids[0].getText().lower() if kids else ""
    if plugin == "bag_unpack":
        return _lower_bag_unpack(node)
    if plugin == "ipv4_lookup":
        return _lower_ipv4_lookup(node, kids)
    if plugin != "pivot":
        return None
    if any(_lower._find_all(k, "NamedExpressionNameClause") for k in kids[1:]):
        raise _lower._unsupported(node, "evaluate pivot with named parameters")
    args = [_lower._lower_expr(k) for k in kids[1:]]
    if not args or not isinstance(args[0], ir.ColumnRef):
        raise _lower._unsupported(node, "evaluate pivot(column[, aggregate()][, group, ...])")
    aggregate = ir.FunctionCall("count", ())
    rest = args[1:]
    if rest and isinstance(rest[0], ir.FunctionCall):
        aggregate, rest = rest[0], rest[1:]
        if aggregate.name not in _PIVOT_AGGREGATES:
            raise _lower._unsupported(node, f"evaluate pivot with {aggregate.name}()")
    if not all(isinstance(a, ir.ColumnRef) for a in rest):
        raise _lower._unsupported(node, "evaluate pivot: group by columns only")
    groups = tuple(a.name for a in rest if isinstance(a, ir.ColumnRef)) or None
    return _Pivot(args[0].name, aggregate, groups, _declared_schema(node))


#: ``ipv4_lookup``'s internal columns (dropped before the plugin's output).
_IP4 = "__ctirealm_ip4"
_IP4_HITS = "__ctirealm_ip4_hits"
_IP4_HIT = "__ctirealm_ip4_hit"
_IP4_ANY = "__ctirealm_ip4_any"
_IP4_PREFIX = "__ctirealm_ip4_prefix"
_IP4_MARK = "__ctirealm_ip4_mark"
#: A range's key is its prefix length times 2**32 plus its network bits, so one equality
#: join finds an address's ranges: an address is keyed once per prefix length the table has.
_IP4_PREFIX_UNIT = 1 << 32


def _quoted(name: str) -> str:
    return f"['{name}']" if "'" not in name else f'["{name}"]'


def _lower_ipv4_lookup(node: Any, kids: list[Any]) -> list[ir.Operator]:
    """``evaluate ipv4_lookup(LookupTable, SourceIPv4Key, IPv4LookupKey [, ExtraKey...]
    [, return_unmatched])``: the input's rows joined with the lookup rows whose IPv4 range
    (``a.b.c.d/n``, or one address) holds the source address, as ``lookup`` joins: input
    columns, then the lookup table's; with *return_unmatched*, rows matching no range are
    kept with nulls (https://learn.microsoft.com/kusto/query/ipv4-lookup-plugin).

    Lowered to operators duckdb-kql has: an address in any of the ranges
    (``ipv4_is_in_any_range``) is expanded to one row per prefix length the table has,
    keyed by its network at that length (`_IP4_PREFIX_UNIT`), and ``lookup``-joined with
    the ranges on that key and the extra keys.
    """
    positional: list[Any] = []
    unmatched = False
    for kid in kids[1:]:
        if _lower._find_all(kid, "NamedExpressionNameClause"):
            named = _lower._lower_named(kid)
            if (
                (named.name or "").lower() != "return_unmatched"
                or not isinstance(named.expr, ir.Literal)
                or named.expr.kind != "bool"
            ):
                raise _lower._unsupported(
                    node, "evaluate ipv4_lookup: the only named argument is return_unmatched = true|false"
                )
            unmatched = bool(named.expr.value)
            continue
        try:
            positional.append(_lower._lower_expr(kid))
        except KqlUnsupportedError:  # a tabular expression for the table, say
            positional.append(None)
    if positional and isinstance(positional[-1], ir.Literal) and positional[-1].kind == "bool":
        unmatched = bool(positional.pop().value)
    missing = "Kusto has the plugin 'evaluate ipv4_lookup', the embedded engine does not implement"
    if len(positional) < 3:
        raise KqlSchemaError(
            "ipv4_lookup",
            hint="takes (LookupTable, SourceIPv4Key, IPv4LookupKey [, ExtraKey...] [, return_unmatched])",
        )
    if not isinstance(positional[0], ir.ColumnRef):
        raise KqlUnsupportedError(
            "evaluate ipv4_lookup",
            span=_lower._span(node),
            hint=(f"{missing} it with a tabular expression for the table; name the table in a `let`"),
        )
    if not all(isinstance(a, ir.ColumnRef) for a in positional):
        raise KqlSchemaError("ipv4_lookup", hint="the keys must be column names")
    table, source, network, *extra = (a.name for a in positional)
    if unmatched and extra:
        raise KqlUnsupportedError(
            "evaluate ipv4_lookup",
            span=_lower._span(node),
            hint=(f"{missing} it with extra keys and return_unmatched = true"),
        )
    net = _quoted(network)
    prefix = f'iff({net} has "/", tolong(split({net}, "/")[1]), 32)'
    keyed = (
        f"{_quoted(table)} | extend {_IP4_PREFIX} = {prefix} "
        f"| extend {_IP4_HIT} = {_IP4_PREFIX} * {_IP4_PREFIX_UNIT} "
        f"+ binary_shift_right(parse_ipv4({net}), 32 - {_IP4_PREFIX}) "
        f"| where isnotnull({_IP4_HIT})"
    )
    ranges = f"{keyed} | project-away {_IP4_PREFIX}"
    on = ", ".join([_IP4_HIT, *(_quoted(k) for k in extra)])
    internal = [_IP4, _IP4_ANY, _IP4_HITS, _IP4_PREFIX, _IP4_HIT]
    text = (
        f"__ctirealm_input | extend {_IP4} = parse_ipv4({_quoted(source)}) "
        f"| extend {_IP4_ANY} = ipv4_is_in_any_range({_quoted(source)}, "
        f"toscalar({_quoted(table)} | summarize make_list({net}))) "
        + ("" if unmatched else f"| where {_IP4_ANY} == true ")
        + f"| extend {_IP4_HITS} = iff({_IP4_ANY} == true, "
        f"toscalar({keyed} | summarize make_set({_IP4_PREFIX})), dynamic([null])) "
        f"| mv-expand {_IP4_PREFIX} = {_IP4_HITS} to typeof(long) "
        f"| extend {_IP4_HIT} = {_IP4_PREFIX} * {_IP4_PREFIX_UNIT} "
        f"+ binary_shift_right({_IP4}, 32 - {_IP4_PREFIX}) "
    )
    if unmatched:
        # Every prefix length of the table is tried for a matching address; the tries that
        # find no range are dropped, the one row of an address matching none is kept.
        text += (
            f"| lookup kind=leftouter ({ranges} | extend {_IP4_MARK} = true) on {on} "
            f"| where isnull({_IP4_PREFIX}) or {_IP4_MARK} == true "
        )
        internal.append(_IP4_MARK)
    else:
        text += f"| lookup kind=inner ({ranges}) on {on} "
    text += f"| project-away {', '.join(internal)}"
    tree = _lower.parse(text).tree
    pipes = _lower._find_all(tree, "PipeExpression")
    return list(_lower._lower_query_node(pipes[0]).operators)


def _lower_bag_unpack(node: Any) -> _BagUnpack:
    """``evaluate bag_unpack(column[, "prefix"])``."""
    kids = _lower._rule_children(_lower._find_all(node, "NamedFunctionCallExpression")[0])
    args = [_lower._lower_expr(k) for k in kids[1:]]
    if any(_lower._find_all(k, "NamedExpressionNameClause") for k in kids[1:]):
        raise _lower._unsupported(node, "evaluate bag_unpack with named parameters")
    if not args or not isinstance(args[0], ir.ColumnRef) or len(args) > 2:
        raise _lower._unsupported(node, "evaluate bag_unpack(column[, prefix])")
    prefix = ""
    if len(args) == 2:
        if not (isinstance(args[1], ir.Literal) and args[1].kind == "string"):
            raise _lower._unsupported(node, "evaluate bag_unpack: the prefix must be a string")
        prefix = str(args[1].value)
    return _BagUnpack(args[0].name, prefix)


def _functions_table() -> Any:
    from duckdb_kql.translate import functions

    return functions


def _lower_make_series(node: Any) -> list[ir.Operator]:
    """``make-series agg() [default=d], ... on T from a to b step s [by g, ...]`` (or
    ``on T in range(a, b, s)``) as operators duckdb-kql has.

    Each row's bin is numbered from the start (``bin_at(T, s, a)``; with ``in
    range``, from ``bin(a, s)`` and up to *b*'s bin included, Kusto's documented
    difference); rows outside the range are dropped; the aggregates run per group
    and bin; then each group's bins become one array per aggregate, in bin order,
    *d* (0 unless given) where the group had no rows, and the axis column an array
    of the bins' starts. Output: the groups, the series, the axis, as Kusto orders
    them. A range is required (Kusto's default, the data's own extent, is not
    implemented), as it is in every corpus query.
    """
    from duckdb_kql.translate.naming import expression_name

    aggregates: list[tuple[ir.NamedExpr, ir.Expr]] = []
    axis = start = end = step = None
    inclusive = False
    groups: list[ir.NamedExpr] = []
    #: `R=avg(x)` written without spaces parses as a parameter `R=avg` and an aggregation
    #: `(x)` (duckdb-kql's grammar); the two are put back together.
    split_name: tuple[str, str] | None = None
    for child in _lower._rule_children(node):
        kind = _lower._cls(child)
        if kind == "RelaxedQueryOperatorParameter":
            name, _, function = child.getText().partition("=")
            if function.lower() in _functions_table().AGGREGATE_FUNCTIONS:
                split_name = (name, function)
                continue
        parts = [
            _lower._lower_named(n)
            for n in _lower._rule_children(child)
            if _lower._cls(n) == "NamedExpression"
        ]
        if kind == "MakeSeriesOperatorAggregation":
            default: ir.Expr = ir.Literal(0, "long")
            for clause in _lower._rule_children(child):
                if _lower._cls(clause) == "MakeSeriesOperatorExpressionDefaultClause":
                    defaults = [_lower._lower_named(n) for n in _lower._rule_children(clause)]
                    default = defaults[0].expr
            if split_name is not None:
                name, function = split_name
                parts = [ir.NamedExpr(ir.FunctionCall(function, (parts[0].expr,)), name)]
                split_name = None
            aggregates.append((parts[0], default))
        elif kind == "MakeSeriesOperatorOnClause" and parts:
            axis = parts[0].expr
        elif (
            kind in ("MakeSeriesOperatorFromToStepClause", "MakeSeriesOperatorInRangeClause")
            and len(parts) == 3
        ):
            start, end, step = (p.expr for p in parts)
            inclusive = kind == "MakeSeriesOperatorInRangeClause"
        elif kind == "MakeSeriesOperatorByClause":
            groups = parts
        else:
            raise _lower._unsupported(child, f"make-series {child.getText()[:40]}")
    if not isinstance(axis, ir.ColumnRef) or start is None or end is None or step is None:
        raise _lower._unsupported(node, "make-series without `from ... to ... step` or `in range(...)`")
    if not aggregates:
        raise _lower._unsupported(node, "make-series without an aggregate")
    origin = ir.FunctionCall("bin", (start, step)) if inclusive else start
    length = ir.FunctionCall(SERIES_LENGTH, (origin, end, step, ir.Literal(inclusive, "bool")))
    index = "__ctirealm_series_bin"
    group_names = []
    for group in groups:
        name = group.name or expression_name(group.expr)
        if name is None:
            raise _lower._unsupported(node, "make-series by an unnamed expression")
        group_names.append(name)
    names = [named.name or expression_name(named.expr) for named, _ in aggregates]
    if any(n is None for n in names):
        raise _lower._unsupported(node, "make-series of an unnamed computed aggregate")
    values = [f"__ctirealm_series_{i}" for i in range(len(aggregates))]
    axis_kind = SERIES_AXIS if _translate._is_timespan_expr(step) else SERIES_AXIS + "_number"
    return [
        ir.Extend((ir.NamedExpr(ir.FunctionCall(SERIES_INDEX, (axis, origin, step)), index),)),
        ir.Where(
            ir.BinaryOp(
                "and",
                ir.BinaryOp(">=", ir.ColumnRef(index), ir.Literal(0, "long")),
                ir.BinaryOp("<", ir.ColumnRef(index), length),
            )
        ),
        ir.Summarize(
            tuple(
                ir.NamedExpr(named.expr, value) for (named, _), value in zip(aggregates, values, strict=True)
            ),
            (*groups, ir.NamedExpr(ir.ColumnRef(index), index)),
        ),
        ir.Summarize(
            (
                *(
                    ir.NamedExpr(
                        ir.FunctionCall(
                            SERIES_VALUES, (ir.ColumnRef(value), ir.ColumnRef(index), length, default)
                        ),
                        name,
                    )
                    for (_, default), value, name in zip(aggregates, values, names, strict=True)
                ),
                ir.NamedExpr(ir.FunctionCall(axis_kind, (origin, step, length)), axis.name),
            ),
            tuple(ir.NamedExpr(ir.ColumnRef(name), None) for name in group_names),
        ),
    ]


def _lower_top_nested(node: Any) -> list[ir.Operator]:
    """``top-nested [N] of key by aggregate [asc|desc], top-nested ...`` as operators.

    Kusto: the first clause keeps the *N* values of its key with the highest aggregate
    (all of them without *N*); each next clause does the same within each group the
    previous ones kept. Output: one row per kept path, the key and aggregate columns
    of each level in clause order (an aggregate unnamed is ``aggregated_<key>``).
    Lowered as each level's aggregate over the rows of its group (a window, so all are
    computed over the input rows), one row per path, then each level's rank within its
    parent group, kept up to *N* (ties broken by the key's value). ``with others`` is
    refused.
    """
    from duckdb_kql.translate.naming import expression_name

    keys: list[str] = []
    computed: list[ir.NamedExpr] = []
    levels: list[tuple[ir.Expr | None, str, ir.FunctionCall, bool]] = []
    parts = (
        [node]
        if _lower._cls(node) == "TopNestedOperatorPart"
        else [p for p in _lower._rule_children(node) if _lower._cls(p) == "TopNestedOperatorPart"]
    )
    for index, part in enumerate(parts):
        kids = _lower._rule_children(part)
        if any(_lower._cls(k) == "TopNestedOperatorWithOthersClause" for k in kids):
            raise _lower._unsupported(part, "top-nested with others")
        named = [k for k in kids if _lower._cls(k) == "NamedExpression"]
        ordered = [k for k in kids if _lower._cls(k) == "OrderedExpression"]
        if not named or len(ordered) != 1:
            raise _lower._unsupported(part, "top-nested")
        limit = _lower._lower_named(named[0]).expr if len(named) == 2 else None
        if limit is not None and not (isinstance(limit, ir.Literal) and limit.kind in ("long", "int")):
            raise _lower._unsupported(part, "top-nested with a count that is not a number")
        key = _lower._lower_named(named[-1])
        if isinstance(key.expr, ir.ColumnRef) and key.name in (None, key.expr.name):
            name = key.expr.name
        else:
            name = key.name or expression_name(key.expr) or f"Column{index + 1}"
            computed.append(ir.NamedExpr(key.expr, name))
        order = _lower._rule_children(ordered[0])
        aggregate = _lower._lower_named(order[0])
        if (
            not isinstance(aggregate.expr, ir.FunctionCall)
            or _translate.lookup_aggregate(aggregate.expr.name) is None
        ):
            raise _lower._unsupported(part, "top-nested by an expression over aggregates")
        ascending = any(o.getText().lower() == "asc" for o in order[1:])
        keys.append(name)
        levels.append((limit, aggregate.name or f"aggregated_{name}", aggregate.expr, ascending))
    if not levels:
        raise _lower._unsupported(node, "top-nested")
    columns = [ir.ColumnRef(k) for k in keys]
    ranks = [f"__ctirealm_nested_rank_{i}" for i in range(len(levels))]
    kept = [
        ir.BinaryOp("<=", ir.ColumnRef(rank), limit)
        for rank, (limit, _, _, _) in zip(ranks, levels, strict=True)
        if limit is not None
    ]
    condition: ir.Expr | None = None
    for test in kept:
        condition = test if condition is None else ir.BinaryOp("and", condition, test)
    paths = [ir.NamedExpr(ref) for i, ref in enumerate(columns) for ref in (ref, ir.ColumnRef(levels[i][1]))]
    return [
        *([ir.Extend(tuple(computed))] if computed else []),
        ir.Extend(
            tuple(
                ir.NamedExpr(ir.FunctionCall(NESTED_AGGREGATE, (aggregate, *columns[: i + 1])), name)
                for i, (_, name, aggregate, _) in enumerate(levels)
            )
        ),
        ir.Summarize((), tuple(paths)),
        ir.Extend(
            tuple(
                ir.NamedExpr(
                    ir.FunctionCall(
                        NESTED_RANK,
                        (ir.ColumnRef(name), ir.Literal(ascending, "bool"), columns[i], *columns[:i]),
                    ),
                    rank,
                )
                for i, ((_, name, _, ascending), rank) in enumerate(zip(levels, ranks, strict=True))
            )
        ),
        *([ir.Where(condition)] if condition is not None else []),
        ir.ProjectAway(tuple(ranks)),
    ]


#: Operators a ``mv-apply`` subquery may hold when it is lowered to ``mv-expand``: each
#: reads one row at a time, so applying it per source row or to all rows is the same.
_ROW_WISE = (ir.Where, ir.Extend, ir.ProjectRename, ir.ProjectAway, ir.Parse)


def _lower_mv_apply(node: Any) -> list[ir.Operator]:
    """``mv-apply x = arr on (where ... | extend ...)`` as ``mv-expand`` and the subquery.

    Kusto applies the subquery to each row's expanded values and joins the result
    back to the row. When every operator of the subquery works row by row
    (`_ROW_WISE`), that is the expansion followed by the subquery's operators;
    a row whose array is empty or null gives the subquery no rows, so it gives
    no output row (the expansion's null placeholder is dropped). A subquery
    that looks across rows (``summarize``, ``top``, ``take``, ``sort``) is refused.
    """
    rules = _lower._rule_children(node)
    subs = [k for k in rules if _lower._cls(k) == "ContextualSubExpression"]
    params = [k for k in rules if _lower._cls(k) != "ContextualSubExpression"]
    if len(subs) != 1:
        raise _lower._unsupported(node, "mv-apply")
    expanded = _lower._lower_mv_expand(node, params)
    expand_ops = list(expanded) if isinstance(expanded, list) else [expanded]
    mv = expand_ops[-1]
    if not isinstance(mv, ir.MvExpand):
        raise _lower._unsupported(node, "mv-apply")
    pipe = _lower._rule_children(subs[0])
    nodes = _lower._rule_children(pipe[0]) if pipe else []
    operators = _lower._lower_operators(nodes)
    present = tuple(
        ir.Where(ir.FunctionCall("isnotnull", (ir.ColumnRef(t.name or t.column),))) for t in mv.targets
    )
    across = [type(op).__name__ for op in operators if not isinstance(op, _ROW_WISE)]
    if not across:
        return [*expand_ops, *present, *operators]
    summarized = _MvApplySummarize.of(tuple(expand_ops), operators, mv)
    if summarized is None:
        raise KqlUnsupportedError(
            "mv-apply",
            hint=f"Kusto has it, the embedded engine does not implement a subquery with "
            f"{', '.join(across)} there (which reads across rows); row-wise operators (where, "
            "extend, parse, project-rename, project-away), then an optional sort and one "
            "summarize, then row-wise operators, are",
        )
    return [summarized]


#: The row number ``mv-apply`` gives each input row, so a subquery's ``summarize`` groups
#: the values of one row's arrays (internal; dropped from the output).
_MV_ROW = "__ctirealm_mv_row"


@dataclasses.dataclass(frozen=True)
class _MvApplySummarize(ir.Operator):
    """``mv-apply x on (... | sort by k | summarize aggs [by g] | ...)``: the subquery's
    ``summarize`` over each input row's expanded values.

    Kusto applies the subquery to each row's subtable and adds the row's other
    columns to its result. Here each input row is numbered, expanded, and the
    summarize groups by that number and the row's other columns (constant within a
    row), then its own ``by`` keys; a ``sort`` before it orders each row's values
    (``make_list`` keeps that order), and the row-wise operators around it apply as
    they are. A row whose arrays are empty or null gives no row, as with the
    row-wise subqueries.
    """

    expand: tuple[ir.Operator, ...]
    before: tuple[ir.Operator, ...]
    summarize: ir.Summarize
    after: tuple[ir.Operator, ...]
    expanded: tuple[str, ...]

    @classmethod
    def of(
        cls, expand: tuple[ir.Operator, ...], operators: list[ir.Operator], mv: ir.MvExpand
    ) -> _MvApplySummarize | None:
        """The operator for row-wise operators, an optional sort, one summarize, row-wise
        operators; None for any other subquery."""
        at = [i for i, op in enumerate(operators) if isinstance(op, ir.Summarize)]
        if len(at) != 1:
            return None
        before, summarize, after = operators[: at[0]], operators[at[0]], operators[at[0] + 1 :]
        if before and isinstance(before[-1], ir.Sort):
            head = before[:-1]
        else:
            head = before
        if not all(isinstance(op, _ROW_WISE) for op in (*head, *after)) or not isinstance(
            summarize, ir.Summarize
        ):
            return None
        names = [t.name or t.column for t in mv.targets] + ([mv.item_index] if mv.item_index else [])
        # A null array gives no row: filtered before the expansion, which would give it one
        # (an empty string, expanded `to typeof(string)`); an empty array gives none itself.
        present: ir.Expr | None = None
        for target in mv.targets:
            test = ir.FunctionCall("isnotnull", (ir.ColumnRef(target.column),))
            present = test if present is None else ir.BinaryOp("or", present, test)
        filtered = (*expand[:-1], *([ir.Where(present)] if present is not None else []), expand[-1])
        return cls(filtered, tuple(before), summarize, tuple(after), tuple(names))

    def resolve(self, columns: list[str]) -> list[ir.Operator]:
        """The operators, given the columns of the ``mv-apply``'s input."""
        number = ir.FunctionCall(
            WINDOW, (ir.Literal("row_number", "string"), ir.Literal(0, "long"), ir.Literal(0, "long"))
        )
        others = [c for c in columns if c not in self.expanded]
        by = (
            ir.NamedExpr(ir.ColumnRef(_MV_ROW)),
            *(ir.NamedExpr(ir.ColumnRef(c)) for c in others),
            *self.summarize.by,
        )
        return [
            ir.Extend((ir.NamedExpr(number, _MV_ROW),)),
            *self.expand,
            *self.before,
            ir.Summarize(self.summarize.aggregates, by),
            ir.ProjectAway((_MV_ROW,)),
            *self.after,
        ]


def _lower_operator(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def lower_operator(node: Any) -> Any:
        inner = node
        while _lower._cls(inner) in ("PipedOperator", "AfterPipeOperator"):
            rules = _lower._rule_children(inner)
            if not rules:
                break
            inner = rules[0]
        inner = _lower._collapse(inner)
        kind = _lower._cls(inner)
        if kind == "ProjectReorderOperator":
            return _ColumnPlaceholder("project-reorder", _placeholder_items(inner))
        if kind == "ProjectKeepOperator":
            return _ColumnPlaceholder("project-keep", _placeholder_items(inner))
        if kind == "ProjectAwayOperator" and _lower._find_all(inner, "WildcardedName"):
            return _ColumnPlaceholder("project-away", _placeholder_items(inner))
        if kind == "MvapplyOperator":
            return _lower_mv_apply(inner)
        if kind == "AsOperator":
            return _lower_as(inner)
        if kind in ("TakeOperator", "TopOperator"):
            counted = _lower_let_count(inner, kind)
            if counted is not None:
                return counted
        if kind == "MakeSeriesOperator":
            return _lower_make_series(inner)
        if kind in ("TopNestedOperator", "TopNestedOperatorPart"):
            return _lower_top_nested(inner)
        if kind == "EvaluateOperator":
            plugin = _lower_evaluate(inner)
            if plugin is not None:
                return plugin
        if kind == "SerializeOperator":  # the order is the last sort's (`_serialized_functions`)
            named = [
                _lower._lower_named(n)
                for n in _lower._rule_children(inner)
                if _lower._cls(n) == "NamedExpression"
            ]
            return ir.Extend(tuple(named)) if named else ir.Where(ir.Literal(True, "bool"))
        if kind == "SearchOperator":  # `T | search P` is `T | where P` (terms over all columns)
            sources, predicate = _search_parts(inner)
            if sources:
                raise _lower._unsupported(inner, "search in (...) after a pipe")
            return ir.Where(predicate)
        return original(node)

    return lower_operator


def _lower_head(original: Callable[[Any, list[Any]], Any]) -> Callable[[Any, list[Any]], Any]:
    def lower_head(head: Any, rest: list[Any]) -> Any:
        if _lower._cls(_lower._collapse(head)) == "ParenthesizedExpression":
            inner = _lower._unparenthesize(head)
            if _lower._cls(inner) == "PipeExpression":
                parts = _lower._rule_children(inner)
                return lower_head(parts[0], list(parts[1:]) + list(rest))
            if _lower._cls(inner) in ("UnionOperator", *_lower._NAME_KINDS):
                return lower_head(inner, rest)
        if _lower._cls(_lower._collapse(head)) == "SearchOperator":
            return _lower_search(_lower._collapse(head), rest)
        return original(head, rest)

    return lower_head


#: ``search`` terms: where the wildcards are -> the string operator Kusto applies.
_SEARCH_TERM_OPS = {
    (False, False): "has",
    (True, False): "hassuffix",
    (False, True): "hasprefix",
    (True, True): "contains",
}


def _search_term(term: str, case_sensitive: bool) -> ir.Expr:
    """One bare search term as the `* op "x"` test Kusto documents for it.

    ``err`` -> has, ``*err`` -> hassuffix, ``err*`` -> hasprefix, ``*err*`` ->
    contains, a ``*`` inside (``e*r``) -> matches regex.
    """
    inner = term[1 if term.startswith("*") else None : -1 if term.endswith("*") else None]
    if "*" in inner:
        pattern = ".*".join(re.escape(part) for part in term.split("*"))
        flags = "" if case_sensitive else "(?i)"
        return _StarMatch("matches regex", ir.Literal(flags + pattern, "string"))
    op = _SEARCH_TERM_OPS[(term.startswith("*"), term.endswith("*") and len(term) > 1)]
    return _StarMatch(op + ("_cs" if case_sensitive else ""), ir.Literal(inner, "string"))


def _search_predicate(expr: Any, case_sensitive: bool) -> Any:
    """A search predicate with its bare string terms turned into all-column tests."""
    if isinstance(expr, ir.Literal) and expr.kind == "string":
        return _search_term(str(expr.value), case_sensitive)
    if isinstance(expr, ir.BinaryOp) and expr.op in ("and", "or"):
        return dataclasses.replace(
            expr,
            left=_search_predicate(expr.left, case_sensitive),
            right=_search_predicate(expr.right, case_sensitive),
        )
    if isinstance(expr, ir.FunctionCall) and expr.name == "not" and len(expr.args) == 1:
        return dataclasses.replace(expr, args=(_search_predicate(expr.args[0], case_sensitive),))
    return expr


def _search_parts(node: Any) -> tuple[list[str], Any]:
    """``search [kind=...] [in (T, ...)] predicate`` -> (table sources, lowered predicate)."""
    case_sensitive = False
    sources: list[str] = []
    predicate = None
    for child in _lower._rule_children(node):
        kind = _lower._cls(child)
        if kind == "RelaxedQueryOperatorParameter":
            name, _, value = child.getText().partition("=")
            if name.lower() != "kind" or value.lower() not in (
                "default",
                "case_insensitive",
                "case_sensitive",
            ):
                raise _lower._unsupported(child, f"search {child.getText()}")
            case_sensitive = value.lower() == "case_sensitive"
        elif kind == "SearchOperatorInClause":
            sources = [s.getText() for s in _lower._find_all(child, "FindOperatorSource")]
        elif kind == "UnnamedExpression":
            predicate = _search_predicate(_lower._lower_expr(child), case_sensitive)
        elif kind == "StarExpression":  # `search *`: every row (of every table)
            predicate = ir.Literal(True, "bool")
        else:
            raise _lower._unsupported(child, f"search {child.getText()}")
    if predicate is None:
        raise _lower._unsupported(node, "search without a predicate")
    return sources, predicate


@dataclasses.dataclass(frozen=True)
class _SearchSource(ir.Source):
    """``search [in (T, A*)] predicate`` at the head of a query; resolved before emission.

    Kusto documents it as ``union withsource=$table T, A* | where predicate``.
    It is resolved, with the engine's table list, into that union with the
    ``where`` pushed into every branch: each table is then tested over its own
    columns only, instead of every row over the columns of all the tables.
    """

    patterns: tuple[str, ...]
    predicate: ir.Expr

    def resolve(self, schema: dict[str, list[str]], lets: set[str]) -> ir.Query:
        """The union, one filtered branch per table, ``$table`` first (as Kusto puts it).

        A wildcard matches tables only; a ``let`` takes part when named exactly.
        """
        tables = {name: columns for name, columns in schema.items() if name not in lets}
        names: list[str] = []
        for pattern in self.patterns:
            # A plain name is taken as written (an unknown one fails as a table reference).
            found = (
                [pattern]
                if "*" not in pattern
                else _schema.match_wildcard(ir.WildcardTableRef(pattern), tables)
            )
            names.extend(t for t in found if t not in names)
        branches = []
        for table in names:
            # A column the table lacks is null in the union Kusto filters, so it is null here.
            predicate = _nulls_for_missing(self.predicate, set(schema.get(table, ())))
            label = ir.NamedExpr(ir.Literal(table, "string"), "$table")
            branch = ir.Query(ir.TableRef(table), [ir.Where(predicate), ir.Extend((label,))])
            branches.append(_resolve_query(branch, schema))
        first, *others = branches
        reorder = _ColumnPlaceholder("project-reorder", (("$table", False, ""),))
        operators = [*first.operators, ir.Union(tuple(others), "outer", None, False), reorder]
        return ir.Query(first.source, operators)


def _nulls_for_missing(node: Any, columns: set[str]) -> Any:
    """*node* with references to columns not in *columns* replaced by null."""
    if isinstance(node, ir.ColumnRef):
        return node if node.name in columns else ir.Literal(None, "null")
    if isinstance(node, (_StarMatch, ir.Query)):
        return node  # a star covers the table's own columns; a subquery has its own input
    return _rebuilt(node, lambda n: _nulls_for_missing(n, columns))


def _lower_search(node: Any, rest: list[Any]) -> ir.Query:
    """``search ...`` at the head of a query (without ``in (...)``: every table)."""
    sources, predicate = _search_parts(node)
    return ir.Query(_SearchSource(tuple(sources or ["*"]), predicate), _lower._lower_operators(rest))


def _merged_case(columns: list[str]) -> list[str]:
    """Columns whose names differ only in case merged under the first spelling.

    Only for unions: their branches are different tables, and DuckDB's ``UNION
    ALL BY NAME`` already puts such columns in one (Azure's own schemas spell
    ``CallerIpAddress`` and ``CallerIPAddress`` in different tables). Kusto keeps
    both; here the values share one column (docs/engine.md, Known divergences).
    """
    seen: set[str] = set()
    out = []
    for column in columns:
        if column.casefold() not in seen:
            seen.add(column.casefold())
            out.append(column)
    return out


def _union_output_columns(original: Callable[..., list[str]]) -> Callable[..., list[str]]:
    def union_output_columns(op: ir.Union, left: list[str], schema: Any) -> list[str]:
        return _merged_case(original(op, left, schema))

    return union_output_columns


def _source_columns(original: Callable[..., list[str]]) -> Callable[..., list[str]]:
    def source_columns(source: ir.Source, schema: Any) -> list[str]:
        columns = original(source, schema)
        return _merged_case(columns) if isinstance(source, ir.WildcardTableRef) else columns

    return source_columns


def _column_refs(node: Any, found: set[str], other: list[str]) -> None:
    if isinstance(node, ir.ColumnRef):
        found.add(node.name)
    elif isinstance(node, (ir.LetRef, ir.RowContext, ir.Parameter)):
        other.append(type(node).__name__)
    elif isinstance(node, (list, tuple)):
        for item in node:
            _column_refs(item, found, other)
    elif dataclasses.is_dataclass(node) and not isinstance(node, type):
        for f in dataclasses.fields(node):
            _column_refs(getattr(node, f.name), found, other)


def _path_name(expr: Any) -> str | None:
    """``A.B.C`` (a column and property names only) -> ``A_B_C``, Kusto's name for an
    unnamed ``mv-expand`` of that path; None for any other expression."""
    if not isinstance(expr, ir.PathAccess) or not isinstance(expr.base, ir.ColumnRef):
        return None
    if not expr.steps or any(step.name is None for step in expr.steps):
        return None
    return "_".join([expr.base.name, *(str(step.name) for step in expr.steps)])


def _lower_path(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Paths with Kusto's legacy index step ``.[n]`` (``TargetResources.[0].displayName``).

    ``d.[0]`` is ``d[0]`` (and ``d.['a']`` is ``d.a``); duckdb-kql's grammar names
    that step apart and its lowering refused it. Paths without it take the original.
    """

    def lower_path(node: Any) -> Any:
        kids = _lower._rule_children(node)
        legacy = "LegacyFunctionCallOrPathElementOperation"
        if not any(_lower._cls(_lower._collapse(k)) == legacy for k in kids[1:]):
            return original(node)
        base = _lower._lower_expr(kids[0])
        steps: list[ir.PathStep] = []
        for op in kids[1:]:
            inner = _lower._collapse(op)
            kind = _lower._cls(inner)
            if kind == "FunctionCallOrPathPathOperation":  # `.name`, as duckdb-kql lowers it
                names = _lower._find_names(inner)
                if not names:
                    raise _lower._unsupported(inner, "path step")
                steps.append(ir.PathStep(name=names[0]))
                continue
            if kind not in (legacy, "FunctionCallOrPathElementOperation"):
                raise _lower._unsupported(inner, "path step")
            exprs = _lower._rule_children(inner)
            if not exprs:
                raise _lower._unsupported(inner, "path step")
            index = _lower._lower_expr(exprs[0])
            # `d['a']` (and `d.['a']`) is property access spelled with brackets.
            if isinstance(index, ir.Literal) and index.kind == "string":
                steps.append(ir.PathStep(name=str(index.value)))
            else:
                steps.append(ir.PathStep(index=index))
        return ir.PathAccess(base, tuple(steps))

    return lower_path


@dataclasses.dataclass(frozen=True)
class _LeadingSegment(ir.ParseSegment):
    """A ``parse`` pattern's leading column (``parse x with Name "/" *``): no literal before it.

    Kusto documents that a pattern may start with a column. It captures from the
    start of the text; `_parse_pattern` anchors it there, and `_refuse_empty_literal`
    lets its empty literal through (an empty literal anywhere else stays refused).
    """


_RE2_GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _parse_kind_and_expression(kids: list[Any]) -> tuple[str, str | None, Any, Any]:
    """``parse``'s kind, flags, expression and pattern nodes, read as duckdb-kql reads them."""
    kind, flags, expression, pattern = "simple", None, None, None
    for k in kids:
        cls = _lower._cls(k)
        if cls == "ParseOperatorKindClause":
            kind = k.getText().split("=", 1)[1].split("flags")[0].strip().lower()
            for f in _lower._rule_children(k):
                if _lower._cls(f) == "ParseOperatorFlagsClause":
                    flags = f.getText().split("=", 1)[1].strip()
        elif cls == "ParseOperatorPattern":
            pattern = k
        elif expression is None:
            expression = k
    return kind, flags, expression, pattern


def _lower_parse(original: Callable[..., Any]) -> Callable[..., Any]:
    """``parse`` with a leading column, and into names a regex group cannot carry.

    * ``parse x with Name "/" *``: Kusto documents that a pattern may start with a
      column; duckdb-kql refused it. It becomes a `_LeadingSegment`.
    * ``parse x with "a=" ["my col"]``: the captures are regex groups, whose names
      are letters, digits and ``_`` only; such a column is captured under an
      internal name and renamed back (``project-rename``) right after.
    """

    def lower_parse(node: Any, kids: list[Any], *, drop_unmatched: bool) -> Any:
        kind, flags, expression, pattern = _parse_kind_and_expression(kids)
        parts = _lower._rule_children(pattern) if pattern is not None else []
        if parts and _lower._cls(parts[0]) == "ParseOperatorNameAndOptionalType" and expression is not None:
            names = _lower._find_names(parts[0])
            if not names:
                raise _lower._unsupported(parts[0], "parse")
            col_type = next(
                (
                    t.getText().strip().lower()
                    for t in _lower._rule_children(parts[0])
                    if _lower._cls(t) == "ScalarType"
                ),
                None,
            )
            rest = parts[1:]
            if any(_lower._cls(p) != "ParseOperatorPatternSegment" for p in rest):
                raise _lower._unsupported(node, "parse")
            segments = [
                _LeadingSegment("", False, names[0], col_type),
                *(_lower._lower_parse_segment(p) for p in rest),
            ]
            consumed = "".join(p.getText() for p in parts)
            trailing_star = pattern.getText()[len(consumed) :].strip() == "*"
            op = ir.Parse(
                _lower._lower_expr(expression), tuple(segments), kind, flags, drop_unmatched, trailing_star
            )
        else:
            op = original(node, kids, drop_unmatched=drop_unmatched)
        if not isinstance(op, ir.Parse):
            return op
        renames = []
        segments = list(op.segments)
        for i, segment in enumerate(segments):
            if segment.name and not _RE2_GROUP_NAME.fullmatch(segment.name):
                internal = f"__ctirealm_parse_{i}"
                renames.append((internal, segment.name))
                segments[i] = dataclasses.replace(segment, name=internal)
        if not renames:
            return op
        return [dataclasses.replace(op, segments=tuple(segments)), ir.ProjectRename(tuple(renames))]

    return lower_parse


def _parse_pattern(original: Callable[[ir.Parse], str]) -> Callable[[ir.Parse], str]:
    """A pattern with a leading column is anchored at the start of the text (not in
    ``kind=regex``, which Kusto leaves unanchored)."""

    def parse_pattern(op: ir.Parse) -> str:
        pattern = original(op)
        if op.kind == "regex" or not (op.segments and isinstance(op.segments[0], _LeadingSegment)):
            return pattern
        flags = _translate._parse_flags(op)
        return flags + "^" + pattern[len(flags) :]

    return parse_pattern


def _refuse_empty_literal(original: Callable[[ir.Parse], None]) -> Callable[[ir.Parse], None]:
    def refuse_empty_literal(op: ir.Parse) -> None:
        if op.segments and isinstance(op.segments[0], _LeadingSegment):
            original(dataclasses.replace(op, segments=op.segments[1:]))
        else:
            original(op)

    return refuse_empty_literal


def _declare_let_function(original: Callable[..., None]) -> Callable[..., None]:
    """``let f = (x: timespan) { T | where ... }``: a tabular user-defined function.

    duckdb-kql substitutes scalar ``let`` functions into expressions and refused a
    tabular body; it does expand *stored* functions with tabular bodies where they
    are called (``f(1d) | count``, or a bare ``f`` when every parameter has a
    default), which is what a tabular ``let`` function is too. Such a declaration
    is registered as a stored function of this query, for the rest of it. A name
    the body does not bind is resolved where the function is called rather than
    where it is written, which differs only if a later ``let`` redefines it.
    """

    def declare_let_function(decl: Any, scalars: Any) -> None:
        try:
            original(decl, scalars)
        except KqlUnsupportedError as exc:
            if (
                exc.construct.startswith("let function:")
                and "binds a table" in (exc.hint or "")
                and _tabular_result(decl, scalars)
            ):
                # A body's local `let` of a table: duckdb-kql's scalar-function path stops
                # there; a tabular result makes it a stored function, which takes local lets.
                exc = KqlUnsupportedError(
                    exc.construct, span=exc.span, hint="a tabular body is not supported"
                )
            if (
                exc.construct.startswith("let function:")
                and "a tabular body is not supported" not in (exc.hint or "")
                and "Kusto" not in (exc.hint or "")
            ):
                # Valid Kusto (a body's local `let` of a table, say): say only this engine
                # lacks it.
                raise KqlUnsupportedError(
                    exc.construct,
                    span=exc.span,
                    hint=f"Kusto has such a function, the embedded engine does not implement it: {exc.hint}"
                    if exc.hint
                    else None,
                ) from None
            if not exc.construct.startswith("let function:") or "a tabular body is not supported" not in (
                exc.hint or ""
            ):
                raise
            scope = _lower._FN_STATE.get()
            if scope is None:
                raise
            name = exc.construct.split(":", 1)[1]
            functions = dict(scope.functions or {})
            functions[None] = {**functions.get(None, {}), name: _stored_function(name, decl)}
            scope.functions = functions

    return declare_let_function


#: Most function-call expansions one query may make. Each call of a tabular function is
#: expanded afresh, so ``let f1 = () { union f0(), f0() }; let f2 = ...`` doubles the work
#: with every level: twenty levels would translate for hours, before any time limit runs.
MAX_FUNCTION_EXPANSIONS = 128


def _expand(original: Callable[..., Any]) -> Callable[..., Any]:
    def expand(node: Any, function: Any, arg_nodes: list[Any]) -> Any:
        scope = _lower._FN_STATE.get()
        if scope is not None:
            state = vars(scope)  # duckdb-kql's scope of the statement: the count rides on it
            count = state.get("ctirealm_expansions", 0) + 1
            state["ctirealm_expansions"] = count
            if count > MAX_FUNCTION_EXPANSIONS:
                raise KqlUnsupportedError(
                    f"function:{function.name}",
                    hint=f"the query expands more than {MAX_FUNCTION_EXPANSIONS} calls of "
                    "user-defined functions; materialize a shared result in a `let` instead",
                )
        return original(node, function, arg_nodes)

    return expand


def _tabular_result(decl: Any, scalars: Any) -> bool:
    """Whether a ``let`` function's body ends in a tabular expression (its result)."""
    bodies = [k for k in _lower._rule_children(decl) if _lower._cls(k) == "LetFunctionBody"]
    if not bodies:
        return False
    last = [k for k in _lower._rule_children(bodies[0]) if _lower._cls(k) != "LetFunctionBodyStatement"]
    return bool(last) and _lower._is_tabular_value(_lower._collapse(last[-1]), scalars)


def _bind_stored_arguments(original: Callable[..., Any]) -> Callable[..., Any]:
    """Arguments of a call of a tabular function, named ones too: ``f('a', x = 'b')`` binds
    the positional arguments in order, then each named one to the parameter of its name
    (Kusto's named arguments); parameters left unbound take their defaults."""

    def bind(node: Any, function: Any, arg_nodes: list[Any]) -> Any:
        named_nodes = [a for a in arg_nodes if _lower._find_all(a, "NamedExpressionNameClause")]
        if not named_nodes:
            return original(node, function, arg_nodes)
        positional = [a for a in arg_nodes if a not in named_nodes]
        if arg_nodes[: len(positional)] != positional:
            raise KqlUnsupportedError(
                f"function:{function.name}",
                hint="the embedded engine takes named arguments after the positional ones",
            )
        scope = _lower._FN_STATE.get()
        scalars = scope.scalars if scope is not None else {}
        parameters = _lower._stored_parameters(function)
        names = [p for p, _ in parameters]
        if len(positional) > len(parameters):
            return original(node, function, arg_nodes)  # its arity error
        # Lowered in the caller's scope, as duckdb-kql lowers positional arguments.
        binding = {
            name: _lower._substitute(_lower._lower_expr(arg), scalars)
            for name, arg in zip(names, positional, strict=False)
        }
        bound = set(names[: len(positional)])
        for arg in named_nodes:
            named = _lower._lower_named(arg)
            if named.name not in names:
                raise KqlSchemaError(
                    named.name or function.name,
                    hint=(
                        f"{function.name}() has no parameter of that name; its parameters are "
                        f"{', '.join(names)}"
                    ),
                )
            if named.name in bound:
                raise KqlSchemaError(named.name, hint=f"{function.name}(): the parameter is given twice")
            bound.add(named.name)
            binding[named.name] = _lower._substitute(named.expr, scalars)
        for parameter, default in parameters:
            if parameter not in bound:
                if default is None:
                    raise KqlSchemaError(
                        parameter,
                        hint=f"{function.name}(): the parameter "
                        "has no default and no argument (Kusto: SEM0219)",
                    )
                binding[parameter] = default
        return binding

    return bind


def _stored_function(name: str, decl: Any) -> Any:
    from duckdb_kql.stored_functions import StoredFunction

    text = decl.getText()
    return StoredFunction(
        name=name,
        database=None,
        parameters="",
        body=text,
        folder="",
        docstring="",
        command=text,
        declaration=decl,
    )


def _lower_mv_expand_target(
    original: Callable[[Any], Any],
) -> Callable[[Any], Any]:
    def lower_target(node: Any) -> Any:
        try:
            target, prelude = original(node)
        except KqlUnsupportedError as exc:
            if exc.construct != "mv-expand of an unnamed computed expression":
                raise
            to_type, named = None, node
            for k in _lower._rule_children(node):
                if _lower._cls(k) == "MvapplyOperatorExpressionToClause":
                    to_type = k.getText().lower().partition("typeof(")[2].rstrip(")").strip()
                elif _lower._cls(k) == "NamedExpression":
                    named = k
            target = _lower._lower_named(named)
            path = _path_name(target.expr)
            if path is not None:  # `mv-expand A.B`: Kusto names the column A_B
                return ir.MvExpandTarget(path, None, to_type), ir.NamedExpr(target.expr, path)
            columns: set[str] = set()
            other: list[str] = []
            _column_refs(target.expr, columns, other)
            if not isinstance(target.expr, ir.FunctionCall) or len(columns) != 1 or other:
                raise
            name = next(iter(columns))
            return ir.MvExpandTarget(name, None, to_type), ir.NamedExpr(target.expr, name)
        if prelude is None and target.name not in (None, target.column):
            # `mv-expand x = l` is `extend x = l | mv-expand x` (duckdb-kql's own reading of
            # a computed target): then `l` may be a scalar `let` (`dynamic([...])`), which the
            # `let` substitution reaches in an `extend` and not in a target's column name.
            return (
                ir.MvExpandTarget(target.name, None, target.to_type),
                ir.NamedExpr(ir.ColumnRef(target.column), target.name),
            )
        return target, prelude

    return lower_target


def _inspect(node: Any) -> bool:
    """Whether *node* holds a placeholder; refuses references to other databases.

    The engine's world is the store's tables: ``database("x").T`` (DuckDB's own
    catalogs included) is refused rather than resolved.
    """
    if isinstance(
        node,
        (
            _ColumnPlaceholder,
            _StarMatch,
            _SearchSource,
            _BagUnpack,
            _Pivot,
            _LetCount,
            _As,
            _MvApplySummarize,
        ),
    ):
        return True
    if isinstance(node, ir.FunctionCall) and node.name == "column_ifexists":
        return True
    if READ_TYPES.get() is not None and _type_probe(node):
        return True
    if isinstance(node, ir.TableRef) and node.database is not None:
        raise KqlUnsupportedError(
            f"database({node.database!r})",
            hint="this engine has one database; name its tables directly",
        )
    if isinstance(node, (list, tuple)):
        return any([_inspect(n) for n in node])
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return any([_inspect(getattr(node, f.name)) for f in dataclasses.fields(node)])
    return False


def _resolve(node: Any, schema: dict[str, list[str]]) -> Any:
    if isinstance(node, ir.Query):
        return _resolve_query(node, schema)
    return _rebuilt(node, lambda n: _resolve(n, schema))


def _resolve_query(query: ir.Query, schema: dict[str, list[str]]) -> ir.Query:
    from duckdb_kql.schema import output_columns

    query = _split_as_all(query)
    scope = dict(schema)
    lets: list[tuple[str, Any]] = []
    for name, bound in query.lets:
        bound = _resolve(bound, scope)
        lets.append((name, bound))
        if isinstance(bound, ir.Query):
            with contextlib.suppress(KqlError):
                scope[name] = output_columns(bound, scope)
    source = query.source
    if isinstance(source, _SearchSource):
        searched = source.resolve(scope, {name for name, _ in query.lets})
        query = dataclasses.replace(
            query, source=searched.source, operators=[*searched.operators, *query.operators]
        )
    source = _resolve(query.source, scope)
    operators: list[ir.Operator] = []
    pending = list(query.operators)
    while pending:
        op = _resolve(pending.pop(0), scope)
        if isinstance(op, _MvApplySummarize):  # its operators may hold placeholders too
            pending[0:0] = op.resolve(output_columns(ir.Query(source, list(operators)), scope))
            continue
        if isinstance(op, _ColumnPlaceholder):
            columns = output_columns(ir.Query(source, list(operators)), scope)
            operators.extend(op.resolve(columns))
            continue
        if isinstance(op, (_BagUnpack, _Pivot)):
            operators.extend(op.resolve(query, source, operators, scope))
            continue
        if isinstance(op, _LetCount):
            operators.append(op.resolve())
            continue
        expanded = _expand_stars(op, [])
        if expanded is not op:  # the operator reads `*`: expand it over its input columns
            columns = output_columns(ir.Query(source, list(operators)), scope)
            op = _expand_stars(op, columns, _input_types(query, source, operators))
        operators.append(_with_operand_types(op, query, source, operators, scope))
    return dataclasses.replace(query, lets=lets, source=source, operators=operators)


#: Column types of the engine's tables (``{table: {column: kusto_type}}``) while a query is
#: translated, when the engine knows them; see `_input_types`.
COLUMN_TYPES: contextvars.ContextVar[Mapping[str, Mapping[str, str]] | None] = contextvars.ContextVar(
    "ctirealm_column_types", default=None
)


def _input_types(query: ir.Query, source: ir.Source, operators: list[ir.Operator]) -> dict[str, str] | None:
    """The column types of an operator's input, when it is still a table's own rows.

    Known only for a table (not a ``let`` of the same name) followed by operators
    that keep its columns as they are (``where``, ``take``, ``sort``).
    """
    types = COLUMN_TYPES.get()
    if types is None or not isinstance(source, ir.TableRef) or source.database is not None:
        return None
    if source.name in {name for name, _ in query.lets}:
        return None
    if not all(isinstance(op, (ir.Where, ir.Take, ir.Sort)) for op in operators):
        return None
    return dict(types.get(source.name) or {}) or None


#: Reads the types of a query's result columns on the engine's connection without running it:
#: ``(sql, parameters) -> {column: kusto_type}``. Set by the engine while it translates; None
#: elsewhere, where the rewrites that depend on an operand's type (`_typed`) leave it as written.
READ_TYPES: contextvars.ContextVar[Callable[[str, dict[str, Any]], dict[str, str]] | None] = (
    contextvars.ContextVar("ctirealm_read_types", default=None)
)
_PROBE = "__ctirealm_probe_"
#: Aggregates whose rendering depends on the argument's type: Kusto sums timespans to a
#: timespan, which DuckDB's ``sum`` refuses (no ``sum(INTERVAL)``).
_TYPED_SUMS = {"sum": SUM_TIMESPAN, "sumif": SUMIF_TIMESPAN}
#: A ``dynamic`` operand of datetime or timespan arithmetic is converted to the other side's
#: type (Kusto's analyzer types ``dynamic - datetime`` as a timespan, ``dynamic + timespan`` too).
_DYNAMIC_AS = {"datetime": "todatetime", "timespan": "totimespan"}


def _may_be_dynamic(node: Any) -> bool:
    return isinstance(node, (ir.ColumnRef, ir.PathAccess))


def _type_probe(node: Any) -> bool:
    """Whether *node*'s rendering depends on an operand's type: ``sum``/``sumif`` of anything
    but a literal, or ``+``/``-`` with a column or path on one side and no literal but a
    datetime or timespan."""
    if isinstance(node, ir.FunctionCall) and node.name in _TYPED_SUMS:
        return bool(node.args) and not isinstance(node.args[0], ir.Literal)
    if isinstance(node, ir.BinaryOp) and node.op in ("+", "-"):
        sides = (node.left, node.right)
        return any(_may_be_dynamic(s) for s in sides) and not any(
            isinstance(s, ir.Literal) and s.kind not in _DYNAMIC_AS for s in sides
        )
    return False


def _probes(node: Any, found: list[Any]) -> None:
    """The operands whose types `_typed` needs, in *node* (not inside nested queries)."""
    if isinstance(node, ir.Query):
        return
    if _type_probe(node):
        found.extend(node.args[:1] if isinstance(node, ir.FunctionCall) else (node.left, node.right))
    if isinstance(node, (list, tuple)):
        for item in node:
            _probes(item, found)
    elif dataclasses.is_dataclass(node) and not isinstance(node, type):
        for f in dataclasses.fields(node):
            _probes(getattr(node, f.name), found)


def _operand_types(
    query: ir.Query,
    source: ir.Source,
    operators: list[ir.Operator],
    schema: dict[str, list[str]],
    probes: list[Any],
) -> list[str | None]:
    """The Kusto type of each probe over the rows reaching the operator, as the engine's
    DuckDB binds them (`READ_TYPES`); None for each where the engine cannot say."""
    read = READ_TYPES.get()
    if read is None or not probes:
        return [None] * len(probes)
    extend = ir.Extend(tuple(ir.NamedExpr(p, f"{_PROBE}{i}") for i, p in enumerate(probes)))
    prefix_query = ir.Query(source, [*operators, extend], lets=list(query.lets))
    token = READ_TYPES.set(None)  # the prefix's own operators are typed already
    try:
        sql = _translate.to_sql(prefix_query, schema)
    except KqlError:
        return [None] * len(probes)
    finally:
        READ_TYPES.reset(token)
    parameters = dict(getattr(sql, "parameters", None) or {})
    active = _translate._ACTIVE_CLOCK_STATE.get()
    if f"${_translate.CLOCK_SLOT}" in sql and active is not None and active.moment:
        parameters[_translate.CLOCK_SLOT] = active.moment
    try:
        types = read(str(sql), parameters)
    except Exception:  # a prefix that does not bind: the whole query reports it
        return [None] * len(probes)
    return [types.get(f"{_PROBE}{i}") for i in range(len(probes))]


def _typed(node: Any, types: Mapping[int, str | None]) -> Any:
    """*node* with ``sum``/``sumif`` of a timespan as the timespan sums, and a ``dynamic``
    operand of datetime/timespan ``+``/``-`` converted (*types*: probe id -> Kusto type)."""
    if isinstance(node, ir.Query):
        return node
    # The probes are the original operands: their types are looked up before rebuilding.
    rebuilt = _rebuilt(node, lambda n: _typed(n, types))
    if isinstance(node, ir.FunctionCall) and node.name in _TYPED_SUMS and node.args:
        if types.get(id(node.args[0])) == "timespan":
            return dataclasses.replace(rebuilt, name=_TYPED_SUMS[node.name])
    if isinstance(node, ir.BinaryOp) and node.op in ("+", "-"):
        left, right = types.get(id(node.left)), types.get(id(node.right))
        if left == "dynamic" and right in _DYNAMIC_AS:
            return dataclasses.replace(rebuilt, left=ir.FunctionCall(_DYNAMIC_AS[right], (rebuilt.left,)))
        if right == "dynamic" and left in _DYNAMIC_AS:
            return dataclasses.replace(rebuilt, right=ir.FunctionCall(_DYNAMIC_AS[left], (rebuilt.right,)))
    return rebuilt


def _with_operand_types(
    op: Any, query: ir.Query, source: ir.Source, operators: list[ir.Operator], schema: dict[str, list[str]]
) -> Any:
    """*op* written for its operands' types where Kusto's meaning depends on them (`_typed`)."""
    if READ_TYPES.get() is None:
        return op
    probes: list[Any] = []
    _probes(op, probes)
    if not probes:
        return op
    found = _operand_types(query, source, operators, schema, probes)
    return _typed(op, {id(p): t for p, t in zip(probes, found, strict=True)})


def _canonical_names(node: Any) -> Any:
    """*node* with Kusto's deprecated function spellings replaced by the functions they
    stand for (``makeset`` -> ``make_set``), so every rule duckdb-kql keys on a
    function's name (``arg_max``'s several columns, default column names) applies."""
    if isinstance(node, ir.FunctionCall):
        target = DEPRECATED_ALIASES.get(node.name)
        args = _rebuilt(node.args, _canonical_names)
        if target is None and args is node.args:
            return node
        return ir.FunctionCall(target or node.name, args)
    return _rebuilt(node, _canonical_names)


#: The suffix of the internal name a column is carried under when its name differs only
#: in case from another (``User`` -> ``User__ctirealm_0``); `_restore_names` removes it.
_CASE_SUFFIX = "__ctirealm_"


def _introduced_names(node: Any, out: list[str], refs: list[str]) -> None:
    """Column names *node* creates (in order) into *out*, and the names it reads into *refs*."""
    if isinstance(node, ir.ColumnRef):
        refs.append(node.name)
        return
    if isinstance(node, (ir.Literal, ir.TableRef, ir.PathStep)):
        return
    if isinstance(node, ir.NamedExpr) and node.name:
        out.append(node.name)
    elif isinstance(node, ir.ProjectRename):
        out.extend(new for _, new in node.renames)
        refs.extend(old for old, _ in node.renames)
    elif isinstance(node, ir.MvExpandTarget) and node.name:
        out.append(node.name)
    elif isinstance(node, (ir.MvExpand)) and node.item_index:
        out.append(node.item_index)
    elif isinstance(node, ir.ParseSegment) and node.name:
        out.append(node.name)
    elif isinstance(node, (ir.Count, ir.RangeSource)):
        out.append(node.name)
    elif isinstance(node, ir.DataTable):
        out.extend(name for name, _ in node.columns)
    elif isinstance(node, ir.Union) and node.with_source:
        out.append(node.with_source)
    if isinstance(node, (list, tuple)):
        for item in node:
            _introduced_names(item, out, refs)
    elif dataclasses.is_dataclass(node) and not isinstance(node, type):
        for f in dataclasses.fields(node):
            _introduced_names(getattr(node, f.name), out, refs)


def _case_renames(query: ir.Query, schema: Mapping[str, Any]) -> dict[str, str]:
    """``{spelling: internal}`` for the names a query creates that differ only in case
    from another name it uses (``print user = 1, User = 2``).

    Kusto keeps such columns apart; DuckDB's identifiers are case-insensitive. A
    table's own spelling is never renamed (nor is a name only read), so errors and
    unions of tables read as before; a created name that collides is carried under
    an internal name nothing else can spell, and results get the original back.
    """
    created: list[str] = []
    refs: list[str] = []
    _introduced_names(query, created, refs)
    stored = {c for columns in (schema or {}).values() for c in columns}
    first: dict[str, str] = {}
    for name in [*sorted(stored), *refs, *created]:
        first.setdefault(name.casefold(), name)
    spellings: dict[str, set[str]] = {}
    for name in [*stored, *refs, *created]:
        spellings.setdefault(name.casefold(), set()).add(name)
    renames: dict[str, str] = {}
    for name in dict.fromkeys(created):
        if name in stored or len(spellings[name.casefold()]) < 2:
            continue
        if first[name.casefold()] == name and not (spellings[name.casefold()] & stored):
            continue  # the first spelling keeps its name; the others move
        renames[name] = f"{name}{_CASE_SUFFIX}{len(renames)}"
    return renames


def _renamed_columns(node: Any, renames: Mapping[str, str]) -> Any:
    """*node* with every column name in *renames* (created, read, listed) replaced."""

    def new(name: str) -> str:
        return renames.get(name, name)

    def new_optional(name: str | None) -> str | None:
        return renames.get(name, name) if name is not None else None

    if isinstance(node, ir.ColumnRef):
        return ir.ColumnRef(renames[node.name]) if node.name in renames else node
    if isinstance(node, (ir.Literal, ir.TableRef, ir.PathStep)):
        return node
    node = _rebuilt(node, lambda n: _renamed_columns(n, renames))
    if isinstance(node, ir.NamedExpr) and node.name in renames:
        return dataclasses.replace(node, name=new_optional(node.name))
    if isinstance(node, ir.ProjectRename):
        return dataclasses.replace(node, renames=tuple((new(a), new(b)) for a, b in node.renames))
    if isinstance(node, ir.ProjectAway):
        return dataclasses.replace(node, columns=tuple(new(c) for c in node.columns))
    if isinstance(node, ir.MvExpandTarget):
        return dataclasses.replace(node, column=new(node.column), name=new_optional(node.name))
    if isinstance(node, ir.MvExpand):
        return dataclasses.replace(node, item_index=new_optional(node.item_index))
    if isinstance(node, ir.JoinKey):
        return dataclasses.replace(node, left=new(node.left), right=new(node.right))
    if isinstance(node, ir.ParseSegment):
        return dataclasses.replace(node, name=new_optional(node.name))
    if isinstance(node, (ir.Count, ir.RangeSource)):
        return dataclasses.replace(node, name=new(node.name))
    if isinstance(node, ir.DataTable):
        return dataclasses.replace(node, columns=tuple((new(n), t) for n, t in node.columns))
    if isinstance(node, ir.Union):
        return dataclasses.replace(node, with_source=new_optional(node.with_source))
    if isinstance(node, _ColumnPlaceholder):
        return dataclasses.replace(
            node, items=tuple((p if wild else new(p), wild, order) for p, wild, order in node.items)
        )
    return node


#: series_stats's columns and the conversion each statistic gets (Kusto types them).
_SERIES_STATS_TYPES = {
    "min": "todouble",
    "min_idx": "tolong",
    "max": "todouble",
    "max_idx": "tolong",
    "avg": "todouble",
    "stdev": "todouble",
    "variance": "todouble",
}


def _expanded_series_stats(node: Any) -> Any:
    """``extend series_stats(x)`` / ``project series_stats(x)`` unnamed: one column per
    statistic, ``series_stats_x_min``, ..., ``series_stats_x_variance``, as Kusto names
    them, each read from ``series_stats_dynamic(x)``."""
    from duckdb_kql.translate.naming import expression_name

    node = _rebuilt(node, _expanded_series_stats)
    if not isinstance(node, (ir.Extend, ir.Project)):
        return node
    out: list[ir.NamedExpr] = []
    for named in node.expressions:
        call = named.expr
        if not (isinstance(call, ir.FunctionCall) and call.name == "series_stats"):
            out.append(named)
            continue
        base = expression_name(call.args[0]) if call.args else None
        if named.name is not None or base is None:
            raise KqlUnsupportedError(
                "function:series_stats",
                hint="use it unnamed over a column (`extend series_stats(x)`), or "
                "series_stats_dynamic(x) for a bag of the statistics",
            )
        bag = ir.FunctionCall("series_stats_dynamic", call.args)
        out.extend(
            ir.NamedExpr(
                ir.FunctionCall(convert, (ir.PathAccess(bag, (ir.PathStep(name=stat),)),)),
                f"series_stats_{base}_{stat}",
            )
            for stat, convert in _SERIES_STATS_TYPES.items()
        )
    return dataclasses.replace(node, expressions=tuple(out))


def _multi_outputs(name: str) -> tuple[tuple[str, str], ...] | None:
    """The (column, type) outputs of a Kusto function returning several columns."""
    from ctirealm.engine.series import OUTPUTS

    if name == "series_stats":
        return tuple(
            (stat, "long" if convert == "tolong" else "real") for stat, convert in _SERIES_STATS_TYPES.items()
        )
    return OUTPUTS.get(name)


def _lower_named(original: Callable[[Any], ir.NamedExpr]) -> Callable[[Any], ir.NamedExpr]:
    """``(a, b, c) = f(x)`` of a function returning several columns keeps every name."""

    def lower_named(node: Any) -> ir.NamedExpr:
        named = original(node)
        call = named.expr
        if not (isinstance(call, ir.FunctionCall) and _multi_outputs(call.name)):
            return named
        inner = _lower._collapse(node)
        kids = _lower._rule_children(inner)
        if len(kids) != 2 or _lower._cls(kids[0]) != "NamedExpressionNameClause":
            return named
        names = _lower._find_names(kids[0])
        if len(names) < 2:
            return named
        literals = tuple(ir.Literal(n, "string") for n in names)
        return ir.NamedExpr(ir.FunctionCall(MULTI_NAMES, (call, *literals)), names[0])

    return lower_named


def _multi_columns(
    named: ir.NamedExpr,
    keep_rest: bool,
    bag: str,
) -> list[ir.NamedExpr] | None:
    """The columns `named` stands for, read from the bag column *bag*; None when it is not a
    call of a multi-column function written as Kusto expands it (unnamed, or a name list)."""
    from duckdb_kql.translate.naming import expression_name

    call = named.expr
    names: list[str] = []
    if isinstance(call, ir.FunctionCall) and call.name == MULTI_NAMES:
        names = [str(a.value) for a in call.args[1:] if isinstance(a, ir.Literal)]
        call = call.args[0]
    elif named.name is not None:
        return None
    if not isinstance(call, ir.FunctionCall):
        return None
    outputs = _multi_outputs(call.name)
    if not outputs or (not names and call.name == "series_stats"):
        return None  # unnamed series_stats: `_expanded_series_stats`
    if len(names) > len(outputs):
        raise KqlUnsupportedError(
            f"function:{call.name}", hint=f"it returns {len(outputs)} columns; {len(names)} names were given"
        )
    base = expression_name(call.args[0]) if call.args else None
    if (not names or keep_rest) and base is None:
        raise KqlUnsupportedError(
            f"function:{call.name}",
            hint="name its columns (`(a, b) = f(x)`) when its argument is not a column",
        )
    columns = []
    for i, (key, kusto_type) in enumerate(outputs):
        if i < len(names):
            name = names[i]
        elif not names or keep_rest:
            name = f"{call.name}_{base}_{key}"
        else:
            break
        value: ir.Expr = ir.PathAccess(ir.ColumnRef(bag), (ir.PathStep(name=key),))
        if kusto_type != "dynamic":
            value = ir.FunctionCall("todouble" if kusto_type == "real" else "tolong", (value,))
        columns.append(ir.NamedExpr(value, name))
    return columns


def _bag_of(call: ir.FunctionCall) -> ir.Expr:
    if call.name == MULTI_NAMES:
        call = call.args[0]  # type: ignore[assignment]
    if call.name == "series_stats":
        return ir.FunctionCall("series_stats_dynamic", call.args)
    return ir.FunctionCall(SERIES_BAG, (ir.Literal(call.name, "string"), *call.args))


def _expanded_multi(node: Any) -> Any:
    """Functions returning several columns (``series_fit_line``, ``series_decompose_anomalies``,
    ``series_stats`` with names, ...) in ``extend`` and ``project``, as Kusto documents
    (https://learn.microsoft.com/kusto/query/series-fit-2lines-function): unnamed, every
    column as ``f_x_column``; ``(a, b) = f(x)``, the first columns under those names, and
    in ``project`` the others under their default names. The function runs once per row:
    its bag of outputs is extended under an internal name, read, then dropped."""
    if not isinstance(node, ir.Query):
        return _rebuilt(node, _expanded_multi)
    node = _rebuilt(node, _expanded_multi)
    operators: list[Any] = []
    changed = False
    for op in node.operators:
        if not isinstance(op, (ir.Extend, ir.Project)):
            operators.append(op)
            continue
        bags: list[ir.NamedExpr] = []
        out: list[ir.NamedExpr] = []
        for named in op.expressions:
            bag = f"__ctirealm_bag_{len(bags)}"
            columns = _multi_columns(named, isinstance(op, ir.Project), bag)
            if columns is None:
                out.append(named)
                continue
            assert isinstance(named.expr, ir.FunctionCall)
            bags.append(ir.NamedExpr(_bag_of(named.expr), bag))
            out.extend(columns)
        if not bags:
            operators.append(op)
            continue
        changed = True
        operators.append(ir.Extend(tuple(bags)))
        operators.append(dataclasses.replace(op, expressions=tuple(out)))
        if isinstance(op, ir.Extend):
            operators.append(ir.ProjectAway(tuple(b.name for b in bags if b.name)))
    return dataclasses.replace(node, operators=operators) if changed else node


#: Functions over serialized rows (the row before, after, the row's number).
_WINDOW_FUNCTIONS = frozenset({"prev", "next", "row_number", "row_cumsum"})


def _has_window(node: Any) -> bool:
    if isinstance(node, ir.FunctionCall) and node.name in _WINDOW_FUNCTIONS:
        return True
    if isinstance(node, ir.Query):
        return False
    return any(_has_window(n) for n in _children(node))


def _windowed(node: Any, keys: tuple[ir.SortKey, ...]) -> Any:
    """*node* with its ``prev``/``next``/``row_number``/``row_cumsum`` calls over *keys*."""
    if isinstance(node, ir.Query):
        return node
    node = _rebuilt(node, lambda n: _windowed(n, keys))
    if not (isinstance(node, ir.FunctionCall) and node.name in _WINDOW_FUNCTIONS):
        return node
    if (node.name == "row_number" and len(node.args) > 1) or (
        node.name == "row_cumsum" and len(node.args) > 1
    ):
        raise KqlUnsupportedError(
            f"function:{node.name}",
            hint="Kusto has the restart argument; the embedded engine does not implement it",
        )
    if node.name in ("prev", "next") and len(node.args) > 1 and not isinstance(node.args[1], ir.Literal):
        raise KqlUnsupportedError(f"function:{node.name}", hint="an offset that is not a literal")
    flat: list[ir.Expr] = []
    for key in keys:
        nulls = None if key.nulls_first is None else bool(key.nulls_first)
        flat.extend(
            (
                key.expr,
                ir.Literal(bool(key.ascending), "bool"),
                ir.Literal(nulls, "bool") if nulls is not None else ir.Literal(None, "null"),
            )
        )
    return ir.FunctionCall(
        WINDOW,
        (
            ir.Literal(node.name, "string"),
            ir.Literal(len(node.args), "long"),
            ir.Literal(len(keys), "long"),
            *node.args,
            *flat,
        ),
    )


def _serialized_functions(node: Any) -> Any:
    """``prev``, ``next``, ``row_number`` and ``row_cumsum`` (Kusto: over serialized rows,
    https://learn.microsoft.com/kusto/query/serialize-operator) as SQL window functions.

    The rows' order is the last ``sort``/``order by``/``top`` before them, which
    ``where``, ``extend``, ``serialize``, ``take`` and a ``project`` keeping the sort
    columns preserve; with no such sort (``T | serialize``), the order the rows arrive
    in, which Kusto does not define either. In ``where``, the condition is extended
    first and filtered on (SQL takes no window function in WHERE).
    """
    if not isinstance(node, ir.Query):
        return _rebuilt(node, _serialized_functions)
    node = _rebuilt(node, _serialized_functions)
    if not _has_window(node.operators):
        return node
    keys: tuple[ir.SortKey, ...] = ()
    operators: list[Any] = []
    for op in node.operators:
        if _has_window(op):
            if isinstance(op, ir.Where):
                flag = f"__ctirealm_serial_{len(operators)}"
                operators.append(ir.Extend((ir.NamedExpr(_windowed(op.predicate, keys), flag),)))
                operators.append(ir.Where(ir.ColumnRef(flag)))
                operators.append(ir.ProjectAway((flag,)))
                if keys:  # window functions leave the rows in any order: sorted again
                    operators.append(ir.Sort(keys))
                continue
            if not isinstance(op, (ir.Extend, ir.Project)):
                raise KqlUnsupportedError(
                    "function:prev", hint="prev, next and row_number are taken in extend, project and where"
                )
            op = _windowed(op, keys)
            if keys and isinstance(op, ir.Extend):
                operators.extend((op, ir.Sort(keys)))
                continue
        operators.append(op)
        if isinstance(op, (ir.Sort, ir.Top)):
            keys = tuple(op.keys) if isinstance(op, ir.Sort) else tuple(getattr(op, "keys", ()) or ())
        elif isinstance(op, ir.Project):
            kept = {
                n.name or getattr(n.expr, "name", None)
                for n in op.expressions
                if n.name is None or (isinstance(n.expr, ir.ColumnRef) and n.expr.name == n.name)
            }
            used: set[str] = set()
            for key in keys:
                _column_refs(key.expr, used, [])
            if not used <= kept:
                keys = ()
        elif not isinstance(op, (ir.Where, ir.Extend, ir.Take)):
            keys = ()
    return dataclasses.replace(node, operators=operators)


_ARG_EXTREME_PREFIX = {"arg_max": "max_", "arg_min": "min_"}


def _expanded_percentiles(aggregates: tuple[ir.NamedExpr, ...]) -> list[ir.NamedExpr]:
    """``percentiles(x, 50, 95)`` unnamed: one ``percentile(x, p)`` per percentage, named
    ``percentile_x_50``, ``percentile_x_95`` by duckdb-kql's rule, as Kusto names them."""
    out: list[ir.NamedExpr] = []
    for named in aggregates:
        call = named.expr
        if (
            isinstance(call, ir.FunctionCall)
            and call.name == "percentiles"
            and named.name is None
            and len(call.args) >= 2
        ):
            out.extend(
                ir.NamedExpr(ir.FunctionCall("percentile", (call.args[0], p)), None) for p in call.args[1:]
            )
        else:
            out.append(named)
    return out


def _is_constant(expr: Any) -> bool:
    """An expression reading no column and calling no aggregate (``""``, ``strcat("a", k)``
    of a `let` ``k``)."""
    columns: set[str] = set()
    _column_refs(expr, columns, [])
    return not columns and not _calls_aggregate(expr)


def _calls_aggregate(node: Any) -> bool:
    if isinstance(node, ir.FunctionCall) and (
        node.name.lower() in _functions_table().AGGREGATE_FUNCTIONS
        or node.name.lower() in _ARG_EXTREME_PREFIX
    ):
        return True
    if isinstance(node, ir.Query):
        return False
    return any(_calls_aggregate(n) for n in _children(node))


def _computed_arg_extremes(node: Any) -> Any:
    """``summarize arg_max(expr, ...)`` where *expr* is computed, not a column.

    duckdb-kql maximises columns only. The expression is computed first by an
    ``extend`` under an internal name and maximised as a column; unnamed, the
    output column is then renamed to Kusto's name for it, ``max_`` (``min_`` for
    ``arg_min``), as duckdb-kql's authors measured.
    """
    if isinstance(node, ir.Query):
        node = _rebuilt(node, _computed_arg_extremes)
        operators: list[Any] = []
        changed = False
        for op in node.operators:
            if not isinstance(op, ir.Summarize):
                operators.append(op)
                continue
            extends: list[ir.NamedExpr] = []
            renames: list[tuple[str, str]] = []
            aggregates: list[ir.NamedExpr] = []
            for named in _expanded_percentiles(op.aggregates):
                call = named.expr
                if named.name is not None and _is_constant(call):
                    # `summarize z = ""`: Kusto takes a constant as a column of every group.
                    aggregates.append(dataclasses.replace(named, expr=ir.FunctionCall("take_any", (call,))))
                    continue
                if not (
                    isinstance(call, ir.FunctionCall)
                    and call.name in _ARG_EXTREME_PREFIX
                    and len(call.args) >= 2
                ):
                    aggregates.append(named)
                    continue
                args = list(call.args)
                # A returned path (`x.reason`) is extended first; Kusto names it `x_reason`.
                for i, arg in enumerate(args[1:], start=1):
                    path = _path_name(arg)
                    if path is not None:
                        internal = f"__ctirealm_arg_{len(extends)}"
                        extends.append(ir.NamedExpr(arg, internal))
                        args[i] = ir.ColumnRef(internal)
                        renames.append((internal, path))
                if not isinstance(call.args[0], ir.ColumnRef):
                    internal = f"__ctirealm_arg_{len(extends)}"
                    extends.append(ir.NamedExpr(call.args[0], internal))
                    args[0] = ir.ColumnRef(internal)
                    if named.name is None:
                        renames.append((internal, _ARG_EXTREME_PREFIX[call.name]))
                aggregates.append(dataclasses.replace(named, expr=ir.FunctionCall(call.name, tuple(args))))
            if not extends:
                if tuple(aggregates) != tuple(op.aggregates):
                    changed = True
                    op = dataclasses.replace(op, aggregates=tuple(aggregates))
                operators.append(op)
                continue
            if len({new for _, new in renames}) != len(renames):
                raise KqlUnsupportedError(
                    "summarize",
                    hint="name the computed arg_max/arg_min results apart "
                    "(`(m, x) = arg_max(...)`): Kusto gives both the same default name",
                )
            changed = True
            operators.append(ir.Extend(tuple(extends)))
            operators.append(dataclasses.replace(op, aggregates=tuple(aggregates)))
            if renames:
                operators.append(ir.ProjectRename(tuple(renames)))
        return dataclasses.replace(node, operators=operators) if changed else node
    return _rebuilt(node, _computed_arg_extremes)


def _restore_names(sql: Any) -> Any:
    """The statement *sql* with the query's own names on its result columns.

    DuckDB keeps ``user`` and ``User`` apart in a final select list, only not in
    the query's scopes; every result column is selected once more, its name
    without the internal suffix (also inside a default name, ``sum_User__ctirealm_0``).
    """
    text = (
        f"SELECT COLUMNS('^(.*?){_CASE_SUFFIX}[0-9]+(.*)$|^(.*)$') AS '\\1\\2\\3' "
        f"FROM ({sql}) AS _ctirealm_names"
    )
    restored = type(sql)(text)
    restored.__dict__.update(getattr(sql, "__dict__", {}))
    return restored


def _parse_text(original: Callable[[str], Any]) -> Callable[[str], Any]:
    """duckdb-kql's parser, given the text with `text.rewrite_text`'s spellings (same
    length and line breaks, so positions in errors still point into the query).

    It calls the parser module's ``parse`` as it is at call time, so that `speed`'s memo of
    parsed texts serves translation and every other reader of the same query alike.
    """

    def parse(kql: str) -> Any:
        return _parser.parse(rewrite_text(kql) if isinstance(kql, str) else kql)

    return parse


#: The tables of the catalogue the query is translated against (the top-level ``to_sql``'s
#: schema), which ``union *`` reads: duckdb-kql adds each tabular ``let`` to the schema it
#: passes down, and a wildcard then matched the ``let`` names too.
_CATALOGUE: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar(
    "ctirealm_catalogue", default=None
)


def _match_wildcard(original: Callable[..., list[str]]) -> Callable[..., list[str]]:
    """``union *`` (and ``T*``) over tables only: Kusto's wildcard never reads a ``let``
    (``let a = union * | ...; let b = union * | ...; a | join b ...`` read ``a`` as a table)."""

    def match_wildcard(source: Any, schema: Any) -> list[str]:
        catalogue = _CATALOGUE.get()
        if catalogue is None or schema is None:
            return original(source, schema)
        tables = {k: v for k, v in dict(schema).items() if k in catalogue}
        return original(source, tables)

    return match_wildcard


def _emit(original: Callable[..., Any]) -> Callable[..., Any]:
    def to_sql(query: ir.Query, schema: Any = None) -> Any:
        if _CATALOGUE.get() is None and schema is not None:
            token = _CATALOGUE.set(frozenset(dict(schema)))
            try:
                return to_sql(query, schema)
            finally:
                _CATALOGUE.reset(token)
        if _translate._NAMES_STATE.get() is None:
            query = _serialized_functions(
                _expanded_series_stats(_expanded_multi(_computed_arg_extremes(_canonical_names(query))))
            )
            renames = _case_renames(query, dict(schema or {}))
            if renames:
                query = _renamed_columns(query, renames)
            if _inspect(query):
                query = _resolve_query(query, dict(schema or {}))
            if renames:
                return _restore_names(original(query, schema))
        return original(query, schema)

    return to_sql


def _kql_tostring(original: Callable[[ir.Expr], str]) -> Callable[[ir.Expr], str]:
    """``tostring`` (and ``strcat``, ``strcat_delim``, ...) of an array or bag computed in SQL
    as its JSON text: Kusto's ``tostring(split("a,b", ","))`` is ``["a","b"]``, where
    DuckDB's cast of a list gives ``[a, b]`` (and of a struct ``{'k': 1}``).

    duckdb-kql dispatches on the operand's run-time ``typeof``, ending with a plain cast;
    lists, structs and maps get ``to_json`` there instead (it binds for every type)."""

    def render(node: ir.Expr) -> str:
        text = original(node)
        rendered = _translate.render_expr(node)
        tail = f" ELSE CAST({rendered} AS VARCHAR) END, '')"
        if not text.endswith(tail):
            return text
        kind = f"typeof({rendered})"
        composite = (
            f" ELSE CASE WHEN {kind} LIKE '%[]' OR {kind} LIKE 'STRUCT(%' OR {kind} LIKE 'MAP(%'"
            f" THEN CAST(to_json({rendered}) AS VARCHAR) ELSE CAST({rendered} AS VARCHAR) END END, '')"
        )
        return text[: -len(tail)] + composite

    return render


#: duckdb-kql attributes replaced by `install`: (module, attribute, original -> replacement).
_WAVE_HINT = "not implemented in this wave"


def _kusto_spelling(node: Any, what: str | None) -> str:
    """How a refusal names what Kusto has: the operator's keyword (and plugin), else "it"."""
    kind = _lower._cls(node)
    if what not in (None, kind) or not kind.endswith(("Operator", "OperatorPart")):
        return "it"
    keyword = str(getattr(getattr(node, "start", None), "text", "") or "").lower()
    if not re.fullmatch(r"[a-z][a-z-]*", keyword):
        return "it"
    if keyword == "evaluate":
        calls = _lower._find_all(node, "NamedFunctionCallExpression")
        kids = _lower._rule_children(calls[0]) if calls else []
        if kids:
            return f"the plugin 'evaluate {kids[0].getText()}'"
    return f"the operator '{keyword}'"


def _unsupported(original: Callable[..., KqlUnsupportedError]) -> Callable[..., Any]:
    """duckdb-kql's refusal of a construct it has not implemented, worded for the reader:
    the query is valid Kusto, and only this engine lacks the construct (its hint spoke of
    duckdb-kql's own development waves)."""

    def unsupported(node: Any, what: str | None = None) -> KqlUnsupportedError:
        error = original(node, what)
        if error.hint is None or not error.hint.startswith(_WAVE_HINT):
            return error
        near = error.hint[len(_WAVE_HINT) :].lstrip("; ")
        # A parameter or kind duckdb-kql does not know may be a typo Kusto refuses too.
        doubtful = what is not None and re.search(r"parameter|kind:", what) is not None
        claim = "" if doubtful else f"Kusto has {_kusto_spelling(node, what)}, "
        hint = f"{claim}the embedded engine does not implement it" + (f"; {near}" if near else "")
        return KqlUnsupportedError(error.construct, span=error.span, hint=hint)

    return unsupported


def _summarize_parameter(original: Callable[..., None]) -> Callable[..., None]:
    """``summarize hint.strategy = partitioned`` accepted as the no-op it is on one node.

    duckdb-kql takes ``shuffle`` alone; Azure Monitor's own example queries use
    ``partitioned`` (a distribution hint, which cannot change the result)."""

    def check(node: Any, by: list[ir.NamedExpr]) -> None:
        name, _, value = node.getText().partition("=")
        if name.strip().lower() == "hint.strategy" and value.strip().strip("'\"").lower() == "partitioned":
            return None
        return original(node, by)

    return check


PATCHES: list[tuple[Any, str, Callable[[Any], Any]]] = [
    (_lower, "parse", _parse_text),
    (_lower, "_lower_operator", _lower_operator),
    (_lower, "_lower_head", _lower_head),
    (_lower, "_lower_mv_expand_target", _lower_mv_expand_target),
    (_lower, "_lower_expr", _lower_expr),
    (_lower, "_lower_named", _lower_named),
    (_lower, "_lower_path", _lower_path),
    (_lower, "_lower_parse", _lower_parse),
    (_lower, "_declare_let_function", _declare_let_function),
    (_lower, "_expand", _expand),
    (_translate, "_parse_pattern", _parse_pattern),
    (_translate, "_refuse_empty_literal", _refuse_empty_literal),
    (_lower, "_substitute_once", _substitute_once),
    (_lower, "_substitute_operator", _substitute_operator),
    (_lower, "_bind_stored_arguments", _bind_stored_arguments),
    (_translate, "to_sql", _emit),
    (_translate, "render_kql_tostring", _kql_tostring),
    (_translate, "_TIMESPAN_RETURNING", lambda original: original | {TIMESPAN_DIV}),
    (_schema, "union_output_columns", _union_output_columns),
    (_schema, "match_wildcard", _match_wildcard),
    (_schema, "_source_columns_unchecked", _source_columns),
    (_lower, "_unsupported", _unsupported),
    (_lower, "_check_summarize_parameter", _summarize_parameter),
]
