"""Tiny random-weight models for the end-to-end tests (no downloads, fixed seeds).

Each builder returns an evaluated ``nn.Module`` in eval mode; ``floats`` and
``tokens`` make seeded example inputs. Sizes are small so that a whole export
(capture at several sizes, lowering, ONNX Runtime, validation) takes about a second.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import onnx

import mlxport
from mlxport.validate import compare

SEED = 0
DTYPES = {"float32": mx.float32, "float16": mx.float16}
VOCAB = 256


def finish(model: nn.Module, dtype: str = "float32") -> nn.Module:
    """Cast, switch to eval mode and evaluate the parameters (else the init is traced)."""
    model.set_dtype(DTYPES[dtype])
    model.eval()
    mx.eval(model.parameters())
    return model


def quantize(model: nn.Module, bits: int, group_size: int = 64) -> nn.Module:
    """nn.quantize every Linear/Embedding whose input width is a multiple of the group size."""

    def fits(_path: str, m: nn.Module) -> bool:
        # MLX refuses a layer whose last weight axis is not a multiple of the group size.
        return hasattr(m, "to_quantized") and m.weight.shape[-1] % group_size == 0

    nn.quantize(model, group_size=group_size, bits=bits, class_predicate=fits)
    mx.eval(model.parameters())
    return model


def floats(shape: tuple[int, ...], dtype: str = "float32", seed: int = SEED) -> mx.array:
    data = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return mx.array(data).astype(DTYPES[dtype])


def tokens(batch: int, seq: int, seed: int = SEED) -> mx.array:
    return mx.array(np.random.default_rng(seed).integers(0, VOCAB, (batch, seq)).astype(np.int32))


# ----------------------------------------------------------------------------
# Hand-written models
# ----------------------------------------------------------------------------


class MLP(nn.Module):
    """784-256-10 with ReLU: the seed model."""

    def __init__(self, dims: tuple[int, ...] = (784, 256, 10)) -> None:
        super().__init__()
        self.layers = [nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])]

    def __call__(self, x: mx.array) -> mx.array:
        for layer in self.layers[:-1]:
            x = nn.relu(layer(x))
        return self.layers[-1](x)


class CNN(nn.Module):
    """NHWC 16x16x3 -> Conv-BN-ReLU-MaxPool(3, stride 2, pad 1) -> Conv-BN-ReLU-AvgPool -> Linear(10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm(8)
        self.pool1 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, stride=1, padding=1)
        self.bn2 = nn.BatchNorm(16)
        self.pool2 = nn.AvgPool2d(kernel_size=2, stride=2)
        self.head = nn.Linear(4 * 4 * 16, 10)
        # Non-trivial running statistics, so eval-mode BatchNorm is really exercised.
        rng = np.random.default_rng(SEED)
        for bn in (self.bn1, self.bn2):
            n = bn.weight.shape[0]
            bn.running_mean = mx.array(rng.standard_normal(n).astype(np.float32) * 0.1)
            bn.running_var = mx.array(rng.uniform(0.5, 1.5, n).astype(np.float32))

    def __call__(self, x: mx.array) -> mx.array:
        x = self.pool1(nn.relu(self.bn1(self.conv1(x))))
        x = self.pool2(nn.relu(self.bn2(self.conv2(x))))
        return self.head(x.reshape(x.shape[0], -1))


class Encoder(nn.Module):
    """Transformer encoder: 2 pre-norm layers of nn.MultiHeadAttention, LayerNorm, GELU."""

    def __init__(self, dims: int = 64, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.encoder = nn.TransformerEncoder(layers, dims, heads, mlp_dims=2 * dims, activation=nn.gelu)

    def __call__(self, x: mx.array) -> mx.array:
        return self.encoder(x, None)


class LlamaBlock(nn.Module):
    """RMSNorm, grouped-query attention with nn.RoPE and fast SDPA, SwiGLU MLP."""

    def __init__(self, dims: int, heads: int, kv_heads: int, hidden: int) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dims // heads
        self.attention_norm = nn.RMSNorm(dims, eps=1e-5)
        self.q_proj = nn.Linear(dims, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(dims, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dims, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, dims, bias=False)
        self.rope = nn.RoPE(self.head_dim, traditional=False, base=10000)
        self.mlp_norm = nn.RMSNorm(dims, eps=1e-5)
        self.gate_proj = nn.Linear(dims, hidden, bias=False)
        self.up_proj = nn.Linear(dims, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dims, bias=False)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        b, n, _ = x.shape
        h = self.attention_norm(x)
        q = self.q_proj(h).reshape(b, n, self.heads, -1).transpose(0, 2, 1, 3)
        k = self.k_proj(h).reshape(b, n, self.kv_heads, -1).transpose(0, 2, 1, 3)
        v = self.v_proj(h).reshape(b, n, self.kv_heads, -1).transpose(0, 2, 1, 3)
        q, k = self.rope(q), self.rope(k)
        a = mx.fast.scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(self.head_dim), mask=mask)
        x = x + self.o_proj(a.transpose(0, 2, 1, 3).reshape(b, n, -1))
        h = self.mlp_norm(x)
        return x + self.down_proj(nn.silu(self.gate_proj(h)) * self.up_proj(h))


class LlamaStyle(nn.Module):
    """Token ids [batch, seq] -> logits; the causal mask is built from mx.arange(seq)."""

    def __init__(self, dims: int = 64, heads: int = 4, kv_heads: int = 2, hidden: int = 128,
                 layers: int = 2, vocab: int = VOCAB) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dims)
        self.layers = [LlamaBlock(dims, heads, kv_heads, hidden) for _ in range(layers)]
        self.norm = nn.RMSNorm(dims, eps=1e-5)
        self.head = nn.Linear(dims, vocab, bias=False)

    def __call__(self, tokens: mx.array) -> mx.array:
        x = self.embed(tokens)
        pos = mx.arange(tokens.shape[1])
        # Additive mask in the activation dtype: 0 where key <= query, -inf above the diagonal.
        mask = mx.where(pos[:, None] >= pos[None], 0.0, -mx.inf).astype(x.dtype)
        for layer in self.layers:
            x = layer(x, mask)
        return self.head(self.norm(x))


