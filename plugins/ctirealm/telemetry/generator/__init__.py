"""Benign background generator: what a real environment does all day, as event tables.

The benchmark scores a detection by the attacks it catches *and* by the benign events
it matches. This module writes the benign background those false positives are counted
on: Linux servers running cron, package managers, sshd sessions and services; AKS
controllers, operators, CI and admins talking to the API server; sign-ins, directory
changes, Azure Resource Manager writes, Key Vault reads, Graph calls, mailbox,
SharePoint and storage traffic.

Behaviour lives in the YAML profiles (``telemetry/generator/*.yaml``); this module is a
small template engine that reads them:

* ``shares`` — how the requested row total is split across tables;
* ``rhythms`` — hour-of-day and weekend weights (diurnal rhythm of each activity);
* ``globals`` and ``pools`` — the environment: tenant, hosts, users, apps, clusters...;
* ``binaries`` and ``lifetimes`` — the Linux executables processes are made of;
* ``tables`` — per table a ``layout`` (column -> value template) and ``events``
  (weighted activity templates binding entities from the pools); a table with
  ``mirror_of: <Table>`` also holds every row of that table, with the same id and its
  own ``force`` values (AKSAudit takes AKSAuditAdmin's events, as AKS writes them to
  both categories). The store copies those rows (see :func:`mirrors`); the generator
  writes each table's own events only.

Templates use ``{name.attr}`` for values known when a template is compiled (entities,
inline choices) and ``{$kind:args}`` for values drawn per row (times, ids, pids...).
The comments in those profiles and :meth:`.tables._TableGenerator._token` describe the format.

The package, one job per module: :mod:`.profiles` (loading and merging profiles, row
totals per table), :mod:`.values` (times in a rhythm, ids), :mod:`.templates` (the
template language), :mod:`.tables` (one table's rows), :mod:`.splitfile` (the ``split``
format the store reads), :mod:`.workers` (tasks, worker processes, the writer thread);
this module is the entry point, :func:`generate`.

Output is deterministic: the same arguments give the same rows, byte for byte, whatever
the output format and however many worker processes write it. Each table has its own
``random.Random`` seeded from the seed and the table name; a table of more than
``SHARD_ROWS`` rows is cut into shards with streams (and id ranges) of their own, so the
split depends on the row count only, never on the machine. Compiled templates are cached
as format fragments so that a row costs a handful of random draws and one string join.

Two output formats: ``jsonl`` (``<Table>.jsonl``, one JSON object per line, the format of
committed event files) and ``split``, the compact form the store loads: each compiled row
variant is written once with its constant columns, and each row holds only the fields it
draws (times as epoch milliseconds), cut into time buckets so the store sorts each bucket
in memory. See :func:`generate` and docs/performance.md.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from .profiles import (
    Mirror,
    ProfileError,
    _load_schemas,
    default_profiles_dir,
    load_profiles,
    mirrors,
    table_counts,
)
from .splitfile import SplitFiles, bucket_bounds, split_files
from .tables import OUTPUTS, check_background
from .workers import (
    _Context,
    _generate_here,
    _generate_in_workers,
    _plan,
    available_cpus,
    worker_main,
)

__all__ = [
    "OUTPUTS",
    "Mirror",
    "ProfileError",
    "SplitFiles",
    "available_cpus",
    "bucket_bounds",
    "check_background",
    "generate",
    "load_profiles",
    "mirrors",
    "split_files",
    "table_counts",
    "worker_main",
]


#: Below this many rows, ``workers=None`` generates in-process (starting workers costs more).
PARALLEL_MIN_ROWS = 200_000


def generate(
    out_dir: Path,
    *,
    seed: int,
    rows: int,
    window: tuple[datetime, datetime],
    profiles_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
    output: str = "jsonl",
    workers: int | None = 1,
    on_table: Callable[[str], None] | None = None,
    scenarios_dir: Path | None = None,
) -> dict[str, int]:
    """Write the benign background of every table into *out_dir*; return rows per table.

    *rows* is the total across tables, split by the profiles' ``shares``; the same
    arguments always produce the same rows, whatever *workers* and *output* are.
    ``progress(n)`` is called with the number of rows written so far, about every 10,000
    rows and once at the end.

    *output* ``"jsonl"`` writes ``<Table>.jsonl`` (one JSON object per line, keys = schema
    columns). ``"split"`` is the compact form the store loads: per table and shard,
    ``<Table>.variants-NNN.csv`` holds each compiled row variant once (``vid`` then one
    CSV field per schema column, empty where rows vary) and ``<Table>.rows-NNN.csv`` one
    line per row (``vid`` then the varying fields, empty where the variant's value holds).
    Text fields are quoted, an empty field is null; a row's value of a column is its own
    field if present, else its variant's. See :func:`split_files`.

    *workers* > 1 generates shards in that many processes (``None``: one per CPU, or one
    for small sizes). ``on_table(table)`` is called in this process as soon as a table's
    files are complete, so a caller can load it while other tables are being generated.
    *scenarios_dir* adds the scenarios' ``background`` templates (see `load_profiles`).
    """
    if rows < 0:
        raise ValueError("rows must be >= 0")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, not {output!r}")
    profiles_dir = Path(profiles_dir) if profiles_dir else default_profiles_dir()
    profile = load_profiles(profiles_dir, scenarios_dir)
    schemas_dir = profiles_dir.parent / "schemas"
    if not schemas_dir.is_dir():
        schemas_dir = default_profiles_dir().parent / "schemas"
    schemas = _load_schemas(schemas_dir)
    shares = {str(t): float(s) for t, s in (profile.get("shares") or {}).items()}
    for table in list(shares):
        if table not in schemas:
            if (schemas_dir / f"{table}.json").is_file():
                del shares[table]  # its schema file is broken: no background for that table
                continue
            raise ProfileError(f"shares: unknown table {table!r}")
    specs = profile.get("tables") or {}
    for table in shares:
        if table not in specs:
            raise ProfileError(f"tables.{table}: has a share but no profile")
    counts = table_counts(shares, rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start, end = window  # any pair will do (a list too): the context keeps a tuple
    context = _Context(
        out_dir,
        profiles_dir,
        schemas_dir,
        seed,
        (start, end),
        output,
        Path(scenarios_dir) if scenarios_dir else None,
    )
    tasks = _plan(shares, counts, schemas)
    if workers is None:
        workers = available_cpus() if rows >= PARALLEL_MIN_ROWS else 1
    if os.name == "nt" or not sys.executable:  # workers talk over pipes polled with select()
        workers = 1
    workers = max(1, min(int(workers), len(tasks)))
    if workers == 1:
        _generate_here(context, tasks, progress, on_table)
    else:
        _generate_in_workers(context, tasks, workers, progress, on_table)
    return counts
