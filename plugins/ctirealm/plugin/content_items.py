"""The content gate's Sentinel analytics rules and hunting queries: collectors and the
reviewer's checks.

Loaded by the `content` hook module when a rule is collected. A rule's query runs over the
store's benign background (``A``), over the background plus its must-match events (``B``) and
plus its must-not-match events (``C``), each once per session; `content_schedule` turns each
of those into Sentinel's scheduled runs (every ``queryFrequency`` over ``queryPeriod``) and
the trigger decides which runs raise alerts. In each run, rows of ``B`` (or ``C``) that ``A``
does not have are what the test events added: aggregating queries (``summarize ... by``) drop
event ids, so comparing outputs is what works for every rule; when the output keeps an id
column, each must-match event is also looked for by id. Alerts a rule's suppression
(``suppressionEnabled``) holds back are counted apart, and an ingestion delay declared beside
the rule (``tests.yaml``) narrows what each run reads.

The rule's fields and their schema check are `content_rule`. `RuleCollector` holds what one
detection's items share; a rule file, a Markdown block
(`content_markdown`) and a Defender custom detection (`content_defender`) are collectors of it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ..attack import load_attack
from ..engine import EngineError
from ..telemetry.attribution import tables_in
from ..telemetry.schema import parse_datetime
from . import StoreUnavailable, session_store, split_engine
from .checks import CheckItem, check_items, relative
from .content_data import (
    ContentDataError,
    RuleTestData,
    labels_of,
    load_test_data,
    overlay_engine,
    tests_folder,
)
from .content_rule import (
    HUNTING_QUERY_ITEMS,
    ITEMS,
    ContentCheckFailed,
    SentinelRule,
    attack_version,
    camel,
    is_blank,
    read_rule,
    schema_problems,
    sentinel_data,
    tactic_key,
)
from .content_schedule import (
    MAX_RUNS,
    RUN_DELAY,
    Schedule,
    Simulation,
    binned,
    event_kinds,
    ids_in,
    iso_minute,
    per_run,
    row_times,
    unbinnable,
    whole_window,
)

_MAX_ROWS = 50_000
_SHOWN = 3
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# -- runs ----------------------------------------------------------------------------------


@dataclass
class Run:
    """The query's output over one data set, or the error it raised."""

    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    truncated: bool = False


def _execute(engine: Any, query: str) -> Run:
    try:
        result = engine.query(query, limit=_MAX_ROWS)
    except EngineError as exc:
        return Run(error=str(exc))
    return Run(list(result.column_names), result.to_dicts(), truncated=bool(result.truncated))


def _key(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, default=str)


def new_rows(after: Run, before: Run) -> list[dict[str, Any]]:
    """Rows of *after* that *before* does not have (as a multiset): what the added events raised."""
    left = Counter(_key(r) for r in before.rows)
    out = []
    for row in after.rows:
        key = _key(row)
        if left[key] > 0:
            left[key] -= 1
        else:
            out.append(row)
    return out


# -- the collector --------------------------------------------------------------------------


