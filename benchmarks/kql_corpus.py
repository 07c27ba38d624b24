"""How much real-world KQL the local engine runs: a measurement over a public hunting-query corpus.

The corpus (``{source_path, query, tables, license}`` per line) holds 1,476 public
hunting and example queries. Each query in scope is measured in three tiers,
once with duckdb-kql as shipped and once with the engine's rewrites
(``ctirealm.engine.rewrite``):

* **Tier A, the store.** Queries reading only the benchmark's 12 tables run on a
  telemetry store with those tables (``rows=0`` by default: empty tables with
  full schemas, enough to measure translation and binding). The corpus turns
  out to hold no such query, so tiers B and C carry the measurement.
* **Tier B, translation.** Every query in scope is translated to SQL by the
  engine's own translation path. Tables outside the 12 get a stand-in column
  list (every identifier the query mentions except its ``let`` names), so
  ``join``/``union``/``lookup`` column rules resolve: the measure is which KQL
  *constructs* the engine understands, whatever tables a query reads.
* **Tier C, execution.** Every query tier B translated runs on empty tables: the
  12 with their real schemas, stand-ins with columns typed by name (a column
  the 12 schemas know keeps its type, ``*Time``/``*Date``/``Timestamp`` is a
  datetime), then by use (a column the query sums, averages, multiplies or
  divides is ``real``), anything else ``dynamic``. This is the share that "runs
  without error"; bind errors on a JSON operand mostly come from a guessed type
  and are also reported apart. A stand-in has no column named as a ``let`` (same
  case) or as ``union withsource=``'s column, which no real table has either.

With ``--analyzer``, Microsoft's KQL analyzer (``tests/interop``, installed by ``make
kql-analyzer``; needs node) checks every query in scope against the same typed tables
tier C runs it on, and one more row gives tier C over the queries it accepts: the
denominator of "queries Microsoft's analyzer accepts against our schemas".

Out of scope, counted with a reason: text that is not a KQL query (workbook
JSON, template placeholders), data from outside the store (``externaldata``,
watchlists, other workspaces or clusters), stored functions and parsers of the
authors' own workspace.

Several queries pasted into one file (a Sentinel and an Advanced Hunting version
one after the other) are split where the parser finds a new statement at the
start of a line after a blank or comment line, and measured as separate queries.

Usage::

    python benchmarks/kql_corpus.py --corpus public_hunting_queries.jsonl
    python benchmarks/kql_corpus.py --corpus ... --json figures.json --show 'ProjectReorder'
    python benchmarks/kql_corpus.py --corpus ... --analyzer
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb_kql

from ctirealm.engine import EngineError, LocalEngine
from ctirealm.engine import rewrite as engine_rewrite
from ctirealm.engine.local import translate_kql

# Tier B translates without an engine, so the rewrites are installed here, not by a LocalEngine.
engine_rewrite.install()

ROOT = Path(__file__).resolve().parents[1]
#: The corpus file: ``--corpus``, else ``$CTIREALM_KQL_CORPUS``.
CORPUS_ENV = "CTIREALM_KQL_CORPUS"

TABLES = frozenset(
    {
        "DeviceProcessEvents",
        "DeviceFileEvents",
        "AKSAudit",
        "AKSAuditAdmin",
        "AzureActivity",
        "AzureDiagnostics",
        "SigninLogs",
        "AADServicePrincipalSignInLogs",
        "AuditLogs",
        "MicrosoftGraphActivityLogs",
        "OfficeActivity",
        "StorageBlobLogs",
    }
)

#: (pattern over the query with comments removed, reason). First match wins.
OUT_OF_SCOPE: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\A\s*[{\[]"), "not a query: workbook or JSON text"),
    (re.compile(r"\{[A-Za-z_][\w:.-]*\}"), "not a query: template placeholder {...}"),
    (re.compile(r"\bexternal_?data\b", re.I), "externaldata: reads a URL"),
    (re.compile(r"\b_GetWatchlist\b"), "watchlist (_GetWatchlist): workspace data"),
    (
        re.compile(r"\b(?:workspace|app|cluster|adx|arg)\s*\(", re.I),
        "cross-resource query: workspace()/app()/cluster()",
    ),
    (re.compile(r"\b_(?:ASim|Im)_?\w*|\bim[A-Z]\w+\s*\(", re.I), "ASIM parser: workspace function"),
    (re.compile(r"\binvoke\s+(?!\w+\s*\(\s*\)\s*$)"), "invoke of a stored function"),
]

#: Stored functions of other workspaces seen in the corpus (no definition in the query).
FOREIGN_FUNCTIONS = frozenset(
    {
        "FileProfile",
        "DeviceFromIP",
        "SeenBy",
        "AssignedIPAddresses",
        "AccountInfo",
    }
)

_COMMENT = re.compile(r"//[^\n]*")
_IDENT = re.compile(r"(?<![\w.$])[A-Za-z_][\w]*")


def strip_comments(text: str) -> str:
    """Remove ``//`` comments outside string literals (good enough to classify text)."""
    out, i, quote = [], 0, ""
    while i < len(text):
        ch = text[i]
        if quote:
            out.append(ch)
            if ch == "\\" and quote in "'\"" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"`":
            quote = ch
            out.append(ch)
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = len(text) if j < 0 else j
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def split_queries(text: str) -> list[str]:
    """Split a file holding several queries, at statements the parser finds after the end."""
    parts: list[str] = []
    rest = text
    for _ in range(20):
        diagnostics = duckdb_kql.validate(rest) if rest.strip() else []
        if not diagnostics:
            break
        first = diagnostics[0]
        lines = rest.split("\n")
        line = first.span.line - 1
        before = [ln.strip() for ln in lines[max(0, line - 1) : line]]
        starts_statement = (
            "expecting {<EOF>, ';'}" in first.message
            and first.span.column == 0
            and line > 0
            and all(not b or b.startswith("//") for b in before)
        )
        if not starts_statement:
            break
        parts.append("\n".join(lines[:line]))
        rest = "\n".join(lines[line:])
    parts.append(rest)
    return [p for p in parts if strip_comments(p).strip()]


