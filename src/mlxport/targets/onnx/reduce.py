"""Reductions, scans and sorts: Reduce, ArgReduce, Scan, Sort, ArgSort, Partition, ArgPartition,
Softmax, LogSumExp, SearchSorted.

ONNX Runtime's CPU kernels cover fewer dtypes than MLX (no bool reductions, no
uint32 ReduceMin/ArgMax/TopK/CumSum...), so each translation computes in a dtype
the runtime has and casts back; the ``_*_dtype`` helpers say which.
"""

from __future__ import annotations

import numpy as np

from ...dtypes import FLOAT_DTYPES, numpy_dtype
from ...graph import Node, SymExpr
from ..args import ARG_REDUCE_KINDS, REDUCE_KINDS, axis_arg, check_sorted_sequence, choice_arg, scan_args, static_ints
from .context import ConvertContext, onnx_op

HALF_DTYPES = {"float16", "bfloat16"}
# Dtypes ORT's CPU provider orders natively (ReduceMin/Max, ArgMin/Max, TopK, Min/Max).
_ORDER_NATIVE = {"float16", "bfloat16", "float32", "float64", "int8", "uint8", "int32", "int64"}
# Dtypes ORT's CumSum takes.
_CUMSUM_NATIVE = {"float16", "bfloat16", "float32", "float64", "int32", "int64"}


def _order_dtype(dtype: str) -> str:
    """A dtype with the same order as ``dtype`` that ORT compares natively."""
    if dtype in _ORDER_NATIVE:
        return dtype
    return "uint8" if dtype == "bool" else "int64"


def _arith_dtype(dtype: str) -> str:
    """Where ORT's ReduceSum/ReduceProd match MLX: floats as they are (float16 accumulates in
    float32 in both), integers in int64 (ORT's int32 reductions saturate where MLX wraps)."""
    return dtype if dtype in FLOAT_DTYPES else "int64"


def _to(ctx: ConvertContext, x: str, src: str, dst: str) -> str:
    return x if src == dst else ctx.cast(x, dst)


def _reduce_op(ctx: ConvertContext, op: str, x: str, axes: list[int], axes_input: bool,
               keepdims: int = 1) -> str:
    """One ONNX Reduce*: axes as an input (ReduceSum since 13, the rest since 18) or an attribute."""
    if op == "ReduceSum" or axes_input:
        return ctx.make(op, [x, ctx.const(np.array(axes, np.int64))], keepdims=keepdims)
    return ctx.make(op, [x], axes=axes, keepdims=keepdims)


def _axis(node: Node, value: object, rank: int) -> int:
    return axis_arg(node, int(value) if not isinstance(value, SymExpr) else value, rank)


# -- Reduce, ArgReduce -------------------------------------------------------------------------

# mlx::core::Reduce::ReduceType order.
_REDUCE_KINDS = ("And", "Or", "Sum", "Prod", "Min", "Max")
_REDUCE_ONNX = {"And": "ReduceMin", "Or": "ReduceMax", "Sum": "ReduceSum", "Prod": "ReduceProd",
                "Min": "ReduceMin", "Max": "ReduceMax"}


def _reduce(ctx: ConvertContext, node: Node, axes_input: bool) -> list[str]:
    kind = choice_arg(node, int(node.arguments[0]), REDUCE_KINDS)
    name = _REDUCE_KINDS[kind]
    axes = static_ints(node, node.arguments[1], "axes")
    x = ctx.input(node, 0)
    in_dtype, out_dtype = ctx.in_info(node, 0).dtype, ctx.out_info(node).dtype
    if name in ("And", "Or"):
        # Any nonzero (NaN included) is true, as in MLX; ONNX reductions take no bool, so
        # And = ReduceMin and Or = ReduceMax over uint8.
        x = _to(ctx, x, in_dtype, "bool")
        compute, in_dtype = "uint8", "bool"
    elif name in ("Sum", "Prod"):
        # MLX sums bool/int8 into int32 and uint8 into uint32: the output dtype rules.
        compute = _arith_dtype(out_dtype)
    else:
        compute = _order_dtype(in_dtype)
    x = _to(ctx, x, in_dtype, compute)
    if not axes:  # an empty axes input would make ONNX reduce every axis
        return [_to(ctx, x, compute, out_dtype)]
    # ORT's ReduceMax/Min can skip a NaN that MLX would return (onnxruntime#10514). Forcing
    # NaN out (IsNaN + Where + ReduceSum) made a max pool 3-4x slower, so we leave it.
    out = _reduce_op(ctx, _REDUCE_ONNX[name], x, axes, axes_input)
    return [_to(ctx, out, compute, out_dtype)]


