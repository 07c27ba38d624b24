"""Shortcut agents: adversaries that try to score without understanding the attack.

They exist to prove the benchmark cannot be gamed. Each sees only what a real
agent sees — the task (the objective text, the tool specs) and what its tool
calls return — and never reads ``cases/``, ``rules/``, ``telemetry/`` or the
labels. Each walks the cheap part of the workflow a lazy agent would (reports
found by tag with the objective's words, the ATT&CK ids they mention, the
schemas and samples of the tables the objective suggests, a couple of
queries), then submits a KQL query and a Sigma rule built on one shortcut:

============  =================================================================
``marker``    UUID-fragment, ``sim-`` and long-hex regexes over command lines,
              paths, URIs and user agents, kept where they select few rows
``rare_values`` rows carrying values that occur rarely in a categorical column
              (anomaly selection, ``summarize count() by Col``)
``keywords``  the objective's and report titles' words as ``has_any`` filters
``everything`` every row of the suggested tables
``fabricated`` query results it made up, and a query that returns nothing
``memorise``  the ids (and hosts or users) the keyword query showed on the
              tools' data, pinned in the final query and rule
============  =================================================================

A benchmark that measures detection engineering scores each of them near zero
on the final detection (C4). ``tests/shortcuts`` checks a fast subset;
``benchmarks/shortcuts.py`` runs them on the full set. Run one with
``--realm-agent python:ctirealm.agents.shortcuts:Marker``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..attack import extract_technique_ids
from ..sigma.spec import table_logsource
from ..tools.facade import AgentTools
from ..tools.toolbox import result_rows
from .base import Task
from .builtin import candidate_tables, kql_string

#: The natural event-id columns of the Microsoft tables, as their public documentation names
#: them; a result row that carries its table's id is traced to an event.
ID_COLUMNS = ("ReportId", "AuditId", "EventDataId", "CorrelationId", "RequestId", "OfficeId", "Id")
#: Column-name fragments that hold free text an attack leaves traces in.
TEXT_HINTS = ("CommandLine", "Path", "FileName", "Uri", "Url", "UserAgent")
WIDE_HINTS = (*TEXT_HINTS, "Operation", "Activity", "Verb", "DisplayName")
#: Entity columns a memorising agent pins (hosts first, then accounts).
ENTITY_COLUMNS = (
    "DeviceName",
    "Computer",
    "UserPrincipalName",
    "AccountName",
    "InitiatingProcessAccountName",
    "Caller",
    "Identity",
    "UserId",
    "ServicePrincipalName",
    "CallerIpAddress",
    "IPAddress",
)
_STOP = set(
    """a an and the to of in on by for from with that this which into or as is are be
