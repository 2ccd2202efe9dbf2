"""mlx-lm architectures with tiny random configs: token ids [batch, seq] -> logits, no cache.

mlx-lm passes ``mask="causal"`` to SDPA for seq > 1 and no mask for seq == 1
(``create_attention_mask``), so the export runs at seq >= 2; the graph then
serves other sequence lengths and is checked at a second size and at probes
(seq == 1 included: there MLX takes the no-mask branch and must still agree).
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import mlxport

from . import zoo

DYNAMIC = {"inputs": {0: "batch", 1: "seq"}}
ARCHS = ["llama", "qwen2", "gemma", "phi3", "gpt2"]


def _params() -> list:
    out = []
    for arch in ARCHS:
        for dtype in ("float32", "float16"):
            for batch in (1, 2):
                fast = (arch, dtype, batch) == ("llama", "float32", 2)  # the one unmarked representative
                out.append(pytest.param(arch, dtype, batch, id=f"{arch}-{dtype}-b{batch}",
                                        marks=() if fast else pytest.mark.slow))
    return out


@pytest.mark.parametrize("arch,dtype,batch", _params())
def test_mlx_lm(tmp_path: Path, arch: str, dtype: str, batch: int) -> None:
    model = zoo.mlx_lm_model(arch, dtype)
    _, runner = zoo.export_checked(model, (zoo.tokens(batch, 4),), tmp_path / f"{arch}.onnx", dynamic_axes=DYNAMIC,
                                   probes=((zoo.tokens(3, 7, seed=1),), (zoo.tokens(1, 1, seed=2),)))
    assert [o.shape for o in runner.outputs] == [["batch", "seq", zoo.VOCAB]]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_llama_is_lean(tmp_path: Path, dtype: str) -> None:
    """At opset 23 mlx-lm's llama uses ONNX's fused norm, rotary and causal attention ops."""
    path = tmp_path / "llama.onnx"
    zoo.export_checked(zoo.mlx_lm_model("llama", dtype), (zoo.tokens(2, 4),), path, dynamic_axes=DYNAMIC)
    ops = zoo.onnx_op_types(path)
    assert (ops.count("RMSNormalization"), ops.count("RotaryEmbedding"), ops.count("Attention")) == (5, 4, 2), ops
    # Measured: 70 nodes in float32 (2 layers); the budget leaves ~10 % slack.
    # nn.Linear is Reshape + Gemm(transB) on the weight as MLX stores it (no transposed copy at export).
    assert len(ops) <= 98, f"{len(ops)} nodes: {sorted(ops)}"


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("dtype", ["float32", pytest.param("float16", marks=pytest.mark.xfail(
    raises=RuntimeError, strict=True, reason="MLX on CPU: [GatherMM::eval] Currently only supports float32"))])
def test_mixtral_dynamic_seq(tmp_path: Path, dtype: str, batch: int) -> None:
    # SwitchGLU sorts tokens by expert only when batch*seq*k >= 64 (a Python branch on
    # the size), so batch stays fixed and seq stays small enough for one graph.
    model = zoo.mlx_lm_model("mixtral", dtype)
    zoo.export_checked(model, (zoo.tokens(batch, 2),), tmp_path / "mixtral.onnx", dynamic_axes={"inputs": {1: "seq"}},
                       probes=((zoo.tokens(batch, 5, seed=1),),))


@pytest.mark.slow
def test_mixtral_dynamic_batch_and_seq(tmp_path: Path) -> None:
    """mlx-lm sorts tokens by expert from 64 (token, expert) pairs on: the graph is traced above that
    size, and validation at the small example (the unsorted branch in MLX) shows it gives the same."""
    model = zoo.mlx_lm_model("mixtral")
    report = mlxport.export(model, (zoo.tokens(1, 4),), tmp_path / "mixtral.onnx", dynamic_axes=DYNAMIC)
    assert report.ok and report.info.get("note", "").startswith("the traced graph changes below some size")
    runner = mlxport.load(tmp_path / "mixtral.onnx")
    tokens = zoo.tokens(4, 24, seed=2)  # 192 pairs: MLX's sorted branch
    np.testing.assert_allclose(runner(np.array(tokens))[0], np.array(model(tokens)), rtol=1e-4, atol=1e-4)
