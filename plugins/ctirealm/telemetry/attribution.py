"""Tracing query result rows to the stored events they show, by id column.

A result row names an event when it carries the id column of a table the query
reads, by name (``ReportId``) or join-suffixed (``ReportId1``), holding an id of
that table's events. A value in such a column that is no event id of the tables
read (an aggregate, a made-up number) names nothing. Tables sharing an id column
(``AuditId`` in AKSAudit and AKSAuditAdmin) are told apart by preference (the
events a caller expects), then by the labels. Detection scoring and the rules
gate both attribute rows this way; what they make of the events differs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from . import memo
from .labels import Labels
from .schema import TableSchema

_SUFFIX = re.compile(r"^(.*?)(\d+)$")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Ids looked up per query when checking that unlabelled values are events.
_CHUNK = 5000


def canonical(value: Any) -> str:
    """A value as comparable text: strings stripped, structures as sorted compact JSON."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    if hasattr(value, "isoformat"):
        from .values import to_json_value

        return str(to_json_value(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def tables_in(kql: str, known: Iterable[str]) -> list[str]:
    """The tables of *known* that *kql* reads, in the order of *known*.

    Resolved with the KQL grammar's parser (duckdb-kql's ANTLR parser of
    Microsoft's ``Kql.g4``), so a name counts where the grammar puts a table:
    the head of a pipeline, bare or bracket-quoted (``['T']``, ``["T"]``),
    ``table("T")``, ``union`` operands (``union withsource=S T*`` matches the
    wildcard against *known*), the right side of ``join`` and ``lookup``,
    ``search``/``find in (T, ...)`` (without ``in``: every table), and ``let``
    names bound to a table or a pipeline (``let x = T | ...; x | ...`` reads
    ``T``; a ``let`` never used reads nothing). Names in string literals and
    comments never count.

    Only when the query does not parse does this fall back to the older regular
    expression: identifiers outside string literals and comments that equal a
    known name (so a bracket-quoted name is missed there).
    """
    known = list(known)
    refs = _references(kql)
    if refs is None:
        return _tables_by_regex(kql, known)
    return [t for t in known if any(_matches(ref, t) for ref in refs)]


def _tables_by_regex(kql: str, known: list[str]) -> list[str]:
    """The fallback for a query that does not parse: identifiers outside literals and comments."""
    text = re.sub(r"//[^\n]*", " ", kql)
    text = re.sub(r'@?"(?:[^"\\\n]|\\.)*"|@?\'(?:[^\'\\\n]|\\.)*\'', " ", text)
    names = set(_IDENT.findall(text))
    return [t for t in known if t in names]


def _matches(ref: str, table: str) -> bool:
    """A reference (a name, or a ``union``/``search`` wildcard like ``Device*``) names *table*."""
    if "*" not in ref:
        return ref == table
    return re.fullmatch(".*".join(re.escape(part) for part in ref.split("*")), table) is not None


@lru_cache(maxsize=2048)
def _references(kql: str) -> frozenset[str] | None:
    """Table names and wildcards *kql* reads (``let`` names resolved); None if it does not parse.

    Remembered across runs in the engine's memo (parsing is the cost), when one is in use.
    """
    disk = memo.current()
    if disk is not None:
        known = disk.get("tables", kql)
        if known is not memo.MISS:
            return known
    found = _parsed_references(kql)
    if disk is not None:
        disk.put("tables", kql, found)
    return found


def _parsed_references(kql: str) -> frozenset[str] | None:
    from duckdb_kql.errors import KqlError
    from duckdb_kql.parser import parse

    try:
        tree = parse(_table_calls_as_names(kql)).tree
        if tree is None:  # a control command: reads no table
            return frozenset()
        return frozenset(_TableWalk().statements(tree))
    except (KqlError, RecursionError):  # nested past what the parser or the walk can follow
        return None


def _table_calls_as_names(kql: str) -> str:
    """``table("T")`` rewritten as the bracket-quoted name ``["T"]``, which the grammar parses.

    Done on the lexer's tokens, so a ``table(...)`` inside a string literal or a
    comment is left alone.
    """
    if "table" not in kql.lower():
        return kql
    from antlr4 import InputStream, Token
    from duckdb_kql._antlr.KqlLexer import KqlLexer

    lexer = KqlLexer(InputStream(kql))
    lexer.removeErrorListeners()
    tokens = [t for t in lexer.getAllTokens() if t.channel == Token.DEFAULT_CHANNEL]
    edits: list[tuple[int, int, str]] = []
    for i in range(len(tokens) - 3):
        a, b, c, d = tokens[i : i + 4]
        if (
            a.type == KqlLexer.TABLE
            and b.type == KqlLexer.OPENPAREN
            and c.type == KqlLexer.STRINGLITERAL
            and d.type == KqlLexer.CLOSEPAREN
        ):
            edits.append((a.start, d.stop + 1, f"[{c.text}]"))
    for start, stop, text in reversed(edits):
        kql = kql[:start] + text + kql[stop:]
    return kql


def _kind(node: Any) -> str:
    return type(node).__name__.removesuffix("Context")


def _rules(node: Any) -> list[Any]:
    """A parse-tree node's children that are grammar rules (not tokens)."""
    return [c for c in (getattr(node, "children", None) or []) if hasattr(c, "getRuleIndex")]


def _collapse(node: Any) -> Any:
    """Down through rules that wrap exactly one child rule and nothing else."""
    while True:
        children = getattr(node, "children", None) or []
        if len(children) != 1 or not hasattr(children[0], "getRuleIndex"):
            return node
        node = children[0]


def _string_value(text: str) -> str:
    """The value of a KQL string literal token (``'a'``, ``"a"``, ``@'a'``, ``h"a"``)."""
    text = text.lstrip("hH")
    if text.startswith("@"):
        quote = text[1]
        return text[2:-1].replace(quote * 2, quote)
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), body)


