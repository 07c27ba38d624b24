"""Adapters for the agent under test, chosen by a spec string (``--realm-agent``).

=====================  ===================================================
``baseline``           deterministic model-free analyst (default)
``oracle``             submits each case's reference solution
``null``               submits nothing
``python:mod:attr``    an object or factory with ``run(task, tools)``
``command:"argv"``     any program speaking the JSON-lines protocol
``mcp:COMMAND``        any agent speaking MCP (an agent CLI), given the case's MCP server
``openai:<model>``     a tool-calling loop through the openai SDK
``replay:<dir>``       trajectories recorded by an earlier run
``inspect:<log>``      Inspect AI logs (file or folder) of CTI-REALM runs
=====================  ===================================================
"""

from __future__ import annotations

import importlib
import shlex
from collections.abc import Callable
from typing import Any

from ..cases import CaseSet
from .base import Agent, Task, agent_name, run_case
from .builtin import BaselineAgent, NullAgent, OracleAgent, builtin_agent
from .parse import SubmissionError, to_submission
from .replay import ReplayAgent, trajectory_path


class AgentSpecError(ValueError):
    """``--realm-agent`` names no agent we can build; the message says what is accepted."""


def _python(target: str, cases: CaseSet, options: dict[str, Any]) -> Any:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise AgentSpecError(f"python agent spec must be python:module:attr, got python:{target}")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise AgentSpecError(f"cannot load python agent {target!r}: {exc}") from exc
    if not hasattr(obj, "run") or isinstance(obj, type):
        obj = obj()  # a class or factory
    if not hasattr(obj, "run"):
        raise AgentSpecError(f"python agent {target!r} has no run(task, tools) method")
    return obj


def _command(target: str, cases: CaseSet, options: dict[str, Any]) -> Any:
    from .command import CommandAgent

    return CommandAgent(target, **{k: v for k, v in options.items() if k in ("cwd", "env")})


def _mcp(target: str, cases: CaseSet, options: dict[str, Any]) -> Any:
    from .mcp import MCPAgent

    try:
        return MCPAgent(target, **{k: v for k, v in options.items() if k in ("cwd", "env")})
    except ValueError as exc:
        raise AgentSpecError(f"mcp agent: {exc}") from exc


def _openai(target: str, cases: CaseSet, options: dict[str, Any]) -> Any:
    from .openai_chat import OpenAIAgent

    return OpenAIAgent(
        target, **{k: v for k, v in options.items() if k in ("base_url", "temperature", "api_key")}
    )


def _inspect(target: str, cases: CaseSet, options: dict[str, Any]) -> Any:
    from .inspect_log import InspectLogAgent, InspectLogError

    try:
        return InspectLogAgent(target)
    except (InspectLogError, ImportError) as exc:
        raise AgentSpecError(f"inspect agent: {exc}") from exc


FACTORIES: dict[str, Callable[[str, CaseSet, dict[str, Any]], Any]] = {
    "python": _python,
    "command": _command,
    "mcp": _mcp,
    "openai": _openai,
    "replay": lambda target, cases, options: ReplayAgent(target),
    "inspect": _inspect,
}


def _unquote(target: str) -> str:
    """*target* without the double quotes around all of it (``command:"python a.py"``); quotes
    that are the command's own (``mcp:agent -p "{prompt}"``) stay."""
    if target.startswith('"'):
        try:
            words = shlex.split(target)
        except ValueError:
            return target
        if len(words) == 1:
            return words[0].strip()
    return target


def resolve_agent(spec: str, cases: CaseSet, **options: Any) -> Any:
    """Build the agent named by *spec* (see the module docstring)."""
    spec = spec.strip()
    if spec in ("baseline", "oracle", "null"):
        return builtin_agent(spec, cases)
    kind, sep, target = spec.partition(":")
    if not sep or kind not in FACTORIES:
        raise AgentSpecError(
            f"unknown agent {spec!r}; use baseline, oracle, null, python:mod:attr, "
            'command:"argv", mcp:COMMAND, openai:<model>, replay:<dir> or inspect:<log>'
        )
    target = _unquote(target.strip())
    try:
        return FACTORIES[kind](target, cases, options)
    except ModuleNotFoundError as exc:
        raise AgentSpecError(f"agent {spec!r} needs a missing package: {exc.name}") from exc


__all__ = [
    "Agent",
    "AgentSpecError",
    "BaselineAgent",
    "NullAgent",
    "OracleAgent",
    "ReplayAgent",
    "SubmissionError",
    "Task",
    "agent_name",
    "resolve_agent",
    "run_case",
    "to_submission",
    "trajectory_path",
]
