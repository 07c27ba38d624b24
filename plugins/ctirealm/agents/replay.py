"""``replay:<dir>``: re-runs trajectories recorded by an earlier run through today's tools.

Assistant text is replayed as recorded; every tool call is made again (so
results are fresh and recorded anew); the recorded answer is returned. A
recorded crash or missing answer is reproduced as such.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..tools.toolbox import Toolbox
from ..tools.trajectory import Trajectory
from .base import Task


def trajectory_path(directory: Path, case_id: str, epoch: int = 1) -> Path:
    """Where a run writes (and replay reads) one case's trajectory."""
    return Path(directory) / f"{case_id}.e{epoch}.json"


class ReplayAgent:
    """Replays ``<dir>/<case_id>.e<epoch>.json`` (falls back to epoch 1)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ValueError(f"replay: {self.directory} is not a directory of trajectories")
        self.name = f"replay:{self.directory.name}"

    def run(self, task: Task, tools: Toolbox) -> Any:
        path = trajectory_path(self.directory, task.case_id, task.epoch)
        if not path.is_file():
            path = trajectory_path(self.directory, task.case_id, 1)
        if not path.is_file():
            raise FileNotFoundError(f"no recorded trajectory for {task.case_id} in {self.directory}")
        recorded = Trajectory.load(path)
        for step in recorded.steps:
            if step.kind == "assistant":
                tools.say(step.text, step.reasoning)
            elif step.tool is not None:
                arguments = step.tool.arguments
                if set(arguments) == {"_raw"}:
                    tools.call(step.tool.name, arguments["_raw"], call_id=step.tool.call_id)
                else:
                    tools.call(step.tool.name, arguments, call_id=step.tool.call_id)
        if recorded.status == "crashed":
            raise RuntimeError(f"recorded crash: {recorded.reason}")
        if recorded.submission is not None:
            return recorded.submission
        return recorded.raw_answer
