"""The one detection evaluator: execute a query over the whole store and count events, not rows.

C4 KQL detection, Sigma quality (a rule converted to KQL by the sigma layer), the
rules gate and ``ctirealm sigma eval`` all call `evaluate` (or `evaluate_rule`,
which converts a Sigma rule first) and get a `DetectionResult`.

Attribution of result rows (docs/scoring.md has worked examples):

1. **By id.** A column named like the id column of a table the query reads
   (``ReportId``, ``AuditId``, ``Id``, ``EventDataId``, ``RequestId``, ``OfficeId``,
   ``CorrelationId``; join-suffixed ``ReportId1`` too) holding an id of that table
   names that event (`telemetry.attribution.trace`). The tables a query reads are
   resolved with the KQL parser: bare and bracket-quoted names, ``table("T")``,
   ``union`` (wildcards too), ``join``/``lookup``, ``let`` and ``search in``.
2. **By value**, for a row with no id value. The row names an event when its
   columns identify exactly one event of a table the query reads by full value
   equality: every returned column is a column of that table (names compared
   case-insensitively) and equals the event's value, at least
   `MIN_VALUE_COLUMNS` (3) of them hold a non-empty value, and no other event of
   the tables read has the same values. So a projection of one or two columns
   never satisfies it, nor does an aggregate: its computed column (``count_``) is
   no column of the table, and a group of several events matches more than one.
   Only the first `MAX_VALUE_ROWS` id-less rows are looked up.
3. **Anything else** (an aggregate, a computed value, an id that is no event)
   never counts as a true positive and counts as one false positive per row.

Counting, per event:

* the expected events (a case's ``attack_events``) matched are **true positives**;
  expected events not matched are false negatives;
* a matched event in *neutral* is neither: another case's attack event when that
  case shares an ATT&CK technique (compared by parent, ``T1053.003`` ~ ``T1053``)
  with this one (`neutral_events` computes them), reported as ``other_attacks``;
* every other matched event is a **false positive**: hard negatives, generated
  background, and the attack events of other cases that share no technique.

Without an expected set (a rule gated on no case) attack events are what the rule
is after: each labelled attack event matched counts as a true positive, benign
ones as false positives. No ``regex_patterns`` take part anywhere.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from ..cases import Case
from ..engine import Engine, EngineError
from ..telemetry.attribution import canonical, fetch_events, id_columns, id_families, tables_in, trace
from ..telemetry.labels import Labels
from ..telemetry.schema import TableSchema
from .model import DetectionResult, f1_from

#: Result rows read with every column; past it, only the id columns are fetched.
MAX_ROWS = 50_000
#: Rows past which the result is fetched without an upper bound, ids only.
_UNCAPPED = 50_000_000
#: Unlabelled ids looked up in the store; past it, each is taken as an event unchecked.
_VERIFY_LIMIT = 50_000
#: Non-empty values an id-less row must share with one event to name it.
MIN_VALUE_COLUMNS = 3
#: Id-less rows looked up by value; the rest are unattributed.
MAX_VALUE_ROWS = 5_000
#: Candidate events fetched per value look-up; more means the values identify nothing.
_CANDIDATES = 10_000
_LOOKUP_TYPES = ("string", "guid", "long", "int")
_CHUNK = 500

Event = tuple[str, str]


def technique_parents(techniques: Iterable[str]) -> set[str]:
    """``T1053.003`` -> ``T1053``: the parent techniques, by which cases are compared."""
    return {str(t).split(".")[0].upper() for t in techniques}


def neutral_events(case: Case, cases: Any, labels: Labels | None = None) -> frozenset[Event]:
    """Other cases' attack events that do not count against *case*: the cases sharing a technique.

    *cases* is a `CaseSet` (or a mapping or iterable of cases). An event of a case
    that shares an ATT&CK technique with *case* (compared by parent) is neutral;
    any other case's attack event is a false positive. With *labels* (one split's),
    cases that list no events of their own are bound to the events the store labels
    with their id (`Case.bound`). *case*'s own events are never neutral.
    """
    pool = getattr(cases, "cases", cases)
    others = pool.values() if isinstance(pool, Mapping) else pool
    if labels is not None:
        case = case.bound(labels)
    mine = technique_parents(case.ground_truth.techniques)
    own = {(t, str(i)) for t, ids in case.ground_truth.attack_events.items() for i in ids}
    out: set[Event] = set()
    for other in others:
        if other.id == case.id or not mine & technique_parents(other.ground_truth.techniques):
            continue
        if labels is not None:
            other = other.bound(labels)
        out.update((t, str(i)) for t, ids in other.ground_truth.attack_events.items() for i in ids)
    return frozenset(out - own)


class _Expected:
    """The expected events: ``{table: ids}`` (matched by table and id) or bare ids (by id).

    Events are keyed by `Labels.identity`, so the two copies of a mirrored event (an
    AKSAuditAdmin write and the same AuditId in AKSAudit) are one expected event, found
    by a query on either table, and counted once by a query on both.
    """

    def __init__(
        self,
        expected: Mapping[str, Iterable[Any]] | Iterable[Any] | None,
        read: list[str],
        within_tables_read: bool,
        labels: Labels,
    ) -> None:
        self.given = expected is not None
        self.by_table = isinstance(expected, Mapping)
        self.labels = labels
        self.elsewhere = 0
        self.keys: set[Any] = set()
        self.listed: set[Event] = set()
        #: key -> how it is shown ("Table:id", the first table it was listed under).
        self.shown: dict[Any, str] = {}
        if isinstance(expected, Mapping):
            tables: dict[Any, set[str]] = {}
            for table, ids in expected.items():
                for i in map(str, ids):
                    key = labels.identity(table, i)
                    tables.setdefault(key, set()).update(labels.tables_of(table))
                    self.shown.setdefault(key, f"{table}:{i}")
                    self.listed.add((table, i))
            for key, where in tables.items():
                if within_tables_read and not where & set(read):
                    self.elsewhere += 1
                else:
                    self.keys.add(key)
        elif expected is not None:
            self.keys = {str(i) for i in expected}

    def key(self, event: Event) -> Any:
        return self.labels.identity(*event) if self.by_table else event[1]

    def __contains__(self, event: Event) -> bool:
        return self.key(event) in self.keys

    def prefer(self, read: list[str]) -> set[Event]:
        """``(table, id)`` pairs to prefer when an id is shared by tables."""
        if self.by_table:
            return set(self.listed)
        return {(t, i) for t in read for i in self.keys}

    def names(self, keys: Iterable[Any]) -> list[str]:
        return sorted(
            self.shown.get(k) or (f"{k[0]}:{k[1]}" if isinstance(k, tuple) else str(k)) for k in keys
        )


def _run_uncapped(engine: Engine, kql: str, timeout: float | None) -> Any:
    """Every row of *kql*: the engine's own row cap lifted for this one query."""
    saved = engine.max_rows
    engine.max_rows = _UNCAPPED
    try:
        return engine.query(kql, limit=_UNCAPPED, timeout=timeout)
    finally:
        engine.max_rows = saved


