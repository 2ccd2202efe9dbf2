"""Layout primitives as torch calls: reshape, broadcast, transpose, slicing, concatenation, casts."""

from __future__ import annotations

import operator

import torch

from ..graph import Node, SymExpr
from .registry import TorchContext, args_error, torch_dtype, torch_op


@torch_op("Reshape", "Flatten", "Unflatten")
def convert_reshape(ctx: TorchContext, node: Node) -> list:
    """Reshape(x) [shape] / Flatten / Unflatten -> torch.reshape to the output shape."""
    src, out = ctx.in_info(node, 0).shape, ctx.out_info(node).shape
    if tuple(src) == tuple(out):
        return [ctx.input(node, 0)]
    dims = list(out)
    dynamic = [i for i, d in enumerate(dims) if isinstance(d, SymExpr)]
    # One dynamic dim is inferred (-1); the rest are computed from the input sizes.
    target = [-1 if len(dynamic) == 1 and i == dynamic[0] else ctx.dim(d) for i, d in enumerate(dims)]
    return [ctx.call(torch.reshape, ctx.input(node, 0), target)]


@torch_op("Broadcast", "BroadcastAxes")
def convert_broadcast(ctx: TorchContext, node: Node) -> list:
    """Broadcast(x) [shape] -> Tensor.expand (-1 where the input already has the size)."""
    src, out = ctx.in_info(node, 0).shape, ctx.out_info(node).shape
    if tuple(src) == tuple(out):
        return [ctx.input(node, 0)]
    pad = len(out) - len(src)
    target = [-1 if i >= pad and src[i - pad] == d else ctx.dim(d) for i, d in enumerate(out)]
    return [ctx.method("expand", ctx.input(node, 0), target)]


@torch_op("Transpose")
def convert_transpose(ctx: TorchContext, node: Node) -> list:
    """Transpose(x) [axes] -> torch.permute."""
    return [ctx.call(torch.permute, ctx.input(node, 0), [int(a) for a in node.arguments[0]])]


@torch_op("ExpandDims")
def convert_expand_dims(ctx: TorchContext, node: Node) -> list:
    """ExpandDims(x) [axes] -> torch.unsqueeze per axis (ascending)."""
    x = ctx.input(node, 0)
    rank = ctx.out_info(node).rank
    for axis in sorted(int(a) % rank for a in node.arguments[0]):
        x = ctx.call(torch.unsqueeze, x, axis)
    return [x]


@torch_op("Squeeze")
def convert_squeeze(ctx: TorchContext, node: Node) -> list:
    """Squeeze(x) [axes] -> torch.reshape to the output shape (keeps dynamic dims)."""
    return convert_reshape(ctx, node)


@torch_op("AsType")
def convert_astype(ctx: TorchContext, node: Node) -> list:
    """AsType(x) [dtype] -> Tensor.to(dtype) (float to int truncates toward zero, as in MLX)."""
    if node.arguments[0] == ctx.in_info(node, 0).dtype:
        return [ctx.input(node, 0)]
    return [ctx.method("to", ctx.input(node, 0), torch_dtype(node.arguments[0]))]


@torch_op("Concatenate")
def convert_concatenate(ctx: TorchContext, node: Node) -> list:
    """Concatenate(xs...) [axis] -> torch.cat."""
    return [ctx.call(torch.cat, [ctx.input(node, i) for i in range(len(node.inputs))], int(node.arguments[0]))]


@torch_op("Slice")
def convert_slice(ctx: TorchContext, node: Node) -> list:
    """Slice(x) [start, stop, strides] -> slicing; negative strides slice a torch.flip of the axis."""
    start, stop, strides = (list(a) for a in node.arguments[:3])
    shape = ctx.in_info(node, 0).shape
    x = ctx.input(node, 0)
    flips = [ax for ax, s in enumerate(strides) if not isinstance(s, SymExpr) and int(s) < 0]
    if flips:
        x = ctx.call(torch.flip, x, flips)
    index = []
    for ax, (b, e, s) in enumerate(zip(start, stop, strides)):
        if isinstance(s, SymExpr) or int(s) == 0:
            raise args_error(node, f"strides must be static and non-zero; got {s} on axis {ax}")
        if b == 0 and e == shape[ax] and s == 1:
            index.append(slice(None))
            continue
        if int(s) < 0:
            # Index i of x is n-1-i of the flipped axis; MLX's exclusive stop may be -1 (before 0).
            n = shape[ax]
            b = n - 1 - b
            e = n if (not isinstance(e, SymExpr) and int(e) < 0) else n - 1 - e
            s = -int(s)
        index.append(slice(ctx.dim(b), None if e == shape[ax] else ctx.dim(e), int(s)))
    if all(i == slice(None) for i in index):
        return [x]
    return [ctx.call(operator.getitem, x, tuple(index))]
