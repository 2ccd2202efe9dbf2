"""Server lifecycle: health before and after loading, the memory limit, hot version swap, SIGTERM drain."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

requests = pytest.importorskip("requests")

from .conftest import (  # noqa: E402
    Models, Server, assert_error, metric_samples, metric_value, v2_decode_binary, v2_tensor)


def test_ping_and_ready_are_503_until_models_are_loaded(serve, models: Models, tmp_path: Path) -> None:
    # Three versions of the slow model, each warmed up with two full-cost calls: loading takes a while.
    for v in (1, 2, 3):
        models.version_dir(tmp_path / "repo", "slow", v)
    server = serve([str(tmp_path / "repo"), "--version-policy", "all", "--threads", "1", "--poll-interval", "0"],
                   ready=False)
    start = time.perf_counter()
    first = server.get("/ping")
    assert time.perf_counter() - start < 2.0  # SageMaker: /ping answers within 2 s, loaded or not
    assert first.status_code == 503, "the very first /ping must not claim health before the models are warm"
    assert first.json()["status"] == "loading"
    assert server.get("/v2/health/ready").status_code == 503
    assert server.get("/v2/health/live").status_code == 200
    r = server.post("/models/slow/invoke", json={"inputs": [[1.0] * 4]})
    if r.status_code == 503:  # still loading: a retryable answer, never a 500 or a hang
        assert_error(r, 503, "loading")
        assert int(r.headers["Retry-After"]) >= 1
    else:
        assert r.status_code == 200, r.text[:300]
    server.wait_ready()
    assert server.get("/ping").json() == {"status": "healthy"}
    for v in ("1", "2", "3"):
        assert server.get(f"/v2/models/slow/versions/{v}/ready").status_code == 200
    assert server.post("/models/slow/invoke", json={"inputs": [[1.0] * 4]}).json()["predictions"] == [[1.0] * 4]


def test_memory_limit_refuses_models(serve, models: Models, tmp_path: Path) -> None:
    models.version_dir(tmp_path / "repo", "mlp", 1)
    loadable = tmp_path / "loadable"
    loadable.mkdir()
    (loadable / "other.onnx").write_bytes(models.files["mlp"].read_bytes())
    server = serve([str(tmp_path / "repo"), "--memory-limit", "1MiB", "--load-root", str(loadable),
                    "--poll-interval", "0"], ready=False)

    def refused() -> bool:
        rows = server.post("/v2/repository/index").json()
        return any(r["name"] == "mlp" and r["state"] == "UNAVAILABLE" for r in rows)

    server.wait_for(refused, 30, "mlp to be refused")
    (row,) = [r for r in server.post("/v2/repository/index").json() if r["name"] == "mlp"]
    assert "--memory-limit" in row["reason"] and "MiB" in row["reason"], row
    ping = server.get("/ping")
    assert ping.status_code == 503
    assert any("--memory-limit" in m["reason"] for m in ping.json()["models"]), ping.json()
    time.sleep(0.3)  # it stays refused: no retry loop that flips /ping to healthy
    assert server.get("/ping").status_code == 503
    assert server.get("/v2/health/ready").status_code == 503
    assert_error(server.post("/models/mlp/invoke", json={"inputs": [[0.0] * 784]}), 503, "--memory-limit")
    r = server.post("/models", json={"model_name": "other", "url": str(loadable / "other.onnx")})
    assert_error(r, 507, "--memory-limit")
    assert "other" not in {m["modelName"] for m in server.get("/models").json()["models"]}
    r = server.post("/v2/repository/models/mlp/load")
    assert r.status_code in (400, 507)
    assert_error(r, r.status_code, "--memory-limit")
    assert server.get("/v2/health/live").status_code == 200


def test_sagemaker_multi_model_starts_empty(serve, models: Models, tmp_path: Path) -> None:
    (tmp_path / "mm").mkdir()
    (tmp_path / "mm" / "m.onnx").write_bytes(models.files["mlp"].read_bytes())
    server = serve(["--load-root", str(tmp_path / "mm"), "--poll-interval", "0"],
                   env={"SAGEMAKER_MULTI_MODEL": "true", "SM_MODEL_DIR": str(tmp_path / "absent")})
    assert server.get("/ping").status_code == 200
    assert server.get("/models").json() == {"models": []}
    assert server.post("/models", json={"model_name": "m", "url": str(tmp_path / "mm" / "m.onnx")}).status_code == 200
    r = server.post("/invocations", json={"inputs": [[0.0] * 784]})
    assert r.status_code == 200 and len(r.json()["predictions"][0]) == 10


@pytest.mark.slow
def test_version_swap_under_load(serve, models: Models, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    models.version_dir(repo, "scale", 1, "scale1")
    poll = 0.3
    server = serve([str(repo), "--poll-interval", str(poll), "--threads", "1"])
    x = np.ones((2, 4), np.float32)
    body = json.dumps({"inputs": [v2_tensor("x", x)]})
    records: list[tuple[float, str, int, str | None, object]] = []  # (start, kind, status, version, output)
    stop = threading.Event()
    max_seconds, max_requests = 25.0, 10000  # per client

    def client() -> None:
        session = requests.Session()
        deadline = time.monotonic() + max_seconds
        i = 0
        while not stop.is_set() and time.monotonic() < deadline and i < max_requests:
            t = time.monotonic()
            try:
                if i % 10 == 9:
                    r = session.get(server.url + "/ping", timeout=10)
                    records.append((t, "ping", r.status_code, None, None))
                else:
                    r = session.post(server.url + "/v2/models/scale/infer", data=body, timeout=10)
                    ok = r.status_code == 200
                    records.append((t, "infer", r.status_code, r.json()["model_version"] if ok else r.text[:200],
                                    v2_decode_binary(r)["output"].tolist() if ok else None))
            except requests.RequestException as exc:  # a dropped connection is a failed request too
                records.append((t, "infer", -1, repr(exc), None))
            i += 1

    # Two clients, so requests are in flight on the old version at the moment it is swapped out.
    threads = [threading.Thread(target=client, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        # Write version 2 beside the repository, then rename it into place (one atomic step).
        staging = tmp_path / "staging"
        models.version_dir(staging, "scale", 2, "scale2")
        os.rename(staging / "scale" / "2", repo / "scale" / "2")
        swapped_at = time.monotonic()
        deadline = swapped_at + 10 * poll + 10
        while not any(r[3] == "2" and r[0] > swapped_at for r in records):
            assert time.monotonic() < deadline, "version 2 never became the default"
            assert all(t.is_alive() for t in threads), "a client stopped early"
            time.sleep(0.05)
        time.sleep(0.5)
        rollback = server.post("/v2/repository/models/scale/rollback")
        assert rollback.status_code == 200 and rollback.json()["version"] == "1", rollback.text[:300]
        rolled_at = time.monotonic()
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    failures = [r for r in records if r[2] != 200]
    assert not failures, f"{len(failures)} of {len(records)} requests failed, e.g. {failures[:3]}"
    infers = [r for r in records if r[1] == "infer"]
    pings = [r for r in records if r[1] == "ping"]
    assert len(infers) > 50 and len(pings) > 5
    for start, _, _, version, output in infers:
        v = float(version)
        assert output == (x * v + v).tolist(), (version, output)  # every answer matches the version that ran it
    versions = [r[3] for r in infers]
    assert versions[0] == "1" and "2" in versions
    first_v2 = next(r[0] for r in infers if r[3] == "2")
    # Two clients' start times only roughly order the server's work: allow 0.2 s around each flip.
    assert all(r[3] == "2" for r in infers if first_v2 + 0.2 < r[0] < rolled_at - 0.2), "the default flipped back"
    after = [r[3] for r in infers if r[0] > rolled_at]
    assert after and set(after) == {"1"}, "rollback did not make version 1 the default"
    assert server.get("/v2/models/scale").json()["parameters"]["version"] == "1"
    # The poller leaves a rolled-back model alone.
    time.sleep(3 * poll)
    assert server.post("/v2/models/scale/infer", data=body).json()["model_version"] == "1"


def _send(server: Server, payload: bytes, sent: threading.Event, results: list, i: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("POST", "/models/slow/invoke", body=payload, headers={"Content-Type": "application/json"})
        sent.set()
        response = conn.getresponse()
        results[i] = (response.status, response.read(), time.monotonic())
    except OSError as exc:
        sent.set()
        results[i] = (-1, repr(exc).encode(), time.monotonic())
    finally:
        conn.close()


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests(serve, models: Models, tmp_path: Path) -> None:
    models.version_dir(tmp_path / "repo", "slow", 1)
    grace = 20.0
    server = serve([str(tmp_path / "repo"), "--max-batch-size", "1", "--threads", "1", "--poll-interval", "0",
                    "--grace-period", str(grace)])
    n = 4
    results: list = [None] * n
    events = [threading.Event() for _ in range(n)]
    threads = [threading.Thread(target=_send, args=(server, json.dumps({"inputs": [[float(i)] * 4]}).encode(),
                                                    events[i], results, i), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    assert all(e.wait(10) for e in events)

    def queued() -> float:
        return metric_value(metric_samples(server), "mlxport_queue_depth", model="slow")

    # One runs, the others wait in the queue: all n are in flight inside the server.
    server.wait_for(lambda: queued() >= n - 1, 10, f"{n - 1} queued requests")
    sigterm_at = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert server.proc.poll() is None, "the server exited before finishing its requests"
    with pytest.raises(OSError):  # the listening socket is closed: new connections are refused
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    for t in threads:
        t.join(grace + 10)
    for i, result in enumerate(results):
        assert result is not None and result[0] == 200, result
        assert json.loads(result[1])["predictions"] == [[float(i)] * 4]
    assert max(r[2] for r in results) > sigterm_at + 0.3, "no request was still running at SIGTERM"
    rc = server.proc.wait(grace + 10)
    assert rc == 0, server.log()[-3000:]
    assert time.monotonic() - sigterm_at < grace