def evaluate(
    kql: str,
    engine: Engine,
    labels: Labels,
    *,
    schemas: Mapping[str, TableSchema] | None = None,
    expected: Mapping[str, Iterable[Any]] | Iterable[Any] | None = None,
    neutral: Collection[Event] = (),
    within_tables_read: bool = False,
    tables: list[str] | None = None,
    max_rows: int = MAX_ROWS,
    timeout: float | None = None,
    examples: int = 3,
) -> DetectionResult:
    """Execute *kql* over the whole store and count the events it matched (module docstring).

    *expected* is ``{table: ids}`` (a case's ``attack_events``), a list of ids, or
    None. With *within_tables_read*, expected events in tables the query does not
    read are set aside (``expected_elsewhere``) instead of counting as missed: a
    Sigma rule reads one table. *neutral* holds ``(table, id)`` events that count
    neither way (`neutral_events`). *tables* are the tables the query reads when the
    caller knows them (a converted Sigma rule reads its logsource's table); else they
    are resolved with the KQL parser. Errors never raise: they come back in ``error``
    with ``stage`` ``execute``.
    """
    started = time.perf_counter()
    schemas = dict(schemas if schemas is not None else engine.schemas)
    read = [t for t in tables if t in schemas] if tables is not None else tables_in(kql, schemas)
    want = _Expected(expected, read, within_tables_read, labels)
    out = DetectionResult(
        kql=kql,
        tables=read,
        fn=len(want.keys),
        missed_attack=want.names(want.keys),
        expected=len(want.keys) if want.given else None,
        expected_elsewhere=want.elsewhere,
    )
    try:
        result = engine.query(kql, limit=max_rows, timeout=timeout)
        rows = result.to_dicts()
        columns = result.column_names
        held = id_columns(columns, id_families({t: schemas[t] for t in read}))
        total, extra = len(rows), 0
        if result.truncated and held:
            # Past the cap only the ids matter: fetch them all and trace those.
            ids = _run_uncapped(engine, f"{kql}\n| project {', '.join(held)}", timeout)
            rows, columns, total = ids.to_dicts(), ids.column_names, len(ids.rows)
        elif result.truncated:
            try:
                counted = engine.query(f"{kql}\n| count", timeout=timeout).rows[0][0]
                total = max(total, int(counted))
            except (EngineError, IndexError, TypeError, ValueError):
                pass
            extra = total - len(rows)
    except EngineError as exc:
        out.error, out.stage = str(exc), "execute"
        out.elapsed = time.perf_counter() - started
        return out
    traced = trace(
        kql,
        columns,
        rows,
        engine,
        schemas,
        labels,
        prefer=want.prefer(read),
        tables=read,
        verify=len(rows) <= _VERIFY_LIMIT,
    )
    events: list[list[Event]] = traced.events
    idless = [
        n for n, row in enumerate(rows) if not any(row.get(c) not in (None, "") for c in traced.id_columns)
    ]
    if idless and read:
        found = _by_values([rows[n] for n in idless[:MAX_VALUE_ROWS]], read, engine, schemas, timeout)
        for n, event in zip(idless, found, strict=False):
            if event is not None:
                events[n] = [event]
    out.rows = total
    others = {labels.identity(*e) for e in neutral}
    _count(out, events, want, others, labels, extra)
    if out.unattributed:
        out.hint = _hint(read, traced.id_columns, schemas)
    if examples > 0:
        out.false_positive_examples = _examples(rows, events, want, others, labels, engine, schemas, examples)
    out.elapsed = time.perf_counter() - started
    return out


