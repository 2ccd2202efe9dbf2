"""Neural-network primitives: convolution, pooling views, and the fused mx.fast ops."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from ...dtypes import numpy_dtype
from ...graph import Dim, Node, SymExpr, is_static
from ..args import args_error, attention_shape, check_conv_padding, rope_dims, sdpa_args, static_ints
from ..common import ir_producer
from .context import ConvertContext, onnx_op
from .shape import INT64_MAX, reshape

INT64_MIN = -INT64_MAX - 1
# mlx::core::Reduce::ReduceType codes that a pooling window can feed.
_REDUCE_SUM, _REDUCE_MAX = 2, 5


def _to_channels_first(rank: int) -> list[int]:
    return [0, rank - 1, *range(1, rank - 1)]


def _to_channels_last(rank: int) -> list[int]:
    return [0, *range(2, rank), 1]


def _ints(ctx: ConvertContext, values: Sequence[int]) -> str:
    return ctx.const(np.array(values, np.int64))


def _slice(ctx: ConvertContext, x: str, start: int, end: int, axis: int = -1, step: int = 1) -> str:
    inputs = [x, _ints(ctx, [start]), _ints(ctx, [end]), _ints(ctx, [axis])]
    if step != 1:
        inputs.append(_ints(ctx, [step]))
    return ctx.make("Slice", inputs)


def _memo(ctx: ConvertContext, key: tuple, make: Callable[[], Any]) -> Any:
    """Reuse values built once per lowering (every layer's q and k RoPE share their angles)."""
    # A public per-lowering cache on ConvertContext would replace this attribute.
    memo = ctx.__dict__.setdefault("_nn_memo", {})
    if key not in memo:
        memo[key] = make()
    return memo[key]


def _value_key(ctx: ConvertContext, name: str) -> Any:
    """Small constants compare by value (each mx.fast.rope call makes its own offset array)."""
    init = ctx.initializers.get(name)
    if init is not None and init.size <= 64:
        value = init.value()
        return ("const", value.dtype.str, value.shape, value.tobytes())
    return name


# ----------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------


def _conv_weight(ctx: ConvertContext, w: str, wshape: list[int], flip: bool, groups: int, transposed: bool) -> str:
    """MLX's (O, k..., I/g) weight as ONNX Conv's (O, I/g, k...) or ConvTranspose's (I, O/g, k...)."""
    rank = len(wshape)
    perm = _to_channels_first(rank)
    out_ch, kernel, in_g = wshape[0], wshape[1:-1], wshape[-1]
    grouped = [groups, out_ch // groups, in_g, *kernel]
    shape = [in_g * groups, out_ch // groups, *kernel] if transposed else [out_ch, in_g, *kernel]
    # ConvTranspose correlates with the flipped kernel, so flip=False needs a flip here.
    do_flip = flip != transposed
    init = ctx.initializers.get(w)
    if init is not None:

        def make() -> np.ndarray:
            arr = np.transpose(init.value(), perm)
            if do_flip:
                arr = arr[(slice(None), slice(None)) + (slice(None, None, -1),) * (rank - 2)]
            if transposed:
                arr = arr.reshape(grouped).swapaxes(1, 2).reshape(shape)
            return np.ascontiguousarray(arr)

        # A weight shared by several convolutions is laid out once.
        return _memo(ctx, ("conv_w", w, do_flip, transposed, groups),
                     lambda: ctx.lazy_const(shape, init.dtype, make, hint="conv_w"))
    wt = ctx.make("Transpose", [w], perm=perm)
    if do_flip:
        d = rank - 2
        wt = ctx.make("Slice", [wt, _ints(ctx, [-1] * d), _ints(ctx, [INT64_MIN] * d),
                                _ints(ctx, list(range(2, rank))), _ints(ctx, [-1] * d)])
    if transposed and groups == 1:
        wt = ctx.make("Transpose", [wt], perm=[1, 0, *range(2, rank)])
    elif transposed:
        wt = ctx.make("Reshape", [wt, _ints(ctx, grouped)])
        wt = ctx.make("Transpose", [wt], perm=[0, 2, 1, *range(3, rank + 1)])
        wt = ctx.make("Reshape", [wt, _ints(ctx, shape)])
    return wt


@onnx_op("Convolution")
def convert_convolution(ctx: ConvertContext, node: Node) -> list[str]:
    """Convolution(x, w) [strides, pad_lo, pad_hi, kernel_dilation, input_dilation, groups, flip] -> ONNX Transpose, Conv or ConvTranspose (+ Pad, Slice), Transpose."""
    names = ("kernel_strides", "padding_lo", "padding_hi", "kernel_dilation", "input_dilation")
    strides, pad_lo, pad_hi, kdil, idil = (static_ints(node, a, n) for a, n in zip(node.arguments[:5], names))
    groups, flip = int(node.arguments[5]), bool(node.arguments[6])
    rank = ctx.in_info(node, 0).rank
    wshape = static_ints(node, ctx.in_info(node, 1).shape, "weight shape")
    kernel = wshape[1:-1]
    check_conv_padding(node, pad_lo, pad_hi)
    x = ctx.make("Transpose", [ctx.input(node, 0)], perm=_to_channels_first(rank))
    if all(i == 1 for i in idil):
        w = _conv_weight(ctx, ctx.input(node, 1), wshape, flip, groups, transposed=False)
        y = ctx.make("Conv", [x, w], kernel_shape=kernel, strides=strides, dilations=kdil,
                     pads=pad_lo + pad_hi, group=groups)
        return [ctx.make("Transpose", [y], perm=_to_channels_last(rank))]
    # Input dilation is a transposed convolution: zeros between the inputs, then a
    # correlation. ConvTranspose computes exactly that with these pads (derivation:
    # output position i*D + k'*kd - begin for flipped kernel tap k' = K-1-k).
    w = _conv_weight(ctx, ctx.input(node, 1), wshape, flip, groups, transposed=True)
    begin = [kd * (k - 1) - p for kd, k, p in zip(kdil, kernel, pad_lo)]
    end = [kd * (k - 1) - p for kd, k, p in zip(kdil, kernel, pad_hi)]
    y = ctx.make("ConvTranspose", [x, w], kernel_shape=kernel, strides=idil, dilations=kdil, group=groups,
                 pads=[max(b, 0) for b in begin] + [max(e, 0) for e in end])
    if min(begin + end) < 0:
        # Padding beyond the full transposed convolution only adds zeros.
        extra = [0, 0] + [max(-b, 0) for b in begin] + [0, 0] + [max(-e, 0) for e in end]
        y = ctx.make("Pad", [y, _ints(ctx, extra)])
    if any(s != 1 for s in strides):
        d = rank - 2
        y = ctx.make("Slice", [y, _ints(ctx, [0] * d), _ints(ctx, [INT64_MAX] * d),
                               _ints(ctx, list(range(2, rank))), _ints(ctx, strides)])
    return [ctx.make("Transpose", [y], perm=_to_channels_last(rank))]


# ----------------------------------------------------------------------------
# AsStrided: pooling windows and general strided views
# ----------------------------------------------------------------------------


def _pool_window(ctx: ConvertContext, node: Node) -> str | None:
    """MaxPool/AveragePool when the view is a pooling window that one Reduce collapses.

    Returns the pooled tensor with size-1 window axes, (N, out..., 1..., C): the
    Reduce that follows then reduces axes of size 1, which leaves it unchanged.
    """
    shape, strides, offset = node.arguments[:3]
    graph = ctx.graph
    users = graph.consumers().get(node.outputs[0], [])
    if offset != 0 or not is_static(strides) or len(users) != 1 or users[0].primitive != "Reduce":
        return None
    if node.outputs[0] in graph.output_sources.values():
        return None
    src = ir_producer(graph, node.inputs[0])
    if src is None or src.primitive not in ("Flatten", "Reshape"):
        return None
    info = graph.tensors[src.inputs[0]]
    rank, d = info.rank, info.rank - 2
    kind, axes = int(users[0].arguments[0]), sorted(int(a) % len(shape) for a in users[0].arguments[1])
    if not 1 <= d <= 3 or len(shape) != 2 * d + 2 or axes != list(range(d + 1, 2 * d + 1)):
        return None
    pool_dtypes = {"float16", "float32", "float64"} | ({"int8", "uint8"} if kind == _REDUCE_MAX else set())
    if kind not in (_REDUCE_SUM, _REDUCE_MAX) or info.dtype not in pool_dtypes:
        return None
    spatial, channels = list(info.shape[1:-1]), info.shape[-1]
    if not is_static(spatial) or not is_static(channels) or not is_static(shape[1:]):
        return None
    if shape[0] != info.shape[0] or shape[-1] != channels or (channels != 1 and strides[-1] != 1):
        return None
    row = [math.prod(spatial[i + 1:]) * channels for i in range(d)]
    if shape[0] != 1 and strides[0] != math.prod(spatial) * channels:
        return None
    steps, dils = [], []
    for i in range(d):
        out, k = shape[1 + i], shape[1 + d + i]
        s = strides[1 + i] // row[i] if out > 1 else 1
        dil = strides[1 + d + i] // row[i] if k > 1 else 1
        exact = (out == 1 or strides[1 + i] == s * row[i]) and (k == 1 or strides[1 + d + i] == dil * row[i])
        if s < 1 or dil < 1 or not exact:
            return None
        if out != (spatial[i] - dil * (k - 1) - 1) // s + 1:
            return None
        steps.append(s)
        dils.append(dil)
    kernel = list(shape[1 + d:1 + 2 * d])
    # AveragePool takes dilations only from opset 19: keep the general form below that.
    if kind == _REDUCE_SUM and any(v != 1 for v in dils) and ctx.opset < 19:
        return None
    x, pads = _pool_padding(ctx, src.inputs[0], kind, kernel)
    x = ctx.make("Transpose", [x], perm=_to_channels_first(rank))
    attrs = {"kernel_shape": kernel, "strides": steps, "dilations": dils if any(v != 1 for v in dils) else None,
             "pads": pads if any(pads) else None}
    if kind == _REDUCE_MAX:
        y = ctx.make("MaxPool", [x], **attrs)
    else:
        # The padded zeros count in the window, as in MLX's sum over the padded input.
        y = ctx.make("AveragePool", [x], count_include_pad=1 if any(pads) else None, **attrs)
    y = ctx.make("Transpose", [y], perm=_to_channels_last(rank))
    if kind == _REDUCE_SUM:
        y = ctx.make("Mul", [y, ctx.const(np.array(math.prod(kernel), numpy_dtype(info.dtype)))])
    return ctx.make("Unsqueeze", [y, _ints(ctx, list(range(d + 1, 2 * d + 1)))])


def _pool_padding(ctx: ConvertContext, name: str, kind: int, kernel: list[int]) -> tuple[str, list[int]]:
    """Fold an explicit spatial Pad (-inf for max, 0 for sum) in front of the window into the pool's pads."""
    graph = ctx.graph
    pad = ir_producer(graph, name)
    rank = graph.tensors[name].rank
    none = (ctx.values[name], [0] * (2 * (rank - 2)))
    if pad is None or pad.primitive != "Pad" or len(graph.consumers().get(name, [])) != 1:
        return none
    if name in graph.output_sources.values() or not is_static(pad.arguments[:3]):
        return none
    value = ctx.const_value(ctx.values[pad.inputs[1]]) if len(pad.inputs) > 1 else None
    fill = -np.inf if kind == _REDUCE_MAX else 0
    if value is None or value.size != 1 or float(value.reshape(())) != fill:
        return none
    lo, hi = [0] * rank, [0] * rank
    for axis, low, high in zip(*pad.arguments[:3]):
        lo[int(axis) % rank], hi[int(axis) % rank] = int(low), int(high)
    # Pools pad spatial axes only, by less than the kernel (ONNX Runtime's limit).
    if lo[0] or hi[0] or lo[-1] or hi[-1] or any(p >= k for p, k in zip(lo[1:-1] + hi[1:-1], kernel * 2)):
        return none
    return ctx.values[pad.inputs[0]], lo[1:-1] + hi[1:-1]


def _strided_index(ctx: ConvertContext, shape: Sequence[Dim], strides: Sequence[Dim], offset: Dim) -> str:
    """int64 indices offset + sum_k i_k * stride_k, of the view's shape."""
    rank = len(shape)
    if is_static([shape, strides, offset]) and math.prod(shape) <= 1 << 16:
        idx = np.full([1] * rank, int(offset), np.int64)
        for k, (n, s) in enumerate(zip(shape, strides)):
            idx = idx + (np.arange(n, dtype=np.int64) * int(s)).reshape([-1 if j == k else 1 for j in range(rank)])
        return ctx.const(np.broadcast_to(idx, tuple(shape)).copy())
    # Per-axis ramps that broadcast together: never a constant as large as the view.
    if isinstance(offset, SymExpr):
        idx = ctx.make("Reshape", [ctx.dim(offset), _ints(ctx, [1] * rank)])
    else:
        idx = ctx.const(np.full([1] * rank, int(offset), np.int64))
    for k, (n, s) in enumerate(zip(shape, strides)):
        if n == 1:
            continue
        axis_shape = [-1 if j == k else 1 for j in range(rank)]
        if is_static([n, s]):
            ramp = ctx.const((np.arange(n, dtype=np.int64) * int(s)).reshape(axis_shape))
        else:
            ramp = ctx.make("Range", [ctx.scalar(0), ctx.scalar(n), ctx.scalar(1)])
            ramp = ctx.make("Mul", [ramp, ctx.scalar(s)])
            ramp = ctx.make("Reshape", [ramp, _ints(ctx, axis_shape)])
        idx = ctx.make("Add", [idx, ramp])
    return idx


@onnx_op("AsStrided")
def convert_as_strided(ctx: ConvertContext, node: Node) -> list[str]:
    """AsStrided(x) [shape, strides, offset] -> ONNX MaxPool/AveragePool for a pooling window, else Gather."""
    pooled = _pool_window(ctx, node)
    if pooled is not None:
        return [pooled]
    shape, strides, offset = node.arguments[:3]
    x = ctx.input(node, 0)
    if ctx.in_info(node, 0).rank != 1:
        x = ctx.make("Reshape", [x, _ints(ctx, [-1])])
    return [ctx.make("Gather", [x, _strided_index(ctx, list(shape), list(strides), offset)], axis=0)]


# ----------------------------------------------------------------------------
# Fused mx.fast primitives (a Mac or CUDA trace keeps them; a CPU trace decomposes them)
# ----------------------------------------------------------------------------


def _is_const_fill(ctx: ConvertContext, name: str, value: float) -> bool:
    arr = ctx.const_value(name) if ctx.is_const(name) and ctx.initializers[name].size <= 1 else None
    return arr is not None and bool(np.all(arr == value))


def _reduce_mean_last(ctx: ConvertContext, x: str) -> str:
    if ctx.opset >= 18:
        return ctx.make("ReduceMean", [x, _ints(ctx, [-1])], keepdims=1)
    return ctx.make("ReduceMean", [x], axes=[-1], keepdims=1)


def _to_float32(ctx: ConvertContext, x: str, dtype: str) -> str:
    return x if dtype == "float32" else ctx.cast(x, "float32")


@onnx_op("RMSNorm")
def convert_rms_norm(ctx: ConvertContext, node: Node) -> list[str]:
    """RMSNorm(x, weight) [eps] -> ONNX Mul, ReduceMean, Add, Sqrt, Div in float32, Cast, Mul."""
    eps = float(node.arguments[0])
    dtype = ctx.out_info(node).dtype
    x = _to_float32(ctx, ctx.input(node, 0), dtype)
    mean_sq = _reduce_mean_last(ctx, ctx.make("Mul", [x, x]))
    rms = ctx.make("Sqrt", [ctx.make("Add", [mean_sq, ctx.const(np.array(eps, np.float32))])])
    y = ctx.make("Div", [x, rms])
    # Like MLX: normalize in float32, round to the output type, then scale.
    y = y if dtype == "float32" else ctx.cast(y, dtype)
    w = ctx.input(node, 1)
    return [y if _is_const_fill(ctx, w, 1) else ctx.make("Mul", [y, w])]


@onnx_op("RMSNorm", since=23)
def convert_rms_norm_23(ctx: ConvertContext, node: Node) -> list[str]:
    """RMSNorm(x, weight) [eps] -> ONNX RMSNormalization (float32 stash, like MLX)."""
    eps = float(node.arguments[0])
    return [ctx.make("RMSNormalization", [ctx.input(node, 0), ctx.input(node, 1)], axis=-1, epsilon=eps, stash_type=1)]


@onnx_op("LayerNorm")
def convert_layer_norm(ctx: ConvertContext, node: Node) -> list[str]:
    """LayerNorm(x, weight, bias) [eps] -> ONNX LayerNormalization (float32 stash, like MLX)."""
    eps = float(node.arguments[0])
    # MLX passes a scalar 1 / 0 for a missing weight / bias.
    inputs = [ctx.input(node, 0), ctx.input(node, 1)]
    if len(node.inputs) > 2 and not _is_const_fill(ctx, ctx.input(node, 2), 0):
        inputs.append(ctx.input(node, 2))
    return [ctx.make("LayerNormalization", inputs, axis=-1, epsilon=eps, stash_type=1)]


def _rope_angles(ctx: ConvertContext, node: Node, per_batch_rank: int) -> tuple[str, str]:
    """cos and sin of the RoPE angles in the input's dtype: (T, dims/2), or per batch row
    (B, 1.., T, dims/2) with ``per_batch_rank`` axes when the offset is a vector."""
    key = ("rope_angles", per_batch_rank, *_rope_key(ctx, node))
    return _memo(ctx, key, lambda: _make_rope_angles(ctx, node, per_batch_rank))


def _rope_key(ctx: ConvertContext, node: Node) -> tuple:
    """What the angles depend on: dims, base, scale, offset, sequence length, dtype, freqs."""
    x_info, off_info = ctx.in_info(node, 0), ctx.in_info(node, 1)
    freqs = _value_key(ctx, ctx.input(node, 2)) if len(node.inputs) > 2 else None
    return (node.arguments[0], *node.arguments[2:4], _value_key(ctx, ctx.input(node, 1)), off_info.shape,
            x_info.shape[-2], x_info.dtype, freqs)


def _make_rope_angles(ctx: ConvertContext, node: Node, per_batch_rank: int) -> tuple[str, str]:
    dims, _, base, scale = node.arguments[:4]
    x_info, off_info = ctx.in_info(node, 0), ctx.in_info(node, 1)
    seq = x_info.shape[-2]
    half = int(dims) // 2
    if isinstance(seq, SymExpr):
        pos = ctx.cast(ctx.make("Range", [ctx.scalar(0), ctx.scalar(seq), ctx.scalar(1)]), "float32")
    else:
        pos = ctx.const(np.arange(seq, dtype=np.float32))
    offset = ctx.cast(ctx.input(node, 1), "float32")
    vector = off_info.rank == 1 and off_info.shape[0] != 1
    if vector:
        # (B,) offsets: one row of positions per batch entry.
        offset = ctx.make("Reshape", [offset, _ints(ctx, [-1] + [1] * (per_batch_rank - 1))])
    pos = ctx.make("Add", [pos, offset])
    if float(scale) != 1.0:
        pos = ctx.make("Mul", [pos, ctx.const(np.array(scale, np.float32))])
    if len(node.inputs) > 2:
        inv_freq = ctx.make("Reciprocal", [ctx.input(node, 2)])
    else:
        # MLX: exp(-arange(half) * log(base) / half), in float32.
        step = np.float32(math.log(float(base)) / half)
        inv_freq = ctx.const(np.exp(np.arange(0, -half, -1, dtype=np.float32) * step).astype(np.float32))
    theta = ctx.make("Mul", [ctx.make("Unsqueeze", [pos, _ints(ctx, [-1])]), inv_freq])
    cos, sin = ctx.make("Cos", [theta]), ctx.make("Sin", [theta])
    if x_info.dtype != "float32":
        cos, sin = ctx.cast(cos, x_info.dtype), ctx.cast(sin, x_info.dtype)
    return cos, sin


@onnx_op("RoPE")
def convert_rope(ctx: ConvertContext, node: Node) -> list[str]:
    """RoPE(x, offset[, freqs]) [dims, traditional, base, scale, forward] -> ONNX Range/Sin/Cos angles, Slice, Mul, Add/Sub, Concat."""
    rope_dims(node)
    dims, traditional, forward = int(node.arguments[0]), bool(node.arguments[1]), bool(node.arguments[4])
    info = ctx.in_info(node, 0)
    x, half = ctx.input(node, 0), dims // 2
    cos, sin = _rope_angles(ctx, node, info.rank - 1)
    if traditional:
        x1, x2 = _slice(ctx, x, 0, dims, step=2), _slice(ctx, x, 1, dims, step=2)
    else:
        x1, x2 = _slice(ctx, x, 0, half), _slice(ctx, x, half, dims)
    # forward=False is the inverse rotation, by -theta: the sine terms change sign.
    first, second = ("Sub", "Add") if forward else ("Add", "Sub")
    out1 = ctx.make(first, [ctx.make("Mul", [x1, cos]), ctx.make("Mul", [x2, sin])])
    out2 = ctx.make(second, [ctx.make("Mul", [x2, cos]), ctx.make("Mul", [x1, sin])])
    if traditional:
        pairs = ctx.make("Concat", [ctx.make("Unsqueeze", [o, _ints(ctx, [-1])]) for o in (out1, out2)], axis=-1)
        lead = list(info.shape[:-1])
        parts = [reshape(ctx, pairs, lead + [half, 2], lead + [dims])]
    else:
        parts = [out1, out2]
    if dims < info.shape[-1]:
        parts.append(_slice(ctx, x, dims, INT64_MAX))
    return [ctx.make("Concat", parts, axis=-1)]


@onnx_op("RoPE", since=23)
def convert_rope_23(ctx: ConvertContext, node: Node) -> list[str]:
    """RoPE(x, offset[, freqs]) [dims, traditional, base, scale, forward] -> ONNX RotaryEmbedding with computed cos/sin caches."""
    rope_dims(node)
    dims, traditional, forward = int(node.arguments[0]), bool(node.arguments[1]), bool(node.arguments[4])
    info = ctx.in_info(node, 0)
    x, shape = ctx.input(node, 0), list(info.shape)
    # RotaryEmbedding takes rank 3 or 4: fold the axes between batch and sequence into one.
    if info.rank > 4 and not is_static(shape[1:-2]):
        raise args_error(node, f"the axes between batch and sequence must be static; got {info.describe()}")
    shape4 = [shape[0], math.prod(shape[1:-2]), *shape[-2:]] if info.rank > 4 else shape
    x = reshape(ctx, x, shape, shape4)

    def caches() -> tuple[str, str]:
        # RotaryEmbedding wants caches of exactly (B, T, dims/2).
        cos, sin = _rope_angles(ctx, node, 2)
        cache_shape = ctx.shape_tensor([shape[0], shape[-2], dims // 2])
        cos, sin = ctx.make("Expand", [cos, cache_shape]), ctx.make("Expand", [sin, cache_shape])
        return cos, sin if forward else ctx.make("Neg", [sin])

    cos, sin = _memo(ctx, ("rope_caches", forward, shape[0], *_rope_key(ctx, node)), caches)
    y = ctx.make("RotaryEmbedding", [x, cos, sin], interleaved=int(traditional),
                 rotary_embedding_dim=dims if dims < shape[-1] else None,
                 num_heads=1 if info.rank == 3 else None)
    return [reshape(ctx, y, shape4, shape)]


def _causal_mask(ctx: ConvertContext, q_len: Dim, k_len: Dim) -> str:
    """bool (qL, kL): query i sees key j when j <= i + kL - qL (bottom-right aligned, like MLX)."""
    def make() -> str:
        if is_static([q_len, k_len]) and q_len * k_len <= 1 << 20:
            return ctx.const(np.arange(q_len)[:, None] + (k_len - q_len) >= np.arange(k_len)[None, :])
        first = ctx.make("Sub", [ctx.scalar(k_len), ctx.scalar(q_len)])
        q_idx = ctx.make("Range", [first, ctx.scalar(k_len), ctx.scalar(1)])
        k_idx = ctx.make("Range", [ctx.scalar(0), ctx.scalar(k_len), ctx.scalar(1)])
        return ctx.make("GreaterOrEqual", [ctx.make("Unsqueeze", [q_idx, _ints(ctx, [1])]), k_idx])

    return _memo(ctx, ("causal_mask", q_len, k_len), make)


def _sdpa_mask(ctx: ConvertContext, node: Node) -> tuple[str, tuple[Dim, ...]]:
    """The mask input and its shape, looking through MLX's broadcast to (B, Nq, qL, kL)."""
    name = node.inputs[3]
    src = ir_producer(ctx.graph, name)
    if src is not None and src.primitive == "Broadcast":
        name = src.inputs[0]
    return ctx.values[name], ctx.graph.tensors[name].shape


@onnx_op("ScaledDotProductAttention")
def convert_sdpa(ctx: ConvertContext, node: Node) -> list[str]:
    """ScaledDotProductAttention(q, k, v[, mask][, sinks]) [scale, causal, has_sinks, logsumexp, force_fused] -> ONNX Mul, MatMul, Where/Add, Softmax (float32), MatMul."""
    q_info, k_info = ctx.in_info(node, 0), ctx.in_info(node, 1)
    scale, causal, has_sinks = sdpa_args(node, q_info, k_info)
    batch, heads, kv_heads, q_len, k_len, head_dim, rep = attention_shape(node, q_info, k_info)
    dtype = ctx.out_info(node).dtype
    q = ctx.make("Mul", [ctx.input(node, 0), ctx.const(np.array(scale, numpy_dtype(dtype)))])
    k, v = ctx.input(node, 1), ctx.input(node, 2)
    if rep > 1:
        # Grouped heads as MLX does it: (B, Nkv, rep, qL, D) against (B, Nkv, 1, kL, D).
        q = reshape(ctx, q, q_info.shape, [batch, kv_heads, rep, q_len, head_dim])
        k, v = (ctx.make("Unsqueeze", [t, _ints(ctx, [2])]) for t in (k, v))
    rank = 5 if rep > 1 else 4
    perm = [*range(rank - 2), rank - 1, rank - 2]
    scores = ctx.make("MatMul", [q, ctx.make("Transpose", [k], perm=perm)])
    n_mask = len(node.inputs) - 3 - int(has_sinks)
    if causal or n_mask:
        if causal:
            mask, mask_dtype = _causal_mask(ctx, q_len, k_len), "bool"
        else:
            mask, mask_shape = _sdpa_mask(ctx, node)
            mask_dtype = ctx.in_info(node, 3).dtype
            if rep > 1 and len(mask_shape) >= 3 and mask_shape[-3] != 1:
                mask = reshape(ctx, ctx.input(node, 3), ctx.in_info(node, 3).shape,
                               [batch, kv_heads, rep, q_len, k_len])
            elif rep > 1 and len(mask_shape) >= 3:
                mask = ctx.make("Unsqueeze", [mask, _ints(ctx, [-3])])
        if mask_dtype == "bool":
            lowest = np.finfo(numpy_dtype(dtype)).min
            scores = ctx.make("Where", [mask, scores, ctx.const(np.array(lowest, numpy_dtype(dtype)))])
        else:
            scores = ctx.make("Add", [scores, mask])
    if has_sinks:
        # One extra logit per head that takes part in the softmax, then is dropped.
        sink_shape = [1, kv_heads, rep, 1, 1] if rep > 1 else [1, heads, 1, 1]
        sinks = ctx.make("Reshape", [ctx.input(node, len(node.inputs) - 1), _ints(ctx, sink_shape)])
        full = [batch, kv_heads, rep, q_len, 1] if rep > 1 else [batch, heads, q_len, 1]
        sinks = ctx.make("Expand", [sinks, ctx.shape_tensor(full)])
        scores = ctx.make("Concat", [sinks, scores], axis=-1)
    # MLX's softmax is precise: float32 inside for half types.
    probs = ctx.make("Softmax", [_to_float32(ctx, scores, dtype)], axis=-1)
    probs = probs if dtype == "float32" else ctx.cast(probs, dtype)
    if has_sinks:
        probs = _slice(ctx, probs, 1, INT64_MAX)
    out = ctx.make("MatMul", [probs, v])
    if rep > 1:
        v_dim = ctx.in_info(node, 2).shape[3]
        out = reshape(ctx, out, [batch, kv_heads, rep, q_len, v_dim], [batch, heads, q_len, v_dim])
    return [out]


@onnx_op("ScaledDotProductAttention", since=23)
def convert_sdpa_23(ctx: ConvertContext, node: Node) -> list[str]:
    """ScaledDotProductAttention(q, k, v[, mask][, sinks]) [scale, causal, has_sinks, logsumexp, force_fused] -> ONNX Attention (GQA, is_causal); attention sinks use the opset-17 form."""
    scale, causal, has_sinks = sdpa_args(node, ctx.in_info(node, 0), ctx.in_info(node, 1))
    if has_sinks:
        return convert_sdpa(ctx, node)
    q_len, k_len = ctx.in_info(node, 0).shape[2], ctx.in_info(node, 1).shape[2]
    inputs = [ctx.input(node, i) for i in range(3)]
    if len(node.inputs) > 3:
        inputs.append(_sdpa_mask(ctx, node)[0])
    elif causal and q_len != k_len:
        # Attention's is_causal aligns top-left without a past cache; MLX aligns bottom-right.
        inputs.append(_causal_mask(ctx, q_len, k_len))
        causal = False
    return [ctx.make("Attention", inputs, scale=scale, is_causal=int(causal) or None)]
