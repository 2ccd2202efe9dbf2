"""Strided views read as windows of a row-major input: slices for AsStrided, native pooling for a reduced window.

MLX's pooling layers trace to a strided view ``[N, oH, oW, kH, kW, C]`` of the padded
input (AsStrided, or Reshape + Transpose when windows do not overlap) that one Reduce
collapses. torch's ``as_strided`` computes that view directly, but other consumers of the
lowering cannot: coremltools has no ``as_strided`` and Core ML no tensor above rank 5. So a
view is described as the flat input seen as a row-major array whose axes each carry one or
more output axes (:func:`window_plan`), lowered as slices (:func:`strided_windows`), and a
max/sum/min over the window axes becomes ``max_poolNd``/``avg_poolNd`` (:func:`pooled_reduce`).
"""

from __future__ import annotations

import itertools
import math
import operator
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from ...graph import Dim, Node, SymExpr
from .context import TorchContext

# A strided view is lowered as slices only when it takes at most this many (else torch.as_strided).
MAX_WINDOW_SLICES = 64


@dataclass(frozen=True)
class Radix:
    """One axis of the flat input read as a row-major array: size, stride, first index, output axes on it."""

    size: Dim
    stride: int
    start: int
    outs: tuple[tuple[int, int], ...]  # (output axis, step along this axis)


def element_count(shape: tuple | list) -> Dim | None:
    """The product of a shape with at most one dynamic dim (None with more)."""
    static = math.prod(int(d) for d in shape if not isinstance(d, SymExpr))
    dynamic = [d for d in shape if isinstance(d, SymExpr)]
    if not dynamic:
        return static
    if len(dynamic) > 1:
        return None
    return SymExpr.make({m: c * static for m, c in dynamic[0].terms})


def window_plan(length: Dim, shape: list, strides: list[int], offset: int) -> list[Radix] | None:
    """The plan of :func:`window_plans` needing the fewest slices; None if none, or over MAX_WINDOW_SLICES."""
    best: tuple[int, list[Radix]] | None = None
    for plan in window_plans(length, shape, strides, offset):
        if best is None or _slice_count(plan, shape) < best[0]:
            best = (_slice_count(plan, shape), plan)
    if best is None or best[0] > MAX_WINDOW_SLICES:
        return None
    return best[1]


def window_plans(length: Dim, shape: list, strides: list[int], offset: int) -> Iterator[list[Radix]]:
    """Ways to read the flat input (``length`` elements) as row-major axes that carry the output axes.

    A pooling view [N, oH, oW, kH, kW, C] with strides (HWC, s*WC, s*C, WC, C, 1) reads the
    padded [N, H, W, C] input: oH and kH both step along H, and no index on an axis carries into
    the next. Subsets of the output strides are tried as the axes' strides, finest first.
    Negative strides are not taken.
    """
    if any(not isinstance(n, SymExpr) and int(n) == 0 for n in shape) or any(s < 0 for s in strides):
        return
    live = [j for j, n in enumerate(shape) if strides[j] != 0 and (isinstance(n, SymExpr) or int(n) != 1)]
    candidates = sorted({strides[j] for j in live} - {1}, reverse=True)
    if len(candidates) > 10:
        return
    for r in range(len(candidates) + 1):
        for chosen in itertools.combinations(candidates, r):
            plan = _try_radices(length, shape, strides, offset, live, [*chosen, 1])
            if plan is not None:
                yield plan


