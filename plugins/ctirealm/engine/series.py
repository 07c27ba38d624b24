"""Kusto's series analytics (``series_fit_line``, ``series_decompose_anomalies``, ...), in Python.

DuckDB has no time-series functions, and their algorithms (sorting, medians per phase,
prefix sums for a two-segment fit) do not fit in one SQL expression over a list. They
run here, as one scalar function `LocalEngine` registers on its own connection
(`FUNCTION_NAME`): ``(kind, series as JSON text, arguments as JSON text) -> JSON text``.
The translation (``rewrite.functions``) calls it; `rewrite.tree` names the columns
of the functions that return several.

Each algorithm follows Kusto's documentation where it says how
(https://learn.microsoft.com/kusto/query/series-fit-line-function and its siblings):

* ``series_fit_line``: least squares over x = 1..n; ``variance`` and ``rvariance`` are
  sample variances (n - 1) of the input and of the residuals; the documented example
  is reproduced to the digits shown.
* ``series_fit_2lines``: every split tried, each side fitted as ``series_fit_line``
  does (x counted along the whole series), the split with the highest total r-square
  kept. Not documented, so chosen here: ``split_idx`` is the first index of the right
  side, each side has at least two points (shorter series answer nulls).
* ``series_decompose``: seasonal = the median of the points in the same phase,
  trend = the average (``avg``) or the least-squares line (``linefit``) of the
  deseasonalised series, baseline = seasonal + trend, residual = x - baseline; the
  last *test_points* are left out of the learning. Seasonality ``-1`` (detect) is an
  approximation: Kusto's ``series_periods_detect`` is not documented to the point of
  reproducing it (see `_detect_period`).
* ``series_outliers``: Tukey's fences between the *min* and *max* percentiles
  (10 and 90 for ``ctukey``, 25 and 75 for ``tukey``; linear interpolation): the
  score is the distance beyond the nearer fence in units of the range between them,
  0 inside. Kusto's exact scoring is not documented; scores agree on which points
  lie outside the percentile range, and their sign, not on every digit.
* ``series_decompose_anomalies``: ``series_outliers`` of the residual, flag +1/-1
  beyond +/- threshold; ``series_decompose_forecast``: the baseline with its last
  *points* forecast.
* ``series_fir``: a causal finite impulse response filter (``center`` shifts it back by
  half its length), normalised by the sum of the coefficients unless told not to or
  one is negative; values before the start count as 0.

A series is a JSON array of numbers; a null or non-numeric element makes the fits and
decompositions answer nulls (``series_outliers`` scores it 0, as Kusto does). At most
`MAX_SERIES_LENGTH` elements and filter coefficients; the work per call is linear or
``n log n`` in the length, and `check` (the engine's stop flag) is consulted between
steps so a query's time limit interrupts a long run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

#: The scalar function's name in SQL (internal; no query can name it: KQL names cannot
#: start with two underscores and reach DuckDB unquoted).
FUNCTION_NAME = "__ctirealm_series"
#: Longest series (and filter) accepted; longer raise. make-series builds at most 100,000 bins.
MAX_SERIES_LENGTH = 100_000
#: Work budget of seasonality detection (series length x candidate periods).
DETECT_BUDGET = 5_000_000

#: Output columns of the functions that return several, in Kusto's order.
OUTPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "series_fit_line": (
        ("rsquare", "real"),
        ("slope", "real"),
        ("variance", "real"),
        ("rvariance", "real"),
        ("interception", "real"),
        ("line_fit", "dynamic"),
    ),
    "series_fit_2lines": (
        ("rsquare", "real"),
        ("split_idx", "long"),
        ("variance", "real"),
        ("rvariance", "real"),
        ("line_fit", "dynamic"),
        ("right_rsquare", "real"),
        ("right_slope", "real"),
        ("right_interception", "real"),
        ("right_variance", "real"),
        ("right_rvariance", "real"),
        ("left_rsquare", "real"),
        ("left_slope", "real"),
        ("left_interception", "real"),
        ("left_variance", "real"),
        ("left_rvariance", "real"),
    ),
    "series_decompose": (
        ("baseline", "dynamic"),
        ("seasonal", "dynamic"),
        ("trend", "dynamic"),
        ("residual", "dynamic"),
    ),
    "series_decompose_anomalies": (("ad_flag", "dynamic"), ("ad_score", "dynamic"), ("baseline", "dynamic")),
}


class SeriesError(ValueError):
    """A series or argument the function cannot take (the query fails with this message)."""


def _numbers(value: Any, what: str = "series") -> list[float | None]:
    if not isinstance(value, list):
        raise SeriesError(f"{what} is not a dynamic array")
    if len(value) > MAX_SERIES_LENGTH:
        raise SeriesError(f"{what} longer than the engine limit of {MAX_SERIES_LENGTH} elements")
    out: list[float | None] = []
    for v in value:
        if isinstance(v, bool):
            out.append(float(v))
        elif isinstance(v, (int, float)) and math.isfinite(v):
            out.append(float(v))
        else:
            out.append(None)
    return out


def _complete(xs: list[float | None]) -> list[float] | None:
    return None if any(v is None for v in xs) else [v for v in xs if v is not None]


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _sample_variance(xs: Sequence[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return sum((v - m) ** 2 for v in xs) / (len(xs) - 1)


def _line(ys: Sequence[float], first_x: int = 1) -> tuple[float, float]:
    """Least-squares (slope, interception) of *ys* at x = first_x, first_x + 1, ..."""
    n = len(ys)
    mx = first_x + (n - 1) / 2
    my = _mean(ys)
    sxx = sum((first_x + i - mx) ** 2 for i in range(n))
    if sxx == 0:
        return 0.0, my
    slope = sum((first_x + i - mx) * (y - my) for i, y in enumerate(ys)) / sxx
    return slope, my - slope * mx


def _rsquare(ss_res: float, ss_tot: float) -> float:
    if ss_tot <= 0:
        return 1.0 if ss_res <= 1e-12 else 0.0
    return 1.0 - ss_res / ss_tot


def fit_line(series: list[float | None]) -> dict[str, Any]:
    ys = _complete(series)
    if not ys:
        return dict.fromkeys(k for k, _ in OUTPUTS["series_fit_line"])
    slope, intercept = _line(ys)
    fit = [intercept + slope * (i + 1) for i in range(len(ys))]
    residuals = [y - f for y, f in zip(ys, fit, strict=True)]
    my = _mean(ys)
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum(r * r for r in residuals)
    n1 = max(len(ys) - 1, 1)
    return {
        "rsquare": _rsquare(ss_res, ss_tot),
        "slope": slope,
        "variance": ss_tot / n1,
        "rvariance": ss_res / n1,
        "interception": intercept,
        "line_fit": fit,
    }


def _prefix(values: Sequence[float]) -> list[float]:
    out = [0.0]
    for v in values:
        out.append(out[-1] + v)
    return out


def fit_2lines(series: list[float | None], check: Callable[[], None]) -> dict[str, Any]:
    empty = dict.fromkeys(k for k, _ in OUTPUTS["series_fit_2lines"])
    ys = _complete(series)
    if ys is None or len(ys) < 4:
        return empty
    n = len(ys)
    xs = [float(i + 1) for i in range(n)]
    sx, sy = _prefix(xs), _prefix(ys)
    sxx = _prefix([x * x for x in xs])
    sxy = _prefix([x * y for x, y in zip(xs, ys, strict=True)])
    syy = _prefix([y * y for y in ys])

    def segment(a: int, b: int) -> tuple[float, float, float, float]:
        """(slope, interception, residual SS, total SS) of ys[a:b] against x."""
        m = b - a
        gx, gy = sx[b] - sx[a], sy[b] - sy[a]
        cxx = sxx[b] - sxx[a] - gx * gx / m
        cxy = sxy[b] - sxy[a] - gx * gy / m
        cyy = max(syy[b] - syy[a] - gy * gy / m, 0.0)
        slope = cxy / cxx if cxx > 0 else 0.0
        return slope, (gy - slope * gx) / m, max(cyy - slope * cxy, 0.0), cyy

    my = sy[n] / n
    ss_tot = sum((y - my) ** 2 for y in ys)
    best: tuple[float, int] | None = None
    for k in range(2, n - 1):
        if k % 4096 == 0:
            check()
        total = segment(0, k)[2] + segment(k, n)[2]
        if best is None or total < best[0] - 1e-12:
            best = (total, k)
    assert best is not None
    ss_res, k = best
    sides = {}
    fit: list[float] = []
    for side, (a, b) in (("left", (0, k)), ("right", (k, n))):
        slope, intercept, res, tot = segment(a, b)
        m1 = max(b - a - 1, 1)
        sides[side] = {
            "rsquare": _rsquare(res, tot),
            "slope": slope,
            "interception": intercept,
            "variance": tot / m1,
            "rvariance": res / m1,
        }
        fit.extend(intercept + slope * xs[i] for i in range(a, b))
    out = {
        "rsquare": _rsquare(ss_res, ss_tot),
        "split_idx": k,
        "variance": ss_tot / (n - 1),
        "rvariance": ss_res / (n - 1),
        "line_fit": fit,
    }
    for side in ("right", "left"):
        for key, value in sides[side].items():
            out[f"{side}_{key}"] = value
    return out


def _percentile(sorted_values: Sequence[float], p: float) -> float:
    """The *p*-th percentile with linear interpolation between closest ranks."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def outliers(
    series: list[float | None],
    kind: str = "ctukey",
    ignore: float | None = None,
    low: float = 10.0,
    high: float = 90.0,
) -> list[float]:
    kind = (kind or "ctukey").lower()
    if kind == "tukey":
        low, high = 25.0, 75.0
    elif kind != "ctukey":
        raise SeriesError(f"series_outliers: unknown kind {kind!r} (tukey or ctukey)")
    if not (2.0 <= low <= 98.0 and 2.0 <= high <= 98.0 and low < high):
        raise SeriesError("series_outliers: percentiles must lie in [2, 98], the minimum first")
    usable = [v for v in series if v is not None and v != ignore]
    if not usable:
        return [0.0] * len(series)
    ordered = sorted(usable)
    q_low, q_high = _percentile(ordered, low), _percentile(ordered, high)
    spread = q_high - q_low
    scores = []
    for v in series:
        if v is None or v == ignore or q_low <= v <= q_high:
            scores.append(0.0)
        elif spread <= 0:
            scores.append(math.copysign(1e12, v - q_high))
        elif v > q_high:
            scores.append((v - q_high) / spread)
        else:
            scores.append((v - q_low) / spread)
    return scores


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def _detect_period(xs: list[float], threshold: float, check: Callable[[], None]) -> int:
    """The period (in bins) whose autocorrelation of the mean-removed series is highest,
    if at least *threshold*; 0 (none) otherwise. Candidates: 2 .. n/2 (at least two whole
    cycles), as many as `DETECT_BUDGET` allows for the length."""
    n = len(xs)
    m = _mean(xs)
    centred = [v - m for v in xs]
    energy = sum(v * v for v in centred)
    if n < 8 or energy <= 0:
        return 0
    top = min(n // 2, max(2, DETECT_BUDGET // n))
    best, best_score = 0, threshold
    for p in range(2, top + 1):
        if p % 64 == 0:
            check()
        score = sum(centred[i] * centred[i + p] for i in range(n - p)) / energy * n / (n - p)
        if score > best_score + 1e-12:
            best, best_score = p, score
    return best


def decompose(
    series: list[float | None],
    seasonality: int = -1,
    trend: str = "avg",
    test_points: int = 0,
    threshold: float = 0.6,
    check: Callable[[], None] = lambda: None,
) -> dict[str, Any] | None:
    xs = _complete(series)
    if not xs:
        return None
    n = len(xs)
    learn = n - max(0, int(test_points))
    if learn < 1:
        raise SeriesError("series_decompose: test_points leaves no point to learn from")
    trend = (trend or "avg").lower()
    if trend not in ("avg", "linefit", "none"):
        raise SeriesError(f"series_decompose: unknown trend {trend!r} (avg, linefit or none)")
    period = int(seasonality)
    if period < 0:
        period = _detect_period(xs[:learn], threshold, check)
    seasonal = [0.0] * n
    if period > 0:
        medians = [
            _median(xs[phase:learn:period]) if phase < learn else 0.0 for phase in range(min(period, n))
        ]
        seasonal = [medians[i % period] if i % period < len(medians) else 0.0 for i in range(n)]
    check()
    deseasoned = [x - s for x, s in zip(xs, seasonal, strict=True)]
    if trend == "avg":
        level = _mean(deseasoned[:learn])
        trend_values = [level] * n
    elif trend == "linefit":
        slope, intercept = _line(deseasoned[:learn])
        trend_values = [intercept + slope * (i + 1) for i in range(n)]
    else:
        trend_values = [0.0] * n
    baseline = [s + t for s, t in zip(seasonal, trend_values, strict=True)]
    residual = [x - b for x, b in zip(xs, baseline, strict=True)]
    return {"baseline": baseline, "seasonal": seasonal, "trend": trend_values, "residual": residual}


def fir(
    series: list[float | None],
    coefficients: list[float | None],
    normalize: bool | None = None,
    center: bool = False,
) -> list[float | None] | None:
    f = _complete(coefficients)
    if not f:
        raise SeriesError("series_fir: the filter must be a non-empty array of numbers")
    negative = any(c < 0 for c in f)
    if normalize is None:
        normalize = not negative
    if normalize:
        total = sum(f)
        if negative or total == 0:
            return None
        f = [c / total for c in f]
    m = len(f)
    shift = (m - 1) // 2 if center else 0
    out: list[float | None] = []
    n = len(series)
    for i in range(n):
        t = i + shift
        acc = 0.0
        missing = False
        for j, c in enumerate(f):
            k = t - j
            if 0 <= k < n:
                v = series[k]
                if v is None:
                    missing = True
                    break
                acc += c * v
        out.append(None if missing else acc)
    return out


def _arg(args: list[Any], i: int, default: Any) -> Any:
    return args[i] if len(args) > i and args[i] is not None else default


def compute(
    kind: str, series_text: str | None, args_text: str | None, check: Callable[[], None] = lambda: None
) -> str | None:
    """The SQL function's body: *kind* applied to the series, JSON text out (or null)."""
    if series_text is None:
        return None
    try:
        value = json.loads(series_text)
        args = json.loads(args_text) if args_text else []
    except (TypeError, ValueError):
        return None
    if value is None:
        return None
    series = _numbers(value)
    result: Any
    if kind in ("series_fit_line", "series_fit_line_dynamic"):
        result = fit_line(series)
    elif kind in ("series_fit_2lines", "series_fit_2lines_dynamic"):
        result = fit_2lines(series, check)
        if kind == "series_fit_2lines_dynamic":
            result = {k: v for k, v in result.items() if not k.startswith(("left_", "right_"))} | {
                side: {k[len(side) + 1 :]: v for k, v in result.items() if k.startswith(side + "_")}
                for side in ("left", "right")
            }
    elif kind == "series_outliers":
        result = outliers(
            series,
            str(_arg(args, 0, "ctukey")),
            _arg(args, 1, None),
            float(_arg(args, 2, 10.0)),
            float(_arg(args, 3, 90.0)),
        )
    elif kind == "series_decompose":
        result = decompose(
            series,
            int(_arg(args, 0, -1)),
            str(_arg(args, 1, "avg")),
            int(_arg(args, 2, 0)),
            float(_arg(args, 3, 0.6)),
            check,
        )
    elif kind == "series_decompose_anomalies":
        threshold = float(_arg(args, 0, 1.5))
        parts = decompose(
            series,
            int(_arg(args, 1, -1)),
            str(_arg(args, 2, "avg")),
            int(_arg(args, 3, 0)),
            float(_arg(args, 5, 0.6)),
            check,
        )
        if parts is None:
            result = dict.fromkeys(k for k, _ in OUTPUTS["series_decompose_anomalies"])
        else:
            method = str(_arg(args, 4, "ctukey"))
            scores = outliers(list(parts["residual"]), method)
            flags = [1 if s > threshold else -1 if s < -threshold else 0 for s in scores]
            result = {"ad_flag": flags, "ad_score": scores, "baseline": parts["baseline"]}
    elif kind == "series_decompose_forecast":
        points = int(_arg(args, 0, 0))
        parts = decompose(
            series,
            int(_arg(args, 1, -1)),
            str(_arg(args, 2, "linefit")),
            points,
            float(_arg(args, 3, 0.6)),
            check,
        )
        result = None if parts is None else parts["baseline"]
    elif kind == "series_fir":
        normalize = _arg(args, 1, None)
        result = fir(
            series,
            _numbers(_arg(args, 0, []), "series_fir's filter"),
            None if normalize is None else bool(normalize),
            bool(_arg(args, 2, False)),
        )
    else:
        raise SeriesError(f"unknown series function {kind!r}")
    check()
    return json.dumps(result, allow_nan=False)


def sql_function(check: Callable[[], None]) -> Callable[[str, str | None, str | None], str | None]:
    """`compute` bound to an engine's stop flag, as DuckDB calls it."""

    def series_function(kind: str, series_text: str | None, args_text: str | None) -> str | None:
        return compute(kind, series_text, args_text, check)

    return series_function
