"""Edge bundles: metadata, checksums, and run.py in a Python that cannot import mlxport, against the runners."""

from __future__ import annotations

import json
import site
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import mlxport
from mlxport.package import PackageError, package
from mlxport.artifact import file_sha256
from mlxport.runners import load

from .helpers import onnx_reference

# A Python without mlxport: site-packages without their .pth files (no editable install), and a finder that
# refuses mlxport itself (CI installs it into site-packages) the way a machine without it would.
ISOLATED = """import sys, runpy
sys.path[0:0] = {paths!r}


class _NoMlxport:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "mlxport" or name.startswith("mlxport."):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _NoMlxport)
{body}
"""
RUN = "sys.argv = ['run.py', *sys.argv[1:]]; runpy.run_path('run.py', run_name='__main__')"


def isolated(cwd: Path, body: str, *args: str) -> subprocess.CompletedProcess:
    code = ISOLATED.format(paths=list(site.getsitepackages()), body=body)
    return subprocess.run([sys.executable, "-I", "-S", "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def run_bundle(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    return isolated(bundle, RUN, *args)


def test_mlxport_cannot_be_imported_where_run_py_runs(tmp_path: Path) -> None:
    res = isolated(tmp_path, "import mlxport")
    assert res.returncode == 1 and "No module named 'mlxport'" in res.stderr
    res = isolated(tmp_path, "import numpy, onnxruntime; print('ok')")
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_onnx_bundle(models: Path, tmp_path: Path) -> None:
    out = package(models / "mlp.onnx", "edge", tmp_path / "edge")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "SHA256SUMS", "metadata.json", "mlp.onnx",
                                                     "run.py"]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["model_file"] == "mlp.onnx" and meta["runtime"] == "onnxruntime" and meta["signature"] is None
    assert meta["inputs"] == [{"name": "x", "shape": [-1, 16], "dynamic_dims": {"0": "batch"}, "dtype": "float32",
                               "layout": "NC"}]
    assert [o["name"] for o in meta["outputs"]] == ["output"] and meta["quantization"]["quantized"] is False
    assert meta["provenance"]["validated"] is True and meta["provenance"]["sha256"] == file_sha256(models / "mlp.onnx")
    assert any("normalise" in n for n in meta["preprocessing"])
    sums = dict(reversed(line.split("  ")) for line in (out / "SHA256SUMS").read_text().splitlines())
    assert sums == {"mlp.onnx": file_sha256(out / "mlp.onnx"), "metadata.json": file_sha256(out / "metadata.json")}

    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = run_bundle(out, str(tmp_path / "x.npy"), "-o", str(tmp_path / "out.npz"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("output: float32[5, 4]")
    with np.load(tmp_path / "out.npz") as got:
        np.testing.assert_array_equal(got["output"], load(models / "mlp.onnx")(x)[0])
    res = run_bundle(out)  # zeros, dynamic dims at 1
    assert res.returncode == 0 and res.stdout.startswith("output: float32[1, 4]"), res.stderr


def test_two_inputs_by_name_and_position(models: Path, tmp_path: Path) -> None:
    out = package(models / "two.onnx", "edge", tmp_path / "edge", preprocessing="scale pixels to [0, 1]")
    assert "scale pixels to [0, 1]" in json.loads((out / "metadata.json").read_text())["preprocessing"]
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((3, 3)).astype(np.float32), rng.standard_normal((3, 3)).astype(np.float32)
    np.savez(tmp_path / "named.npz", b=b, a=a)
    np.savez(tmp_path / "positional.npz", a, b)
    want = onnx_reference(models / "two.onnx", {"a": a, "b": b})[0]
    for name in ("named.npz", "positional.npz"):
        res = run_bundle(out, str(tmp_path / name), "-o", str(tmp_path / f"out_{name}"))
        assert res.returncode == 0, res.stderr
        with np.load(tmp_path / f"out_{name}") as got:
            np.testing.assert_allclose(next(iter(got.values())), want, rtol=1e-6, atol=1e-6)
    np.save(tmp_path / "one.npy", a)
    res = run_bundle(out, str(tmp_path / "one.npy"))
    assert res.returncode == 1 and "holds one array, but the model has 2 inputs (a, b)" in res.stderr
    np.savez(tmp_path / "bad.npz", a=a, c=b)
    res = run_bundle(out, str(tmp_path / "bad.npz"))
    assert res.returncode == 1 and "missing ['b']" in res.stderr and "unknown ['c']" in res.stderr
    np.savez(tmp_path / "shape.npz", a=a[:, :2], b=b)
    res = run_bundle(out, str(tmp_path / "shape.npz"))
    assert res.returncode == 1 and "input 'a' must have the shape [-1, 3]" in res.stderr


def test_checksums_are_checked_before_running(models: Path, tmp_path: Path) -> None:
    out = package(models / "wide.onnx", "edge", tmp_path / "edge", layout="NC")
    assert "wide.onnx.data  " not in (out / "SHA256SUMS").read_text()  # hash first, then the name
    assert "  wide.onnx.data" in (out / "SHA256SUMS").read_text()
    assert run_bundle(out).returncode == 0
    data = bytearray((out / "wide.onnx.data").read_bytes())
    data[100] ^= 0xFF
    (out / "wide.onnx.data").write_bytes(bytes(data))
    res = run_bundle(out)
    assert res.returncode == 1 and "wide.onnx.data does not match its sha256" in res.stderr
    assert "output:" not in res.stdout
    assert run_bundle(out, "--skip-verify").returncode == 0
    (out / "SHA256SUMS").unlink()
    res = run_bundle(out)
    assert res.returncode == 1 and "SHA256SUMS is missing" in res.stderr


def test_edge_refuses_other_formats_and_bad_layout(models: Path, tmp_path: Path) -> None:
    other = tmp_path / "m.pt2"
    other.write_bytes(b"x")
    with pytest.raises(PackageError, match=r"--target edge takes \.onnx \(ONNX Runtime\); \.tflite \(LiteRT\)"):
        package(other, "edge", tmp_path / "out")
    with pytest.raises(PackageError, match="--layout must be distinct upper-case axis letters"):
        package(models / "mlp.onnx", "edge", tmp_path / "out", layout="nhwc")
    assert not (tmp_path / "out").exists()


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # 48 output channels: over the 1,024 weights TFLite needs before it quantizes a tensor.
        self.conv = nn.Conv2d(3, 48, 3)
        self.fc = nn.Linear(48, 4)

    def __call__(self, x: mx.array) -> mx.array:
        return self.fc(nn.relu(self.conv(x)).mean(axis=(1, 2)))


@pytest.fixture(scope="module")
def cnn_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("ai_edge_litert")
    from mlxport.exporters.tflite import check_stack

    try:
        check_stack()
    except Exception as exc:  # noqa: BLE001 - the converter stack is optional
        pytest.skip(f"the TFLite converter is not installed: {exc}")
    path = tmp_path_factory.mktemp("tflite") / "cnn.tflite"
    mx.random.seed(0)
    model = TinyCNN()
    mx.eval(model.parameters())
    mlxport.export(model, (mx.zeros((2, 8, 8, 3)),), path, dynamic_axes={"x": {0: "batch"}},
                   quantize="dynamic_int8")
    return path


@pytest.mark.slow
def test_tflite_bundle_runs_with_litert_only(cnn_tflite: Path, tmp_path: Path) -> None:
    out = package(cnn_tflite, "edge", tmp_path / "edge")
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["runtime"] == "ai_edge_litert" and meta["signature"] == "serving_default"
    assert meta["inputs"][0]["layout"] == "NHWC" and meta["inputs"][0]["shape"] == [-1, 8, 8, 3]
    quant = meta["quantization"]
    assert quant["quantized"] is True and quant["variant"] == "dynamic_int8" and "int8" in quant["tensor_dtypes"]
    res = isolated(out, "import ai_edge_litert.interpreter; import mlxport")
    assert "No module named 'mlxport'" in res.stderr  # LiteRT imports there, mlxport does not
    x = np.random.default_rng(2).standard_normal((3, 8, 8, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = run_bundle(out, str(tmp_path / "x.npy"), "-o", str(tmp_path / "out.npz"))
    assert res.returncode == 0, res.stderr
    with np.load(tmp_path / "out.npz") as got:
        np.testing.assert_allclose(got["output"], load(cnn_tflite)(x)[0], rtol=1e-6, atol=1e-6)
