"""The benchmark's pure parts: sizes, percentiles, medians, summaries, ratios, JSON, wrk I/O."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))

from bench_load import LoadSpec, build_request, parse_wrk_output, wrk_script
from bench_stats import (
    RESULT_FORMAT,
    Run,
    compare,
    format_size,
    median,
    parse_size,
    percentile,
    render_table,
    result_document,
    summarise,
    summarise_latencies,
)


@pytest.mark.parametrize(("text", "size"), [("1k", 1024), ("64KiB", 65536), ("1m", 1048576),
                                            ("1MiB", 1048576), ("100", 100), (" 2K ", 2048)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "k", "0", "1g", "1.5k", "-1k"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


def test_format_size() -> None:
    assert [format_size(s) for s in (1024, 65536, 1048576, 100)] == \
        ["1KiB", "64KiB", "1MiB", "100B"]


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile(values, 0.0) == 1.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([1.0, 2.0, 3.0], 0.5) == 2.0


def test_percentile_errors() -> None:
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


def test_median() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
    with pytest.raises(ValueError):
        median([])


def test_summarise_latencies() -> None:
    result = summarise_latencies([i * 1_000_000 for i in range(1, 101)], errors=2,
                                 duration_s=2.0, bytes_read=10)
    assert (result.requests, result.errors, result.p50_ms, result.p99_ms) == (100, 2, 50.0, 99.0)
    assert result.rps == 50.0
    empty = summarise_latencies([], errors=3, duration_s=1.0)
    assert empty.requests == 0 and math.isnan(empty.p50_ms) and empty.rps == 0.0


def _run(target: str, rps: float, p50: float, rep: int = 0, size: int = 1024,
         rss: int = 100) -> Run:
    return Run(target=target, size=size, concurrency=50, repetition=rep, rps=rps, p50_ms=p50,
               p99_ms=p50 * 2, requests=int(rps), errors=0, duration_s=1.0,
               peak_rss_kib={"node": rss})


def test_summarise_takes_medians_and_max_rss() -> None:
    runs = [_run("baseline", 1000, 10.0, 0, rss=100), _run("baseline", 3000, 30.0, 1, rss=300),
            _run("baseline", 2000, 20.0, 2, rss=200)]
    [summary] = summarise(runs)
    assert (summary.runs, summary.rps, summary.p50_ms, summary.p99_ms) == (3, 2000, 20.0, 40.0)
    assert summary.peak_rss_kib == {"node": 300}


def test_compare_ratios_and_added_latency() -> None:
    summaries = summarise([_run("direct", 10000, 1.0), _run("baseline", 2000, 5.0),
                           _run("exchange-sqlite", 1500, 6.5)])
    [comparison] = compare(summaries)
    assert comparison.target == "exchange-sqlite"
    assert comparison.vs_baseline == pytest.approx(0.75)
    assert comparison.vs_direct == pytest.approx(0.15)
    assert comparison.added_p50_ms_vs_direct == pytest.approx(5.5)
    assert comparison.added_p50_ms_vs_baseline == pytest.approx(1.5)


def test_compare_without_baseline_gives_nan() -> None:
    [comparison] = compare(summarise([_run("exchange-postgresql", 1500, 6.5)]))
    assert math.isnan(comparison.vs_baseline) and math.isnan(comparison.vs_direct)


def test_table_and_json_document() -> None:
    runs = [_run("direct", 10000, 1.0), _run("baseline", 2000, 5.0),
            _run("exchange-sqlite", 1500, 6.5), _run("exchange-postgresql", 0, math.nan)]
    summaries = summarise(runs)
    comparisons = compare(summaries)
    table = render_table(summaries, comparisons).splitlines()
    assert table[0].split()[:3] == ["conc", "size", "target"]
    assert [line.split()[2] for line in table[2:]] == \
        ["direct", "baseline", "exchange-postgresql", "exchange-sqlite"]
    assert "0.75" in table[5]
    document = result_document({"cpus": 2}, {"duration_s": 1.0}, runs, summaries, comparisons,
                               ["a note"])
    text = json.dumps(document, allow_nan=False)  # NaN written as null
    back = json.loads(text)
    assert back["format"] == RESULT_FORMAT
    assert back["notes"] == ["a note"]
    assert len(back["runs"]) == 4 and back["runs"][3]["p50_ms"] is None
    assert {c["target"] for c in back["comparisons"]} == {"exchange-sqlite",
                                                          "exchange-postgresql"}


def test_wrk_script_and_output() -> None:
    spec = LoadSpec("http://127.0.0.1:1/r1/X/echo", 2048, 10, 1.0, 77,
                    (("X-Road-Client", 'JP-DEV/GOV/"A"'),))
    script = wrk_script(spec)
    assert 'wrk.method = "POST"' in script
    assert 'string.rep("x", 2048)' in script
    assert 'wrk.headers["X-Road-Client"] = "JP-DEV/GOV/\\"A\\""' in script
    assert "local max_requests = 77" in script
    output = ("Running 1s test\nBENCH_JSON {\"requests\": 110, \"duration_us\": 2000000, "
              "\"bytes\": 5, \"connect\": 0, \"read\": 1, \"write\": 0, \"status\": 10, "
              "\"timeout\": 2, \"p50_us\": 1500, \"p99_us\": 9000}\n")
    result = parse_wrk_output(output)
    assert (result.requests, result.errors, result.duration_s) == (100, 13, 2.0)
    assert (result.p50_ms, result.p99_ms, result.rps) == (1.5, 9.0, 50.0)
    with pytest.raises(RuntimeError, match="no result line"):
        parse_wrk_output("wrk: connection refused\n")


def test_build_request() -> None:
    request = build_request(LoadSpec("http://127.0.0.1:8080/r1/A/echo?q=1", 3, 1, 1.0, 1,
                                     (("X-Road-Client", "A/B/C/D"),)))
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /r1/A/echo?q=1 HTTP/1.1"
    assert "Host: 127.0.0.1:8080" in lines
    assert "X-Road-Client: A/B/C/D" in lines
    assert "Content-Length: 3" in lines
    assert body == b"xxx"


def test_cpu_per_request_and_total() -> None:
    from bench_stats import cpu_per_request

    assert cpu_per_request({"consumer": 2.0, "provider": 1.0}, 1000) == \
        {"consumer": 2.0, "provider": 1.0}
    assert math.isnan(cpu_per_request({"node": 1.0}, 0)["node"])
    runs = [Run(target="exchange-sqlite", size=1024, concurrency=50, repetition=r, rps=100.0,
                p50_ms=1.0, p99_ms=2.0, requests=100, errors=0, duration_s=1.0,
                cpu_ms_per_request={"consumer": c, "provider": 1.0})
            for r, c in enumerate((1.0, 3.0, 2.0))]
    [summary] = summarise(runs)
    assert summary.cpu_ms_per_request == {"consumer": 2.0, "provider": 1.0}
    assert summary.cpu_ms_total == 3.0
    baseline = Run(target="baseline", size=1024, concurrency=50, repetition=0, rps=500.0,
                   p50_ms=1.0, p99_ms=2.0, requests=500, errors=0, duration_s=1.0,
                   cpu_ms_per_request={"client-proxy": 0.3, "server-proxy": 0.3})
    [comparison] = compare(summarise([*runs, baseline]))
    assert comparison.cpu_vs_baseline == pytest.approx(0.2)
