"""Sentinel's scheduling, simulated: a rule runs every ``queryFrequency`` over the last
``queryPeriod`` across the dataset's window, and each run raises an alert when its result count
satisfies ``triggerOperator``/``triggerThreshold``.

Two ways to get each run's rows, the cheap one whenever it gives the same answer:

- **binned**: the query runs once over the whole window and its rows are cut into the runs'
  windows by their event time (the table's time column in the output, or the time of the
  event the row's id names). Only sound for a query whose rows each come from one event and
  do not depend on the clock: every operator is row-wise (``where``, ``extend``,
  ``project``, ``parse``, ``mv-expand``, ``union``, ...), it calls neither ``now()`` nor
  ``ago()``, and it joins nothing;
- **per run**: otherwise the query runs once per window over a view of the data restricted to
  that window, with ``now()`` pinned to the window's end (the translated SQL carries the clock
  as a bound parameter, so every run reuses one translation). Runs whose windows hold no test
  event are shared between the store alone and the store plus test events.

A schedule with more runs than `MAX_RUNS` that cannot be binned (an NRT rule runs every
minute) is evaluated once over the whole window instead, and says so.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..engine import EngineError
from ..telemetry.attribution import id_columns, id_families, trace
from ..telemetry.labels import Labels
from ..telemetry.schema import TableSchema, parse_datetime

#: Per-run executions a rule may cost before it is evaluated once over the whole window.
MAX_RUNS = 2_000
#: Result rows all runs of one simulation may return together (memory, and far past any budget).
MAX_TOTAL_ROWS = 1_000_000
_SHORT = re.compile(r"^(\d+)([mhd])$")
_ISO = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")
_SYMBOLS = {"gt": ">", "lt": "<", "eq": "==", "ne": "!=", "GreaterThan": ">", "LessThan": "<",
            "Equal": "==", "NotEqual": "!="}
_COMPARE: dict[str, Callable[[int, int], bool]] = {
    ">": lambda a, b: a > b, "<": lambda a, b: a < b,
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
#: Pipe operators whose every output row comes from one input row.
ROW_WISE = frozenset({"where", "filter", "project", "project-away", "project-keep",
                      "project-rename", "project-reorder", "extend", "parse", "parse-where",
                      "parse-kv", "mv-expand", "sort", "order", "union", "search", "getschema"})
_CLOCK = re.compile(r"\b(now|ago)\s*\(", re.I)
_ACROSS = re.compile(r"\b(toscalar|materialize|row_number|row_cumsum|prev|next|row_window_session)"
                     r"\s*\(", re.I)
_SUBQUERY = re.compile(r"(?:\bin~?|\bhas_any|\bhas_all|\bhas_any_cs)\s*\(\s*([A-Za-z_]\w*)", re.I)
_LET_TABULAR = re.compile(r"\blet\s+([A-Za-z_]\w*)\s*=\s*([^;]*)", re.I)


def parse_duration(value: object) -> timedelta | None:
    """``5m``, ``1h``, ``14d`` (the Azure-Sentinel YAML form) or ISO 8601 (``PT1H``, ``P1D``,
    ``P1DT12H``, as ARM templates and the API write them); None when neither."""
    text = str(value or "").strip()
    short = _SHORT.match(text)
    if short:
        amount, unit = int(short.group(1)), short.group(2)
        return timedelta(minutes=amount) if unit == "m" else (
            timedelta(hours=amount) if unit == "h" else timedelta(days=amount))
    iso = _ISO.match(text.upper())
    if iso and text.upper() not in ("P", "PT") and any(iso.groups()):
        days, hours, minutes, seconds = (int(g or 0) for g in iso.groups())
        return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    return None


def _text(duration: timedelta) -> str:
    minutes = int(duration.total_seconds() // 60)
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


@dataclass(frozen=True)
class Schedule:
    """When a rule runs, what it reads each time and when a run raises an alert."""

    frequency: timedelta
    period: timedelta
    symbol: str = ">"
    threshold: int = 0
    operator: str = "gt"
    #: ``eventGroupingSettings.aggregationKind: AlertPerResult``: one alert per result row.
    per_result: bool = False
    nrt: bool = False

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> Schedule:
        """A valid rule's schedule (the parse check has refused invalid fields); an NRT rule
        runs every minute over the minute since its last run and fires on any result."""
        grouping = doc.get("eventGroupingSettings") or {}
        per_result = isinstance(grouping, dict) and grouping.get("aggregationKind") == "AlertPerResult"
        if str(doc.get("kind") or "Scheduled") == "NRT":
            minute = timedelta(minutes=1)
            return cls(minute, minute, per_result=per_result, nrt=True)
        # A missing or zero duration (refused by the parse check) must not stall the runs.
        frequency = parse_duration(doc.get("queryFrequency")) or timedelta(hours=1)
        period = parse_duration(doc.get("queryPeriod")) or frequency
        operator = str(doc.get("triggerOperator") or "gt")
        try:
            threshold = int(doc.get("triggerThreshold") or 0)
        except (TypeError, ValueError):
            threshold = 0
        return cls(frequency, period, _SYMBOLS.get(operator, ">"), threshold, operator, per_result)

    def fires(self, count: int) -> bool:
        return _COMPARE[self.symbol](count, self.threshold)

    def ends(self, start: datetime, end: datetime) -> list[datetime]:
        """The end of every run whose window reads part of ``[start, end)``, oldest first:
        the last run ends at the dataset's clock."""
        out, moment = [], end
        while moment > start:
            out.append(moment)
            moment -= self.frequency
        return out[::-1]

    def cadence(self) -> str:
        return "every minute (NRT)" if self.nrt else \
            f"every {_text(self.frequency)} over the last {_text(self.period)}"

    def describe(self) -> str:
        grouping = ", an alert per result row" if self.per_result else ""
        return f"{self.cadence()}, alerting when results {self.symbol} {self.threshold}{grouping}"


