"""Running the generation: a table's shards as tasks, generated in this process or in worker
processes (``python -c`` children fed JSON task lines on stdin, reporting progress on
stdout), each writing through a background writer thread.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import selectors
import shutil
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .profiles import ProfileError, _load_schemas, load_profiles
from .splitfile import bucket_bounds
from .tables import _TableGenerator
from .values import _Clock, _ReportIds

#: Rows per shard: a table larger than this is generated as several independent shards
#: (own random stream and id range each), which worker processes can share. It depends on
#: the row count only, never on the machine, so output stays the same everywhere.
SHARD_ROWS = 1_000_000
#: Split output: rows per time bucket a table aims for (at most MAX_BUCKETS), so the store
#: sorts a table bucket by bucket, each in memory.
BUCKET_ROWS = 250_000
MAX_BUCKETS = 256

# --------------------------------------------------------------------------- output


class _Writer:
    """Writes chunks on a background thread, in order, so disk I/O overlaps generation.

    The thread only moves bytes to files (the write system call releases the GIL); at most
    ``depth`` chunks wait in the queue, which bounds memory. Files are opened by name
    (``open(name, path)``) and written by that name; all are closed on exit.
    """

    def __init__(self, depth: int = 4) -> None:
        self._queue: queue.Queue[tuple[str, str, Any]] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="generator-writer", daemon=True)

    def __enter__(self) -> _Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._queue.put(("stop", "", None))
        self._thread.join()
        if self._error is not None and exc[0] is None:
            raise self._error

    def _run(self) -> None:
        handles: dict[str, Any] = {}
        while True:
            op, name, arg = self._queue.get()
            try:
                if op == "stop":
                    break
                if self._error is not None:
                    continue
                if op == "open":
                    if name in handles:
                        handles.pop(name).close()
                    handles[name] = open(arg, "wb")
                else:
                    handles[name].write(arg)
            except BaseException as exc:  # reported to the caller on exit
                self._error = exc
        for handle in handles.values():
            handle.close()

    def _put(self, op: str, name: str, arg: Any) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((op, name, arg))

    def open(self, name: str, path: Path) -> None:
        self._put("open", name, path)

    def write(self, name: str, data: bytes) -> None:
        self._put("write", name, data)


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class _Task:
    """One shard of one table: what a worker generates on its own."""

    table: str
    shard: int
    shards: int
    rows: int
    stream: int
    buckets: int = 1


@dataclass(frozen=True)
class _Context:
    """Everything a worker needs besides its task (picklable, sent once per process)."""

    out_dir: Path
    profiles_dir: Path
    schemas_dir: Path
    seed: int
    window: tuple[datetime, datetime]
    output: str
    scenarios_dir: Path | None = None


class _Loaded:
    """A context's profiles, schemas, clock and id space, loaded once per process."""

    def __init__(self, context: _Context) -> None:
        self.profile = load_profiles(context.profiles_dir, context.scenarios_dir)
        self.schemas = _load_schemas(context.schemas_dir)
        self.clock = _Clock(context.window, self.profile.get("rhythms") or {"always": {}})
        self.ids = _ReportIds(context.seed)


