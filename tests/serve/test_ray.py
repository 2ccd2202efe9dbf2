"""``mlxport serve --ray``: the server as a Ray Serve deployment on a local Ray cluster started by the test.

The slow test starts a real local cluster (bounded: 2 CPUs, 2 replicas, one Ray temp dir of its own), checks
answers against in-process ONNX Runtime and that two replicas answered, then stops it with SIGTERM and checks
that no process of that cluster is left. Every process it finds is matched by the cluster's own RAY_TMPDIR,
so Ray clusters of other sessions on the machine are never touched (``ray stop`` would stop them all).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from .conftest import ROOT, free_port, requests, v2_decode_binary, v2_tensor

READY_TIMEOUT_S = 180.0  # cold Ray start + 2 replicas measured 22-36 s on 2 busy cores
STOP_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def mlp_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository <repo>/mlp/1/model.onnx holding the 784-256-10 MLP exported by mlxport."""
    import mlx.core as mx

    import mlxport
    from tests.models.zoo import MLP

    mx.random.seed(0)
    mlp = MLP()
    mx.eval(mlp.parameters())
    repo = tmp_path_factory.mktemp("ray_repo")
    (repo / "mlp" / "1").mkdir(parents=True)
    mlxport.export(mlp, (mx.random.normal((2, 784)),), repo / "mlp" / "1" / "model.onnx",
                   dynamic_axes={"x": {0: "batch"}})
    return repo


@pytest.fixture
def restore_serve_loggers() -> Iterator[None]:
    """replica_app configures the mlxport.serve/access loggers as a server would: put them back afterwards."""
    import logging

    saved = [(log, log.handlers[:], log.level, log.propagate)
             for log in map(logging.getLogger, ("mlxport.serve", "mlxport.access"))]
    yield
    for log, handlers, level, propagate in saved:
        log.handlers[:], log.propagate = handlers, propagate
        log.setLevel(level)


# ------------------------------------------------------------------------------------------------ flags


