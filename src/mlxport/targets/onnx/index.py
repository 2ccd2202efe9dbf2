"""Indexing primitives: Gather, GatherAxis, Scatter, ScatterAxis, SliceUpdate, DynamicSlice, MaskedScatter.

MLX wraps negative indices once; so do ONNX Gather, GatherND, GatherElements,
ScatterND and ScatterElements, so indices pass through unchanged.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np

from ...graph import Dim, Node, SymExpr
from ..args import (SCATTER_AXIS_KINDS, SCATTER_KINDS, args_error, check_batch_axis, check_scatter_window, choice_arg,
                    gather_args, static_ints)
from ..common import dim_add
from .context import ConvertContext, onnx_op
from .shape import INT64_MAX, ints_const, slice_axes

# mlx::core::Scatter::ReduceType and SliceUpdate::ReduceType order: Max, Min, Sum, Prod, None.
_SCATTER_REDUCTIONS = ["max", "min", "add", "mul", "none"]
_REDUCE_OPS = {"max": "Max", "min": "Min", "add": "Add", "mul": "Mul"}
# ScatterND/ScatterElements reduction attributes appeared at these opsets.
_REDUCTION_SINCE = {"none": 11, "add": 16, "mul": 16, "max": 18, "min": 18}
# ORT's CPU ScatterND/ScatterElements have no float16 kernel for reductions.
_REDUCE_IN_FLOAT32 = {"float16"}

# A grid start: a static or symbolic dim, or the name of a runtime int64 [1] tensor.
Start = Union[Dim, str]


def _index(ctx: ConvertContext, node: Node, i: int, int64_only: bool = False) -> str:
    """Input i as an ONNX index tensor (int64, or int32 where the op accepts it)."""
    dtype = ctx.in_info(node, i).dtype
    name = ctx.input(node, i)
    if dtype == "int64" or (dtype == "int32" and not int64_only):
        return name
    return ctx.cast(name, "int64")


def _stack_indices(ctx: ConvertContext, node: Node, inputs: Sequence[int], batch: Sequence[Dim]) -> str:
    """GatherND/ScatterND indices [*batch, m] from m index arrays (broadcast to ``batch``)."""
    cols = []
    for i in inputs:
        idx = _index(ctx, node, i, int64_only=True)
        if tuple(ctx.in_info(node, i).shape) != tuple(batch):
            idx = ctx.make("Expand", [idx, ctx.shape_tensor(batch)])
        cols.append(ctx.make("Unsqueeze", [idx, ints_const(ctx, [-1])]))
    return cols[0] if len(cols) == 1 else ctx.make("Concat", cols, axis=-1)


def _transpose(ctx: ConvertContext, x: str, perm: Sequence[int]) -> str:
    perm = list(perm)
    return x if perm == sorted(perm) else ctx.make("Transpose", [x], perm=perm)


def _inverse(perm: Sequence[int]) -> list[int]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return inv


def _start_tensor(ctx: ConvertContext, start: Start) -> str:
    return start if isinstance(start, str) else ctx.dim(start)


def _index_grid(ctx: ConvertContext, starts: Sequence[Start], steps: Sequence[int], lengths: Sequence[Dim]) -> str:
    """ScatterND indices [*lengths, k]: entry (i_0..i_k-1) is (start_j + step_j * i_j)_j."""
    k = len(starts)
    if all(not isinstance(n, SymExpr) for n in lengths):
        static = [s if isinstance(s, int) else 0 for s in starts]
        axes = [static[j] + steps[j] * np.arange(int(lengths[j]), dtype=np.int64) for j in range(k)]
        grid = ctx.const(np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.int64), hint="grid")
        if all(isinstance(s, int) for s in starts):
            return grid
        # Runtime or symbolic starts: add them to a zero-based constant grid.
        offsets = [ctx.const([0], np.int64) if isinstance(s, int) else _start_tensor(ctx, s) for s in starts]
        return ctx.make("Add", [grid, offsets[0] if k == 1 else ctx.make("Concat", offsets, axis=0)])
    cols = []
    for j in range(k):
        zero, one = ctx.const(np.array(0, np.int64)), ctx.const(np.array(1, np.int64))
        r = ctx.make("Range", [zero, ctx.scalar(lengths[j]), one])
        if steps[j] != 1:
            r = ctx.make("Mul", [r, ctx.const(np.array(steps[j], np.int64))])
        if not (isinstance(starts[j], int) and starts[j] == 0):
            r = ctx.make("Add", [r, _start_tensor(ctx, starts[j])])
        layout = [1] * (k + 1)
        layout[j] = -1
        r = ctx.make("Reshape", [r, ints_const(ctx, layout)])
        cols.append(ctx.make("Expand", [r, ctx.shape_tensor(list(lengths) + [1])]))
    return ctx.make("Concat", cols, axis=-1)


def _reduce_dtype(ctx: ConvertContext, dtype: str, reduction: str, names: Sequence[str]) -> tuple[list[str], bool]:
    """Cast data and updates to float32 where ORT's CPU scatter lacks a reducing kernel."""
    if reduction != "none" and dtype in _REDUCE_IN_FLOAT32:
        return [ctx.cast(n, "float32") for n in names], True
    return list(names), False


