"""``ctirealm sigma convert|check|eval``: Sigma rules to KQL, offline validation, TP/FP over telemetry."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import add_store_options, open_store


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sigma", help="convert, validate and evaluate Sigma rules")
    commands = parser.add_subparsers(dest="sigma_command", metavar="SUBCOMMAND", required=True)

    conv = commands.add_parser("convert", help="print the KQL a Sigma rule converts to")
    conv.add_argument("rule", type=Path, help="a Sigma rule (.yml), or - for standard input")
    conv.add_argument(
        "--telemetry",
        type=Path,
        default=Path("telemetry"),
        help="telemetry folder whose schemas/ types the columns (default: ./telemetry)",
    )
    conv.add_argument("--json", action="store_true", help="print table, KQL and field map as JSON")
    conv.set_defaults(handler=_convert)

    check = commands.add_parser("check", help="parse, validate (offline) and convert rules")
    check.add_argument("rules", type=Path, nargs="+", help="Sigma rules or folders of them")
    check.add_argument(
        "--telemetry",
        type=Path,
        default=Path("telemetry"),
        help="telemetry folder whose schemas/ types the columns (default: ./telemetry)",
    )
    check.add_argument(
        "--exclude", action="append", default=[], metavar="VALIDATOR", help="skip a validator (repeatable)"
    )
    check.add_argument("--json", action="store_true", help="print one JSON object per rule")
    check.set_defaults(handler=_check)

    ev = commands.add_parser("eval", help="run a rule over the telemetry store: TP/FP table")
    ev.add_argument("rule", type=Path, help="a Sigma rule (.yml) or a KQL query file (.kql)")
    add_store_options(ev)
    ev.add_argument(
        "--cases",
        type=Path,
        default=Path("cases"),
        help="cases folder, for --case and the rule's ctirealm.case (default: ./cases)",
    )
    ev.add_argument("--case", default=None, help="score against this case's attack events")
    ev.add_argument("--examples", type=int, default=5, help="example events to show (default 5)")
    ev.add_argument("--json", action="store_true", help="print the full result as JSON")
    ev.set_defaults(handler=_eval)


def _read(path: Path) -> str | Path:
    return sys.stdin.read() if str(path) == "-" else path


def _convert(args: argparse.Namespace) -> int:
    from ..sigma.convert import convert, default_schemas
    from ..sigma.parse import SigmaRuleError

    try:
        result = convert(_read(args.rule), schemas=default_schemas(args.telemetry))
    except SigmaRuleError as exc:
        print(f"ctirealm: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(
            json.dumps(
                {"rule": result.rule, "table": result.table, "kql": result.kql, "fields": result.fields},
                indent=1,
            )
        )
    else:
        print(result.kql)
    return 0


def _rule_files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            for found in sorted([*path.rglob("*.yml"), *path.rglob("*.yaml")]):
                if not found.with_suffix(".kql").exists():
                    out.append(found)
        else:
            out.append(path)
    return out


def _check(args: argparse.Namespace) -> int:
    from ..sigma.convert import convert, default_schemas
    from ..sigma.parse import SigmaRuleError, parse_rule
    from ..sigma.validate import validate_many

    schemas = default_schemas(args.telemetry)
    files = _rule_files(args.rules)
    parsed = [parse_rule(p) for p in files]
    results = validate_many(parsed, exclude=args.exclude)
    failed = 0
    for rule, validation in zip(parsed, results, strict=True):
        converted, problem = None, None
        if rule.ok:
            try:
                converted = convert(rule, schemas=schemas)
            except SigmaRuleError as exc:
                problem = exc.reason
        bad = (not validation.parsed) or bool(validation.errors) or problem is not None
        failed += bad
        if args.json:
            doc = validation.to_dict()
            doc.update(
                path=str(rule.path),
                table=converted.table if converted else None,
                kql=converted.kql if converted else None,
                convert_error=problem,
            )
            print(json.dumps(doc))
            continue
        status = "FAIL" if bad else "ok"
        print(
            f"{status:4} {rule.path}  score {validation.score:.2f}"
            + (f"  -> {converted.table}" if converted else "")
        )
        if not validation.parsed:
            print(f"     parse: {validation.error}")
        for issue in validation.issues:
            print(f"     {issue}")
        if problem:
            print(f"     convert: {problem}")
    if not args.json:
        print(f"{len(files) - failed} of {len(files)} rules ok", file=sys.stderr)
    return 1 if failed else 0


def _eval(args: argparse.Namespace) -> int:
    from ..cases import load_cases
    from ..scoring.detection import evaluate, evaluate_rule, neutral_events
    from ..sigma.parse import parse_kql_rule, parse_rule

    store = open_store(args)
    from ..engine.local import LocalEngine

    engine = LocalEngine.of_store(store)
    try:
        case_id = args.case
        if args.rule.suffix == ".kql":
            parsed = parse_kql_rule(args.rule)
        else:
            parsed = parse_rule(args.rule)
        if parsed.error:
            print(f"ctirealm: error: {parsed.label}: {parsed.error}", file=sys.stderr)
            return 1
        case_id = case_id or parsed.expectations.case
        expected = None
        neutral: frozenset[tuple[str, str]] = frozenset()  # (table, event id)
        if case_id:
            cases = load_cases(args.cases, tables=set(engine.tables()))
            if case_id not in cases.cases:
                print(f"ctirealm: error: unknown case {case_id!r} in {args.cases}", file=sys.stderr)
                return 2
            case = cases.cases[case_id]
            # A scenario-backed case lists no ids: its events are the store's labelled ones.
            expected = dict(case.bound(store.labels).ground_truth.attack_events)
            neutral = neutral_events(case, cases, store.labels)
        if args.rule.suffix == ".kql":
            result = evaluate(
                parsed.text or "",
                engine,
                store.labels,
                expected=expected,
                neutral=neutral,
                within_tables_read=True,
                examples=args.examples,
            )
        else:
            result = evaluate_rule(
                parsed, engine, store.labels, expected=expected, neutral=neutral, examples=args.examples
            )
    finally:
        engine.close()
    if args.json:
        print(json.dumps(result.to_dict(), indent=1, default=str))
        return 0 if result.ok else 1
    _print_table(parsed.label, result, case_id)
    return 0 if result.ok else 1


def _print_table(label: str, result: object, case_id: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..scoring.model import DetectionResult

    assert isinstance(result, DetectionResult)
    console = Console()
    console.print(f"[bold]{label}[/bold]", highlight=False)
    if result.kql:
        console.print(result.kql, highlight=False, markup=False)
    if result.error:
        console.print(f"[red]{result.stage} failed:[/red] {result.error}", highlight=False)
        return
    table = Table(title=f"{result.rows} rows matched")
    for column in ("label", "group", "events"):
        table.add_column(column)
    for group, events in result.attack_groups.items():
        table.add_row("attack", group, str(len(events)))
    table.add_row("hard negative", "", str(result.hard_negatives_matched))
    table.add_row("background", "", str(result.background_matched))
    if result.unattributed:
        table.add_row("rows traced to no event", "", str(result.unattributed))
    console.print(table)
    if result.unattributed and result.hint:
        console.print(result.hint, highlight=False)
    if result.expected is not None:
        console.print(
            f"expected ({case_id or 'listed'}): {result.expected}  TP {result.tp}  "
            f"FP {result.fp}  FN {result.fn}  precision {result.precision:.3f}  "
            f"recall {result.recall:.3f}  F1 {result.f1:.3f}",
            highlight=False,
        )
        if result.other_attacks:
            console.print(
                f"{result.other_attacks} attack events of cases sharing a technique with it are neutral",
                highlight=False,
            )
        if result.foreign_attacks_matched:
            console.print(
                f"{result.foreign_attacks_matched} attack events of cases sharing no "
                "technique with it count as false positives",
                highlight=False,
            )
        if result.missed_attack:
            console.print("missed: " + ", ".join(result.missed_attack), highlight=False)
        if result.expected_elsewhere:
            console.print(
                f"{result.expected_elsewhere} expected events are in tables this rule does not read",
                highlight=False,
            )
    for example in result.false_positive_examples:
        where = f"{example['table']} {example['id']}" if "table" in example else "(no event)"
        console.print(
            f"[dim]{example['kind']:13}[/dim] {where}: "
            + json.dumps(example["row"], ensure_ascii=False, default=str)[:300],
            highlight=False,
        )
