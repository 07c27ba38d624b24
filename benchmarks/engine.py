"""Engine performance: typical detection queries through LocalEngine vs hand-written DuckDB SQL.

Measures, on a telemetry store whose DeviceProcessEvents holds about a million
rows (built by the benign generator, cached by content hash):

* the median latency of each query through ``LocalEngine.query`` (KQL, warm
  translation cache) and of the same logic written by hand in DuckDB SQL, run
  alternately on equally configured read-only connections, and their ratio
  (target: median ratio <= 1.2, worst <= 3);
* the one-off translation time of each query (cold cache);
* the time to build a 1M-row store (all tables; target <= 10 s), in a child
  process, with its peak RSS;
* the peak RSS of this process.

Usage::

    python benchmarks/engine.py                       # everything
    python benchmarks/engine.py --skip-build          # queries only
    python benchmarks/engine.py --repeat 9 --process-rows 1000000
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from ctirealm.engine import LocalEngine
from ctirealm.telemetry.dataset import Dataset
from ctirealm.telemetry.generator import load_profiles, table_counts
from ctirealm.telemetry.store import Store, build_store, default_cache_dir

ROOT = Path(__file__).resolve().parents[1]

#: A term boundary for `has`, as Kusto defines terms (runs of letters and digits).
B0, B1 = r"(?:^|[^\pL\pN])", r"(?:$|[^\pL\pN])"


@dataclass(frozen=True)
class Case:
    """One detection-style query, in KQL and as hand-written SQL with the same meaning."""

    name: str
    kql: str
    sql: str


CASES = [
    Case(
        "has on command line",
        'DeviceProcessEvents | where ProcessCommandLine has "wal-archive" '
        "| project Timestamp, DeviceName, ProcessCommandLine, ReportId",
        "SELECT Timestamp, DeviceName, ProcessCommandLine, ReportId FROM DeviceProcessEvents "
        f"WHERE regexp_matches(ProcessCommandLine, '(?i){B0}wal-archive{B1}')",
    ),
    Case(
        "contains on command line",
        'DeviceProcessEvents | where ProcessCommandLine contains "metrics" | count',
        "SELECT count(*) AS Count FROM DeviceProcessEvents WHERE ProcessCommandLine ILIKE '%metrics%'",
    ),
    Case(
        "has_any indicator list",
        "DeviceProcessEvents "
        '| where ProcessCommandLine has_any ("base64", "wget", "nc", "socat", "/dev/tcp") '
        "| summarize n = count() by FileName",
        "SELECT FileName, count(*) AS n FROM DeviceProcessEvents WHERE regexp_matches("
        f"ProcessCommandLine, '(?i)(?:{B0}(?:base64|wget|nc|socat){B1}|/dev/tcp{B1})') "
        "GROUP BY FileName",
    ),
    Case(
        "has_any and a second condition",
        'DeviceProcessEvents | where ProcessCommandLine has_any ("wget", "curl") '
        'and AccountName != "root" '
        "| project Timestamp, DeviceName, AccountName, ProcessCommandLine",
        "SELECT Timestamp, DeviceName, AccountName, ProcessCommandLine FROM DeviceProcessEvents "
        f"WHERE regexp_matches(ProcessCommandLine, '(?i){B0}(?:wget|curl){B1}') "
        "AND AccountName <> 'root'",
    ),
    Case(
        "startswith on paths",
        'DeviceProcessEvents | where FolderPath startswith "/usr/local/" | summarize n = count() by FileName',
        "SELECT FileName, count(*) AS n FROM DeviceProcessEvents "
        "WHERE FolderPath ILIKE '/usr/local/%' GROUP BY FileName",
    ),
    Case(
        "in~ list",
        "DeviceProcessEvents "
        '| where FileName in~ ("curl", "wget", "nc", "ncat", "socat", "kubectl") '
        "| summarize n = count() by FileName",
        "SELECT FileName, count(*) AS n FROM DeviceProcessEvents "
        "WHERE lower(FileName) IN ('curl', 'wget', 'nc', 'ncat', 'socat', 'kubectl') "
        "GROUP BY FileName",
    ),
    Case(
        "summarize count by DeviceName",
        "DeviceProcessEvents | summarize count() by DeviceName",
        "SELECT DeviceName, count(*) AS count_ FROM DeviceProcessEvents GROUP BY DeviceName",
    ),
    Case(
        "bin by hour",
        "DeviceProcessEvents | summarize n = count() by bin(Timestamp, 1h)",
        "SELECT time_bucket(INTERVAL 1 HOUR, Timestamp, TIMESTAMP '1970-01-01') AS Timestamp, "
        "count(*) AS n FROM DeviceProcessEvents GROUP BY 1",
    ),
    Case(
        "time filter + dcount",
        "DeviceProcessEvents | where Timestamp > ago(1d) | summarize dcount(FileName) by DeviceName",
        "SELECT DeviceName, count(DISTINCT FileName) AS dcount_FileName FROM DeviceProcessEvents "
        "WHERE Timestamp > TIMESTAMP '{now}' - INTERVAL 1 DAY GROUP BY DeviceName",
    ),
    Case(
        "regex",
        "DeviceProcessEvents "
        r'| where ProcessCommandLine matches regex @"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}" '
        "| summarize n = count() by DeviceName",
        "SELECT DeviceName, count(*) AS n FROM DeviceProcessEvents WHERE regexp_matches("
        r"ProcessCommandLine, '[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}') "
        "GROUP BY DeviceName",
    ),
    Case(
        "parent-child condition",
        "DeviceProcessEvents "
        '| where InitiatingProcessFileName in~ ("bash", "sh", "dash") '
        'and FileName in~ ("curl", "wget") '
        "| summarize n = count() by DeviceName, FileName",
        "SELECT DeviceName, FileName, count(*) AS n FROM DeviceProcessEvents "
        "WHERE lower(InitiatingProcessFileName) IN ('bash', 'sh', 'dash') "
        "AND lower(FileName) IN ('curl', 'wget') GROUP BY DeviceName, FileName",
    ),
    Case(
        "join process and file events on DeviceId",
        'DeviceProcessEvents | where FileName == "sudo" '
        "| join kind=inner (DeviceFileEvents "
        '| where ActionType == "FileCreated" and FolderPath startswith "/tmp/" '
        "| summarize TmpFiles = count() by DeviceId) on DeviceId "
        "| summarize Runs = count(), TmpFiles = max(TmpFiles) by DeviceName",
        "SELECT p.DeviceName, count(*) AS Runs, max(f.TmpFiles) AS TmpFiles "
        "FROM DeviceProcessEvents p JOIN (SELECT DeviceId, count(*) AS TmpFiles "
        "FROM DeviceFileEvents WHERE ActionType = 'FileCreated' AND FolderPath ILIKE '/tmp/%' "
        "GROUP BY DeviceId) f ON p.DeviceId = f.DeviceId "
        "WHERE p.FileName = 'sudo' GROUP BY p.DeviceName",
    ),
]


def _normalise(rows: list[tuple[Any, ...]]) -> list[tuple[str, ...]]:
    def cell(v: Any) -> str:
        if isinstance(v, datetime):
            v = v.astimezone(UTC).replace(tzinfo=None) if v.tzinfo else v
        if isinstance(v, float):
            return f"{v:.6g}"
        return str(v)

    return sorted(tuple(cell(v) for v in row) for row in rows)


def _rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


_BUILD_CHILD = """
import sys, time
from pathlib import Path
from ctirealm.telemetry.dataset import Dataset
from ctirealm.telemetry.store import build_store
started = time.perf_counter()
store = build_store(Dataset.load(sys.argv[1]), rows=int(sys.argv[2]), cache_dir=Path(sys.argv[3]),
                    force=True)
