"""CNN (NHWC): Conv2d, eval-mode BatchNorm, MaxPool2d (padded, overlapping) and AvgPool2d, Linear head."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import zoo


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cnn(tmp_path: Path, dtype: str, batch: int) -> None:
    model = zoo.build("cnn", dtype)
    path = tmp_path / "cnn.onnx"
    zoo.export_checked(model, (zoo.floats((batch, 16, 16, 3), dtype),), path, dynamic_axes={"x": {0: "batch"}},
                       probes=((zoo.floats((3, 16, 16, 3), dtype, seed=1),),))
    ops = zoo.onnx_op_types(path)
    # The overlapping max pool (an AsStrided window view in MLX) is recognized as one MaxPool.
    assert ops.count("Conv") == 2 and ops.count("MaxPool") == 1, ops


def test_cnn_opset17(tmp_path: Path) -> None:
    model = zoo.build("cnn")
    report, _ = zoo.export_checked(model, (zoo.floats((2, 16, 16, 3)),), tmp_path / "cnn.onnx",
                                   dynamic_axes={"x": {0: "batch"}}, opset=17)
    assert report.info["opset"] == 17
