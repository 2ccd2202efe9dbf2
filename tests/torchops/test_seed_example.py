"""The seed document's example, with mlx.jit spelled mlxport.trace and mlx.jit.load spelled mlxport.load."""

from __future__ import annotations

import os
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

pytest.importorskip("torch", reason="the .pt/.pt2 formats need PyTorch: pip install 'mlxport[torch]'")

import mlxport  # noqa: E402


class SimpleModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(784, 256)
        self.l2 = nn.Linear(256, 10)

    def __call__(self, x: mx.array) -> mx.array:
        return self.l2(nn.relu(self.l1(x)))


def test_seed_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    model = SimpleModel()
    mx.eval(model.parameters())
    traced = mlxport.trace(model, mx.random.normal((1, 784)))   # captured once
    for suffix in (".pt", ".pt2", ".onnx", ".mlxfn"):
        report = traced.save(f"simple_model{suffix}")             # each validated against MLX
        assert report.ok and os.path.exists(f"simple_model{suffix}")
    x = mx.random.normal((1, 784))
    for suffix in (".pt", ".pt2", ".onnx", ".mlxfn"):
        m = mlxport.load(f"simple_model{suffix}")
        (y,) = m(x)
        np.testing.assert_allclose(y, np.array(model(x)), rtol=1e-5, atol=1e-5)
    # MLX's reference outputs were computed once for all four files.
    assert len(traced._references) == 2
