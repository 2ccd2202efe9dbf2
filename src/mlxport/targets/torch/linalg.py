"""Matrix products as torch calls: Matmul, AddMM, GatherMM, BlockMaskedMM."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ...dtypes import torch_dtype
from ...graph import Dim, Node
from ..args import args_error, block_masked_inputs
from ..common import batch_operand
from .context import TorchContext, torch_op


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


def take_batch(ctx: TorchContext, x: Any, shape: Sequence[Dim], index: str) -> Any:
    """Matrices of ``x`` ([..., r, c]) picked from its flattened batch -> index.shape + [r, c]."""
    rows, cols = ctx.shape(shape[-2:])
    flat = ctx.call(torch.reshape, x, [-1, rows, cols])
    idx = ctx.method("to", ctx.call(torch.reshape, ctx.values[index], [-1]), torch.int64)
    picked = ctx.call(torch.index_select, flat, 0, idx)
    return ctx.call(torch.reshape, picked, ctx.shape(ctx.graph.tensors[index].shape) + [rows, cols])


@torch_op("GatherMM")
def convert_gather_mm(ctx: TorchContext, node: Node) -> list:
    """GatherMM(a, b, lhs_indices, rhs_indices) [left_sorted, right_sorted] -> torch.index_select + torch.matmul."""
    # Sorting only tells MLX's kernels the indices are grouped; the result is the same.
    return [ctx.call(torch.matmul, batch_operand(ctx, node, 0, 2, take_batch), batch_operand(ctx, node, 1, 3, take_batch))]


def _block_mask(ctx: TorchContext, node: Node, x: Any, mask: int, rows: int, cols: int) -> Any:
    """Apply a block mask ([..., ceil(rows/bs), ceil(cols/bs)]) to x ([..., rows, cols])."""
    bs = int(node.arguments[0])
    m = ctx.input(node, mask)
    rank = ctx.in_info(node, mask).rank
    m = ctx.call(torch.index_select, m, rank - 2, ctx.buffer(np.arange(rows, dtype=np.int64) // bs, hint="rows"))
    m = ctx.call(torch.index_select, m, rank - 1, ctx.buffer(np.arange(cols, dtype=np.int64) // bs, hint="cols"))
    if ctx.in_info(node, mask).dtype == "bool":
        # MLX skips masked blocks, so a NaN there must not leak through a multiply.
        return ctx.method("masked_fill", x, ctx.call(torch.logical_not, m), 0.0)
    return ctx.call(torch.mul, x, ctx.method("to", m, torch_dtype(ctx.out_info(node).dtype)))


@torch_op("BlockMaskedMM")
def convert_block_masked_mm(ctx: TorchContext, node: Node) -> list:
    """BlockMaskedMM(a, b[, mask_out][, mask_lhs, mask_rhs]) [block_size] -> torch.index_select + masked_fill/mul + matmul."""
    count = block_masked_inputs(node)
    dims = [*ctx.in_info(node, 0).shape[-2:], ctx.in_info(node, 1).shape[-1]]
    if not all(isinstance(d, int) for d in dims):
        raise args_error(node, f"the matrix dims of a and b must be static; got {dims}")
    m, k, n = (int(d) for d in dims)
    a, b = ctx.input(node, 0), ctx.input(node, 1)
    if count in (4, 5):
        a = _block_mask(ctx, node, a, count - 2, m, k)
        b = _block_mask(ctx, node, b, count - 1, k, n)
    out = ctx.call(torch.matmul, a, b)
    if count in (3, 5):
        out = _block_mask(ctx, node, out, 2, m, n)
    return [out]
