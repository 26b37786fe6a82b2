"""Pure parts of the benchmark: percentiles, medians, summaries, ratios, table and JSON.

No I/O here: values in, values out, so the maths is unit-tested
(tests/unit/scripts/test_bench_stats.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

RESULT_FORMAT = "secserver-bench/1"

SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1024 * 1024, "mib": 1024 * 1024}


def parse_size(text: str) -> int:
    """``"1k"`` -> 1024, ``"64KiB"`` -> 65536, ``"1m"`` -> 1048576, ``"100"`` -> 100."""
    cleaned = text.strip().lower()
    digits = cleaned.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = cleaned[len(digits):]
    if not digits.isdigit() or unit not in SIZE_UNITS:
        raise ValueError(f"invalid size {text!r}: expected a number with k or m, e.g. 1k, 64k, 1m")
    value = int(digits) * SIZE_UNITS[unit]
    if value <= 0:
        raise ValueError(f"invalid size {text!r}: must be greater than zero")
    return value


def format_size(size: int) -> str:
    """1024 -> ``"1KiB"``, 1048576 -> ``"1MiB"``; other values in bytes."""
    for unit, factor in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (``fraction`` in [0, 1]).

    Nearest rank (as wrk and HdrHistogram report): the smallest value such that at least
    ``fraction`` of the values are less than or equal to it.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], got {fraction}")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return float(sorted_values[rank - 1])


def median(values: Iterable[float]) -> float:
    """The median (mean of the two middle values for an even count)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of no values")
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2.0


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured (latencies in milliseconds)."""

    requests: int
    errors: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    bytes_read: int = 0

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


def summarise_latencies(latencies_ns: Sequence[int], errors: int, duration_s: float,
                        bytes_read: int = 0) -> LoadResult:
    """Turn raw per-request latencies (nanoseconds, successful requests) into a LoadResult."""
    ordered = sorted(latencies_ns)
    if not ordered:
        return LoadResult(requests=0, errors=errors, duration_s=duration_s, p50_ms=math.nan,
                          p99_ms=math.nan, bytes_read=bytes_read)
    return LoadResult(requests=len(ordered), errors=errors, duration_s=duration_s,
                      p50_ms=percentile(ordered, 0.50) / 1e6,
                      p99_ms=percentile(ordered, 0.99) / 1e6, bytes_read=bytes_read)


@dataclass(frozen=True)
class Run:
    """One measured run of one target, as recorded in the JSON file."""

    target: str          # "direct", "baseline", "exchange-sqlite", "exchange-postgresql"
    size: int            # body bytes (request and echoed response)
    concurrency: int
    repetition: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    duration_s: float
    peak_rss_kib: dict[str, int] = field(default_factory=dict)  # process name -> VmHWM
    # process name -> CPU milliseconds (user + system) per successful request
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)


def cpu_per_request(cpu_seconds: Mapping[str, float], requests: int) -> dict[str, float]:
    """CPU seconds used by each process during a run -> milliseconds per request."""
    if requests <= 0:
        return {name: math.nan for name in cpu_seconds}
    return {name: seconds * 1000.0 / requests for name, seconds in cpu_seconds.items()}


@dataclass(frozen=True)
class Summary:
    """Medians over the repetitions of one (target, size, concurrency)."""

    target: str
    size: int
    concurrency: int
    runs: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    peak_rss_kib: dict[str, int]
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_ms_total(self) -> float:
        """Server-side CPU per request, all processes of this target together."""
        return sum(self.cpu_ms_per_request.values()) if self.cpu_ms_per_request else math.nan


def summarise(runs: Iterable[Run]) -> list[Summary]:
    """Group runs by (target, size, concurrency): median rps/p50/p99, summed errors, max RSS."""
    groups: dict[tuple[str, int, int], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.target, run.size, run.concurrency), []).append(run)
    summaries = []
    for (target, size, concurrency), group in groups.items():
        rss: dict[str, int] = {}
        for run in group:
            for name, kib in run.peak_rss_kib.items():
                rss[name] = max(rss.get(name, 0), kib)
        names = {name for run in group for name in run.cpu_ms_per_request}
        cpu = {name: median(r.cpu_ms_per_request.get(name, math.nan) for r in group)
               for name in sorted(names)}
        summaries.append(Summary(
            target=target, size=size, concurrency=concurrency, runs=len(group),
            rps=median(r.rps for r in group), p50_ms=median(r.p50_ms for r in group),
            p99_ms=median(r.p99_ms for r in group), errors=sum(r.errors for r in group),
            peak_rss_kib=rss, cpu_ms_per_request=cpu))
    return summaries


@dataclass(frozen=True)
class Comparison:
    """The exchange against direct calls and the two-proxy baseline (same size, concurrency)."""

    target: str
    size: int
    concurrency: int
    vs_baseline: float        # rps(exchange) / rps(baseline): the "3/2"
    vs_direct: float          # rps(exchange) / rps(direct): "3/1"
    added_p50_ms_vs_direct: float
    added_p50_ms_vs_baseline: float
    # CPU ms per request of the baseline / of the exchange: the throughput ratio one would
    # see if both were CPU-bound on a core of their own (robust on a busy machine)
    cpu_vs_baseline: float = math.nan


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def compare(summaries: Sequence[Summary]) -> list[Comparison]:
    """Ratios 3/2 and 3/1 and added p50 for every exchange target."""
    index = {(s.target, s.size, s.concurrency): s for s in summaries}
    comparisons = []
    for s in summaries:
        if not s.target.startswith("exchange"):
            continue
        direct = index.get(("direct", s.size, s.concurrency))
        baseline = index.get(("baseline", s.size, s.concurrency))
        comparisons.append(Comparison(
            target=s.target, size=s.size, concurrency=s.concurrency,
            vs_baseline=_ratio(s.rps, baseline.rps) if baseline else math.nan,
            vs_direct=_ratio(s.rps, direct.rps) if direct else math.nan,
            added_p50_ms_vs_direct=s.p50_ms - direct.p50_ms if direct else math.nan,
            added_p50_ms_vs_baseline=s.p50_ms - baseline.p50_ms if baseline else math.nan,
            cpu_vs_baseline=_ratio(baseline.cpu_ms_total, s.cpu_ms_total) if baseline
            else math.nan))
    return comparisons


def _fmt(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def render_table(summaries: Sequence[Summary], comparisons: Sequence[Comparison]) -> str:
    """A plain-text table: one row per (concurrency, size, target)."""
    ratio = {(c.target, c.size, c.concurrency): c for c in comparisons}
    header = ("conc", "size", "target", "runs", "req/s", "p50 ms", "p99 ms", "errors",
              "x baseline", "x direct", "+p50 ms", "CPU ms/req", "CPU x base", "peak RSS MiB")
    rows: list[tuple[str, ...]] = [header]
    order = {"direct": 0, "baseline": 1}
    for s in sorted(summaries, key=lambda s: (s.concurrency, s.size, order.get(s.target, 2),
                                              s.target)):
        c = ratio.get((s.target, s.size, s.concurrency))
        rss = " ".join(f"{name}={kib / 1024:.0f}" for name, kib in sorted(s.peak_rss_kib.items()))
        rows.append((str(s.concurrency), format_size(s.size), s.target, str(s.runs),
                     _fmt(s.rps, 0), _fmt(s.p50_ms, 2), _fmt(s.p99_ms, 2), str(s.errors),
                     _fmt(c.vs_baseline, 2) if c else "", _fmt(c.vs_direct, 2) if c else "",
                     _fmt(c.added_p50_ms_vs_direct, 2) if c else "", _fmt(s.cpu_ms_total, 3),
                     _fmt(c.cpu_vs_baseline, 2) if c else "", rss))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.rjust(w) if i in (0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12) else
                               cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths,
                                                                             strict=True)))
                     .rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    """NaN is not JSON: write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def result_document(environment: Mapping[str, Any], settings: Mapping[str, Any],
                    runs: Sequence[Run], summaries: Sequence[Summary],
                    comparisons: Sequence[Comparison], notes: Sequence[str]) -> dict[str, Any]:
    """The JSON document written by ``--json-out`` (stable keys, comparable over time)."""
    document: dict[str, Any] = _clean({
        "format": RESULT_FORMAT,
        "environment": dict(environment),
        "settings": dict(settings),
        "summaries": [{**asdict(s), "cpu_ms_total": s.cpu_ms_total} for s in summaries],
        "comparisons": [asdict(c) for c in comparisons],
        "runs": [asdict(r) for r in runs],
        "notes": list(notes),
    })
    return document