def _try_radices(length: Dim, shape: list, strides: list[int], offset: int, live: list[int],
                 radices: list[int]) -> list[Radix] | None:
    if any(a % b for a, b in zip(radices, radices[1:])):
        return None
    lead: Dim
    if isinstance(length, SymExpr):
        lead = SymExpr.make({m: c / radices[0] for m, c in length.terms})
        if isinstance(lead, SymExpr) and any(c.denominator != 1 for _, c in lead.terms):
            return None
    else:
        lead = int(length) // radices[0]  # a tail past the last whole row is never read (checked below)
    sizes: list[Dim] = [lead] + [a // b for a, b in zip(radices, radices[1:])]
    starts = [offset // radices[0]] + [(offset // c) % int(d) for c, d in zip(radices[1:], sizes[1:])]
    outs: list[list[tuple[int, int]]] = [[] for _ in radices]
    for j in live:
        if isinstance(shape[j], SymExpr):
            # A dynamic output axis must be a whole input axis, read in order.
            if strides[j] not in radices:
                return None
            outs[radices.index(strides[j])].append((j, 1))
            continue
        a = next(i for i, c in enumerate(radices) if strides[j] % c == 0)
        outs[a].append((j, strides[j] // radices[a]))
    for size, start, on in zip(sizes, starts, outs):
        dynamic = [j for j, _ in on if isinstance(shape[j], SymExpr)]
        if dynamic:
            if len(on) != 1 or start != 0 or size != shape[dynamic[0]]:
                return None
        elif isinstance(size, SymExpr):
            return None  # a fixed part of a dynamic axis: its bound cannot be checked
        elif start + sum(step * (int(shape[j]) - 1) for j, step in on) >= int(size):
            return None
    return [Radix(size, c, start, tuple(on)) for size, c, start, on in zip(sizes, radices, starts, outs)]


def _slice_count(plan: list[Radix], shape: list) -> int:
    total = 0
    for axis in plan:
        counts = sorted(_static(shape[j]) for j, _ in axis.outs)
        total += math.prod(counts[:-1]) if len(counts) > 1 else 0
    return total


def _static(dim: Dim) -> int:
    """A size for ordering: dynamic axes count as 1 (they are never sliced)."""
    return 1 if isinstance(dim, SymExpr) else int(dim)


def _as_rows(ctx: TorchContext, flat: Any, length: Dim, plan: list[Radix]) -> Any:
    """The flat input reshaped to the plan's axes (a tail that is not a whole leading row dropped)."""
    first = plan[0]
    if not isinstance(first.size, SymExpr) and int(first.size) * first.stride != length:
        flat = ctx.call(operator.getitem, flat, slice(0, int(first.size) * first.stride))
    return ctx.call(torch.reshape, flat, [-1 if isinstance(a.size, SymExpr) else int(a.size) for a in plan])


def _to_output_order(ctx: TorchContext, x: Any, labels: list[int], shape: list, strides: list[int]) -> Any:
    """Permute dims labelled by output axis into order, insert the missing (size 1) axes, expand broadcasts."""
    order = sorted(range(len(labels)), key=lambda i: labels[i])
    if order != list(range(len(labels))):
        x = ctx.call(torch.permute, x, order)
    for j in range(len(shape)):
        if j not in labels:
            x = ctx.call(torch.unsqueeze, x, j)
    if any(strides[j] == 0 and shape[j] != 1 for j in range(len(shape))):
        x = ctx.method("expand", x, [ctx.dim(d) if strides[j] == 0 else -1 for j, d in enumerate(shape)])
    return x


def strided_windows(ctx: TorchContext, flat: Any, length: Dim, plan: list[Radix], shape: list,
                    strides: list[int]) -> Any:
    """The view as slices of the input's rows, stacked where several output axes step along one input axis."""
    x = _as_rows(ctx, flat, length, plan)
    kept: list[int] = []  # output axis of each remaining input axis, in order
    tail: list[int] = []  # output axes stacked at the end, in order
    for axis in plan:
        pos = len(kept)
        if not axis.outs:
            x = ctx.call(torch.select, x, pos, axis.start)
            continue
        (main, step), *others = sorted(axis.outs, key=lambda o: -_static(shape[o[0]]))
        kept.append(main)
        if not others and step == 1 and axis.start == 0 and shape[main] == axis.size:
            continue
        n = _static(shape[main])
        lead = (slice(None),) * pos
        pieces = []
        for combo in itertools.product(*(range(int(shape[j])) for j, _ in others)):
            base = axis.start + sum(i * s for i, (_, s) in zip(combo, others))
            pieces.append(ctx.call(operator.getitem, x, lead + (slice(base, base + step * (n - 1) + 1, step),)))
        x = pieces[0]
        if others:
            x = ctx.call(torch.stack, pieces, -1)
            if len(others) > 1:
                x = ctx.call(torch.unflatten, x, -1, [int(shape[j]) for j, _ in others])
        tail += [j for j, _ in others]
    return _to_output_order(ctx, x, kept + tail, shape, strides)


# ----------------------------------------------------------------------------
# A Reduce over the window axes of a view: native pooling
# ----------------------------------------------------------------------------

_SUM, _MIN, _MAX = 2, 4, 5
_POOLS = {1: ("max_pool1d", "avg_pool1d"), 2: ("max_pool2d", "avg_pool2d"), 3: ("max_pool3d", "avg_pool3d")}
_FLOATS = ("float16", "bfloat16", "float32", "float64")


def strided_source(ctx: TorchContext, name: str) -> tuple[str, list, list[int], int] | None:
    """(input, shape, strides, offset) when ``name`` is a strided view of another tensor, else None.

    Views are AsStrided with static strides, and Reshape (optionally Transposed) of a tensor whose
    row-major strides are static.
    """
    node = ctx.producer(name)
    perm = None
    if node is not None and node.primitive == "Transpose":
        perm = [int(a) for a in node.arguments[0]]
        node = ctx.producer(node.inputs[0])
    if node is None:
        return None
    if node.primitive == "AsStrided" and perm is None:
        shape, strides, offset = list(node.arguments[0]), list(node.arguments[1]), node.arguments[2]
        if any(isinstance(v, SymExpr) for v in strides + [offset]):
            return None
        return node.inputs[0], shape, [int(s) for s in strides], int(offset)
    if node.primitive not in ("Reshape", "Flatten", "Unflatten"):
        return None
    shape = list(ctx.out_info(node).shape)
    if any(isinstance(d, SymExpr) for d in shape[1:]):
        return None
    strides = [math.prod(int(d) for d in shape[i + 1:]) for i in range(len(shape))]
    if perm is not None:
        shape, strides = [shape[a] for a in perm], [strides[a] for a in perm]
    return node.inputs[0], shape, strides, 0


@dataclass(frozen=True)
class _Window:
    """A pooled input axis: the output axis of its positions (None if one), the reduced axis, sizes, steps."""

    pos: int | None
    count: int
    step: int
    kernel: int
    dilation: int


def pooled_reduce(ctx: TorchContext, node: Node) -> Any | None:
    """A max/sum/min Reduce over the window axes of a strided view as torch max/avg pooling, else None.

    The result has the Reduce's keepdim shape (the window axes as size 1), computed from the
    view's input, so the view itself is never built.
    """
    kind, rank = int(node.arguments[0]), ctx.in_info(node, 0).rank
    dtype = ctx.out_info(node).dtype
    if kind not in (_SUM, _MIN, _MAX) or dtype not in _FLOATS or ctx.in_info(node, 0).dtype != dtype:
        return None
    view = strided_source(ctx, node.inputs[0])
    if view is None:
        return None
    source, shape, strides, offset = view
    reduced = {int(a) % rank for a in node.arguments[1]}
    if any(strides[j] == 0 and shape[j] != 1 for j in range(rank)) or any(isinstance(shape[j], SymExpr)
                                                                         for j in reduced):
        return None
    length = element_count(ctx.graph.tensors[source].shape)
    if length is None:
        return None
    # Several plans describe the same view; the natural one has undilated kernels and the fewest axes.
    best: tuple[tuple[int, int], list[Radix], dict[int, _Window], Any] | None = None
    for plan in window_plans(length, shape, strides, offset):
        windows = _pool_windows(plan, shape, reduced)
        pool = None if windows is None else _pool_op(kind, dtype, windows)
        if windows is not None and pool is not None:
            rank_key = (sum(w.dilation for w in windows.values()), len(plan))
            if best is None or rank_key < best[0]:
                best = (rank_key, plan, windows, pool)
    if best is None:
        return None
    _, plan, windows, pool = best
    x = _as_rows(ctx, ctx.method("reshape", ctx.values[source], [-1]), length, plan)
    # Each input axis: dropped (read at one index), sliced to what the output reads, or pooled.
    kept: list[tuple[int, int | None]] = []  # (plan axis, output axis) of the remaining dims
    for a, axis in enumerate(plan):
        pos = len(kept)
        if not axis.outs:
            x = ctx.call(torch.select, x, pos, axis.start)
            continue
        if a in windows:
            w = windows[a]
            end, step = axis.start + w.step * (w.count - 1) + w.dilation * (w.kernel - 1) + 1, 1
            kept.append((a, w.pos))
        else:
            ((j, step),) = axis.outs
            end = axis.start + step * (_static(shape[j]) - 1) + 1
            kept.append((a, j))
        # Dynamic axes are whole (window_plan); a static one is cut to what the output reads.
        if not isinstance(axis.size, SymExpr) and (axis.start != 0 or step != 1 or end != int(axis.size)):
            x = ctx.call(operator.getitem, x, (slice(None),) * pos + (slice(axis.start, end, step),))
    pooled_at = [i for i, (a, _) in enumerate(kept) if a in windows]
    others = [i for i in range(len(kept)) if i not in pooled_at]
    if others + pooled_at != list(range(len(kept))):
        x = ctx.call(torch.permute, x, others + pooled_at)
    # Pools take (N, C, *spatial): every other axis folds into C.
    x = ctx.call(torch.flatten, x, 0, len(others) - 1) if others else ctx.call(torch.unsqueeze, x, 0)
    x = pool(ctx, ctx.call(torch.unsqueeze, x, 0), [windows[kept[i][0]] for i in pooled_at])
    x = ctx.call(torch.squeeze, x, 0)
    if others:
        sizes = [plan[kept[i][0]].size for i in others]
        x = ctx.call(torch.unflatten, x, 0, [-1 if isinstance(s, SymExpr) else int(s) for s in sizes])
    else:
        x = ctx.call(torch.squeeze, x, 0)
    labels = [kept[i][1] for i in others + pooled_at]
    # A window with one position leaves a size-1 axis with no output axis of its own.
    for i in reversed(range(len(labels))):
        if labels[i] is None:
            x = ctx.call(torch.squeeze, x, i)
            del labels[i]
    return _to_output_order(ctx, x, [j for j in labels if j is not None], shape, [1] * len(shape))


def _pool_windows(plan: list[Radix], shape: list, reduced: set[int]) -> dict[int, _Window] | None:
    """The window of each plan axis that a reduced output axis steps along, if the Reduce is a pooling."""
    windows: dict[int, _Window] = {}
    planned = {j for axis in plan for j, _ in axis.outs}
    if not reduced <= planned | {j for j in reduced if shape[j] == 1}:
        return None
    for a, axis in enumerate(plan):
        kernel = [(j, s) for j, s in axis.outs if j in reduced]
        kept = [(j, s) for j, s in axis.outs if j not in reduced]
        if not kernel:
            if len(kept) > 1:
                return None  # overlapping kept axes: not a pooling
            continue
        if len(kernel) != 1 or len(kept) > 1 or isinstance(axis.size, SymExpr):
            return None
        ((k, dilation),) = kernel
        if kept:
            ((j, step),) = kept
            windows[a] = _Window(j, int(shape[j]), step, int(shape[k]), dilation)
        else:
            windows[a] = _Window(None, 1, 1, int(shape[k]), dilation)
    return windows if 1 <= len(windows) <= 3 else None


def _pool_op(kind: int, dtype: str, windows: dict[int, _Window]) -> Any | None:
    """A function (ctx, x, windows) -> pooled x, or None when torch's pools cannot compute this Reduce."""
    d = len(windows)
    max_name, avg_name = _POOLS[d]
    if kind in (_MAX, _MIN):
        def pool(ctx: TorchContext, x: Any, ws: list[_Window]) -> Any:
            fn = getattr(torch.nn.functional, max_name)
            sign = ctx.call(torch.neg, x) if kind == _MIN else x
            y = ctx.call(fn, sign, [w.kernel for w in ws], [w.step for w in ws], 0, [w.dilation for w in ws])
            return ctx.call(torch.neg, y) if kind == _MIN else y
        return pool
    if any(w.dilation != 1 for w in windows.values()):
        return None  # avg_pool has no dilation

    def pool_sum(ctx: TorchContext, x: Any, ws: list[_Window]) -> Any:
        fn = getattr(torch.nn.functional, avg_name)
        # The mean of the window times its size; half types pool in float32, as MLX's sum accumulates.
        wide = ctx.method("to", x, torch.float32) if dtype in ("float16", "bfloat16") else x
        y = ctx.call(fn, wide, [w.kernel for w in ws], [w.step for w in ws])
        y = ctx.call(torch.mul, y, float(math.prod(w.kernel for w in ws)))
        return ctx.method("to", y, getattr(torch, dtype)) if wide is not x else y
    return pool_sum
