"""Fixtures of the server tests: small exported models, a model repository, and real ``mlxport serve`` processes.

Every server is a subprocess bound to 127.0.0.1 on a free port; the fixtures always stop it (SIGTERM, then
SIGKILL) even when a test fails. Models are exported once per session with mlxport (MLP 784-256-10, a
two-input model, a fixed-shape model, an NHWC CNN, a versioned "scale" model) or written with onnx.helper
where the test needs a model mlxport would never produce (one that fails at run time, one that is slow).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

try:  # the HTTP client of these tests (other test modules import it from here)
    import requests
except ImportError:  # without it the server tests skip (see _requests); the unit tests here still run
    requests = None  # type: ignore[assignment]


ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0
# Per-call compute time the slow model is calibrated to (one ONNX Runtime thread).
SLOW_CALL_S = 0.25
SEED = 0


# ------------------------------------------------------------------------------------------------ models


def _export_models(folder: Path) -> dict[str, Path]:
    """Export the MLX models with mlxport; returns name -> .onnx path (outside any repository)."""
    import mlx.core as mx
    import mlx.nn as nn

    import mlxport
    from tests.models.zoo import CNN, MLP

    mx.random.seed(SEED)
    out: dict[str, Path] = {}

    mlp = MLP()
    mx.eval(mlp.parameters())
    out["mlp"] = folder / "mlp.onnx"
    mlxport.export(mlp, (mx.random.normal((2, 784)),), out["mlp"], dynamic_axes={"x": {0: "batch"}})

    cnn = CNN()
    cnn.eval()
    mx.eval(cnn.parameters())
    out["cnn"] = folder / "cnn.onnx"
    mlxport.export(cnn, (mx.random.normal((2, 16, 16, 3)),), out["cnn"], dynamic_axes={"x": {0: "batch"}})

    def two_in(a: mx.array, b: mx.array) -> tuple[mx.array, mx.array]:
        return a + 2 * b, a * b

    out["two_in"] = folder / "two_in.onnx"
    mlxport.export(two_in, (mx.random.normal((2, 3)), mx.random.normal((2, 3))), out["two_in"],
                   dynamic_axes={"a": {0: "batch"}, "b": {0: "batch"}}, output_names=["sum", "prod"])

    # No dynamic axes: every dimension is fixed, so the server must never merge its requests.
    fixed = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    mx.eval(fixed.parameters())
    out["fixed"] = folder / "fixed.onnx"
    mlxport.export(fixed, (mx.random.normal((2, 16)),), out["fixed"])

    # Version N of "scale" answers x * N + N, so a response tells which version ran.
    for version in (1, 2, 3):
        out[f"scale{version}"] = folder / f"scale{version}.onnx"
        mlxport.export(_scale_fn(float(version)), (mx.random.normal((2, 4)),), out[f"scale{version}"],
                       dynamic_axes={"x": {0: "batch"}})
    return out


def _scale_fn(v: float) -> Callable[[Any], Any]:
    def scale(x: Any) -> Any:
        return x * v + v

    return scale


def _save_onnx(graph: Any, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def failing_model(path: Path) -> Path:
    """y = table[idx]: fine for indices 0..3 (the warm-up feeds zeros), an ONNX Runtime error for others."""
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.array([10.0, 20.0, 30.0, 40.0], np.float32), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["y"], axis=0)], "failing",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])], [table])
    return _save_onnx(graph, path)


def slow_model(path: Path, layers: int, rows: int = 512, width: int = 1024) -> Path:
    """y = x + 0 * mean(tanh chain): a fixed cost per call (``layers`` matmuls on rows x width), any batch size.

    The heavy chain starts from the input so ONNX Runtime cannot fold it into a constant.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(SEED)
    w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([rows, width], np.int64), "shape"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
             helper.make_node("Expand", ["m", "shape"], ["h0"])]
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"p{i}"]))
        nodes.append(helper.make_node("Tanh", [f"p{i}"], [f"h{i + 1}"]))
    nodes += [helper.make_node("ReduceMean", [f"h{layers}"], ["r"], keepdims=0),
              helper.make_node("Mul", ["r", "zero"], ["r0"]),
              helper.make_node("Add", ["x", "r0"], ["y"])]
    graph = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], inits)
    return _save_onnx(graph, path)


