"""Reductions as torch calls."""

from __future__ import annotations

import operator

import torch

from ...dtypes import FLOAT_DTYPES, torch_dtype
from ...graph import Node
from ..args import ARG_REDUCE_KINDS, REDUCE_KINDS, axis_arg, check_sorted_sequence, choice_arg, scan_args
from .context import TorchContext, torch_op
from .windows import pooled_reduce

# mlx::core::Reduce::ReduceType order: And, Or, Sum, Prod, Min, Max
_REDUCERS = {0: torch.all, 1: torch.any, 2: torch.sum, 3: torch.prod, 4: torch.amin, 5: torch.amax}


@torch_op("Reduce")
def convert_reduce(ctx: TorchContext, node: Node) -> list:
    """Reduce(x) [type, axes] -> torch.all/any/sum/prod/amin/amax with keepdim, or max/avg pooling of a window view."""
    kind, axes = int(node.arguments[0]), [int(a) for a in node.arguments[1]]
    choice_arg(node, kind, REDUCE_KINDS)
    x = ctx.input(node, 0)
    if not axes:
        return [x]
    pooled = pooled_reduce(ctx, node)
    if pooled is not None:
        return [pooled]
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


# -- ArgReduce, Scan, sorting, LogSumExp, SearchSorted -------------------------------------------

_HALF = {"float16", "bfloat16"}
_FLOATS = FLOAT_DTYPES
_INT64_MIN = -(2**63)


_axis = axis_arg


def _ordered(ctx: TorchContext, x: object, dtype: str) -> tuple[object, str]:
    """``x`` in a dtype with the same order that torch's CPU comparisons and arg/cum kernels take."""
    if dtype == "bool" or dtype in ("uint16", "uint32"):
        return ctx.method("to", x, torch.int64), "int64"
    if dtype == "uint64":
        # Flipping the sign bit of the bit pattern maps uint64's order onto int64's.
        return ctx.call(torch.bitwise_xor, ctx.method("to", x, torch.int64), _INT64_MIN), "uint64"
    return x, dtype


def _unordered(ctx: TorchContext, x: object, compute: str, dtype: str) -> object:
    """Undo :func:`_ordered` on values."""
    if compute == "uint64":
        x = ctx.call(torch.bitwise_xor, x, _INT64_MIN)
    return x if compute == dtype else ctx.method("to", x, torch_dtype(dtype))


@torch_op("ArgReduce")
def convert_arg_reduce(ctx: TorchContext, node: Node) -> list:
    """ArgReduce(x) [ArgMin|ArgMax, axis] -> torch.argmin/argmax keepdim, cast to the uint32 output."""
    kind = choice_arg(node, int(node.arguments[0]), ARG_REDUCE_KINDS)
    info = ctx.in_info(node, 0)
    axis = _axis(node, node.arguments[1], info.rank)
    # torch, like MLX, returns the first NaN, else the first of tied extremes.
    x, _ = _ordered(ctx, ctx.input(node, 0), info.dtype)
    index = ctx.call(torch.argmax if kind else torch.argmin, x, axis, keepdim=True)
    return [ctx.method("to", index, torch_dtype(ctx.out_info(node).dtype))]


# mlx::core::Scan::ReduceType order: Max, Min, Sum, Prod, LogAddExp

_SCAN_NATIVE = {"float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8"}


def _scan_identity(kind: str, dtype: str) -> object:
    """What MLX puts first in an exclusive scan of ``dtype``, as a Python number (see _ordered)."""
    if kind == "Sum":
        return 0
    if kind == "Prod":
        return 1
    if dtype in _FLOATS or kind == "LogAddExp":
        return float("-inf") if kind in ("Max", "LogAddExp") else float("inf")
    if dtype == "bool":
        return int(kind == "Min")
    if dtype == "uint64":  # sign-flipped int64 (see _ordered)
        dtype = "int64"
    info = torch.iinfo(torch_dtype(dtype))
    return info.min if kind == "Max" else info.max


