"""The model zoo through the torch target: TorchScript (.pt) and torch.export (.pt2), dynamic axes included."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the .pt/.pt2 formats need PyTorch: pip install 'mlxport[torch]'")

from . import zoo  # noqa: E402

BATCH = {0: "batch"}
BATCH_SEQ = {0: "batch", 1: "seq"}

MODELS = {
    "mlp": (lambda dtype: zoo.build("mlp", dtype), lambda dtype: (zoo.floats((1, 784), dtype),), {"x": BATCH}),
    "cnn": (lambda dtype: zoo.build("cnn", dtype), lambda dtype: (zoo.floats((2, 16, 16, 3), dtype),), {"x": BATCH}),
    "encoder": (lambda dtype: zoo.build("encoder", dtype), lambda dtype: (zoo.floats((2, 8, 64), dtype),),
                {"x": BATCH_SEQ}),
    "llama_style": (lambda dtype: zoo.build("llama_style", dtype), lambda dtype: (zoo.tokens(2, 8),),
                    {"tokens": BATCH_SEQ}),
    "quantized_llama_4bit": (lambda dtype: zoo.quantize(zoo.build("llama_style", dtype), 4),
                             lambda dtype: (zoo.tokens(2, 8),), {"tokens": BATCH_SEQ}),
    "mlx_lm_llama": (lambda dtype: zoo.mlx_lm_model("llama", dtype), lambda dtype: (zoo.tokens(1, 6),),
                     {"inputs": BATCH_SEQ}),
}

SLOW = {"mlx_lm_llama", "quantized_llama_4bit"}


def _params() -> list:
    out = []
    for name in MODELS:
        for suffix in (".pt", ".pt2"):
            for dtype in ("float32", "float16"):
                marks = [pytest.mark.slow] if name in SLOW or dtype == "float16" else []
                out.append(pytest.param(name, suffix, dtype, id=f"{name}-{suffix[1:]}-{dtype}", marks=marks))
    return out


@pytest.mark.parametrize("name,suffix,dtype", _params())
def test_zoo_model(tmp_path: Path, name: str, suffix: str, dtype: str) -> None:
    build, example, dynamic = MODELS[name]
    model = build(dtype)
    args = example(dtype)
    # Quantized float16 differs from MLX by MLX's own float16 rounding (see test_quantized.py).
    tol = {"rtol": 2e-2, "atol": 3e-2} if name.startswith("quantized") and dtype == "float16" else {}
    zoo.export_checked(model, args, tmp_path / f"{name}{suffix}", dynamic_axes=dynamic, **tol)