def _time_call(path: Path) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.ones((1, 4), np.float32)
    session.run(None, {"x": x})
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        session.run(None, {"x": x})
        best = min(best, time.perf_counter() - start)
    return best


@dataclass
class Models:
    """Exported model files and the session's repository."""

    files: dict[str, Path]
    repo: Path
    slow_s: float  # measured seconds per call of files["slow"] (one thread)

    def version_dir(self, root: Path, name: str, version: int | str, source: str | None = None) -> Path:
        """Copy ``files[source or name]`` (and its sidecar) to ``root/name/version/model.onnx``."""
        folder = root / name / str(version)
        folder.mkdir(parents=True, exist_ok=True)
        _copy_artifact(self.files[source or name], folder / "model.onnx")
        return folder

    def session(self, name: str) -> Any:
        """An in-process ONNX Runtime session on a model file: the reference the server is compared with."""
        import onnxruntime as ort

        return ort.InferenceSession(str(self.files[name]), providers=["CPUExecutionProvider"])


def _copy_artifact(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    sidecar = Path(str(src) + ".mlxport.json")
    if sidecar.exists():
        shutil.copyfile(sidecar, Path(str(dst) + ".mlxport.json"))


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    """Export the models once; the repository holds mlp, cnn, two_in, fixed, failing and scale versions 1, 2."""
    base = tmp_path_factory.mktemp("serve_models")
    files = _export_models(base)
    files["failing"] = failing_model(base / "failing.onnx")
    probe = slow_model(base / "probe.onnx", layers=4)
    per_layer = _time_call(probe) / 4
    layers = max(2, min(400, round(SLOW_CALL_S / max(per_layer, 1e-5))))
    files["slow"] = slow_model(base / "slow.onnx", layers=layers)
    slow_s = _time_call(files["slow"])
    m = Models(files, base / "repo", slow_s)
    for name in ("mlp", "cnn", "two_in", "fixed", "failing"):
        m.version_dir(m.repo, name, 1)
    m.version_dir(m.repo, "scale", 1, "scale1")
    m.version_dir(m.repo, "scale", 2, "scale2")
    return m


# ------------------------------------------------------------------------------------------------ servers


def _requests() -> Any:
    """The HTTP client (these tests skip, not fail, where the serve extra is not installed)."""
    return pytest.importorskip("requests")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running ``mlxport serve`` subprocess."""

    proc: subprocess.Popen
    port: int
    log_path: Path
    token: str | None = None
    started: float = field(default_factory=time.monotonic)
    loadable: Path | None = None  # a folder under --load-root, where tests put files for POST /models

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, **kw: Any) -> Any:
        kw.setdefault("timeout", 30)
        return _requests().get(self.url + path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        kw.setdefault("timeout", 30)
        return _requests().post(self.url + path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        kw.setdefault("timeout", 30)
        return _requests().delete(self.url + path, **kw)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
        """Poll ``predicate`` every 50 ms; fail with the server log when it stays false."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc.poll() is not None:
                pytest.fail(f"server exited ({self.proc.returncode}) waiting for {what}; log:\n{self.log()[-4000:]}")
            time.sleep(0.05)
        pytest.fail(f"timed out after {timeout} s waiting for {what}; log:\n{self.log()[-4000:]}")

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        self.wait_for(lambda: self.get("/v2/health/ready").status_code == 200, timeout, "/v2/health/ready 200")

    def rss(self) -> int:
        """Resident memory of the server process in bytes (VmRSS)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line in /proc/<pid>/status")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def start_server(args: list[str], log_dir: Path, *, env: dict[str, str] | None = None, ready: bool = True,
                 token: str | None = None) -> Server:
    """Start ``mlxport serve ARGS`` on a free loopback port and wait for /v2/health/live (and ready)."""
    requests = _requests()
    for module in ("starlette", "uvicorn", "prometheus_client"):  # the server's own dependencies
        pytest.importorskip(module)
    log_dir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), full_env.get("PYTHONPATH")]))
    for attempt in range(3):
        port = free_port()
        log_path = log_dir / f"server-{port}.log"
        cmd = [sys.executable, "-c", "from mlxport.cli import main; raise SystemExit(main())", "serve", *args,
               "--host", "127.0.0.1", "--port", str(port)]
        if token:
            cmd += ["--token", token]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=str(log_dir))
        server = Server(proc, port, log_path, token)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                if requests.get(server.url + "/v2/health/live", timeout=2).status_code == 200:
                    if ready:
                        try:
                            server.wait_ready()
                        except BaseException:
                            server.stop()
                            raise
                    return server
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        server.stop()
        text = server.log()
        if "address already in use" in text.lower() and attempt < 2:
            continue
        pytest.fail(f"mlxport serve {' '.join(args)} did not come up (exit {proc.returncode}); log:\n{text[-4000:]}")
    raise AssertionError("unreachable")


class ServerPool:
    """Starts servers and always stops them (used by function- and session-scoped fixtures)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.servers: list[Server] = []

    def start(self, args: list[str], **kw: Any) -> Server:
        server = start_server(args, self.log_dir, **kw)
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            try:
                server.stop()
            except Exception:  # noqa: BLE001 - keep stopping the others; a leaked process is the worse outcome
                server.proc.kill()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start a server for one test: ``serve(["PATH", "--flag", ...], ready=True, token=None, env=None)``."""
    pool = ServerPool(tmp_path / "logs")
    try:
        yield pool.start
    finally:
        pool.close()


@pytest.fixture(scope="session")
def shared_server(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server over the session's repository (every version of "scale" loaded), shared by read-mostly tests.

    Tests that change its state (load, unload, POST/DELETE /models) put it back as they found it.
    """
    loadable = tmp_path_factory.mktemp("loadable")
    _copy_artifact(models.files["mlp"], loadable / "extra.onnx")
    pool = ServerPool(tmp_path_factory.mktemp("shared_logs"))
    try:
        server = pool.start([str(models.repo), "--version-policy", "all", "--load-root", str(loadable),
                             "--threads", "1"])
        server.loadable = loadable
        yield server
    finally:
        pool.close()


# ------------------------------------------------------------------------------------------------ helpers


def assert_error(response: Any, status: int, *fragments: str) -> dict[str, Any]:
    """The response has ``status``, a JSON body ``{"error": str}`` naming ``fragments``, and no traceback."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text[:500]}"
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    assert "Traceback" not in response.text and 'File "' not in response.text, response.text
    for fragment in fragments:
        assert fragment.lower() in body["error"].lower(), f"{fragment!r} not in {body['error']!r}"
    return body


def v2_tensor(name: str, arr: np.ndarray) -> dict[str, Any]:
    """One v2 JSON input tensor."""
    from mlxport.serve.codec import v2_datatype

    return {"name": name, "shape": list(arr.shape), "datatype": v2_datatype(arr.dtype.name),
            "data": arr.ravel().tolist()}


def v2_binary_body(inputs: dict[str, np.ndarray], extra: dict[str, Any] | None = None) -> tuple[bytes, dict[str, str]]:
    """A v2 infer body with every input as binary data; returns (body, headers)."""
    from mlxport.serve.codec import v2_datatype

    items = [{"name": n, "shape": list(a.shape), "datatype": v2_datatype(a.dtype.name),
              "parameters": {"binary_data_size": a.nbytes}} for n, a in inputs.items()]
    head = json.dumps({"inputs": items, **(extra or {})}).encode()
    body = head + b"".join(np.ascontiguousarray(a).tobytes() for a in inputs.values())
    return body, {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}


def v2_decode_binary(response: Any) -> dict[str, np.ndarray]:
    """Outputs of a v2 response (JSON data or binary extension) as arrays by name."""
    from mlxport.serve.codec import V2_DATATYPES

    header = response.headers.get("inference-header-content-length")
    raw = response.content
    head = raw[: int(header)] if header else raw
    doc = json.loads(head)
    offset = int(header) if header else 0
    out = {}
    for item in doc["outputs"]:
        dtype = np.dtype(V2_DATATYPES[item["datatype"]])
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is None:
            out[item["name"]] = np.asarray(item["data"], dtype=dtype).reshape(item["shape"])
        else:
            out[item["name"]] = np.frombuffer(raw[offset:offset + size], dtype=dtype).reshape(item["shape"])
            offset += size
    assert offset == (len(raw) if header else offset), "binary section not consumed exactly"
    return out


def metric_samples(server: Server) -> list[Any]:
    """Every sample of /metrics, parsed with prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    response = server.get("/metrics")
    assert response.status_code == 200, response.text[:300]
    return [s for f in text_string_to_metric_families(response.text) for s in f.samples]


def metric_value(samples: list[Any], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels`` (0 when none)."""
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))
