"""Indexing primitives as torch calls: gathers, scatters, slice updates, dynamic slices, masked scatter.

MLX wraps negative indices once. torch's advanced indexing does too, but
torch.gather, torch.scatter and the index_* ops do not, so signed indices are
taken modulo the axis size before those.
"""

from __future__ import annotations

import operator
from typing import Any, Sequence

import torch

from ...dtypes import torch_dtype
from ...graph import Dim, Node, SymExpr
from ..args import (SCATTER_AXIS_KINDS, SCATTER_KINDS, args_error, check_batch_axis, check_scatter_window, choice_arg,
                    gather_args)
from ..common import dim_add, dim_scale
from .context import TorchContext, torch_op

# mlx::core::Scatter::ReduceType and SliceUpdate::ReduceType order: Max, Min, Sum, Prod, None.
_SCATTER_REDUCTIONS = ["max", "min", "add", "mul", "none"]
_COMBINE = {"max": torch.maximum, "min": torch.minimum, "add": torch.add, "mul": torch.mul}
_SCATTER_REDUCE = {"max": "amax", "min": "amin", "mul": "prod"}
# torch's CPU index/scatter kernels lack the wide unsigned types: run those in int64.
_UNSIGNED_WIDE = {"uint16", "uint32", "uint64"}


def _index(ctx: TorchContext, node: Node, i: int, size: Dim | None = None) -> Any:
    """Input i as int64 indices; with ``size``, signed negatives wrapped into [0, size)."""
    dtype = ctx.in_info(node, i).dtype
    idx = ctx.input(node, i)
    if dtype != "int64":
        idx = ctx.method("to", idx, torch.int64)
    if size is not None and not dtype.startswith("u"):
        idx = ctx.call(torch.remainder, idx, ctx.dim(size))
    return idx


def _reduction(node: Node) -> str:
    return _SCATTER_REDUCTIONS[choice_arg(node, int(node.arguments[0]), SCATTER_KINDS)]


def _inverse(perm: Sequence[int]) -> list[int]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return inv


def _permute(ctx: TorchContext, x: Any, perm: Sequence[int]) -> Any:
    return x if list(perm) == sorted(perm) else ctx.call(torch.permute, x, list(perm))


def _static_axes(node: Node, axes: Sequence[Any], rank: int) -> list[int]:
    if any(isinstance(a, SymExpr) for a in axes):
        raise args_error(node, f"axes must be static; got {list(axes)}")
    return [int(a) % rank for a in axes]


@torch_op("Gather")
def convert_gather(ctx: TorchContext, node: Node) -> list:
    """Gather(x, *indices) [axes, slice_sizes] -> slicing, torch.permute, advanced indexing, torch.unsqueeze."""
    info = ctx.in_info(node, 0)
    rank = info.rank
    axes, sizes, trim = gather_args(node, info)
    x = ctx.input(node, 0)
    if trim:
        # Non-indexed axes start at 0: keep the first slice_size entries.
        x = ctx.call(operator.getitem, x, tuple(slice(None, ctx.dim(sizes[a])) if a in trim else slice(None)
                                                for a in range(rank)))
    if not axes:
        return [x]
    nb = ctx.out_info(node).rank - rank
    # Indexed axes first: torch then puts the broadcast index dims in front, as MLX does.
    x = _permute(ctx, x, axes + [d for d in range(rank) if d not in axes])
    idx = [_index(ctx, node, 1 + k) for k in range(len(axes))]
    g = ctx.call(operator.getitem, x, tuple(idx) if len(idx) > 1 else idx[0])
    for a in sorted(axes):
        g = ctx.call(torch.unsqueeze, g, nb + a)
    return [g]


@torch_op("GatherAxis")
def convert_gather_axis(ctx: TorchContext, node: Node) -> list:
    """GatherAxis(x, indices) [axis] -> torch.gather (indices wrapped and expanded to the output shape)."""
    info = ctx.in_info(node, 0)
    axis = int(node.arguments[0]) % info.rank
    idx = _index(ctx, node, 1, info.shape[axis])
    out_shape = ctx.out_info(node).shape
    if tuple(ctx.in_info(node, 1).shape) != tuple(out_shape):
        idx = ctx.method("expand", idx, ctx.shape(out_shape))
    return [ctx.call(torch.gather, ctx.input(node, 0), axis, idx)]