# ----------------------------------------------------------------------------
# Gathers
# ----------------------------------------------------------------------------


@onnx_op("Gather")
def convert_gather(ctx: ConvertContext, node: Node) -> list[str]:
    """Gather(x, *indices) [axes, slice_sizes] -> ONNX Gather (one index array) or GatherND, + Unsqueeze."""
    info = ctx.in_info(node, 0)
    rank = info.rank
    axes, sizes, trim = gather_args(node, info)
    x = ctx.input(node, 0)
    if trim:
        # Non-indexed axes start at 0: keep the first slice_size entries.
        x = slice_axes(ctx, x, trim, [0] * len(trim), [sizes[a] for a in trim])
    out_shape = ctx.out_info(node).shape
    batch = out_shape[:len(out_shape) - rank]
    nb = len(batch)
    if not axes:
        return [x]
    if len(axes) == 1:
        a = axes[0]
        idx = _index(ctx, node, 1)
        if tuple(ctx.in_info(node, 1).shape) != tuple(batch):
            idx = ctx.make("Expand", [idx, ctx.shape_tensor(batch)])
        from .quant import gather_tied_rows, shares_nbits_blob

        if not trim and a == 0 and shares_nbits_blob(ctx, node.inputs[0]):
            g = gather_tied_rows(ctx, node.inputs[0], idx)  # a tied 4-bit embedding stored once, as MatMulNBits' bytes
        else:
            g = ctx.make("Gather", [x, idx], axis=a)
        # ONNX puts the index dims at the axis; MLX puts them first.
        g = _transpose(ctx, g, list(range(a, a + nb)) + list(range(a)) + list(range(a + nb, rank - 1 + nb)))
    else:
        others = [d for d in range(rank) if d not in axes]
        x = _transpose(ctx, x, axes + others)
        g = ctx.make("GatherND", [x, _stack_indices(ctx, node, range(1, 1 + len(axes)), batch)])
    return [ctx.make("Unsqueeze", [g, ints_const(ctx, [nb + a for a in axes])])]


@onnx_op("GatherAxis")
def convert_gather_axis(ctx: ConvertContext, node: Node) -> list[str]:
    """GatherAxis(x, indices) [axis] -> ONNX GatherElements."""
    axis = int(node.arguments[0]) % ctx.in_info(node, 0).rank
    idx = _index(ctx, node, 1)
    out_shape = ctx.out_info(node).shape
    if tuple(ctx.in_info(node, 1).shape) != tuple(out_shape):
        idx = ctx.make("Expand", [idx, ctx.shape_tensor(out_shape)])
    return [ctx.make("GatherElements", [ctx.input(node, 0), idx], axis=axis)]


@onnx_op("DynamicSlice")
def convert_dynamic_slice(ctx: ConvertContext, node: Node) -> list[str]:
    """DynamicSlice(x, start) [axes, slice_size] -> ONNX Slice with starts computed at run time."""
    info = ctx.in_info(node, 0)
    rank = info.rank
    axes = [a % rank for a in static_ints(node, node.arguments[0], "axes")]
    sizes = list(node.arguments[1])
    starts = ctx.make("Reshape", [_index(ctx, node, 1, int64_only=True), ints_const(ctx, [-1])])
    ends = ctx.make("Add", [starts, ctx.shape_tensor([sizes[a] for a in axes])])
    out = ctx.make("Slice", [ctx.input(node, 0), starts, ends, ints_const(ctx, axes)])
    trim = [a for a in range(rank) if a not in axes and sizes[a] != info.shape[a]]
    if trim:
        out = slice_axes(ctx, out, trim, [0] * len(trim), [sizes[a] for a in trim])
    return [out]


