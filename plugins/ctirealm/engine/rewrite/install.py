"""Installing and removing the rewrites: the only module that changes duckdb-kql.

`install` checks that duckdb-kql is exactly the release the rewrites were
written against, then adds the rows of `functions` to duckdb-kql's function
tables and replaces the attributes listed in `speed.PATCHES` and
`tree.PATCHES`, saving every original. `uninstall` restores duckdb-kql exactly
(the corpus benchmark measures the baseline that way); `disabled` does so for a
block, during which `ensure_installed` (what a new `LocalEngine` calls) leaves
duckdb-kql as shipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any

import duckdb_kql
from duckdb_kql import ir
from duckdb_kql import translate as _translate
from duckdb_kql.translate import functions as _functions

from . import functions, names, speed, tree

#: The duckdb-kql release these rewrites were written and tested against.
DUCKDB_KQL_VERSION = "1.1.2"

_SAVED: dict[str, Any] = {}
#: Marks a table row that did not exist before `install`.
_ABSENT = object()
#: How many `disabled` blocks are open: while any is, `ensure_installed` does nothing.
_DISABLED = 0
_LOCK = threading.RLock()


def _patches() -> list[tuple[Any, str, Callable[[Any], Any]]]:
    return [*speed.PATCHES, *tree.PATCHES]


def installed() -> bool:
    """Whether the rewrites are in force."""
    return bool(_SAVED)


def install() -> None:
    """Extend and patch duckdb-kql (idempotent); refuses any duckdb-kql but the pinned one."""
    with _LOCK:
        if _SAVED:
            return
        if duckdb_kql.__version__ != DUCKDB_KQL_VERSION:
            raise RuntimeError(
                f"ctirealm.engine.rewrite patches duckdb-kql {DUCKDB_KQL_VERSION} internals; "
                f"found {duckdb_kql.__version__}: re-run tests/engine and review the "
                "rewrite package before changing the pin"
            )
        saved: dict[Any, Any] = {}

        def put(table: dict[str, Any], key: str, value: Any) -> None:
            saved.setdefault((id(table), key), (table, key, table.get(key, _ABSENT)))
            table[key] = value

        forms = _translate._SPECIAL_FORMS
        scalars, aggregates = _functions.SCALAR_FUNCTIONS, _functions.AGGREGATE_FUNCTIONS
        for name, render in functions.NEW_FORMS.items():
            if name not in forms:
                put(forms, name, render)
        for name, render in functions.WIDENED_FORMS.items():
            put(forms, name, _widened(render, forms.get(name)))
        for spec in functions.NEW_SCALARS:
            if spec.name not in scalars:
                put(scalars, spec.name, spec)
        for name, arities in functions.WIDENED_ARITIES.items():
            put(scalars, name, dataclasses.replace(scalars[name], arities=arities))
        for aggregate in functions.new_aggregates():
            if aggregate.name not in aggregates:
                put(aggregates, aggregate.name, aggregate)
        for aggregate in functions.replaced_aggregates():
            put(aggregates, aggregate.name, aggregate)
        # A deprecated spelling is registered where its replacement is, so duckdb-kql's
        # lowering accepts the call; `tree` renames it to the replacement before emission.
        for alias, target in names.DEPRECATED_ALIASES.items():
            if alias in forms or alias in scalars or alias in aggregates:
                continue  # duckdb-kql has it already
            if target in aggregates:
                put(aggregates, alias, dataclasses.replace(aggregates[target], name=alias))
                continue
            if target in scalars:
                put(scalars, alias, dataclasses.replace(scalars[target], name=alias))
            if target in forms or target in scalars:
                put(forms, alias, functions.alias(target))
        attributes = {(module, name): getattr(module, name) for module, name, _ in _patches()}
        for module, name, replacement in _patches():
            setattr(module, name, replacement(attributes[(module, name)]))
        _SAVED["rows"] = list(saved.values())
        _SAVED["attributes"] = attributes


def ensure_installed() -> None:
    """`install`, unless a `disabled` block is open (what creating an engine calls)."""
    if not _DISABLED:
        install()


def _widened(
    render: Callable[[ir.FunctionCall], str | None],
    previous: Callable[[ir.FunctionCall], str | None] | None,
) -> Callable[[ir.FunctionCall], str | None]:
    def widened(node: ir.FunctionCall) -> str | None:
        sql = render(node)
        if sql is None and previous is not None:
            return previous(node)
        return sql

    return widened


def uninstall() -> None:
    """Restore duckdb-kql exactly as it was before `install`."""
    with _LOCK:
        if not _SAVED:
            return
        for table, key, previous in reversed(_SAVED["rows"]):
            if previous is _ABSENT:
                table.pop(key, None)
            else:
                table[key] = previous
        for (module, name), original in _SAVED["attributes"].items():
            setattr(module, name, original)
        _SAVED.clear()


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run a block with duckdb-kql as shipped (for measurements and tests)."""
    global _DISABLED
    with _LOCK:
        was = installed()
        _DISABLED += 1
        uninstall()
    try:
        yield
    finally:
        with _LOCK:
            _DISABLED -= 1
            if was:
                install()