def unbinnable(kql: str, known: Mapping[str, TableSchema]) -> str | None:
    """Why *kql*'s rows cannot be cut into windows after one run over everything, or None."""
    text = strip_literals(kql)
    clock = _CLOCK.search(text)
    if clock:
        return f"it calls {clock.group(1).lower()}()"
    across = _ACROSS.search(text)
    if across:
        return f"it calls {across.group(1).lower()}(), which reads across rows"
    for operator in re.findall(r"\|\s*([A-Za-z][A-Za-z-]*)", text):
        if operator.lower() not in ROW_WISE:
            what = "it aggregates across the lookback" if operator.lower() in (
                "summarize", "make-series", "top", "top-nested", "top-hitters", "distinct",
                "count", "sample", "sample-distinct", "take", "limit", "evaluate") \
                else "its rows may combine events"
            return f"{what} ({operator.lower()})"
    tabular = {name.lower() for name in known}
    for name, value in _LET_TABULAR.findall(text):
        if "|" in value or value.strip().split("(", 1)[0].strip().lower() in tabular | {"union"}:
            tabular.add(name.lower())
    for name in _SUBQUERY.findall(text):
        if name.lower() in tabular:
            return f"it compares with a sub-query over {name}"
    return None


def strip_literals(kql: str) -> str:
    """*kql* with string literals emptied and comments removed, so words in them never count."""
    out, n = [], 0
    while n < len(kql):
        if kql.startswith("//", n):
            end = kql.find("\n", n)
            n = len(kql) if end < 0 else end
            continue
        if kql.startswith("```", n):
            end = kql.find("```", n + 3)
            n = len(kql) if end < 0 else end + 3
            out.append("''")
            continue
        char = kql[n]
        verbatim = char == "@" and n + 1 < len(kql) and kql[n + 1] in "'\""
        if verbatim or char in "'\"":
            quote = kql[n + 1] if verbatim else char
            n += 2 if verbatim else 1
            while n < len(kql) and kql[n] != quote:
                n += 2 if (kql[n] == "\\" and not verbatim) else 1
            n += 1
            out.append("''")
            continue
        out.append(char)
        n += 1
    return "".join(out)


@dataclass
class Simulation:
    """Every run of a rule over one data set: run ``k`` ends at ``ends[k]`` and returned
    ``rows[spans[k][0]:spans[k][1]]``."""

    schedule: Schedule
    method: str  # "binned", "per run", "whole window"
    note: str = ""
    ends: list[datetime] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    error: str | None = None

    def run_rows(self, k: int) -> list[dict[str, Any]]:
        lo, hi = self.spans[k]
        return self.rows[lo:hi]

    def firing(self) -> list[int]:
        """The runs that raise alerts."""
        return [k for k, (lo, hi) in enumerate(self.spans) if self.schedule.fires(hi - lo)]

    def alerts(self, k: int) -> list[list[dict[str, Any]]]:
        """The alerts run *k* raises: one with all its rows, or one per row (AlertPerResult)."""
        rows = self.run_rows(k)
        if self.schedule.per_result:
            return [[row] for row in rows]
        return [rows]

    def summary(self) -> str:
        fired = self.firing()
        head = (f"{len(self.ends)} runs ({self.schedule.describe()}), {self.method}"
                + (f": {self.note}" if self.note else ""))
        return f"{head}; {len(fired)} raise alerts"


