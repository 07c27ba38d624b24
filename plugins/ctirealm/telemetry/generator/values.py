"""Values drawn per row that are not templates: times inside the window in each activity's
hour-of-day rhythm (:class:`_Clock`), and ids (ReportIds from a seeded bijection so they
look random and never collide, UUIDs, stable hashes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any

from .profiles import ProfileError

#: Offset and size of the 12-digit ReportId space: ``ID_BASE + perm(n)`` with a
#: seeded bijection on 39 bits, so ids look random and never collide.
ID_BASE = 100_000_000_000
ID_BITS = 39
ID_MASK = (1 << ID_BITS) - 1
_TABLE_ID_STREAM = 1 << 37  # spacing between the counters of tables sharing ReportIds
_SHARD_ID_SPAN = 1 << 30  # spacing between the counters of one table's shards

_HOUR_MS = 3_600_000

_MMSS = [f"{m:02d}:{s:02d}" for m in range(60) for s in range(60)]
_MSZ = [f".{ms:03d}Z" for ms in range(1000)]

# --------------------------------------------------------------------------- time


class _Clock:
    """Millisecond times inside ``[start, end)`` and their ISO-8601 ``Z`` strings."""

    def __init__(self, window: tuple[datetime, datetime], rhythms: dict[str, Any]) -> None:
        start, end = (self._utc(w) for w in window)
        if end <= start:
            raise ProfileError("window: start must be before end")
        self.start = int(start.timestamp() * 1000)
        self.end = int(end.timestamp() * 1000)
        self.fmt = self._make_fmt()
        self._days: dict[tuple[int, str], str] = {}
        self.rhythms = {name: self._rhythm(name, spec) for name, spec in rhythms.items()}

    @staticmethod
    def _utc(value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def _rhythm(self, name: str, spec: dict[str, Any]) -> tuple[list[float], list[int], list[int]]:
        hours = [float(h) for h in spec.get("hours", [1.0] * 24)]
        if len(hours) != 24 or min(hours) < 0:
            raise ProfileError(f"rhythms.{name}: hours must be 24 non-negative weights")
        weekend = float(spec.get("weekend", 1.0))
        offset = timedelta(hours=float(spec.get("utc_offset", 0)))
        cdf: list[float] = []
        starts: list[int] = []
        widths: list[int] = []
        acc = 0.0
        t = self.start
        while t < self.end:
            local = datetime.fromtimestamp(t / 1000, UTC) + offset
            width = min(_HOUR_MS, self.end - t)
            weight = hours[local.hour] * (weekend if local.weekday() >= 5 else 1.0)
            acc += weight * width / _HOUR_MS
            cdf.append(acc)
            starts.append(t)
            widths.append(width)
            t += width
        if acc <= 0:
            raise ProfileError(f"rhythms.{name}: no weight falls inside the window")
        return cdf, starts, widths

    def _make_fmt(self) -> Callable[[int], str]:
        """``fmt(ms)``: ISO-8601 with milliseconds and ``Z``, from precomputed pieces."""
        first = self.start // _HOUR_MS
        hours = [
            datetime.fromtimestamp(h * 3600, UTC).strftime("%Y-%m-%dT%H:")
            for h in range(first, (self.end - 1) // _HOUR_MS + 1)
        ]
        count = len(hours)

        def fmt(
            ms: int,
            hours: list[str] = hours,
            first: int = first,
            count: int = count,
            mmss: list[str] = _MMSS,
            msz: list[str] = _MSZ,
        ) -> str:
            sec, milli = divmod(ms, 1000)
            hour, sec = divmod(sec, 3600)
            hour -= first
            if 0 <= hour < count:
                return hours[hour] + mmss[sec] + msz[milli]
            moment = datetime.fromtimestamp((hour + first) * 3600, UTC)
            return moment.strftime("%Y-%m-%dT%H:") + mmss[sec] + msz[milli]

        return fmt

    def day(self, ms: int, pattern: str) -> str:
        key = (ms // 86_400_000, pattern)
        text = self._days.get(key)
        if text is None:
            text = datetime.fromtimestamp(key[0] * 86_400, UTC).strftime(pattern)
            self._days[key] = text
        return text

    def clamp(self, ms: int) -> int:
        return self.start if ms < self.start else (self.end - 1 if ms >= self.end else ms)


# --------------------------------------------------------------------------- ids


class _ReportIds:
    """Random-looking, collision-free 12-digit ids: a seeded bijection on 39 bits."""

    def __init__(self, seed: int) -> None:
        rng = Random(f"{seed}:ReportId")
        self.keys = [(rng.getrandbits(ID_BITS) | 1, rng.getrandbits(ID_BITS)) for _ in range(3)]
        self.shifts = (19, 17, 21)

    def counter(self, stream: int, shard: int = 0) -> Callable[[], str]:
        (a1, c1), (a2, c2), (a3, c3) = self.keys
        s1, s2, s3 = self.shifts
        if not 0 <= shard < _TABLE_ID_STREAM // _SHARD_ID_SPAN:
            raise ValueError(f"shard {shard} is out of the id space")
        state = [stream * _TABLE_ID_STREAM + shard * _SHARD_ID_SPAN]

        def next_id(state: list[int] = state, mask: int = ID_MASK) -> str:
            x = state[0]
            state[0] = x + 1
            x = (x * a1 + c1) & mask
            x ^= x >> s1
            x = (x * a2 + c2) & mask
            x ^= x >> s2
            x = (x * a3 + c3) & mask
            return str(ID_BASE + (x ^ (x >> s3)))

        return next_id


def _uuid4(n: int) -> str:
    """A version-4 UUID string from 128 random bits (as ``uuid.UUID(int=n, version=4)``)."""
    n = (n & 0xFFFFFFFFFFFF0FFF3FFFFFFFFFFFFFFF) | 0x40008000000000000000
    h = n.to_bytes(16, "big").hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def stable_hex(text: str, algorithm: str) -> str:
    """Deterministic digest of *text*: how profiles get per-binary hashes that never change."""
    return hashlib.new(algorithm, f"ctirealm:{text}".encode()).hexdigest()
