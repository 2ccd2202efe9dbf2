"""MLP 784-256-10 (the seed model): export, validate, reload; the graph is three ONNX nodes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from . import zoo

DYNAMIC = {"x": {0: "batch"}}


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_mlp(tmp_path: Path, dtype: str, batch: int) -> None:
    model = zoo.build("mlp", dtype)
    path = tmp_path / "mlp.onnx"
    report, runner = zoo.export_checked(model, (zoo.floats((batch, 784), dtype),), path, dynamic_axes=DYNAMIC,
                                        probes=((zoo.floats((5, 784), dtype, seed=1),),))
    assert report.info["dynamic axes"] == "x[0]=batch"
    assert [i.shape for i in runner.inputs] == [["batch", 784]]
    # Lean: Linear -> Gemm, relu -> Max (or Relu), Linear -> Gemm; nothing else.
    ops = zoo.onnx_op_types(path)
    assert len(ops) == 3 and ops[0] == ops[2] == "Gemm" and ops[1] in ("Max", "Relu"), ops


@pytest.mark.parametrize("opset", [17, 23])
def test_mlp_opset(tmp_path: Path, opset: int) -> None:
    model = zoo.build("mlp")
    report, _ = zoo.export_checked(model, (zoo.floats((2, 784)),), tmp_path / "mlp.onnx", dynamic_axes=DYNAMIC,
                                   opset=opset)
    assert report.info["opset"] == opset


def test_mlp_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "mlp.onnx"
    zoo.export_checked(zoo.build("mlp"), (zoo.floats((2, 784)),), path, dynamic_axes=DYNAMIC)
    meta = json.loads((tmp_path / "mlp.onnx.mlxport.json").read_text())
    assert meta["inputs"] == [{"name": "x", "shape": ["batch", 784], "dtype": "float32"}]
    assert meta["outputs"] == [{"name": "output", "shape": ["batch", 10], "dtype": "float32"}]
    assert meta["validation"]["ok"] is True and len(meta["validation"]["runs"]) == 2


def test_mlp_static_shapes(tmp_path: Path) -> None:
    """Without dynamic_axes the batch is fixed and the runner refuses another one."""
    path = tmp_path / "mlp.onnx"
    _, runner = zoo.export_checked(zoo.build("mlp"), (zoo.floats((2, 784)),), path)
    assert [i.shape for i in runner.inputs] == [[2, 784]]
    with pytest.raises(ValueError, match=r"input 'x' must have shape float32\[2,784\]; got \[3, 784\]"):
        runner(zoo.floats((3, 784)))


def test_mlp_external_data(tmp_path: Path) -> None:
    """Weights in a side file (what models over ~1.8 GB get) load and run the same."""
    path = tmp_path / "mlp.onnx"
    zoo.export_checked(zoo.build("mlp"), (zoo.floats((2, 784)),), path, dynamic_axes=DYNAMIC, external_data=True,
                       probes=((zoo.floats((3, 784), seed=1),),))
    data = tmp_path / "mlp.onnx.data"
    assert data.exists() and data.stat().st_size >= 784 * 256 * 4
    assert path.stat().st_size < 100_000


def test_runner_takes_names_and_mx_arrays(tmp_path: Path) -> None:
    path = tmp_path / "mlp.onnx"
    model = zoo.build("mlp")
    _, runner = zoo.export_checked(model, (zoo.floats((2, 784)),), path, dynamic_axes=DYNAMIC)
    x = zoo.floats((4, 784), seed=3)
    by_name = runner(x=np.array(x))[0]
    by_mx = runner(x)[0]
    np.testing.assert_array_equal(by_name, by_mx)
    zoo.assert_matches_mlx(runner, model, (x,))
