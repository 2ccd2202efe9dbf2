"""Layout primitives as torch calls: reshape, broadcast, transpose, slicing, concatenation, splitting, padding,
casts, views, strided views, and values made from shapes (Arange, Full, NumberOfElements)."""

from __future__ import annotations

import operator

import numpy as np
import torch

from ...dtypes import numpy_dtype, torch_dtype
from ...graph import Node, SymExpr
from ..args import arange_args, args_error, check_inverted_count
from ..common import arange_static
from .context import TorchContext, torch_op
from .windows import element_count, strided_windows, window_plan


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
    return [ctx.call(torch.reshape, _reshape_source(ctx.input(node, 0)), target)]


# Calls that only regroup a tensor's dims in row-major order: a reshape after them can read their input.
_REGROUPS = {torch.reshape, torch.unsqueeze, torch.squeeze, torch.flatten, torch.unflatten}


def _reshape_source(x: object) -> object:
    """``x``, or the tensor a chain of reshape-like calls made it from (Squeeze after pooling: no rank-6 step)."""
    import torch.fx as fx

    while isinstance(x, fx.Node) and ((x.op == "call_function" and x.target in _REGROUPS)
                                      or (x.op == "call_method" and x.target == "reshape")):
        x = x.args[0]
    return x


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


@torch_op("View")
def convert_view(ctx: TorchContext, node: Node) -> list:
    """View(x) [dtype] -> Tensor.view(dtype) (a bit reinterpretation, as in MLX)."""
    src, dst = ctx.in_info(node, 0).dtype, node.arguments[0]
    if src == dst:
        return [ctx.input(node, 0)]
    return [ctx.method("view", ctx.input(node, 0), torch_dtype(dst))]


@torch_op("Split")
def convert_split(ctx: TorchContext, node: Node) -> list:
    """Split(x) [indices, axis] -> torch.split with the output sizes."""
    axis = int(node.arguments[1]) % ctx.in_info(node, 0).rank
    if len(node.outputs) == 1:
        return [ctx.input(node, 0)]
    sizes = [ctx.dim(ctx.out_info(node, i).shape[axis]) for i in range(len(node.outputs))]
    parts = ctx.call(torch.split, ctx.input(node, 0), sizes, axis)
    return [ctx.call(operator.getitem, parts, i) for i in range(len(sizes))]


@torch_op("Pad")
def convert_pad(ctx: TorchContext, node: Node) -> list:
    """Pad(x, value) [axes, low, high] -> torch.nn.functional.pad (constant; a runtime value through torch.where)."""
    axes, low, high = (list(a) for a in node.arguments[:3])
    rank = ctx.in_info(node, 0).rank
    lo: list = [0] * rank
    hi: list = [0] * rank
    for a, l, h in zip(axes, low, high):
        if (not isinstance(l, SymExpr) and l < 0) or (not isinstance(h, SymExpr) and h < 0):
            raise args_error(node, f"pad sizes must be non-negative; got {l}, {h} on axis {a}")
        lo[int(a) % rank], hi[int(a) % rank] = l, h
    x = ctx.input(node, 0)
    if all(p == 0 for p in lo + hi):
        return [x]
    # torch lists pads from the last axis backwards: (low, high) per axis.
    pads = [ctx.dim(p) for a in reversed(range(rank)) for p in (lo[a], hi[a])]
    value = ctx.const_value(node, 1)
    if value is not None and value.size == 1:
        # TorchScript's pad takes a float value; torch casts it to x's dtype.
        return [ctx.call(torch.nn.functional.pad, x, pads, "constant", float(value.reshape(())))]
    # A runtime pad value: pad a mask alongside and fill where it is false.
    inside = ctx.call(torch.nn.functional.pad, ctx.call(torch.ones_like, x, dtype=torch.bool), pads, "constant", 0.0)
    padded = ctx.call(torch.nn.functional.pad, x, pads, "constant", 0.0)
    fill = ctx.method("to", ctx.input(node, 1), torch_dtype(ctx.out_info(node).dtype))
    return [ctx.call(torch.where, inside, padded, fill)]


