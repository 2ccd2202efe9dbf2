"""Dynamic batching, the bounded queue and the request timeout, seen from a real client."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import numpy as np
import pytest

requests = pytest.importorskip("requests")

from .conftest import (  # noqa: E402
    Models, Server, ServerPool, assert_error, metric_samples, metric_value, v2_decode_binary, v2_tensor)


def burst(fn: Callable[[int], Any], n: int) -> list[Any]:
    """Run fn(0..n-1) on n threads released together by a barrier."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait(timeout=30)
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


@pytest.fixture(scope="module")
def batching_server(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """mlp (dynamic batch) and fixed (fixed shape), with a 25 ms batching window so a burst surely merges."""
    root = tmp_path_factory.mktemp("batching_repo")
    models.version_dir(root, "mlp", 1)
    models.version_dir(root, "fixed", 1)
    pool = ServerPool(tmp_path_factory.mktemp("batching_logs"))
    try:
        yield pool.start([str(root), "--max-queue-delay-ms", "25", "--max-batch-size", "16", "--poll-interval", "0"])
    finally:
        pool.close()


def _batch_hist(server: Server, model: str) -> tuple[float, float]:
    """(observations, observations of batch size 1) of mlxport_batch_size for a model."""
    samples = metric_samples(server)
    total = metric_value(samples, "mlxport_batch_size_count", model=model)
    ones = metric_value(samples, "mlxport_batch_size_bucket", model=model, le="1.0")
    return total, ones


def test_concurrent_requests_are_merged(batching_server: Server, models: Models) -> None:
    n = 32
    rng = np.random.default_rng(31)
    xs = [rng.standard_normal((1 + i % 3, 784)).astype(np.float32) for i in range(n)]
    session = models.session("mlp")
    wants = [session.run(None, {"x": x})[0] for x in xs]
    calls_before, ones_before = _batch_hist(batching_server, "mlp")

    def call(i: int) -> requests.Response:
        return requests.post(batching_server.url + "/v2/models/mlp/infer", timeout=30,
                             json={"id": str(i), "inputs": [v2_tensor("x", xs[i])]})

    responses = burst(call, n)
    for i, r in enumerate(responses):
        assert r.status_code == 200, r.text[:300]
        assert r.json()["id"] == str(i)
        # Every request gets its own rows back, not a neighbour's.
        np.testing.assert_allclose(v2_decode_binary(r)["output"], wants[i], rtol=1e-5, atol=1e-6)
    calls_after, ones_after = _batch_hist(batching_server, "mlp")
    calls, single = calls_after - calls_before, ones_after - ones_before
    rows = sum(x.shape[0] for x in xs)
    assert calls < n, f"{n} requests ran as {calls} model calls: nothing was merged"
    assert calls - single >= 1, "no model call had a batch larger than 1"
    # Each merged call is at most --max-batch-size rows, so at least rows/16 calls.
    assert calls >= rows / 16
    samples = metric_samples(batching_server)
    batch_sum = metric_value(samples, "mlxport_batch_size_sum", model="mlp")
    assert batch_sum >= rows  # the histogram counts rows per call


def test_fixed_shape_model_is_not_merged(batching_server: Server, models: Models) -> None:
    n = 16
    rng = np.random.default_rng(32)
    xs = [rng.standard_normal((2, 16)).astype(np.float32) for _ in range(n)]
    session = models.session("fixed")
    wants = [session.run(None, {"x": x})[0] for x in xs]
    calls_before, ones_before = _batch_hist(batching_server, "fixed")

    def call(i: int) -> requests.Response:
        return requests.post(batching_server.url + "/models/fixed/invoke", json={"inputs": xs[i].tolist()}, timeout=30)

    responses = burst(call, n)
    for r, want in zip(responses, wants):
        assert r.status_code == 200, r.text[:300]
        np.testing.assert_allclose(np.asarray(r.json()["predictions"], np.float32), want, rtol=1e-5, atol=1e-6)
    calls_after, ones_after = _batch_hist(batching_server, "fixed")
    assert calls_after - calls_before == n
    assert ones_after - ones_before == n
    # Other batch sizes are refused by shape, never merged.
    assert_error(batching_server.post("/models/fixed/invoke", json={"inputs": np.zeros((4, 16)).tolist()}), 400, "2")


def test_full_queue_answers_503_with_retry_after(serve, models: Models, tmp_path) -> None:
    models.version_dir(tmp_path / "repo", "slow", 1)
    server = serve([str(tmp_path / "repo"), "--max-queue", "2", "--max-batch-size", "1", "--threads", "1",
                    "--poll-interval", "0"])

    def call(i: int) -> requests.Response:
        return requests.post(server.url + "/models/slow/invoke", json={"inputs": [[float(i)] * 4]}, timeout=60)

    responses = burst(call, 10)
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {200, 503}, codes
    assert codes.count(200) >= 1 and codes.count(503) >= 1, codes
    for i, r in enumerate(responses):
        if r.status_code == 503:
            assert_error(r, 503, "--max-queue")
            assert int(r.headers["Retry-After"]) >= 1
        else:
            assert r.json()["predictions"] == [[float(i)] * 4]  # y = x for the slow model
    # Once the burst is over the model answers again.
    assert call(7).json()["predictions"] == [[7.0] * 4]


def test_request_timeout_is_504(serve, models: Models, tmp_path) -> None:
    models.version_dir(tmp_path / "repo", "slow", 1)
    models.version_dir(tmp_path / "repo", "mlp", 1)
    timeout = max(0.05, models.slow_s / 3)
    server = serve([str(tmp_path / "repo"), "--request-timeout", f"{timeout:.3f}", "--threads", "1",
                    "--poll-interval", "0"])
    r = server.post("/models/slow/invoke", json={"inputs": [[1.0] * 4]})
    assert_error(r, 504, "--request-timeout")
    r = server.post("/v2/models/slow/infer", json={"inputs": [v2_tensor("x", np.ones((1, 4), np.float32))]})
    assert_error(r, 504)
    assert server.get("/ping").status_code == 200
    assert server.get("/v2/models/slow").status_code == 200
    samples = metric_samples(server)
    assert metric_value(samples, "mlxport_request_failures_total", model="slow", code="504") == 2
