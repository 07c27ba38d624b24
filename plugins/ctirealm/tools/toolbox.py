"""The agent toolbox: the reference's nine tools, same names, arguments, limits and result shapes.

Opt-in toolsets add tools beside a variant's: ``+sandbox`` gives ``bash`` and
``python`` in a sandbox without network or access to the benchmark's files, as the
reference's container does (`ctirealm.tools.sandbox`).

Tools return text, as upstream: JSON for data, ``Error: ...`` for anything
wrong. They never raise into the agent, with one exception: once the run is
stopped (time or call limit), `AgentStopped` — a ``BaseException``, so an
agent's own ``except Exception`` cannot swallow it — ends the agent's turn.
Every call is recorded in the trajectory with its arguments, result and timing.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..attack import Attack, load_attack
from ..cases import CaseSet
from ..engine import Engine, EngineError
from . import sigma_index
from .sandbox import Sandbox, SandboxUnavailable
from .trajectory import Step, ToolCall, Trajectory

CTI_TOOLS = ("list_cti_report_tags", "get_cti_reports_by_tag")
MITRE_TOOLS = ("search_mitre_techniques",)
SIGMA_TOOLS = ("search_sigma_rules",)
DATA_TOOLS = ("list_kusto_tables", "get_table_schema", "sample_table_data", "execute_kql_query")
OUTPUT_TOOLS = ("validate_output_json",)
ALL_TOOLS = CTI_TOOLS + MITRE_TOOLS + SIGMA_TOOLS + DATA_TOOLS + OUTPUT_TOOLS
SANDBOX_TOOLS = ("bash", "python")
#: Opt-in toolsets (``+name``) and the tools each adds to any variant.
TOOLSETS: dict[str, tuple[str, ...]] = {"sandbox": SANDBOX_TOOLS}
#: Every tool a toolbox can offer.
EVERY_TOOL = ALL_TOOLS + SANDBOX_TOOLS

#: Which tools each variant offers (``minimal`` is the reference's ablation).
VARIANTS: dict[str, tuple[str, ...]] = {
    "full": ALL_TOOLS,
    "seeded": ALL_TOOLS,
    "minimal": DATA_TOOLS + OUTPUT_TOOLS,
}

QUERY_LIMIT = 10
SAMPLE_DEFAULT, SAMPLE_MAX = 5, 20
SIGMA_DEFAULT, SIGMA_MAX = 5, 20
_HAS_TAKE = re.compile(r"\|\s*(take|limit)\b", re.IGNORECASE)


class AgentStopped(BaseException):
    """Raised by a tool once the run has been stopped; carries the reason."""


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


def _params(required: tuple[str, ...] = (), **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": False}


SPECS: dict[str, ToolSpec] = {
    s.name: s
    for s in (
        ToolSpec(
            "list_cti_report_tags",
            "List the tags of the available CTI reports with how many reports carry each, "
            "most frequent first.",
            _params(),
        ),
        ToolSpec(
            "get_cti_reports_by_tag",
            "Get the full CTI reports that carry a tag (see list_cti_report_tags).",
            _params(("tag",), tag={"type": "string", "description": "a tag, e.g. 'persistence'"}),
        ),
        ToolSpec(
            "search_mitre_techniques",
            "List MITRE ATT&CK Enterprise techniques of a tactic with id, name, description and tactics.",
            _params(
                ("tactic",), tactic={"type": "string", "description": "tactic name, e.g. 'credential access'"}
            ),
        ),
        ToolSpec(
            "search_sigma_rules",
            "Search SigmaHQ detection rules by keyword in title/description, ATT&CK technique "
            "and platform (linux, azure, m365, kubernetes).",
            _params(
                (),
                keyword={"type": "string"},
                technique_id={"type": "string"},
                platform={"type": "string"},
                limit={"type": "integer", "description": "default 5, at most 20"},
            ),
        ),
        ToolSpec(
            "list_kusto_tables", "List the Kusto tables available, with column and row counts.", _params()
        ),
        ToolSpec(
            "get_table_schema",
            "Columns and types of a table (like `T | getschema`).",
            _params(("table_name",), table_name={"type": "string"}),
        ),
        ToolSpec(
            "sample_table_data",
            "A few rows of a table (`T | take rows`).",
            _params(
                ("table_name",),
                table_name={"type": "string"},
                rows={"type": "integer", "description": "default 5, at most 20"},
            ),
        ),
        ToolSpec(
            "execute_kql_query",
            "Run a read-only KQL query. `| take <limit>` is appended unless the query already "
            "has take/limit. Returns Kusto JSON, or 'Error: ...'.",
            _params(
                ("query",),
                query={"type": "string"},
                limit={"type": "integer", "description": "default and maximum 10"},
            ),
        ),
        ToolSpec(
            "validate_output_json",
            "Check the final answer JSON: exactly the keys sigma_rule (string, >= 50 chars), "
            "kql_query (string, >= 10 chars) and query_results (non-empty list of rows).",
            _params(("json_output",), json_output={"type": "string"}),
        ),
        ToolSpec(
            "bash",
            "Run a bash command in a sandbox without network (a scratch folder, /workspace, "
            "kept for this case; no access to the telemetry: query it with execute_kql_query). "
            "Returns the output.",
            _params(("cmd",), cmd={"type": "string", "description": "the command to run"}),
        ),
        ToolSpec(
            "python",
            "Run Python 3 code in the same sandbox as bash (no network; print() what you "
            "need to see). Returns the output.",
            _params(("code",), code={"type": "string", "description": "the code to run"}),
        ),
    )
}


def parse_toolsets(spec: str | None) -> tuple[str, ...]:
    """``"+sandbox"`` (or ``"sandbox"``, several separated by commas or spaces) -> toolset names.

    Raises ValueError naming an unknown toolset and the known ones.
    """
    names = [n.strip().lstrip("+") for n in (spec or "").replace(",", " ").split()]
    unknown = [n for n in names if n and n not in TOOLSETS]
    if unknown:
        raise ValueError(
            f"unknown toolset {', '.join(unknown)}; toolsets: " + ", ".join(f"+{t}" for t in TOOLSETS)
        )
    return tuple(dict.fromkeys(n for n in names if n))


def _dumps(value: Any) -> str:
    # Default separators keep `"title": "..."` in the text, which compat scoring reads.
    return json.dumps(value, ensure_ascii=False, default=str)


def validate_output(data: Any) -> list[str]:
    """Problems with a final answer under the reference's contract (empty list: valid)."""
    if not isinstance(data, dict):
        return ["the answer must be a JSON object"]
    problems = []
    expected = {"sigma_rule", "kql_query", "query_results"}
    if set(data) != expected:
        missing, extra = sorted(expected - set(data)), sorted(set(data) - expected)
        if missing:
            problems.append(f"missing keys: {', '.join(missing)}")
        if extra:
            problems.append(f"unexpected keys: {', '.join(extra)}")
    sigma, kql, rows = data.get("sigma_rule"), data.get("kql_query"), data.get("query_results")
    if "sigma_rule" in data and not (isinstance(sigma, str) and len(sigma) >= 50):
        problems.append("sigma_rule must be a string of at least 50 characters")
    if "kql_query" in data and not (isinstance(kql, str) and len(kql) >= 10):
        problems.append("kql_query must be a string of at least 10 characters")
    if "query_results" in data and not (isinstance(rows, list) and rows):
        problems.append("query_results must be a non-empty list")
    elif isinstance(rows, list) and not all(isinstance(r, dict) for r in rows):
        problems.append("each entry of query_results must be an object of column: value")
    return problems


