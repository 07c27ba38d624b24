"""What the rules gate (`rule_items`) and the content gate (`content_items`) share: a failed
check and how it is shown, the item that dispatches to its check, one item per check of a
detection file, and paths as the report writes them.

Each gate keeps its own checks; this module holds only the pytest plumbing around them, so a
detection reads the same way whichever gate collected it.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from . import StoreUnavailable

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr  # what pytest's own repr_failure returns


class CheckFailed(AssertionError):
    """A gate check failed; the message says exactly what is wrong."""


@cache
def platform_data(name: str) -> dict[str, Any]:
    """``plugin/data/<name>.yaml`` (a platform's connectors, periods, entities...), read once."""
    text = resources.files(__package__).joinpath(f"data/{name}.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def relative(config: pytest.Config, path: Path) -> str:
    """*path* relative to the rootdir, with ``/`` (as reports and messages show it)."""
    try:
        return path.relative_to(config.rootpath).as_posix()
    except ValueError:
        return str(path)


def check_items(
    collector: pytest.Collector,
    item_class: type[CheckItem],
    names: tuple[str, ...],
    marker: pytest.MarkDecorator,
    group: str,
) -> list[pytest.Item]:
    """One *item_class* per check in *names*, marked with *marker* and kept on one xdist worker
    (*group*), so the detection's shared state is computed once."""
    items: list[pytest.Item] = []
    for name in names:
        item = item_class.from_parent(collector, name=name, check=name)
        item.add_marker(marker)
        item.add_marker(pytest.mark.xdist_group(name=group))
        items.append(item)
    return items


class CheckItem(pytest.Item):
    """One check of one detection: `run_check` calls ``_check_<name>``; a failure it expects is
    shown as ``<label>: <message>`` instead of a traceback."""

    #: Exceptions shown as a message (the check's own words) rather than a traceback.
    expected_failures: tuple[type[BaseException], ...] = (CheckFailed, StoreUnavailable)
    #: Skips name the detection file (`pytest -rs`), not the line of the check that skipped.
    skip_at_item = False

    def __init__(self, *, check: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check

    def failure_label(self) -> str:
        """How the detection is named in front of a failure's message (each gate's item
        names it its own way)."""
        raise NotImplementedError(f"{type(self).__name__} must name its detection")

    def failure_text(self, message: str) -> str:
        return f"{self.failure_label()}: {message}"

    def run_check(self) -> None:
        try:
            getattr(self, f"_check_{self.check}")()
        except pytest.skip.Exception as exc:
            if not self.skip_at_item or exc._use_item_location:
                raise
            raise pytest.skip.Exception(exc.msg, _use_item_location=True) from None

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, self.expected_failures):
            return self.failure_text(str(excinfo.value))
        return super().repr_failure(excinfo, style)