# ----------------------------------------------------------------------------
# Scatters
# ----------------------------------------------------------------------------


def _combine_duplicates(ctx: ConvertContext, x: str, ind: str, upd: str, m: int, tail: Sequence[Dim], op: str,
                        dtype: str) -> str:
    """ScatterND with max/min before opset 18: reduce duplicate indices first, then plain ScatterND.

    Every update takes the max (min) over all updates aimed at its index, so
    duplicates write the same value and the write order no longer matters.
    Costs an N x N comparison over the N index tuples.
    """
    flat_ind = ctx.make("Reshape", [ind, ints_const(ctx, [-1, m])])
    flat_upd = ctx.make("Reshape", [upd, ctx.shape_tensor([-1, *tail])])
    same = ctx.make("Equal", [ctx.make("Unsqueeze", [flat_ind, ints_const(ctx, [1])]),
                              ctx.make("Unsqueeze", [flat_ind, ints_const(ctx, [0])])])
    same = ctx.make("ReduceMin", [ctx.cast(same, "int32")], axes=[2], keepdims=0)
    same = ctx.make("Reshape", [ctx.cast(same, "bool"), ints_const(ctx, [0, 0] + [1] * len(tail))])
    # ORT's ReduceMax/Min lack small and unsigned int kernels.
    wide = dtype if dtype in ("float32", "float16", "float64", "int32", "int64") else "int64"
    u = flat_upd if wide == dtype else ctx.cast(flat_upd, wide)
    cand = ctx.make("Where", [same, ctx.make("Unsqueeze", [u, ints_const(ctx, [0])]),
                              ctx.make("Unsqueeze", [u, ints_const(ctx, [1])])])
    comb = ctx.make("ReduceMax" if op == "Max" else "ReduceMin", [cand], axes=[1], keepdims=0)
    if wide != dtype:
        comb = ctx.cast(comb, dtype)
    new = ctx.make(op, [ctx.make("GatherND", [x, flat_ind]), comb])
    return ctx.make("ScatterND", [x, flat_ind, new])


def _scatter_nd(ctx: ConvertContext, node: Node, x: str, ind: str, upd: str, m: int, tail: Sequence[Dim],
                reduction: str) -> str:
    """ScatterND with MLX's reduction, falling back where the opset or ORT lacks it."""
    dtype = ctx.in_info(node, 0).dtype
    if ctx.opset < _REDUCTION_SINCE[reduction]:
        if reduction in ("max", "min"):
            return _combine_duplicates(ctx, x, ind, upd, m, tail, _REDUCE_OPS[reduction], dtype)
        raise args_error(node, f"reduction {reduction} needs opset {_REDUCTION_SINCE[reduction]}; got {ctx.opset}")
    (x, upd), widened = _reduce_dtype(ctx, dtype, reduction, [x, upd])
    out = ctx.make("ScatterND", [x, ind, upd], reduction=None if reduction == "none" else reduction)
    return ctx.cast(out, dtype) if widened else out


def _drop_unit_axes(ctx: ConvertContext, upd: str, axes: Sequence[int], target: Sequence[Dim]) -> str:
    """Squeeze ``axes`` away, or skip the Reshape that MLX used to add them (x.at[i].add(u))."""
    prod = ctx.producer(upd)
    if prod is not None and prod.op_type == "Reshape":
        src = prod.input[0]
        ir = next((k for k, v in ctx.values.items() if v == src), None)
        if ir is not None and tuple(ctx.graph.tensors[ir].shape) == tuple(target):
            return src
    return ctx.make("Squeeze", [upd, ints_const(ctx, axes)])


