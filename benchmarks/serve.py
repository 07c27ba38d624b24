"""``ctirealm serve`` throughput: a whole wide table in-process vs through the Kusto REST API.

Measures, on the default telemetry store (its DeviceProcessEvents: about 35k rows
of 63 columns), the median time to fetch the whole table

* in-process, through ``LocalEngine.query`` (no row limit in the way), and
* served, through azure-kusto-data against ``ctirealm serve`` on loopback (the
  v2 endpoint, as notebooks and the upstream harness use it; ``--v1`` adds the
  v1 envelope, through ``execute_mgmt``),

and prints their ratio (target: served <= 3 x in-process).

Usage::

    python benchmarks/serve.py
    python benchmarks/serve.py --table SigninLogs --repeat 5 --v1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ctirealm.engine import LocalEngine
from ctirealm.engine.server import build_realm_server
from ctirealm.telemetry.dataset import Dataset
from ctirealm.telemetry.store import build_store

ROOT = Path(__file__).resolve().parents[1]
TARGET = 3.0


def median_seconds(run: Callable[[], int], repeat: int) -> tuple[float, int]:
    """The median wall time of *repeat* runs (after one warm-up), and the rows the last one saw."""
    rows = run()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        rows = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--telemetry", type=Path, default=ROOT / "telemetry")
    parser.add_argument("--table", default="DeviceProcessEvents")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs each (default 3)")
    parser.add_argument("--v1", action="store_true", help="time the v1 query endpoint too")
    args = parser.parse_args(argv)

    from azure.kusto.data import KustoClient, KustoConnectionStringBuilder

    store = build_store(Dataset.load(args.telemetry))
    query = args.table
    with LocalEngine.of_store(store, timeout=600) as engine:
        columns = len(engine.schema(args.table))
        local, rows = median_seconds(lambda: len(engine.query(query, limit=10**9).rows), args.repeat)

    server = build_realm_server(store.path, port=0, now=store.now)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = KustoClient(KustoConnectionStringBuilder.with_no_authentication(server.url))

        def v2() -> int:
            return len(client.execute_query("ctirealm", query).primary_results[0])

        def v1() -> int:
            # The SDK's v1 envelope: the management endpoint, which answers queries too.
            return len(client.execute_mgmt("ctirealm", query).primary_results[0])

        results: list[tuple[str, float, int]] = [("in-process (LocalEngine)", local, rows)]
        results.append(("served, v2 (azure-kusto-data)", *median_seconds(v2, args.repeat)))
        if args.v1:
            results.append(("served, v1 (azure-kusto-data)", *median_seconds(v1, args.repeat)))
        client.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

    print(f"{args.table}: {rows} rows x {columns} columns, median of {args.repeat}")
    worst = 0.0
    for name, seconds, count in results:
        ratio = seconds / local if local else float("inf")
        if name.startswith("served"):
            worst = max(worst, ratio)
        print(f"  {name:32s} {seconds:7.2f} s  {ratio:5.2f} x  ({count} rows)")
    verdict = "ok" if worst <= TARGET else "over target"
    print(f"served / in-process: {worst:.2f} x (target <= {TARGET:g} x): {verdict}")
    return 0 if all(count == rows for *_, count in results) else 1


if __name__ == "__main__":
    sys.exit(main())