write detection rule detect identify monitoring monitor events event activity using use via their
its any new such when where who what than then through suspicious malicious potential attempts
attempt attacker attackers adversary adversaries outside normal linux azure kubernetes cluster
used uses other them they were been have has within across after before being more most also""".split()
)
_WORD = re.compile(r"[A-Za-z0-9_./:~-]{4,}")


def literals(values: list[Any]) -> str:
    """Values as a KQL list body: strings quoted, numbers as they are."""
    return ", ".join(kql_string(v) if isinstance(v, str) else str(v) for v in values)


def terms(text: str) -> list[str]:
    """Words of *text* worth searching for, most specific (paths, dotted names) first."""
    found = []
    for token in _WORD.findall(text):
        token = token.strip(".:,-/~")
        if len(token) >= 4 and token.lower() not in _STOP and not token.isdigit():
            found.append(token)
    unique = list(dict.fromkeys(found))
    return sorted(unique, key=lambda t: (-sum(c in t for c in "/.-:"), -len(t)))


@dataclass
class Seen:
    """What the agent learnt through its tools before choosing its shortcut."""

    objective: str
    titles: list[str] = field(default_factory=list)
    techniques: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    columns: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    #: Rows some execute_kql_query call returned: submitted when the shortcut returns none.
    probe_rows: list[dict[str, Any]] = field(default_factory=list)

    def strings(self, table: str, hints: tuple[str, ...] | None = None) -> list[str]:
        """String columns of *table* (whose names contain one of *hints*), ids excluded."""
        return [
            c
            for c, t in self.columns[table]
            if t == "string"
            and c not in ID_COLUMNS
            and not (hints and c.endswith("Id"))
            and (hints is None or any(h.lower() in c.lower() for h in hints))
        ]

    def ids(self, table: str) -> list[str]:
        present = {c for c, _ in self.columns[table]}
        return [c for c in ID_COLUMNS if c in present]

    def project(self, table: str) -> str:
        return f"project {', '.join(self.ids(table))}" if self.ids(table) else "take 100000"


@dataclass
class Detection:
    """A shortcut's answer: the KQL, and the Sigma rule's table and selections."""

    kql: str
    table: str
    selections: dict[str, dict[str, Any]]
    idea: str
    rows: list[dict[str, Any]] | None = None  # set only by an agent that makes its rows up


def union(parts: dict[str, str]) -> str:
    """One query over several tables: ``union (A | ...), (B | ...)``; just the part for one."""
    if len(parts) == 1:
        return next(iter(parts.values()))
    return "union\n" + ",\n".join(f"({part})" for part in parts.values())


class Shortcut:
    """The cheap workflow every shortcut shares; each subclass's ``detect`` picks the shortcut."""

    name = "shortcut"
    #: How many suggested tables a shortcut looks at.
    max_tables = 3
    #: ``detect(seen, tools)``: the final detection, defined by each shortcut.
    detect: Callable[[Seen, AgentTools], Detection]

    def run(self, task: Task, tools: AgentTools) -> dict[str, Any]:
        seen = self.explore(task, tools)
        detection = self.detect(seen, tools)
        rows = detection.rows
        if rows is None:
            rows = result_rows(tools.execute_kql_query(query=detection.kql)) or seen.probe_rows
        tools.say(f"Final detection ({detection.idea}) returns {len(rows)} rows shown.")
        return {"sigma_rule": self.sigma(seen, detection), "kql_query": detection.kql, "query_results": rows}

    def explore(self, task: Task, tools: AgentTools) -> Seen:
        seen = Seen(task.objective)
        words = {w.lower() for w in re.findall(r"[A-Za-z][A-Za-z-]{3,}", task.objective)} - _STOP
        if "list_cti_report_tags" in tools.names:
            counts = {t["tag"]: t["count"] for t in json.loads(tools.list_cti_report_tags())}
            overlapping = [t for t in counts if set(re.split(r"[\s-]+", t.lower())) & words]
            found: Counter[str] = Counter()
            for tag in sorted(overlapping, key=lambda t: (counts[t], t))[:2]:
                for report in json.loads(tools.get_cti_reports_by_tag(tag=tag)):
                    seen.titles.append(report["title"])
                    found.update(extract_technique_ids(report["content"]))
            seen.techniques = [t for t, _ in found.most_common(3)]
        available = {t["TableName"]: t["Rows"] for t in json.loads(tools.list_kusto_tables())}
        seen.tables = [t for t in candidate_tables(task.objective) if t in available][: self.max_tables]
        seen.sizes = {t: int(available[t]) for t in seen.tables}
        tools.say(
            f"This looks like {', '.join(seen.techniques) or 'an unknown technique'}; "
            f"the data should be in {', '.join(seen.tables)}."
        )
        for table in seen.tables:
            schema = json.loads(tools.get_table_schema(table_name=table))
            seen.columns[table] = [(c["ColumnName"], c["ColumnType"]) for c in schema["Columns"]]
            tools.sample_table_data(table_name=table, rows=3)
        if seen.tables:
            first = seen.tables[0]
            seen.probe_rows = result_rows(tools.execute_kql_query(query=f"{first} | take 5"))
            tools.execute_kql_query(query=f"{first} | summarize count()")
        return seen

    def sigma(self, seen: Seen, detection: Detection) -> str:
        """A Sigma rule of the same idea, on the detection's main table."""
        selections = detection.selections or {
            "selection": {f"{seen.strings(detection.table)[0]}|contains": terms(seen.objective)[:3]}
        }
        # Title Case and no ATT&CK tags (the validators want each tag's tactic): full syntax marks.
        rule = {
            "title": " ".join(
                w if w in ("in", "of", "the") else w.capitalize() for w in detection.idea.split()
            )[:110],
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"ctirealm-shortcut/{self.name}/{seen.objective}")),
            "status": "experimental",
            "description": f"{detection.idea}. Objective: {seen.objective}"[:1000],
            "author": "ctirealm shortcut agents",
            "date": "2026-03-16",
            "logsource": table_logsource(detection.table),
            "detection": {**selections, "condition": "1 of selection*"},
            "falsepositives": ["Unknown"],
            "level": "medium",
        }
        return yaml.safe_dump(rule, sort_keys=False, allow_unicode=True)