@pytest.mark.parametrize(("args", "fragments"), [
    (["--replicas", "2"], ["--replicas", "--ray"]),
    (["--ray", "--replicas", "2", "--autoscale", "1:3"], ["--replicas", "--autoscale"]),
    (["--ray", "--ray-address", "127.0.0.1:6379", "--ray-num-cpus", "2"], ["--ray-address", "--ray-num-cpus"]),
    (["--ray", "--autoscale", "4:2"], ["--autoscale", "MIN:MAX", "4:2"]),
    (["--ray", "--autoscale", "1:x"], ["--autoscale", "1:x"]),
    (["--ray", "--replicas", "0"], ["--replicas", ">= 1"]),
    (["--ray", "--ray-num-cpus", "0"], ["--ray-num-cpus", "> 0"]),
])
def test_ray_flag_errors_name_the_flags(args: list[str], fragments: list[str], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from mlxport.cli import main

    assert main(["serve", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def test_ray_and_sagemaker_multi_model_conflict(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from mlxport.cli import main

    monkeypatch.setenv("SAGEMAKER_MULTI_MODEL", "true")
    assert main(["serve", "--ray"]) == 2
    err = capsys.readouterr().err
    assert "--ray" in err and "SAGEMAKER_MULTI_MODEL" in err, err


def test_missing_ray_names_the_extra(mlp_repo: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from mlxport.cli import main

    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    assert main(["serve", str(mlp_repo), "--ray"]) == 1
    err = capsys.readouterr().err
    assert 'pip install "mlxport[ray]"' in err and "Ray Serve" in err, err


@pytest.mark.usefixtures("restore_serve_loggers")
def test_bad_source_fails_before_ray_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray.serve")
    from mlxport.cli import main

    start = time.perf_counter()
    assert main(["serve", str(tmp_path / "missing.onnx"), "--ray"]) == 1
    err = capsys.readouterr().err
    assert "no such model path" in err and "missing.onnx" in err, err
    assert time.perf_counter() - start < 30  # no cluster was started (that alone takes 10 s or more)
    import ray

    assert not ray.is_initialized()


def test_parse_autoscale() -> None:
    from mlxport.cli.serve import parse_autoscale

    assert parse_autoscale("1:4") == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2.0}
    assert parse_autoscale("0:2:8") == {"min_replicas": 0, "max_replicas": 2, "target_ongoing_requests": 8.0}


# ------------------------------------------------------------------------------------------------ replica app


@pytest.mark.usefixtures("restore_serve_loggers")
def test_replica_lifespan_returns_only_when_models_are_warm(mlp_repo: Path) -> None:
    """What Ray runs on a replica: uvicorn's LifespanOn on the app; startup completes once models are loaded."""
    from uvicorn.config import Config
    from uvicorn.lifespan.on import LifespanOn

    from mlxport.serve.ray_serve import replica_app

    app = replica_app([str(mlp_repo)], {"threads": 1, "poll_interval_s": 0, "access_log": False})
    repo = app.state.repo
    assert not repo.ready()

    async def run() -> tuple[bool, bool]:
        lifespan = LifespanOn(Config(app, lifespan="on", log_config=None))
        await lifespan.startup()
        ready_at_startup = repo.ready() and not lifespan.should_exit
        await lifespan.shutdown()
        return ready_at_startup, lifespan.should_exit

    ready_at_startup, failed = asyncio.run(run())
    assert ready_at_startup, "the lifespan startup completed before the models were loaded and warmed"
    assert not failed
    assert app.state.executor._shutdown  # the compute pool is closed with the replica


# ------------------------------------------------------------------------------------------------ real Ray


def _cluster_pids(tmpdir: str) -> set[int]:
    """Processes of the Ray cluster whose RAY_TMPDIR is ``tmpdir`` (workers inherit it from the raylet)."""
    marker = f"RAY_TMPDIR={tmpdir}".encode()
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.add(int(entry.name))
        except OSError:  # gone, or not ours to read
            continue
    return pids


def _kill_pids(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_ray_serve_two_replicas(mlp_repo: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    ray_tmp = tempfile.mkdtemp(prefix="rmx", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    port = free_port()
    log_path = tmp_path / "ray-serve.log"
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-c", "from mlxport.cli import main; raise SystemExit(main())", "serve", str(mlp_repo),
           "--ray", "--replicas", "2", "--ray-num-cpus", "2", "--host", "127.0.0.1", "--port", str(port),
           "--threads", "1", "--compute-threads", "1", "--poll-interval", "0", "--no-access-log"]
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path),
                                start_new_session=True)

    def server_log() -> str:
        return log_path.read_text(errors="replace")[-6000:]

    try:
        # Ready: /ping 200 through the Ray proxy, and the driver reports the application running (all replicas).
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"mlxport serve --ray exited ({proc.returncode}):\n{server_log()}"
            assert time.monotonic() < deadline, f"not ready after {READY_TIMEOUT_S} s:\n{server_log()}"
            try:
                ping = requests.get(url + "/ping", timeout=5)
                if ping.status_code == 200 and f"{url}  models: mlp" in server_log():
                    assert ping.json() == {"status": "healthy"}
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        ready_s = time.perf_counter() - started

        session = ort.InferenceSession(str(mlp_repo / "mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        batches = [rng.standard_normal((int(rng.integers(1, 5)), 784)).astype(np.float32) for _ in range(60)]

        def call(i: int) -> np.ndarray:
            x = batches[i]
            if i % 2:
                r = requests.post(url + "/invocations", json={"inputs": x.tolist()}, timeout=30)
                assert r.status_code == 200, r.text[:300]
                return np.asarray(r.json()["predictions"], np.float32)
            r = requests.post(url + "/v2/models/mlp/infer", json={"id": str(i), "inputs": [v2_tensor("x", x)]},
                              timeout=30)
            assert r.status_code == 200, r.text[:300]
            assert r.json()["id"] == str(i)
            return v2_decode_binary(r)[session.get_outputs()[0].name]

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(call, range(len(batches))))
        for x, got in zip(batches, answers):
            (want,) = session.run(None, {"x": x})
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

        instances = set()
        for _ in range(30):
            meta = requests.get(url + "/v2", timeout=10)
            assert meta.status_code == 200, meta.text[:300]
            instances.add(meta.json()["instance"])
        assert len(instances) == 2, f"expected 2 replicas to answer, saw {sorted(instances)}"
        assert str(proc.pid) not in {i.rsplit(":", 1)[1] for i in instances}  # replicas, not the driver

        ours = _cluster_pids(ray_tmp)
        assert len(ours) >= 4, f"expected the cluster's processes (GCS, raylet, replicas...), found {ours}"
        stop_started = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(STOP_TIMEOUT_S)
        stop_s = time.perf_counter() - stop_started
        assert code == 0, f"exit {code} after SIGTERM:\n{server_log()}"
        deadline = time.monotonic() + 20
        while _cluster_pids(ray_tmp) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _cluster_pids(ray_tmp)
        assert not left, f"Ray processes left behind: {left}"
        print(json.dumps({"ready_s": round(ready_s, 1), "stop_s": round(stop_s, 1)}))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        _kill_pids(_cluster_pids(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)
