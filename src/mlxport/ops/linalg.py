"""Matrix products: Matmul, AddMM (Gemm where it fits)."""

from __future__ import annotations

from ..graph import Node
from .registry import ConvertContext, onnx_op


def _untransposed(ctx: ConvertContext, name: str) -> str | None:
    """The input of a 2-D Transpose that produced ``name`` (to use Gemm's transB instead)."""
    prod = ctx.producer(name)
    if prod is not None and prod.op_type == "Transpose":
        perm = [a for a in prod.attribute if a.name == "perm"]
        if perm and list(perm[0].ints) == [1, 0]:
            return prod.input[0]
    return None


@onnx_op("Matmul")
def convert_matmul(ctx: ConvertContext, node: Node) -> list[str]:
    """Matmul(a, b) -> ONNX MatMul (Gemm with transB for a 2-D weight transpose)."""
    a, b = ctx.input(node, 0), ctx.input(node, 1)
    if ctx.in_info(node, 0).rank == 2 and ctx.in_info(node, 1).rank == 2:
        src = _untransposed(ctx, b)
        if src is not None and ctx.is_const(src):
            return [ctx.make("Gemm", [a, src], transB=1)]
    return [ctx.make("MatMul", [a, b])]


@onnx_op("AddMM")
def convert_addmm(ctx: ConvertContext, node: Node) -> list[str]:
    """AddMM(a, b, c) [alpha, beta] -> ONNX Gemm (2-D) or MatMul + Add."""
    alpha, beta = (float(v) for v in node.arguments[:2])
    a, b, c = (ctx.input(node, i) for i in range(3))
    if ctx.in_info(node, 0).rank == 2 and ctx.in_info(node, 1).rank == 2 and ctx.in_info(node, 2).rank <= 2:
        src = _untransposed(ctx, b)
        if src is not None:
            return [ctx.make("Gemm", [a, src, c], alpha=alpha, beta=beta, transB=1)]
        return [ctx.make("Gemm", [a, b, c], alpha=alpha, beta=beta)]
    dtype = ctx.out_info(node).dtype
    prod = ctx.make("MatMul", [a, b])
    if alpha != 1.0:
        prod = ctx.make("Mul", [prod, ctx.const(alpha, dtype)])
    if beta != 1.0:
        c = ctx.make("Mul", [c, ctx.const(beta, dtype)])
    return [ctx.make("Add", [prod, c])]
