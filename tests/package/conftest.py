"""Fixtures for the packaging tests: tiny exported models (helpers.py has the rest)."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import pytest

import mlxport


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mlp.onnx (dynamic batch), fixed.onnx (fixed shapes), two.onnx (two inputs), wide.onnx (external data)."""
    folder = tmp_path_factory.mktemp("models")
    mx.random.seed(0)
    mlp = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    mx.eval(mlp.parameters())
    mlxport.export(mlp, (mx.zeros((2, 16)),), folder / "mlp.onnx", dynamic_axes={"x": {0: "batch"}})
    mlxport.export(mlp, (mx.zeros((2, 16)),), folder / "fixed.onnx")

    def two(a: mx.array, b: mx.array) -> mx.array:
        return a * 2 - b

    mlxport.export(two, (mx.zeros((2, 3)), mx.zeros((2, 3))), folder / "two.onnx", input_names=["a", "b"],
                   dynamic_axes={"a": {0: "batch"}, "b": {0: "batch"}})
    wide = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    mx.eval(wide.parameters())
    mlxport.export(wide, (mx.zeros((2, 64)),), folder / "wide.onnx", dynamic_axes={"x": {0: "batch"}},
                   external_data=True)
    assert (folder / "wide.onnx.data").is_file()
    return folder