@torch_op("Scatter")
def convert_scatter(ctx: TorchContext, node: Node) -> list:
    """Scatter(x, *indices, updates) [reduce, axes] -> torch.index_put (None, Sum) or Tensor.scatter_reduce."""
    reduction = _reduction(node)
    info = ctx.in_info(node, 0)
    rank = info.rank
    axes = _static_axes(node, node.arguments[1], rank)
    m = len(axes)
    upd_info = ctx.in_info(node, m + 1)
    nb = upd_info.rank - rank
    window = upd_info.shape[nb:]
    others = [d for d in range(rank) if d not in axes]
    check_scatter_window(node, info, window, axes)
    x, upd = ctx.input(node, 0), ctx.input(node, m + 1)
    if m == 0:
        return [upd if reduction == "none" else ctx.call(_COMBINE[reduction], x, upd)]
    dtype = info.dtype
    if dtype in _UNSIGNED_WIDE:
        x, upd = ctx.method("to", x, torch.int64), ctx.method("to", upd, torch.int64)
    # The indexed axes (moved first) flatten into one: linear index = sum_k idx_k * stride_k.
    perm = axes + others
    xp = _permute(ctx, x, perm)
    lin, stride = None, 1
    for k in reversed(range(m)):
        idx = _index(ctx, node, 1 + k, info.shape[axes[k]])
        term = idx if stride == 1 else ctx.call(operator.mul, idx, stride)
        lin = term if lin is None else ctx.call(operator.add, lin, term)
        stride = ctx.call(operator.mul, stride, ctx.dim(info.shape[axes[k]])) if k else stride
    if m > 1:
        # Index arrays may differ in shape: broadcast them to the batch first.
        lin = ctx.method("expand", lin, ctx.shape(upd_info.shape[:nb]))
    lin = ctx.method("reshape", lin, [-1])
    tail = ctx.shape([info.shape[d] for d in others])
    flat_x = ctx.method("reshape", xp, [-1] + tail)
    flat_u = ctx.method("reshape", upd, [-1] + tail)
    if reduction in ("none", "add"):
        out = ctx.call(torch.index_put, flat_x, [lin], flat_u, reduction == "add")
    else:
        index = ctx.method("expand_as", ctx.method("reshape", lin, [-1] + [1] * len(tail)), flat_u)
        out = ctx.method("scatter_reduce", flat_x, 0, index, flat_u, _SCATTER_REDUCE[reduction])
    out = ctx.method("reshape", out, ctx.shape([info.shape[d] for d in perm]))
    out = _permute(ctx, out, _inverse(perm))
    return [ctx.method("to", out, torch_dtype(dtype)) if dtype in _UNSIGNED_WIDE else out]


@torch_op("ScatterAxis")
def convert_scatter_axis(ctx: TorchContext, node: Node) -> list:
    """ScatterAxis(x, indices, updates) [reduce, axis] -> torch.scatter (reduce None) or torch.scatter_add (Sum)."""
    kind = choice_arg(node, int(node.arguments[0]), SCATTER_AXIS_KINDS)
    info = ctx.in_info(node, 0)
    axis = int(node.arguments[1]) % info.rank
    idx = _index(ctx, node, 1, info.shape[axis])
    upd = ctx.input(node, 2)
    idx_shape = ctx.in_info(node, 1).shape
    if tuple(ctx.in_info(node, 2).shape) != tuple(idx_shape):
        upd = ctx.method("expand", upd, ctx.shape(idx_shape))
    x = ctx.input(node, 0)
    if info.dtype in _UNSIGNED_WIDE:
        x, upd = ctx.method("to", x, torch.int64), ctx.method("to", upd, torch.int64)
    out = ctx.call(torch.scatter_add if kind == 0 else torch.scatter, x, axis, idx, upd)
    return [ctx.method("to", out, torch_dtype(info.dtype)) if info.dtype in _UNSIGNED_WIDE else out]


@torch_op("SliceUpdate")
def convert_slice_update(ctx: TorchContext, node: Node) -> list:
    """SliceUpdate(x, update) [reduce, start, stop, strides] -> torch.slice_copy, nested torch.slice_scatter."""
    reduction = _reduction(node)
    start, _, strides = (list(a) for a in node.arguments[1:4])
    shape = ctx.in_info(node, 0).shape
    lengths = ctx.in_info(node, 1).shape
    for ax, s in enumerate(strides):
        if isinstance(s, SymExpr) or int(s) == 0:
            raise args_error(node, f"strides must be static and non-zero; got {s} on axis {ax}")
    x, upd = ctx.input(node, 0), ctx.input(node, 1)
    windows = []  # (axis, start, exclusive stop or None for the end, step)
    flips = []
    for a in range(len(shape)):
        b, s, n = start[a], int(strides[a]), lengths[a]
        if b == 0 and s == 1 and n == shape[a]:
            continue
        if s < 0:
            # The same positions walked forwards from the last one, with the update reversed.
            b, s = dim_add(b, dim_scale(dim_add(n, -1), s)), -s
            flips.append(a)
        e = dim_add(b, dim_add(dim_scale(dim_add(n, -1), s), 1))
        windows.append((a, b, None if e == shape[a] else e, s))
    if flips:
        upd = ctx.call(torch.flip, upd, flips)
    if not windows:
        return [upd if reduction == "none" else ctx.call(_COMBINE[reduction], x, upd)]
    views = [x]
    for a, b, e, s in windows[:-1]:
        views.append(ctx.call(torch.slice_copy, views[-1], a, ctx.dim(b), None if e is None else ctx.dim(e), s))
    if reduction != "none":
        a, b, e, s = windows[-1]
        old = ctx.call(torch.slice_copy, views[-1], a, ctx.dim(b), None if e is None else ctx.dim(e), s)
        upd = ctx.call(_COMBINE[reduction], old, upd)
    for view, (a, b, e, s) in zip(reversed(views), reversed(windows)):
        upd = ctx.call(torch.slice_scatter, view, upd, a, ctx.dim(b), None if e is None else ctx.dim(e), s)
    return [upd]


