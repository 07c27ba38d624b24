"""The agent toolbox (the reference's nine tools) and the trajectory it records."""

from .toolbox import (
    ALL_TOOLS,
    SPECS,
    VARIANTS,
    AgentStopped,
    Toolbox,
    ToolSpec,
    result_rows,
    validate_output,
)
from .trajectory import Step, Submission, ToolCall, Trajectory

__all__ = [
    "ALL_TOOLS",
    "SPECS",
    "VARIANTS",
    "AgentStopped",
    "Step",
    "Submission",
    "ToolCall",
    "ToolSpec",
    "Toolbox",
    "Trajectory",
    "result_rows",
    "validate_output",
]