def row_times(rows: list[dict[str, Any]], columns: list[str], read: list[str],
              schemas: Mapping[str, TableSchema], engine: Any,
              labels: Labels) -> list[datetime] | None:
    """Each row's event time: the time column of a table read, else the time of the event its
    id names; None when some row has neither."""
    candidates = [c for c in dict.fromkeys(schemas[t].time_column for t in read) if c in columns]
    out: list[datetime | None] = [None] * len(rows)
    for n, row in enumerate(rows):
        for column in candidates:
            value = row.get(column)
            if value not in (None, ""):
                out[n] = _utc(value)
                break
    missing = [n for n, when in enumerate(out) if when is None]
    if missing:
        traced = trace("", columns, [rows[n] for n in missing], engine, schemas, labels,
                       tables=read, verify=False)
        wanted: dict[str, set[str]] = {}
        for named in traced.events:
            for table, event_id in named[:1]:
                wanted.setdefault(table, set()).add(event_id)
        times: dict[tuple[str, str], datetime] = {}
        for table, ids in wanted.items():
            schema = schemas[table]
            try:
                found = engine.lookup(table, sorted(ids))
            except EngineError:
                return None
            for event in found.to_dicts():
                if event.get(schema.time_column) is not None:
                    times[(table, str(event[schema.id_column]))] = _utc(event[schema.time_column])
        for n, named in zip(missing, traced.events, strict=True):
            when = times.get(named[0]) if named else None
            if when is None:
                return None
            out[n] = when
    return out  # type: ignore[return-value]


def _utc(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else parse_datetime(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def binned(schedule: Schedule, ends: list[datetime], rows: list[dict[str, Any]],
           columns: list[str], times: list[datetime]) -> Simulation:
    """Cut one run over the whole window into the scheduled runs by each row's time."""
    order = sorted(range(len(rows)), key=lambda n: times[n])
    ordered = [rows[n] for n in order]
    keys = [times[n] for n in order]
    sim = Simulation(schedule, "binned", ends=ends, rows=ordered, columns=columns)
    for end in ends:
        sim.spans.append((bisect.bisect_left(keys, end - schedule.period),
                          bisect.bisect_left(keys, end)))
    return sim


def per_run(schedule: Schedule, ends: list[datetime], windowed: Any, kql: str, *, note: str,
            limit: int, only: Callable[[datetime], bool] | None = None,
            reuse: Simulation | None = None) -> Simulation:
    """Run *kql* once per window on *windowed* (a `WindowedEngine`). With *only*, runs it
    rejects take their rows from *reuse* (the same run over the store alone)."""
    sim = Simulation(schedule, "per run", note=note, ends=ends)
    for k, end in enumerate(ends):
        if only is not None and reuse is not None and not only(end):
            rows = reuse.run_rows(k)
            sim.columns = sim.columns or reuse.columns
        else:
            try:
                result = windowed.query_window(kql, end - schedule.period, end, limit=limit)
            except EngineError as exc:
                sim.error = f"the run ending {_iso(end)}: {exc}"
                return sim
            rows = result.to_dicts()
            sim.columns = list(result.column_names)
        lo = len(sim.rows)
        sim.rows.extend(rows)
        sim.spans.append((lo, len(sim.rows)))
        if len(sim.rows) > MAX_TOTAL_ROWS:
            sim.error = (f"its first {k + 1} runs return {len(sim.rows)} rows in all, past the "
                         f"{MAX_TOTAL_ROWS} a simulation keeps")
            return sim
    return sim


def whole_window(schedule: Schedule, rows: list[dict[str, Any]], columns: list[str],
                 end: datetime, note: str) -> Simulation:
    return Simulation(schedule, "whole window", note=note, ends=[end], rows=list(rows),
                      spans=[(0, len(rows))], columns=columns)


def event_kinds(sim: Simulation, read: list[str], schemas: Mapping[str, TableSchema],
                engine: Any, labels: Labels) -> list[str | None]:
    """Per row of *sim*: the label kind of the event it names (``attack``, ``hard_negative``,
    ``benign``), or None for a row traced to no event (an aggregate)."""
    if not sim.rows:
        return []
    traced = trace("", sim.columns, sim.rows, engine, schemas, labels, tables=read, verify=False)
    kinds: list[str | None] = []
    for named in traced.events:
        if not named:
            kinds.append(None)
            continue
        found = [labels.kind(*event) for event in named]
        kinds.append("attack" if "attack" in found else found[0])
    return kinds


def ids_in(rows: list[dict[str, Any]], columns: list[str], read: list[str],
           schemas: Mapping[str, TableSchema]) -> set[str]:
    """The event ids *rows* carry in the id columns of the tables read."""
    held = id_columns(columns, id_families({t: schemas[t] for t in read}))
    return {str(row[c]) for row in rows for c in held if row.get(c) not in (None, "")}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


iso_minute = _iso