def _starts(ctx: TorchContext, node: Node, i: int, axes: Sequence[int]) -> list:
    """The runtime start of each axis as a 0-d int64 tensor."""
    flat = ctx.method("reshape", _index(ctx, node, i), [-1])
    return [ctx.call(operator.getitem, flat, k) for k in range(len(axes))]


@torch_op("DynamicSlice")
def convert_dynamic_slice(ctx: TorchContext, node: Node) -> list:
    """DynamicSlice(x, start) [axes, slice_size] -> torch.narrow with tensor starts, + slicing of the other axes."""
    info = ctx.in_info(node, 0)
    rank = info.rank
    axes = _static_axes(node, node.arguments[0], rank)
    sizes = list(node.arguments[1])
    x = ctx.input(node, 0)
    for a, s in zip(axes, _starts(ctx, node, 1, axes)):
        x = ctx.call(torch.narrow, x, a, s, ctx.dim(sizes[a]))
    trim = [a for a in range(rank) if a not in axes and sizes[a] != info.shape[a]]
    for a in trim:
        x = ctx.call(torch.narrow, x, a, 0, ctx.dim(sizes[a]))
    return [x]


@torch_op("DynamicSliceUpdate")
def convert_dynamic_slice_update(ctx: TorchContext, node: Node) -> list:
    """DynamicSliceUpdate(x, update, start) [axes] -> torch.index_select, nested Tensor.index_copy at start + arange."""
    rank = ctx.in_info(node, 0).rank
    axes = _static_axes(node, node.arguments[0], rank)
    shape, lengths = ctx.in_info(node, 0).shape, ctx.in_info(node, 1).shape
    starts: dict[int, Any] = dict(zip(axes, _starts(ctx, node, 2, axes)))
    # Axes outside ``axes`` where the update is shorter start at 0.
    for a in range(rank):
        if a not in starts and lengths[a] != shape[a]:
            starts[a] = 0
    order = sorted(starts)
    positions = {}
    for a in order:
        pos = ctx.call(torch.arange, ctx.dim(lengths[a]), dtype=torch.int64)
        if not (isinstance(starts[a], int) and starts[a] == 0):
            pos = ctx.call(operator.add, pos, starts[a])
        positions[a] = pos
    # index_select, not narrow with a tensor start: that leaves torch.export an unbacked size.
    views = [ctx.input(node, 0)]
    for a in order[:-1]:
        views.append(ctx.call(torch.index_select, views[-1], a, positions[a]))
    upd = ctx.input(node, 1)
    for view, a in zip(reversed(views), reversed(order)):
        upd = ctx.method("index_copy", view, a, positions[a], upd)
    return [upd]


@torch_op("MaskedScatter")
def convert_masked_scatter(ctx: TorchContext, node: Node) -> list:
    """MaskedScatter(x, mask, src) -> torch.cumsum of the mask, torch.gather from src, torch.where (per axis-0 row)."""
    info = ctx.in_info(node, 0)
    check_batch_axis(node, info)
    x, mask, src = (ctx.input(node, i) for i in range(3))
    flat_x = ctx.call(torch.flatten, x, 1)
    flat_mask = ctx.call(torch.flatten, mask, 1)
    flat_src = ctx.call(torch.flatten, src, 1)
    # Row b takes src[b] in order at its true mask positions: position -> (trues before it).
    count = ctx.call(torch.cumsum, flat_mask, 1, dtype=torch.int64)
    # Unused (false) positions before the first true would read -1: clamp them to 0.
    pos = ctx.call(torch.clamp, ctx.call(operator.sub, count, 1), 0)
    picked = ctx.call(torch.gather, flat_src, 1, pos)
    out = ctx.call(torch.where, flat_mask, picked, flat_x)
    return [ctx.method("reshape", out, ctx.shape(info.shape))]
