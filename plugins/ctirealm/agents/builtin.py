"""Built-in agents: ``null`` (submits nothing), ``oracle`` (the reference solution), ``baseline``.

``oracle`` proves every case is solvable through the tools; ``baseline`` is a
deterministic, model-free analyst that really uses the tools, to put a floor
under any agent worth running.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from ..attack import extract_technique_ids
from ..cases import Case, CaseSet
from ..sigma.spec import table_logsource
from ..tools.facade import AgentTools
from ..tools.toolbox import result_rows
from .base import Task


class NullAgent:
    """Does nothing and submits nothing: every case scores zero."""

    name = "null"

    def run(self, task: Task, tools: AgentTools) -> None:
        return None


class OracleAgent:
    """Walks the workflow with the ground truth and submits each case's reference solution.

    It reads the ground truth and the solution files from the `CaseSet` it is built with, not
    through its tools: like every Python agent, it gets only the tool calls.
    """

    name = "oracle"

    def __init__(self, cases: CaseSet) -> None:
        self.cases = cases

    def run(self, task: Task, tools: AgentTools) -> dict[str, Any]:
        case = self.cases.cases[task.case_id]
        root = Path(case.path).resolve().parents[2]
        if "list_cti_report_tags" in tools.names:
            tags = {t["tag"]: t["count"] for t in json.loads(tools.list_cti_report_tags())}
            retrieved: set[str] = set()
            for report_id in case.reports:
                if report_id in retrieved:
                    continue
                report = self.cases.reports[report_id]
                # The rarest tag fetches the fewest unrelated reports.
                tag = min(report.tags, key=lambda t: (tags.get(t, 0), t))
                for found in json.loads(tools.get_cti_reports_by_tag(tag=tag)):
                    retrieved.add(found["id"])
        truth = case.ground_truth
        tools.say(
            f"The objective maps to ATT&CK {', '.join(truth.techniques)}; the evidence is in "
            f"{', '.join(truth.tables)}."
        )
        for table in truth.tables:
            tools.get_table_schema(table_name=table)
            tools.sample_table_data(table_name=table, rows=3)
        kql = (root / str(case.solution.kql)).read_text(encoding="utf-8").strip()
        sigma = (root / str(case.solution.sigma)).read_text(encoding="utf-8")
        tools.execute_kql_query(query=f"{truth.tables[0]} | summarize count()")
        rows = result_rows(tools.execute_kql_query(query=kql))
        tools.say(f"Final query returns {len(rows)} rows (first 10 shown).")
        return {"sigma_rule": sigma, "kql_query": kql, "query_results": rows}


# -- baseline -------------------------------------------------------------------

#: Words that place an objective on a platform, and that platform's tables (data, not branches).
PLATFORM_WORDS: dict[str, tuple[str, ...]] = {
    "aks": (
        "kubernetes",
        "k8s",
        "pod",
        "cluster",
        "namespace",
        "kubectl",
        "service account",
        "serviceaccount",
        "rbac",
        "clusterrole",
        "daemonset",
        "cronjob",
        "webhook",
        "admission",
        "kube-",
        "kubelet",
        "container image",
        "api server",
    ),
    "cloud": (
        "azure",
        "entra",
        "sign-in",
        "signin",
        "tenant",
        "subscription",
        "key vault",
        "graph",
        "mailbox",
        "inbox",
        "storage",
        "blob",
        "consent",
        "service principal",
        "role assignment",
        "office",
        "m365",
        "oauth",
        "password spray",
    ),
}
#: Per platform: objective words -> tables that record them, most specific first.
TABLE_HINTS: dict[str, dict[str, tuple[str, ...]]] = {
    "linux": {
        "file": ("DeviceFileEvents",),
        "writ": ("DeviceFileEvents",),
        "dropp": ("DeviceFileEvents",),
        "": ("DeviceProcessEvents", "DeviceFileEvents"),
    },
    "aks": {"": ("AKSAudit", "AKSAuditAdmin")},
    "cloud": {
        "service principal": ("AADServicePrincipalSignInLogs", "AuditLogs"),
        "sign-in": ("SigninLogs",),
        "signin": ("SigninLogs",),
        "password": ("SigninLogs",),
        "consent": ("AuditLogs",),
        "application": ("AuditLogs",),
        "role assignment": ("AzureActivity",),
        "key vault": ("AzureDiagnostics",),
        "secret": ("AzureDiagnostics",),
        "graph": ("MicrosoftGraphActivityLogs",),
        "mailbox": ("OfficeActivity",),
        "inbox": ("OfficeActivity",),
        "blob": ("StorageBlobLogs",),
        "storage": ("StorageBlobLogs",),
        "": ("SigninLogs", "AuditLogs"),
    },
}


#: Per platform: the report tags that place a report there, and tags that place it elsewhere
#: (an AKS report is tagged ``azure`` too).
PLATFORM_TAGS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "linux": (frozenset({"linux"}), frozenset()),
    "aks": (frozenset({"kubernetes"}), frozenset()),
    "cloud": (frozenset({"azure", "entra id", "cloud", "m365"}), frozenset({"kubernetes", "linux"})),
}


def platform_of(objective: str) -> str:
    """The platform an objective's words place it on (``linux`` when none does)."""
    lowered = objective.lower()
    hits = {p: sum(lowered.count(w) for w in words) for p, words in PLATFORM_WORDS.items()}
    return max(hits, key=lambda p: (hits[p], p)) if any(hits.values()) else "linux"