class RuleCollector(pytest.Collector):
    """One detection (a rule file, or one query of a Markdown file); its items share the
    parsed rule, its test data and its runs. Subclasses say which items it has, how it is read
    (`rule`) and scheduled (`schedule`)."""

    item_names: tuple[str, ...] = ITEMS
    hunting = False
    #: Which schema the parse check holds the rule's fields to: ``sentinel``, ``hunting``
    #: (name and query), or ``none`` (a bare query).
    fields = "sentinel"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._rule: SentinelRule | None = None
        self._data: RuleTestData | ContentDataError | None = None
        self._data_read = False
        self._runs: dict[str, Run] = {}
        self._simulated: dict[str, Simulation] = {}
        self._engines: dict[str, Any] = {}

    def collect(self) -> list[pytest.Item]:
        return check_items(
            self,
            self.item_class,
            self.item_names,
            pytest.mark.realm_content(str(self.path)),
            f"content:{self.path}",
        )

    def rule(self) -> SentinelRule:
        if self._rule is None:
            self._rule = read_rule(self.path)
        return self._rule

    @property
    def item_class(self) -> type[SentinelItem]:
        return SentinelItem

    @property
    def label(self) -> str:
        return f"{self.rule().name!r} ({relative(self.config, self.path)})"

    def locate(self, message: str) -> str:
        """*message* with query positions made positions in the file (a Markdown block)."""
        return message

    def first_line(self) -> int:
        """The 0-based line of the file where the rule starts, for reports."""
        return 0

    def tests_folder(self) -> Path:
        return tests_folder(self.path)

    def schemas(self) -> dict[str, Any]:
        return dict(split_engine(self.config, "dev").schemas)

    def unknown_tables(self) -> list[str]:
        """Tables the query reads that the telemetry has no schema for: the one the engine
        names, and any other table a connector delivers that the query mentions."""
        run = self.run("background")
        found = set(re.findall(r"'([^']+)': unknown table|unknown table '([^']+)'", run.error or ""))
        names = {n for pair in found for n in pair if n}
        if names:
            schemas = self.schemas()
            delivered = {t for tables in sentinel_data()["connectors"].values() for t in tables}
            words = set(_IDENTIFIER.findall(self.rule().query))
            names |= {t for t in delivered & words if t not in schemas}
        return sorted(names)

    def test_data(self) -> RuleTestData | None:
        if not self._data_read:
            self._data_read = True
            store = session_store(self.config)
            try:
                self._data = load_test_data(self.path, self.schemas(), store.now, folder=self.tests_folder())
            except ContentDataError as exc:
                self._data = exc
        if isinstance(self._data, ContentDataError):
            raise ContentCheckFailed(f"test data: {self._data}")
        return self._data

    def run(self, which: str) -> Run:
        """``background`` (the store), ``match`` or ``nomatch`` (the store plus those events)."""
        if which not in self._runs:
            self._runs[which] = _execute(self.engine(which), self.rule().query)
        return self._runs[which]

    def engine(self, which: str) -> Any:
        """The store's engine, or one over the store plus the *which* test events (kept until
        the rule's last item has run)."""
        if which == "background":
            return split_engine(self.config, "dev")
        if which not in self._engines:
            data = self.test_data()
            assert data is not None
            store = session_store(self.config)
            self._engines[which] = overlay_engine(store.path, self.schemas(), store.now, data.rows(which))
        return self._engines[which]

    def schedule(self) -> Schedule:
        schedule = Schedule.of(self.rule().doc)
        data = self.test_data()
        if data is not None and data.ingestion_delay:
            read = tables_in(self.rule().query, self.schemas())
            schedule = schedule.with_ingestion_delay(data.delay_for(read))
        return schedule

    def labels(self, which: str) -> Any:
        if which == "background":
            return session_store(self.config).labels
        data = self.test_data()
        assert data is not None
        return labels_of(data, self.schemas())

    def simulated(self, which: str) -> Simulation:
        """Every scheduled run of the rule over one data set (`content_schedule`)."""
        if which in self._simulated:
            return self._simulated[which]
        schedule, query, schemas = self.schedule(), self.rule().query, self.schemas()
        store = session_store(self.config)
        start = _aware(parse_datetime(store.meta["window"][0]))
        ends = schedule.ends(start, store.now)
        run = self.run(which)
        # Runs with test events are compared with the store's own: both must exist.
        error = run.error or (self.simulated("background").error if which != "background" else None)
        if error:
            sim = Simulation(schedule, "none", error=error)
            self._simulated[which] = sim
            return sim
        read = tables_in(query, schemas)
        reason = unbinnable(query, schemas)
        if reason is None and run.truncated:
            reason = f"its output over the whole window passes {_MAX_ROWS} rows"
        if reason is None:
            times = row_times(run.rows, run.columns, read, schemas, self.engine(which), self.labels(which))
            if times is not None:
                sim = binned(schedule, ends, run.rows, run.columns, times)
                self._simulated[which] = sim
                return sim
            reason = "its rows carry neither an event time nor an event id"
        if len(ends) > MAX_RUNS:
            sim = whole_window(
                schedule,
                run.rows,
                run.columns,
                store.now,
                f"not simulated: {reason}, and {len(ends)} runs are too many to "
                "run one by one, so it ran once over the whole window",
            )
        else:
            windowed = self._engines.get(f"window:{which}")
            if windowed is None:
                data = self.test_data() if which != "background" else None
                rows = data.rows(which) if data is not None else {}
                windowed = overlay_engine(store.path, schemas, store.now, rows, windowed=True)
                self._engines[f"window:{which}"] = windowed
            note = f"not binned: {reason}"
            if which == "background":
                sim = per_run(schedule, ends, windowed, query, note=note, limit=_MAX_ROWS)
            else:
                lo, hi = self.test_span(which)
                sim = per_run(
                    schedule,
                    ends,
                    windowed,
                    query,
                    note=note,
                    limit=_MAX_ROWS,
                    only=lambda k, end: end > lo and schedule.window(k, end)[0] <= hi,
                    reuse=self.simulated("background"),
                )
        self._simulated[which] = sim
        return sim

    def test_span(self, which: str) -> tuple[datetime, datetime]:
        """The first and last time of the *which* test events."""
        data = self.test_data()
        assert data is not None
        schemas = self.schemas()
        times = [
            _aware(parse_datetime(row[schemas[t].time_column]))
            for t, rows in data.rows(which).items()
            for row in rows
        ]
        return min(times), max(times)

    def match_alerts(self) -> list[dict[str, Any]]:
        """The rows the must-match events add: in alerting runs for an analytics rule, in the
        one run over the whole window for a hunting query."""
        if self.hunting:
            return new_rows(self.run("match"), self.run("background"))
        return [row for _, rows in self.raised("match")[0] for row in rows]

    def raised(self, which: str) -> tuple[list[tuple[int, list[dict[str, Any]]]], list[tuple[int, int]]]:
        """What the *which* test events change, run by run: ``(alerting, quiet)``, the runs that
        raise alerts with rows the store alone does not return (and those rows), and the runs
        with such rows that do not raise alerts (and their result count)."""
        with_events, alone = self.simulated(which), self.simulated("background")
        same_runs = len(with_events.spans) == len(alone.spans)
        alerting, quiet = [], []
        firing, suppressed = set(with_events.firing()), set(with_events.suppressed())
        for k in range(len(with_events.spans)):
            rows = with_events.run_rows(k)
            # Evaluated two ways (binned, once over the whole window): against all of the store's.
            before = alone.run_rows(k) if same_runs else alone.rows
            added = new_rows(Run(rows=rows), Run(rows=before))
            if not added:
                continue
            if k in firing:
                alerting.append((k, added))
            elif k not in suppressed:
                quiet.append((k, len(rows)))
        return alerting, quiet

    def suppressed_with(self, which: str) -> list[tuple[int, int]]:
        """The runs with rows the *which* events add whose alert is suppressed (and their
        result count)."""
        with_events, alone = self.simulated(which), self.simulated("background")
        same_runs = len(with_events.spans) == len(alone.spans)
        out = []
        for k in with_events.suppressed():
            rows = with_events.run_rows(k)
            before = alone.run_rows(k) if same_runs else alone.rows
            if new_rows(Run(rows=rows), Run(rows=before)):
                out.append((k, len(rows)))
        return out

    def teardown(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()


class SentinelRuleFile(RuleCollector, pytest.File):
    """One Sentinel analytics rule file."""


class HuntingRuleFile(SentinelRuleFile):
    """A Sentinel hunting query in the Azure-Sentinel hunting schema (a YAML ``query`` with
    ``name``, ``requiredDataConnectors``, ``tactics``, ``relevantTechniques``, and no schedule
    or trigger): run once over the whole window by an analyst, so it has no false-positive
    budget; its must-match events, when it has some, must be among its rows."""

    item_names: tuple[str, ...] = ("parse", "runs", "connectors", "entities", "attack", "true_positives")
    hunting = True
    fields = "hunting"


class HuntingQueryFile(HuntingRuleFile):
    """A Defender or Sentinel hunting query (``.kql`` without a sibling ``.yml``): nowhere to
    declare connectors, entities or ATT&CK, so only that it works and what it returns."""

    item_names = HUNTING_QUERY_ITEMS
    fields = "none"

    def rule(self) -> SentinelRule:
        if self._rule is None:
            try:
                text = self.path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                self._rule = SentinelRule(self.path, error=f"cannot read: {exc}")
            else:
                self._rule = SentinelRule(self.path, {"name": self.path.stem, "query": text})
        return self._rule


# -- the items --------------------------------------------------------------------------------


class SentinelItem(CheckItem):
    """One reviewer's check of one analytics rule."""

    expected_failures = (ContentCheckFailed, StoreUnavailable)
    skip_at_item = True

    def failure_label(self) -> str:
        return self.rule_file.label

    def failure_text(self, message: str) -> str:
        return f"{self.failure_label()}: {self.rule_file.locate(message)}"

    @property
    def rule_file(self) -> RuleCollector:
        assert isinstance(self.parent, RuleCollector)
        return self.parent

    def runtest(self) -> None:
        rule = self.rule_file.rule()
        self.user_properties.extend(
            [
                ("rule", relative(self.config, self.path)),
                ("rule_check", self.check),
                ("rule_title", rule.name),
            ]
        )
        self.run_check()

    def _require(self, *, runs: bool = False) -> SentinelRule:
        rule = self.rule_file.rule()
        if rule.error or not rule.query.strip():
            pytest.skip(f"the rule does not parse: {rule.error or 'no query'}")
        if runs:
            unknown = self.rule_file.unknown_tables()
            if unknown:
                pytest.skip(f"cannot run offline: no schema for {', '.join(unknown)}")
            if self.rule_file.run("background").error:
                pytest.skip("the query does not run (see the runs check)")
        return rule

    # parse -------------------------------------------------------------------------------
    def _check_parse(self) -> None:
        rule = self.rule_file.rule()
        if rule.error:
            raise ContentCheckFailed(f"does not parse: {rule.error}")
        problems = self.field_problems(rule)
        if rule.query.strip():
            # Split engines are local ones, which translate; the Engine protocol has no such step.
            translate = getattr(split_engine(self.config, "dev"), "translate", None)
            try:
                if translate is not None:
                    translate(rule.query)
            except EngineError as exc:
                # Tables and workspace functions ctirealm lacks are the runs check's to report.
                if not re.search(r"unknown table", str(exc)) and not _workspace_function(exc):
                    problems.append(f"the query does not translate: {exc}")
        if problems:
            raise ContentCheckFailed("; ".join(problems))

    def field_problems(self, rule: SentinelRule) -> list[str]:
        """What the rule's own schema refuses in its fields."""
        fields = self.rule_file.fields
        if fields == "none":
            return []
        if fields == "hunting":
            return [f"{key} is missing" for key in ("name", "query") if not rule.doc.get(key)]
        return schema_problems(rule)

    # runs ---------------------------------------------------------------------------------
    def _check_runs(self) -> None:
        self._require()
        file = self.rule_file
        unknown = file.unknown_tables()
        if unknown:
            raise ContentCheckFailed(
                f"reads {', '.join(unknown)}, which the telemetry has no schema for "
                f"(tables: {', '.join(sorted(file.schemas()))})"
            )
        run = file.run("background")
        function = _workspace_function(run.error)
        if function:
            raise ContentCheckFailed(
                f"calls {function}, a Sentinel workspace function (a watchlist "
                "or an ASIM parser) that cannot run offline"
            )
        if run.error:
            raise ContentCheckFailed(f"does not run over the store: {run.error}")
        read = tables_in(self.rule_file.rule().query, file.schemas())
        self.user_properties.extend([("tables", read), ("background_rows", len(run.rows))])
        data = file.test_data()
        for which in ("match", "nomatch"):
            if data is not None and data.has(which):
                extra = file.run(which)
                if extra.error:
                    raise ContentCheckFailed(f"does not run with the {which} events: {extra.error}")
        if not read:
            raise ContentCheckFailed("reads no table of the telemetry")

    # connectors -----------------------------------------------------------------------------
    def _check_connectors(self) -> None:
        rule = self._require()
        known = sentinel_data()["connectors"]
        schemas = self.rule_file.schemas()
        declared: set[str] = set()
        problems = []
        entries = rule.doc.get("requiredDataConnectors") or []
        if not isinstance(entries, list) or not entries:
            raise ContentCheckFailed(
                "requiredDataConnectors is missing: name the connectors whose tables the query reads"
            )
        for entry in entries:
            connector = str((entry or {}).get("connectorId", ""))
            types = [str(t).split("(", 1)[0].strip() for t in (entry or {}).get("dataTypes") or []]
            if connector not in known:
                problems.append(f"unknown connector {connector!r} (known: {', '.join(sorted(known))})")
            for table in types:
                if connector in known and table not in known[connector]:
                    problems.append(f"connector {connector} does not deliver {table}")
                    continue
                declared.add(table)
                if table not in schemas:
                    problems.append(f"{connector} data type {table}: no such table in the telemetry")
        read = tables_in(rule.query, schemas)
        undeclared = [t for t in read if t not in declared]
        if undeclared:
            problems.append(f"the query reads {', '.join(undeclared)}, which no declared connector delivers")
        if problems:
            raise ContentCheckFailed("; ".join(problems))

    # entities -------------------------------------------------------------------------------
    def _check_entities(self) -> None:
        rule = self._require()
        data = sentinel_data()
        mappings = rule.doc.get("entityMappings") or []
        problems = []
        if not isinstance(mappings, list):
            raise ContentCheckFailed("entityMappings: expected a list")
        if len(mappings) > data["limits"]["entity_mappings"]:
            problems.append(
                f"{len(mappings)} entity mappings (Sentinel takes at most "
                f"{data['limits']['entity_mappings']})"
            )
        columns: list[tuple[str, str, str]] = []  # (entity type, identifier, column)
        for n, mapping in enumerate(mappings, 1):
            kind = str((mapping or {}).get("entityType", ""))
            fields = (mapping or {}).get("fieldMappings") or []
            if kind not in data["entities"]:
                problems.append(f"entity {n}: unknown entityType {kind!r}")
                continue
            if not fields:
                problems.append(f"entity {n} ({kind}): no fieldMappings")
            for f in fields:
                identifier, column = str(f.get("identifier", "")), str(f.get("columnName", ""))
                if identifier not in data["entities"][kind]:
                    problems.append(
                        f"{kind}.{identifier}: not an identifier of {kind} "
                        f"({', '.join(data['entities'][kind])})"
                    )
                if not column:
                    problems.append(f"{kind}.{identifier}: no columnName")
                    continue
                columns.append((kind, identifier, column))
        if problems:
            raise ContentCheckFailed("; ".join(problems))
        self._require(runs=True)
        file = self.rule_file
        output = file.run("background").columns
        missing = [
            f"{kind}.{identifier} -> {column}" for kind, identifier, column in columns if column not in output
        ]
        if missing:
            raise ContentCheckFailed(
                f"mapped columns missing from the query's output: {', '.join(missing)} "
                f"(output columns: {', '.join(output)})"
            )
        test = file.test_data()
        if test is None or not test.has("match"):
            return
        alerts = file.match_alerts()
        if not alerts:
            return  # true_positives reports it
        empty = unfilled(
            alerts, [(f"entity {kind}, identifier {ident}", col) for kind, ident, col in columns]
        )
        if empty:
            raise ContentCheckFailed(
                "mapped columns without a value on the rows the must-match events raise "
                "(Sentinel drops such an entity from the alert): " + "; ".join(empty)
            )

    # attack ---------------------------------------------------------------------------------
    def _check_attack(self) -> None:
        rule = self._require()
        attack = load_attack()
        by_key = {tactic_key(t.shortname): t for t in attack.tactics}
        tactics = [str(t) for t in rule.doc.get("tactics") or []]
        techniques = [str(t).strip() for t in rule.doc.get("relevantTechniques") or []]
        problems = []
        listed = set()
        for tactic in tactics:
            found = by_key.get(tactic_key(tactic))
            if found is None:
                problems.append(f"unknown tactic {tactic!r}")
            else:
                listed.add(found.shortname)
        for technique_id in techniques:
            technique = attack.get(technique_id)
            if technique is None:
                problems.append(f"unknown technique {technique_id!r} (ATT&CK v{attack_version()})")
                continue
            if listed and not set(technique.tactics) & listed:
                names = ", ".join(camel(t) for t in technique.tactics)
                problems.append(
                    f"{technique.id} ({technique.name}) is under {names}, none of the listed tactics"
                )
        if not tactics or not techniques:
            problems.append("tactics and relevantTechniques are both required")
        if problems:
            raise ContentCheckFailed("; ".join(problems))

    # execution --------------------------------------------------------------------------------
    def _check_true_positives(self) -> None:
        rule = self._require(runs=True)
        file = self.rule_file
        data = file.test_data()
        if not file.hunting:
            _check_coverage(file.schedule())
        if data is None or not data.has("match"):
            pytest.skip(
                f"untested: no must-match events in {relative(self.config, file.tests_folder())}/match/"
            )
        run = file.run("match")
        if run.error:
            raise ContentCheckFailed(f"does not run with the must-match events: {run.error}")
        if file.hunting:
            self._hunting_true_positives(data)
            return
        sim = file.simulated("match")
        if sim.error:
            raise ContentCheckFailed(f"its scheduled runs with the must-match events failed: {sim.error}")
        alerting, quiet = file.raised("match")
        alerts = [row for _, rows in alerting for row in rows]
        count = sum(len(v) for v in data.rows("match").values())
        schemas = file.schemas()
        read = tables_in(rule.query, schemas)
        wanted = {i for ids in data.ids("match", schemas).values() for i in ids}
        caught = wanted & {
            i for k, _ in alerting for i in ids_in(sim.run_rows(k), sim.columns, read, schemas)
        }
        traced = wanted & ids_in(sim.rows, sim.columns, read, schemas)
        suppressed = file.suppressed_with("match")
        self.user_properties.extend(
            [
                ("alerts", len(alerting)),
                ("tp", len(caught)),
                ("suppressed", len(suppressed)),
                ("schedule", sim.summary()),
            ]
        )
        self.add_report_section("call", "schedule (match)", sim.summary())
        self.add_report_section("call", "alerts (match)", rows_text(alerts))
        if not alerting and suppressed:
            k, results = suppressed[0]
            earlier = max(e for e in sim.firing() if e < k)
            raise ContentCheckFailed(
                f"suppressed: the run ending {iso_minute(sim.ends[k])} that reads the must-match "
                f"events gives {results} result rows, but an alert was raised by the run ending "
                f"{iso_minute(sim.ends[earlier])}, less than suppressionDuration "
                f"({_duration(sim.schedule.suppression)}) before, so the rule did not run"
            )
        if not alerting and not quiet:
            raise ContentCheckFailed(
                f"raised no alert on its {count} must-match events ({', '.join(data.rows('match'))})"
            )
        if not alerting:
            k, results = max(quiet, key=lambda q: q[1])
            raise ContentCheckFailed(
                f"would not fire: the run ending {iso_minute(sim.ends[k])} that reads the "
                f"must-match events gives {results} result rows, and the rule fires when that "
                f"is {sim.schedule.symbol} {sim.schedule.threshold} (triggerOperator "
                f"{sim.schedule.operator}; it runs {sim.schedule.cadence()})"
            )
        if traced and caught != wanted:
            missed = sorted(wanted - caught)
            raise ContentCheckFailed(
                f"missed {len(missed)} of {count} must-match events (no "
                f"alerting run returns them): " + ", ".join(missed[:20])
            )

    def _hunting_true_positives(self, data: RuleTestData) -> None:
        file = self.rule_file
        schemas = file.schemas()
        read = tables_in(file.rule().query, schemas)
        added = file.match_alerts()
        count = sum(len(v) for v in data.rows("match").values())
        wanted = {i for ids in data.ids("match", schemas).values() for i in ids}
        run = file.run("match")
        returned = wanted & ids_in(run.rows, run.columns, read, schemas)
        self.user_properties.extend([("rows", len(added)), ("tp", len(returned))])
        self.add_report_section("call", "rows (match)", rows_text(added))
        if not added:
            raise ContentCheckFailed(
                f"returned no row for its {count} must-match events ({', '.join(data.rows('match'))})"
            )
        if returned and returned != wanted:
            missed = sorted(wanted - returned)
            raise ContentCheckFailed(
                f"missed {len(missed)} of {count} must-match events: " + ", ".join(missed[:20])
            )

    def _check_false_positives(self) -> None:
        rule = self._require(runs=True)
        file = self.rule_file
        data = file.test_data()
        limit = data.max_false_positives if data is not None else 0
        sim = file.simulated("background")
        if sim.error:
            raise ContentCheckFailed(f"its scheduled runs over the store failed: {sim.error}")
        schemas = file.schemas()
        read = tables_in(rule.query, schemas)
        kinds = event_kinds(sim, read, schemas, file.engine("background"), session_store(self.config).labels)
        false_alerts = [
            (k, group) for k, group in sim.alert_groups() if not any(kinds[n] == "attack" for n in group)
        ]
        fp = len(false_alerts)
        self.user_properties.extend(
            [
                ("fp", fp),
                ("max_false_positives", limit),
                ("suppressed", len(sim.suppressed())),
                ("schedule", sim.summary()),
            ]
        )
        self.add_report_section("call", "schedule (background)", sim.summary())
        failures = []
        if fp > limit:
            seen: dict[str | None, set[str]] = {"hard_negative": set(), "benign": set(), None: set()}
            for _, group in false_alerts:
                for n in group:
                    if kinds[n] != "attack":
                        seen[kinds[n]].add(_key(sim.rows[n]))
            parts = [f"{len(seen['hard_negative'])} hard negatives", f"{len(seen['benign'])} background"]
            if seen[None]:
                parts.append(f"{len(seen[None])} result rows traced to no single event")
            k, group = false_alerts[0]
            shown = rows_text([sim.rows[n] for n in group], inline=True) if group else "no rows"
            failures.append(
                f"raised {fp} false-positive alerts over the store's benign activity "
                f"(max_false_positives: {limit}) in {len(sim.ends)} runs "
                f"{sim.schedule.describe()}: their rows hold {', '.join(parts)}, e.g. the run "
                f"ending {iso_minute(sim.ends[k])}: {shown}"
            )
        if data is not None and data.has("nomatch"):
            nomatch = file.simulated("nomatch")
            if nomatch.error:
                failures.append(f"its scheduled runs with the must-not-match events failed: {nomatch.error}")
            else:
                alerting, _ = file.raised("nomatch")
                raised = [row for _, rows in alerting for row in rows]
                if raised:
                    count = sum(len(v) for v in data.rows("nomatch").values())
                    failures.append(
                        f"alerted on its must-not-match events: {len(alerting)} alerting runs "
                        f"with {len(raised)} rows from {count} events, e.g. "
                        f"{rows_text(raised[:_SHOWN], inline=True)}"
                    )
        if failures:
            raise ContentCheckFailed("\n".join(failures))

    # reporting ------------------------------------------------------------------------------
    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, self.rule_file.first_line(), self.name


def _workspace_function(error: object) -> str | None:
    """``_GetWatchlist``, ``imAuthentication``, ``_ASim_...``: functions a workspace defines."""
    match = re.search(r"unknown function '((?:_|im|ASim)\w*)'", str(error or ""))
    return match.group(1) if match else None


def unfilled(rows: list[dict[str, Any]], mapped: list[tuple[str, str]]) -> list[str]:
    """For each ``(what, column)`` mapped, a problem when *column* is blank on some of *rows*
    (an alert that cannot name its entity), with an example row."""
    problems = []
    for what, column in mapped:
        blank = [row for row in rows if is_blank(row.get(column))]
        if blank:
            problems.append(
                f"{what}: column {column} is empty on {len(blank)} of {len(rows)}, "
                f"e.g. {rows_text(blank[:1], inline=True)}"
            )
    return problems


def rows_text(rows: list[dict[str, Any]], *, inline: bool = False, width: int = 160) -> str:
    lines = []
    for row in rows[: (_SHOWN if inline else 20)]:
        text = ", ".join(f"{k}={v}" for k, v in row.items() if v not in (None, "", [], {}))
        lines.append(text if len(text) <= width else text[: width - 3] + "...")
    return "; ".join(lines) if inline else "\n".join(lines) or "(none)"


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _check_coverage(schedule: Schedule) -> None:
    """Fail when late events fall where no run reads them (`Schedule.coverage_gap`)."""
    gap = schedule.coverage_gap()
    if not gap:
        return
    lag = schedule.lag
    raise ContentCheckFailed(
        f"misses late events: with an ingestion delay of {_duration(lag + RUN_DELAY)}, "
        f"the last {_duration(lag)} of each run's window is not ingested yet when the run "
        f"reads it (Sentinel starts a run {_duration(RUN_DELAY)} late), and the next run "
        f"does not look back that far, so events in {_duration(gap)} of every "
        f"{_duration(schedule.frequency)} are never read: make queryPeriod at least "
        f"{_duration(schedule.frequency + lag)} (and keep each event in one run with "
        f"ingestion_time() > ago({_duration(schedule.frequency)}))"
    )


def _duration(value: timedelta | None) -> str:
    minutes = int((value or timedelta(0)).total_seconds() // 60)
    if minutes and minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes and minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"