@torch_op("Arange")
def convert_arange(ctx: TorchContext, node: Node) -> list:
    """Arange() [start, stop, step] -> a constant (static floats), else torch.arange(n) * step + start."""
    dtype = ctx.out_info(node).dtype
    start, step, n, is_float = arange_args(node, ctx.out_info(node))
    if is_float and not isinstance(n, SymExpr) and not isinstance(start, SymExpr):
        # A constant holds MLX's exact values: its CPU kernel accumulates the step in the output dtype.
        return [ctx.buffer(arange_static(float(start), float(step), int(n), dtype), hint="arange")]
    if isinstance(start, SymExpr):
        first, delta = ctx.dim(start), float(step) if is_float else int(step)
    else:
        t = numpy_dtype(dtype)
        first_v = np.array(start).astype(t)
        # MLX's step in the output dtype is T(start + step) - T(start).
        delta = (np.array(float(start) + float(step)).astype(t) - first_v).item()
        first = first_v.item()
    wide = torch.float32 if is_float else torch.int64
    ramp = ctx.call(torch.arange, ctx.dim(n), dtype=wide)
    out = ctx.call(operator.add, ctx.call(operator.mul, ramp, delta), first)
    return [ctx.method("to", out, torch_dtype(dtype))]


@torch_op("Full")
def convert_full(ctx: TorchContext, node: Node) -> list:
    """Full(x) -> nothing: its input is already broadcast to the output shape (MLX only materializes it)."""
    return [ctx.input(node, 0)]


@torch_op("NumberOfElements")
def convert_number_of_elements(ctx: TorchContext, node: Node) -> list:
    """NumberOfElements(x) [axes, inverted, dtype] -> a constant, or torch.scalar_tensor of the size product."""
    axes, inverted, dtype = node.arguments[:3]
    shape = ctx.in_info(node, 0).shape
    dims = [shape[int(a) % len(shape)] for a in axes]
    if all(not isinstance(d, SymExpr) for d in dims):
        total = float(np.prod(dims, dtype=np.float64))
        return [ctx.buffer(np.array(1.0 / total if inverted else total).astype(numpy_dtype(dtype)), hint="count")]
    if inverted:
        check_inverted_count(node, dtype)
    prod = None
    for d in dims:
        prod = ctx.dim(d) if prod is None else ctx.call(operator.mul, prod, ctx.dim(d))
    if not inverted:
        return [ctx.call(torch.scalar_tensor, prod, dtype=torch_dtype(dtype))]
    # Divide in float32, then round to the output type.
    inv = ctx.call(torch.reciprocal, ctx.call(torch.scalar_tensor, prod, dtype=torch.float32))
    return [ctx.method("to", inv, torch_dtype(dtype))]


@torch_op("AsStrided")
def convert_as_strided(ctx: TorchContext, node: Node) -> list:
    """AsStrided(x) [shape, strides, offset] -> strided slices + stack (windows), torch.as_strided, or torch.take."""
    shape, strides, offset = (list(node.arguments[0]), list(node.arguments[1]), node.arguments[2])
    flat = ctx.method("reshape", ctx.input(node, 0), [-1])
    static = not any(isinstance(v, SymExpr) for v in strides + [offset])
    if static and all(int(s) >= 0 for s in strides):
        # Windows (pooling) as slices of the input: the same values as the view, and ops that every
        # consumer of the lowering converts (coremltools has no as_strided).
        length = element_count(ctx.in_info(node, 0).shape)
        plan = None if length is None else window_plan(length, shape, [int(s) for s in strides], int(offset))
        if plan is not None:
            return [strided_windows(ctx, flat, length, plan, shape, [int(s) for s in strides])]
        if int(offset):
            # Slicing moves the storage offset; as_strided then counts from the view's own start.
            flat = ctx.call(operator.getitem, flat, slice(int(offset), None))
        return [ctx.call(torch.as_strided, flat, ctx.shape(shape), [int(s) for s in strides])]
    rank = len(shape)
    if static and not any(isinstance(d, SymExpr) for d in shape):
        idx = np.full([1] * rank, int(offset), np.int64)
        for k, (n, s) in enumerate(zip(shape, strides)):
            idx = idx + (np.arange(int(n), dtype=np.int64) * int(s)).reshape([-1 if j == k else 1 for j in range(rank)])
        return [ctx.call(torch.take, flat, ctx.buffer(np.broadcast_to(idx, tuple(shape)).copy(), hint="strided"))]
    # Per-axis ramps that broadcast together into offset + sum_k i_k * stride_k.
    idx = ctx.call(torch.full, [1] * rank, ctx.dim(offset), dtype=torch.int64)
    for k, (n, s) in enumerate(zip(shape, strides)):
        ramp = ctx.call(operator.mul, ctx.call(torch.arange, ctx.dim(n), dtype=torch.int64), ctx.dim(s))
        idx = ctx.call(operator.add, idx, ctx.method("reshape", ramp, [-1 if j == k else 1 for j in range(rank)]))
    return [ctx.call(torch.take, flat, idx)]
