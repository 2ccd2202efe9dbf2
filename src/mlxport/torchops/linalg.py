"""Matrix products as torch calls."""

from __future__ import annotations

import torch

from ..graph import Node
from .registry import TorchContext, torch_op


@torch_op("Matmul")
def convert_matmul(ctx: TorchContext, node: Node) -> list:
    """Matmul(a, b) -> torch.matmul."""
    return [ctx.call(torch.matmul, ctx.input(node, 0), ctx.input(node, 1))]


@torch_op("AddMM")
def convert_addmm(ctx: TorchContext, node: Node) -> list:
    """AddMM(a, b, c) [alpha, beta] -> torch.addmm (2-D) or beta*c + alpha*(a @ b)."""
    alpha, beta = (float(v) for v in node.arguments[:2])
    a, b, c = (ctx.input(node, i) for i in range(3))
    if ctx.in_info(node, 0).rank == 2 and ctx.in_info(node, 1).rank == 2:
        return [ctx.call(torch.addmm, c, a, b, beta=beta, alpha=alpha)]
    prod = ctx.call(torch.matmul, a, b)
    if alpha != 1.0:
        prod = ctx.call(torch.mul, prod, alpha)
    if beta != 1.0:
        c = ctx.call(torch.mul, c, beta)
    return [ctx.call(torch.add, prod, c)]
