"""Reductions as torch calls."""

from __future__ import annotations

import torch

from ..graph import Node
from .registry import TorchContext, args_error, torch_dtype, torch_op

# mlx::core::Reduce::ReduceType order: And, Or, Sum, Prod, Min, Max
_REDUCERS = {0: torch.all, 1: torch.any, 2: torch.sum, 3: torch.prod, 4: torch.amin, 5: torch.amax}


@torch_op("Reduce")
def convert_reduce(ctx: TorchContext, node: Node) -> list:
    """Reduce(x) [type, axes] -> torch.all/any/sum/prod/amin/amax with keepdim (dtype as MLX's output)."""
    kind, axes = int(node.arguments[0]), [int(a) for a in node.arguments[1]]
    if kind not in _REDUCERS:
        raise args_error(node, f"reduce type must be 0..5 (And, Or, Sum, Prod, Min, Max); got {kind}")
    x = ctx.input(node, 0)
    if not axes:
        return [x]
    out_dtype = ctx.out_info(node).dtype
    if ctx.in_info(node, 0).dtype in ("uint16", "uint32", "uint64") or out_dtype in ("uint16", "uint32", "uint64"):
        # torch's CPU reductions do not take the wide unsigned types: reduce in int64, then cast.
        wide = ctx.method("to", x, torch.int64)
        out = _reduce(ctx, kind, wide, axes, "int64")
        return [ctx.method("to", out, torch_dtype(out_dtype))]
    return [_reduce(ctx, kind, x, axes, out_dtype)]


def _reduce(ctx: TorchContext, kind: int, x: object, axes: list[int], out_dtype: str) -> object:
    if kind == 2:
        # MLX sums small integer types into int32/uint32: ask torch for the output dtype.
        return ctx.call(torch.sum, x, axes, keepdim=True, dtype=torch_dtype(out_dtype))
    if kind == 3:
        return _prod(ctx, x, axes, out_dtype)
    if kind in (0, 1):
        out = x
        for axis in sorted(axes, reverse=True):
            out = ctx.call(_REDUCERS[kind], out, axis, keepdim=True)
        return out
    return ctx.call(_REDUCERS[kind], x, axes, keepdim=True)


def _prod(ctx: TorchContext, x: object, axes: list[int], dtype: str) -> object:
    out = x
    for axis in sorted(axes, reverse=True):
        out = ctx.call(torch.prod, out, axis, keepdim=True, dtype=torch_dtype(dtype))
    return out


@torch_op("Softmax")
def convert_softmax(ctx: TorchContext, node: Node) -> list:
    """Softmax(x) [precise] -> torch.softmax over the last axis (in float32 when precise)."""
    x = ctx.input(node, 0)
    dtype = ctx.in_info(node, 0).dtype
    if node.arguments and node.arguments[0] and dtype in ("float16", "bfloat16"):
        out = ctx.call(torch.softmax, ctx.method("float", x), -1)
        return [ctx.method("to", out, torch_dtype(dtype))]
    return [ctx.call(torch.softmax, x, -1)]
