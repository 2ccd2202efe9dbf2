"""Target-neutral helpers that translations of every target use.

Dimension arithmetic on the IR's ``Dim`` (an int or a SymExpr), IR patterns a
translation looks through (who produces a tensor, an index that is an iota) and
MLX's numeric tables (float4/float8 code values, its Arange kernel). None of
them builds a node of any target.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np

from ..dtypes import numpy_dtype
from ..graph import Dim, Graph, Node, SymExpr

# Primitives that only relabel the axes of a row-major array (order of elements kept).
PURE_RESHAPES = frozenset({"Reshape", "ExpandDims", "Squeeze", "Flatten", "Unflatten"})

# The 16 values of an fp4 e2m1 code (mxfp4, nvfp4), by code.
FP4_E2M1 = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6], np.float32)


def dim_add(a: Dim, b: Dim) -> Dim:
    """a + b for dims that may be SymExprs."""
    if not isinstance(a, SymExpr) and not isinstance(b, SymExpr):
        return int(a) + int(b)
    terms: dict[tuple[str, ...], Fraction] = {}
    for d in (a, b):
        items = d.as_dict() if isinstance(d, SymExpr) else {(): Fraction(int(d))}
        for mono, coef in items.items():
            terms[mono] = terms.get(mono, Fraction(0)) + coef
    return SymExpr.make(terms)


def dim_scale(a: Dim, k: int) -> Dim:
    """k * a for a dim that may be a SymExpr."""
    if not isinstance(a, SymExpr):
        return int(a) * k
    return SymExpr.make({mono: coef * k for mono, coef in a.as_dict().items()})


def ir_producer(graph: Graph, name: str) -> Node | None:
    """The IR node whose output is ``name`` (None for inputs and constants)."""
    for node in graph.nodes:
        if name in node.outputs:
            return node
    return None


def is_batch_iota(graph: Graph, name: str, batch: Sequence[Dim]) -> bool:
    """True when index tensor ``name`` is arange(prod(batch)) laid out as ``batch``.

    MLX fills a missing lhs/rhs index with such an iota; then operand[index]
    is the operand itself and the Gather can go.
    """
    if tuple(graph.tensors[name].shape) != tuple(batch):
        return False
    value = graph.constants.get(name)
    if value is not None:
        return bool(np.array_equal(value.reshape(-1), np.arange(value.size)))
    node = ir_producer(graph, name)
    while node is not None and node.primitive in PURE_RESHAPES:
        node = ir_producer(graph, node.inputs[0])
    if node is None or node.primitive != "Arange" or len(node.arguments) < 3:
        return False
    start, _, step = node.arguments[:3]
    return not isinstance(start, SymExpr) and not isinstance(step, SymExpr) and float(start) == 0 and float(step) == 1


def batch_operand(ctx: Any, node: Node, operand: int, index: int, take: Callable[..., Any]) -> Any:
    """operand[index] for a gathered product: the operand itself when the index is an iota.

    ``take(ctx, x, shape, index_name)`` is the target's gather of matrices from the flattened batch.
    """
    info = ctx.in_info(node, operand)
    if is_batch_iota(ctx.graph, node.inputs[index], info.shape[:-2]):
        return ctx.input(node, operand)
    return take(ctx, ctx.input(node, operand), info.shape, node.inputs[index])


def fp8_e4m3_table() -> np.ndarray:
    """The float32 value of each fp8 e4m3fn code (mxfp8 values, nvfp4 scales)."""
    import ml_dtypes

    return np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float32)


def e8m0_table() -> np.ndarray:
    """The float32 value of each e8m0 scale code (mxfp4, mxfp8)."""
    # MLX reads scale code s as the bfloat16 with bits s << 7 (2^(s-127)); s == 0 as bits 0x40.
    bits = np.arange(256, dtype=np.uint32) << 7
    bits[0] = 0x40
    return (bits << 16).view(np.float32)


def arange_static(start: float, step: float, n: int, dtype: str) -> np.ndarray:
    """MLX's Arange computed in numpy, bit for bit."""
    # MLX's CPU kernel: step' = T(start + step) - T(start), then adds step' n times in T.
    t = numpy_dtype(dtype)
    first = np.array(start).astype(t)
    delta = np.array(start + step).astype(t) - first
    if np.issubdtype(t, np.integer):
        return (first + delta * np.arange(n, dtype=t)).astype(t)
    seq = np.full(n, delta, dtype=t)
    if n:
        seq[0] = first
    return np.add.accumulate(seq, dtype=t)