_QUERY_START = re.compile(
    r"^\s*(?:let|print|datatable|union|search|range|declare|set|find|evaluate|\(|[A-Za-z_][\w.]*\s*$)",
    re.I,
)


def out_of_scope(query: str) -> str | None:
    """Why *query* cannot be measured against this engine's world, or None."""
    code = strip_comments(query)
    if "|" not in code and not _QUERY_START.match(code):
        return "not a query: prose or command lines"
    for pattern, reason in OUT_OF_SCOPE:
        if pattern.search(code):
            return reason
    for name in FOREIGN_FUNCTIONS:
        if re.search(rf"\b{name}\s*\(", code):
            return f"stored function {name}(): workspace function"
    return None


def tables_read(query: str, listed: list[str]) -> set[str]:
    """Tables a query reads: the corpus' own list plus any of the 12 named in the text."""
    code = strip_comments(query)
    found = {t for t in listed}
    found |= {t for t in TABLES if re.search(rf"(?<![\w.]){t}\b", code)}
    return found


_SOURCE_POSITION = re.compile(
    r"(?:^|[(=,;]|\b(?:union|join|lookup)\b(?:\s+\w+\s*=\s*\w+)*)\s*([A-Za-z_]\w*)\b",
    re.M,
)


def stand_in_schema(query: str, listed: list[str], real: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The 12 real schemas, plus a stand-in column list for every other table the query names.

    Candidate tables are the corpus' own list and every identifier in a source
    position (line start, after ``(``, ``=``, ``,``, ``union``, ``join``,
    ``lookup``). A stand-in table has every identifier of the query as a column.
    """
    code = strip_comments(query)
    columns = _stand_in_columns(query)
    schema = dict(real)
    folded = {name.lower() for name in schema}
    for name in [*listed, *_SOURCE_POSITION.findall(code)]:
        if name.lower() not in folded and name[:1].isupper():
            schema[name] = columns
            folded.add(name.lower())
    return schema


@dataclass
class Outcome:
    """One query measured in one tier and one mode (duckdb-kql alone, or with the rewrites)."""

    source: str
    query: str
    tier: str
    mode: str
    ok: bool
    kind: str = ""
    construct: str = ""
    message: str = ""

    @property
    def typing_artefact(self) -> bool:
        """A tier C bind failure on a JSON operand: a stand-in column's guessed type, probably."""
        return self.tier == "C" and not self.ok and "JSON" in self.message


MODES = ("baseline", "rewrites")


@dataclass
class Report:
    """Everything one run measured."""

    total_texts: int = 0
    queries: int = 0
    out_of_scope: Counter[str] = field(default_factory=Counter)
    outcomes: list[Outcome] = field(default_factory=list)
    #: (source, query) -> the typed tables of tier C, for the analyzer (``--analyzer``).
    typed: dict[tuple[str, str], dict[str, list[tuple[str, str]]]] = field(default_factory=dict)
    #: (source, query) -> whether Microsoft's analyzer accepts it; empty without ``--analyzer``.
    analyzer: dict[tuple[str, str], bool] = field(default_factory=dict)

    def tier(self, name: str, mode: str = "rewrites") -> list[Outcome]:
        return [o for o in self.outcomes if o.tier == name and o.mode == mode]


def _construct(exc: EngineError) -> str:
    construct = exc.construct or ""
    if not construct:
        construct = re.sub(r"\d+", "N", exc.message)[:70]
    return construct


_LET_NAME = re.compile(r"\blet\s+([A-Za-z_]\w*)\s*=")
#: The column ``union withsource=X`` adds: no table has it (a stand-in that did clashed).
_WITHSOURCE = re.compile(r"\bwithsource\s*=\s*([A-Za-z_]\w*)", re.I)


def _stand_in_columns(query: str) -> list[str]:
    """Every identifier of the query, except the names its ``let`` statements bind and the
    columns ``union withsource=`` makes."""
    code = strip_comments(query)
    # Kusto's names are case-sensitive: `let subject = ...` leaves a column `Subject` a column.
    bound = {*_LET_NAME.findall(code), *_WITHSOURCE.findall(code)}
    out: dict[str, str] = {}
    for name in _IDENT.findall(code):
        if name not in bound:
            out.setdefault(name.lower(), name)  # DuckDB folds case: one spelling per name
    return list(out.values())


def measure(corpus: Path, store_path: Path, *, now: Any, show: str | None = None) -> Report:
    """Run the three tiers over *corpus*, without and with the rewrites."""
    report = Report()
    engine = LocalEngine.open(store_path, timeout=10.0)
    real = {t: [c for c, _ in engine.schema(t)] for t in engine.tables()}
    types = {c.lower(): k for t in engine.tables() for c, k in engine.schema(t)}
    for line in corpus.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        report.total_texts += 1
        for query in split_queries(record["query"]):
            report.queries += 1
            reason = out_of_scope(query)
            if reason:
                report.out_of_scope[reason] += 1
                continue
            tables = tables_read(query, record.get("tables") or [])
            schema = stand_in_schema(query, record.get("tables") or [], real)
            measured: list[Outcome] = []
            for mode in MODES:
                context = engine_rewrite.disabled() if mode == "baseline" else nullcontext()
                with context:
                    measured.extend(
                        _measure_one(
                            record["source_path"],
                            query,
                            mode,
                            tables,
                            schema,
                            engine,
                            real,
                            types,
                            now,
                        )
                    )
            reason = next((r for o in measured if o.tier == "B" and (r := _not_measurable(o, real))), None)
            if reason:
                report.out_of_scope[reason] += 1
                continue
            report.outcomes.extend(measured)
            report.typed[(record["source_path"], query)] = stand_in_types(query, schema, real, types)
            if show:
                for o in measured:
                    if not o.ok and (show in o.message or show in f"{o.kind}: {o.construct}"):
                        print(f"--- [{o.tier} {o.mode}] {record['source_path']}\n{o.message}\n{query}\n")
    engine.close()
    return report


def _measure_one(
    source: str,
    query: str,
    mode: str,
    tables: set[str],
    schema: dict[str, list[str]],
    engine: LocalEngine,
    real: Mapping[str, list[str]],
    types: Mapping[str, str],
    now: Any,
) -> list[Outcome]:
    # Tier B has no data: `evaluate bag_unpack` and `pivot`, whose columns are values in
    # the data, translate as over data without any (tier C reads them from its empty tables).
    out = [
        _run(
            source,
            query,
            "B",
            mode,
            lambda q: translate_kql(
                q,
                schema=schema,
                now=now,
                read_distinct=lambda sql, parameters, column, kind: [],
                engine_functions=True,
            ),
        )
    ]
    if out[0].ok:
        out.append(
            _run(source, query, "C", mode, lambda q: _execute_on_stand_ins(q, schema, real, types, now))
        )
    if tables and tables <= TABLES:
        out.append(_run(source, query, "A", mode, lambda q: engine.query(q, limit=10)))
    return out


def _run(source: str, query: str, tier: str, mode: str, action: Any) -> Outcome:
    outcome = Outcome(source, query, tier, mode, True)
    try:
        action(query)
    except EngineError as exc:
        outcome.ok = False
        outcome.kind, outcome.construct = exc.kind, _construct(exc)
        outcome.message = str(exc)
    return outcome


_TIME_NAME = re.compile(r"(?:Time|Timestamp|Date|DateTime|Generated)$")


#: A column the query sums, averages or multiplies holds numbers in the real table.
_NUMERIC_USE = [
    re.compile(
        r"\b(?:sum|avg|sumif|avgif|stdev|stdevif|variance|varianceif|percentiles?)"
        r"\s*\(\s*([A-Za-z_]\w*)\s*[,)]"
    ),
    re.compile(r"(?<![\w.])([A-Za-z_]\w*)\s*[*/]\s*[\d(A-Za-z_]"),
    re.compile(r"[*/]\s*([A-Za-z_]\w*)\b(?!\s*\()"),
]


def numeric_columns(query: str) -> set[str]:
    """Names the query uses as numbers: arguments of ``sum``/``avg``/..., operands of ``*``, ``/``."""
    code = strip_comments(query)
    return {m.group(1).lower() for pattern in _NUMERIC_USE for m in pattern.finditer(code)}


def _stand_in_type(
    column: str, types: Mapping[str, str], numeric: set[str] | frozenset[str] = frozenset()
) -> str:
    """A stand-in column's type: the 12 schemas' type for that name, else guessed by name
    (``*Time``, ``*Date``, ... datetime), then by use (summed, averaged, multiplied: real),
    else dynamic."""
    known = types.get(column.lower())
    if known:
        return known
    if _TIME_NAME.search(column):
        return "datetime"
    if column.lower() in numeric:
        return "real"
    return "dynamic"


def _execute_on_stand_ins(
    query: str,
    schema: Mapping[str, list[str]],
    real: Mapping[str, list[str]],
    types: Mapping[str, str],
    now: Any,
) -> None:
    """Run *query* on empty tables: the 12 with their schemas, stand-ins typed by name."""
    schemas = stand_in_types(query, schema, real, types)
    with LocalEngine.from_tables(tables={}, schemas=schemas, now=now, timeout=10.0) as eng:
        eng.query(query, limit=10)


def stand_in_types(
    query: str,
    schema: Mapping[str, list[str]],
    real: Mapping[str, list[str]],
    types: Mapping[str, str],
) -> dict[str, list[tuple[str, str]]]:
    """The typed tables tier C runs *query* on (and Microsoft's analyzer checks it against)."""
    schemas: dict[str, list[tuple[str, str]]] = {}
    code = strip_comments(query)
    # `union *` and `search` read every table, so they get all twelve; otherwise only those named.
    every = re.search(r"\bunion\b[^|]*\*|\bsearch\b", code) is not None
    numeric = numeric_columns(query)
    for table, columns in schema.items():
        if table in real and not every and not re.search(rf"(?<![\w.]){table}\b", code):
            continue
        if table in real:
            schemas[table] = [(c, types[c.lower()]) for c in columns]
        else:
            schemas[table] = [(c, _stand_in_type(c, types, numeric)) for c in columns]
    return schemas


#: Queries that read tables they do not name (every table, or a name pattern): each is
#: checked alone, in a database of its own tables only.
_READS_UNNAMED = re.compile(r"\bunion\b[^|]*\*|\bsearch\b|\bfind\b|\b[A-Za-z_]\w*\*")


def analyze(report: Report) -> None:
    """Ask Microsoft's KQL analyzer (tests/interop, ``make kql-analyzer``) about every query in
    scope, against the typed tables tier C runs it on; fills ``report.analyzer``.

    Several queries share one analyzer run (a node process each) when the database of the
    run shows each of them exactly its own tables: queries in a batch either name disjoint
    tables or give a shared one the same typed columns, and a query reading tables it does
    not name (``union *``, ``search``, ``T*``) runs alone. A query is accepted when the
    analyzer reports no error.
    """
    sys.path.insert(0, str(ROOT / "tests" / "interop"))
    import kql_analyzer

    reason = kql_analyzer.unavailable_reason()
    if reason:
        raise SystemExit(f"--analyzer: {reason}")
    batches: list[tuple[dict[str, list[tuple[str, str]]], list[tuple[str, str]]]] = []
    alone: list[tuple[dict[str, list[tuple[str, str]]], list[tuple[str, str]]]] = []
    for key, tables in report.typed.items():
        if _READS_UNNAMED.search(strip_comments(key[1])):
            alone.append((dict(tables), [key]))
            continue
        batch = next(
            (b for b in batches if all(b[0].get(table, cols) == cols for table, cols in tables.items())),
            None,
        )
        if batch is None:
            batch = ({}, [])
            batches.append(batch)
        batch[0].update(tables)
        batch[1].append(key)
    for merged, members in [*batches, *alone]:
        found = kql_analyzer.analyze({str(i): key[1] for i, key in enumerate(members)}, schemas=merged)
        for i, key in enumerate(members):
            report.analyzer[key] = not found[str(i)].errors


_CASE_CLASH = re.compile(r"columns '([^']+)' and '([^']+)' differ only in case")


def _not_measurable(outcome: Outcome, real: Mapping[str, list[str]]) -> str | None:
    """Failures that say nothing about the engine: text without a query, stand-in artefacts."""
    if outcome.ok:
        return None
    if outcome.construct == "statement" and "no query statement" in outcome.message:
        return "not a query: only let statements"
    clash = _CASE_CLASH.search(outcome.message)
    if clash:
        real_columns = {c for cols in real.values() for c in cols}
        if not set(clash.groups()) <= real_columns:
            return "stand-in schema artefact: two columns differ only in case"
    return None


def _share(n: int, d: int) -> str:
    return f"{n}/{d} ({100.0 * n / d:.1f}%)" if d else "0/0"


def print_report(report: Report, *, top: int = 20) -> dict[str, Any]:
    """Print the figures; return them as a dict (the ``--json`` output)."""
    print(f"corpus texts: {report.total_texts}; queries after splitting: {report.queries}")
    print(f"out of scope: {sum(report.out_of_scope.values())}")
    for reason, n in report.out_of_scope.most_common():
        print(f"  {n:5d}  {reason}")
    figures: dict[str, Any] = {
        "texts": report.total_texts,
        "queries_after_split": report.queries,
        "out_of_scope": dict(report.out_of_scope.most_common()),
    }
    scope = len(report.tier("B"))
    print(f"\nin scope: {scope} queries\n")
    print(f"{'':58} {'duckdb-kql alone':>18} {'with rewrites':>18}")
    rows = [
        (
            "A: read only the 12 tables, executed on the store",
            lambda m: (sum(o.ok for o in report.tier("A", m)), len(report.tier("A", m))),
        ),
        (
            "B: translated (stand-in schemas for other tables)",
            lambda m: (sum(o.ok for o in report.tier("B", m)), scope),
        ),
        (
            "C: translated and executed on empty stand-in tables",
            lambda m: (sum(o.ok for o in report.tier("C", m)), scope),
        ),
        (
            "C, not counting JSON bind errors of guessed column types",
            lambda m: (
                sum(o.ok for o in report.tier("C", m)),
                scope - sum(o.typing_artefact for o in report.tier("C", m)),
            ),
        ),
    ]
    if report.analyzer:
        accepted = {key for key, ok in report.analyzer.items() if ok}
        figures["analyzer_accepts"] = {"ok": len(accepted), "of": scope}
        rows.append(
            (
                "C, over the queries Microsoft's analyzer accepts",
                lambda m: (
                    sum(o.ok for o in report.tier("C", m) if (o.source, o.query) in accepted),
                    len(accepted),
                ),
            )
        )
    for label, count in rows:
        cells = [_share(*count(m)) for m in MODES]
        print(f"{label:58} {cells[0]:>18} {cells[1]:>18}")
        figures[label.split(":")[0]] = {m: dict(zip(("ok", "of"), count(m), strict=True)) for m in MODES}
    if report.analyzer:
        print(f"(Microsoft's analyzer accepts {len(accepted)} of the {scope} queries in scope.)")
    for mode in MODES:
        failures = [o for o in report.tier("B", mode) if not o.ok]
        failures += [o for o in report.tier("C", mode) if not o.ok and not o.typing_artefact]
        kinds = Counter(o.kind for o in failures)
        constructs = Counter((o.tier, o.kind, o.construct) for o in failures)
        print(f"\n[{mode}] failures by kind: " + ", ".join(f"{kind} {n}" for kind, n in kinds.most_common()))
        print(f"[{mode}] failures by construct (top {top}; tier B = translation, C = bind/run):")
        for (tier, kind, construct), n in constructs.most_common(top):
            print(f"  {n:5d}  {tier}  {kind}: {construct[:80]}")
        figures[mode] = {
            "by_kind": dict(kinds.most_common()),
            "by_construct": [
                {"tier": t, "kind": k, "construct": c, "count": n}
                for (t, k, c), n in constructs.most_common(top)
            ],
        }
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus",
        type=Path,
        default=os.environ.get(CORPUS_ENV),
        help=f"the JSONL corpus (default: ${CORPUS_ENV})",
    )
    parser.add_argument("--store", type=Path, help="a built store (default: build rows=0)")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--show", help="print failing queries whose error contains this text")
    parser.add_argument(
        "--analyzer",
        action="store_true",
        help="also count the queries Microsoft's KQL analyzer accepts (make kql-analyzer; needs node)",
    )
    args = parser.parse_args(argv)
    if not args.corpus:
        parser.error(f"give the corpus file with --corpus or ${CORPUS_ENV}")
    args.corpus = Path(args.corpus)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.store:
            store_path = args.store
            meta = json.loads(store_path.with_suffix(".meta.json").read_text(encoding="utf-8"))
            now = meta["now"]
        else:
            from ctirealm.telemetry.dataset import Dataset
            from ctirealm.telemetry.store import build_store

            store = build_store(Dataset.load(ROOT / "telemetry"), rows=0, cache_dir=Path(tmp))
            store_path, now = store.path, store.meta["now"]
        from ctirealm.telemetry.schema import parse_datetime

        report = measure(args.corpus, store_path, now=parse_datetime(now), show=args.show)
    if args.analyzer:
        analyze(report)
    figures = print_report(report, top=args.top)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    print(f"\n{figures['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
