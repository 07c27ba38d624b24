"""Engine errors in Kusto's terms (what ``ctirealm serve`` answers raw clients with)."""

from __future__ import annotations

import pytest

from ctirealm.engine import LocalEngine
from ctirealm.engine.errors import (
    EngineError,
    KqlRuntimeError,
    KqlSemanticError,
    KqlUnsupportedError,
    QueryTimeout,
    ReadOnlyViolation,
    ResourceLimitExceeded,
    to_kusto_error,
)
from ctirealm.engine.kusto import classify_error


def _error(engine: LocalEngine, kql: str) -> EngineError:
    with pytest.raises(EngineError) as caught:
        engine.query(kql)
    return caught.value


@pytest.mark.parametrize(
    ("kql", "code", "message"),
    [
        (
            "Proc | where nosuch == 1",
            "SEM0100",
            "Semantic error: SEM0100: 'where' operator: Failed to resolve scalar expression named "
            "'nosuch' [line:position=1:14]",
        ),
        (
            "Proc\n| extend x = 1\n| project DeviceName, Nope",
            "SEM0100",
            "Semantic error: SEM0100: 'project' operator: Failed to resolve scalar expression named "
            "'Nope' [line:position=3:23]",
        ),
        (
            "NoSuchTable | take 1",
            "SEM0100",
            "Semantic error: SEM0100: Failed to resolve table expression named 'NoSuchTable' "
            "[line:position=1:1]",
        ),
        (
            "print nofunc(1)",
            "SEM0260",
            "Semantic error: SEM0260: Unknown function: 'nofunc'. [line:position=1:7]",
        ),
        (
            "Proc | wher x",
            "SYN0002",
            "Syntax error: SYN0002: unknown query operator 'wher' after '|' [line:position=1:8]",
        ),
    ],
)
def test_query_errors_read_as_kusto_errors(engine: LocalEngine, kql: str, code: str, message: str) -> None:
    kusto = to_kusto_error(_error(engine, kql), kql)
    assert (kusto.status, kusto.code, kusto.error_code, kusto.message) == (
        400,
        "General_BadRequest",
        code,
        message,
    )
    error = kusto.payload()["error"]
    assert error["@message"] == message and error["@errorCode"] == code
    assert error["message"] == "Request is invalid and cannot be executed."
    assert error["@type"].endswith("SyntaxException" if code.startswith("SYN") else "SemanticException")
    assert "Binder Error" not in message and "Candidate bindings" not in message


def test_kusto_messages_classify_back_to_the_same_errors(engine: LocalEngine) -> None:
    """KustoEngine reading ``ctirealm serve`` gets the error kind and construct the local
    engine raised."""
    for kql in ("Proc | where nosuch == 1", "NoSuchTable | take 1", "Proc | wher x", "print nofunc(1)"):
        local = _error(engine, kql)
        kusto = to_kusto_error(local, kql)
        back = classify_error(f"{kusto.message}\n{kusto.code}\n{kusto.type}", kql)
        assert type(back) is type(local), kql
        if isinstance(local, KqlSemanticError):
            assert back.construct == local.construct


@pytest.mark.parametrize(
    ("error", "status", "needle", "kind"),
    [
        (QueryTimeout("query exceeded its time limit of 1 s"), 408, "E_QUERY_TIMEOUT", QueryTimeout),
        (ResourceLimitExceeded("too big"), 400, "E_LOW_MEMORY_CONDITION", ResourceLimitExceeded),
        (ReadOnlyViolation("writes are refused"), 400, "read-only", ReadOnlyViolation),
        (KqlUnsupportedError("operator 'scan' is not supported"), 400, "unsupported", KqlUnsupportedError),
        (KqlRuntimeError("Conversion Error: could not convert"), 400, "runtime error", KqlRuntimeError),
    ],
)
def test_other_errors_keep_their_class(
    error: EngineError, status: int, needle: str, kind: type[EngineError]
) -> None:
    kusto = to_kusto_error(error)
    assert kusto.status == status and needle in kusto.message and kusto.error_code is None
    assert "@errorCode" not in kusto.payload()["error"]
    assert isinstance(classify_error(f"{kusto.message}\n{kusto.code}", "print 1"), kind)


def test_duckdb_text_without_a_pattern_still_reads_as_kusto() -> None:
    error = KqlSemanticError('Referenced column "foo" was not found because the FROM clause is missing')
    assert to_kusto_error(error, "print x = foo").message == (
        "Semantic error: SEM0100: Failed to resolve scalar expression named 'foo'"
    )