@onnx_op("Scatter")
def convert_scatter(ctx: ConvertContext, node: Node) -> list[str]:
    """Scatter(x, *indices, updates) [reduce, axes] -> ONNX ScatterND (reduction add/mul/max/min)."""
    kind = choice_arg(node, int(node.arguments[0]), SCATTER_KINDS)
    reduction = _SCATTER_REDUCTIONS[kind]
    info = ctx.in_info(node, 0)
    rank = info.rank
    axes = [a % rank for a in static_ints(node, node.arguments[1], "axes")]
    m = len(axes)
    upd_info = ctx.in_info(node, m + 1)
    nb = upd_info.rank - rank
    batch, window = upd_info.shape[:nb], upd_info.shape[nb:]
    others = [d for d in range(rank) if d not in axes]
    check_scatter_window(node, info, window, axes)
    upd = ctx.input(node, m + 1)
    if m == 0:
        return [upd if reduction == "none" else ctx.make(_REDUCE_OPS[reduction], [ctx.input(node, 0), upd])]
    perm = axes + others
    x = _transpose(ctx, ctx.input(node, 0), perm)
    ind = _stack_indices(ctx, node, range(1, 1 + m), batch)
    upd = _drop_unit_axes(ctx, upd, [nb + a for a in axes], list(batch) + [info.shape[d] for d in others])
    out = _scatter_nd(ctx, node, x, ind, upd, m, [info.shape[d] for d in others], reduction)
    return [_transpose(ctx, out, _inverse(perm))]


@onnx_op("ScatterAxis")
def convert_scatter_axis(ctx: ConvertContext, node: Node) -> list[str]:
    """ScatterAxis(x, indices, updates) [reduce, axis] -> ONNX ScatterElements (reduction add or none)."""
    kind = choice_arg(node, int(node.arguments[0]), SCATTER_AXIS_KINDS)
    reduction = "add" if kind == 0 else "none"
    axis = int(node.arguments[1]) % ctx.in_info(node, 0).rank
    dtype = ctx.in_info(node, 0).dtype
    idx = _index(ctx, node, 1)
    upd = ctx.input(node, 2)
    idx_shape = ctx.in_info(node, 1).shape
    if tuple(ctx.in_info(node, 2).shape) != tuple(idx_shape):
        upd = ctx.make("Expand", [upd, ctx.shape_tensor(idx_shape)])
    (x, upd), widened = _reduce_dtype(ctx, dtype, reduction, [ctx.input(node, 0), upd])
    out = ctx.make("ScatterElements", [x, idx, upd], axis=axis, reduction=None if reduction == "none" else reduction)
    return [ctx.cast(out, dtype) if widened else out]


def _update_window(ctx: ConvertContext, node: Node, x: str, upd: str, axes: Sequence[int], starts: Sequence[Start],
                   steps: Sequence[int], reduction: str) -> str:
    """x with the strided window (starts, steps, upd's shape) on ``axes`` set to / combined with upd."""
    info = ctx.in_info(node, 0)
    lengths = ctx.in_info(node, 1).shape
    if len(axes) == 1 and steps[0] == 1:
        # One contiguous axis: Concat(before, window, after) avoids index tensors and transposes.
        a, s = axes[0], starts[0]
        e: Start = ctx.make("Add", [s, ctx.dim(lengths[a])]) if isinstance(s, str) else dim_add(s, lengths[a])
        pieces = []
        if not (isinstance(s, int) and s == 0):
            pieces.append(_slice_piece(ctx, x, a, 0, s))
        if reduction != "none":
            upd = ctx.make(_REDUCE_OPS[reduction], [_slice_piece(ctx, x, a, s, e), upd])
        pieces.append(upd)
        if isinstance(e, str) or e != info.shape[a]:
            pieces.append(_slice_piece(ctx, x, a, e, INT64_MAX))
        return pieces[0] if len(pieces) == 1 else ctx.make("Concat", pieces, axis=a)
    # Index every axis up to the last one that changes; trailing axes ride along in the updates.
    last = max(axes)
    grid_starts: list[Start] = [0] * (last + 1)
    grid_steps = [1] * (last + 1)
    for a, s, st in zip(axes, starts, steps):
        grid_starts[a], grid_steps[a] = s, st
    grid = _index_grid(ctx, grid_starts, grid_steps, lengths[:last + 1])
    if reduction != "none":
        # Window positions are distinct, so combining first and writing plainly is exact at any opset.
        upd = ctx.make(_REDUCE_OPS[reduction], [ctx.make("GatherND", [x, grid]), upd])
    return ctx.make("ScatterND", [x, grid, upd])


