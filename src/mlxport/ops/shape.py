"""Layout primitives: reshape, broadcast, transpose, slicing, concatenation, casts."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..graph import Dim, Node, SymExpr
from .registry import ConvertContext, args_error, onnx_dtype, onnx_op, static_ints

INT64_MAX = np.iinfo(np.int64).max


def reshape(ctx: ConvertContext, x: str, in_shape: Sequence[Dim], out_shape: Sequence[Dim]) -> str:
    """Reshape with a constant target whenever dynamic dims allow (0 = keep, -1 = infer)."""
    if tuple(in_shape) == tuple(out_shape):
        return x
    target: list[Dim] = list(out_shape)
    if any(isinstance(d, SymExpr) for d in target):
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


def _reshape_node(ctx: ConvertContext, node: Node) -> list[str]:
    return [reshape(ctx, ctx.input(node, 0), ctx.in_info(node, 0).shape, ctx.out_info(node).shape)]


@onnx_op("Reshape")
def convert_reshape(ctx: ConvertContext, node: Node) -> list[str]:
    """Reshape(x) [shape] -> ONNX Reshape to the output shape (dynamic dims as 0/-1 or computed)."""
    return _reshape_node(ctx, node)


@onnx_op("Flatten")
def convert_flatten(ctx: ConvertContext, node: Node) -> list[str]:
    """Flatten(x) [start_axis, end_axis] -> ONNX Reshape."""
    return _reshape_node(ctx, node)


@onnx_op("Unflatten")
def convert_unflatten(ctx: ConvertContext, node: Node) -> list[str]:
    """Unflatten(x) [axis, shape] -> ONNX Reshape."""
    return _reshape_node(ctx, node)


@onnx_op("ExpandDims")
def convert_expand_dims(ctx: ConvertContext, node: Node) -> list[str]:
    """ExpandDims(x) [axes] -> ONNX Unsqueeze."""
    axes = static_ints(node, node.arguments[0], "axes")
    return [ctx.make("Unsqueeze", [ctx.input(node, 0), ctx.const(np.array(axes, np.int64))])]


@onnx_op("Squeeze")
def convert_squeeze(ctx: ConvertContext, node: Node) -> list[str]:
    """Squeeze(x) [axes] -> ONNX Squeeze."""
    axes = static_ints(node, node.arguments[0], "axes")
    return [ctx.make("Squeeze", [ctx.input(node, 0), ctx.const(np.array(axes, np.int64))])]


@onnx_op("Broadcast")
def convert_broadcast(ctx: ConvertContext, node: Node) -> list[str]:
    """Broadcast(x) [shape] -> ONNX Expand (1 where the input already has the size)."""
    src = ctx.in_info(node, 0).shape
    out = ctx.out_info(node).shape
    pad = len(out) - len(src)
    target = [d if i < pad or src[i - pad] != d else 1 for i, d in enumerate(out)]
    if all(t == 1 for t in target[pad:]) and pad == 0:
        return [ctx.input(node, 0)]
    return [ctx.make("Expand", [ctx.input(node, 0), ctx.shape_tensor(target)])]


@onnx_op("Transpose")
def convert_transpose(ctx: ConvertContext, node: Node) -> list[str]:
    """Transpose(x) [axes] -> ONNX Transpose."""
    perm = static_ints(node, node.arguments[0], "axes")
    return [ctx.make("Transpose", [ctx.input(node, 0)], perm=perm)]


@onnx_op("AsType")
def convert_astype(ctx: ConvertContext, node: Node) -> list[str]:
    """AsType(x) [dtype] -> ONNX Cast."""
    dtype = node.arguments[0]
    if dtype == ctx.in_info(node, 0).dtype:
        return [ctx.input(node, 0)]
    return [ctx.make("Cast", [ctx.input(node, 0)], to=onnx_dtype(dtype))]


@onnx_op("Concatenate")
def convert_concatenate(ctx: ConvertContext, node: Node) -> list[str]:
    """Concatenate(xs...) [axis] -> ONNX Concat."""
    axis = int(node.arguments[0])
    return [ctx.make("Concat", [ctx.input(node, i) for i in range(len(node.inputs))], axis=axis)]


@onnx_op("Slice")
def convert_slice(ctx: ConvertContext, node: Node) -> list[str]:
    """Slice(x) [start, stop, strides] -> ONNX Slice over the axes that change."""
    start, stop, strides = (list(a) for a in node.arguments[:3])
    shape = ctx.in_info(node, 0).shape
    axes, starts, ends, steps = [], [], [], []
    for ax, (b, e, s) in enumerate(zip(start, stop, strides)):
        if b == 0 and e == shape[ax] and s == 1:
            continue
        if isinstance(s, SymExpr):
            raise args_error(node, f"strides must be static; got {s} on axis {ax}")
        axes.append(ax)
        starts.append(b)
        if s > 0:
            ends.append(INT64_MAX if e == shape[ax] else e)
        else:
            # MLX stores the exclusive stop; -1 (before the first element) needs INT64_MIN in ONNX.
            ends.append(-INT64_MAX - 1 if (not isinstance(e, SymExpr) and e < 0) else e)
        steps.append(int(s))
    if not axes:
        return [ctx.input(node, 0)]
    inputs = [ctx.input(node, 0), ctx.shape_tensor(starts), ctx.shape_tensor(ends),
              ctx.const(np.array(axes, np.int64))]
    if any(s != 1 for s in steps):
        inputs.append(ctx.const(np.array(steps, np.int64)))
    return [ctx.make("Slice", inputs)]
