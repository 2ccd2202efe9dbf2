"""The ONNX driver: files, weights, opsets, dtypes and the errors users see."""

from __future__ import annotations

import re

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import onnx
import pytest

import mlxport
from mlxport.formats import suffix_list
from mlxport.exporters.onnx import DEFAULT_OPSET, MIN_OPSET
from mlxport.errors import ArtifactError, UnsupportedArgumentError, UnsupportedPrimitiveError


def _mlp(dtype: mx.Dtype = mx.float32) -> nn.Module:
    mx.random.seed(0)
    m = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    m.set_dtype(dtype)
    mx.eval(m.parameters())
    return m


def test_mlp_is_three_nodes_and_runs_at_other_batch(tmp_path: Path) -> None:
    m = _mlp()
    path = tmp_path / "mlp.onnx"
    report = mlxport.export(m, (mx.random.normal((1, 16)),), path, dynamic_axes={"x": {0: "batch"}})
    assert report.ok and report.validated and len(report.runs) == 2
    proto = onnx.load(path)
    assert [n.op_type for n in proto.graph.node] == ["Gemm", "Relu", "Gemm"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    runner = mlxport.load(path)
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    (y,) = runner(x)
    np.testing.assert_allclose(y, np.array(m(mx.array(x))), rtol=1e-5, atol=1e-6)
    assert "max abs" in str(report)


@pytest.mark.parametrize("opset", range(MIN_OPSET, DEFAULT_OPSET + 1))
def test_every_supported_opset(tmp_path: Path, opset: int) -> None:
    report = mlxport.export(_mlp(), (mx.zeros((2, 16)),), tmp_path / "m.onnx", opset=opset)
    assert report.info["opset"] == opset


def test_opset_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedArgumentError, match="opset must be between 17"):
        mlxport.export(_mlp(), (mx.zeros((2, 16)),), tmp_path / "m.onnx", opset=13)


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_half_precision_models(tmp_path: Path, dtype: mx.Dtype) -> None:
    path = tmp_path / "half.onnx"
    report = mlxport.export(_mlp(dtype), (mx.random.normal((2, 16)).astype(dtype),), path,
                            dynamic_axes={"x": {0: "batch"}})
    assert report.ok
    weights = {i.name: i for i in onnx.load(path).graph.initializer}
    # bfloat16 weights stay bfloat16 in the file even though ORT computes in float32.
    assert weights["layers.0.weight"].data_type == (onnx.TensorProto.FLOAT16 if dtype == mx.float16 else onnx.TensorProto.BFLOAT16)


def test_external_data_file(tmp_path: Path) -> None:
    path = tmp_path / "ext.onnx"
    mlxport.export(_mlp(), (mx.zeros((2, 16)),), path, external_data=True)
    assert (tmp_path / "ext.onnx.data").stat().st_size >= 16 * 32 * 4
    assert path.stat().st_size < 16 * 32 * 4
    onnx.checker.check_model(str(path))


def test_tied_weights_are_stored_once(tmp_path: Path) -> None:
    emb = nn.Embedding(64, 16)
    mx.eval(emb.parameters())

    def tied(tokens: mx.array) -> mx.array:
        return emb.as_linear(emb(tokens))

    path = tmp_path / "tied.onnx"
    mlxport.export(tied, (mx.zeros((1, 4), dtype=mx.int32),), path)
    sizes = [i.dims for i in onnx.load(path).graph.initializer if np.prod(i.dims) >= 64 * 16]
    assert len(sizes) == 1, f"the embedding table is stored {len(sizes)} times"


def test_unsupported_primitive_lists_every_missing_one(tmp_path: Path) -> None:
    def fn(x: mx.array) -> mx.array:
        return mx.fft.irfft(mx.fft.rfft(x)) + mx.fft.irfft(mx.fft.rfft(x * 2))

    with pytest.raises(UnsupportedPrimitiveError) as info:
        mlxport.export(fn, (mx.zeros((4, 8)),), tmp_path / "fft.onnx")
    msg = str(info.value)
    assert "FFT ×4" in msg and "first: node" in msg and "float32[4,8]" in msg
    assert f"target opset {DEFAULT_OPSET}" in msg and "mlxport ops" in msg
    assert not (tmp_path / "fft.onnx").exists(), "no partial file on failure"


def test_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=re.escape(f"unknown suffix '.bin'; supported: {suffix_list()}")):
        mlxport.export(_mlp(), (mx.zeros((2, 16)),), tmp_path / "model.bin")


def test_validation_failure_names_output_and_tolerance(tmp_path: Path) -> None:
    with pytest.raises(mlxport.ToleranceError, match=r"output: float32\[2, 4\] max abs .* \(rtol 0, atol 1e-30\)"):
        mlxport.export(_mlp(), (mx.random.normal((2, 16)),), tmp_path / "m.onnx", rtol=0.0, atol=1e-30)


def test_mlxfn_round_trip_and_conversion(tmp_path: Path) -> None:
    m = _mlp()
    x = mx.random.normal((3, 16))
    mlxport.export(m, (x,), tmp_path / "m.mlxfn")
    runner = mlxport.load(tmp_path / "m.mlxfn")
    assert runner.backend == "mlx" and [i.name for i in runner.inputs] == ["x"]
    np.testing.assert_array_equal(runner(np.array(x))[0], np.array(m(x)))
    report = mlxport.export(tmp_path / "m.mlxfn", (x,), tmp_path / "from_mlxfn.onnx")
    assert report.ok
    assert [i.name for i in onnx.load(tmp_path / "from_mlxfn.onnx").graph.input] == ["x"]


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no such artifact"):
        mlxport.load(tmp_path / "missing.onnx")
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="ONNX Runtime cannot load"):
        mlxport.load(bogus)


def test_runner_checks_inputs(tmp_path: Path) -> None:
    mlxport.export(_mlp(), (mx.zeros((2, 16)),), tmp_path / "m.onnx", dynamic_axes={"x": {0: "batch"}})
    runner = mlxport.load(tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"input .x. must have shape float32\[batch,16\]; got \[2, 15\]"):
        runner(np.zeros((2, 15), np.float32))
    with pytest.raises(TypeError, match="unknown input 'y'"):
        runner(y=np.zeros((2, 16), np.float32))
    assert runner(mx.zeros((4, 16)))[0].shape == (4, 4)


def _ops_newer_than_ort_cpu_kernels(opset: int) -> set[str]:
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    latest: dict[str, int] = {}
    for d in ort_state.get_all_opkernel_def():
        if d.provider == "CPUExecutionProvider" and d.domain in ("", "ai.onnx"):
            latest[d.op_name] = max(latest.get(d.op_name, 0), d.version_range[0])
    newer = set()
    for op, start in latest.items():
        try:
            since = onnx.defs.get_schema(op, opset, "").since_version
        except onnx.defs.SchemaError:
            continue
        if since > start:
            newer.add(op)
    return newer


def test_default_opset_is_the_newest_ort_runs_fully() -> None:
    """Every op version at DEFAULT_OPSET has an ORT CPU kernel (beyond the legacy gaps ORT already has
    at opset 22: random ops, RoiAlign, Upsample...); the next opset introduces one it lacks."""
    baseline = _ops_newer_than_ort_cpu_kernels(22)
    assert _ops_newer_than_ort_cpu_kernels(DEFAULT_OPSET) == baseline
    assert _ops_newer_than_ort_cpu_kernels(DEFAULT_OPSET + 1) - baseline