class Toolbox:
    """The tools one agent gets for one case, recording into one trajectory."""

    def __init__(
        self,
        engine: Engine,
        cases: CaseSet,
        trajectory: Trajectory,
        *,
        variant: str = "full",
        attack: Attack | None = None,
        max_tool_calls: int = 200,
        query_timeout: float | None = None,
        toolsets: tuple[str, ...] = (),
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
        toolsets = parse_toolsets(" ".join(toolsets))
        self.engine = engine
        self.cases = cases
        self.trajectory = trajectory
        self.variant = variant
        self.attack = attack or load_attack()
        self.max_tool_calls = max_tool_calls
        self.query_timeout = query_timeout
        self.toolsets = toolsets
        self._names = VARIANTS[variant] + tuple(t for ts in toolsets for t in TOOLSETS[ts])
        self._started = time.perf_counter()
        self._stopped: str | None = None
        self._sandbox: Sandbox | None = None
        self._impl: dict[str, Callable[..., str]] = {
            name: getattr(self, f"_tool_{name}") for name in EVERY_TOOL
        }

    # -- the agent-facing surface ---------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def specs(self) -> list[ToolSpec]:
        return [SPECS[n] for n in self._names]

    def openai_tools(self) -> list[dict[str, Any]]:
        return [s.to_openai() for s in self.specs()]

    def stop(self, reason: str) -> None:
        """Refuse every further call: the run is over (time limit, call limit, cancellation)."""
        self._stopped = reason

    def say(self, text: str = "", reasoning: str = "") -> None:
        """Record assistant text (and reasoning): where ATT&CK ids and analysis are read from."""
        if self._stopped:
            raise AgentStopped(self._stopped)
        self.trajectory.steps.append(Step(kind="assistant", text=str(text), reasoning=str(reasoning)))

    def call(
        self, name: str, arguments: dict[str, Any] | str | None = None, *, call_id: str | None = None
    ) -> str:
        """Run one tool by name; arguments as a dict or JSON text. Always returns text."""
        if self._stopped:
            raise AgentStopped(self._stopped)
        started = time.perf_counter()
        args: dict[str, Any] = {}
        error: str | None = None
        rows: int | None = None
        if isinstance(arguments, str):
            try:
                parsed = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                parsed, error = None, f"arguments are not valid JSON ({exc.msg} at column {exc.colno})"
            if parsed is not None and not isinstance(parsed, dict):
                error = "arguments must be a JSON object"
            args = parsed if isinstance(parsed, dict) else {"_raw": arguments}
        elif isinstance(arguments, dict):
            args = dict(arguments)
        elif arguments is not None:
            error = "arguments must be a JSON object"
        if error is None and len(self.trajectory.tool_calls()) >= self.max_tool_calls:
            error = f"tool-call limit of {self.max_tool_calls} reached; submit your answer now"
            self._stopped = f"tool-call limit of {self.max_tool_calls} exceeded"
        if error is None and name not in self._impl:
            error = f"unknown tool {name!r}; available: {', '.join(self._names)}"
        if error is None and name not in self._names:
            toolset = next((t for t, names in TOOLSETS.items() if name in names), None)
            error = (
                f"tool {name!r} needs the +{toolset} toolset"
                if toolset
                else f"tool {name!r} is not available in the {self.variant} variant"
            )
        if error is None:
            try:
                result, rows = self._invoke(name, args)
            except _ToolError as exc:
                error = str(exc)
            except EngineError as exc:
                error = str(exc)
            except Exception as exc:  # a tool bug must not crash the agent's run
                error = f"internal error in {name}: {type(exc).__name__}: {exc}"
        text = f"Error: {error}" if error is not None else result
        self.trajectory.steps.append(
            Step(
                kind="tool",
                tool=ToolCall(
                    name=name,
                    arguments=args,
                    result=text,
                    ok=error is None,
                    started=round(started - self._started, 4),
                    duration=round(time.perf_counter() - started, 4),
                    rows=rows,
                    error=error,
                    call_id=call_id,
                ),
            )
        )
        return text

    def record(
        self,
        name: str,
        arguments: dict[str, Any] | str | None,
        result: str,
        *,
        ok: bool | None = None,
        error: str | None = None,
        call_id: str | None = None,
        duration: float = 0.0,
    ) -> str:
        """Record a tool call with a given result, without executing it (replaying a log).

        The call lands in the trajectory exactly as recorded: any tool name
        (also ones this toolbox does not offer, like a sandbox ``bash``), the
        arguments, the result text. *ok* defaults to "no error and the result
        does not start with ``Error``"; query tools get their row count from
        the recorded Kusto JSON. Returns *result*.
        """
        if self._stopped:
            raise AgentStopped(self._stopped)
        if isinstance(arguments, str):
            try:
                parsed = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                parsed = None
            args = parsed if isinstance(parsed, dict) else {"_raw": arguments}
        else:
            args = dict(arguments or {})
        text = "" if result is None else str(result)
        if ok is None:
            ok = error is None and not text.lstrip().startswith("Error")
        if not ok and error is None:
            error = (
                text.lstrip()[len("Error:") :].strip()
                if text.lstrip().startswith("Error:")
                else (text.strip() or "the tool call failed")
            )
        rows = None
        if name in ("execute_kql_query", "sample_table_data") and ok:
            try:
                rows = len(json.loads(text)["Tables"][0]["Rows"])
            except (json.JSONDecodeError, KeyError, IndexError, TypeError):
                rows = None
        self.trajectory.steps.append(
            Step(
                kind="tool",
                tool=ToolCall(
                    name=str(name),
                    arguments=args,
                    result=text,
                    ok=bool(ok),
                    started=round(time.perf_counter() - self._started, 4),
                    duration=round(duration, 4),
                    rows=rows,
                    error=None if ok else error,
                    call_id=call_id,
                ),
            )
        )
        return text

    def __getattr__(self, name: str) -> Callable[..., str]:
        # `tools.execute_kql_query(query=...)`: a Python signature per tool.
        if name in EVERY_TOOL:
            return lambda **kwargs: self.call(name, kwargs)
        raise AttributeError(name)

    # -- implementations --------------------------------------------------------

    def _invoke(self, name: str, args: dict[str, Any]) -> tuple[str, int | None]:
        spec = SPECS[name]
        allowed = set(spec.parameters["properties"])
        unknown = sorted(set(args) - allowed)
        if unknown:
            raise _ToolError(
                f"unexpected argument(s) {', '.join(unknown)} for {name}; "
                f"expected: {', '.join(sorted(allowed)) or 'none'}"
            )
        missing = [r for r in spec.parameters["required"] if args.get(r) in (None, "")]
        if missing:
            raise _ToolError(f"missing required argument(s) {', '.join(missing)} for {name}")
        out = self._impl[name](**args)
        return out if isinstance(out, tuple) else (out, None)

    def close(self) -> None:
        """Release what the run held (the sandbox's working folder)."""
        if self._sandbox is not None:
            self._sandbox.close()

    def _sandboxed(self) -> Sandbox:
        if self._sandbox is None:
            self._sandbox = Sandbox()
        return self._sandbox

    def _tool_bash(self, cmd: Any) -> str:
        try:
            return self._sandboxed().bash(_text(cmd, "cmd"))
        except SandboxUnavailable as exc:
            raise _ToolError(str(exc)) from None

    def _tool_python(self, code: Any) -> str:
        try:
            return self._sandboxed().python(_text(code, "code"))
        except SandboxUnavailable as exc:
            raise _ToolError(str(exc)) from None

    def _tool_list_cti_report_tags(self) -> str:
        return _dumps([{"tag": tag, "count": n} for tag, n in self.cases.tags().items()])

    def _tool_get_cti_reports_by_tag(self, tag: Any) -> str:
        key = _text(tag, "tag").strip().lower()
        reports = [r for r in sorted(self.cases.reports.values(), key=lambda r: r.id) if key in r.tags]
        if not reports:
            raise _ToolError(f"no reports with tag {key!r}. Available tags: " + ", ".join(self.cases.tags()))
        return _dumps([r.to_tool_dict() for r in reports])

    def _tool_search_mitre_techniques(self, tactic: Any) -> str:
        key = _text(tactic, "tactic").strip().lower().replace(" ", "-")
        techniques = self.attack.by_tactic(key)
        if not techniques:
            raise _ToolError(f"unknown tactic {key!r}; tactics: " + ", ".join(self.attack.tactic_names()))
        return _dumps(
            [
                {"id": t.id, "name": t.name, "description": _brief(t.description), "tactics": list(t.tactics)}
                for t in techniques
            ]
        )

    def _tool_search_sigma_rules(
        self, keyword: Any = "", technique_id: Any = "", platform: Any = "", limit: Any = SIGMA_DEFAULT
    ) -> str:
        count = _bounded(limit, SIGMA_DEFAULT, SIGMA_MAX, "limit")
        try:
            found = sigma_index.search(
                _text(keyword or "", "keyword"),
                _text(technique_id or "", "technique_id"),
                _text(platform or "", "platform"),
                count,
            )
        except ValueError as exc:
            raise _ToolError(str(exc)) from None
        return _dumps(found)

    def _tool_list_kusto_tables(self) -> str:
        out = []
        for table in self.engine.tables():
            columns = self.engine.schema(table)
            count = self.engine.query(f"['{table}'] | count", timeout=self.query_timeout).rows
            out.append(
                {"TableName": table, "Columns": len(columns), "Rows": int(count[0][0]) if count else 0}
            )
        return _dumps(out)

    def _tool_get_table_schema(self, table_name: Any) -> str:
        table = self._table(table_name)
        return _dumps(
            {
                "TableName": table,
                "Columns": [{"ColumnName": c, "ColumnType": t} for c, t in self.engine.schema(table)],
            }
        )

    def _tool_sample_table_data(self, table_name: Any, rows: Any = SAMPLE_DEFAULT) -> tuple[str, int]:
        table = self._table(table_name)
        count = _bounded(rows, SAMPLE_DEFAULT, SAMPLE_MAX, "rows")
        result = self.engine.query(f"['{table}'] | take {count}", timeout=self.query_timeout)
        return _dumps(result.to_kusto_json()), len(result.rows)

    def _tool_execute_kql_query(self, query: Any, limit: Any = QUERY_LIMIT) -> tuple[str, int]:
        text = _text(query, "query")
        count = _bounded(limit, QUERY_LIMIT, QUERY_LIMIT, "limit")
        if not _HAS_TAKE.search(text):
            text = f"{text.rstrip().rstrip(';')}\n| take {count}"
        result = self.engine.query(text, limit=count, timeout=self.query_timeout)
        return _dumps(result.to_kusto_json()), len(result.rows)

    def _tool_validate_output_json(self, json_output: Any) -> str:
        if isinstance(json_output, dict):
            data = json_output
        else:
            try:
                data = json.loads(_text(json_output, "json_output"))
            except json.JSONDecodeError as exc:
                raise _ToolError(
                    f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
                ) from None
        problems = validate_output(data)
        if problems:
            raise _ToolError("; ".join(problems))
        return "Valid: the output has sigma_rule, kql_query and query_results as required."

    def _table(self, table_name: Any) -> str:
        name = _text(table_name, "table_name").strip()
        tables = self.engine.tables()
        if name in tables:
            return name
        folded = {t.lower(): t for t in tables}
        if name.lower() in folded:
            return folded[name.lower()]
        raise _ToolError(f"unknown table {name!r}; tables: {', '.join(tables)}")


class _ToolError(Exception):
    pass


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise _ToolError(f"argument {name} must be a string, got {type(value).__name__}")
    return value


def _bounded(value: Any, default: int, maximum: int, name: str) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _ToolError(f"argument {name} must be an integer, got {value!r}") from None
    return max(1, min(number, maximum))


def result_rows(text: str) -> list[dict[str, Any]]:
    """Rows of an ``execute_kql_query``/``sample_table_data`` result (Kusto JSON) as dicts;
    empty for an ``Error: ...`` answer or anything that is not such a result."""
    try:
        table = json.loads(text)["Tables"][0]
        names = [c["ColumnName"] for c in table["Columns"]]
        return [dict(zip(names, row, strict=False)) for row in table["Rows"]]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError):
        return []


def _brief(text: str, limit: int = 400) -> str:
    text = re.sub(r"\(Citation:[^)]*\)", "", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
