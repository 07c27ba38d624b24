"""What every report says about a case, derived once from a normalised results document.

The HTML page, the Markdown summary, the comparison and the ATT&CK layer all
describe the same facts: checkpoint labels and order, reports / techniques /
tables found and missed, the detection outcome (validated, attempted, missed)
and, in plain sentences, why points were lost. They are computed here so the
outputs never disagree.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

#: Checkpoint order and labels (results.json may carry others; they follow, by name).
CHECKPOINT_LABELS: dict[str, tuple[str, str]] = {
    "C0_cti_reports": ("C0", "CTI reports"),
    "C1_attack_mapping": ("C1", "ATT&CK mapping"),
    "C2_data_sources": ("C2", "Data sources"),
    "C3_query_iteration": ("C3", "Query iteration"),
    "C4_kql_detection": ("C4", "KQL detection"),
    "C4_sigma_quality": ("C4", "Sigma quality"),
}

#: Detection outcomes, best first.
OUTCOMES = ("validated", "attempted", "missed")
OUTCOME_TEXT = {
    "validated": "detection validated: matched attack events and no benign events",
    "attempted": "detection attempted: it ran, but raised false positives or matched no attack event",
    "missed": "no working detection: nothing submitted, or the final query failed",
}


def checkpoint_code(name: str) -> str:
    return CHECKPOINT_LABELS.get(name, (name.split("_", 1)[0], ""))[0]


def checkpoint_label(name: str) -> str:
    """``C4_kql_detection`` -> ``KQL detection``; unknown names are prettified."""
    if name in CHECKPOINT_LABELS:
        return CHECKPOINT_LABELS[name][1]
    rest = name.split("_", 1)[1] if re.match(r"C\d+_", name) else name
    return rest.replace("_", " ").capitalize()


def checkpoint_names(results: dict[str, Any]) -> list[str]:
    """Checkpoints present in the run: the known order first, then any others by name."""
    seen: set[str] = set(results["summary"]["by_checkpoint"])
    for case in results["cases"]:
        seen.update(case["checkpoints"])
    known = [n for n in CHECKPOINT_LABELS if n in seen]
    return known + sorted(seen - set(known))


def anchor(case_id: str, epoch: int) -> str:
    """A DOM id for a case run: letters, digits, ``-`` and ``_`` only."""
    return "case-" + re.sub(r"[^A-Za-z0-9_-]", "_", case_id) + f"-e{epoch}"


def fmt_score(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def fmt_max(value: float) -> str:
    return f"{value:g}"


def ratio(score: float | None, maximum: float) -> float | None:
    if score is None:
        return None
    return score / maximum if maximum else 0.0


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def listing(items: list[str], limit: int = 6) -> str:
    shown = list(items[:limit])
    if len(items) > limit:
        shown.append(f"{len(items) - limit} more")
    if len(shown) <= 1:
        return "".join(shown)
    return ", ".join(shown[:-1]) + " and " + shown[-1]


@dataclass
class Compared:
    """Found vs expected: the sets a checkpoint is scored on (``expected`` None when unknown)."""

    found: list[str]
    expected: list[str] | None
    matched: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


@dataclass
class CaseFacts:
    """One case run (case and epoch) as the reports describe it."""

    data: dict[str, Any]
    id: str
    epoch: int
    anchor: str
    reports: Compared
    techniques: Compared
    tables: Compared
    outcome: str
    lost: list[str]
    notes: list[str]

    @property
    def label(self) -> str:
        return self.id if self.epoch == 1 else f"{self.id} (epoch {self.epoch})"


def _compare(
    found: list[str], expected: list[str] | None, details: dict[str, Any], *, matched_key: str | None = None
) -> Compared:
    out = Compared(found=sorted(set(found)), expected=None if expected is None else sorted(set(expected)))
    if out.expected is None:
        out.extra = []
        return out
    exp = set(out.expected)
    out.matched = (
        sorted(details.get(matched_key) or [])
        if matched_key and matched_key in details
        else sorted(exp & set(out.found))
    )
    out.missed = (
        sorted(details["missed"]) if isinstance(details.get("missed"), list) else sorted(exp - set(out.found))
    )
    out.extra = (
        sorted(details["extra"]) if isinstance(details.get("extra"), list) else sorted(set(out.found) - exp)
    )
    return out


def case_facts(case: dict[str, Any]) -> CaseFacts:
    checkpoints = case["checkpoints"]
    trajectory = case["trajectory"]
    truth = case["ground_truth"]
    c0 = checkpoints.get("C0_cti_reports", {}).get("details", {})
    c1 = checkpoints.get("C1_attack_mapping", {}).get("details", {})
    c2 = checkpoints.get("C2_data_sources", {}).get("details", {})

    read = c0.get("read") if isinstance(c0.get("read"), list) else trajectory["reports_read"]
    relevant = c0.get("relevant") if isinstance(c0.get("relevant"), list) else truth.get("reports")
    reports = _compare([str(r) for r in read], relevant, c0)

    named = c1.get("named") if isinstance(c1.get("named"), list) else trajectory["techniques_named"]
    expected = None
    if isinstance(c1.get("matched"), list) and isinstance(c1.get("missed"), list):
        expected = [str(t) for t in c1["matched"] + c1["missed"]]
    elif "techniques" in truth:
        expected = truth["techniques"]
    techniques = _compare([str(t) for t in named], expected, c1, matched_key="matched")

    explored = c2.get("explored") if isinstance(c2.get("explored"), list) else trajectory["tables_explored"]
    tables_expected = c2.get("expected") if isinstance(c2.get("expected"), list) else truth.get("tables")
    tables = _compare([str(t) for t in explored], tables_expected, c2)

    facts = CaseFacts(
        case,
        case["id"],
        case["epoch"],
        anchor(case["id"], case["epoch"]),
        reports,
        techniques,
        tables,
        detection_outcome(case),
        [],
        [],
    )
    facts.lost, facts.notes = why_points_were_lost(case, facts)
    return facts


def detection_outcome(case: dict[str, Any]) -> str:
    """validated (TP without FP), attempted (ran, but FP or no TP) or missed (nothing that ran)."""
    ran = [d for d in case["detection"].values() if not d.get("error")]
    if any(d["tp"] > 0 and d["fp"] == 0 for d in ran):
        return "validated"
    if ran:
        return "attempted"
    return "missed"


def _lost(score: float | None, maximum: float) -> float:
    return 0.0 if score is None else max(0.0, maximum - score)


def why_points_were_lost(case: dict[str, Any], facts: CaseFacts) -> tuple[list[str], list[str]]:
    """Plain sentences, one per checkpoint that lost points, the biggest loss first; and notes
    (unscored checkpoints, errors)."""
    sentences: list[str] = []
    losses: list[tuple[float, str]] = []
    notes: list[str] = []
    checkpoints = case["checkpoints"]
    if (
        case["status"] != "submitted"
        and checkpoints
        and all((c["score"] or 0.0) == 0.0 for c in checkpoints.values())
    ):
        reason = case["reason"] or case["status"].replace("_", " ")
        sentences.append(f"The case scored zero on every checkpoint: {reason.rstrip('.')}.")
        return sentences, _error_notes(case, notes)
    for name, cp in checkpoints.items():
        if cp["score"] is None:
            notes.append(
                f"{checkpoint_label(name)} was not scored: "
                f"{cp['message'].removeprefix('not scored: ') or 'no score given'}."
            )
            continue
        lost = _lost(cp["score"], cp["max"])
        if lost < 0.005:
            continue
        head = f"{checkpoint_label(name)} ({checkpoint_code(name)}) lost {lost:.2f} of {fmt_max(cp['max'])}: "
        losses.append((lost, head + _explain(name, cp, facts, case)))
    losses.sort(key=lambda pair: -pair[0])
    return [s for _, s in losses], _error_notes(case, notes)


def _error_notes(case: dict[str, Any], notes: list[str]) -> list[str]:
    for error in case["errors"]:
        notes.append(f"Error: {error}")
    return notes


def _explain(name: str, cp: dict[str, Any], facts: CaseFacts, case: dict[str, Any]) -> str:
    details = cp["details"]
    message = cp["message"].rstrip(".")
    if message.startswith("case scored zero"):
        return message + "."
    if name == "C0_cti_reports" and facts.reports.expected is not None:
        r = facts.reports
        hit = len(set(r.found) & set(r.expected or []))
        text = f"the agent read {hit} of {plural(len(r.expected or []), 'relevant report')}"
        if r.missed:
            text += f" and never opened {listing(r.missed)}"
        if r.extra:
            text += (
                f"; it also read {plural(len(r.extra), 'unrelated report')} ({listing(r.extra)}), "
                "which lowers precision"
            )
        return text + "."
    if name == "C1_attack_mapping" and facts.techniques.expected is not None:
        t = facts.techniques
        parts = [f"it named {len(t.matched)} of the {plural(len(t.expected or []), 'expected technique')}"]
        if t.missed:
            parts.append(f"missed {listing(t.missed)}")
        if t.extra:
            parts.append(
                f"named {listing(t.extra)}, which the case does not involve (every extra technique "
                "counts against the Jaccard score)"
            )
        if not t.found:
            parts = ["no ATT&CK technique id was named in the answer or the Sigma tags"]
        return "; ".join(parts) + "."
    if name == "C2_data_sources" and facts.tables.expected is not None:
        t = facts.tables
        hit = len(set(t.found) & set(t.expected or []))
        parts = [f"it explored {hit} of {plural(len(t.expected or []), 'relevant table')}"]
        if t.missed:
            parts.append(f"never looked at {listing(t.missed)}")
        if t.extra:
            parts.append(f"also explored {listing(t.extra)}, which lowers the Jaccard score")
        return "; ".join(parts) + "."
    if name == "C3_query_iteration" and "distinct_successful" in details:
        good = int(details.get("distinct_successful") or 0)
        total = int(details.get("queries_run") or 0)
        return (
            f"only {plural(good, 'distinct query', 'distinct queries')} over the case's "
            f"tables succeeded (of {total} run); two are needed for full credit."
        )
    if name == "C4_kql_detection":
        return _explain_detection(case["detection"].get("kql"), details, message, "final KQL query")
    if name == "C4_sigma_quality":
        syntax = details.get("syntax")
        parts = [] if syntax is None else [f"syntax (parsing and validators) scored {float(syntax):.2f} of 1"]
        sigma = case["detection"].get("sigma")
        if sigma is not None:
            parts.append(_explain_detection(sigma, details, message, "converted Sigma rule").rstrip("."))
        elif syntax is None:
            parts.append(message)
        extra = message.split("; ", 1)[1] if "; " in message and syntax is not None else ""
        return "; ".join(parts) + "." + (f" Scorer notes: {extra}." if extra else "")
    return message + "."


def _explain_detection(det: dict[str, Any] | None, details: dict[str, Any], message: str, what: str) -> str:
    provenance = details.get("provenance")
    if isinstance(provenance, list) and provenance:
        return (
            f"no detection credit because the submitted query results were not what a query "
            f"returned ({provenance[0]})."
        )
    if det is None:
        return message + "."
    if det.get("error"):
        return f"the {what} failed: {det['error']}."
    total = det["tp"] + det["fn"]
    text = f"the {what} matched {det['tp']} of {plural(total, 'attack event')}"
    if det["fp"]:
        text += f" and {plural(det['fp'], 'benign event')} (false positives"
        if det["hard_negatives_matched"]:
            text += (
                f", {det['hard_negatives_matched']} of them hard negatives: benign look-alikes of the attack"
            )
        text += ")"
    else:
        text += " with no false positives"
    if det["unattributed"]:
        text += f"; {plural(det['unattributed'], 'result row')} could not be traced to any event"
    return text + f"; precision {det['precision']:.2f}, recall {det['recall']:.2f}, F1 {det['f1']:.2f}."


def matched_attack_rows(case: dict[str, Any], limit: int = 3) -> list[tuple[str, dict[str, Any]]]:
    """(``Table:id``, row) for submitted result rows that are matched attack events (by their id value)."""
    submission = case["trajectory"].get("submission")
    det = case["detection"].get("kql")
    if not submission or not det:
        return []
    ids = {m.split(":", 1)[-1]: m for m in det["matched_attack"]}
    rows: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for row in submission["query_results"]:
        hit = next(
            (
                str(v)
                for v in row.values()
                if isinstance(v, (str, int)) and not isinstance(v, bool) and str(v) in ids
            ),
            None,
        )
        if hit is not None and hit not in seen:
            seen.add(hit)
            rows.append((ids[hit], row))
            if len(rows) >= limit:
                break
    return rows


_TELLING = re.compile(
    r"time|commandline|filename|uri|url|operation|verb|request|resource|caller|identity|"
    r"user|account|activity|object|properties|ip|app|device|status|id$",
    re.IGNORECASE,
)


def compact_row(row: dict[str, Any], limit: int = 12, width: int = 140) -> list[tuple[str, str]]:
    """The telling non-empty columns of an event row (command lines, URIs, identities first)."""
    out = []
    ordered = sorted(row.items(), key=lambda kv: (not _TELLING.search(str(kv[0])),))
    for key, value in ordered:
        if value in (None, "", [], {}):
            continue
        if isinstance(value, str):
            text = value
        elif isinstance(value, (dict, list)):
            text = json.dumps(value, ensure_ascii=False, default=str)
        else:
            text = str(value)
        if len(text) > width:
            text = text[: width - 1] + "…"
        out.append((str(key), text))
        if len(out) >= limit:
            break
    return out


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: object) -> str:
    """Text safe for a terminal or a log line: control and bidi characters shown as ``\\xNN``."""
    return _CONTROL.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}",
        str(text),
    )


def describe_expected(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return plural(len(value), "event")
    if isinstance(value, dict):
        return plural(sum(len(v) if isinstance(v, list) else 1 for v in value.values()), "event")
    return str(value)


def rule_passed(rule: dict[str, Any]) -> bool | None:
    status = rule["status"].lower()
    if status in ("passed", "pass", "ok", "green"):
        return True
    if status in ("failed", "fail", "error", "broken", "red"):
        return False
    return None
