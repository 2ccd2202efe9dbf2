"""Neural-network primitives as torch calls: convolution, the fused mx.fast ops and Hadamard."""

from __future__ import annotations

import math
import operator
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ...dtypes import torch_dtype
from ...graph import Dim, Node, SymExpr, is_static
from ..args import args_error, attention_shape, check_conv_padding, rope_dims, sdpa_args, static_last_axis
from ..common import ir_producer
from .context import TorchContext, torch_op

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _memo(ctx: TorchContext, key: tuple, make: Callable[[], Any]) -> Any:
    """Reuse values built once per lowering (every layer's q and k RoPE share their angles)."""
    memo = ctx.__dict__.setdefault("_nn_memo", {})
    if key not in memo:
        memo[key] = make()
    return memo[key]


def _value_key(ctx: TorchContext, node: Node, i: int) -> Any:
    """Small constants compare by value (each mx.fast.rope call makes its own offset array)."""
    value = ctx.const_value(node, i)
    if value is not None and value.size <= 64:
        return ("const", value.dtype.str, value.shape, value.tobytes())
    return node.inputs[i]


def _is_const_fill(ctx: TorchContext, node: Node, i: int, fill: float) -> bool:
    value = ctx.const_value(node, i)
    return value is not None and value.size <= 1 and bool(np.all(value == fill))


# ----------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------