def on_platform(report: dict[str, Any], platform: str) -> bool:
    """Whether a report's tags place it on *platform*."""
    tags = {t.lower() for t in report.get("tags") or ()}
    wanted, elsewhere = PLATFORM_TAGS[platform]
    return bool(tags & wanted) and not tags & elsewhere


def report_relevance(report: dict[str, Any], words: set[str]) -> int:
    """How many of the objective's words a report uses, a word in its title or tags counting
    three times (distinct words, so a long report does not win by length)."""
    body = report["content"].lower()
    heading = (report["title"] + " " + " ".join(report.get("tags") or ())).lower()
    return sum((w in body) + 3 * (w in heading) for w in words if len(w) > 3)


def candidate_tables(objective: str) -> list[str]:
    """Tables worth exploring for an objective: platform first, then hints in the text."""
    lowered = objective.lower()
    platform = platform_of(objective)
    tables = [t for hint, ts in TABLE_HINTS[platform].items() if hint and hint in lowered for t in ts]
    tables += list(TABLE_HINTS[platform][""])
    return list(dict.fromkeys(tables))


#: The text a baseline filter searches, per table: the main string column first (the Sigma
#: rule's field), then other text an artefact may sit in (dynamic columns as their JSON text).
SEARCH_COLUMNS: dict[str, tuple[str, ...]] = {
    "DeviceProcessEvents": ("ProcessCommandLine", "InitiatingProcessCommandLine", "FolderPath"),
    "DeviceFileEvents": ("FolderPath", "InitiatingProcessCommandLine"),
    "AKSAudit": ("RequestUri", "tostring(RequestObject)", "tostring(User)", "UserAgent"),
    "AKSAuditAdmin": ("RequestUri", "tostring(RequestObject)", "tostring(User)", "UserAgent"),
    "SigninLogs": ("AppDisplayName", "ResourceDisplayName", "UserAgent", "ResultDescription"),
    "AADServicePrincipalSignInLogs": ("ServicePrincipalName", "ResourceDisplayName"),
    "AuditLogs": ("OperationName", "tostring(TargetResources)", "tostring(InitiatedBy)"),
    "AzureActivity": ("OperationNameValue", "tostring(Properties_d)", "Caller"),
    "AzureDiagnostics": ("OperationName", "requestUri_s", "id_s"),
    "MicrosoftGraphActivityLogs": ("RequestUri", "UserAgent"),
    "OfficeActivity": ("Operation", "Parameters", "UserAgent"),
    "StorageBlobLogs": ("OperationName", "Uri", "UserAgentHeader"),
}
SEARCH_COLUMN = {table: columns[0] for table, columns in SEARCH_COLUMNS.items()}
_STOP = set(
    """a an and the to of in on by for from with that this which into or as is are be
write detection rule detect identify monitoring monitor events event activity using use via
their its any new such when where who what than then through suspicious malicious potential
attempts attempt attacker attackers adversary adversaries""".split()
)
_TERM = re.compile(r"[A-Za-z0-9_./:-]{3,}")
#: A capitalised prose word or product name ("Kubernetes", "Linux"); "SELinux" and "ClusterRole"
#: are names a log carries and stay terms.
_TITLE = re.compile(r"[A-Z][a-z]+")


def _terms(objective: str) -> list[str]:
    """Concrete terms of the objective, most specific (paths, flags, dotted names) first."""
    found = []
    for token in _TERM.findall(objective):
        token = token.strip(".:,-")
        if len(token) < 3 or token.lower() in _STOP or _TITLE.fullmatch(token):
            continue
        found.append(token)
    ranked = sorted(
        dict.fromkeys(found), key=lambda t: (-(("/" in t) + ("." in t) + ("-" in t) + (":" in t)), -len(t))
    )
    return ranked