# Opset twins by design (STYLE.md §2, `since=` variants); the work is in _reduce.
@onnx_op("Reduce")
def convert_reduce(ctx: ConvertContext, node: Node) -> list[str]:
    """Reduce(x) [type, axes] -> ONNX ReduceSum/Prod/Min/Max, keepdims (And/Or as ReduceMin/Max over uint8)."""
    return _reduce(ctx, node, axes_input=False)


@onnx_op("Reduce", since=18)
def convert_reduce_18(ctx: ConvertContext, node: Node) -> list[str]:
    """Reduce(x) [type, axes] -> ONNX ReduceMin/Max/Sum/Prod with axes as an input."""
    return _reduce(ctx, node, axes_input=True)


@onnx_op("ArgReduce")
def convert_arg_reduce(ctx: ConvertContext, node: Node) -> list[str]:
    """ArgReduce(x) [ArgMin|ArgMax, axis] -> ONNX TopK k=1 (floats) or ArgMin/ArgMax, Cast to uint32."""
    kind = choice_arg(node, int(node.arguments[0]), ARG_REDUCE_KINDS)
    info = ctx.in_info(node, 0)
    axis = _axis(node, node.arguments[1], info.rank)
    x = ctx.input(node, 0)
    if info.dtype in FLOAT_DTYPES:
        # MLX picks the first NaN, else the first extreme. ONNX ArgMax skips a NaN that is not
        # first; ORT's TopK ranks NaN above every number and breaks ties by lower index.
        if kind == 0:
            x = ctx.make("Neg", [x])
        _, index = ctx.make("TopK", [x, ctx.const([1], np.int64)], outputs=2, axis=axis, largest=1, sorted=1)
    else:
        compute = _order_dtype(info.dtype)
        x = _to(ctx, x, info.dtype, compute)
        index = ctx.make("ArgMax" if kind else "ArgMin", [x], axis=axis, keepdims=1, select_last_index=0)
    return [ctx.cast(index, ctx.out_info(node).dtype)]


# -- Scan: CumSum, or a Hillis-Steele prefix scan for max/min/prod/logaddexp -------------------

# mlx::core::Scan::ReduceType order.



def _scan_dtype(kind: str, dtype: str) -> str:
    if kind == "Sum":
        return dtype if dtype in _CUMSUM_NATIVE else "int64"
    if kind == "LogAddExp":
        # exp/log in half precision would lose digits MLX keeps.
        return "float32" if dtype in HALF_DTYPES else dtype
    if kind == "Prod":
        return "uint8" if dtype == "bool" else dtype  # ORT's Mul takes no bool; integer Mul wraps like MLX
    return _order_dtype(dtype)


def _identity(kind: str, dtype: str) -> np.ndarray:
    """The scan's neutral element: what MLX puts first in an exclusive scan."""
    np_dtype = numpy_dtype(dtype)
    if kind == "Prod":
        value = 1
    elif dtype in FLOAT_DTYPES:
        value = np.inf if kind == "Min" else -np.inf
    else:
        info = np.iinfo(np_dtype)
        value = info.max if kind == "Min" else info.min
    return np.array(value, dtype=np_dtype)