class Marker(Shortcut):
    """Marker regexes (UUID fragments, ``sim-`` tags, long hex) over text columns."""

    name = "marker"
    REGEXES = (
        r"[0-9a-f]{8}-[0-9a-f]{4}([^-0-9a-f]|$)",
        r"(^|[^a-z])sim-[0-9a-z]",
        r"(^|[^0-9a-f])[0-9a-f]{12,}([^0-9a-f]|$)",
    )

    def detect(self, seen: Seen, tools: AgentTools) -> Detection:
        kept: dict[str, list[tuple[str, str]]] = {}
        for table in seen.tables:
            pairs = [(c, r) for c in seen.strings(table, TEXT_HINTS) for r in self.REGEXES]
            if not pairs:
                continue
            counts = ", ".join(
                f"m{i} = countif({c} matches regex {kql_string(r)})" for i, (c, r) in enumerate(pairs)
            )
            found = result_rows(tools.execute_kql_query(query=f"{table} | summarize {counts}"))
            # A marker is rare: kept when it selects something, but at most 1% of the table.
            cap = max(20, seen.sizes.get(table, 0) // 100)
            hits = found[0] if found else {}
            chosen = [p for i, p in enumerate(pairs) if 0 < int(hits.get(f"m{i}") or 0) <= cap]
            if chosen:
                kept[table] = chosen
        if not kept and seen.tables:
            table = seen.tables[0]
            kept[table] = [(c, self.REGEXES[0]) for c in seen.strings(table, TEXT_HINTS)[:3]]
        parts = {
            t: f"{t}\n| where "
            + " or ".join(f"{c} matches regex {kql_string(r)}" for c, r in pairs)
            + f"\n| {seen.project(t)}"
            for t, pairs in kept.items()
        }
        table = max(kept, key=lambda t: len(kept[t]))
        selections = {f"selection_{i}": {f"{c}|re": r} for i, (c, r) in enumerate(kept[table])}
        return Detection(union(parts), table, selections, "simulation markers in text columns")


class RareValues(Shortcut):
    """Anomaly selection: rows holding values that are rare in a categorical column."""

    name = "rare_values"
    max_columns = 10

    def detect(self, seen: Seen, tools: AgentTools) -> Detection:
        parts: dict[str, str] = {}
        rare_by_table: dict[str, dict[str, list[str]]] = {}
        for table in seen.tables:
            columns = seen.strings(table)
            if not columns:
                continue
            distinct = result_rows(
                tools.execute_kql_query(
                    query=f"{table} | summarize "
                    + ", ".join(f"d{i} = dcount({c})" for i, c in enumerate(columns))
                )
            )
            counts = distinct[0] if distinct else {}
            categorical = sorted(
                (int(counts.get(f"d{i}") or 0), c)
                for i, c in enumerate(columns)
                if 2 <= int(counts.get(f"d{i}") or 0) <= 200
            )
            limit = max(5, seen.sizes.get(table, 0) // 2000)
            rare: dict[str, list[str]] = {}
            for _, column in categorical[: self.max_columns]:
                found = result_rows(
                    tools.execute_kql_query(
                        query=f"{table} | summarize count() by {column} | where count_ < {limit} "
                        f"| order by count_ asc, {column} asc"
                    )
                )
                values = [str(r[column]) for r in found if r.get(column) not in (None, "")]
                if values:
                    rare[column] = values
            if not rare:
                continue
            score = " + ".join(
                f"iff({c} in ({', '.join(kql_string(v) for v in vs)}), 1, 0)" for c, vs in rare.items()
            )
            levels = result_rows(
                tools.execute_kql_query(
                    query=f"{table} | extend rarity = {score} | summarize "
                    + ", ".join(f"n{k} = countif(rarity >= {k})" for k in (1, 2, 3))
                )
            )
            level = levels[0] if levels else {}
            # The strictest level that still selects rows, unless a looser one is already small.
            cap = max(20, seen.sizes.get(table, 0) // 500)
            threshold = next(
                (k for k in (1, 2, 3) if 0 < int(level.get(f"n{k}") or 0) <= cap),
                max((k for k in (1, 2, 3) if int(level.get(f"n{k}") or 0) > 0), default=1),
            )
            parts[table] = (
                f"{table}\n| extend rarity = {score}\n| where rarity >= {threshold}\n| {seen.project(table)}"
            )
            rare_by_table[table] = rare
        if not parts:
            return Everything().detect(seen, tools)
        table = max(rare_by_table, key=lambda t: len(rare_by_table[t]))
        selections = {
            f"selection_{i}": {column: values}
            for i, (column, values) in enumerate(rare_by_table[table].items())
        }
        return Detection(union(parts), table, selections, "rare values of categorical columns")


class Keywords(Shortcut):
    """The objective's (and report titles') words as ``has_any`` filters over text columns."""

    name = "keywords"

    def words(self, seen: Seen) -> list[str]:
        from_titles = [t for title in seen.titles for t in terms(title)]
        return list(dict.fromkeys(terms(seen.objective)[:5] + from_titles[:2]))

    def filters(self, seen: Seen, tools: AgentTools) -> dict[str, tuple[list[str], list[str]]]:
        """Per table: the columns and words of a filter that selects something, not everything."""
        words = self.words(seen)
        chosen: dict[str, tuple[list[str], list[str]]] = {}
        for table in seen.tables:
            columns = seen.strings(table, WIDE_HINTS)[:8]
            if not columns or not words:
                continue
            # Broad first; narrowed to the most specific words when it selects over 1% of rows.
            for subset in (words, words[:3], words[:1]):
                found = result_rows(
                    tools.execute_kql_query(query=f"{table} | where {self.where(columns, subset)} | count")
                )
                count = int(found[0]["Count"]) if found else 0
                if count and count <= max(50, seen.sizes.get(table, 0) // 100):
                    chosen[table] = (columns, subset)
                    break
                if count:
                    chosen[table] = (columns, subset)
        return chosen

    @staticmethod
    def where(columns: list[str], words: list[str]) -> str:
        return " or ".join(f"{c} has_any ({', '.join(kql_string(w) for w in words)})" for c in columns)

    def detect(self, seen: Seen, tools: AgentTools) -> Detection:
        chosen = self.filters(seen, tools)
        if not chosen:
            return Everything().detect(seen, tools)
        parts = {
            t: f"{t}\n| where {self.where(cs, ws)}\n| {seen.project(t)}" for t, (cs, ws) in chosen.items()
        }
        table = next(iter(chosen))
        columns, words = chosen[table]
        selections = {f"selection_{i}": {f"{c}|contains": words} for i, c in enumerate(columns)}
        return Detection(union(parts), table, selections, "objective keywords in text columns")


class Everything(Shortcut):
    """Every row of the suggested tables."""

    name = "everything"

    def detect(self, seen: Seen, tools: AgentTools) -> Detection:
        parts = {t: f"{t}\n| {seen.project(t)}" for t in seen.tables}
        table = seen.tables[0]
        selections = {"selection": {f"{seen.strings(table)[0]}|re": ".*"}}
        return Detection(union(parts), table, selections, "every event of the suggested tables")


class Fabricated(Shortcut):
    """Made-up query results, and a final query that returns nothing useful."""

    name = "fabricated"

    def detect(self, seen: Seen, tools: AgentTools) -> Detection:
        table = seen.tables[0]
        ids = seen.ids(table) or ["Id"]
        text = (seen.strings(table, TEXT_HINTS) or seen.strings(table))[0]
        words = terms(seen.objective)[:3]
        kql = f"{table}\n| where {ids[0]} == '0'\n| project {', '.join(ids)}, {text}"
        # Rows no query returned, dressed up with the objective's words.
        rows = [{ids[0]: 100_000_000_000 + n, text: " ".join(words[: n + 1])} for n in range(3)]
        selections = {"selection": {f"{text}|contains": words}}
        return Detection(kql, table, selections, "events matching the objective", rows)


class Memorise(Keywords):
    """Pins the ids (in KQL) and hosts or users (in Sigma) its keyword queries showed."""

    name = "memorise"
    pages = 2

    def detect(self, seen: Seen, tools: AgentTools) -> Detection:
        chosen = self.filters(seen, tools)
        if not chosen:
            return Everything().detect(seen, tools)
        ids: dict[str, dict[str, list[Any]]] = {}
        entities: dict[str, dict[str, list[Any]]] = {}
        for table, (columns, words) in chosen.items():
            id_column = seen.ids(table)[0] if seen.ids(table) else None
            if id_column is None:
                continue
            seen_ids: list[Any] = []
            for _ in range(self.pages):  # the tools show 10 rows a query: page through them
                exclude = f" and not({id_column} in ({literals(seen_ids)}))" if seen_ids else ""
                page = result_rows(
                    tools.execute_kql_query(query=f"{table} | where ({self.where(columns, words)}){exclude}")
                )
                if not page:
                    break
                seen_ids += [r[id_column] for r in page if r.get(id_column) is not None]
                for column in ENTITY_COLUMNS:
                    values = [r[column] for r in page if isinstance(r.get(column), str) and r[column]]
                    if values:
                        entities.setdefault(table, {}).setdefault(column, []).extend(values)
                        break
            if seen_ids:
                ids[table] = {id_column: list(dict.fromkeys(seen_ids))}
        if not ids:
            return Everything().detect(seen, tools)
        parts = {}
        for table, pinned in ids.items():
            ((column, values),) = pinned.items()
            parts[table] = f"{table}\n| where {column} in ({literals(values)})\n| {seen.project(table)}"
        table = next(iter(ids))
        held = entities.get(table) or ids[table]
        selections = {"selection": {c: list(dict.fromkeys(vs))[:50] for c, vs in held.items()}}
        return Detection(union(parts), table, selections, "events and entities seen on the dev data")


#: The shortcut agents by name.
SHORTCUTS: dict[str, type[Shortcut]] = {
    cls.name: cls for cls in (Marker, RareValues, Keywords, Everything, Fabricated, Memorise)
}

__all__ = [
    "SHORTCUTS",
    "Everything",
    "Fabricated",
    "Keywords",
    "Marker",
    "Memorise",
    "RareValues",
    "Shortcut",
]
