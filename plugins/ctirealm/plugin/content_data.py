"""Test data beside detection content, and an engine that sees it together with the store.

A rule ``detections/brute_force.yaml`` is tested with the files under
``detections/brute_force.tests/``::

    match/SigninLogs.csv          # recorded events the rule must alert on (every one)
    nomatch/SigninLogs.jsonl      # look-alikes it must not alert on
    tests.yaml                    # optional: max_false_positives (default 0), ingestion_delay

A file is named after its table (``SigninLogs.csv``, ``SigninLogs.export-2.csv``): JSONL (one
event a line) or CSV as the Sentinel and Data Explorer portals export it (a header row; ``TimeGenerated
[UTC]`` headers; ISO or ``M/D/YYYY, h:mm:ss.fff AM`` datetimes; JSON text in dynamic columns; an
empty cell is no value). Events keep their spacing but are moved in time so the latest lands
just before the store's clock: a rule's ``ago(1h)`` sees them wherever they were recorded.

The store is not rebuilt: `overlay_engine` opens it read-only beside an in-memory database
holding the test events and puts one ``union all`` view per table in front of both.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from ..telemetry.labels import Labels
from ..telemetry.schema import DUCKDB_TYPES, TableSchema, coerce_row, parse_datetime
from .content_schedule import RUN_DELAY, parse_duration

#: Test-data folders, by label.
KINDS = ("match", "nomatch")
TESTS_SUFFIX = ".tests"
#: How long before the store's clock the latest test event is placed.
LEAD = timedelta(minutes=5)
#: Where generated ids start, so they cannot meet the store's own.
_ID_BASE = 7_700_000_000_000_000_000
_PORTAL_TIMES = ("%m/%d/%Y, %I:%M:%S.%f %p", "%m/%d/%Y, %I:%M:%S %p", "%m/%d/%Y %I:%M:%S %p")


class ContentDataError(ValueError):
    """A test-data file cannot be used; the message names the file, row and column."""


@dataclass
class RuleTestData:
    """A rule's recorded events: ``{kind: {table: [row dicts]}}`` and its budget."""

    folder: Path
    events: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    max_false_positives: int = 0
    files: list[Path] = field(default_factory=list)
    #: ``ingestion_delay``: how late events reach the workspace, by table (``*``: every table).
    ingestion_delay: dict[str, timedelta] = field(default_factory=dict)

    def delay_for(self, tables: list[str]) -> timedelta:
        """The longest ingestion delay among *tables* (0 when none is declared)."""
        found = [
            self.ingestion_delay.get(t, self.ingestion_delay.get("*", timedelta(0))) for t in tables
        ] or [self.ingestion_delay.get("*", timedelta(0))]
        return max(found)

    def rows(self, kind: str) -> dict[str, list[dict[str, Any]]]:
        return self.events.get(kind, {})

    def has(self, kind: str) -> bool:
        return any(self.rows(kind).values())

    def ids(self, kind: str, schemas: Mapping[str, TableSchema]) -> dict[str, list[str]]:
        return {
            t: [str(r[schemas[t].id_column]) for r in rows] for t, rows in self.rows(kind).items() if rows
        }


def tests_folder(rule: Path) -> Path:
    """``detections/x.yaml`` -> ``detections/x.tests``."""
    return rule.with_name(rule.stem + TESTS_SUFFIX)


def load_test_data(
    rule: Path, schemas: Mapping[str, TableSchema], now: datetime, *, folder: Path | None = None
) -> RuleTestData | None:
    """The rule's test data shaped for *schemas*, moved in time to end just before *now*;
    None when it has no test folder (*folder*, default ``<rule>.tests``). Raises
    `ContentDataError` for a file that cannot be used."""
    folder = folder or tests_folder(rule)
    if not folder.is_dir():
        return None
    data = RuleTestData(folder)
    settings = folder / "tests.yaml"
    if settings.is_file():
        try:
            doc = yaml.safe_load(settings.read_text(encoding="utf-8")) or {}
            data.max_false_positives = int(doc.get("max_false_positives", 0))
        except (yaml.YAMLError, AttributeError, TypeError, ValueError) as exc:
            raise ContentDataError(
                f"{settings}: expected a mapping with max_false_positives: {exc}"
            ) from None
        data.ingestion_delay = _delays(settings, doc.get("ingestion_delay"), schemas)
    by_lower = {name.lower(): name for name in schemas}
    for kind in KINDS:
        for path in sorted((folder / kind).glob("*")):
            if path.suffix.lower() not in (".csv", ".jsonl", ".json"):
                continue
            table = by_lower.get(path.name.split(".", 1)[0].lower())
            if table is None:
                raise ContentDataError(
                    f"{path}: no table named {path.name.split('.', 1)[0]!r}; "
                    f"name the file after one of: {', '.join(sorted(schemas))}"
                )
            rows = _read(path, schemas[table])
            data.events.setdefault(kind, {}).setdefault(table, []).extend(rows)
            data.files.append(path)
    _prepare(data, schemas, now)
    return data