def _conv_weight(ctx: TorchContext, node: Node, flip: bool, groups: int, transposed: bool) -> Any:
    """MLX's (O, k..., I/g) weight as torch conv's (O, I/g, k...) or conv_transpose's (I, O/g, k...)."""
    wshape = [int(d) for d in ctx.in_info(node, 1).shape]
    rank = len(wshape)
    perm = [0, rank - 1, *range(1, rank - 1)]
    spatial = list(range(2, rank))
    out_ch, kernel, in_g = wshape[0], wshape[1:-1], wshape[-1]
    # conv_transpose correlates with the flipped kernel, so flip=False needs a flip here.
    do_flip = flip != transposed
    value = ctx.const_value(node, 1)
    if value is not None:
        arr = np.transpose(value, perm)
        if do_flip:
            arr = np.flip(arr, spatial)
        if transposed:
            arr = arr.reshape([groups, out_ch // groups, in_g, *kernel]).swapaxes(1, 2)
            arr = arr.reshape([in_g * groups, out_ch // groups, *kernel])
        return ctx.buffer(np.ascontiguousarray(arr), hint="conv_w")
    w = ctx.call(torch.permute, ctx.input(node, 1), perm)
    if do_flip:
        w = ctx.call(torch.flip, w, spatial)
    if transposed:
        w = ctx.call(torch.reshape, w, [groups, out_ch // groups, in_g, *kernel])
        w = ctx.call(torch.transpose, w, 1, 2)
        w = ctx.call(torch.reshape, w, [in_g * groups, out_ch // groups, *kernel])
    return w


@torch_op("Convolution")
def convert_convolution(ctx: TorchContext, node: Node) -> list:
    """Convolution(x, w) [strides, pad_lo, pad_hi, kernel_dilation, input_dilation, groups, flip] -> torch permute, F.pad, F.conv{1,2,3}d or F.conv_transpose{1,2,3}d, permute."""
    names = ("kernel_strides", "padding_lo", "padding_hi", "kernel_dilation", "input_dilation")
    for value, name in zip(node.arguments[:5], names):
        if not is_static(value):
            raise args_error(node, f"{name} must be static; got {value}")
    strides, pad_lo, pad_hi, kdil, idil = ([int(v) for v in a] for a in node.arguments[:5])
    groups, flip = int(node.arguments[5]), bool(node.arguments[6])
    rank = ctx.in_info(node, 0).rank
    wshape = ctx.in_info(node, 1).shape
    if not is_static(wshape):
        raise args_error(node, f"the weight shape must be static; got {ctx.in_info(node, 1).describe()}")
    if rank - 2 not in _CONV:
        raise args_error(node, f"1, 2 or 3 spatial axes are supported; got {rank - 2}")
    check_conv_padding(node, pad_lo, pad_hi)
    kernel = [int(k) for k in wshape[1:-1]]
    dtype = ctx.out_info(node).dtype
    # torch's half-precision CPU kernels round partial sums; MLX accumulates in float32.
    wide = dtype in ("float16", "bfloat16")
    x = ctx.call(torch.permute, ctx.input(node, 0), [0, rank - 1, *range(1, rank - 1)])
    x = ctx.method("float", x) if wide else x
    if all(i == 1 for i in idil):
        w = _wide(ctx, _conv_weight(ctx, node, flip, groups, transposed=False), wide)
        if pad_lo == pad_hi:
            y = ctx.call(_CONV[rank - 2], x, w, None, strides, pad_lo, kdil, groups)
        else:
            # F.pad lists the last axis first.
            pads = [p for lo, hi in zip(reversed(pad_lo), reversed(pad_hi)) for p in (lo, hi)]
            y = ctx.call(_CONV[rank - 2], ctx.call(F.pad, x, pads), w, None, strides, 0, kdil, groups)
    else:
        # Input dilation is a transposed convolution (zeros between the inputs, then a
        # correlation): the full one, cropped (or zero-padded) by the pads ONNX derives.
        w = _wide(ctx, _conv_weight(ctx, node, flip, groups, transposed=True), wide)
        y = ctx.call(_CONV_TRANSPOSE[rank - 2], x, w, None, idil, 0, 0, groups, kdil)
        begin = [kd * (k - 1) - p for kd, k, p in zip(kdil, kernel, pad_lo)]
        end = [kd * (k - 1) - p for kd, k, p in zip(kdil, kernel, pad_hi)]
        if any(begin + end):
            # Negative F.pad amounts crop.
            y = ctx.call(F.pad, y, [-p for b, e in zip(reversed(begin), reversed(end)) for p in (b, e)])
        if any(s != 1 for s in strides):
            index = (slice(None), slice(None), *(slice(None, None, s) for s in strides))
            y = ctx.call(operator.getitem, y, index)
    y = ctx.call(torch.permute, y, [0, *range(2, rank), 1])
    return [ctx.method("to", y, torch_dtype(dtype)) if wide else y]


def _wide(ctx: TorchContext, w: Any, wide: bool) -> Any:
    return ctx.method("float", w) if wide else w


# ----------------------------------------------------------------------------
# Fused mx.fast primitives (a Mac or CUDA trace keeps them; the fusion passes rebuild them)
# ----------------------------------------------------------------------------


def _float32(ctx: TorchContext, x: Any, dtype: str) -> Any:
    return x if dtype == "float32" else ctx.method("float", x)


def _cast(ctx: TorchContext, x: Any, dtype: str) -> Any:
    return x if dtype == "float32" else ctx.method("to", x, torch_dtype(dtype))


@torch_op("RMSNorm")
def convert_rms_norm(ctx: TorchContext, node: Node) -> list:
    """RMSNorm(x, weight) [eps] -> torch mean, rsqrt, mul in float32, cast, mul."""
    eps = float(node.arguments[0])
    dtype = ctx.out_info(node).dtype
    x = _float32(ctx, ctx.input(node, 0), dtype)
    mean_sq = ctx.call(torch.mean, ctx.call(torch.mul, x, x), [-1], True)
    y = ctx.call(torch.mul, x, ctx.call(torch.rsqrt, ctx.call(torch.add, mean_sq, eps)))
    # Like MLX: normalize in float32, round to the output type, then scale.
    y = _cast(ctx, y, dtype)
    return [y if _is_const_fill(ctx, node, 1, 1) else ctx.call(torch.mul, y, ctx.input(node, 1))]


@torch_op("LayerNorm")
def convert_layer_norm(ctx: TorchContext, node: Node) -> list:
    """LayerNorm(x, weight, bias) [eps] -> torch mean, sub, rsqrt, mul in float32, cast, mul, add."""
    eps = float(node.arguments[0])
    dtype = ctx.out_info(node).dtype
    x = _float32(ctx, ctx.input(node, 0), dtype)
    centered = ctx.call(torch.sub, x, ctx.call(torch.mean, x, [-1], True))
    var = ctx.call(torch.mean, ctx.call(torch.mul, centered, centered), [-1], True)
    y = _cast(ctx, ctx.call(torch.mul, centered, ctx.call(torch.rsqrt, ctx.call(torch.add, var, eps))), dtype)
    # MLX passes a scalar 1 / 0 for a missing weight / bias.
    if not _is_const_fill(ctx, node, 1, 1):
        y = ctx.call(torch.mul, y, ctx.input(node, 1))
    if len(node.inputs) > 2 and not _is_const_fill(ctx, node, 2, 0):
        y = ctx.call(torch.add, y, ctx.input(node, 2))
    return [y]


def _rope_angles(ctx: TorchContext, node: Node) -> tuple[Any, Any]:
    """cos and sin of the RoPE angles in the input's dtype: (T, dims/2), or (B, 1.., T, dims/2) for vector offsets."""
    x_info, off_info = ctx.in_info(node, 0), ctx.in_info(node, 1)
    freqs = _value_key(ctx, node, 2) if len(node.inputs) > 2 else None
    key = ("rope_angles", node.arguments[0], *node.arguments[2:4], _value_key(ctx, node, 1), off_info.shape,
           x_info.shape[-2], x_info.rank, x_info.dtype, freqs)
    return _memo(ctx, key, lambda: _make_rope_angles(ctx, node))


def _make_rope_angles(ctx: TorchContext, node: Node) -> tuple[Any, Any]:
    dims, _, base, scale = node.arguments[:4]
    x_info, off_info = ctx.in_info(node, 0), ctx.in_info(node, 1)
    half = int(dims) // 2
    pos = ctx.call(torch.arange, ctx.dim(x_info.shape[-2]), dtype=torch.float32)
    offset = ctx.method("float", ctx.input(node, 1))
    if off_info.rank == 1 and off_info.shape[0] != 1:
        # (B,) offsets: one row of positions per batch entry.
        offset = ctx.call(torch.reshape, offset, [-1] + [1] * (x_info.rank - 2))
    pos = ctx.call(torch.add, pos, offset)
    if float(scale) != 1.0:
        pos = ctx.call(torch.mul, pos, float(scale))
    if len(node.inputs) > 2:
        inv_freq = ctx.call(torch.reciprocal, ctx.method("float", ctx.input(node, 2)))
    else:
        # MLX: exp(-arange(half) * log(base) / half), in float32.
        step = np.float32(math.log(float(base)) / half)
        inv_freq = ctx.buffer(np.exp(np.arange(0, -half, -1, dtype=np.float32) * step).astype(np.float32),
                              hint="rope_inv_freq")
    theta = ctx.call(torch.mul, ctx.call(torch.unsqueeze, pos, -1), inv_freq)
    cos, sin = ctx.call(torch.cos, theta), ctx.call(torch.sin, theta)
    return _cast(ctx, cos, x_info.dtype), _cast(ctx, sin, x_info.dtype)


@torch_op("RoPE")
def convert_rope(ctx: TorchContext, node: Node) -> list:
    """RoPE(x, offset[, freqs]) [dims, traditional, base, scale, forward] -> torch arange/cos/sin angles, narrow, mul, add/sub, cat."""
    dims, traditional, forward = rope_dims(node), bool(node.arguments[1]), bool(node.arguments[4])
    info = ctx.in_info(node, 0)
    x, half = ctx.input(node, 0), dims // 2
    cos, sin = _rope_angles(ctx, node)
    if traditional:
        pairs = ctx.call(torch.unflatten, ctx.call(torch.narrow, x, -1, 0, dims), -1, [half, 2])
        x1, x2 = ctx.call(torch.select, pairs, -1, 0), ctx.call(torch.select, pairs, -1, 1)
    else:
        x1, x2 = ctx.call(torch.narrow, x, -1, 0, half), ctx.call(torch.narrow, x, -1, half, half)
    # forward=False is the inverse rotation, by -theta: the sine terms change sign.
    first, second = (torch.sub, torch.add) if forward else (torch.add, torch.sub)
    out1 = ctx.call(first, ctx.call(torch.mul, x1, cos), ctx.call(torch.mul, x2, sin))
    out2 = ctx.call(second, ctx.call(torch.mul, x2, cos), ctx.call(torch.mul, x1, sin))
    if traditional:
        parts = [ctx.call(torch.flatten, ctx.call(torch.stack, [out1, out2], -1), -2)]
    else:
        parts = [out1, out2]
    last = info.shape[-1]
    if dims != last:
        parts.append(ctx.call(torch.narrow, x, -1, dims, ctx.call(operator.sub, ctx.dim(last), dims)
                              if isinstance(last, SymExpr) else int(last) - dims))
    return [ctx.call(torch.cat, parts, -1)]


def _causal_mask(ctx: TorchContext, q_len: Dim, k_len: Dim) -> Any:
    """bool (qL, kL): query i sees key j when j <= i + kL - qL (bottom-right aligned, like MLX)."""
    def make() -> Any:
        if is_static([q_len, k_len]) and q_len * k_len <= 1 << 20:
            return ctx.buffer(np.arange(q_len)[:, None] + (k_len - q_len) >= np.arange(k_len)[None, :],
                              hint="causal_mask")
        q, k = ctx.dim(q_len), ctx.dim(k_len)
        q_idx = ctx.call(torch.arange, ctx.call(operator.sub, k, q), k)
        k_idx = ctx.call(torch.arange, k)
        return ctx.call(torch.ge, ctx.call(torch.unsqueeze, q_idx, 1), k_idx)

    return _memo(ctx, ("causal_mask", q_len, k_len), make)


@torch_op("ScaledDotProductAttention")
def convert_sdpa(ctx: TorchContext, node: Node) -> list:
    """ScaledDotProductAttention(q, k, v[, mask][, sinks]) [scale, causal, has_sinks, logsumexp, force_fused] -> torch mul, matmul, masked_fill/add, softmax (float32), matmul."""
    q_info, k_info = ctx.in_info(node, 0), ctx.in_info(node, 1)
    scale, causal, has_sinks = sdpa_args(node, q_info, k_info)
    batch, heads, kv_heads, q_len, k_len, _, rep = attention_shape(node, q_info, k_info)
    dtype = ctx.out_info(node).dtype
    q = ctx.call(torch.mul, ctx.input(node, 0), float(scale))
    k, v = ctx.input(node, 1), ctx.input(node, 2)
    if rep > 1:
        # Grouped heads as MLX does it: (B, Nkv, rep, qL, D) against (B, Nkv, 1, kL, D).
        q = ctx.call(torch.unflatten, q, 1, [kv_heads, rep])
        k, v = (ctx.call(torch.unsqueeze, t, 2) for t in (k, v))
    scores = ctx.call(torch.matmul, q, ctx.call(torch.transpose, k, -1, -2))
    if causal or len(node.inputs) - 3 - int(has_sinks):
        if causal:
            mask, mask_dtype = _causal_mask(ctx, q_len, k_len), "bool"
        else:
            # Look through MLX's broadcast of the mask to (B, Nq, qL, kL).
            name = node.inputs[3]
            src = ir_producer(ctx.graph, name)
            if src is not None and src.primitive == "Broadcast":
                name = src.inputs[0]
            mask, mask_shape, mask_dtype = ctx.values[name], ctx.graph.tensors[name].shape, ctx.in_info(node, 3).dtype
            if rep > 1 and len(mask_shape) >= 3 and mask_shape[-3] != 1:
                mask = ctx.call(torch.unflatten, ctx.input(node, 3), 1, [kv_heads, rep])
            elif rep > 1 and len(mask_shape) >= 3:
                mask = ctx.call(torch.unsqueeze, mask, -3)
        if mask_dtype == "bool":
            lowest = float(torch.finfo(torch_dtype(dtype)).min)
            scores = ctx.method("masked_fill", scores, ctx.call(torch.logical_not, mask), lowest)
        else:
            scores = ctx.call(torch.add, scores, mask)
    if has_sinks:
        # One extra logit per head that takes part in the softmax, then is dropped.
        sinks = ctx.input(node, len(node.inputs) - 1)
        lead = [kv_heads, rep] if rep > 1 else [heads]
        sinks = ctx.call(torch.reshape, sinks, [1, *lead, 1, 1])
        sinks = ctx.method("expand", sinks, [ctx.dim(batch), *lead, ctx.dim(q_len), 1])
        scores = ctx.call(torch.cat, [ctx.method("to", sinks, torch_dtype(dtype)), scores], -1)
    # MLX's softmax is precise: float32 inside for half types.
    probs = _cast(ctx, ctx.call(torch.softmax, _float32(ctx, scores, dtype), -1), dtype)
    if has_sinks:
        probs = ctx.call(torch.narrow, probs, -1, 1, ctx.dim(k_len))
    out = ctx.call(torch.matmul, probs, v)
    if rep > 1:
        out = ctx.call(torch.flatten, out, 1, 2)
    return [out]


# ----------------------------------------------------------------------------
# Hadamard
# ----------------------------------------------------------------------------


@torch_op("Hadamard")
def convert_hadamard(ctx: TorchContext, node: Node) -> list:
    """Hadamard(x) [scale] -> torch.matmul with MLX's own (scaled) Hadamard matrix, in float32."""
    import mlx.core as mx

    info = ctx.in_info(node, 0)
    n = static_last_axis(node, info)
    # MLX's transform is linear: its rows for the identity are its matrix (2^k and the
    # 12/20/28 * 2^k sizes alike).
    matrix = np.array(mx.hadamard_transform(mx.eye(int(n), dtype=mx.float32), scale=float(node.arguments[0])))
    x = _float32(ctx, ctx.input(node, 0), info.dtype)
    out = ctx.call(torch.matmul, x, ctx.buffer(matrix, hint="hadamard"))
    return [_cast(ctx, out, info.dtype)]
