"""The KQL we write and the KQL we emit, checked by Microsoft's own KQL analyzer.

Kusto.Language (npm ``@kusto/language-service-next``, pinned in ``tests/interop/kql-analyzer``) is the
parser and semantic analyzer behind Kusto's editors and language server. Each check here runs it
over a database built from our table schemas, with the Kusto types those schemas declare:

- the analyzer sees the 12 tables exactly as declared (``int`` stays ``int``, ``long`` ``long``);
- the Sigma layer's KQL for long value lists (1,091 and 4,000 values, in each shape the backend
  emits) is accepted, where one flat chain of the same terms is refused as nested too deeply;
- every reference solution (``rules/**/*.kql``, and each reference Sigma rule as converted),
  every ``naive_kql`` of ``cases/``, and every SigmaHQ rule of the shared corpus that converts
  is accepted with no error;
- the engine conformance queries (``tests/engine/conformance.yaml``, over their own tables):
  what the engine accepts, the analyzer accepts; what the engine refuses as a syntax or semantic
  error, the analyzer refuses; and the result columns the analyzer infers have the names and
  types the engine returns. The known differences are ``xfail(strict=True)`` with the reason, so
  a change is noticed; they are listed in docs/kusto.md.

Skipped, with the reason, where node or the tool (``make kql-analyzer``) is missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from filelock import FileLock
from kql_analyzer import ROOT, Analysis, analyze, unavailable_reason

from ctirealm.engine import LocalEngine
from ctirealm.sigma.convert import convert, default_schemas
from ctirealm.telemetry.schema import load_schemas

REASON = unavailable_reason()
# Slow: Microsoft's analyzer over a thousand queries.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

ENGINE_TESTS = ROOT / "tests" / "engine"
CONFORMANCE: list[dict[str, Any]] = yaml.safe_load(
    (ENGINE_TESTS / "conformance.yaml").read_text(encoding="utf-8")
)["cases"]
CONFORMANCE_TABLES: dict[str, Any] = yaml.safe_load(
    (ENGINE_TESTS / "conformance_tables.yaml").read_text(encoding="utf-8")
)

RULE_KQL = sorted((ROOT / "rules").rglob("*.kql"))
RULE_SIGMA = sorted((ROOT / "rules").rglob("*_sigma.yml"))


def _naive_kql() -> dict[str, str]:
    out = {}
    for path in sorted((ROOT / "cases").rglob("*.yaml")):
        case = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for n, query in enumerate(case.get("naive_kql") or []):
            out[f"{case.get('id', path.stem)}[{n}]"] = query
    return out


NAIVE_KQL = _naive_kql()


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _errors(analysis: Analysis) -> str:
    return "; ".join(str(d) for d in analysis.errors)


def _once(
    request: pytest.FixtureRequest, name: str, compute: Callable[[], dict[str, Analysis]]
) -> dict[str, Analysis]:
    """*compute* once per test session, also under xdist (pytest-xdist's recipe: the first
    worker writes the result beside the workers' temporary folders, the others read it)."""
    worker = getattr(request.config, "workerinput", None)
    if worker is None:
        return compute()
    shared = request.getfixturevalue("tmp_path_factory").getbasetemp().parent
    path = shared / f"kql-analyzer-{name}.json"
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            return {k: Analysis.from_record(v) for k, v in data.items()}
        result = compute()
        path.write_text(json.dumps({k: v.to_record() for k, v in result.items()}), encoding="utf-8")
        return result


# ------------------------------------------------------------------ the schemas, as declared


@pytest.fixture(scope="module")
def schemas() -> dict:
    return default_schemas()


def test_analyzer_sees_the_declared_schemas() -> None:
    declared = load_schemas(ROOT / "telemetry" / "schemas")
    assert len(declared) == 12
    seen = analyze({name: f"{name} | take 1" for name in declared})
    for name, schema in declared.items():
        assert not seen[name].errors, _errors(seen[name])
        assert seen[name].columns == tuple(tuple(c) for c in schema.columns), name
    # integers as we declare them: some `int`, most `long` (upstream's import says `int`)
    kinds = {t for schema in declared.values() for _, t in schema.columns}
    assert {"int", "long"} <= kinds


def test_analyzer_reports_what_kusto_refuses() -> None:
    chain = " or ".join(f'ProcessCommandLine contains "pkg-{i}"' for i in range(1091))
    seen = analyze(
        {
            "ok": "DeviceProcessEvents | where ProcessCommandLine has 'curl' | project ReportId",
            "column": "DeviceProcessEvents | where NoSuchColumn == 1",
            "table": "NoSuchTable | take 1",
            "syntax": "DeviceProcessEvents | where",
            "flat": f"DeviceProcessEvents | where {chain}",
        }
    )
    assert seen["ok"].diagnostics == () and seen["ok"].columns == (("ReportId", "long"),)
    assert [d.code for d in seen["column"].errors] == ["KS142"]
    assert [d.code for d in seen["table"].errors] == ["KS204"]
    assert seen["syntax"].errors
    # one flat chain of a thousand terms: the analyzer gives up ("syntax depth exceeds maximum
    # safe limit"), which is why the Sigma layer groups long lists
    assert [d.code for d in seen["flat"].errors] == ["KS245"]


# ------------------------------------------------------------------ Sigma: long value lists


def _rule(logsource: dict[str, str], detection: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": "Value list",
        "id": "7a1b2c3d-0000-4000-8000-0000000000a1",
        "status": "test",
        "logsource": logsource,
        "detection": {**detection, "condition": "1 of selection*"},
        "level": "low",
    }


LINUX_PROC = {"product": "linux", "category": "process_creation"}


def _packages(count: int) -> list[str]:
    # the shape of a supply-chain rule's list: package@version
    return [f"@scope-{i % 13}/pkg-{i:05d}@{i % 7}.{i % 11}.{i % 5}" for i in range(count)]


def _list_rules(count: int, modifiers: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    values = _packages(count)
    rules = {
        f"{modifier or 'equals'}-{count}": _rule(
            LINUX_PROC, {"selection": {f"CommandLine{modifier}": values}}
        )
        for modifier in modifiers
    }
    rules[f"mixed-wildcards-{count}"] = _rule(
        LINUX_PROC,
        {
            "selection": {
                "CommandLine": [*values[: count // 2], *(f"npm * {v}" for v in values[count // 2 :])]
            }
        },
    )
    rules[f"two-lists-{count}"] = _rule(
        LINUX_PROC,
        {
            "selection_image": {"Image|endswith": ["/npm", "/node", "/bun"], "CommandLine|contains": values},
            "selection_parent": {"ParentCommandLine|contains": values[: count // 3]},
        },
    )
    rules[f"file-event-{count}"] = _rule(
        {"product": "linux", "category": "file_event"},
        {"selection": {"TargetFilename|endswith": [f"/node_modules/{v}/setup.js" for v in values]}},
    )
    rules[f"aks-list-field-{count}"] = _rule(
        {"product": "kubernetes", "service": "audit"},
        {"selection": {"user.groups": [f"group-{i}" for i in range(count)]}},
    )
    rules[f"signin-numbers-{count}"] = _rule(
        {"product": "azure", "service": "signinlogs"},
        {"selection": {"ResultType": list(range(50000, 50000 + count))}},
    )
    return rules


#: Each query takes the analyzer seconds: 1,091 values (the supply-chain rule's size) in every
#: shape the backend emits (|startswith, |endswith and |cased give the shapes of |contains and
#: plain values), and 4,000 values as one `in~` list and as grouped `contains` terms.
LIST_RULES = {
    **_list_rules(1091, ("", "|contains", "|contains|all", "|re")),
    **{
        name: rule
        for name, rule in _list_rules(4000, ("", "|contains")).items()
        if name in ("equals-4000", "|contains-4000")
    },
}
#: a path below an array of objects becomes one sub-query per value; 1,091 of them are enough
LIST_RULES["auditlogs-array-of-objects-1091"] = _rule(
    {"product": "azure", "service": "auditlogs"},
    {"selection": {"targetResources.type": [f"Type {i}" for i in range(1091)]}},
)


@pytest.fixture(scope="module")
def list_analysis(request: pytest.FixtureRequest, schemas: dict) -> dict[str, tuple[str, Analysis]]:
    kql = {name: convert(rule, schemas=schemas).kql for name, rule in LIST_RULES.items()}
    seen = _once(request, "lists", lambda: analyze(kql))
    return {name: (kql[name], seen[name]) for name in kql}


@pytest.mark.parametrize("name", sorted(LIST_RULES))
def test_long_value_list_is_accepted(list_analysis: dict, name: str) -> None:
    kql, seen = list_analysis[name]
    assert not seen.errors, f"{_errors(seen)}\n{kql[:300]}"
    assert seen.columns is not None  # analysed to the end: a table comes out


# ------------------------------------------------------------------ rules/ and cases/


@pytest.fixture(scope="module")
def content_analysis(request: pytest.FixtureRequest, schemas: dict) -> dict[str, Analysis]:
    def compute() -> dict[str, Analysis]:
        queries = {f"kql:{_rel(p)}": p.read_text(encoding="utf-8") for p in RULE_KQL}
        queries |= {f"sigma:{_rel(p)}": convert(p, schemas=schemas).kql for p in RULE_SIGMA}
        queries |= {f"naive:{k}": v for k, v in NAIVE_KQL.items()}
        return analyze(queries)

    return _once(request, "content", compute)


def test_content_is_present() -> None:
    assert len(RULE_KQL) >= 50 and len(RULE_SIGMA) >= 50 and len(NAIVE_KQL) >= 150


@pytest.mark.parametrize("path", [_rel(p) for p in RULE_KQL])
def test_reference_kql_is_accepted(content_analysis: dict, path: str) -> None:
    seen = content_analysis[f"kql:{path}"]
    assert not seen.errors, _errors(seen)


@pytest.mark.parametrize("path", [_rel(p) for p in RULE_SIGMA])
def test_reference_sigma_conversion_is_accepted(content_analysis: dict, path: str) -> None:
    seen = content_analysis[f"sigma:{path}"]
    assert not seen.errors, _errors(seen)


@pytest.mark.parametrize("key", sorted(NAIVE_KQL))
def test_naive_kql_is_accepted(content_analysis: dict, key: str) -> None:
    seen = content_analysis[f"naive:{key}"]
    assert not seen.errors, _errors(seen)


# ------------------------------------------------------------------ SigmaHQ's rules, converted

#: the SigmaHQ corpus of the shared data (as tests/sigma/test_sigmahq.py), when present
SIGMAHQ = ROOT.parent / "shared" / "data" / "sigmahq" / "rules"


def test_sigmahq_rules_convert_to_kql_the_analyzer_accepts(schemas: dict) -> None:
    if not SIGMAHQ.is_dir():
        pytest.skip("SigmaHQ corpus not present")
    from ctirealm.sigma.parse import SigmaRuleError, parse_rule

    kql = {}
    for path in sorted(SIGMAHQ.rglob("*.yml")):
        try:
            kql[path.relative_to(SIGMAHQ).as_posix()] = convert(parse_rule(path), schemas=schemas).kql
        except SigmaRuleError:
            continue  # refused with a reason: tests/sigma/test_sigmahq.py checks those
    assert len(kql) >= 200
    seen = analyze(kql)
    refused = {name: _errors(a) for name, a in seen.items() if a.errors}
    assert not refused, refused


# ------------------------------------------------------------------ engine conformance queries

#: Where the engine and the analyzer disagree on whether a conformance query is valid KQL.
VALIDITY_DIFFERENCES = {
    "todynamic_array_length": "the analyzer refuses array_length() of a literal dynamic that "
    "is not an array (KS234); the engine returns null, as the docs "
    "say for a non-array value",
    "count_of_an_expression_ignores_nulls": "Kusto's count() takes no argument but a bool "
    "(KS107); the engine counts non-null values of "
    "count(x), which real hunting queries use",
    "error_bad_conversion_at_run_time": "Kusto refuses datetime > string when it analyses the "
    "query (KS106); the engine fails at run time",
    "error_let_tabular_function_recursion_refused": "Kusto refuses the recursive call as an "
    "unknown function (KS211); the engine "
    "reports it as unsupported",
    "error_series_stats_inside_an_expression": "Kusto refuses the comparison of series_stats' "
    "tuple (KS106); the engine reports the function "
    "as unsupported in an expression",
}

#: Where the analyzer infers other result column names or types than the engine returns.
COLUMN_DIFFERENCES = {
    "startofday_endofday": "hourofday() is int in Kusto, long in the engine",
    "datetime_parts": "getyear/getmonth/dayofmonth are int in Kusto, long in the engine",
    "week_month_add_part": "datetime_part() is int in Kusto, long in the engine",
    "deprecated_parsejson_and_datepart": "datepart() is int in Kusto, long in the engine",
    "array_functions": "array_index_of() is long in Kusto, int in the engine",
    "jaccard_index": "the analyzer types jaccard_index() as dynamic (the docs say real, the engine's type)",
    "deprecated_argmax": "Kusto names argmax()'s columns max_FileSize, max_FileSize_FileName; "
    "the engine keeps FileSize, FileName",
    "deprecated_argmin_by": "Kusto names argmin()'s columns min_FileSize, "
    "min_FileSize_FileName; the engine keeps FileSize, FileName",
    "deprecated_any": "Kusto names any()'s column any_FileName; the engine keeps FileName",
}

#: Engine errors that say the query is not valid KQL; the others say it is valid but the
#: engine does not run it (unsupported, read-only) or it failed while running.
INVALID = {"KqlSyntaxError", "KqlSemanticError"}


def _conformance_params(known: dict[str, str], *, accepted_only: bool = False) -> list[Any]:
    params = []
    for case in CONFORMANCE:
        if accepted_only and "error" in case:
            continue
        marks = [pytest.mark.xfail(strict=True, reason=known[case["name"]])] if case["name"] in known else []
        params.append(pytest.param(case, id=case["name"], marks=marks))
    return params


@pytest.fixture(scope="module")
def conformance_analysis(request: pytest.FixtureRequest) -> dict[str, Analysis]:
    schemas = {name: spec["schema"] for name, spec in CONFORMANCE_TABLES["tables"].items()}
    return _once(
        request,
        "conformance",
        lambda: analyze({case["name"]: case["kql"] for case in CONFORMANCE}, schemas=schemas),
    )


@pytest.fixture(scope="module")
def conformance_engine() -> Any:
    tables = CONFORMANCE_TABLES["tables"]
    engine = LocalEngine.from_tables(
        tables={name: spec["rows"] for name, spec in tables.items()},
        schemas={name: [tuple(c) for c in spec["schema"]] for name, spec in tables.items()},
        now=str(CONFORMANCE_TABLES["now"]),
    )
    yield engine
    engine.close()


def test_known_differences_are_conformance_cases() -> None:
    names = {case["name"] for case in CONFORMANCE}
    assert set(VALIDITY_DIFFERENCES) <= names and set(COLUMN_DIFFERENCES) <= names


@pytest.mark.parametrize("case", _conformance_params(VALIDITY_DIFFERENCES))
def test_conformance_validity_agrees(conformance_analysis: dict, case: dict) -> None:
    """The engine's verdict is the case's expectation (tests/engine holds the engine to it)."""
    seen = conformance_analysis[case["name"]]
    if case.get("error", {}).get("type") in INVALID:
        assert seen.errors, "the engine refuses this as invalid KQL; the analyzer accepts it"
    else:
        assert not seen.errors, _errors(seen)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=case["name"])
        for case in CONFORMANCE
        if case.get("error", {}).get("type") in INVALID and "line" in case["error"]
    ],
)
def test_error_positions_agree(conformance_analysis: dict, case: dict) -> None:
    """Where the engine's error names a line and column, the analyzer's first error is there."""
    first = conformance_analysis[case["name"]].errors[0]
    assert (first.line, first.column) == (case["error"]["line"], case["error"]["column"]), first


@pytest.mark.xfail(
    strict=True, reason="`latest` is a Kusto keyword, refused as a let name; the engine takes it as a name"
)
def test_keyword_as_a_let_name(conformance_analysis: dict, conformance_engine: LocalEngine) -> None:
    kql = (
        "let latest = toscalar(Proc | summarize max(Timestamp));\n"
        "Proc | where Timestamp == latest | project ReportId"
    )
    schemas = {name: spec["schema"] for name, spec in CONFORMANCE_TABLES["tables"].items()}
    assert analyze({"q": kql}, schemas=schemas)["q"].errors
    conformance_engine.query(kql)  # accepted today: a difference
    pytest.fail("the engine runs a query the analyzer refuses")


@pytest.mark.parametrize("case", _conformance_params(COLUMN_DIFFERENCES, accepted_only=True))
def test_conformance_result_columns_agree(
    conformance_analysis: dict, conformance_engine: LocalEngine, case: dict
) -> None:
    seen = conformance_analysis[case["name"]]
    if seen.errors or seen.columns is None:
        pytest.skip("the analyzer refuses this query (see the validity test)")
    ours = tuple(tuple(c) for c in conformance_engine.query(case["kql"]).columns)
    assert ours == seen.columns
