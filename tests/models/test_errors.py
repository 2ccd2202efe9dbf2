"""Bad arguments to the public API give errors that say what is wrong and what to do."""

from __future__ import annotations

import re

import importlib
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import pytest

import mlxport
from mlxport.formats import suffix_list
from mlxport import ArtifactError, CaptureError, DynamicShapeError, UnsupportedPrimitiveError
from mlxport.exporters.onnx import DEFAULT_OPSET

from . import zoo


@pytest.fixture(scope="module")
def mlp() -> nn.Module:
    return zoo.build("mlp")


def test_public_export_stays_callable(tmp_path: Path, mlp: nn.Module) -> None:
    """`mlxport.export` is the function, even after the exporter modules are imported."""
    importlib.import_module("mlxport.exporters.onnx")
    assert callable(mlxport.export), f"mlxport.export is {mlxport.export!r}"
    mlxport.export(mlp, (zoo.floats((2, 784)),), tmp_path / "mlp.onnx")


def test_wrong_example_shape(tmp_path: Path, mlp: nn.Module) -> None:
    # Names the input with its dtype and shape, then MLX's own complaint.
    with pytest.raises(CaptureError, match=r"tracing the function failed with inputs \(x: float32\[2,100\]\): "
                                           r"\[addmm\] Last dimension of first input with shape \(2,100\)"):
        mlxport.export(mlp, (zoo.floats((2, 100)),), tmp_path / "mlp.onnx")


def test_too_many_example_inputs(tmp_path: Path, mlp: nn.Module) -> None:
    with pytest.raises(CaptureError, match=r"inputs \(x: .*, input_1: .*\): .*takes 2 positional arguments but 3"):
        mlxport.export(mlp, (zoo.floats((2, 784)), zoo.floats((2, 784))), tmp_path / "mlp.onnx")


def test_input_names_count(tmp_path: Path, mlp: nn.Module) -> None:
    with pytest.raises(CaptureError, match=r"input_names has 2 names but the example has 1 array inputs \(x\); "
                                           r"give one name per array"):
        mlxport.export(mlp, (zoo.floats((2, 784)),), tmp_path / "mlp.onnx", input_names=["a", "b"])


def test_opset_out_of_range(tmp_path: Path, mlp: nn.Module) -> None:
    with pytest.raises(mlxport.UnsupportedArgumentError, match=r"opset must be between 17 and \d+; got 12"):
        mlxport.export(mlp, (zoo.floats((2, 784)),), tmp_path / "mlp.onnx", opset=12)


@pytest.mark.parametrize("bad,kind", [(3.0, "float"), ("x", "str"), (None, "NoneType")])
def test_non_array_input(tmp_path: Path, mlp: nn.Module, bad: object, kind: str) -> None:
    with pytest.raises(CaptureError, match=rf"example input 'x' must be an mx.array or numpy array; got {kind}"):
        mlxport.export(mlp, (bad,), tmp_path / "mlp.onnx")


def test_list_input_names_the_leaf(tmp_path: Path, mlp: nn.Module) -> None:
    # Lists are containers of inputs, so the message names the offending element.
    with pytest.raises(CaptureError, match=r"example input 'x.0' must be an mx.array or numpy array; got float"):
        mlxport.export(mlp, ([1.0, 2.0],), tmp_path / "mlp.onnx")


def test_unknown_dynamic_axis_input(tmp_path: Path, mlp: nn.Module) -> None:
    with pytest.raises(CaptureError, match=r"dynamic_axes names input 'y', but the inputs are x; use one of those"):
        mlxport.export(mlp, (zoo.floats((2, 784)),), tmp_path / "mlp.onnx", dynamic_axes={"y": {0: "batch"}})


@pytest.mark.parametrize("axis", [2, -3])
def test_dynamic_axis_out_of_range(tmp_path: Path, mlp: nn.Module, axis: int) -> None:
    with pytest.raises(CaptureError, match=rf"dynamic axis {axis} of input 'x' is out of range: it has rank 2 "
                                           r"\(shape \[2, 784\]\); use an axis in \[-2, 1\]"):
        mlxport.export(mlp, (zoo.floats((2, 784)),), tmp_path / "mlp.onnx", dynamic_axes={"x": {axis: "batch"}})