def _count(
    out: DetectionResult,
    events: list[list[Event]],
    want: _Expected,
    neutral: set[Event],
    labels: Labels,
    extra: int,
) -> None:
    """Fill *out*'s counts from the events each row names (*extra*: rows never read).

    *neutral* holds identities (`Labels.identity`); every event is counted by its identity,
    so a mirrored event matched in both tables is one event."""
    matched: set[Any] = set()
    false_events: dict[Event, str] = {}  # event identity -> its label kind
    others: set[Event] = set()
    groups: dict[str, set[str]] = {}
    unattributed = extra
    for named in events:
        if not named:
            unattributed += 1
            continue
        for event in named:
            kind = labels.kind(*event)
            if kind == "attack":
                groups.setdefault(labels.group(*event) or "?", set()).add(f"{event[0]}:{event[1]}")
            same = labels.identity(*event)
            if event in want or (not want.given and kind == "attack"):
                matched.add(want.key(event))  # without an expected set: by id, copies alike
            elif same in neutral:
                others.add(same)
            elif same not in false_events:
                false_events[same] = kind
    kinds = list(false_events.values())
    out.hard_negatives_matched = kinds.count("hard_negative")
    out.background_matched = kinds.count("benign")
    out.foreign_attacks_matched = kinds.count("attack")
    out.other_attacks = len(others)
    out.attack_groups = {g: sorted(v) for g, v in sorted(groups.items())}
    out.unattributed = unattributed
    out.tp = len(matched)
    out.fp = len(false_events) + unattributed
    out.fn = len(want.keys - matched)
    out.precision, out.recall, out.f1 = f1_from(out.tp, out.fp, out.fn)
    out.matched_attack = want.names(matched)
    out.missed_attack = want.names(want.keys - matched)


def _hint(read: list[str], held: Mapping[str, str], schemas: Mapping[str, TableSchema]) -> str:
    if not read:
        return "the query reads no known table, so no row can be traced to an event"
    if held:
        return "some rows carry no id of an event of the tables read"
    wanted = ", ".join(f"{schemas[t].id_column} for {t}" for t in read)
    return f"the result has no id column to trace rows to events; project {wanted}"


# -- attribution by value -------------------------------------------------------------------


