"""Bounded soak: many requests over keep-alive connections, zero failures, flat server memory.

``MLXPORT_SOAK_REQUESTS`` (default 20000) requests over ``MLXPORT_SOAK_CLIENTS`` (default 4) keep-alive
connections, stopped after ``MLXPORT_SOAK_SECONDS`` (default 90) whatever the count. Resident memory of the
server (VmRSS) is read after a warm-up and at the end; it may grow by less than 5 %.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import Models

REQUESTS = int(os.environ.get("MLXPORT_SOAK_REQUESTS", "20000"))
CLIENTS = int(os.environ.get("MLXPORT_SOAK_CLIENTS", "4"))
SECONDS = float(os.environ.get("MLXPORT_SOAK_SECONDS", "90"))
WARMUP = 0.1  # share of the requests sent before the first memory reading


def _requests(models: Models) -> list[tuple[str, bytes, dict[str, str], int, np.ndarray | None]]:
    """(path, body, headers, expected status, expected output) for each kind of request in the mix."""
    rng = np.random.default_rng(51)
    x = rng.standard_normal((1, 784)).astype(np.float32)
    (mlp_out,) = models.session("mlp").run(None, {"x": x})
    a, b = (rng.standard_normal((2, 3)).astype(np.float32) for _ in range(2))
    two_sum, _ = models.session("two_in").run(None, {"a": a, "b": b})
    img = rng.standard_normal((2, 16, 16, 3)).astype(np.float32)
    (cnn_out,) = models.session("cnn").run(None, {"x": img})
    npy = io.BytesIO()
    np.save(npy, img)
    head = json.dumps({"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    v2_json = json.dumps({"inputs": [{"name": n, "shape": [2, 3], "datatype": "FP32", "data": v.ravel().tolist()}
                                     for n, v in (("a", a), ("b", b))], "outputs": [{"name": "sum"}]}).encode()
    return [
        ("/models/mlp/invoke", x.tobytes(), {"Content-Type": "application/octet-stream",
                                             "Accept": "application/octet-stream"}, 200, mlp_out),
        ("/v2/models/mlp/infer", head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head))}, 200,
         mlp_out),
        ("/v2/models/two_in/infer", v2_json, {"Content-Type": "application/json"}, 200, two_sum),
        ("/models/cnn/invoke", npy.getvalue(), {"Content-Type": "application/x-npy", "Accept": "application/x-npy"},
         200, cnn_out),
        ("/v2/models/mlp/infer", b'{"inputs": [', {"Content-Type": "application/json"}, 400, None),
    ]


def _output(path: str, status: int, data: bytes, headers: http.client.HTTPMessage) -> np.ndarray | None:
    if status != 200:
        return None
    if path == "/models/mlp/invoke":
        return np.frombuffer(data, "<f4").reshape(1, 10)
    if path == "/models/cnn/invoke":
        return np.load(io.BytesIO(data), allow_pickle=False)
    header = headers.get("Inference-Header-Content-Length")
    doc = json.loads(data[: int(header)] if header else data)
    out = doc["outputs"][0]
    if header:
        return np.frombuffer(data[int(header):], "<f4").reshape(out["shape"])
    return np.asarray(out["data"], np.float32).reshape(out["shape"])


@pytest.mark.slow
def test_soak_keep_alive(serve, models: Models, tmp_path: Path) -> None:
    for name in ("mlp", "two_in", "cnn"):
        models.version_dir(tmp_path / "repo", name, 1)
    server = serve([str(tmp_path / "repo"), "--poll-interval", "0", "--no-access-log"])
    mix = _requests(models)
    counter = iter(range(REQUESTS))
    lock = threading.Lock()
    done = [0]
    failures: list[str] = []
    reconnects = [0]
    deadline = time.monotonic() + SECONDS
    warm = threading.Event()
    rss: dict[str, int] = {}

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.connect()
        sock = conn.sock
        try:
            while time.monotonic() < deadline and len(failures) < 10:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                path, body, headers, want_status, want = mix[i % len(mix)]
                try:
                    conn.request("POST", path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    failures.append(f"request {i} {path}: {exc!r}")
                    conn.close()
                    continue
                if conn.sock is not sock:
                    reconnects[0] += 1
                    sock = conn.sock
                if response.status != want_status:
                    failures.append(f"request {i} {path}: {response.status} {data[:200]!r}")
                elif want is not None:
                    got = _output(path, response.status, data, response.headers)
                    if got is None or got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-5):
                        failures.append(f"request {i} {path}: wrong output")
                with lock:
                    done[0] += 1
                    if done[0] == int(REQUESTS * WARMUP):
                        rss["warm"] = server.rss()
                        warm.set()
        finally:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(SECONDS + 60)
    elapsed = time.monotonic() - start
    rss["end"] = server.rss()
    assert not failures, f"{len(failures)} failures, e.g. {failures[:5]}"
    assert done[0] >= min(REQUESTS, 5000), f"only {done[0]} requests in {elapsed:.1f} s"
    if done[0] < REQUESTS:
        pytest.fail(f"time cap: {done[0]} of {REQUESTS} requests in {SECONDS:g} s (raise MLXPORT_SOAK_SECONDS)")
    assert reconnects[0] == 0, f"the server closed {reconnects[0]} keep-alive connections"
    assert warm.is_set()
    growth = (rss["end"] - rss["warm"]) / rss["warm"]
    print(f"soak: {done[0]} requests in {elapsed:.1f} s ({done[0] / elapsed:.0f}/s), RSS "
          f"{rss['warm'] / 2**20:.1f} -> {rss['end'] / 2**20:.1f} MiB ({growth:+.2%})")
    assert growth < 0.05, f"RSS grew {growth:.1%} after warm-up ({rss['warm']} -> {rss['end']} bytes)"
    assert server.get("/ping").status_code == 200
