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

Two things make runs depend on more than their window:

- **ingestion delay**: Sentinel runs a scheduled rule five minutes after its scheduled time, so
  events that reach the workspace up to five minutes late are still read. Events later than
  that (a declared ``ingestion_delay``) are not there yet when the run reads the end of its
  window: a run reads ``[end - period, end - lag)``, ``lag`` being the delay beyond five minutes;
- **suppression** (``suppressionEnabled``/``suppressionDuration``): after a run raises an alert,
  the rule stops running for the duration, so runs scheduled inside it raise nothing. Which runs
  are suppressed depends on which earlier runs alerted, so it is decided after the runs' rows.

A Defender custom detection (`Schedule.defender`) has a longer lookback than its frequency, a
first run that looks back 30 days, one alert per result row at most 100 a run, and raises an
alert for a row once however many runs read it.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
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
#: Sentinel starts a scheduled run this long after its scheduled time, for late events.
RUN_DELAY = timedelta(minutes=5)
#: Defender ``schedule.period`` -> (how often it runs, how far back each run reads).
DEFENDER_LOOKBACK = {
    "1H": (timedelta(hours=1), timedelta(hours=4)),
    "3H": (timedelta(hours=3), timedelta(hours=12)),
    "12H": (timedelta(hours=12), timedelta(hours=48)),
    "24H": (timedelta(hours=24), timedelta(days=30)),
}
_SHORT = re.compile(r"^(\d+)([mhd])$")
_ISO = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")
_SYMBOLS = {
    "gt": ">",
    "lt": "<",
    "eq": "==",
    "ne": "!=",
    "GreaterThan": ">",
    "LessThan": "<",
    "Equal": "==",
    "NotEqual": "!=",
}
_COMPARE: dict[str, Callable[[int, int], bool]] = {
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
#: Pipe operators whose every output row comes from one input row.
ROW_WISE = frozenset(
    {
        "where",
        "filter",
        "project",
        "project-away",
        "project-keep",
        "project-rename",
        "project-reorder",
        "extend",
        "parse",
        "parse-where",
        "parse-kv",
        "mv-expand",
        "sort",
        "order",
        "union",
        "search",
        "getschema",
    }
)
_CLOCK = re.compile(r"\b(now|ago)\s*\(", re.I)
_ACROSS = re.compile(
    r"\b(toscalar|materialize|row_number|row_cumsum|prev|next|row_window_session)"
    r"\s*\(",
    re.I,
)
_SUBQUERY = re.compile(r"(?:\bin~?|\bhas_any|\bhas_all|\bhas_any_cs)\s*\(\s*([A-Za-z_]\w*)", re.I)
_LET_TABULAR = re.compile(r"\blet\s+([A-Za-z_]\w*)\s*=\s*([^;]*)", re.I)


def parse_duration(value: object) -> timedelta | None:
    """``5m``, ``1h``, ``14d`` (the Azure-Sentinel YAML form) or ISO 8601 (``PT1H``, ``P1D``,
    ``P1DT12H``, as ARM templates and the API write them); None when neither."""
    text = str(value or "").strip()
    short = _SHORT.match(text)
    if short:
        amount, unit = int(short.group(1)), short.group(2)
        return (
            timedelta(minutes=amount)
            if unit == "m"
            else (timedelta(hours=amount) if unit == "h" else timedelta(days=amount))
        )
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
    #: The lookback of the first run, when it differs (a Defender detection's 30 days).
    first_period: timedelta | None = None
    #: ``suppressionDuration`` when ``suppressionEnabled``: no run for so long after an alert.
    suppression: timedelta | None = None
    #: How much of the end of each window is not ingested yet when the run reads it.
    lag: timedelta = timedelta(0)
    #: One alert per distinct result row across runs (Defender); and at most this many a run.
    dedupe: bool = False
    max_alerts: int | None = None
    #: For messages: ``Sentinel`` or ``Defender``; and the period's own spelling.
    product: str = "Sentinel"
    label: str = ""

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
        suppression = None
        if doc.get("suppressionEnabled") is True:
            suppression = parse_duration(doc.get("suppressionDuration"))
        return cls(
            frequency,
            period,
            _SYMBOLS.get(operator, ">"),
            threshold,
            operator,
            per_result,
            suppression=suppression,
        )

    @classmethod
    def defender(cls, period: str) -> Schedule:
        """A Defender custom detection's ``schedule.period`` (``0`` = continuous, NRT): it runs
        every period over its lookback (`DEFENDER_LOOKBACK`), the first run over 30 days, and
        raises one alert per new result row (any result fires)."""
        code = str(period).strip().upper()
        if code == "0":
            minute = timedelta(minutes=1)
            return cls(
                minute,
                minute,
                per_result=True,
                nrt=True,
                dedupe=True,
                max_alerts=100,
                product="Defender",
                label="0",
            )
        frequency, lookback = DEFENDER_LOOKBACK.get(code, DEFENDER_LOOKBACK["24H"])
        return cls(
            frequency,
            lookback,
            per_result=True,
            first_period=timedelta(days=30),
            dedupe=True,
            max_alerts=100,
            product="Defender",
            label=code,
        )

    def with_ingestion_delay(self, delay: timedelta) -> Schedule:
        """This schedule when events reach the workspace *delay* after their time: Sentinel's
        five-minute late start (`RUN_DELAY`) absorbs that much; the rest is each run's lag."""
        return replace(self, lag=max(timedelta(0), delay - RUN_DELAY))

    def window(self, k: int, end: datetime) -> tuple[datetime, datetime]:
        """What run *k*, scheduled to end at *end*, reads: ``[start, stop)``."""
        period = self.first_period if (k == 0 and self.first_period) else self.period
        return end - period, end - self.lag

    def coverage_gap(self) -> timedelta:
        """How long a stretch at the end of each window no run ever reads (0 when none): what is
        not ingested yet when a run reads it is outside the next run's lookback unless
        ``period - lag >= frequency``."""
        if self.nrt:
            return timedelta(0)
        return max(timedelta(0), self.frequency - (self.period - self.lag))

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
        if self.nrt:
            return "every minute (NRT)"
        first = (
            f" (the first run over the last {_text(self.first_period)})"
            if self.first_period and self.first_period != self.period
            else ""
        )
        return f"every {_text(self.frequency)} over the last {_text(self.period)}{first}"

    def describe(self) -> str:
        if self.dedupe:
            return f"{self.cadence()}, an alert per new result row (at most {self.max_alerts} a run)"
        grouping = ", an alert per result row" if self.per_result else ""
        extra = ""
        if self.suppression:
            extra += f", suppressed for {_text(self.suppression)} after an alert"
        if self.lag:
            extra += f", each run missing the last {_text(self.lag)} of its window (not ingested yet)"
        return f"{self.cadence()}, alerting when results {self.symbol} {self.threshold}{grouping}{extra}"


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
            what = (
                "it aggregates across the lookback"
                if operator.lower()
                in (
                    "summarize",
                    "make-series",
                    "top",
                    "top-nested",
                    "top-hitters",
                    "distinct",
                    "count",
                    "sample",
                    "sample-distinct",
                    "take",
                    "limit",
                    "evaluate",
                )
                else "its rows may combine events"
            )
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
        """The runs that raise alerts (a suppressed run raises none)."""
        return self._decided()[0]

    def suppressed(self) -> list[int]:
        """The runs whose results meet the trigger but that fall within ``suppressionDuration``
        of an earlier alert, so Sentinel does not run them."""
        return self._decided()[1]

    def _decided(self) -> tuple[list[int], list[int]]:
        raising: list[int] = []
        quiet: list[int] = []
        last: datetime | None = None
        pause = self.schedule.suppression
        for k, (lo, hi) in enumerate(self.spans):
            if not self.schedule.fires(hi - lo):
                continue
            # The rule stops running for the duration after an alert: a run scheduled before
            # it is over does not happen (one scheduled exactly at its end does).
            if pause and last is not None and self.ends[k] < last + pause:
                quiet.append(k)
                continue
            raising.append(k)
            last = self.ends[k]
        return raising, quiet

    def alert_groups(self) -> list[tuple[int, list[int]]]:
        """Every alert raised, as ``(run, indices of its rows)``: one per alerting run, one per
        row (``AlertPerResult``), or one per row not alerted on before, at most
        ``max_alerts`` a run (Defender)."""
        out: list[tuple[int, list[int]]] = []
        seen: set[str] = set()
        for k in self.firing():
            lo, hi = self.spans[k]
            if self.schedule.dedupe:
                fresh = []
                for n in range(lo, hi):
                    key = row_key(self.rows[n])
                    if key not in seen:
                        seen.add(key)
                        fresh.append([n])
                out.extend((k, group) for group in fresh[: self.schedule.max_alerts])
            elif self.schedule.per_result:
                out.extend((k, [n]) for n in range(lo, hi))
            else:
                out.append((k, list(range(lo, hi))))
        return out

    def alerts(self, k: int) -> list[list[dict[str, Any]]]:
        """The alerts run *k* raises: one with all its rows, or one per row (AlertPerResult)."""
        rows = self.run_rows(k)
        if self.schedule.per_result:
            return [[row] for row in rows]
        return [rows]

    def summary(self) -> str:
        fired = self.firing()
        head = f"{len(self.ends)} runs ({self.schedule.describe()}), {self.method}" + (
            f": {self.note}" if self.note else ""
        )
        tail = f", {len(self.suppressed())} suppressed" if self.schedule.suppression else ""
        return f"{head}; {len(fired)} raise alerts{tail}"


def row_times(
    rows: list[dict[str, Any]],
    columns: list[str],
    read: list[str],
    schemas: Mapping[str, TableSchema],
    engine: Any,
    labels: Labels,
) -> list[datetime] | None:
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
        traced = trace(
            "", columns, [rows[n] for n in missing], engine, schemas, labels, tables=read, verify=False
        )
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


def binned(
    schedule: Schedule,
    ends: list[datetime],
    rows: list[dict[str, Any]],
    columns: list[str],
    times: list[datetime],
) -> Simulation:
    """Cut one run over the whole window into the scheduled runs by each row's time."""
    order = sorted(range(len(rows)), key=lambda n: times[n])
    ordered = [rows[n] for n in order]
    keys = [times[n] for n in order]
    sim = Simulation(schedule, "binned", ends=ends, rows=ordered, columns=columns)
    for k, end in enumerate(ends):
        start, stop = schedule.window(k, end)
        sim.spans.append((bisect.bisect_left(keys, start), bisect.bisect_left(keys, max(start, stop))))
    return sim


def per_run(
    schedule: Schedule,
    ends: list[datetime],
    windowed: Any,
    kql: str,
    *,
    note: str,
    limit: int,
    only: Callable[[int, datetime], bool] | None = None,
    reuse: Simulation | None = None,
) -> Simulation:
    """Run *kql* once per window on *windowed* (a `WindowedEngine`). With *only*, runs it
    rejects (given the run's index and end) take their rows from *reuse* (the same run over the
    store alone)."""
    sim = Simulation(schedule, "per run", note=note, ends=ends)
    for k, end in enumerate(ends):
        if only is not None and reuse is not None and not only(k, end):
            rows = reuse.run_rows(k)
            sim.columns = sim.columns or reuse.columns
        else:
            try:
                start, stop = schedule.window(k, end)
                result = windowed.query_window(kql, start, stop, limit=limit, now=end)
            except EngineError as exc:
                sim.error = f"the run ending {_iso(end)}: {exc}"
                return sim
            rows = result.to_dicts()
            sim.columns = list(result.column_names)
        lo = len(sim.rows)
        sim.rows.extend(rows)
        sim.spans.append((lo, len(sim.rows)))
        if len(sim.rows) > MAX_TOTAL_ROWS:
            sim.error = (
                f"its first {k + 1} runs return {len(sim.rows)} rows in all, past the "
                f"{MAX_TOTAL_ROWS} a simulation keeps"
            )
            return sim
    return sim


def whole_window(
    schedule: Schedule, rows: list[dict[str, Any]], columns: list[str], end: datetime, note: str
) -> Simulation:
    return Simulation(
        schedule,
        "whole window",
        note=note,
        ends=[end],
        rows=list(rows),
        spans=[(0, len(rows))],
        columns=columns,
    )


def event_kinds(
    sim: Simulation, read: list[str], schemas: Mapping[str, TableSchema], engine: Any, labels: Labels
) -> list[str | None]:
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


def ids_in(
    rows: list[dict[str, Any]], columns: list[str], read: list[str], schemas: Mapping[str, TableSchema]
) -> set[str]:
    """The event ids *rows* carry in the id columns of the tables read."""
    held = id_columns(columns, id_families({t: schemas[t] for t in read}))
    return {str(row[c]) for row in rows for c in held if row.get(c) not in (None, "")}


def row_key(row: dict[str, Any]) -> str:
    """A result row as text, to compare rows between runs and data sets."""
    return json.dumps(row, sort_keys=True, default=str)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


iso_minute = _iso
