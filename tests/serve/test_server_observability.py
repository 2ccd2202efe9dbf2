"""Prometheus /metrics and the JSON access log of a real server."""

from __future__ import annotations

import json
import time
import uuid

import numpy as np

from .conftest import Server, metric_samples, metric_value, v2_tensor


def test_metrics_after_requests(shared_server: Server) -> None:
    before = metric_samples(shared_server)
    x = np.random.default_rng(41).standard_normal((2, 16, 16, 3)).astype(np.float32)
    for _ in range(5):
        assert shared_server.post("/v2/models/cnn/infer", json={"inputs": [v2_tensor("x", x)]}).status_code == 200
    for _ in range(3):
        assert shared_server.post("/models/cnn/invoke", data=x.tobytes(),
                                  headers={"Content-Type": "application/octet-stream"}).status_code == 200
    assert shared_server.post("/v2/models/cnn/infer", json={"inputs": [v2_tensor("x", x[:, :8])]}).status_code == 400
    after = metric_samples(shared_server)

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    cnn = {"model": "cnn", "version": "1"}
    assert delta("mlxport_requests_total", **cnn, protocol="v2", code="200") == 5
    assert delta("mlxport_requests_total", **cnn, protocol="sagemaker", code="200") == 3
    assert delta("mlxport_requests_total", **cnn, protocol="v2", code="400") == 1
    assert delta("mlxport_request_failures_total", **cnn, code="400") == 1
    assert delta("mlxport_request_failures_total", **cnn, code="200") == 0
    # Latency histograms: total (every answered request), queue and compute (the 8 that ran).
    assert delta("mlxport_request_duration_seconds_count", **cnn) == 9
    assert delta("mlxport_request_duration_seconds_sum", **cnn) > 0
    assert delta("mlxport_request_duration_seconds_bucket", **cnn, le="+Inf") == 9
    assert delta("mlxport_queue_duration_seconds_count", **cnn) == 8
    assert 1 <= delta("mlxport_compute_duration_seconds_count", **cnn) <= 8
    assert delta("mlxport_batch_size_sum", **cnn) == 16  # 8 requests of 2 rows
    buckets = sorted((float(s.labels["le"]), s.value) for s in after
                     if s.name == "mlxport_request_duration_seconds_bucket" and s.labels.get("model") == "cnn")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets), "histogram buckets must be cumulative"
    assert buckets[0][0] <= 0.001 and buckets[-2][0] >= 10  # sub-millisecond to seconds
    # Gauges: queue depth (idle now), model loaded and its load time, process memory.
    assert metric_value(after, "mlxport_queue_depth", **cnn) == 0
    assert any(s.name == "mlxport_queue_depth" for s in after)
    assert metric_value(after, "mlxport_model_loaded", **cnn) == 1
    for model, version in (("mlp", "1"), ("scale", "1"), ("scale", "2"), ("two_in", "1")):
        assert metric_value(after, "mlxport_model_load_seconds", model=model, version=version) > 0, (model, version)
    rss = metric_value(after, "process_resident_memory_bytes")
    assert 20 * 2**20 < rss < 16 * 2**30
    assert abs(rss - shared_server.rss()) / shared_server.rss() < 0.5


def test_metrics_content_type_and_openmetrics(shared_server: Server) -> None:
    r = shared_server.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    assert "# TYPE mlxport_requests_total counter" in r.text
    assert "# TYPE mlxport_request_duration_seconds histogram" in r.text


def test_access_log_lines_are_json(shared_server: Server) -> None:
    marker = f"/v2/models/nosuch-{uuid.uuid4().hex}"
    assert shared_server.get(marker).status_code == 404
    x = np.zeros((1, 784), np.float32)
    assert shared_server.post("/v2/models/mlp/infer", json={"inputs": [v2_tensor("x", x)]}).status_code == 200
    deadline = time.monotonic() + 5
    while marker not in shared_server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [ln for ln in shared_server.log().splitlines() if ln.strip()]
    assert lines[0].startswith("mlxport serve: http://127.0.0.1:")  # the banner, then one JSON object per line
    # ONNX Runtime writes its own (non-JSON) error lines to the same stderr when the failing model fails.
    ours = [ln for ln in lines[1:] if ":onnxruntime:" not in ln]
    records = [json.loads(ln) for ln in ours]
    access = [r for r in records if "method" in r]
    assert access, "no access log lines"
    for r in access:
        assert {"ts", "method", "path", "status", "ms"} <= set(r), r
        assert isinstance(r["status"], int) and r["ms"] >= 0
    (mine,) = [r for r in access if r["path"] == marker]
    assert mine["status"] == 404 and mine["method"] == "GET"
    infer = [r for r in access if r["path"] == "/v2/models/mlp/infer" and r["status"] == 200]
    assert infer and infer[-1]["model"] == "mlp" and infer[-1]["version"] == "1"
    events = {r.get("event") for r in records if "event" in r}
    assert {"loaded", "ready"} <= events