def _name(node: Any) -> str | None:
    """The name a collapsed node spells (identifier, keyword or ``['quoted']``), else None."""
    kind = _kind(node)
    if kind in ("IdentifierName", "KeywordName", "ExtendedKeywordName"):
        return str(node.getText())
    if kind == "EscapedName":
        literals = [c for c in _rules(node) if _kind(c) == "StringLiteralExpression"]
        return _string_value(literals[0].getText()) if literals else None
    if kind == "WildcardedName":
        return str(node.getText())
    return None


class _TableWalk:
    """Collects the tables a parse tree reads; ``let`` names are resolved in a scope.

    A name counts only where the grammar puts a table (``source``); everywhere
    else (``walk``) only subqueries are looked into, so a column is never taken
    for a table.
    """

    #: Operands that are tables: ``union A, B*``, ``search in (A)``, ``find in (A)``.
    _TABULAR_OPERANDS = ("UnionOperatorExpression", "FindOperatorSource")
    #: Operators with a table on their right side: ``join (B)``, ``lookup B``.
    _RIGHT_SIDE = ("JoinOperator", "LookupOperator")
    #: Operators that read every table when no ``in (...)`` names some.
    _EVERYTHING = ("SearchOperator", "FindOperator")

    def __init__(self) -> None:
        self.scope: dict[str, frozenset[str]] = {}

    def statements(self, node: Any) -> set[str]:
        """What the statements under *node* read, in order; ``let`` statements bind names."""
        out: set[str] = set()
        for child in _rules(node):
            kind = _kind(child)
            if kind == "LetStatement":
                self._bind(child)
            elif kind in ("QueryStatement", "Expression"):
                out |= self.source(child)
            elif kind in ("Query", "Statement", "LetFunctionBodyStatement"):
                out |= self.statements(child)
            else:
                out |= self.walk(child)
        return out

    def _bind(self, statement: Any) -> None:
        """``let name = <tabular or scalar expression>`` / ``let f = (...) { body }``."""
        for declaration in _rules(statement):
            parts = _rules(declaration)
            name = _name(_collapse(parts[0])) if parts else None
            if name is None:
                continue
            saved = dict(self.scope)
            reads: set[str] = set()
            for part in parts[1:]:
                if _kind(part) == "LetFunctionBody":
                    reads |= self.statements(part)
                elif not _kind(part).endswith("ParameterList"):
                    reads |= self.source(part)
            self.scope = saved
            self.scope[name] = frozenset(reads)

    def _resolve(self, name: str) -> set[str]:
        return set(self.scope.get(name, (name,)))

    def source(self, node: Any) -> set[str]:
        """*node* stands where a table goes: a name there is a table or a ``let``."""
        inner = _collapse(node)
        name = _name(inner)
        if name is not None:
            return self._resolve(name)
        kind = _kind(inner)
        if kind == "PipeExpression":
            head, *rest = _rules(inner)
            return self.source(head).union(*(self.walk(part) for part in rest))
        if kind in ("ParenthesizedExpression", "QueryStatement", "Expression"):
            return set().union(*(self.source(c) for c in _rules(inner)))
        if kind == "NamedFunctionCallExpression":  # a let function: `f()`
            parts = _rules(inner)
            callee = _name(_collapse(parts[0])) if parts else None
            reads = self._resolve(callee) if callee in self.scope else set()
            return reads.union(*(self.walk(p) for p in parts[1:]))
        if kind in self._EVERYTHING and not _descendants(inner, "FindOperatorSource"):
            return {"*"} | self.walk(inner)
        return self.walk(inner)

    def walk(self, node: Any) -> set[str]:
        """Tables read by the subqueries under *node*; a bare name here is a column."""
        kind = _kind(node)
        if kind == "PipeExpression":
            head, *rest = _rules(node)
            # Only a tabular expression has pipes: `(X)` in a predicate is a column.
            first = self.source(head) if rest else self.walk(head)
            return first.union(*(self.walk(part) for part in rest))
        if kind in self._TABULAR_OPERANDS:
            return self.source(node)
        if kind == "LetStatement":
            self._bind(node)
            return set()
        name = _name(node)
        if name is not None:  # a column, or a `let` (`toscalar(T | ...)`) used as a scalar
            return set(self.scope.get(name, ()))
        out: set[str] = set()
        for child in _rules(node):
            if kind in self._RIGHT_SIDE and _kind(child) == "UnnamedExpression":
                out |= self.source(child)
            else:
                out |= self.walk(child)
        return out


