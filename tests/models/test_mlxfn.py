"""MLX's own format: ``.mlxfn`` round trip through mlxport.load, and ``.mlxfn -> .onnx``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import mlxport
from mlxport import CaptureError

from . import zoo

ROOT = Path(__file__).resolve().parents[2]
MODELS = {
    "mlp": lambda dtype: (zoo.floats((2, 784), dtype),),
    "encoder": lambda dtype: (zoo.floats((2, 8, 64), dtype),),
    "llama_style": lambda dtype: (zoo.tokens(2, 8),),
}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("name", list(MODELS))
def test_mlxfn_round_trip(tmp_path: Path, name: str, dtype: str) -> None:
    model = zoo.build(name, dtype)
    args = MODELS[name](dtype)
    path = tmp_path / f"{name}.mlxfn"
    report = mlxport.export(model, args, path)
    assert report.format == "MLX" and report.ok and report.max_abs == 0.0, str(report)
    runner = mlxport.load(path)
    # Same runtime, same kernels: bit-identical.
    np.testing.assert_array_equal(runner(*args)[0], zoo.run_mlx(model, args)[0])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("name", list(MODELS))
def test_mlxfn_to_onnx(tmp_path: Path, name: str, dtype: str) -> None:
    model = zoo.build(name, dtype)
    args = MODELS[name](dtype)
    source = tmp_path / f"{name}.mlxfn"
    mlxport.export(model, args, source)
    # The .mlxfn path stands in for the model; names come from its side file.
    report, runner = zoo.export_checked(source, args, tmp_path / f"{name}.onnx")
    assert report.format == "ONNX"
    assert [i.name for i in runner.inputs] == ["tokens" if name == "llama_style" else "x"]
    zoo.assert_matches_mlx(runner, model, args)


def test_fixed_mlxfn_refuses_dynamic_axes(tmp_path: Path) -> None:
    source = tmp_path / "mlp.mlxfn"
    mlxport.export(zoo.build("mlp"), (zoo.floats((2, 784)),), source)
    with pytest.raises(CaptureError, match=r"mlp.mlxfn holds fixed-shape traces that do not accept inputs of shapes \[\d+, 784\].*\(no dynamic_axes\)"):
        mlxport.export(source, (zoo.floats((2, 784)),), tmp_path / "mlp.onnx", dynamic_axes={"x": {0: "batch"}})


@pytest.mark.parametrize("name", ["mlp", "encoder"])
def test_dynamic_mlxfn_is_refused_with_the_reason(tmp_path: Path, name: str) -> None:
    """Dynamic axes in .mlxfn would need MLX's shapeless export (wrong results, heap corruption: mlx #2596)."""
    shape = (1, 784) if name == "mlp" else (2, 8, 64)
    with pytest.raises(CaptureError, match=r"shapeless export.*mlx issues #2596.*export to .onnx"):
        mlxport.export(zoo.build(name), (zoo.floats(shape),), tmp_path / "m.mlxfn", dynamic_axes={"x": {0: "batch"}})
    assert not (tmp_path / "m.mlxfn").exists()
