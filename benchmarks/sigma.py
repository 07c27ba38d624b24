"""Gate a corpus of Sigma rules (default: the SigmaHQ set in shared data) over a telemetry store.

For every rule: parse, convert (ctirealm pipelines), execute over the whole store and trace the
matches to labelled events (TP/FP). Prints per-logsource counts, failures grouped by reason, and
rules gated per second. Usage::

    python benchmarks/sigma.py [--rules DIR] [--telemetry DIR] [--rows N] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# `sigma` package (pySigma): drop the folder before importing.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from ctirealm.engine import LocalEngine  # noqa: E402
from ctirealm.scoring.detection import evaluate_rule  # noqa: E402
from ctirealm.sigma.parse import parse_rule  # noqa: E402
from ctirealm.telemetry.dataset import Dataset  # noqa: E402
from ctirealm.telemetry.store import build_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RULES = ROOT.parent / "shared" / "data" / "sigmahq" / "rules"


def reason_key(message: str) -> str:
    """Group failures: quoted names and long lists become placeholders."""
    text = message.split("; supported:")[0].split("; closest:")[0]
    text = re.sub(r"'[^']*'", "'…'", text)
    if "unsupported logsource" not in text:
        text = re.sub(r"\{[^}]*\}", "{…}", text)
    text = re.sub(r"%[^%]+%", "%…%", text)
    return text[:110]


def logsource_key(rule: object) -> str:
    ls = getattr(rule, "logsource", None)
    if ls is None:
        return "(unparsed)"
    return "/".join(str(v) for v in (ls.product, ls.category, ls.service) if v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES)
    parser.add_argument("--telemetry", type=Path, default=ROOT / "telemetry")
    parser.add_argument(
        "--rows", type=int, default=None, help="generated background rows (default: dataset.yaml)"
    )
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    files = sorted(p for p in args.rules.rglob("*.yml"))
    if not files:
        print(f"no rules under {args.rules}", file=sys.stderr)
        return 2
    built = time.perf_counter()
    store = build_store(Dataset.load(args.telemetry), cache_dir=args.cache_dir, rows=args.rows)
    engine = LocalEngine.of_store(store)
    build_seconds = time.perf_counter() - built

    per_source: dict[str, Counter] = defaultdict(Counter)
    reasons: Counter = Counter()
    examples: dict[str, str] = {}
    started = time.perf_counter()
    for path in files:
        parsed = parse_rule(path)
        source = logsource_key(parsed.rule)
        per_source[source]["rules"] += 1
        result = evaluate_rule(parsed, engine, store.labels, examples=0)
        if result.error is None:
            per_source[source]["converted"] += 1
            per_source[source]["executed"] += 1
            per_source[source]["matched"] += result.rows
            continue
        if result.stage == "execute":
            per_source[source]["converted"] += 1
        key = f"{result.stage}: {reason_key(result.error)}"
        reasons[key] += 1
        examples.setdefault(key, path.name)
    elapsed = time.perf_counter() - started
    engine.close()

    total = len(files)
    executed = sum(c["executed"] for c in per_source.values())
    figures = {
        "rules": total,
        "converted": sum(c["converted"] for c in per_source.values()),
        "executed": executed,
        "seconds": round(elapsed, 2),
        "rules_per_second": round(total / elapsed, 1),
        "store_rows": store.rows,
        "store_build_seconds": round(build_seconds, 2),
        "per_logsource": {k: dict(v) for k, v in sorted(per_source.items())},
        "failures": dict(reasons.most_common()),
    }
    if args.json:
        print(json.dumps(figures, indent=1))
        return 0
    print(f"{'logsource':42} {'rules':>6} {'convert':>8} {'execute':>8}")
    for source, counts in sorted(per_source.items(), key=lambda kv: (-kv[1]["rules"], kv[0])):
        print(f"{source:42} {counts['rules']:6} {counts['converted']:8} {counts['executed']:8}")
    print(f"{'total':42} {total:6} {figures['converted']:8} {executed:8}")
    print("\nfailures by reason:")
    for key, count in reasons.most_common():
        print(f"  {count:4}  {key}  (e.g. {examples[key]})")
    rows = sum(store.rows.values())
    print(
        f"\n{total} rules gated (convert + execute + TP/FP) in {elapsed:.2f} s: "
        f"{total / elapsed:.1f} rules/s over {rows} events "
        f"(store built or reused in {build_seconds:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