def _log_add_exp(ctx: ConvertContext, a: str, b: str, dtype: str) -> str:
    """max + log(1 + exp(min - max)); where a == b (both infinite included) the gap is 0."""
    hi, lo = ctx.make("Max", [a, b]), ctx.make("Min", [a, b])
    zero, one = (ctx.const(np.array(v, numpy_dtype(dtype))) for v in (0, 1))
    gap = ctx.make("Where", [ctx.make("Equal", [a, b]), zero, ctx.make("Sub", [lo, hi])])
    return ctx.make("Add", [hi, ctx.make("Log", [ctx.make("Add", [one, ctx.make("Exp", [gap])])])])


def _combine(ctx: ConvertContext, kind: str, dtype: str, a: str, b: str) -> str:
    if kind == "LogAddExp":
        return _log_add_exp(ctx, a, b, dtype)
    return ctx.make({"Max": "Max", "Min": "Min", "Prod": "Mul"}[kind], [a, b])


def _shift(ctx: ConvertContext, y: str, axis: int, rank: int, n: int, step: int, reverse: bool,
           fill: str) -> str:
    """``y`` moved ``step`` places along ``axis`` (towards the end, or the start when reverse)."""
    lo, hi = (step, n) if reverse else (0, n - step)
    kept = ctx.make("Slice", [y, ctx.const([lo], np.int64), ctx.const([hi], np.int64),
                              ctx.const([axis], np.int64)])
    pads = np.zeros(2 * rank, np.int64)
    pads[axis + rank if reverse else axis] = step
    return ctx.make("Pad", [kept, ctx.const(pads), fill])


def _scan_doubling(ctx: ConvertContext, x: str, kind: str, dtype: str, axis: int, rank: int, n: int,
                   reverse: bool, inclusive: bool, fill: str) -> str:
    # Hillis-Steele: after the step of width s every position holds the combination of the
    # 2s values ending there; ceil(log2 n) steps of exact elementwise ops (max/min are
    # order-free; products are only regrouped).
    y = x if inclusive else _shift(ctx, x, axis, rank, n, 1, reverse, fill)
    step = 1
    while step < n:
        y = _combine(ctx, kind, dtype, y, _shift(ctx, y, axis, rank, n, step, reverse, fill))
        step *= 2
    return y


_SCAN_REDUCE = {"Max": "ReduceMax", "Min": "ReduceMin", "Prod": "ReduceProd", "LogAddExp": "ReduceLogSumExp"}


def _scan_masked(ctx: ConvertContext, x: str, kind: str, axis: int, rank: int, n: SymExpr,
                 reverse: bool, inclusive: bool, fill: str, axes_input: bool) -> str:
    # A dynamic length: reduce an [n, n] triangle (O(n^2) memory) instead of log2(n) steps.
    index = ctx.make("Range", [ctx.const(np.array(0, np.int64)), ctx.scalar(n), ctx.const(np.array(1, np.int64))])
    rows = ctx.make("Unsqueeze", [index, ctx.const([1], np.int64)])
    cols = ctx.make("Unsqueeze", [index, ctx.const([0], np.int64)])
    compare = {(False, True): "LessOrEqual", (False, False): "Less",
               (True, True): "GreaterOrEqual", (True, False): "Greater"}[(reverse, inclusive)]
    mask = ctx.make(compare, [cols, rows])  # [i, j]: x[j] takes part in output i
    trailing = rank - axis - 1
    if trailing:
        mask = ctx.make("Unsqueeze", [mask, ctx.const(list(range(2, 2 + trailing)), np.int64)])
    spread = ctx.make("Where", [mask, ctx.make("Unsqueeze", [x, ctx.const([axis], np.int64)]), fill])
    return _reduce_op(ctx, _SCAN_REDUCE[kind], spread, [axis + 1], axes_input, keepdims=0)


