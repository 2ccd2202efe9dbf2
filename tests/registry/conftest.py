"""Fixtures of the registry tests: one tiny exported ONNX model (dynamic batch) shared by every test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A validated 16 -> 8 -> 4 MLP as ``mlp.onnx`` with its ``.mlxport.json`` beside it."""
    import mlx.core as mx
    import mlx.nn as nn

    import mlxport

    mx.random.seed(0)
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    mx.eval(model.parameters())
    path = tmp_path_factory.mktemp("artifact") / "mlp.onnx"
    mlxport.export(model, (mx.random.normal((2, 16)),), path, dynamic_axes={"x": {0: "batch"}}, input_names=["x"])
    return path


@pytest.fixture
def artifact(exported: Path, tmp_path: Path) -> Path:
    """A private copy of the exported model (tests may damage it)."""
    folder = tmp_path / "export"
    folder.mkdir()
    for f in exported.parent.iterdir():
        shutil.copy(f, folder / f.name)
    return folder / exported.name
