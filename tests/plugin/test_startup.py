"""The plugins load in every pytest run of an environment they are installed in: importing them
must not load DuckDB, duckdb-kql or pySigma, which only runs that collect cases or rules need."""

from __future__ import annotations

import json
import subprocess
import sys


def test_importing_the_plugins_loads_no_engine_and_no_sigma() -> None:
    code = (
        "import json, sys\n"
        "import ctirealm.plugin, ctirealm.plugin.cases, ctirealm.plugin.rules, ctirealm.plugin.html\n"
        "print(json.dumps(sorted(m for m in ('duckdb', 'duckdb_kql', 'sigma') if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


def test_the_engine_still_loads_on_first_use() -> None:
    code = (
        "import sys\nfrom ctirealm.engine import LocalEngine\n"
        "assert 'duckdb_kql' in sys.modules and LocalEngine.__name__ == 'LocalEngine'\n"
        "import ctirealm.engine as e\n"
        "try:\n    e.Nope\nexcept AttributeError as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "has no attribute 'Nope'" in done.stdout
