"""Rewrites that close gaps between duckdb-kql and Kusto, split by risk.

duckdb-kql (pinned at 1.1.2) translates KQL to DuckDB SQL through an IR, and
refuses what it does not implement rather than guessing. The rewrites here
close the gaps detection queries meet, least invasive first:

* `names` — Kusto's function names and deprecated spellings (data only);
* `functions` — rows added to duckdb-kql's function tables (data);
* `speed` — renderers replaced by cheaper SQL with the same answers;
* `tree` — parse-tree and IR rewrites (operators needing the input's columns);
* `install` — adds and removes all of it, guarded by the exact duckdb-kql version.

Nothing is installed on import: `ctirealm.engine.LocalEngine` calls
`ensure_installed` when an engine is created, and callers that translate
without an engine call `install`. docs/engine.md lists every patch.
"""

from __future__ import annotations

from .functions import ENGINE_FUNCTIONS, STRREP_MAX_BYTES
from .install import DUCKDB_KQL_VERSION, disabled, ensure_installed, install, installed, uninstall
from .names import KUSTO_FUNCTIONS, is_kusto_function
from .tree import COLUMN_TYPES, MAX_DATA_COLUMNS, READ_DISTINCT, READ_TYPES

__all__ = [
    "COLUMN_TYPES",
    "DUCKDB_KQL_VERSION",
    "ENGINE_FUNCTIONS",
    "KUSTO_FUNCTIONS",
    "MAX_DATA_COLUMNS",
    "READ_DISTINCT",
    "READ_TYPES",
    "STRREP_MAX_BYTES",
    "disabled",
    "ensure_installed",
    "install",
    "installed",
    "is_kusto_function",
    "uninstall",
]