def kql_string(value: str) -> str:
    """A KQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _observed(report: str) -> list[str]:
    """Artefacts a report says were observed: the path, flag and name tokens of its inline code
    (`` `crontab -l | ...` ``, `` `/dev/shm` ``), most specific first."""
    tokens = [t.strip(".:,;'\"()|<>") for span in re.findall(r"`([^`\n]+)`", report) for t in span.split()]
    found = [
        t
        for t in dict.fromkeys(tokens)
        if len(t) >= 4 and _TERM.fullmatch(t) and t.lower() not in _STOP and _specificity(t) == 2
    ]
    return sorted(found, key=lambda t: (-len(t.split("/")), t))


def _specificity(term: str) -> int:
    """2 for an artefact a log carries (a path, flag, dotted, numbered or CamelCase name), 1 for
    a plain word."""
    artefact = (
        any(c in term for c in "/._=")
        or "-" in term.strip("-")
        or any(c.isdigit() for c in term)
        or any(c.isupper() for c in term[1:])
        or term.startswith("-")
    )
    return 2 if artefact else 1


def _match(column: str, term: str) -> str:
    """A KQL condition for *term* in *column*: ``has`` for a word, ``contains`` for an artefact
    (a path, flag or dotted name, which ``has`` would need as whole tokens) and in a URI, where
    resource names run words together (``certificatesigningrequests``)."""
    word = term.replace("_", "").isalnum() and not column.endswith(("Uri", ")"))
    operator = "has" if word else "contains"
    return f"{column} {operator} {kql_string(term)}"


#: Most terms whose selectivity is measured per table, and the share of a table's rows above
#: which a term is too common to be evidence (a word every command line carries).
MAX_TERMS = 12
#: Tags read for reports: the most specific that share a word with the objective.
REPORT_TAGS = 3
COMMON_SHARE = 0.001
#: The share of a table's rows a detection may return before the baseline narrows it.
NARROW_SHARE = 0.0001


class BaselineAgent:
    """A deterministic analyst without a model: overlap-driven reading, selectivity-driven KQL.

    It reads the reports of the tags that share words with the objective, keeps those on the
    objective's platform and takes the one using most of the objective's words (its title and
    tags weigh more) for its techniques and observed artefacts, explores the tables the
    objective suggests, measures how often each of the objective's terms occurs in each table's
    main text column (one ``summarize countif(...)`` per table), keeps the terms that occur but
    are rare — evidence rather than vocabulary — and detects on those, narrowing to the rarest
    while their union is more rows than a detection should return (a hundredth of a percent of
    the table). It understands nothing of the attack, so it is a floor.
    """

    name = "baseline"

    def run(self, task: Task, tools: AgentTools) -> dict[str, Any] | None:
        objective = task.objective
        techniques: list[str] = []
        observed: list[str] = []
        if "list_cti_report_tags" in tools.names:
            best = self.read_reports(tools, objective)
            if best is not None:
                techniques = extract_technique_ids(best["content"])[:3]
                observed = _observed(best["content"])
        tables = candidate_tables(objective)[:2]
        tools.say(
            f"Candidate techniques: {', '.join(techniques) or 'none found'}. "
            f"Candidate tables: {', '.join(tables)}."
        )
        for table in tables:
            tools.get_table_schema(table_name=table)
            tools.sample_table_data(table_name=table, rows=5)
        # A terse objective names the behaviour; the report says what was observed (its inline
        # code: commands, paths, API names). Both are measured; artefacts rank first.
        terms = list(dict.fromkeys(_terms(objective)[:MAX_TERMS] + observed[: 2 * MAX_TERMS]))
        if not terms:
            return None
        picks = self._selective(tools, tables, terms)
        if not picks:
            return None
        table, chosen = picks[0]
        column = SEARCH_COLUMN[table]
        selections = [f"{t}\n| where " + " or ".join(_match(col, x) for col, x in c) for t, c in picks]
        # Evidence in several tables (a process and the file it wrote): one query over each.
        final = (
            selections[0] if len(selections) == 1 else "union\n" + ",\n".join(f"({s})" for s in selections)
        )
        rows = result_rows(tools.execute_kql_query(query=final))
        if not rows:
            return None
        counts = Counter(str(r.get(column, "")) for r in rows)
        tools.say(
            f"Final query keeps the rare terms {', '.join(t for _, t in chosen)}; most "
            f"common {column} shown: {counts.most_common(1)[0][0][:120]}"
        )
        # The Sigma rule: the terms found in plain columns, field by field (else the main one).
        fields: dict[str, list[str]] = {}
        for col, term in chosen:
            if "(" not in col:
                fields.setdefault(col, []).append(term)
        selection = {f"{col}|contains": terms for col, terms in fields.items()} or {
            f"{column}|contains": [t for _, t in chosen]
        }
        sigma = {
            "title": f"Baseline detection: {objective[:60]}",
            "status": "experimental",
            "description": objective,
            "author": "ctirealm baseline",
            "tags": [f"attack.{t.lower()}" for t in techniques],
            "logsource": table_logsource(table),
            "detection": {
                **{f"selection{n}": {k: v} for n, (k, v) in enumerate(selection.items())},
                "condition": "1 of selection*",
            },
            "level": "medium",
        }
        return {
            "sigma_rule": yaml.safe_dump(sigma, sort_keys=False),
            "kql_query": final,
            "query_results": rows,
        }

    @staticmethod
    def read_reports(tools: Any, objective: str) -> dict[str, Any] | None:
        """The report the baseline works from, read through the report tools.

        The most specific tags that share a word with the objective are read; of their reports,
        those on the objective's platform are candidates (a "password" tag also holds cloud
        password sprays); none there: the platform's own tag. The candidate using most of the
        objective's words wins."""
        words = {w.lower() for w in re.findall(r"[A-Za-z][A-Za-z-]+", objective)} - _STOP
        counts = {t["tag"]: t["count"] for t in json.loads(tools.list_cti_report_tags())}
        platform = platform_of(objective)
        overlapping = [t for t in counts if set(t.lower().split()) & words]
        chosen = sorted(overlapping, key=lambda t: (counts[t], t))[:REPORT_TAGS]
        candidates = [
            r
            for tag in chosen
            for r in json.loads(tools.get_cti_reports_by_tag(tag=tag))
            if on_platform(r, platform)
        ]
        if not candidates:
            wanted = sorted(
                (t for t in counts if t.lower() in PLATFORM_TAGS[platform][0]), key=lambda t: (counts[t], t)
            )
            for tag in wanted[:1] or list(counts)[:1]:
                found = json.loads(tools.get_cti_reports_by_tag(tag=tag))
                candidates = [r for r in found if on_platform(r, platform)] or found
        if not candidates:
            return None
        return max(candidates, key=lambda r: (report_relevance(r, words), r["id"]))

    @staticmethod
    def _selective(
        tools: AgentTools, tables: list[str], terms: list[str]
    ) -> list[tuple[str, list[tuple[str, str]]]]:
        """Per table, the ``(column, term)`` pairs to detect on: terms that occur in one of the
        table's text columns but in few rows, their union narrowed to the rarest while it is
        large. Tables where some pair is rare come first (most pairs kept first); a table where
        none is comes only when no table has one, with its least common pair."""
        rare_picks: list[tuple[tuple[int, int], str, list[tuple[str, str]]]] = []
        weak_picks: list[tuple[tuple[int, int], str, list[tuple[str, str]]]] = []
        for table in tables:
            pairs = [(c, t) for t in terms for c in SEARCH_COLUMNS[table]]
            counters = ", ".join(f"p{i} = countif({_match(c, t)})" for i, (c, t) in enumerate(pairs))
            found = result_rows(
                tools.execute_kql_query(query=f"{table}\n| summarize total = count(), {counters}")
            )
            if not found or not found[0].get("total"):
                continue
            total = int(found[0]["total"])
            hits = {pair: int(found[0].get(f"p{i}") or 0) for i, pair in enumerate(pairs)}
            limit = max(5, int(total * COMMON_SHARE))
            # Artefacts (paths, flags, dotted or CamelCase names) before plain words, each by
            # rarity: a rare English word is chance, a rare path is evidence.
            rare = sorted(
                (p for p in pairs if 0 < hits[p] <= limit), key=lambda p: (-_specificity(p[1]), hits[p], p)
            )
            if not rare:
                common = sorted((p for p in pairs if hits[p]), key=lambda p: (hits[p], p))[:1]
                if common:
                    weak_picks.append(((0, hits[common[0]]), table, common))
                continue
            # Narrow the union while it is larger than a detection's worth of rows (a union of
            # rare terms grows with the background): the strongest evidence stays.
            chosen = list(rare)
            narrow = max(5, int(total * NARROW_SHARE))
            while len(chosen) > 1 and sum(hits[p] for p in chosen) > narrow:
                chosen.pop()
            rare_picks.append(((-len(chosen), sum(hits[p] for p in chosen)), table, chosen))
        # Nothing rare anywhere: the least common pair that occurs at all, a weak detection
        # honestly submitted rather than none.
        picks = sorted(rare_picks) or sorted(weak_picks)[:1]
        return [(table, chosen) for _, table, chosen in picks]


def builtin_agent(name: str, cases: CaseSet) -> Any:
    if name == "null":
        return NullAgent()
    if name == "oracle":
        return OracleAgent(cases)
    if name == "baseline":
        return BaselineAgent()
    raise ValueError(f"unknown built-in agent {name!r}; built-ins: baseline, oracle, null")


__all__ = ["BaselineAgent", "Case", "NullAgent", "OracleAgent", "builtin_agent"]