def _literal(value: Any, kind: str) -> str:
    if kind in ("long", "int"):
        return str(int(value))
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _by_values(
    rows: list[dict[str, Any]],
    read: list[str],
    engine: Engine,
    schemas: Mapping[str, TableSchema],
    timeout: float | None,
) -> list[Event | None]:
    """For each id-less row, the one event of a table read that its values identify, else None."""
    found: list[set[Event]] = [set() for _ in rows]
    usable = [False] * len(rows)
    for table in read:
        schema = schemas[table]
        names = {c.lower(): c for c in schema.column_names}
        if not rows:
            break
        shared = [(col, names[col.lower()]) for col in rows[0] if col.lower() in names]
        if len(shared) < MIN_VALUE_COLUMNS or len(shared) < len(rows[0]):
            continue  # a computed column (an aggregate's count_, an extend) is no event's value
        keys = [(col, name) for col, name in shared if schema.type_of(name) in _LOOKUP_TYPES]
        # Look a row up by its most selective column: the one with the most distinct values.
        keys.sort(key=lambda k: -len({canonical(r.get(k[0])) for r in rows}))
        wanted: dict[tuple[str, str], dict[str, Any]] = {}
        for n, row in enumerate(rows):
            values = [canonical(row.get(col)) for col, _ in shared]
            if sum(1 for v in values if v) < MIN_VALUE_COLUMNS:
                continue
            key = next(((col, name) for col, name in keys if canonical(row.get(col))), None)
            if key is None:
                continue
            usable[n] = True
            wanted.setdefault(key, {})[canonical(row.get(key[0]))] = row.get(key[0])
        index = _candidates(table, schema, shared, wanted, engine, timeout)
        for n, row in enumerate(rows):
            if usable[n]:
                signature = tuple(canonical(row.get(col)) for col, _ in shared)
                found[n].update((table, i) for i in index.get(signature, ()))
    return [next(iter(f)) if usable[n] and len(f) == 1 else None for n, f in enumerate(found)]


def _candidates(
    table: str,
    schema: TableSchema,
    shared: list[tuple[str, str]],
    wanted: dict[tuple[str, str], dict[str, Any]],
    engine: Engine,
    timeout: float | None,
) -> dict[tuple[str, ...], set[str]]:
    """Events of *table* whose look-up column holds a wanted value, indexed by shared values."""
    index: dict[tuple[str, ...], set[str]] = {}
    columns = ", ".join(dict.fromkeys([schema.id_column, *(name for _, name in shared)]))
    for (_, name), values in wanted.items():
        kind = schema.type_of(name) or "string"
        ordered = sorted(values)
        for start in range(0, len(ordered), _CHUNK):
            chunk = [values[v] for v in ordered[start : start + _CHUNK]]
            literals = ", ".join(_literal(v, kind) for v in chunk)
            try:
                result = engine.query(
                    f"{table}\n| where {name} in ({literals})\n| project {columns}",
                    limit=_CANDIDATES,
                    timeout=timeout,
                )
            except (EngineError, ValueError):
                continue
            if result.truncated:  # values this common identify no single event
                continue
            for event in result.to_dicts():
                signature = tuple(canonical(event.get(n)) for _, n in shared)
                index.setdefault(signature, set()).add(canonical(event[schema.id_column]))
    return index


# -- examples ---------------------------------------------------------------------------------

_EXAMPLE_ORDER = {"hard_negative": 0, "attack": 1, "benign": 2}


def _examples(
    rows: list[dict[str, Any]],
    events: list[list[Event]],
    want: _Expected,
    neutral: set[Event],
    labels: Labels,
    engine: Engine,
    schemas: Mapping[str, TableSchema],
    limit: int,
) -> list[dict[str, Any]]:
    """Up to *limit* false positives, as stored events: hard negatives first, then other
    cases' attacks, then background; then rows traced to no event."""
    # The first few in order, not a sort of them all: a match-everything query names a
    # million events.
    # One copy of each event (a mirrored event matched in both tables is shown once).
    candidates = {
        labels.identity(*e): e
        for named in events
        for e in named
        if e not in want
        and labels.identity(*e) not in neutral
        and (want.given or labels.kind(*e) != "attack")
    }
    chosen = heapq.nsmallest(
        limit,
        set(candidates.values()),
        key=lambda e: (_EXAMPLE_ORDER.get(labels.kind(*e), 3), e[0], _id_key(e[1])),
    )
    shown: list[dict[str, Any]] = []
    by_table: dict[str, list[str]] = {}
    for table, event_id in chosen:
        by_table.setdefault(table, []).append(event_id)
    try:
        stored = {(r["__table__"], r["__id__"]): r for r in fetch_events(engine, schemas, by_table)}
    except EngineError:
        stored = {}
    for event in chosen:
        row = stored.get(event, {})
        shown.append(
            {
                "table": event[0],
                "id": event[1],
                "kind": labels.kind(*event),
                "row": _trim({k: v for k, v in row.items() if not k.startswith("__")}),
            }
        )
    for row, named in zip(rows, events, strict=False):
        if len(shown) >= limit:
            break
        if not named:
            shown.append({"kind": "unattributed", "row": _trim(row)})
    return shown