def _descendants(node: Any, kind: str) -> bool:
    """Whether a rule of *kind* occurs under *node*."""
    return any(_kind(c) == kind or _descendants(c, kind) for c in _rules(node))


def id_families(schemas: Mapping[str, TableSchema]) -> dict[str, list[str]]:
    """Id column name -> the tables that use it, in name order."""
    families: dict[str, list[str]] = {}
    for name, schema in sorted(schemas.items()):
        families.setdefault(schema.id_column, []).append(name)
    return families


def id_columns(columns: Iterable[str], families: Mapping[str, list[str]]) -> dict[str, str]:
    """Result column -> the id column it holds (``ReportId1`` -> ``ReportId``)."""
    out = {}
    for column in columns:
        if column in families:
            out[column] = column
            continue
        match = _SUFFIX.match(column)
        if match and match.group(1) in families:
            out[column] = match.group(1)
    return out


def fetch_events(
    engine: Any,
    schemas: Mapping[str, TableSchema],
    ids: Mapping[str, Iterable[str]],
    *,
    ids_only: bool = False,
) -> list[dict[str, Any]]:
    """The rows of the given events (``{table: ids}``), each with ``__table__``/``__id__``."""
    rows = []
    for table, wanted in sorted(ids.items()):
        schema = schemas[table]
        is_number = schema.type_of(schema.id_column) in ("long", "int")
        values = tuple(w for w in wanted if w.lstrip("-").isdigit()) if is_number else tuple(wanted)
        if not values:
            continue
        lookup = getattr(engine, "lookup", None)
        if callable(lookup):  # an engine that binds the ids instead of parsing a KQL list
            result = lookup(table, list(values), ids_only=ids_only)
        else:
            literals = ", ".join(
                w if is_number else "'" + w.replace("\\", "\\\\").replace("'", "\\'") + "'" for w in values
            )
            project = f" | project {schema.id_column}" if ids_only else ""
            result = engine.query(
                f"{table} | where {schema.id_column} in ({literals}){project}", limit=len(values) + 1
            )
        for row in result.to_dicts():
            row["__table__"], row["__id__"] = table, canonical(row[schema.id_column])
            rows.append(row)
    return rows


