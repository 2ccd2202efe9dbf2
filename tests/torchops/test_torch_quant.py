"""The torch target keeps quantized weights packed: uint32 words, scales and biases as buffers."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch target needs PyTorch: pip install 'mlxport[torch]'")

import mlxport  # noqa: E402


def test_quantized_linear_pt_stays_packed(tmp_path: Path) -> None:
    mx.random.seed(0)
    layer = nn.QuantizedLinear(512, 256, bias=True, group_size=64, bits=4)
    mx.eval(layer.parameters())
    path = tmp_path / "qlinear.pt"
    report = mlxport.export(layer, (mx.zeros((1, 512)),), path, dynamic_axes={"x": {0: "batch"}})
    assert report.ok
    float_bytes = 512 * 256 * 4
    assert path.stat().st_size < 0.35 * float_bytes, (path.stat().st_size, float_bytes)
    x = np.random.default_rng(0).standard_normal((3, 512)).astype(np.float32)
    y = mlxport.load(path)(x)[0]
    np.testing.assert_allclose(y, np.array(layer(mx.array(x))), rtol=1e-4, atol=1e-4)
