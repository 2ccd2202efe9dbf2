"""What the Python API accepts as a model, and how its errors read in a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import mlxport
from mlxport.errors import ArtifactError, CaptureError, ValidationError


class ForwardModel(nn.Module):
    """PyTorch habit: ``forward`` and no ``__call__`` (the seed example's SimpleModel)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: mx.array) -> mx.array:
        return nn.relu(self.fc(x))


class CallModel(ForwardModel):
    def __call__(self, x: mx.array) -> mx.array:
        return self.forward(x)


class NoEntry(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3)


@pytest.mark.parametrize("cls", [ForwardModel, CallModel], ids=["forward", "__call__"])
def test_forward_and_call_modules_export_alike(cls: type, tmp_path: Path) -> None:
    mx.random.seed(0)
    model = cls()
    x = mx.random.normal((2, 8))
    report = mlxport.export(model, (x,), tmp_path / "m.onnx", dynamic_axes={"x": {0: "batch"}})
    assert report.ok and report.validated
    runner = mlxport.load(tmp_path / "m.onnx")
    assert [i.name for i in runner.inputs] == ["x"]  # named after forward's parameter
    feed = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    np.testing.assert_allclose(runner(feed)[0], np.array(model.forward(mx.array(feed))), rtol=1e-5, atol=1e-6)
    traced = mlxport.trace(model, x)
    np.testing.assert_allclose(np.array(traced(x)), np.array(model.forward(x)))


@pytest.mark.parametrize("given, says", [
    (NoEntry(), "NoEntry is an nn.Module that defines neither __call__ nor forward"),
    (ForwardModel, "got the class ForwardModel, not an instance"),
    (42, "got int (42)"),
])
def test_other_objects_are_refused_by_name(given: object, says: str, tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match=re.escape(says)) as info:
        mlxport.export(given, (mx.zeros((1, 8)),), tmp_path / "m.onnx")
    assert "nn.Module (defining __call__ or forward), a function of mx.arrays" in str(info.value)
    assert not (tmp_path / "m.onnx").exists()


def test_the_hint_is_part_of_the_exception_text(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError) as info:
        mlxport.export(lambda x: x + 1, (mx.zeros((2,)),), tmp_path / "m.h5")
    text = str(info.value)
    assert "unknown suffix '.h5'" in text and "\nhint: The suffix picks the format" in text
    assert info.value.message.splitlines() == [info.value.message]  # message alone, hint apart
    # A Python user is told the keyword argument, not only the CLI flag.
    assert "atol/rtol" in ValidationError.hint and "validate=False" in ValidationError.hint


def test_format_options_are_refused_for_other_formats(tmp_path: Path) -> None:
    fn = lambda x: x * 2  # noqa: E731
    with pytest.raises(ArtifactError, match=r"the option opset applies to \.onnx files; this export writes \.pt"):
        mlxport.export(fn, (mx.zeros((2,)),), tmp_path / "m.pt", opset=17)
    with pytest.raises(ArtifactError, match=r"the option precision applies to \.mlpackage files"):
        mlxport.export(fn, (mx.zeros((2,)),), tmp_path / "m.onnx", precision="float16")


def test_format_options_are_refused_before_tracing(tmp_path: Path) -> None:
    def never_traced(x: mx.array) -> mx.array:
        raise AssertionError("traced before the options were checked")

    with pytest.raises(ArtifactError, match=r"the option quantize applies to \.tflite files"):
        mlxport.export(never_traced, (mx.zeros((2,)),), tmp_path / "m.onnx", quantize="float16")
