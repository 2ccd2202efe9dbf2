"""Decomposed mx.fast ops from a CPU trace are fused back, then exported with parity."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import onnx
import pytest

import mlxport
from mlxport.capture import capture
from mlxport.exporters.onnx import DEFAULT_OPSET
from mlxport.rewrite import run_default_passes

mx.random.seed(3)
W = mx.random.normal((16,))
B = mx.random.normal((16,))
FREQS = mx.random.uniform(1.0, 100.0, (4,))
mx.eval(W, B, FREQS)

SEQ = {0: "batch", 2: "seq"}

CASES = {
    "rms_norm": ("RMSNorm", lambda x: mx.fast.rms_norm(x, W, 1e-5), [(2, 5, 16)], {"x": {0: "batch", 1: "seq"}}),
    "layer_norm": ("LayerNorm", lambda x: mx.fast.layer_norm(x, W, B, 1e-5), [(2, 5, 16)], {"x": {0: "batch"}}),
    "layer_norm_plain": ("LayerNorm", lambda x: mx.fast.layer_norm(x, None, None, 1e-6), [(3, 16)], None),
    "rope": ("RoPE", lambda x: mx.fast.rope(x, 16, traditional=False, base=10000.0, scale=1.0, offset=0),
             [(1, 2, 6, 16)], {"x": SEQ}),
    "rope_traditional_partial": ("RoPE", lambda x: mx.fast.rope(x, 8, traditional=True, base=500000.0, scale=0.5, offset=3),
                                 [(1, 2, 6, 16)], {"x": SEQ}),
    "rope_freqs": ("RoPE", lambda x: mx.fast.rope(x, 8, traditional=False, base=None, scale=1.0, offset=1, freqs=FREQS),
                   [(1, 2, 6, 16)], None),
    "sdpa_causal": ("ScaledDotProductAttention",
                    lambda q, k, v: mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask="causal"),
                    [(1, 4, 6, 16), (1, 4, 6, 16), (1, 4, 6, 16)], {"q": SEQ, "k": SEQ, "v": SEQ}),
    "sdpa_gqa": ("ScaledDotProductAttention",
                 lambda q, k, v: mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25),
                 [(2, 4, 6, 16), (2, 2, 6, 16), (2, 2, 6, 16)], None),
    "sdpa_additive_mask": ("ScaledDotProductAttention",
                           lambda q, k, v, m: mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=m),
                           [(1, 4, 6, 16), (1, 4, 6, 16), (1, 4, 6, 16), (6, 6)], None),
}


def _inputs(shapes: list[tuple[int, ...]]) -> tuple[mx.array, ...]:
    return tuple(mx.random.normal(s) for s in shapes)


@pytest.mark.parametrize("name", sorted(CASES))
def test_pattern_fuses_to_one_node(name: str) -> None:
    primitive, fn, shapes, dyn = CASES[name]
    graph, _, _ = capture(fn, _inputs(shapes), dynamic_axes=dyn)
    fused = run_default_passes(graph)
    prims = [n.primitive for n in fused.nodes]
    assert prims.count(primitive) == 1, prims


@pytest.mark.parametrize("opset", [17, DEFAULT_OPSET])
@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_export_matches_mlx(tmp_path: Path, name: str, opset: int) -> None:
    primitive, fn, shapes, dyn = CASES[name]
    report = mlxport.export(fn, _inputs(shapes), tmp_path / "m.onnx", dynamic_axes=dyn, opset=opset)
    assert report.ok


def test_llama_block_is_lean(tmp_path: Path) -> None:
    """A llama-style layer exports with fused norms, RoPE and attention at the default opset."""
    from mlx_lm.models import llama

    args = llama.ModelArgs(model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=100,
                           rope_theta=10000.0, tie_word_embeddings=False)
    model = llama.Model(args)
    mx.eval(model.parameters())
    path = tmp_path / "llama.onnx"
    mlxport.export(model, (mx.zeros((1, 6), dtype=mx.int32),), path,
                   dynamic_axes={"inputs": {0: "batch", 1: "seq"}})
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert ops.count("RMSNormalization") == 5 and ops.count("Attention") == 2 and ops.count("RotaryEmbedding") == 4
    # About 43 nodes a layer (torch.onnx: ~62 for a Hugging Face llama layer, ANCHORS.md).
    assert len(ops) <= 96, (len(ops), ops)
