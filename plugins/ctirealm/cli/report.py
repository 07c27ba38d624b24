"""``ctirealm report``: regenerate reports from a results file, or compare runs.

    ctirealm report reports/results.json [--out DIR]
    ctirealm report compare A.json B.json [C.json ...] [--html OUT] [--fail-on-regression]

Both read results.json files only; nothing is re-run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

USAGE = """ctirealm report RESULTS.json [--out DIR]
       ctirealm report compare A.json B.json [MORE.json ...] [--html OUT] [--fail-on-regression]"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        usage=USAGE,
        help="write score.html, summary.md and coverage.json from a results file, or compare runs",
        description="Regenerate the HTML score report, the Markdown summary and the ATT&CK Navigator "
        "layer from a results.json file, or compare runs with 'compare A.json B.json'. "
        "The first file of a comparison is the baseline; regressions are listed first.",
    )
    parser.add_argument(
        "files",
        nargs="+",
        metavar="RESULTS.json",
        help="a results file (or a report folder holding results.json); or 'compare' followed by two or more",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="report folder (default: the results file's folder)",
    )
    parser.add_argument(
        "--html",
        type=Path,
        default=None,
        metavar="OUT",
        help="compare: also write the comparison as a self-contained HTML page",
    )
    parser.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="compare: exit with status 1 when any case or rule regressed",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        metavar="X",
        help="compare: score changes up to X count as unchanged (default 0.0005)",
    )
    parser.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    if args.files[0] == "compare":
        return _compare(args, args.files[1:])
    if args.html or args.fail_on_regression or args.threshold is not None:
        print(
            f"usage: {USAGE}\nctirealm report: --html, --fail-on-regression and --threshold apply to "
            "'compare'",
            file=sys.stderr,
        )
        return 2
    if len(args.files) != 1:
        print(
            f"usage: {USAGE}\nctirealm report: give one results file, or 'compare' and two or more",
            file=sys.stderr,
        )
        return 2
    from ..report import load_results, write_reports

    source = Path(args.files[0])
    results = load_results(source)
    folder = source if source.is_dir() else source.parent
    out = args.out or folder
    written = write_reports(results, out, trajectories=folder / "trajectories")
    summary = results["summary"]
    low, high = summary["ci95"]
    print(
        f"{results['run']['agent']}: normalised score {summary['normalized_score']:.3f} "
        f"(95% CI {low:.3f}–{high:.3f}), {len(results['cases'])} case runs"
    )
    for kind, path in written.items():
        print(f"  {kind:<12} {path}")
    return 0


def _compare(args: argparse.Namespace, files: list[str]) -> int:
    if len(files) < 2:
        print(f"usage: {USAGE}\nctirealm report compare: give two or more results files", file=sys.stderr)
        return 2
    from ..report import compare_results, format_comparison, load_results, render_comparison_html
    from ..report.compare import THRESHOLD

    runs = [load_results(f) for f in files]
    threshold = THRESHOLD if args.threshold is None else args.threshold
    comparison = compare_results(runs, labels=list(files), threshold=threshold)
    sys.stdout.write(format_comparison(comparison))
    if args.html:
        args.html.parent.mkdir(parents=True, exist_ok=True)
        args.html.write_text(render_comparison_html(comparison), encoding="utf-8")
        print(f"comparison: {args.html}")
    if args.fail_on_regression and comparison.regressed:
        print("regressions found", file=sys.stderr)
        return 1
    return 0
