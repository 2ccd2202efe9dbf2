"""Metrics: feed calls, render, parse the exposition text back and check the numbers."""

from __future__ import annotations

import sys
import threading
import time

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from mlxport.serve.metrics import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS, Metrics  # noqa: E402


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Render and parse: (sample name, sorted labels) -> value."""
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _families(metrics: Metrics) -> dict[str, str]:
    body, _ = metrics.render()
    return {f.name: f.type for f in text_string_to_metric_families(body.decode("utf-8"))}


def _mv(model: str = "mlp", version: str = "1", **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"model": model, "version": version, **extra}.items()))


def test_requests_and_failures_by_code() -> None:
    m = Metrics()
    for code in (200, 200, 200, 400, 503):
        m.request("mlp", "1", "v2", code, 0.002)
    m.request("mlp", "1", "sagemaker", 200, 0.02)
    m.request("mlp", "2", "v2", 404, 0.0003)
    s = _samples(m)
    assert s[("mlxport_requests_total", _mv(protocol="v2", code="200"))] == 3
    assert s[("mlxport_requests_total", _mv(protocol="v2", code="400"))] == 1
    assert s[("mlxport_requests_total", _mv(protocol="sagemaker", code="200"))] == 1
    assert s[("mlxport_request_failures_total", _mv(protocol="v2", code="400"))] == 1
    assert s[("mlxport_request_failures_total", _mv(protocol="v2", code="503"))] == 1
    assert s[("mlxport_request_failures_total", _mv("mlp", "2", protocol="v2", code="404"))] == 1
    # Successes never show up as failures.
    assert ("mlxport_request_failures_total", _mv(protocol="v2", code="200")) not in s
    assert sum(v for (n, _), v in s.items() if n == "mlxport_request_failures_total") == 3
    # The duration histogram is by model and version only.
    assert s[("mlxport_request_duration_seconds_count", _mv())] == 6
    assert s[("mlxport_request_duration_seconds_sum", _mv())] == pytest.approx(5 * 0.002 + 0.02)
    assert s[("mlxport_request_duration_seconds_count", _mv("mlp", "2"))] == 1


def test_latency_buckets_are_cumulative_and_cover_sub_ms_to_seconds() -> None:
    m = Metrics()
    values = [0.00005, 0.0004, 0.003, 0.003, 0.2, 7.0, 100.0]
    for v in values:
        m.queue("mlp", "1", v)
    s = _samples(m)
    bucket = "mlxport_queue_duration_seconds_bucket"
    bounds = [b for b in LATENCY_BUCKETS] + [float("inf")]
    assert bounds[0] <= 0.0001 and 10.0 in bounds
    for b in bounds:
        le = "+Inf" if b == float("inf") else repr(float(b))
        got = s[(bucket, _mv(le=le))]
        assert got == sum(1 for v in values if v <= b), le
    assert s[("mlxport_queue_duration_seconds_count", _mv())] == len(values)


def test_compute_and_batch_size_histogram() -> None:
    m = Metrics()
    sizes = [1, 1, 3, 64, 64, 1000, 2000]
    for n in sizes:
        m.compute("mlp", "1", 0.0001 * n, n)
    s = _samples(m)
    assert list(BATCH_SIZE_BUCKETS) == [2.0**i for i in range(11)]
    for b in BATCH_SIZE_BUCKETS:
        assert s[("mlxport_batch_size_bucket", _mv(le=repr(b)))] == sum(1 for n in sizes if n <= b)
    assert s[("mlxport_batch_size_bucket", _mv(le="+Inf"))] == len(sizes)
    assert s[("mlxport_batch_size_sum", _mv())] == sum(sizes)
    assert s[("mlxport_compute_duration_seconds_count", _mv())] == len(sizes)
    assert s[("mlxport_compute_duration_seconds_sum", _mv())] == pytest.approx(0.0001 * sum(sizes))


def test_gauges_and_model_lifecycle() -> None:
    m = Metrics()
    m.model_loaded("mlp", "1", 0.25)
    m.model_loaded("mlp", "2", 0.5)
    m.queue_depth("mlp", "1", 7)
    m.queue_depth("mlp", "1", 3)
    m.queue_depth("mlp", "2", 1)
    m.request("mlp", "1", "v2", 200, 0.001)
    s = _samples(m)
    assert s[("mlxport_model_loaded", _mv())] == 1
    assert s[("mlxport_model_loaded", _mv("mlp", "2"))] == 1
    assert s[("mlxport_model_load_seconds", _mv())] == 0.25
    assert s[("mlxport_queue_depth", _mv())] == 3
    types = _families(m)
    assert types["mlxport_queue_depth"] == "gauge"
    assert types["mlxport_model_load_seconds"] == "gauge"
    assert types["mlxport_requests"] == "counter"
    assert types["mlxport_batch_size"] == "histogram"

    m.model_unloaded("mlp", "1")
    s = _samples(m)
    assert s[("mlxport_model_loaded", _mv())] == 0
    assert ("mlxport_queue_depth", _mv()) not in s
    assert ("mlxport_model_load_seconds", _mv()) not in s
    # Version 2 untouched; counters of version 1 kept.
    assert s[("mlxport_queue_depth", _mv("mlp", "2"))] == 1
    assert s[("mlxport_requests_total", _mv(protocol="v2", code="200"))] == 1
    m.model_unloaded("mlp", "1")  # twice is harmless
    m.queue_depth("mlp", "1", 0)  # the draining scheduler reports after the unload
    assert ("mlxport_queue_depth", _mv()) not in _samples(m)

    # A reload brings the series back, and the cached children still report.
    m.model_loaded("mlp", "1", 0.125)
    m.queue_depth("mlp", "1", 2)
    s = _samples(m)
    assert s[("mlxport_model_loaded", _mv())] == 1
    assert s[("mlxport_model_load_seconds", _mv())] == 0.125
    assert s[("mlxport_queue_depth", _mv())] == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc process metrics are Linux-only")
def test_process_memory_is_exported() -> None:
    s = _samples(Metrics())
    rss = s[("process_resident_memory_bytes", ())]
    assert rss > 1_000_000  # a Python process with numpy loaded is far above 1 MB


def test_registries_are_independent_and_not_global() -> None:
    from prometheus_client import REGISTRY

    a, b = Metrics(), Metrics()
    a.request("mlp", "1", "v2", 200, 0.001)
    assert ("mlxport_requests_total", _mv(protocol="v2", code="200")) in _samples(a)
    assert ("mlxport_requests_total", _mv(protocol="v2", code="200")) not in _samples(b)
    assert REGISTRY.get_sample_value("mlxport_requests_total", dict(_mv(protocol="v2", code="200"))) is None


def test_openmetrics_on_request() -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

    m = Metrics()
    m.request("mlp", "1", "v2", 200, 0.001)
    body, ctype = m.render("application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
    assert ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in om_parse(body.decode()) for s in f.samples}
    assert values[("mlxport_requests_total", _mv(protocol="v2", code="200"))] == 1
    _, plain = m.render("text/plain")
    assert plain == "text/plain; version=0.0.4; charset=utf-8"


def test_concurrent_calls_lose_nothing() -> None:
    m = Metrics()
    threads_n, per_thread = 4, 2000

    def work(i: int) -> None:
        for k in range(per_thread):
            m.request("mlp", str(i % 2), "v2", 200 if k % 10 else 500, 0.001)
            m.compute("mlp", str(i % 2), 0.0005, 8)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    s = _samples(m)
    total = sum(v for (n, _), v in s.items() if n == "mlxport_requests_total")
    failures = sum(v for (n, _), v in s.items() if n == "mlxport_request_failures_total")
    assert total == threads_n * per_thread
    assert failures == threads_n * per_thread // 10
    assert s[("mlxport_batch_size_sum", _mv("mlp", "0"))] == 8 * 2 * per_thread


def test_calls_are_cheap() -> None:
    m = Metrics()
    n = 20_000
    start = time.perf_counter()
    for _ in range(n):
        m.request("mlp", "1", "v2", 200, 0.001)
        m.queue("mlp", "1", 0.0001)
        m.compute("mlp", "1", 0.0002, 4)
    per_request = (time.perf_counter() - start) / n
    # ~5-10 µs here; a 2-core shared CI box gets a 20x margin before this trips.
    assert per_request < 200e-6, f"{per_request * 1e6:.1f} µs per request's metric calls"