def _id_key(value: str) -> tuple[int, str]:
    return (0, f"{int(value):020d}") if value.lstrip("-").isdigit() else (1, value)


def _trim(row: dict[str, Any], width: int = 160) -> dict[str, Any]:
    """Non-empty values, long text cut."""
    from ..telemetry.values import to_json_value

    out = {}
    for key, value in row.items():
        if value in (None, "", {}, []):
            continue
        value = to_json_value(value)
        if isinstance(value, str) and len(value) > width:
            value = value[: width - 1] + "…"
        out[key] = value
    return out


# -- callers' shapes ----------------------------------------------------------------------------


def evaluate_query(
    kql: str,
    case: Case,
    engine: Engine,
    labels: Labels,
    schemas: Mapping[str, TableSchema],
    *,
    neutral: Collection[Event] = (),
    max_rows: int = MAX_ROWS,
    timeout: float | None = None,
    examples: int = 3,
) -> DetectionResult:
    """C4 KQL detection: `evaluate` against every attack event of *case*."""
    return evaluate(
        kql,
        engine,
        labels,
        schemas=schemas,
        expected=case.ground_truth.attack_events,
        neutral=neutral,
        max_rows=max_rows,
        timeout=timeout,
        examples=examples,
    )


def evaluate_rule(
    rule: Any,
    engine: Engine,
    labels: Labels,
    *,
    schemas: Mapping[str, TableSchema] | None = None,
    expected: Mapping[str, Iterable[Any]] | Iterable[Any] | None = None,
    neutral: Collection[Event] = (),
    examples: int = 3,
    timeout: float | None = None,
    conversion: Any = None,
) -> DetectionResult:
    """A Sigma rule: converted to KQL by the sigma layer, then `evaluate`-d like any query.

    Expected events are counted in the table the rule's logsource maps to
    (``within_tables_read``), since one Sigma rule covers one logsource. A rule that
    does not parse or convert comes back with ``error`` and ``stage``.
    """
    from ..sigma.convert import convert
    from ..sigma.parse import SigmaRuleError

    schemas = dict(schemas if schemas is not None else engine.schemas)
    if conversion is None:
        try:
            conversion = convert(rule, schemas=schemas)
        except SigmaRuleError as exc:
            return DetectionResult(error=exc.reason, stage=exc.stage)
    kql = conversion.kql
    if conversion.table in schemas:  # the rule's rows are whole events: only their ids matter
        kql += f"\n| project {schemas[conversion.table].id_column}"
    result = evaluate(
        kql,
        engine,
        labels,
        schemas=schemas,
        expected=expected,
        neutral=neutral,
        within_tables_read=True,
        tables=[conversion.table],
        timeout=timeout,
        examples=examples,
    )
    result.kql = conversion.kql
    return result


def check_provenance(submitted: list[dict[str, Any]], returned: list[list[dict[str, Any]]]) -> list[str]:
    """Problems with submitted ``query_results``: each row must be a row a query really returned.

    Every key of a submitted row must exist in the returned row (names compared
    case-insensitively) with the same value; ``returned`` holds the rows of every
    successful ``execute_kql_query`` call.
    """
    pool = [{k.lower(): canonical(v) for k, v in row.items()} for rows in returned for row in rows]
    problems = []
    for index, row in enumerate(submitted):
        if not isinstance(row, dict) or not row:
            problems.append(f"query_results[{index}] is not a row of column: value")
            continue
        wanted = {k.lower(): canonical(v) for k, v in row.items()}
        if not any(all(k in p and p[k] == v for k, v in wanted.items()) for p in pool):
            problems.append(f"query_results[{index}] was not returned by any execute_kql_query call")
    return problems