def _slice_piece(ctx: ConvertContext, x: str, axis: int, start: Start, end: Start) -> str:
    if isinstance(start, str) or isinstance(end, str):
        ends = end if isinstance(end, str) else ctx.shape_tensor([end])
        begins = start if isinstance(start, str) else ctx.shape_tensor([start])
        return ctx.make("Slice", [x, begins, ends, ints_const(ctx, [axis])])
    return slice_axes(ctx, x, [axis], [start], [end])


@onnx_op("SliceUpdate")
def convert_slice_update(ctx: ConvertContext, node: Node) -> list[str]:
    """SliceUpdate(x, update) [reduce, start, stop, strides] -> ONNX Concat of slices, or ScatterND over a grid."""
    kind = choice_arg(node, int(node.arguments[0]), SCATTER_KINDS)
    reduction = _SCATTER_REDUCTIONS[kind]
    start, _, strides = (list(a) for a in node.arguments[1:4])
    shape = ctx.in_info(node, 0).shape
    lengths = ctx.in_info(node, 1).shape
    for ax, s in enumerate(strides):
        if isinstance(s, SymExpr):
            raise args_error(node, f"strides must be static; got {s} on axis {ax}")
    x, upd = ctx.input(node, 0), ctx.input(node, 1)
    axes = [a for a in range(len(shape)) if not (start[a] == 0 and strides[a] == 1 and lengths[a] == shape[a])]
    if not axes:
        return [upd if reduction == "none" else ctx.make(_REDUCE_OPS[reduction], [x, upd])]
    return [_update_window(ctx, node, x, upd, axes, [start[a] for a in axes], [int(strides[a]) for a in axes],
                           reduction)]


@onnx_op("DynamicSliceUpdate")
def convert_dynamic_slice_update(ctx: ConvertContext, node: Node) -> list[str]:
    """DynamicSliceUpdate(x, update, start) [axes] -> ONNX Concat of slices (one axis) or ScatterND."""
    rank = ctx.in_info(node, 0).rank
    axes = [a % rank for a in static_ints(node, node.arguments[0], "axes")]
    starts_t = ctx.make("Reshape", [_index(ctx, node, 2, int64_only=True), ints_const(ctx, [-1])])
    shape, lengths = ctx.in_info(node, 0).shape, ctx.in_info(node, 1).shape
    starts: dict[int, Start] = {}
    for i, a in enumerate(axes):
        starts[a] = starts_t if len(axes) == 1 else ctx.make(
            "Slice", [starts_t, ints_const(ctx, [i]), ints_const(ctx, [i + 1])])
    # Axes outside ``axes`` where the update is shorter start at 0.
    for a in range(rank):
        if a not in starts and lengths[a] != shape[a]:
            starts[a] = 0
    order = sorted(starts)
    return [_update_window(ctx, node, ctx.input(node, 0), ctx.input(node, 1), order, [starts[a] for a in order],
                           [1] * len(order), "none")]


@onnx_op("MaskedScatter")
def convert_masked_scatter(ctx: ConvertContext, node: Node) -> list[str]:
    """MaskedScatter(x, mask, src) -> ONNX CumSum of the mask, GatherElements from src, Where (per axis-0 row)."""
    x, mask, src = (ctx.input(node, i) for i in range(3))
    info = ctx.in_info(node, 0)
    check_batch_axis(node, info)
    # Row b takes src[b] in order at its true mask positions: position -> (trues before it).
    flat_x = ctx.make("Flatten", [x], axis=1)
    flat_mask = ctx.make("Flatten", [mask], axis=1)
    flat_src = ctx.make("Flatten", [src], axis=1)
    count = ctx.make("CumSum", [ctx.cast(flat_mask, "int64"), ctx.const(np.array(1, np.int64))])
    # Unused (false) positions before the first true read index -1, which wraps to a valid index.
    pos = ctx.make("Sub", [count, ctx.const(np.array(1, np.int64))])
    picked = ctx.make("GatherElements", [flat_src, pos], axis=1)
    out = ctx.make("Where", [flat_mask, picked, flat_x])
    target = ctx.shape_tensor(info.shape) if all(not isinstance(d, SymExpr) for d in info.shape) \
        else ctx.make("Shape", [x])
    return [ctx.make("Reshape", [out, target], allowzero=1 if 0 in info.shape else None)]
