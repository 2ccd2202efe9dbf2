"""Reductions: Reduce (sum/prod/min/max/and/or), Softmax."""

from __future__ import annotations

import numpy as np

from ..graph import Node
from .registry import ConvertContext, args_error, onnx_op, static_ints

# mlx::core::Reduce::ReduceType order: And, Or, Sum, Prod, Min, Max
_REDUCE_OPS = ["ReduceMin", "ReduceMax", "ReduceSum", "ReduceProd", "ReduceMin", "ReduceMax"]


def _reduce(ctx: ConvertContext, node: Node, axes_as_input: bool) -> list[str]:
    kind = int(node.arguments[0])
    if not 0 <= kind < 6:
        raise args_error(node, f"reduce type must be 0..5 (And, Or, Sum, Prod, Min, Max); got {kind}")
    axes = static_ints(node, node.arguments[1], "axes")
    x = ctx.input(node, 0)
    is_bool = ctx.in_info(node, 0).dtype == "bool"
    if is_bool:
        # ONNX reductions take no bool: And = min, Or = max over uint8.
        x = ctx.cast(x, "uint8")
    op = _REDUCE_OPS[kind]
    if op == "ReduceSum" or axes_as_input:
        out = ctx.make(op, [x, ctx.const(np.array(axes, np.int64))], keepdims=1)
    else:
        out = ctx.make(op, [x], axes=axes, keepdims=1)
    return [ctx.cast(out, "bool") if is_bool else out]


@onnx_op("Reduce")
def convert_reduce(ctx: ConvertContext, node: Node) -> list[str]:
    """Reduce(x) [type, axes] -> ONNX ReduceSum/Prod/Min/Max (keepdims; axes attribute before 18)."""
    return _reduce(ctx, node, axes_as_input=False)


@onnx_op("Reduce", since=18)
def convert_reduce_18(ctx: ConvertContext, node: Node) -> list[str]:
    """Reduce(x) [type, axes] -> ONNX ReduceSum/Prod/Min/Max with axes as an input."""
    return _reduce(ctx, node, axes_as_input=True)


@onnx_op("Softmax")
def convert_softmax(ctx: ConvertContext, node: Node) -> list[str]:
    """Softmax(x) [precise] -> ONNX Softmax over the last axis."""
    return [ctx.make("Softmax", [ctx.input(node, 0)], axis=-1)]