@torch_op("Scan")
def convert_scan(ctx: TorchContext, node: Node) -> list:
    """Scan(x) [type, axis, reverse, inclusive] -> torch.cumsum/cumprod/cummax/cummin/logcumsumexp (+ flip, pad)."""
    info = ctx.in_info(node, 0)
    out_dtype = ctx.out_info(node).dtype
    kind, axis, reverse, inclusive = scan_args(node, info, out_dtype)
    x = ctx.input(node, 0)
    if kind in ("Max", "Min"):
        x, compute = _ordered(ctx, x, info.dtype)
    else:
        # MLX's cumsum of bool gives int32; half precision logcumsumexp accumulates in float32.
        compute = out_dtype if out_dtype in _SCAN_NATIVE else "int64"
        if kind == "LogAddExp" and out_dtype in _HALF:
            compute = "float32"
        if compute != info.dtype:
            x = ctx.method("to", x, torch_dtype(compute))
    if reverse:
        x = ctx.call(torch.flip, x, [axis])
    if not inclusive:
        # An exclusive scan is the inclusive scan of [identity, x[:-1]].
        pad = [0, 0] * (info.rank - 1 - axis) + [1, 0]
        fill = _scan_identity(kind, info.dtype if kind in ("Max", "Min") else compute)
        padded = ctx.call(torch.constant_pad_nd, x, pad, fill)
        x = ctx.method("narrow", padded, axis, 0, ctx.dim(info.shape[axis]))
    if kind in ("Sum", "Prod"):
        # torch promotes integer scans to int64 unless told the dtype.
        out = ctx.call(torch.cumsum if kind == "Sum" else torch.cumprod, x, axis, dtype=torch_dtype(compute))
    elif kind == "LogAddExp":
        out = ctx.call(torch.logcumsumexp, x, axis)
    else:
        out = ctx.call(operator.getitem, ctx.call(torch.cummax if kind == "Max" else torch.cummin, x, axis), 0)
    if reverse:
        out = ctx.call(torch.flip, out, [axis])
    return [_unordered(ctx, out, compute, out_dtype)]


def _sort(ctx: TorchContext, node: Node, axis_arg: object) -> tuple[object, object]:
    """(values, int64 indices) of a stable ascending sort along the axis; NaN last, as in MLX."""
    info = ctx.in_info(node, 0)
    axis = _axis(node, axis_arg, info.rank)
    x, compute = _ordered(ctx, ctx.input(node, 0), info.dtype)
    pair = ctx.call(torch.sort, x, dim=axis, stable=True)
    values = ctx.call(operator.getitem, pair, 0)
    return _unordered(ctx, values, compute, info.dtype), ctx.call(operator.getitem, pair, 1)


@torch_op("Sort")
def convert_sort(ctx: TorchContext, node: Node) -> list:
    """Sort(x) [axis] -> torch.sort (stable) values."""
    return [_sort(ctx, node, node.arguments[0])[0]]


@torch_op("ArgSort")
def convert_arg_sort(ctx: TorchContext, node: Node) -> list:
    """ArgSort(x) [axis] -> torch.sort (stable) indices, cast to the uint32 output."""
    return [ctx.method("to", _sort(ctx, node, node.arguments[0])[1], torch_dtype(ctx.out_info(node).dtype))]


# A sorted axis is a valid partition around every kth (kth may even be dynamic).
@torch_op("Partition")
def convert_partition(ctx: TorchContext, node: Node) -> list:
    """Partition(x) [kth, axis] -> torch.sort values (a full sort is valid for any kth)."""
    return [_sort(ctx, node, node.arguments[1])[0]]


@torch_op("ArgPartition")
def convert_arg_partition(ctx: TorchContext, node: Node) -> list:
    """ArgPartition(x) [kth, axis] -> torch.sort indices (a full sort), cast to the uint32 output."""
    return [ctx.method("to", _sort(ctx, node, node.arguments[1])[1], torch_dtype(ctx.out_info(node).dtype))]


@torch_op("LogSumExp")
def convert_log_sum_exp(ctx: TorchContext, node: Node) -> list:
    """LogSumExp(x) -> torch.logsumexp over the last axis, keepdim (in float32 for half inputs, as MLX)."""
    info = ctx.in_info(node, 0)
    _axis(node, -1, info.rank)
    x = ctx.input(node, 0)
    if info.dtype in _HALF:
        out = ctx.call(torch.logsumexp, ctx.method("float", x), [-1], keepdim=True)
        return [ctx.method("to", out, torch_dtype(info.dtype))]
    return [ctx.call(torch.logsumexp, x, [-1], keepdim=True)]


@torch_op("SearchSorted")
def convert_search_sorted(ctx: TorchContext, node: Node) -> list:
    """SearchSorted(sorted, values) [right] -> torch.lt/le on every pair, sum, cast to the uint32 output."""
    right = bool(node.arguments[0])
    info = ctx.in_info(node, 0)
    check_sorted_sequence(node, info)
    seq, _ = _ordered(ctx, ctx.input(node, 0), info.dtype)
    values, _ = _ordered(ctx, ctx.input(node, 1), ctx.in_info(node, 1).dtype)
    values = ctx.method("unsqueeze", values, -1)  # [..., 1] against [n]
    # left counts seq < value, right counts seq <= value (torch.searchsorted has no NaN order).
    hits = ctx.call(torch.le if right else torch.lt, seq, values)
    if info.dtype in _FLOATS:
        # MLX orders NaN after every number and equal to itself (as its sort places it).
        value_nan = ctx.call(torch.isnan, values)
        if not right:
            value_nan = ctx.call(torch.logical_and, value_nan, ctx.call(torch.logical_not, ctx.call(torch.isnan, seq)))
        hits = ctx.call(torch.logical_or, hits, value_nan)
    count = ctx.call(torch.sum, hits, [-1], dtype=torch.int64)
    return [ctx.method("to", count, torch_dtype(ctx.out_info(node).dtype))]