def _plan(
    shares: dict[str, float], counts: dict[str, int], schemas: dict[str, dict[str, Any]]
) -> list[_Task]:
    """Tasks in table order: ``ceil(rows / SHARD_ROWS)`` shards per table, rows split evenly."""
    tasks: list[_Task] = []
    id_streams: dict[str, int] = {}
    for table in shares:
        stream = id_streams.setdefault(schemas[table]["id"], 0)
        id_streams[schemas[table]["id"]] = stream + 1
        count = counts[table]
        shards = max(1, -(-count // SHARD_ROWS))
        buckets = min(MAX_BUCKETS, max(1, -(-count // BUCKET_ROWS)))
        for shard in range(shards):
            rows = count // shards + (1 if shard < count % shards else 0)
            tasks.append(_Task(table, shard, shards, rows, stream, buckets))
    return tasks


def _part_paths(out_dir: Path, task: _Task, output: str) -> tuple[list[Path], Path | None]:
    """A task's row files (one per time bucket) and variant file (split output only)."""
    if output == "split":
        return (
            [out_dir / f"{task.table}.rows-{task.shard:03d}-{b:03d}.csv" for b in range(task.buckets)],
            out_dir / f"{task.table}.variants-{task.shard:03d}.csv",
        )
    if task.shards == 1:
        return [out_dir / f"{task.table}.jsonl"], None
    return [out_dir / f"{task.table}.part-{task.shard:03d}.jsonl"], None


def _run_task(task: _Task, context: _Context, loaded: _Loaded, report: Callable[[int], None]) -> int:
    """Generate one shard into its file(s); ``report(n)`` after every chunk of n rows."""
    specs = loaded.profile.get("tables") or {}
    engine = _TableGenerator(
        task.table,
        loaded.profile,
        specs[task.table],
        loaded.schemas[task.table],
        loaded.clock,
        context.seed,
        loaded.ids,
        task.stream,
        task.shard,
        context.output,
    )
    rows_paths, variants_path = _part_paths(context.out_dir, task, context.output)
    buckets = len(rows_paths)
    written = 0
    with _Writer() as writer:
        for b, path in enumerate(rows_paths):
            writer.open(f"rows{b}", path)
        if variants_path is not None:
            writer.open("variants", variants_path)
        for chunk in engine.rows(task.rows, buckets):
            n = 0
            for b, lines in enumerate(chunk):
                if lines:
                    writer.write(f"rows{b}", "".join(lines).encode("utf-8"))
                    n += len(lines)
            written += n
            report(n)
            if engine.variant_lines:
                writer.write("variants", "".join(engine.variant_lines).encode("utf-8"))
                engine.variant_lines = []
    if context.output == "split":
        meta = {
            "varying": sorted(engine.varying),
            "bounds": bucket_bounds(loaded.clock.start, loaded.clock.end, buckets),
        }
        meta_path = context.out_dir / f"{task.table}.meta-{task.shard:03d}.json"
        meta_path.write_text(json.dumps(meta), encoding="utf-8")
    return written


def _context_doc(context: _Context) -> dict[str, Any]:
    return {
        "out_dir": str(context.out_dir),
        "profiles_dir": str(context.profiles_dir),
        "schemas_dir": str(context.schemas_dir),
        "seed": context.seed,
        "window": [w.isoformat() for w in context.window],
        "output": context.output,
        "scenarios_dir": str(context.scenarios_dir) if context.scenarios_dir else None,
    }


def _context_from(doc: dict[str, Any]) -> _Context:
    start, end = (datetime.fromisoformat(w) for w in doc["window"])
    return _Context(
        Path(doc["out_dir"]),
        Path(doc["profiles_dir"]),
        Path(doc["schemas_dir"]),
        int(doc["seed"]),
        (start, end),
        str(doc["output"]),
        Path(doc["scenarios_dir"]) if doc.get("scenarios_dir") else None,
    )


def worker_main() -> None:
    """A worker process: reads a context line and then task lines (JSON) on stdin.

    Reports ``progress N`` per chunk, ``done`` per task, or ``error {json}`` and exits;
    exits at end of input. Started by :func:`generate` as ``python -c`` (no ``__main__``
    of the caller is imported, unlike ``multiprocessing``'s spawn).
    """
    out = sys.stdout
    try:
        context = _context_from(json.loads(sys.stdin.readline()))
        loaded = _Loaded(context)

        def report(n: int) -> None:
            out.write(f"progress {n}\n")
            out.flush()

        for line in sys.stdin:
            task = _Task(**json.loads(line))
            _run_task(task, context, loaded, report)
            out.write("done\n")
            out.flush()
    except BaseException as exc:  # sent to the parent, which raises it there
        kind = "profile" if isinstance(exc, ProfileError) else type(exc).__name__
        detail = str(exc) if kind == "profile" else traceback.format_exc()
        out.write("error " + json.dumps({"kind": kind, "message": detail}) + "\n")
        out.flush()
        raise SystemExit(1) from None


def _join_parts(out_dir: Path, table: str, tasks: list[_Task]) -> None:
    """JSONL output of a sharded table: its parts concatenated, in shard order, into one file."""
    parts = [_part_paths(out_dir, t, "jsonl")[0][0] for t in tasks if t.table == table]
    if len(parts) == 1:
        return
    with (out_dir / f"{table}.jsonl").open("wb") as out:
        for part in parts:
            with part.open("rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 20)
            part.unlink()


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _generate_here(
    context: _Context,
    tasks: list[_Task],
    progress: Callable[[int], None] | None,
    on_table: Callable[[str], None] | None,
) -> None:
    loaded = _Loaded(context)
    written = [0]

    def report(n: int) -> None:
        written[0] += n
        if progress:
            progress(written[0])

    for task in tasks:
        _run_task(task, context, loaded, report)
        if task.shard == task.shards - 1:
            if context.output == "jsonl":
                _join_parts(context.out_dir, task.table, tasks)
            if on_table:
                on_table(task.table)
    if progress:
        progress(written[0])


def _generate_in_workers(
    context: _Context,
    tasks: list[_Task],
    workers: int,
    progress: Callable[[int], None] | None,
    on_table: Callable[[str], None] | None,
) -> None:
    """Shards in *workers* processes, largest first; tables are reported as they finish."""
    remaining: dict[str, int] = {}
    for task in tasks:
        remaining[task.table] = remaining.get(task.table, 0) + 1
    todo = sorted(tasks, key=lambda t: -t.rows)  # stable: ties keep table order
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in [package_root, env.get("PYTHONPATH")] if p)
    command = [
        sys.executable,
        "-c",
        "from ctirealm.telemetry.generator.workers import worker_main; worker_main()",
    ]
    procs: list[subprocess.Popen[bytes]] = []
    running: dict[int, _Task] = {}
    pending: dict[int, bytes] = {}
    written = 0
    selector = selectors.DefaultSelector()

    def send(i: int, doc: dict[str, Any]) -> None:
        stdin = procs[i].stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(doc).encode() + b"\n")
            stdin.flush()
        except BrokenPipeError:  # the worker failed; its error arrives on stdout
            pass

    def feed(i: int) -> None:
        if todo:
            running[i] = todo.pop(0)
            send(i, dataclasses.asdict(running[i]))
        else:
            running.pop(i, None)
            stdin = procs[i].stdin
            assert stdin is not None
            stdin.close()

    def handle(i: int, line: str) -> None:
        nonlocal written
        if line.startswith("progress "):
            written += int(line.split()[1])
            if progress:
                progress(written)
        elif line == "done":
            task = running[i]
            feed(i)
            remaining[task.table] -= 1
            if remaining[task.table] == 0:
                if context.output == "jsonl":
                    _join_parts(context.out_dir, task.table, tasks)
                if on_table:
                    on_table(task.table)
        elif line.startswith("error "):
            doc = json.loads(line[6:])
            if doc["kind"] == "profile":
                raise ProfileError(doc["message"])
            raise RuntimeError(f"generator worker failed:\n{doc['message']}")
        else:
            raise RuntimeError(f"generator worker said {line!r}")

    try:
        for i in range(workers):
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
            procs.append(proc)
            assert proc.stdout is not None
            selector.register(proc.stdout.fileno(), selectors.EVENT_READ, i)
            pending[i] = b""
            send(i, _context_doc(context))
            feed(i)
        while running:
            for key, _ in selector.select(timeout=1.0):
                i = key.data
                data = os.read(key.fd, 65536)
                if not data:
                    selector.unregister(key.fd)
                    if i in running:
                        raise RuntimeError(f"generator worker exited (code {procs[i].wait()})")
                    continue
                *lines, pending[i] = (pending[i] + data).split(b"\n")
                for line in lines:
                    handle(i, line.decode())
        for proc in procs:
            proc.wait()
    finally:
        selector.close()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None and not stream.closed:
                    stream.close()
    if progress:
        progress(sum(t.rows for t in tasks))
