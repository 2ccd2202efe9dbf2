"""Matrix products: Matmul, AddMM (Gemm where it fits), GatherMM, BlockMaskedMM."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ...graph import Dim, Node, SymExpr, TensorInfo
from ..args import block_masked_inputs, static_ints, static_last_axis
from ..common import batch_operand, ir_producer
from .context import ConvertContext, onnx_op

def _untransposed(ctx: ConvertContext, name: str) -> str | None:
    """The input of a 2-D Transpose that produced ``name`` (to use Gemm's transB instead)."""
    prod = ctx.producer(name)
    if prod is not None and prod.op_type == "Transpose":
        perm = [a for a in prod.attribute if a.name == "perm"]
        if perm and list(perm[0].ints) == [1, 0]:
            return prod.input[0]
    return None


def _shared_weight_transpose(ctx: ConvertContext, node: Node) -> str | None:
    """The constant W when input 1 is W.T and W has other users (a tied embedding)."""
    prod = ir_producer(ctx.graph, node.inputs[1])
    if prod is None or prod.primitive != "Transpose" or list(prod.arguments[0]) != [1, 0]:
        return None
    src = prod.inputs[0]
    if src not in ctx.graph.constants or sum(n.inputs.count(src) for n in ctx.graph.nodes) < 2:
        return None
    return ctx.values[src]


def _static_kn(a: TensorInfo, b: TensorInfo) -> bool:
    return a.rank > 2 and b.rank == 2 and not isinstance(a.shape[-1], SymExpr) and not isinstance(b.shape[-1], SymExpr)


def _gemm_batched(ctx: ConvertContext, a: str, rank: int, k: int, w: str, n: int, c: str | None = None,
                  **attrs: float) -> str:
    """[..., K] x W[N, K]^T via Reshape to 2-D, Gemm(transB) and Reshape back."""
    flat = ctx.make("Reshape", [a, ctx.const(np.array([-1, k], np.int64))])
    out = ctx.make("Gemm", [flat, w] + ([c] if c is not None else []), transB=1, **attrs)
    lead = ctx.make("Shape", [a], start=0, end=rank - 1)
    return ctx.make("Reshape", [out, ctx.make("Concat", [lead, ctx.const(np.array([n], np.int64))], axis=0)])


@onnx_op("Matmul")
def convert_matmul(ctx: ConvertContext, node: Node) -> list[str]:
    """Matmul(a, b) -> ONNX MatMul (Gemm with transB for a 2-D transposed operand)."""
    a, b = ctx.input(node, 0), ctx.input(node, 1)
    a_info, b_info = ctx.in_info(node, 0), ctx.in_info(node, 1)
    if a_info.rank == 2 and b_info.rank == 2:
        src = _untransposed(ctx, b)
        if src is not None:
            return [ctx.make("Gemm", [a, src], transB=1)]
    shared = _shared_weight_transpose(ctx, node) if _static_kn(a_info, b_info) else None
    if shared is not None:
        # Folding W.T would store the tied weight twice; Gemm reads it transposed in place.
        return [_gemm_batched(ctx, a, a_info.rank, int(a_info.shape[-1]), shared, int(b_info.shape[-1]))]
    return [ctx.make("MatMul", [a, b])]


@onnx_op("AddMM")
def convert_addmm(ctx: ConvertContext, node: Node) -> list[str]:
    """AddMM(a, b, c) [alpha, beta] -> ONNX Gemm (2-D, or [..., K] reshaped) or MatMul + Mul + Add."""
    alpha, beta = (float(v) for v in node.arguments[:2])
    a, b, c = (ctx.input(node, i) for i in range(3))
    a_info, b_info, c_rank = ctx.in_info(node, 0), ctx.in_info(node, 1), ctx.in_info(node, 2).rank
    if a_info.rank == 2 and b_info.rank == 2 and c_rank <= 2:
        src = _untransposed(ctx, b)
        if src is not None:
            return [ctx.make("Gemm", [a, src, c], alpha=alpha, beta=beta, transB=1)]
        return [ctx.make("Gemm", [a, b, c], alpha=alpha, beta=beta)]
    shared = _shared_weight_transpose(ctx, node) if _static_kn(a_info, b_info) and c_rank <= 1 else None
    if shared is not None:
        return [_gemm_batched(ctx, a, a_info.rank, int(a_info.shape[-1]), shared, int(b_info.shape[-1]), c,
                              alpha=alpha, beta=beta)]
    dtype = ctx.out_info(node).dtype
    prod = ctx.make("MatMul", [a, b])
    if alpha != 1.0:
        prod = ctx.make("Mul", [prod, ctx.const(alpha, dtype)])
    if beta != 1.0:
        c = ctx.make("Mul", [c, ctx.const(beta, dtype)])
    return [ctx.make("Add", [prod, c])]


# ----------------------------------------------------------------------------
# Gathered products (mixture of experts)
# ----------------------------------------------------------------------------


def take_batch(ctx: ConvertContext, x: str, shape: Sequence[Dim], index: str) -> str:
    """Matrices of ``x`` ([..., r, c]) picked from its flattened batch -> index.shape + [r, c]."""
    flat = ctx.make("Reshape", [x, ctx.shape_tensor([-1, *shape[-2:]])])
    return ctx.make("Gather", [flat, ctx.cast(ctx.values[index], "int64")], axis=0)


@onnx_op("GatherMM")
def convert_gather_mm(ctx: ConvertContext, node: Node) -> list[str]:
    """GatherMM(a, b, lhs_indices, rhs_indices) [left_sorted, right_sorted] -> ONNX Gather + MatMul."""
    # Sorting only tells MLX's kernels the indices are grouped; the result is the same.
    a = batch_operand(ctx, node, 0, 2, take_batch)
    b = batch_operand(ctx, node, 1, 3, take_batch)
    return [ctx.make("MatMul", [a, b])]


def _block_mask(ctx: ConvertContext, node: Node, x: str, mask: int, rows: int, cols: int) -> str:
    """Apply a block mask ([..., ceil(rows/bs), ceil(cols/bs)]) to x ([..., rows, cols])."""
    bs = int(node.arguments[0])
    m = ctx.input(node, mask)
    m = ctx.make("Gather", [m, ctx.const(np.arange(rows, dtype=np.int64) // bs)], axis=-2)
    m = ctx.make("Gather", [m, ctx.const(np.arange(cols, dtype=np.int64) // bs)], axis=-1)
    dtype = ctx.out_info(node).dtype
    if ctx.in_info(node, mask).dtype == "bool":
        # MLX skips masked blocks, so a NaN there must not leak through a multiply.
        return ctx.make("Where", [m, x, ctx.const(0, dtype)])
    if ctx.in_info(node, mask).dtype != dtype:
        m = ctx.cast(m, dtype)
    return ctx.make("Mul", [x, m])


@onnx_op("BlockMaskedMM")
def convert_block_masked_mm(ctx: ConvertContext, node: Node) -> list[str]:
    """BlockMaskedMM(a, b[, mask_out][, mask_lhs, mask_rhs]) [block_size] -> ONNX Gather + Where/Mul + MatMul."""
    count = block_masked_inputs(node)
    m, k = static_ints(node, ctx.in_info(node, 0).shape[-2:], "the matrix dims of a")
    n = static_ints(node, ctx.in_info(node, 1).shape[-1:], "the matrix dims of b")[0]
    a, b = ctx.input(node, 0), ctx.input(node, 1)
    if count in (4, 5):
        a = _block_mask(ctx, node, a, count - 2, m, k)
        b = _block_mask(ctx, node, b, count - 1, k, n)
    out = ctx.make("MatMul", [a, b])
    if count in (3, 5):
        out = _block_mask(ctx, node, out, 2, m, n)
    return [out]


@onnx_op("Hadamard")
def convert_hadamard(ctx: ConvertContext, node: Node) -> list[str]:
    """Hadamard(x) [scale] -> ONNX MatMul with MLX's own (scaled) Hadamard matrix, in float32."""
    import mlx.core as mx

    info = ctx.in_info(node, 0)
    n = static_last_axis(node, info)
    scale = float(node.arguments[0])
    # MLX's transform is linear: its rows for the identity are its matrix (2^k and the
    # 12/20/28 * 2^k sizes alike), so the ONNX graph multiplies by exactly that.
    matrix = np.array(mx.hadamard_transform(mx.eye(n, dtype=mx.float32), scale=scale))
    x = ctx.input(node, 0)
    wide = info.dtype != "float32"
    if wide:
        x = ctx.cast(x, "float32")
    out = ctx.make("MatMul", [x, ctx.const(matrix, np.float32, hint="hadamard")])
    return [ctx.cast(out, info.dtype) if wide else out]
