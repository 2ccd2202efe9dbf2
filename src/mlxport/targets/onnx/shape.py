"""Layout primitives: reshape, broadcast, transpose, slicing, padding, concatenation, casts, ranges."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ...dtypes import numpy_dtype, onnx_dtype
from ...graph import Dim, Node, SymExpr
from ..args import arange_args, args_error, check_inverted_count, static_ints
from ..common import arange_static, dim_add, dim_scale
from .context import ConvertContext, onnx_op

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
# Above this many elements a static float Arange becomes an ONNX Range instead of a constant.
_ARANGE_CONST_LIMIT = 4096


# ----------------------------------------------------------------------------
# Helpers shared with index.py
# ----------------------------------------------------------------------------


def ints_const(ctx: ConvertContext, values: Sequence[int]) -> str:
    return ctx.const(np.array(list(values), dtype=np.int64).reshape(len(values)))


def const_ints(ctx: ConvertContext, name: str) -> list[int] | None:
    """The values of a small constant int tensor, or None when computed at run time."""
    value = ctx.const_value(name)
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def reshape(ctx: ConvertContext, x: str, in_shape: Sequence[Dim], out_shape: Sequence[Dim]) -> str:
    """Reshape with a constant target whenever dynamic dims allow (0 = keep, -1 = infer)."""
    if tuple(in_shape) == tuple(out_shape):
        return x
    target: list[Dim] = list(out_shape)
    if any(isinstance(d, SymExpr) for d in target):
        if 0 in target:
            # A literal 0 would mean "copy" to Reshape: compute every dim instead.
            return ctx.make("Reshape", [x, ctx.shape_tensor(target)], allowzero=1)
        for i, d in enumerate(target):
            if isinstance(d, SymExpr) and i < len(in_shape) and in_shape[i] == d:
                target[i] = 0
        dynamic = [i for i, d in enumerate(target) if isinstance(d, SymExpr)]
        if len(dynamic) == 1:
            target[dynamic[0]] = -1
    elif 0 in target:
        # A zero-size dim would mean "copy" to Reshape without allowzero.
        return ctx.make("Reshape", [x, ctx.shape_tensor(target)], allowzero=1)
    return ctx.make("Reshape", [x, ctx.shape_tensor(target)])


def slice_axes(ctx: ConvertContext, x: str, axes: Sequence[int], starts: Sequence[Dim], ends: Sequence[Dim],
               steps: Sequence[int] | None = None) -> str:
    """ONNX Slice over ``axes`` (ends may be INT64_MAX/INT64_MIN; dims may be SymExprs)."""
    inputs = [x, ctx.shape_tensor(starts), ctx.shape_tensor(ends), ints_const(ctx, axes)]
    if steps is not None and any(s != 1 for s in steps):
        inputs.append(ints_const(ctx, steps))
    return ctx.make("Slice", inputs)


def _reshape_node(ctx: ConvertContext, node: Node) -> list[str]:
    return [reshape(ctx, ctx.input(node, 0), ctx.in_info(node, 0).shape, ctx.out_info(node).shape)]


# ----------------------------------------------------------------------------
# Reshapes and layout
# ----------------------------------------------------------------------------


@onnx_op("Reshape", "Flatten", "Unflatten")
def convert_reshape(ctx: ConvertContext, node: Node) -> list[str]:
    """Reshape(x) [shape] / Flatten [start, end] / Unflatten [axis, shape] -> ONNX Reshape to the output shape."""
    return _reshape_node(ctx, node)


@onnx_op("ExpandDims")
def convert_expand_dims(ctx: ConvertContext, node: Node) -> list[str]:
    """ExpandDims(x) [axes] -> ONNX Unsqueeze."""
    rank = ctx.out_info(node).rank
    axes = sorted(a % rank for a in static_ints(node, node.arguments[0], "axes"))
    return [ctx.make("Unsqueeze", [ctx.input(node, 0), ints_const(ctx, axes)])]


@onnx_op("Squeeze")
def convert_squeeze(ctx: ConvertContext, node: Node) -> list[str]:
    """Squeeze(x) [axes] -> ONNX Squeeze (nothing when it undoes an Unsqueeze)."""
    rank = ctx.in_info(node, 0).rank
    axes = sorted(a % rank for a in static_ints(node, node.arguments[0], "axes"))
    x = ctx.input(node, 0)
    if not axes:
        return [x]
    prod = ctx.producer(x)
    # MLX's Gather output carries unit slice dims that the next Squeeze drops again.
    if prod is not None and prod.op_type == "Unsqueeze" and const_ints(ctx, prod.input[1]) == axes:
        return [prod.input[0]]
    return [ctx.make("Squeeze", [x, ints_const(ctx, axes)])]


def _expand_to(ctx: ConvertContext, node: Node) -> str:
    """Expand input 0 to the output shape; no Expand when only leading unit dims are added."""
    src = ctx.in_info(node, 0).shape
    out = ctx.out_info(node).shape
    pad = len(out) - len(src)
    target = [d if i < pad or src[i - pad] != d else 1 for i, d in enumerate(out)]
    x = ctx.input(node, 0)
    if all(t == 1 for t in target):
        return x if pad == 0 else ctx.make("Unsqueeze", [x, ints_const(ctx, range(pad))])
    return ctx.make("Expand", [x, ctx.shape_tensor(target)])


@onnx_op("Broadcast")
def convert_broadcast(ctx: ConvertContext, node: Node) -> list[str]:
    """Broadcast(x) [shape] -> ONNX Expand (1 where the input already has the size)."""
    return [_expand_to(ctx, node)]


@onnx_op("BroadcastAxes")
def convert_broadcast_axes(ctx: ConvertContext, node: Node) -> list[str]:
    """BroadcastAxes(x, others...) [ignore_axes] -> ONNX Expand of x to the output shape."""
    return [_expand_to(ctx, node)]


@onnx_op("Transpose")
def convert_transpose(ctx: ConvertContext, node: Node) -> list[str]:
    """Transpose(x) [axes] -> ONNX Transpose (moved after an Unsqueeze that feeds it)."""
    perm = static_ints(node, node.arguments[0], "axes")
    x = ctx.input(node, 0)
    prod = ctx.producer(x)
    unit = const_ints(ctx, prod.input[1]) if prod is not None and prod.op_type == "Unsqueeze" else None
    if unit is not None:
        # Transpose(Unsqueeze(y)) == Unsqueeze(Transpose(y)): the unit dims then meet the
        # Squeeze MLX emits after Gather, and the inner Transpose can cancel.
        rank = len(perm)
        unit = [u % rank for u in unit]
        rest = [p for p in perm if p not in unit]
        inner = [sorted(rest).index(p) for p in rest]
        y = prod.input[0]
        if inner != sorted(inner):
            y = ctx.make("Transpose", [y], perm=inner)
        return [ctx.make("Unsqueeze", [y, ints_const(ctx, [i for i, p in enumerate(perm) if p in unit])])]
    if perm == sorted(perm):
        return [x]
    return [ctx.make("Transpose", [x], perm=perm)]


# ----------------------------------------------------------------------------
# Casts
# ----------------------------------------------------------------------------


@onnx_op("AsType")
def convert_astype(ctx: ConvertContext, node: Node) -> list[str]:
    """AsType(x) [dtype] -> ONNX Cast (float -> int truncates toward zero in both)."""
    dtype = node.arguments[0]
    if dtype == ctx.in_info(node, 0).dtype:
        return [ctx.input(node, 0)]
    return [ctx.make("Cast", [ctx.input(node, 0)], to=onnx_dtype(dtype))]


# Same-size reinterpretations that ONNX Cast reproduces bit for bit (two's complement wrap).
_VIEW_AS_CAST = {
    frozenset({"int8", "uint8"}), frozenset({"int16", "uint16"}), frozenset({"int32", "uint32"}),
    frozenset({"int64", "uint64"}),
}


@onnx_op("View")
def convert_view(ctx: ConvertContext, node: Node) -> list[str]:
    """View(x) [dtype] -> nothing (same dtype) or ONNX Cast where it keeps the bits (int <-> uint, bool -> u8)."""
    src, dst = ctx.in_info(node, 0).dtype, node.arguments[0]
    x = ctx.input(node, 0)
    if src == dst:
        return [x]
    if frozenset({src, dst}) in _VIEW_AS_CAST or (src == "bool" and dst in ("uint8", "int8")):
        return [ctx.make("Cast", [x], to=onnx_dtype(dst))]
    raise args_error(node, "ONNX has no bit reinterpretation; supported views are between signed and unsigned "
                           f"ints of one size and bool -> uint8/int8; got {src} -> {dst}")


# ----------------------------------------------------------------------------
# Concatenation, splitting, slicing, padding
# ----------------------------------------------------------------------------


@onnx_op("Concatenate")
def convert_concatenate(ctx: ConvertContext, node: Node) -> list[str]:
    """Concatenate(xs...) [axis] -> ONNX Concat."""
    axis = int(node.arguments[0]) % ctx.out_info(node).rank
    if len(node.inputs) == 1:
        return [ctx.input(node, 0)]
    return [ctx.make("Concat", [ctx.input(node, i) for i in range(len(node.inputs))], axis=axis)]


@onnx_op("Split")
def convert_split(ctx: ConvertContext, node: Node) -> list[str]:
    """Split(x) [indices, axis] -> ONNX Split with the output sizes as the split input."""
    axis = int(node.arguments[1]) % ctx.in_info(node, 0).rank
    sizes = [ctx.out_info(node, i).shape[axis] for i in range(len(node.outputs))]
    if len(sizes) == 1:
        return [ctx.input(node, 0)]
    return ctx.make("Split", [ctx.input(node, 0), ctx.shape_tensor(sizes)], outputs=len(sizes), axis=axis)


def _relative(value: Dim, dim: Dim) -> Dim:
    """A dynamic index as a negative offset from the end when that offset is static (no Shape op)."""
    if isinstance(value, SymExpr) and isinstance(dim, SymExpr):
        offset = dim_add(value, dim_scale(dim, -1))
        if not isinstance(offset, SymExpr) and offset < 0:
            return offset
    return value


@onnx_op("Slice")
def convert_slice(ctx: ConvertContext, node: Node) -> list[str]:
    """Slice(x) [start, stop, strides] -> ONNX Slice over the axes that change."""
    start, _, strides = (list(a) for a in node.arguments[:3])
    shape = ctx.in_info(node, 0).shape
    out_shape = ctx.out_info(node).shape
    axes, starts, ends, steps = [], [], [], []
    for ax, (b, s, n) in enumerate(zip(start, strides, out_shape)):
        if isinstance(s, SymExpr):
            raise args_error(node, f"strides must be static; got {s} on axis {ax}")
        if b == 0 and s == 1 and n == shape[ax]:
            continue
        # The stop is derived from the output length: MLX's stored stop is not always exclusive-exact.
        e = dim_add(b, dim_scale(n, int(s)))
        if s > 0:
            e = INT64_MAX if e == shape[ax] else _relative(e, shape[ax])
        elif not isinstance(e, SymExpr) and e < 0:
            # Before the first element: ONNX reads -1 as "last", so use INT64_MIN.
            e = INT64_MIN
        axes.append(ax)
        starts.append(_relative(b, shape[ax]))
        ends.append(e)
        steps.append(int(s))
    if not axes:
        return [ctx.input(node, 0)]
    return [slice_axes(ctx, ctx.input(node, 0), axes, starts, ends, steps)]


@onnx_op("Pad")
def convert_pad(ctx: ConvertContext, node: Node) -> list[str]:
    """Pad(x, value) [axes, low, high] -> ONNX Pad (constant mode; pads for every axis)."""
    axes, low, high = (list(a) for a in node.arguments[:3])
    rank = ctx.in_info(node, 0).rank
    pads: list[Dim] = [0] * (2 * rank)
    for a, lo, hi in zip(axes, low, high):
        if (not isinstance(lo, SymExpr) and lo < 0) or (not isinstance(hi, SymExpr) and hi < 0):
            raise args_error(node, f"pad sizes must be non-negative; got {lo}, {hi} on axis {a}")
        pads[int(a) % rank] = lo
        pads[rank + int(a) % rank] = hi
    x = ctx.input(node, 0)
    if all(p == 0 for p in pads):
        return [x]
    return [ctx.make("Pad", [x, ctx.shape_tensor(pads), ctx.input(node, 1)], mode="constant")]


# ----------------------------------------------------------------------------
# Values made from shapes: Arange, Full, NumberOfElements
# ----------------------------------------------------------------------------


@onnx_op("Arange")
def convert_arange(ctx: ConvertContext, node: Node) -> list[str]:
    """Arange() [start, stop, step] -> ONNX Range (ints, long or dynamic floats) or a constant (short floats)."""
    dtype = ctx.out_info(node).dtype
    start, step, n, is_float = arange_args(node, ctx.out_info(node))
    if not isinstance(n, SymExpr) and not isinstance(start, SymExpr):
        if n == 0 or (is_float and n <= _ARANGE_CONST_LIMIT):
            return [ctx.const(arange_static(float(start), float(step), n, dtype), hint="arange")]
    if not is_float:
        first = start if isinstance(start, SymExpr) else int(np.array(start).astype(numpy_dtype(dtype)))
        # MLX's step in an integer dtype is T(start + step) - T(start).
        delta = int(step) if isinstance(start, SymExpr) else int(
            np.array(float(start) + float(step)).astype(numpy_dtype(dtype))) - first
        if delta == 0:
            return [ctx.make("Expand", [ctx.const(np.array([first], numpy_dtype(dtype))), ctx.shape_tensor([n])])]
        # The limit comes from the output length, so the count matches MLX's even for odd steps.
        rtype = "int32" if dtype == "int32" else "int64"
        limit = dim_add(first, dim_scale(n, delta))
        out = ctx.make("Range", [ctx.scalar(first, rtype), ctx.scalar(limit, rtype), ctx.const(np.array(delta, rtype))])
        return [out if rtype == dtype else ctx.cast(out, dtype)]
    # Floats in float32 (Range has no float16); limit = start + (n - 1/2) * step fixes the count at n.
    f32 = np.float32
    integral = all(isinstance(v, SymExpr) or float(v).is_integer() for v in (start, step))
    if integral and (isinstance(n, SymExpr) or isinstance(start, SymExpr)):
        # Integer start and step: the exact limit start + n * step gives the same count.
        first = ctx.scalar(start, "float32") if isinstance(start, SymExpr) else ctx.const(np.array(start, f32))
        limit = ctx.scalar(dim_add(int(start) if not isinstance(start, SymExpr) else start,
                                   dim_scale(n, int(step))), "float32")
    elif isinstance(n, SymExpr) or isinstance(start, SymExpr):
        first = ctx.scalar(start, "float32") if isinstance(start, SymExpr) else ctx.const(np.array(start, f32))
        count = ctx.scalar(n, "float32") if isinstance(n, SymExpr) else ctx.const(np.array(n, f32))
        half_less = ctx.make("Sub", [count, ctx.const(np.array(0.5, f32))])
        span = ctx.make("Mul", [half_less, ctx.const(np.array(step, f32))])
        limit = ctx.make("Add", [first, span])
    else:
        first = ctx.const(np.array(start, f32))
        limit = ctx.const(np.array(float(start) + (n - 0.5) * float(step), f32))
    out = ctx.make("Range", [first, limit, ctx.const(np.array(step, f32))])
    return [out if dtype == "float32" else ctx.cast(out, dtype)]


@onnx_op("Full")
def convert_full(ctx: ConvertContext, node: Node) -> list[str]:
    """Full(x) -> nothing: its input is already broadcast to the output shape (MLX only materializes it)."""
    return [ctx.input(node, 0)]


@onnx_op("NumberOfElements")
def convert_number_of_elements(ctx: ConvertContext, node: Node) -> list[str]:
    """NumberOfElements(x) [axes, inverted, dtype] -> a constant, or Mul of Shape dims + Cast (+ Reciprocal)."""
    axes, inverted, dtype = node.arguments[:3]
    shape = ctx.in_info(node, 0).shape
    dims = [shape[int(a) % len(shape)] for a in axes]
    if all(not isinstance(d, SymExpr) for d in dims):
        total = float(np.prod(dims, dtype=np.float64))
        return [ctx.const(np.array(1.0 / total if inverted else total).astype(numpy_dtype(dtype)))]
    prod = None
    for d in dims:
        prod = ctx.dim(d) if prod is None else ctx.make("Mul", [prod, ctx.dim(d)])
    count = ctx.make("Squeeze", [prod, ints_const(ctx, [0])])
    if not inverted:
        return [ctx.cast(count, dtype)]
    check_inverted_count(node, dtype)
    # Divide in float32 (float16 Reciprocal is missing on some providers), then cast.
    inv = ctx.make("Reciprocal", [ctx.cast(count, "float32")])
    return [inv if dtype == "float32" else ctx.cast(inv, dtype)]