def _scan(ctx: ConvertContext, node: Node, axes_input: bool) -> list[str]:
    info = ctx.in_info(node, 0)
    out_dtype = ctx.out_info(node).dtype
    kind, axis, reverse, inclusive = scan_args(node, info, out_dtype)
    compute = _scan_dtype(kind, out_dtype)
    # MLX's cumsum of bool gives int32: cast straight to the dtype we compute in.
    x = _to(ctx, ctx.input(node, 0), info.dtype, compute)
    if kind == "Sum":
        out = ctx.make("CumSum", [x, ctx.const(np.array(axis, np.int64))],
                       exclusive=int(not inclusive), reverse=int(bool(reverse)))
        return [_to(ctx, out, compute, out_dtype)]
    n = info.shape[axis]
    if isinstance(n, SymExpr):
        if kind == "Prod" and compute not in FLOAT_DTYPES:
            compute, x = "int64", _to(ctx, x, compute, "int64")  # ORT's int32 ReduceProd saturates
        fill = ctx.const(_identity(kind, compute))
        out = _scan_masked(ctx, x, kind, axis, info.rank, n, bool(reverse), bool(inclusive), fill, axes_input)
    else:
        fill = ctx.const(_identity(kind, compute))
        out = _scan_doubling(ctx, x, kind, compute, axis, info.rank, int(n), bool(reverse), bool(inclusive), fill)
    return [_to(ctx, out, compute, out_dtype)]


@onnx_op("Scan")
def convert_scan(ctx: ConvertContext, node: Node) -> list[str]:
    """Scan(x) [type, axis, reverse, inclusive] -> ONNX CumSum, or Slice/Pad + Max/Min/Mul steps."""
    return _scan(ctx, node, axes_input=False)


@onnx_op("Scan", since=18)
def convert_scan_18(ctx: ConvertContext, node: Node) -> list[str]:
    """Scan(x) [type, axis, reverse, inclusive] -> the same; a dynamic axis's Reduce* take axes as input."""
    return _scan(ctx, node, axes_input=True)


# -- Sorting: one ascending TopK over the whole axis -------------------------------------------


def _sort(ctx: ConvertContext, node: Node, axis_arg: object) -> tuple[str, str]:
    """(values, int64 indices) of an ascending, stable sort; NaN last, as in MLX."""
    info = ctx.in_info(node, 0)
    axis = _axis(node, axis_arg, info.rank)
    compute = _order_dtype(info.dtype)
    x = _to(ctx, ctx.input(node, 0), info.dtype, compute)
    # ONNX TopK breaks ties by lower index, so k = n gives a stable sort.
    values, index = ctx.make("TopK", [x, ctx.dim(info.shape[axis])], outputs=2, axis=axis, largest=0, sorted=1)
    return _to(ctx, values, compute, info.dtype), index


# Twin wrappers by design (STYLE.md §2, one function per primitive); the work is in _sort.
@onnx_op("Sort")
def convert_sort(ctx: ConvertContext, node: Node) -> list[str]:
    """Sort(x) [axis] -> ONNX TopK (k = axis length, ascending) values."""
    return [_sort(ctx, node, node.arguments[0])[0]]


@onnx_op("ArgSort")
def convert_arg_sort(ctx: ConvertContext, node: Node) -> list[str]:
    """ArgSort(x) [axis] -> ONNX TopK (k = axis length, ascending) indices, Cast to uint32."""
    return [ctx.cast(_sort(ctx, node, node.arguments[0])[1], ctx.out_info(node).dtype)]


# A sorted axis is a valid partition around every kth, and ONNX has no cheaper partial order
# of the whole axis: Partition is a full sort (kth may even be dynamic).
@onnx_op("Partition")
def convert_partition(ctx: ConvertContext, node: Node) -> list[str]:
    """Partition(x) [kth, axis] -> ONNX TopK (full ascending sort, valid for any kth) values."""
    return [_sort(ctx, node, node.arguments[1])[0]]


@onnx_op("ArgPartition")
def convert_arg_partition(ctx: ConvertContext, node: Node) -> list[str]:
    """ArgPartition(x) [kth, axis] -> ONNX TopK (full ascending sort) indices, Cast to uint32."""
    return [ctx.cast(_sort(ctx, node, node.arguments[1])[1], ctx.out_info(node).dtype)]