print("BUILD", time.perf_counter() - started, sum(store.rows.values()))
"""


def measure_build(rows: int) -> tuple[float, int, float]:
    """Build a *rows*-row store from scratch in a child process: seconds, rows, peak RSS (MB)."""
    with tempfile.TemporaryDirectory() as tmp:
        stdout = subprocess.run(
            [sys.executable, "-c", _BUILD_CHILD, str(ROOT / "telemetry"), str(rows), tmp],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    line = next(ln for ln in stdout.splitlines() if ln.startswith("BUILD "))
    _, seconds, total = line.split()
    return float(seconds), int(total), _rss_mb(resource.RUSAGE_CHILDREN)


def process_store(process_rows: int, cache_dir: Path) -> tuple[Path, datetime, int]:
    """A store whose DeviceProcessEvents has at least *process_rows* rows (cached)."""
    dataset = Dataset.load(ROOT / "telemetry")
    shares = {t: float(s) for t, s in (load_profiles(dataset.generator_dir())["shares"]).items()}
    total = math.ceil(process_rows / (shares["DeviceProcessEvents"] / sum(shares.values())))
    while table_counts(shares, total)["DeviceProcessEvents"] < process_rows:
        total += 1000
    store = build_store(dataset, rows=total, cache_dir=cache_dir)
    return store.path, store.now, store.rows["DeviceProcessEvents"]


def run_queries(store: Path, now: datetime, repeat: int, threads: int | None) -> list[dict[str, Any]]:
    engine = LocalEngine.open(store, timeout=300.0, threads=threads)
    con = duckdb.connect(str(store), read_only=True, config={"enable_external_access": "false"})
    con.execute("SET TimeZone='UTC'")
    con.execute(f"SET memory_limit='{2}GB'")
    if threads:
        con.execute(f"SET threads={int(threads)}")
    stamp = now.replace(tzinfo=None).isoformat(sep=" ")
    results = []
    for case in CASES:
        sql = case.sql.replace("{now}", stamp)
        started = time.perf_counter()
        engine.translate(case.kql)
        translate_ms = (time.perf_counter() - started) * 1000
        kql_rows = engine.query(case.kql).rows
        sql_rows = con.execute(sql).fetchall()
        same = _normalise(kql_rows) == _normalise(sql_rows)
        kql_times, sql_times = [], []
        for _ in range(repeat):
            started = time.perf_counter()
            engine.query(case.kql)
            kql_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            con.execute(sql).fetchall()
            sql_times.append(time.perf_counter() - started)
        kql_ms = statistics.median(kql_times) * 1000
        sql_ms = statistics.median(sql_times) * 1000
        results.append(
            {
                "query": case.name,
                "kql_ms": kql_ms,
                "sql_ms": sql_ms,
                "ratio": kql_ms / sql_ms,
                "translate_ms": translate_ms,
                "rows": len(kql_rows),
                "same_result": same,
            }
        )
    engine.close()
    con.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--process-rows", type=int, default=1_000_000)
    parser.add_argument("--build-rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir() / "benchmarks")
    parser.add_argument("--skip-build", action="store_true", help="skip the build-time figure")
    parser.add_argument("--store", type=Path, help="an already built store to query")
    args = parser.parse_args(argv)

    print(f"machine: {os.cpu_count()} cpus; duckdb {duckdb.__version__}")
    if not args.skip_build:
        seconds, rows, rss = measure_build(args.build_rows)
        print(
            f"store build, {rows:,} rows (all tables, generator + load): {seconds:.1f} s "
            f"(target <= 10 s); child peak RSS {rss:.0f} MB"
        )
    started = time.perf_counter()
    if args.store:
        opened = Store.open(args.store)
        store, now, process_rows = opened.path, opened.now, opened.rows["DeviceProcessEvents"]
    else:
        store, now, process_rows = process_store(args.process_rows, args.cache_dir)
    print(
        f"query store: DeviceProcessEvents {process_rows:,} rows "
        f"(ready in {time.perf_counter() - started:.1f} s, cached in {args.cache_dir})"
    )
    results = run_queries(store, now, args.repeat, args.threads)
    print(f"\n{'query':44} {'KQL ms':>9} {'SQL ms':>9} {'ratio':>6} {'xlate ms':>9} {'rows':>6}  same")
    for r in results:
        print(
            f"{r['query']:44} {r['kql_ms']:9.1f} {r['sql_ms']:9.1f} {r['ratio']:6.2f} "
            f"{r['translate_ms']:9.1f} {r['rows']:6d}  {'yes' if r['same_result'] else 'NO'}"
        )
    median_ratio = statistics.median(r["ratio"] for r in results)
    worst = max(results, key=lambda r: r["ratio"])
    print(
        f"\nmedian ratio: {median_ratio:.2f} (target <= 1.2); worst {worst['ratio']:.2f} "
        f"({worst['query']}; target <= 3)"
    )
    print(f"peak RSS (this process): {_rss_mb():.0f} MB")
    return 0 if all(r["same_result"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
