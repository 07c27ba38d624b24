"""The table engine: one table's rows from its profile (a ``layout`` of column templates and
weighted ``events``), compiled once per variant and cached as format fragments, so a row
costs a handful of random draws and one string join; written as JSON lines or as the
``split`` form (see :mod:`.splitfile`).
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from random import Random
from typing import Any

from .profiles import _RAW, ProfileError, _escape_braces, _load_schemas, _merge_background, _unescape_braces
from .templates import (
    _DYNAMIC,
    _KEY_ARG,
    _NUMERIC,
    _Binder,
    _coerce,
    _csv_text,
    _expand,
    _key_fresh,
    _lookup,
    _Missing,
    _Row,
    _select,
    _Template,
    _unshare,
)
from .values import _Clock, _ReportIds, _uuid4, stable_hex

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
#: Rows buffered before a write (and between ``progress`` calls).
CHUNK_ROWS = 10_000
#: Compiled template variants kept before the cache is emptied (bounds memory).
CACHE_LIMIT = 20_000


#: Output formats: ``jsonl`` (one JSON object per line) or ``split`` (see :func:`generate`).
OUTPUTS = ("jsonl", "split")
_VID_SHARD = 1 << 32  # spacing between the variant ids of shards
#: Split output: a datetime field that is a row's own time (``{$time}``, ``{$row:N}``).
_ROW_TIME = re.compile(r'"\{\$(?:time|row:(\d+))\}"')

# --------------------------------------------------------------------------- table engine


class _TableGenerator:
    """Compiles one table's profile and streams its rows."""

    def __init__(
        self,
        table: str,
        profile: dict[str, Any],
        spec: dict[str, Any],
        schema: dict[str, Any],
        clock: _Clock,
        seed: int,
        ids: _ReportIds,
        id_stream: int,
        shard: int = 0,
        output: str = "jsonl",
    ) -> None:
        self.table = table
        self.schema = schema
        self.types: dict[str, str] = schema["types"]
        self.clock = clock
        # Shard 0 is the table's own stream (what every table of up to SHARD_ROWS rows uses);
        # further shards of a large table get streams of their own.
        self.rng = Random(f"{seed}:{table}" if shard == 0 else f"{seed}:{table}:{shard}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, not {output!r}")
        self.output = output
        #: Split output: variant ids of this shard start here; constant parts are collected in
        #: ``variant_lines`` (the caller writes and empties it).
        self.next_vid = shard * _VID_SHARD
        self.variant_lines: list[str] = []
        #: Split output: the columns some row supplies itself (all others come from variants).
        self.varying: set[str] = set()
        self.model = spec.get("row_model", "explicit")
        if self.model not in ("explicit", "process_chain", "file_ops"):
            raise ProfileError(f"tables.{table}.row_model: unknown model {self.model!r}")
        self.layout: dict[str, Any] = dict(spec.get("layout") or {})
        self.globals: dict[str, Any] = dict(profile.get("globals") or {})
        self.pools: dict[str, list[Any]] = dict(profile.get("pools") or {})
        self.binaries: dict[str, Any] = dict(profile.get("binaries") or {})
        self.lifetimes: dict[str, Any] = dict(profile.get("lifetimes") or {})
        self.force: dict[str, Any] = dict(spec.get("force") or {})
        for column in [*self.layout, *self.force]:
            self._check_column(column, "layout")
        default_rhythm = spec.get("rhythm", "always")
        self.templates: list[_Template] = []
        events = list(spec.get("events") or [])
        for i, event in enumerate(events):
            self.templates.append(self._template(i, event, default_rhythm))
        if not self.templates:
            raise ProfileError(f"tables.{table}: no events")
        acc = 0.0
        self.cdf: list[float] = []
        for tpl in self.templates:
            acc += tpl.weight
            self.cdf.append(acc)
        self.total = acc
        self.cache: dict[tuple[int, ...], list[_Row]] = {}
        id_type = self.types.get(schema["id"])
        if id_type in ("long", "int"):
            self.next_id: Callable[[], str] = ids.counter(id_stream, shard)
        else:
            bits = self.rng.getrandbits
            self.next_id = lambda: _uuid4(bits(128))
        self._binary_cache: dict[str, dict[str, Any]] = {}
        self._makers: dict[tuple[tuple[str, ...], tuple[int, ...]], Callable[[str], Any]] = {}

    # -- compile ---------------------------------------------------------------------

    def _where(self, tpl: str = "") -> str:
        return f"tables.{self.table}" + (f".events[{tpl}]" if tpl else "")

    def _check_column(self, column: str, where: str) -> None:
        if column not in self.types:
            raise ProfileError(f"{self._where()}.{where}: {column!r} is not a column of {self.table}")

    def _template(self, index: int, event: dict[str, Any], default_rhythm: str) -> _Template:
        name = str(event.get("name", index))
        where = self._where(name)
        rhythm = event.get("rhythm", default_rhythm)
        if rhythm not in self.clock.rhythms:
            raise ProfileError(f"{where}: unknown rhythm {rhythm!r}")
        binders: list[_Binder] = []
        names: list[str] = []
        for var, selector in (event.get("bind") or {}).items():
            binders.append(self._binder(var, selector, names, where))
            names.append(var)
        gap = event.get("gap_ms", [5, 400])
        spec = dict(event)
        if "chain" in spec:
            spec["chain"] = [self._step(step, where) for step in spec["chain"] or []]
        for key in ("rows", "files"):
            for row in spec.get(key) or []:
                for column in (row.get("columns") or {}) if key == "files" else row:
                    self._check_column(column, f"events[{name}].{key}")
        if self.model == "explicit" and not spec.get("rows"):
            raise ProfileError(f"{where}: needs rows")
        if self.model != "explicit":
            chain = spec.get("chain") or []
            need = int(spec.get("emit", 1)) + 2 if self.model == "process_chain" else 2
            if len(chain) < need:
                raise ProfileError(f"{where}: chain needs at least {need} processes")
            for step in chain:
                binary = str(step.get("bin"))
                if "{" not in binary and binary not in self.binaries:
                    raise ProfileError(f"{where}: unknown binary {binary!r}")
            if self.model == "file_ops" and not spec.get("files"):
                raise ProfileError(f"{where}: needs files")
        weight = float(event.get("weight", 1.0))
        if weight <= 0:
            raise ProfileError(f"{where}: weight must be positive")
        return _Template(
            index, name, weight, self.clock.rhythms[rhythm], binders, spec, (int(gap[0]), int(gap[1]))
        )

    @staticmethod
    def _step(step: Any, where: str) -> dict[str, Any]:
        """A chain step: ``{bin, cmd, user, pid, lifetime}`` or compact ``[bin, cmd, user]``."""
        if isinstance(step, list) and 1 <= len(step) <= 3:
            return dict(zip(("bin", "cmd", "user"), step, strict=False))
        if isinstance(step, dict) and "bin" in step:
            return step
        raise ProfileError(f"{where}: a chain step is [bin, cmd, user] or a mapping with bin")

    def _binder(self, var: str, selector: Any, earlier: list[str], where: str) -> _Binder:
        if isinstance(selector, list):
            return _Binder(var, selector)
        if not isinstance(selector, str):
            raise ProfileError(f"{where}.bind.{var}: expected a pool selector or a list")
        head, _, rest = selector.partition("[")
        head = head.strip()
        if "." in head:
            parent, _, attr = head.partition(".")
            if parent not in earlier:
                raise ProfileError(f"{where}.bind.{var}: {parent!r} must be bound before")
            return _Binder(var, None, earlier.index(parent), attr)
        if head not in self.pools:
            raise ProfileError(f"{where}.bind.{var}: unknown pool {head!r}")
        items = self.pools[head]
        if rest:
            items = _select(items, rest.rstrip("]"), f"{where}.bind.{var}")
        return _Binder(var, items)

    def _binary(self, key: str) -> dict[str, Any]:
        cached = self._binary_cache.get(key)
        if cached is not None:
            return cached
        spec = dict(self.binaries[key])
        path = spec["path"]
        ident = f"{path}|{spec.get('version', '')}"
        entity = {
            "key": key,
            "path": path,
            "name": spec.get("name", path.rsplit("/", 1)[-1]),
            "sha1": spec.get("sha1", stable_hex(ident, "sha1")),
            "sha256": spec.get("sha256", stable_hex(ident, "sha256")),
            "md5": spec.get("md5", stable_hex(ident, "md5")),
            "size": spec.get("size", 20_000 + int(stable_hex(ident, "md5")[:6], 16) % 2_000_000),
            "lifetime": spec.get("lifetime", "short"),
            "pid": spec.get("pid"),
        }
        self._binary_cache[key] = entity
        return entity

    def _lifetime(self, name: str, where: str) -> tuple[float, float] | None:
        """``[min, max]`` seconds, or None for ``static`` (running since the window began)."""
        if name not in self.lifetimes:
            raise ProfileError(f"{where}: unknown lifetime {name!r}")
        spec = self.lifetimes[name]
        if spec == "static":
            return None
        try:
            lo, hi = spec
            return float(lo), float(hi)
        except (TypeError, ValueError):
            raise ProfileError(f"lifetimes.{name}: expected [min, max] or static") from None

    def _chain(self, tpl: _Template, ctx: dict[str, Any], emitted: dict[int, int]) -> list[dict]:
        """Resolve a process chain: binaries, command lines, users, pids, creation times."""
        where = self._where(tpl.name)
        default_user = tpl.spec.get("user", "root")
        out = []
        spans: list[str] = []
        host = ctx.get("host")
        where_run = str(host.get("fqdn", "")) if isinstance(host, dict) else tpl.name
        for i, step in enumerate(tpl.spec["chain"]):
            binary = str(_expand(step["bin"], ctx))
            if binary not in self.binaries:
                raise ProfileError(f"{where}: unknown binary {binary!r}")
            entity = dict(self._binary(binary))
            entity["cmd"] = _key_fresh(_expand(step.get("cmd", entity["path"]), ctx), f"c{i}_")
            entity["user"] = _expand(step.get("user", default_user), ctx)
            pid = step.get("pid", entity["pid"])
            entity["pid"] = pid if pid is not None else f"{{$int:300:4194000:p{i}}}"
            if i in emitted:
                entity["ctime"] = f"{{$row:{emitted[i]}}}"
                out.append(entity)
                continue
            span = self._lifetime(str(step.get("lifetime", entity["lifetime"])), where)
            if span is None:
                # Long-running: one pid and start time per host and program, near boot.
                digest = int(stable_hex(f"{where_run}|{entity['path']}|{entity['cmd']}", "md5"), 16)
                if pid is None:
                    entity["pid"] = 300 + digest % 2400
                entity["ctime"] = self.clock.fmt(self.clock.start + i * 1000 + digest % 1000)
            else:
                spans.append(f"{span[0]!r},{span[1]!r}")
                entity["ctime"] = len(spans) - 1
            out.append(entity)
        for entity in out:
            if isinstance(entity["ctime"], int):
                entity["ctime"] = f"{{$chain:{'/'.join(spans)}:{entity['ctime']}}}"
        return out

    def _file(self, spec: dict[str, Any], ctx: dict[str, Any], j: int) -> dict[str, Any]:
        path = _key_fresh(str(_expand(spec["path"], ctx)), f"f{j}_")
        entity: dict[str, Any] = {"path": path, "name": path.rsplit("/", 1)[-1]}
        entity["action"] = spec.get("action", "FileCreated")
        if "from" in spec:
            prev = _key_fresh(str(_expand(spec["from"], ctx)), f"g{j}_")
            entity["prev_path"] = prev.rsplit("/", 1)[0] if "/" in prev else prev
            entity["prev_name"] = prev.rsplit("/", 1)[-1]
        size = spec.get("size")
        if isinstance(size, list):
            entity["size"] = f"{{$int:{int(size[0])}:{int(size[1])}:s{j}}}"
        elif size is not None:
            entity["size"] = size
        if entity["action"] != "FileDeleted" and spec.get("hashes", True):
            if "{$" in path or isinstance(size, list):
                entity["sha1"] = f"{{$hex:40:h1{j}}}"
                entity["sha256"] = f"{{$hex:64:h2{j}}}"
                entity["md5"] = f"{{$hex:32:h3{j}}}"
            else:
                for algo, length in (("sha1", 40), ("sha256", 64), ("md5", 32)):
                    entity[algo] = stable_hex(path, algo)[:length]
        return entity

    def _compile(
        self, tpl: _Template, entities: list[Any], extra: dict[str, Any] | None = None
    ) -> list[_Row]:
        ctx = dict(self.globals)
        if extra:
            ctx.update(extra)
        for binder, entity in zip(tpl.binders, entities, strict=True):
            ctx[binder.name] = entity
        try:
            encoded = [self._encode(row, tpl.name) for row in self._rows(tpl, ctx)]
            return [_Row(text) for text in _unshare(encoded)]
        except _Missing as exc:
            raise ProfileError(f"{self._where(tpl.name)}: unknown placeholder {{{exc.args[0]}}}") from None

    def _rows(self, tpl: _Template, ctx: dict[str, Any]) -> Iterator[dict[str, Any]]:
        spec = tpl.spec
        if self.model == "explicit":
            columns = spec.get("columns") or {}
            for row in spec["rows"]:
                yield _expand({**self.layout, **columns, **row, **self.force}, ctx)
            return
        if self.model == "process_chain":
            n = len(spec["chain"])
            emit = int(spec.get("emit", 1))
            first = n - emit
            chain = self._chain(tpl, ctx, {i: i - first for i in range(first, n)})
            for i in range(first, n):
                chain[i]["ctime"] = "{$time}"
                rctx = {**ctx, "proc": chain[i], "actor": chain[i - 1], "actor_parent": chain[i - 2]}
                yield _expand({**self.layout, **(spec.get("columns") or {}), **self.force}, rctx)
                chain[i]["ctime"] = f"{{$row:{i - first}}}"
            return
        chain = self._chain(tpl, ctx, {})
        for j, fspec in enumerate(spec["files"]):
            file = self._file(fspec, ctx, j)
            rctx = {**ctx, "file": file, "actor": chain[-1], "actor_parent": chain[-2]}
            yield _expand({**self.layout, **(fspec.get("columns") or {}), **self.force}, rctx)

    def _encode(self, row: dict[str, Any], tpl_name: str) -> str:
        """One compiled row as output text with ``{$token}`` slots (JSONL line or split line).

        Both formats list the columns in schema order and serialise values alike, so the
        slots appear in the same order and every row draws the same random values.
        """
        where = f"{self._where(tpl_name)}"
        out: dict[str, Any] = {}
        for column, value in _unescape_braces(row).items():
            if value is None or value == "":
                continue
            kusto = self.types.get(column)
            if kusto is None:
                raise ProfileError(f"{where}: {column!r} is not a column of {self.table}")
            out[column] = _coerce(value, kusto, f"{where}.{column}")
        id_column = self.schema["id"]
        if id_column not in out or self.types[id_column] in _NUMERIC:
            # A text id may be shaped by the layout (AuditLogs: Directory_<correlation>_...).
            out[id_column] = _RAW + "{$id}" + _RAW if self.types[id_column] in _NUMERIC else "{$id}"
        ordered = {c: out[c] for c in self.types if c in out}
        if self.output == "split":
            return self._encode_split(ordered)
        encoded = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False)
        return encoded.replace('"\\u0003', "").replace('\\u0003"', "") + "\n"

    def _encode_split(self, values: dict[str, Any]) -> str:
        """Split a compiled row: constant columns to a variant line, the rest to a row line.

        Returns the row line template (``vid,`` then one CSV field per schema column, empty
        where the variant supplies the value) and appends the variant line (``vid,`` then the
        constant columns, empty where the row supplies the value) to ``variant_lines``.
        """
        vid = self.next_vid
        self.next_vid += 1
        row_fields: list[str] = []
        variant_fields: list[str] = []
        for column, kusto in self.types.items():
            if column not in values:
                row_fields.append("")
                variant_fields.append("")
                continue
            text = _csv_text(values[column], kusto)
            if kusto == "datetime":
                # A row's own time goes out as epoch milliseconds: no formatting here, no
                # parsing in the store (which tells the two forms apart by the '-').
                own = _ROW_TIME.fullmatch(text)
                if own:
                    text = "{$ms}" if own.group(1) is None else f"{{$rowms:{own.group(1)}}}"
            if "{$" in text and _DYNAMIC.search(text):
                row_fields.append(text)
                variant_fields.append("")
                self.varying.add(column)
            else:
                row_fields.append("")
                variant_fields.append(text)
        self.variant_lines.append(f"{vid}," + ",".join(variant_fields) + "\n")
        return f"{vid}," + ",".join(row_fields) + "\n"

    # -- dynamic tokens ---------------------------------------------------------------

    def _token(self, text: str, tpl: _Template) -> Callable[[int, dict], str]:
        """Compile ``$kind:args`` into ``f(row_ms, burst_memo) -> str``.

        Kinds: ``time``, ``id``, ``chain``, ``row``, ``ago``/``before``/``after``, ``int``,
        ``real``, ``hex:n``, ``uuid``, ``alnum:n`` (upper-case letters and digits), ``empty``
        (the empty string a service writes), and the rest below; a last ``:key`` argument
        shares one value between the rows of a burst (one event, or one scenario step).
        """
        kind, _, rest = text.partition(":")
        args = rest.split(":") if rest else []
        rnd = self.rng.random
        clock = self.clock
        where = f"{self._where(tpl.name)}: token {{${text}}}"

        def memo(key: str | None, make: Callable[[int, dict], str]) -> Callable[[int, dict], str]:
            if not key:
                return make

            def cached(t: int, m: dict) -> str:
                value = m.get(key)
                if value is None:
                    value = m[key] = make(t, m)
                return value

            return cached

        try:
            if kind == "time":
                return lambda t, m: clock.fmt(t)
            if kind == "id":
                next_id = self.next_id
                return lambda t, m: next_id()
            if kind == "chain":
                spans = [tuple(float(x) for x in a.split(",")) for a in args[0].split("/")]
                return self._chain_token(spans, int(args[1]))
            if kind == "row":
                j = int(args[0])
                return lambda t, m: clock.fmt(m["__rows"][j])
            if kind in ("ago", "before", "after"):
                lo, hi = float(args[0]), float(args[1])
                scale = 1000.0 if kind == "ago" else 1.0
                lo_ms, span = lo * scale, (hi - lo) * scale
                sign = 1 if kind == "after" else -1
                base = "__t0" if kind == "ago" else None

                def shifted(t: int, m: dict) -> str:
                    origin = m[base] if base else t
                    value = origin + sign * int(lo_ms + rnd() * span)
                    if value < clock.start:  # started before the window: keep order, stay inside
                        value = clock.start + int(rnd() * 0.25 * max(0, origin - clock.start))
                    elif value >= clock.end:
                        value = clock.end - 1
                    return clock.fmt(value)

                return memo(args[2] if len(args) > 2 else None, shifted)
            if kind == "int":
                lo_i, hi_i = int(args[0]), int(args[1])
                span_i = hi_i - lo_i + 1
                return memo(args[2] if len(args) > 2 else None, lambda t, m: str(lo_i + int(rnd() * span_i)))
            if kind == "real":
                lo_f, hi_f = float(args[0]), float(args[1])
                return memo(
                    args[2] if len(args) > 2 else None, lambda t, m: "%.3f" % (lo_f + rnd() * (hi_f - lo_f))
                )
            if kind == "hex":
                n = int(args[0])
                bits = self.rng.getrandbits
                hexfmt = f"%0{n}x"
                return memo(args[1] if len(args) > 1 else None, lambda t, m: hexfmt % bits(4 * n))
            if kind == "uuid":
                bits = self.rng.getrandbits
                return memo(args[0] if args else None, lambda t, m: _uuid4(bits(128)))
            if kind == "alnum":  # n upper-case letters and digits
                n_chars = int(args[0])
                return memo(
                    args[1] if len(args) > 1 else None,
                    lambda t, m: "".join(_ALNUM[int(rnd() * 36)] for _ in range(n_chars)),
                )
            if kind == "empty":  # an empty string the service writes ("" is a missing value)
                return lambda t, m: ""
            if kind == "date":
                pattern = rest
                return lambda t, m: clock.day(t, pattern)
            if kind == "epoch":
                offset = int(args[0]) * 1000 if args else 0
                return lambda t, m: str((t + offset) // 1000)
            if kind == "ms":  # split output: a row time as epoch milliseconds
                return lambda t, m: str(t)
            if kind == "rowms":
                j = int(args[0])
                return lambda t, m: str(m["__rows"][j])
        except (IndexError, ValueError) as exc:
            raise ProfileError(f"{where}: bad arguments") from exc
        raise ProfileError(f"{where}: unknown token kind {kind!r}")

    def _chain_token(self, spans: list[tuple[float, ...]], index: int) -> Callable[[int, dict], str]:
        """Creation times of the ancestors that started before the burst, oldest first.

        Each ancestor started a lifetime before its child; if that reaches before the
        window, the gaps are scaled down so the order holds and every time stays inside.
        """
        rnd = self.rng.random
        clock = self.clock

        def times(t: int, m: dict) -> str:
            cached = m.get("__chain")
            if cached is None:
                t0 = m["__t0"]
                offsets = []
                acc = 0.0
                for lo, hi in reversed(spans):
                    acc += (lo + rnd() * (hi - lo)) * 1000.0
                    offsets.append(acc)
                offsets.reverse()
                room = t0 - clock.start
                if offsets and offsets[0] > room:
                    scale = room / offsets[0] * (0.3 + 0.65 * rnd())
                    offsets = [o * scale for o in offsets]
                cached = m["__chain"] = [clock.fmt(t0 - int(o)) for o in offsets]
            return cached[index]

        return times

    def _emitter(
        self, row: _Row, tpl: _Template, tokens: dict[str, Callable[[int, dict], str]]
    ) -> Callable[[int, dict], str]:
        """A function ``emit(row_ms, burst_memo) -> line`` specialised for the row's tokens.

        Functions are generated once per token signature and shared by every row with the
        same tokens; the row's format string is bound in a closure.
        """
        fmt = row.fmt
        if not row.names:
            return lambda t, m: fmt
        fragments = row.fragments
        signature = (row.names, row.positions)
        make = self._makers.get(signature)
        if make is None:
            env: dict[str, Any] = {
                "FMT_TIME": self.clock.fmt,
                "NEXT_ID": self.next_id,
                "RND": self.rng.random,
                "JOIN": "".join,
                "STR": str,
            }
            params = ", ".join(f"F{i}" for i in range(len(fragments)))
            lines = [f"def make({params}):", "    def emit(t, m):"]
            for i, name in enumerate(row.names):
                kind, _, rest = name.partition(":")
                args = rest.split(":") if rest else []
                if name == "time":
                    lines.append(f"        v{i} = FMT_TIME(t)")
                elif name == "ms":
                    lines.append(f"        v{i} = STR(t)")
                elif kind == "rowms" and len(args) == 1 and args[0].isdigit():
                    lines.append(f"        v{i} = STR(m['__rows'][{int(args[0])}])")
                elif name == "id":
                    lines.append(f"        v{i} = NEXT_ID()")
                elif kind == "row" and len(args) == 1 and args[0].isdigit():
                    lines.append(f"        v{i} = FMT_TIME(m['__rows'][{int(args[0])}])")
                elif kind == "int" and len(args) == 2:
                    lo, hi = int(args[0]), int(args[1])
                    lines.append(f"        v{i} = str({lo} + int(RND() * {hi - lo + 1}))")
                else:
                    key = None
                    at = _KEY_ARG.get(kind)
                    if at is not None and len(args) == at + 1:
                        key, name = args[at], ":".join([kind, *args[:at]])
                    fn = tokens.get(name)
                    if fn is None:
                        fn = tokens[name] = self._token(name, tpl)
                    env[f"T{i}"] = fn
                    if key is None:
                        lines.append(f"        v{i} = T{i}(t, m)")
                    else:
                        lines.append(f"        v{i} = m.get({key!r})")
                        lines.append(f"        if v{i} is None:")
                        lines.append(f"            v{i} = m[{key!r}] = T{i}(t, m)")
            parts = ["F0"]
            for i, p in enumerate(row.positions):
                parts += [f"v{p}", f"F{i + 1}"]
            lines.append(f"        return JOIN(({', '.join(parts)}))")
            lines.append("    return emit")
            exec("\n".join(lines), env)
            make = self._makers[signature] = env["make"]
        return make(*fragments)

    # -- run -----------------------------------------------------------------------------

    def rows(self, count: int, buckets: int = 1) -> Iterator[list[list[str]]]:
        """Yield chunks of output lines totalling exactly *count* rows.

        A chunk is one list of lines per time bucket: the window cut into *buckets* equal
        spans, a row going to the span its own time falls in (all rows in one list if 1).
        """
        rnd = self.rng.random
        cdf, total, templates = self.cdf, self.total, self.templates
        cache = self.cache
        tokens: dict[str, Callable[[int, dict], str]] = {}
        bisect_right = bisect.bisect_right
        bufs: list[list[str]] = [[] for _ in range(buckets)]
        buf = bufs[0]
        start, span = self.clock.start, self.clock.end - self.clock.start
        end = self.clock.end - 1
        last_template = len(templates) - 1
        # Per template, what a burst needs, looked up once: binders as plain tuples, the
        # rhythm's cumulative weights with their total, the gap between rows.
        plans = []
        for tpl in templates:
            binders = tuple(
                (b.items, b.cdf, b.cdf[-1] if b.cdf else 0.0, b.parent, f"e.{b.attr}", b.name)
                for b in tpl.binders
            )
            rcdf, starts, widths = tpl.rhythm
            plans.append(
                (
                    tpl,
                    binders,
                    rcdf,
                    rcdf[-1],
                    len(starts) - 1,
                    starts,
                    widths,
                    tpl.gap[0],
                    tpl.gap[1] - tpl.gap[0] + 1,
                )
            )
        made = 0
        chunk = made + CHUNK_ROWS
        while made < count:
            ti = bisect_right(cdf, rnd() * total)
            if ti > last_template:
                ti = last_template
            tpl, binders, rcdf, rtotal, last_slot, starts, widths, gap_lo, gap_span = plans[ti]
            entities: list[Any] = []
            if binders:
                key = [ti]
                for items, bcdf, btotal, parent, path, name in binders:
                    if items is None:
                        items = _lookup({"e": entities[parent]}, path)
                        if not isinstance(items, list) or not items:
                            raise ProfileError(
                                f"{self._where(tpl.name)}.bind.{name}: {path[2:]!r} is not a non-empty list"
                            )
                        i = int(rnd() * len(items))
                    elif bcdf is not None:
                        i = bisect_right(bcdf, rnd() * btotal)
                        if i >= len(items):
                            i = len(items) - 1
                    else:
                        i = int(rnd() * len(items))
                    key.append(i)
                    entities.append(items[i])
                ckey = tuple(key)
            else:
                ckey = (ti,)
            compiled = cache.get(ckey)
            if compiled is None:
                if len(cache) >= CACHE_LIMIT:
                    cache.clear()
                compiled = cache[ckey] = self._compile(tpl, entities)
            h = bisect_right(rcdf, rnd() * rtotal)
            if h > last_slot:
                h = last_slot
            t = starts[h] + int(rnd() * widths[h])
            take = len(compiled)
            if take > count - made:
                take = count - made
            times = [t]
            for _ in range(take - 1):
                t += gap_lo + int(rnd() * gap_span)
                times.append(t if t <= end else end)
            memo: dict[str, Any] = {"__t0": times[0], "__rows": times}
            for j in range(take):
                row = compiled[j]
                emit = row.emit
                if emit is None:
                    emit = row.emit = self._emitter(row, tpl, tokens)
                if buckets == 1:
                    buf.append(emit(times[j], memo))
                else:
                    bufs[(times[j] - start) * buckets // span].append(emit(times[j], memo))
            made += take
            if made >= chunk:
                yield bufs
                bufs = [[] for _ in range(buckets)]
                buf = bufs[0]
                chunk = made + CHUNK_ROWS
        if any(bufs):
            yield bufs


def check_background(
    profile: dict[str, Any],
    path: Path,
    schemas_dir: Path | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> None:
    """Raise `ProfileError` if scenario file *path*'s ``background`` cannot be merged into
    *profile* (left unchanged): how a store leaves one bad scenario out, not the build.

    With *schemas_dir* and *window*, every template is also compiled once (first entity
    of each slot), so an unknown placeholder, column or binary is caught here rather
    than in the middle of generating the background of every case.
    """
    tables = {t: dict(spec) for t, spec in (profile.get("tables") or {}).items()}
    merged = {"tables": tables, "binaries": dict(profile.get("binaries") or {})}
    _merge_background(merged, path)
    if schemas_dir is None or window is None:
        return
    schemas = _load_schemas(schemas_dir)
    own = f"{path.stem}: "
    full = {**profile, "binaries": _escape_braces(merged["binaries"])}
    clock = _Clock(window, profile.get("rhythms") or {"always": {}})
    ids = _ReportIds(0)
    for table, spec in tables.items():
        events = [e for e in spec.get("events") or [] if str(e.get("name", "")).startswith(own)]
        if not events or table not in schemas:
            continue
        engine = _TableGenerator(
            table, full, {**spec, "events": _escape_braces(events)}, schemas[table], clock, 0, ids, 0
        )
        for tpl in engine.templates:
            entities: list[Any] = []
            for binder in tpl.binders:
                items = binder.items
                if items is None:
                    items = _lookup({"e": entities[binder.parent]}, f"e.{binder.attr}")
                    if not isinstance(items, list) or not items:
                        raise ProfileError(
                            f"{path}: background.{table}.{tpl.name}: bind {binder.name}: not a non-empty list"
                        )
                entities.append(items[0])
            try:
                engine._compile(tpl, entities)
            except ProfileError as exc:
                raise ProfileError(f"{path}: background.{table}: {exc}") from None