# ----------------------------------------------------------------------------
# mlx-lm architectures (tiny random configs; nothing is downloaded)
# ----------------------------------------------------------------------------

_LM_COMMON = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                  rms_norm_eps=1e-5, vocab_size=VOCAB)
LM_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": dict(_LM_COMMON, model_type="llama", num_key_value_heads=2),
    "qwen2": dict(_LM_COMMON, model_type="qwen2", num_key_value_heads=2),
    "gemma": dict(_LM_COMMON, model_type="gemma", num_key_value_heads=1, head_dim=16),
    "phi3": dict(_LM_COMMON, model_type="phi3", num_key_value_heads=4),
    "mixtral": dict(_LM_COMMON, model_type="mixtral", num_key_value_heads=2, num_local_experts=4,
                    num_experts_per_tok=2),
    "gpt2": dict(model_type="gpt2", n_ctx=128, n_embd=64, n_head=4, n_layer=2, n_positions=128,
                 layer_norm_epsilon=1e-5, vocab_size=VOCAB),
}


def mlx_lm_model(arch: str, dtype: str = "float32") -> nn.Module:
    """``mlx_lm.models.<arch>.Model(ModelArgs(...))`` with random weights."""
    module = importlib.import_module(f"mlx_lm.models.{arch}")
    mx.random.seed(SEED)
    model = module.Model(module.ModelArgs.from_dict(LM_CONFIGS[arch]))
    return finish(model, dtype)


def build(name: str, dtype: str = "float32") -> nn.Module:
    """A hand-written zoo model by name, seeded, cast and evaluated."""
    mx.random.seed(SEED)
    model = {"mlp": MLP, "cnn": CNN, "encoder": Encoder, "llama_style": LlamaStyle}[name]()
    return finish(model, dtype)


# ----------------------------------------------------------------------------
# Export, reload and compare
# ----------------------------------------------------------------------------


def run_mlx(fn: Any, args: tuple[mx.array, ...]) -> list[np.ndarray]:
    out = fn(*args)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    mx.eval(outs)
    return [np.array(o) for o in outs]


def assert_matches_mlx(runner: Any, fn: Any, args: tuple[mx.array, ...], rtol: float | None = None,
                       atol: float | None = None) -> None:
    """The loaded artifact equals MLX on ``args`` (default tolerances by output dtype)."""
    expected = run_mlx(fn, args)
    got = runner(*[np.array(a) for a in args])
    assert len(got) == len(expected)
    for i, (e, g) in enumerate(zip(expected, got)):
        check = compare(f"output {i}", e, g, rtol, atol)
        assert check.ok, check.line()


def export_checked(model: Any, args: tuple[mx.array, ...], path: Any, *, dynamic_axes: dict | None = None,
                   probes: tuple[tuple[mx.array, ...], ...] = (), rtol: float | None = None,
                   atol: float | None = None, **kwargs: Any) -> tuple[Any, Any]:
    """Export through the public API (validated), reload with mlxport.load, compare at ``probes``.

    Returns the Report and the loaded runner.
    """
    # Saved first, so that REPRO=1 (conftest.py) can keep a failing export with its inputs.
    np.savez(Path(path).with_name("inputs.npz"), *[np.array(a) for a in args])
    report = mlxport.export(model, args, path, dynamic_axes=dynamic_axes, rtol=rtol, atol=atol, **kwargs)
    assert report.validated and report.ok, str(report)
    # The example, then random inputs (at second sizes for dynamic axes).
    assert len(report.runs) == 2, str(report)
    runner = mlxport.load(path)
    for probe in probes:
        assert_matches_mlx(runner, model, probe, rtol, atol)
    return report, runner


def onnx_op_types(path: Any) -> list[str]:
    return [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]