# -- Softmax, LogSumExp, SearchSorted ----------------------------------------------------------


@onnx_op("Softmax")
def convert_softmax(ctx: ConvertContext, node: Node) -> list[str]:
    """Softmax(x) [precise] -> ONNX Softmax over the last axis (in float32 when precise and half)."""
    dtype = ctx.in_info(node, 0).dtype
    compute = "float32" if node.arguments and node.arguments[0] and dtype in HALF_DTYPES else dtype
    x = _to(ctx, ctx.input(node, 0), dtype, compute)
    return [_to(ctx, ctx.make("Softmax", [x], axis=-1), compute, dtype)]


def _log_sum_exp(ctx: ConvertContext, node: Node, axes_input: bool) -> list[str]:
    info = ctx.in_info(node, 0)
    axes = [_axis(node, -1, info.rank)]
    # Half inputs: MLX accumulates in float32.
    compute = "float32" if info.dtype in HALF_DTYPES else info.dtype
    x = _to(ctx, ctx.input(node, 0), info.dtype, compute)
    top = _reduce_op(ctx, "ReduceMax", x, axes, axes_input)
    # Shift by the row max for stability, but by 0 where it is infinite: inf - inf would give
    # NaN where MLX gives inf (a +inf row) or -inf (an all -inf row).
    zero = ctx.const(np.array(0, numpy_dtype(compute)))
    shift = ctx.make("Where", [ctx.make("IsInf", [top]), zero, top])
    total = _reduce_op(ctx, "ReduceSum", ctx.make("Exp", [ctx.make("Sub", [x, shift])]), axes, axes_input)
    out = ctx.make("Add", [ctx.make("Log", [total]), shift])
    return [_to(ctx, out, compute, info.dtype)]


@onnx_op("LogSumExp")
def convert_log_sum_exp(ctx: ConvertContext, node: Node) -> list[str]:
    """LogSumExp(x) -> ONNX ReduceMax, IsInf/Where, Sub, Exp, ReduceSum, Log, Add on the last axis (keepdims)."""
    return _log_sum_exp(ctx, node, axes_input=False)


@onnx_op("LogSumExp", since=18)
def convert_log_sum_exp_18(ctx: ConvertContext, node: Node) -> list[str]:
    """LogSumExp(x) -> the same, ReduceMax taking axes as an input."""
    return _log_sum_exp(ctx, node, axes_input=True)


@onnx_op("SearchSorted")
def convert_search_sorted(ctx: ConvertContext, node: Node) -> list[str]:
    """SearchSorted(sorted, values) [right] -> ONNX Less/LessOrEqual on every pair, ReduceSum, Cast to uint32."""
    right = bool(node.arguments[0])
    info = ctx.in_info(node, 0)
    check_sorted_sequence(node, info)
    compute = "uint8" if info.dtype == "bool" else info.dtype  # ORT's Less takes no bool
    seq = _to(ctx, ctx.input(node, 0), info.dtype, compute)
    values = _to(ctx, ctx.input(node, 1), ctx.in_info(node, 1).dtype, compute)
    values = ctx.make("Unsqueeze", [values, ctx.const([-1], np.int64)])  # [..., 1] against [n]
    # left counts seq < value, right counts seq <= value.
    hits = ctx.make("LessOrEqual" if right else "Less", [seq, values])
    if compute in FLOAT_DTYPES:
        # MLX orders NaN after every number and equal to itself (as its sort places it).
        value_nan = ctx.make("IsNaN", [values])
        if not right:
            value_nan = ctx.make("And", [value_nan, ctx.make("Not", [ctx.make("IsNaN", [seq])])])
        hits = ctx.make("Or", [hits, value_nan])
    count = ctx.make("ReduceSum", [ctx.cast(hits, "int64"), ctx.const([-1], np.int64)], keepdims=0)
    return [ctx.cast(count, ctx.out_info(node).dtype)]
