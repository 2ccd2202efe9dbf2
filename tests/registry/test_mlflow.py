"""The MLflow backend against a real tracking server (sqlite backend) started here, and `mlflow models serve`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from mlxport.cli import main
from mlxport.registry import NotFoundError, RegistryError, resolve
from mlxport.artifact import file_sha256
from mlxport.runners import load

pytestmark = pytest.mark.slow
mlflow = pytest.importorskip("mlflow", reason="the MLflow backend is the optional extra mlxport[mlflow]")

START_TIMEOUT_S = 240  # the sqlite migrations and MLflow's imports take ~30 s on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group (the server and its workers), SIGKILL what is left."""
    for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):  # the MLflow server is slow to stop
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # workers that outlived the leader
    except ProcessLookupError:
        pass


def _mlflow_cmd() -> list[str]:
    return [sys.executable, "-m", "mlflow"]


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tracking server on 127.0.0.1 with a sqlite backend and a file artifact root; killed at the end."""
    folder = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = folder / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*_mlflow_cmd(), "server", "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
                                 "--default-artifact-root", f"file:{folder}/artifacts", "-h", "127.0.0.1",
                                 "-p", str(port), "--workers", "1"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


@pytest.fixture
def registry(tracking: str, tmp_path: Path) -> Any:
    from mlxport.registry.mlflow_backend import MlflowRegistry

    return MlflowRegistry(tracking, cache_dir=tmp_path / "cache")


def test_push_promote_rollback_list(registry: Any, tracking: str, artifact: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # a client that fell back to MLflow's default store would create mlflow.db here
    reg = registry
    first = reg.push(artifact, "digits")
    second = reg.push(artifact, "digits", description="retrained")
    assert (first.version, second.version) == (1, 2) and (first.parent, second.parent) == (None, 1)
    tags = second.lineage["tags"]
    side = json.loads(Path(str(artifact) + ".mlxport.json").read_text())
    assert tags["mlxport.sha256"] == file_sha256(artifact) == side["sha256"]
    assert tags["mlxport.mlx_version"] == side["mlx_version"] and tags["mlxport.source"] == "Sequential"
    assert second.verdict.startswith("passed (max abs") and second.artifact == "digits.onnx"
    assert second.lineage["description"] == "retrained" and second.size > 0
    assert reg.promote("digits", 1).previous is None
    assert reg.promote("digits", 2).previous == 1
    assert [(v.version, v.aliases) for v in reg.versions("digits")] == [(1, []), (2, ["production"])]
    change = reg.rollback("digits")
    assert (change.version, change.previous) == (1, 2)
    assert reg.show("digits@production").version == 1 and reg.show("models:/digits/2").version == 2
    assert reg.show("digits").version == 2
    with pytest.raises(RegistryError, match="no previous version"):
        reg.rollback("digits")
    with pytest.raises(NotFoundError):
        reg.promote("digits", 9)
    with pytest.raises(NotFoundError):
        reg.show("digits@staging")
    with pytest.raises(NotFoundError, match="no alias 'staging'"):
        reg.rollback("digits", alias="staging")
    with pytest.raises(NotFoundError):
        reg.versions("nosuch")
    client = mlflow.MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    model = client.get_registered_model("digits")
    assert model.aliases == {"production": "1"}
    history = json.loads(model.tags["mlxport.history"])
    assert [(e["action"], e["version"], e["previous"]) for e in history] == [
        ("promote", 1, None), ("promote", 2, 1), ("rollback", 1, 2)]
    # Pushing left MLflow's global tracking URI as it was (unset here).
    assert "MLFLOW_TRACKING_URI" not in os.environ and not mlflow.tracking._tracking_service.utils._tracking_uri
    # The logged model is a pyfunc that runs the mlxport runner.
    mlflow.set_tracking_uri(tracking)
    try:
        pyfunc = mlflow.pyfunc.load_model("models:/digits/2")
    finally:
        mlflow.set_tracking_uri(None)
    x = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    expected = load(artifact)(x)[0]
    np.testing.assert_allclose(pyfunc.predict(x), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(pyfunc.predict({"x": x}), expected, rtol=1e-6, atol=1e-6)
    assert [i.name for i in pyfunc.metadata.get_input_schema().inputs] == ["x"]
    assert pyfunc.metadata.get_input_schema().inputs[0].shape == (-1, 16)
    assert not list(tmp_path.glob("mlflow.db")) and not list(tmp_path.glob("mlruns"))


def test_resolve_downloads_into_the_cache_once(registry: Any, tracking: str, artifact: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    registry.push(artifact, "resolved")
    registry.promote("resolved", 1)
    cache = tmp_path / "resolve-cache"
    path = resolve("models:/resolved@production", tracking_uri=tracking, cache_dir=cache)
    assert path.name == "resolved.onnx" and cache in path.parents
    assert file_sha256(path) == file_sha256(artifact) and Path(str(path) + ".mlxport.json").exists()
    x = np.ones((2, 16), np.float32)
    np.testing.assert_array_equal(load(path)(x)[0], load(artifact)(x)[0])
    stamp = path.stat().st_mtime_ns
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    assert resolve("models:/resolved/1", cache_dir=cache) == path and path.stat().st_mtime_ns == stamp
    path.write_bytes(b"damaged")  # a damaged cache entry is downloaded again
    assert file_sha256(resolve("models:/resolved/1", cache_dir=cache)) == file_sha256(artifact)
    assert not [p for p in path.parent.parent.iterdir() if p.name.startswith(".")]
    with pytest.raises(NotFoundError):
        resolve("models:/resolved@staging", cache_dir=cache)
    assert not list(tmp_path.glob("mlflow.db")) and not list(tmp_path.glob("mlruns"))


def test_mlflow_models_serve_runs_the_logged_model(registry: Any, tracking: str, artifact: Path,
                                                   tmp_path: Path) -> None:
    registry.push(artifact, "served")
    registry.promote("served", 1)
    port = _free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking}
    with open(log, "wb") as out:
        proc = subprocess.Popen([*_mlflow_cmd(), "models", "serve", "-m", "models:/served@production",
                                 "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/ping", proc, log)
        x = np.random.default_rng(2).normal(size=(4, 16)).astype(np.float32)
        expected = load(artifact)(x)[0]
        for body in ({"inputs": {"x": x.tolist()}}, {"inputs": x.tolist()}):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", json.dumps(body).encode(),
                                             {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as resp:
                got = np.array(json.loads(resp.read())["predictions"], dtype=np.float32)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        bad = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                     json.dumps({"inputs": {"x": [[1.0, 2.0]]}}).encode(),
                                     {"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(bad, timeout=30)
        assert info.value.code == 400  # the signature from the metadata is enforced: x is [-1, 16]
    finally:
        _stop(proc)


def test_cli_with_the_mlflow_backend(tracking: str, artifact: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLXPORT_CACHE_DIR", str(tmp_path / "cache"))
    common = ["registry", "--backend", "mlflow", "--tracking-uri", tracking]
    assert main([*common, "push", str(artifact), "--name", "clidigits"]) == 0
    assert "as clidigits version 1" in capsys.readouterr().out
    assert main([*common, "promote", "clidigits", "1", "--alias", "staging"]) == 0
    assert "clidigits@staging -> version 1" in capsys.readouterr().out
    assert main([*common, "list", "clidigits"]) == 0
    row = capsys.readouterr().out.splitlines()[2].split()
    assert row[:2] == ["1", "staging"] and "passed" in row
    # models:/ implies the MLflow backend
    assert main(["registry", "--tracking-uri", tracking, "show", "models:/clidigits@staging", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["location"] == "models:/clidigits/1" and shown["aliases"] == ["staging"]
