"""The seed document's example with every format (mlx.jit spelled mlxport.trace / mlxport.load)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import mlxport

from . import requires_stack

pytestmark = [pytest.mark.slow, requires_stack,
              pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="the .pt/.pt2 formats need PyTorch: pip install 'mlxport[torch]'")]
HAS_COREML = importlib.util.find_spec("coremltools") is not None


class SimpleModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(784, 256)
        self.l2 = nn.Linear(256, 10)

    def __call__(self, x: mx.array) -> mx.array:
        return self.l2(nn.relu(self.l1(x)))


def test_seed_example_every_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    mx.random.seed(0)
    model = SimpleModel()
    mx.eval(model.parameters())
    traced = mlxport.trace(model, mx.random.normal((1, 784)))   # captured once, validated once
    suffixes = [".pt", ".pt2", ".onnx", ".tflite", ".mlxfn"] + ([".mlpackage"] if HAS_COREML else [])
    for suffix in suffixes:
        report = traced.save(f"simple_model{suffix}")
        assert os.path.exists(f"simple_model{suffix}") and report.ok, str(report)
        # Core ML predicts only on macOS; elsewhere its spec is checked against the graph.
        assert report.validated or (suffix == ".mlpackage" and sys.platform != "darwin")
    x = mx.random.normal((1, 784))
    runnable = [s for s in suffixes if s != ".mlpackage" or sys.platform == "darwin"]
    for suffix in runnable:
        m = mlxport.load(f"simple_model{suffix}")   # any of the above; same call signature as the MLX model
        (y,) = m(x)
        np.testing.assert_allclose(y, np.array(model(x)), rtol=1e-4, atol=1e-5, err_msg=suffix)
    assert mlxport.load("simple_model.tflite").backend == "litert"
    # MLX's reference outputs were computed once for all the files.
    assert len(traced._references) == 2
