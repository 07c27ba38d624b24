"""A case's collectors and items: one group per case, one checkpoint item per checkpoint
(times epochs), or one failing item naming why the case cannot run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ..cases import Case, CaseError, parse_case
from ..scoring import CHECKPOINTS
from . import StoreUnavailable
from .problems import case_problems
from .session import CaseRun, realm_session
from .settings import marker_name, settings


class CaseFile(pytest.File):
    """``cases/<platform>/<id>.yaml``: one case collector.

    A case that cannot run becomes one failing item instead of its checkpoints:
    ``load`` for a bad case file, ``telemetry`` for a case whose events were left
    out of the store (a bad telemetry file) or are missing from it.
    """

    def collect(self) -> list[pytest.Item | pytest.Collector]:
        config = self.config
        try:
            found = realm_session(config).case_set()
            case = found.cases.get(self.path.stem)
            if case is None:
                error = next((e for e in found.errors if Path(e.path) == self.path), None)
                raise error or parse_case(self.path)  # type: ignore[misc]
        except CaseError as exc:
            return [BrokenCase.from_parent(self, name="load", error=str(exc))]
        except StoreUnavailable as exc:
            return [BrokenCase.from_parent(self, name="telemetry", error=str(exc))]
        problems = case_problems(config, case)
        if problems:
            message = f"{case.id} cannot be scored:\n" + "\n".join(f"  {m}" for m in problems)
            item = BrokenCase.from_parent(self, name="telemetry", error=message)
            item.realm_case = case  # selected like the case's checkpoints (-m, --realm-subset)
            for mark in _case_marks(case):
                item.add_marker(mark)
            return [item]
        return [CaseGroup.from_parent(self, name=case.id, case=case)]


class BrokenCase(pytest.Item):
    """A case that cannot run: fails with the reason (named file, line and field)."""

    realm_case: Case  # set only when the case itself loaded (then selected like its checkpoints)

    def __init__(self, *, error: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error

    def runtest(self) -> None:
        raise CaseNotRunnable(self.error)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        return self.error

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, self.name


class CaseNotRunnable(Exception):
    """Raised by a `BrokenCase`: its message says which file, line or field stops the case."""


def _case_marks(case: Case) -> list[pytest.MarkDecorator]:
    """``realm_case(id)``, the platform and the subsets: how ``-m`` selects a case."""
    return [
        pytest.mark.realm_case(case.id),
        getattr(pytest.mark, case.platform),
        *(getattr(pytest.mark, marker_name(subset)) for subset in case.subsets),
    ]


class CaseGroup(pytest.Collector):
    """One case: its checkpoint items (times epochs)."""

    def __init__(self, *, case: Case, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        for mark in _case_marks(case):
            self.add_marker(mark)
        self.add_marker(pytest.mark.xdist_group(case.id))

    def collect(self) -> list[pytest.Item]:
        epochs = settings(self.config).epochs
        items: list[pytest.Item] = []
        for epoch in range(1, epochs + 1):
            for checkpoint in CHECKPOINTS:
                name = checkpoint if epochs == 1 else f"{checkpoint}[epoch{epoch}]"
                item = CheckpointItem.from_parent(self, name=name, callobj=check_checkpoint)
                item.realm_case, item.realm_checkpoint, item.realm_epoch = self.case, checkpoint, epoch
                items.append(item)
        return items


class CheckpointItem(pytest.Function):
    realm_case: Case
    realm_checkpoint: str
    realm_epoch: int

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CheckpointFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)  # Function's takes no style: it reads --tb


class CheckpointFailure(AssertionError):
    """A checkpoint below its pass ratio: the message is the graded breakdown."""


def check_checkpoint(realm_run: CaseRun, request: pytest.FixtureRequest) -> None:
    """A checkpoint item's test: record its score, pass at the pass ratio of its maximum."""
    item = request.node
    score = realm_run.score
    checkpoint = score.checkpoints[item.realm_checkpoint]
    item.user_properties.extend(
        [
            ("case", score.case_id),
            ("platform", score.platform),
            ("checkpoint", checkpoint.name),
            ("epoch", score.epoch),
            ("score", None if checkpoint.score is None else round(checkpoint.score, 4)),
            ("max_score", checkpoint.max),
            ("status", score.status),
        ]
    )
    if checkpoint.score is None:
        pytest.skip(f"{checkpoint.name}: {checkpoint.message}")
    ratio = settings(request.config).pass_ratio
    if checkpoint.score + 1e-9 < ratio * checkpoint.max:
        raise CheckpointFailure(
            f"{checkpoint.name.split('_')[0]} {checkpoint.score:.2f}/{checkpoint.max:g}: {checkpoint.message}"
        )