def _delays(settings: Path, value: Any, schemas: Mapping[str, TableSchema]) -> dict[str, timedelta]:
    """``ingestion_delay: 10m`` (every table) or ``{SigninLogs: 10m, ...}``."""
    if value is None:
        return {}
    pairs = value.items() if isinstance(value, dict) else [("*", value)]
    out = {}
    by_lower = {name.lower(): name for name in schemas}
    for table, text in pairs:
        duration = parse_duration(text)
        if duration is None:
            raise ContentDataError(
                f"{settings}: ingestion_delay {text!r}: expected a duration such as 10m, 2h or PT10M"
            )
        name = "*" if table == "*" else by_lower.get(str(table).lower())
        if name is None:
            raise ContentDataError(
                f"{settings}: ingestion_delay names {table!r}, which is not a "
                f"table (tables: {', '.join(sorted(schemas))})"
            )
        out[name] = duration
    return out


def _read(path: Path, schema: TableSchema) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        raw = list(csv.DictReader(io.StringIO(text)))
        rows = [_from_csv(path, n + 2, row, schema) for n, row in enumerate(raw)]
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ContentDataError(f"{path}:{n}: not a JSON object: {exc}") from None
            if not isinstance(row, dict):
                raise ContentDataError(f"{path}:{n}: not a JSON object")
            rows.append(_checked(path, n, row, schema))
    return rows


def _column(header: str) -> str:
    """``TimeGenerated [UTC]`` -> ``TimeGenerated`` (the portal's export adds the time zone)."""
    return header.split(" [", 1)[0].strip()


def _from_csv(path: Path, line: int, raw: dict[str, str], schema: TableSchema) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for header, value in raw.items():
        if header is None or value in (None, ""):
            continue
        name = _column(header)
        kind = schema.type_of(name)
        if kind == "dynamic" and value[:1] in '[{"':
            try:
                row[name] = json.loads(value)
                continue
            except json.JSONDecodeError:
                pass
        if kind == "datetime":
            row[name] = _portal_time(value)
            continue
        row[name] = value
    return _checked(path, line, row, schema)


def _portal_time(value: str) -> str:
    for fmt in _PORTAL_TIMES:
        try:
            return datetime.strptime(value.strip(), fmt).isoformat() + "Z"
        except ValueError:
            continue
    return value


def _checked(path: Path, line: int, row: dict[str, Any], schema: TableSchema) -> dict[str, Any]:
    # The portal exports hidden columns (``_ResourceId``); the store has none of them.
    row = {k: v for k, v in row.items() if not k.startswith("_")}
    names = {c.lower(): c for c in schema.column_names}
    out: dict[str, Any] = {}
    for key, value in row.items():
        column = names.get(key.lower())
        if column is None:
            raise ContentDataError(f"{path}:{line}: column {key!r} is not in {schema.name}")
        out[column] = value
    try:
        coerce_row(schema, out)
    except (KeyError, ValueError) as exc:
        raise ContentDataError(f"{path}:{line}: {exc.args[0]}") from None
    return out


