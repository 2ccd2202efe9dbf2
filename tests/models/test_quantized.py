"""Quantized models (nn.quantize, affine, group size 64, 4 and 8 bits): QuantizedMatmul and quantized Embedding."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import pytest

from . import zoo


# MLX's float16 QuantizedMatmul rounds more than ONNX Runtime's: against a float32 run of the same
# quantized model, MLX errs by ~0.014 and ORT by ~0.003 on logits up to ~5 (tiny qwen2/llama, 4 bits).
HALF_TOL = {"rtol": 2e-2, "atol": 3e-2}


def _tol(dtype: str) -> dict:
    return HALF_TOL if dtype == "float16" else {}


def _quantized(name: str, dtype: str, bits: int) -> nn.Module:
    mx.random.seed(zoo.SEED)
    # 768 inputs: 784 is not a multiple of any MLX group size (32, 64, 128), so MLX would not quantize layer 1.
    model = zoo.MLP((768, 256, 10)) if name == "mlp" else zoo.LlamaStyle()
    return zoo.quantize(zoo.finish(model, dtype), bits)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_mlp(tmp_path: Path, bits: int, dtype: str, batch: int) -> None:
    model = _quantized("mlp", dtype, bits)
    path = tmp_path / "qmlp.onnx"
    zoo.export_checked(model, (zoo.floats((batch, 768), dtype),), path, dynamic_axes={"x": {0: "batch"}},
                       probes=((zoo.floats((3, 768), dtype, seed=1),),), **_tol(dtype))
    # The weights stay packed: no dequantized copy in the file (float16 layer 1 alone is 393 kB).
    assert path.stat().st_size < 0.6 * 768 * 256 * 2


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_llama_style(tmp_path: Path, bits: int, dtype: str, batch: int) -> None:
    model = _quantized("llama_style", dtype, bits)
    zoo.export_checked(model, (zoo.tokens(batch, 8),), tmp_path / "qllama.onnx",
                       dynamic_axes={"tokens": {0: "batch", 1: "seq"}},
                       probes=((zoo.tokens(3, 5, seed=1),),), **_tol(dtype))


def test_quantized_opset17(tmp_path: Path) -> None:
    zoo.export_checked(_quantized("llama_style", "float32", 4), (zoo.tokens(2, 8),), tmp_path / "qllama.onnx",
                       dynamic_axes={"tokens": {0: "batch", 1: "seq"}}, opset=17)


def _mlx_lm_params() -> list:
    # Unlike GatherMM, MLX's CPU GatherQMM runs in float16, so quantized mixtral does too.
    return [pytest.param(arch, "float16", bits, id=f"{arch}-float16-{bits}bit", marks=pytest.mark.slow)
            for arch in ("llama", "qwen2", "mixtral") for bits in (4, 8)]


@pytest.mark.parametrize("arch,dtype,bits", _mlx_lm_params())
def test_quantized_mlx_lm(tmp_path: Path, arch: str, dtype: str, bits: int) -> None:
    """mlx-lm models quantized like mlx_lm.convert does (tied embeddings run as a quantized linear)."""
    model = zoo.quantize(zoo.mlx_lm_model(arch, dtype), bits)
    # Mixtral's expert sorting is a Python branch on the token count: keep batch fixed (test_mlx_lm.py).
    dynamic = {"inputs": {1: "seq"}} if arch == "mixtral" else {"inputs": {0: "batch", 1: "seq"}}
    zoo.export_checked(model, (zoo.tokens(2, 2),), tmp_path / f"q{arch}.onnx", dynamic_axes=dynamic,
                       probes=((zoo.tokens(2, 5, seed=1),),), **_tol(dtype))