def test_dynamic_axis_bad_name(tmp_path: Path, mlp: nn.Module) -> None:
    with pytest.raises(CaptureError, match=r"dynamic axis names must be identifiers like 'batch'.*; got '0 batch'"):
        mlxport.export(mlp, (zoo.floats((2, 784)),), tmp_path / "mlp.onnx", dynamic_axes={"x": {0: "0 batch"}})


def test_unknown_suffix(tmp_path: Path, mlp: nn.Module) -> None:
    with pytest.raises(ArtifactError, match=r"cannot tell the format of 'mlp.h5' \(the file to write\): unknown "
                                            r"suffix '.h5'; supported: " + re.escape(suffix_list())):
        mlxport.export(mlp, (zoo.floats((2, 784)),), tmp_path / "mlp.h5")
    assert not (tmp_path / "mlp.h5").exists()


def test_load_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "model.h5").write_bytes(b"")
    with pytest.raises(ArtifactError, match=r"cannot tell the format of 'model.h5' \(the artifact to load\): unknown "
                                            r"suffix '.h5'; supported: " + re.escape(suffix_list())):
        mlxport.load(tmp_path / "model.h5")
    with pytest.raises(ArtifactError, match=r"no such artifact: .*missing.onnx"):
        mlxport.load(tmp_path / "missing.onnx")


def test_source_path_must_be_mlxfn(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"can convert from an .mlxfn file or a Python callable; got the path"):
        mlxport.export(tmp_path / "model.onnx", (zoo.floats((2, 784)),), tmp_path / "out.onnx")


def test_unsupported_primitives_are_listed_together(tmp_path: Path) -> None:
    # Inverse and Cholesky have no ONNX operator (standard domain); both are listed in one error.
    def fn(x: mx.array) -> mx.array:
        return mx.linalg.inv(x, stream=mx.cpu) + mx.linalg.inv(2 * x, stream=mx.cpu) + \
            mx.linalg.cholesky(x, stream=mx.cpu)

    with pytest.raises(UnsupportedPrimitiveError) as info:
        mlxport.export(fn, (mx.eye(3),), tmp_path / "inv.onnx")
    msg = str(info.value)
    assert msg.startswith(f"2 MLX primitives have no ONNX translation (target opset {DEFAULT_OPSET}):"), msg
    assert "- Inverse ×2" in msg and "(first: node 0, inputs float32[3,3])" in msg, msg
    assert "- Cholesky ×1" in msg, msg
    assert "mlxport ops" in msg and "docs/adding_ops.md" in msg, msg
    assert not (tmp_path / "inv.onnx").exists()


def test_unsupported_primitive_names_the_opset(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedPrimitiveError, match=r"target opset 17"):
        mlxport.export(lambda x: mx.linalg.inv(x, stream=mx.cpu), (mx.eye(3),), tmp_path / "inv.onnx", opset=17)


def test_shape_branch_is_refused(tmp_path: Path) -> None:
    def fn(x: mx.array) -> mx.array:
        return mx.exp(x) if x.shape[0] > 4 else mx.sin(x)

    # Traced at large sizes (Exp) it fails validation at the example (Sin in MLX): one clear error.
    with pytest.raises(DynamicShapeError, match=r"(?s)the traced graph changes with the dynamic sizes \(node 0 is Sin at one "
                                                r"size and Exp at the other\).*branches on a shape"):
        mlxport.export(fn, (zoo.floats((2, 3)),), tmp_path / "f.onnx", dynamic_axes={"x": {0: "n"}})


def test_shape_branch_in_arguments_is_refused(tmp_path: Path) -> None:
    # Same primitive, other arguments (sum vs max are both Reduce): the node is named.
    def fn(x: mx.array) -> mx.array:
        return x.sum(axis=0) if x.shape[0] > 4 else x.max(axis=0)

    with pytest.raises(DynamicShapeError, match=r"node 0 \(Reduce\) arguments"):
        mlxport.export(fn, (zoo.floats((2, 3)),), tmp_path / "f.onnx", dynamic_axes={"x": {0: "n"}})


def test_eager_constant_is_refused(tmp_path: Path) -> None:
    import numpy as np

    def fn(x: mx.array) -> mx.array:
        return x + mx.array(np.arange(x.shape[0], dtype=np.float32))[:, None]

    with pytest.raises(DynamicShapeError, match=r"changes with the dynamic sizes: it was computed eagerly.*mx.arange"):
        mlxport.export(fn, (zoo.floats((2, 3)),), tmp_path / "f.onnx", dynamic_axes={"x": {0: "n"}})
