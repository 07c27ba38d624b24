"""An ATT&CK Navigator layer (format 4.5, enterprise-attack, ATT&CK 18) of detection coverage.

Each technique a case expects is coloured by the best outcome of that case's
final detection across the run:

- **validated** (green): the final KQL or Sigma rule matched attack events and
  no benign event;
- **attempted** (amber): a detection ran but raised false positives or matched
  no attack event;
- **missed** (red): nothing usable was submitted, or the final query failed.

The score is the share (0–100) of the technique's case runs that were
validated; the comment lists every case run with its outcome and TP/FP.
"""

from __future__ import annotations

from typing import Any

from .facts import OUTCOMES, case_facts

LAYER_VERSIONS = {"attack": "18", "navigator": "5.2.0", "layer": "4.5"}
COLOURS = {"validated": "#31a354", "attempted": "#fdae61", "missed": "#e34a33"}
LEGEND = {
    "validated": "validated: detection matched attack events, no false positives",
    "attempted": "attempted: detection ran but raised false positives or matched nothing",
    "missed": "missed: no working detection submitted",
}


def coverage_layer(results: dict[str, Any]) -> dict[str, Any]:
    """The Navigator layer for one normalised results document."""
    run, summary = results["run"], results["summary"]
    seen: dict[str, list[tuple[str, str, str]]] = {}
    unknown = []
    for case in results["cases"]:
        facts = case_facts(case)
        if facts.techniques.expected is None:
            unknown.append(facts.label)
            continue
        kql = case["detection"].get("kql")
        tpfp = "" if kql is None or kql.get("error") else f" (TP {kql['tp']}, FP {kql['fp']})"
        for technique in facts.techniques.expected:
            seen.setdefault(technique, []).append((facts.label, facts.outcome, tpfp))
    techniques = []
    for technique_id in sorted(seen):
        runs = seen[technique_id]
        best = min((o for _, o, _ in runs), key=OUTCOMES.index)
        validated = sum(1 for _, o, _ in runs if o == "validated")
        techniques.append(
            {
                "techniqueID": technique_id,
                "score": round(100 * validated / len(runs)),
                "color": COLOURS[best],
                "comment": f"{best}: "
                + "; ".join(f"{label} {outcome}{tpfp}" for label, outcome, tpfp in runs),
                "enabled": True,
                "metadata": [{"name": label, "value": outcome + tpfp} for label, outcome, tpfp in runs],
            }
        )
    counts = {o: sum(1 for t in techniques if t["color"] == COLOURS[o]) for o in OUTCOMES}
    description = (
        f"Detection coverage of agent {run['agent']} ({run['scoring']} scoring) over "
        f"{len(results['cases'])} case runs; normalised score {summary['normalized_score']:.3f}. "
        f"{counts['validated']} techniques validated, {counts['attempted']} attempted, "
        f"{counts['missed']} missed. Colour = best outcome of the final detections of the cases "
        "that involve the technique; score = share of those case runs validated."
    )
    if unknown:
        description += f" {len(unknown)} case runs do not record their expected techniques and are left out."
    dataset = run["dataset"]
    metadata = [
        {"name": "agent", "value": run["agent"]},
        {"name": "scoring", "value": run["scoring"]},
        {"name": "variant", "value": run["variant"]},
        {"name": "normalised score", "value": f"{summary['normalized_score']:.3f}"},
    ]
    if dataset["name"] or dataset["hash"]:
        metadata.append(
            {"name": "dataset", "value": " ".join(str(x) for x in (dataset["name"], dataset["hash"]) if x)}
        )
    if run["started"]:
        metadata.append({"name": "started", "value": run["started"]})
    return {
        "name": f"ctirealm coverage: {run['agent']}",
        "versions": dict(LAYER_VERSIONS),
        "domain": "enterprise-attack",
        "description": description,
        "sorting": 3,
        "layout": {
            "layout": "side",
            "aggregateFunction": "average",
            "showID": True,
            "showName": True,
            "showAggregateScores": False,
            "countUnscored": False,
            "expandedSubtechniques": "annotated",
        },
        "hideDisabled": False,
        "techniques": techniques,
        "gradient": {
            "colors": [COLOURS["missed"], COLOURS["attempted"], COLOURS["validated"]],
            "minValue": 0,
            "maxValue": 100,
        },
        "legendItems": [{"label": LEGEND[o], "color": COLOURS[o]} for o in OUTCOMES],
        "showTacticRowBackground": False,
        "tacticRowBackground": "#dddddd",
        "selectTechniquesAcrossTactics": True,
        "selectSubtechniquesWithParent": False,
        "selectVisibleTechniques": False,
        "metadata": metadata,
    }
