"""What a Python agent under test holds as ``tools``: the tool calls and nothing else.

The `Toolbox` behind it holds the case set (every case's ground truth and
solution paths), the engine (queries that are neither recorded nor limited)
and the trajectory that scoring trusts. An agent must reach none of them, so
`facade` wraps a toolbox in an object that offers only:

- the nine tools by name (``tools.execute_kql_query(query=...)``) and
  ``tools.call(name, arguments)``, each recorded by the toolbox as usual;
- ``tools.say(text, reasoning)``;
- ``tools.specs()``, ``tools.openai_tools()`` (fresh copies on every call),
  ``tools.names`` (a tuple; ``tools.names()`` also works).

The object has no instance state: ``__slots__ = ()`` on a class made for this
one toolbox, whose methods close over it. So ``tools.cases``,
``tools.engine``, ``tools.trajectory``, ``tools.record`` or ``tools._toolbox``
raise `AttributeError` and ``vars(tools)`` raises `TypeError`.

This is a boundary against ordinary attribute access, not a sandbox. Code
running in the same interpreter can always walk to the toolbox through
introspection (a function's ``__closure__``, ``gc.get_referents``, frames of a
traceback or ``sys._getframe``, module globals). Where that matters, run the
agent out of process (``command:``, JSON lines over stdio): it then sees only
the protocol.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Protocol

from .toolbox import EVERY_TOOL, SPECS, Toolbox, ToolSpec

#: Everything the facade offers besides the nine tools.
SURFACE = ("call", "say", "specs", "openai_tools", "names")


class ToolNames(tuple[str, ...]):
    """The names of the tools on offer: a tuple, also callable (``tools.names()`` gives a list)."""

    __slots__ = ()

    def __call__(self) -> list[str]:
        return list(self)


class AgentTools(Protocol):
    """The type of ``tools`` in ``run(task, tools)`` for Python agents (see the module docstring)."""

    names: ToolNames

    def call(
        self, name: str, arguments: dict[str, Any] | str | None = None, *, call_id: str | None = None
    ) -> str: ...
    def say(self, text: str = "", reasoning: str = "") -> None: ...
    def specs(self) -> list[ToolSpec]: ...
    def openai_tools(self) -> list[dict[str, Any]]: ...
    def list_cti_report_tags(self) -> str: ...
    def get_cti_reports_by_tag(self, *, tag: str) -> str: ...
    def search_mitre_techniques(self, *, tactic: str) -> str: ...
    def search_sigma_rules(
        self, *, keyword: str = "", technique_id: str = "", platform: str = "", limit: int = 5
    ) -> str: ...
    def list_kusto_tables(self) -> str: ...
    def get_table_schema(self, *, table_name: str) -> str: ...
    def sample_table_data(self, *, table_name: str, rows: int = 5) -> str: ...
    def execute_kql_query(self, *, query: str, limit: int = 10) -> str: ...
    def validate_output_json(self, *, json_output: str) -> str: ...
    def bash(self, *, cmd: str) -> str: ...  # with the +sandbox toolset
    def python(self, *, code: str) -> str: ...  # with the +sandbox toolset


def facade(toolbox: Toolbox) -> AgentTools:
    """The agent's view of *toolbox*: tool calls, ``say``, specs and names; nothing else."""
    names = ToolNames(toolbox.names)
    specs = tuple(toolbox.specs())
    offered = ", ".join(SURFACE + EVERY_TOOL)
    # Bound to locals so the closures below hold the two methods, not the toolbox object.
    run_tool, record_text = toolbox.call, toolbox.say

    def call(name: str, arguments: dict[str, Any] | str | None = None, *, call_id: str | None = None) -> str:
        return run_tool(name, arguments, call_id=None if call_id is None else str(call_id))

    def say(text: str = "", reasoning: str = "") -> None:
        record_text(text, reasoning)

    def specs_() -> list[ToolSpec]:
        # Copies: a spec's parameters dict is shared with the toolbox's argument checks.
        return copy.deepcopy(list(specs))

    def openai_tools() -> list[dict[str, Any]]:
        return [s.to_openai() for s in specs_()]

    def tool(name: str) -> Callable[..., str]:
        def run(**arguments: Any) -> str:
            return call(name, arguments)

        run.__name__ = run.__qualname__ = name
        run.__doc__ = SPECS[name].description
        return run

    def refuse(self: object, name: str) -> Any:
        raise AttributeError(f"tools has no attribute {name!r}: an agent gets only {offered}")

    def describe(self: object) -> str:
        return f"<agent tools: {', '.join(names)}>"

    namespace: dict[str, Any] = {
        "__slots__": (),
        "__doc__": AgentTools.__doc__,
        "__module__": __name__,
        "names": names,
        "call": staticmethod(call),
        "say": staticmethod(say),
        "specs": staticmethod(specs_),
        "openai_tools": staticmethod(openai_tools),
        "__getattr__": refuse,
        "__repr__": describe,
        "__dir__": lambda self: sorted(SURFACE + EVERY_TOOL),
        **{name: staticmethod(tool(name)) for name in EVERY_TOOL},
    }
    # A class per toolbox, so the instance itself carries nothing (no __dict__, no slots).
    return type("AgentTools", (), namespace)()


__all__ = ["SURFACE", "AgentTools", "ToolNames", "facade"]