@dataclass
class Traced:
    """Rows traced to events: the id columns found, and per row the ``(table, id)`` it names."""

    #: The tables read, and those of them whose id column the result carries.
    tables: list[str]
    traceable: list[str]
    #: Result column -> the id column it holds.
    id_columns: dict[str, str]
    events: list[list[tuple[str, str]]]

    def by_table(self) -> dict[str, list[str]]:
        """Every named event id, by table, in first-seen order."""
        out: dict[str, list[str]] = {}
        for row in self.events:
            for table, event_id in row:
                ids = out.setdefault(table, [])
                if event_id not in ids:
                    ids.append(event_id)
        return out


def trace(
    kql: str,
    columns: list[str],
    rows: list[dict[str, Any]],
    engine: Any,
    schemas: Mapping[str, TableSchema],
    labels: Labels,
    *,
    prefer: Iterable[tuple[str, str]] = (),
    tables: list[str] | None = None,
    verify: bool = True,
) -> Traced:
    """Which events each of *rows* (the result of *kql*, with *columns*) names.

    Only the id columns of tables the query reads (or of *tables*) count: a
    SigninLogs row's ``CorrelationId`` is not a StorageBlobLogs event id. An id
    shared by tables goes to a *preferred* ``(table, id)`` first, then to a
    table whose labels know it, then to the first table holding it. With
    *verify* false, unlabelled values are not looked up in the store (for
    results too large to check): each is taken as an event of the first table
    of its id column.
    """
    read = tables if tables is not None else tables_in(kql, schemas)
    families = id_families({t: schemas[t] for t in read})
    found = id_columns(columns, families)
    preferred = set(prefer)
    stored = _stored_ids(engine, schemas, rows, found, families, labels) if verify else None
    events: list[list[tuple[str, str]]] = []
    # Each table's labels read directly: a match-everything query traces a million rows.
    marked = {t: labels.events.get(t, {}) for tables in families.values() for t in tables}
    for row in rows:
        named: list[tuple[str, str]] = []
        for column, family in found.items():
            value = row.get(column)
            if value is None:
                continue
            key = canonical(value)
            tables = families[family]
            labelled = [
                t for t in tables if (entry := marked[t].get(key)) is not None and entry["kind"] != "benign"
            ]
            holding = labelled or (
                tables[:1] if stored is None else [t for t in tables if (t, key) in stored]
            )
            if not holding:
                continue  # a value in an id-named column that is no event of the tables read
            wanted = [t for t in tables if (t, key) in preferred]
            event = ((wanted or holding)[0], key)
            if event not in named:
                named.append(event)
        events.append(named)
    held = set(found.values())
    return Traced(read, [t for t in read if schemas[t].id_column in held], found, events)


def _stored_ids(
    engine: Any,
    schemas: Mapping[str, TableSchema],
    rows: list[dict[str, Any]],
    found: dict[str, str],
    families: Mapping[str, list[str]],
    labels: Labels,
) -> set[tuple[str, str]]:
    """``(table, id)`` for the unlabelled result values that are events of a table read."""
    wanted: dict[str, set[str]] = {}
    for row in rows:
        for column, family in found.items():
            value = row.get(column)
            if value is None:
                continue
            key = canonical(value)
            if all(labels.kind(t, key) == "benign" for t in families[family]):
                wanted.setdefault(family, set()).add(key)
    stored: set[tuple[str, str]] = set()
    for family, keys in wanted.items():
        ordered = sorted(keys)
        for table in families[family]:
            for start in range(0, len(ordered), _CHUNK):
                chunk = ordered[start : start + _CHUNK]
                for row in fetch_events(engine, schemas, {table: chunk}, ids_only=True):
                    stored.add((table, row["__id__"]))
    return stored