def _prepare(data: RuleTestData, schemas: Mapping[str, TableSchema], now: datetime) -> None:
    """Give every event an id and move all of them, together, to end at ``now - LEAD``."""
    times = [
        _aware(parse_datetime(r[schemas[t].time_column]))
        for kind in data.events.values()
        for t, rows in kind.items()
        for r in rows
        if r.get(schemas[t].time_column)
    ]
    # Events not ingested yet when the last run reads the end of its window would be missed
    # for that reason alone: they land before what the run reads (see content_schedule).
    late = max(data.ingestion_delay.values(), default=timedelta(0)) - RUN_DELAY
    lead = LEAD + max(timedelta(0), late)
    shift = (now - lead - max(times)) if times else timedelta(0)
    serial = 0
    for kind in KINDS:
        for table, rows in data.rows(kind).items():
            schema = schemas[table]
            for row in rows:
                serial += 1
                when = row.get(schema.time_column)
                row[schema.time_column] = _iso(_aware(parse_datetime(when)) + shift if when else now - LEAD)
                if row.get(schema.id_column) in (None, ""):
                    kind_of_id = schema.type_of(schema.id_column)
                    row[schema.id_column] = (
                        _ID_BASE + serial
                        if kind_of_id in ("long", "int")
                        else f"ctirealm-test-{kind}-{serial:06d}"
                    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def labels_of(data: RuleTestData, schemas: Mapping[str, TableSchema]) -> Labels:
    """Labels of the test events: must-match as attack events, must-not-match as hard negatives."""
    labels = Labels()
    for table, ids in data.ids("match", schemas).items():
        for event_id in ids:
            labels.add(table, event_id, "attack", "match")
    for table, ids in data.ids("nomatch", schemas).items():
        for event_id in ids:
            labels.add(table, event_id, "hard_negative", "nomatch")
    return labels


def overlay_engine(
    store_path: Path,
    schemas: Mapping[str, TableSchema],
    now: datetime,
    tables: Mapping[str, list[dict[str, Any]]],
    *,
    windowed: bool = False,
    **options: Any,
) -> Any:
    """A read-only `LocalEngine` over the store plus *tables* (``{table: rows}``).

    The store file is attached read-only, never copied: each table is a view
    ``store.T union all tests.T``, so adding a few recorded events costs what they
    weigh, not a rebuild of the background. With *windowed*, each view keeps only the rows
    of one time window, set per query: a `WindowedEngine` comes back.
    """
    import duckdb

    from ..engine.local import LocalEngine, _kusto_string_views, _quote

    con = duckdb.connect(":memory:")
    con.execute(
        f"ATTACH '{str(Path(store_path).resolve()).replace(chr(39), chr(39) * 2)}' AS store (READ_ONLY)"
    )
    database = con.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    con.execute("CREATE SCHEMA tests")
    for name, schema in schemas.items():
        columns = ", ".join(f"{_quote(c)} {DUCKDB_TYPES[t]}" for c, t in schema.columns)
        con.execute(f"CREATE TABLE tests.{_quote(name)} ({columns})")
        rows = [coerce_row(schema, dict(r)) for r in tables.get(name, ())]
        if rows:
            marks = ", ".join("?" for _ in schema.columns)
            con.executemany(f"INSERT INTO tests.{_quote(name)} VALUES ({marks})", rows)
        listed = ", ".join(_quote(c) for c, _ in schema.columns)
        where = ""
        if windowed:
            clock = _quote(schema.time_column)
            where = f" WHERE {clock} >= getvariable('{_FROM}') AND {clock} < getvariable('{_TO}')"
        con.execute(
            f"CREATE VIEW {_quote(database)}.main.{_quote(name)} AS "
            f"SELECT {listed} FROM store.main.{_quote(name)}{where} "
            f"UNION ALL SELECT {listed} FROM tests.{_quote(name)}{where}"
        )
    _kusto_string_views(con, schemas)
    LocalEngine._lock_down(con, options.pop("memory_limit", "2GB"), None)
    engine = LocalEngine(con, schemas, now=now, **options)
    return WindowedEngine(engine, con) if windowed else engine


_FROM, _TO = "ctirealm_window_from", "ctirealm_window_to"


class WindowedEngine:
    """An overlay engine whose tables show one time window at a time, and whose ``now()`` is
    that window's end: one scheduled run of a Sentinel rule per `query_window`.

    Each run binds its own clock (`LocalEngine.query`'s ``now``) and reuses the engine's
    cached translation.
    """

    def __init__(self, engine: Any, connection: Any) -> None:
        self.engine = engine
        self._con = connection
        self.schemas = engine.schemas

    def query_window(
        self, kql: str, start: datetime, end: datetime, *, limit: int, now: datetime | None = None
    ) -> Any:
        """*kql* over the rows of ``[start, end)``, with ``now()`` at *now* (default *end*; later
        when the end of the window is not ingested yet at the run's time)."""
        for name, moment in ((_FROM, start), (_TO, end)):
            naive = moment.astimezone(UTC).replace(tzinfo=None)
            self._con.execute(f"SET VARIABLE {name} = TIMESTAMP '{naive.isoformat(sep=' ')}'")
        return self.engine.query(kql, limit=limit, now=now or end)

    def close(self) -> None:
        self.engine.close()
