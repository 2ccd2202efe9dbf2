"""Quantized primitives as torch calls: QuantizedMatmul, GatherQMM, Quantize (packed weights stay packed).

The uint32 words, scales and biases stay module buffers as MLX stores them and
are dequantized at run time (the layout and modes are described in
targets/onnx/quant.py). torch's uint32 has almost no kernels (no shifts or masks), so
the words are widened to int64 for the unpacking.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ...dtypes import torch_dtype
from ...graph import Node
from ..args import quant_args, quantize_args
from ..common import FP4_E2M1, batch_operand, e8m0_table, fp8_e4m3_table, is_batch_iota
from .context import TorchContext, torch_op
from .linalg import take_batch

_WORD = 0xFFFFFFFF


_quant_args = quant_args


def _unpack(ctx: TorchContext, words: Any, bits: int) -> Any:
    """uint32 words [..., W] -> int64 codes [..., W*32/bits] (MLX's LSB-first bit stream)."""
    wide = ctx.method("to", words, torch.int64)
    mask = (1 << bits) - 1
    if 32 % bits == 0:
        shifts = ctx.buffer(np.arange(0, 32, bits, dtype=np.int64), hint="shifts")
        codes = ctx.call(torch.bitwise_right_shift, ctx.call(torch.unsqueeze, wide, -1), shifts)
        return ctx.call(torch.flatten, ctx.call(torch.bitwise_and, codes, mask), -2)
    # `bits` words hold 32 codes; code j starts at bit s of word lo and may run into word lo + 1,
    # so read it from the 64-bit window word[lo] | word[hi] << 32 (hi = lo when it does not straddle).
    pos = bits * np.arange(32)
    lo, s = pos // 32, pos % 32
    hi = np.where(s + bits > 32, lo + 1, lo)
    chunks = ctx.call(torch.unflatten, wide, -1, [-1, bits])
    low = ctx.call(torch.index_select, chunks, -1, ctx.buffer(lo.astype(np.int64), hint="lo"))
    high = ctx.call(torch.index_select, chunks, -1, ctx.buffer(hi.astype(np.int64), hint="hi"))
    window = ctx.call(torch.bitwise_or, low, ctx.call(torch.bitwise_left_shift, high, 32))
    codes = ctx.call(torch.bitwise_right_shift, window, ctx.buffer(s.astype(np.int64), hint="s"))
    return ctx.call(torch.flatten, ctx.call(torch.bitwise_and, codes, mask), -2)


def _dequantize(ctx: TorchContext, parts: Sequence[Any], group: int, bits: int, mode: str, dtype: str) -> Any:
    """Float [..., K] weights from uint32 words [..., W], scales and (affine) biases, computed in float32."""
    codes = _unpack(ctx, parts[0], bits)
    if mode == "affine":
        values = ctx.method("to", codes, torch.float32)
        scale = ctx.method("to", parts[1], torch.float32)
    else:
        lut = FP4_E2M1 if bits == 4 else fp8_e4m3_table()
        values = ctx.call(torch.take, ctx.buffer(lut, hint="lut"), codes)
        table = fp8_e4m3_table() if group == 16 else e8m0_table()
        scale = ctx.call(torch.take, ctx.buffer(table, hint="scale_lut"), ctx.method("to", parts[1], torch.int64))
    grouped = ctx.call(torch.unflatten, values, -1, [-1, group])
    grouped = ctx.call(torch.mul, grouped, ctx.call(torch.unsqueeze, scale, -1))
    if len(parts) > 2:
        bias = ctx.method("to", parts[2], torch.float32)
        grouped = ctx.call(torch.add, grouped, ctx.call(torch.unsqueeze, bias, -1))
    return ctx.method("to", ctx.call(torch.flatten, grouped, -2), torch_dtype(dtype))


def _product(ctx: TorchContext, x: Any, w: Any, transpose: bool) -> Any:
    return ctx.call(torch.matmul, x, ctx.call(torch.transpose, w, -1, -2) if transpose else w)


@torch_op("QuantizedMatmul")
def convert_quantized_matmul(ctx: TorchContext, node: Node) -> list:
    """QuantizedMatmul(x, w, scales[, biases]) [group_size, bits, mode, transpose] -> int64 shifts/masks + torch.matmul."""
    group, bits, mode = _quant_args(node)
    parts = [ctx.input(node, i) for i in range(1, 4 if mode == "affine" else 3)]
    w = _dequantize(ctx, parts, group, bits, mode, ctx.out_info(node).dtype)
    return [_product(ctx, ctx.input(node, 0), w, bool(node.arguments[3]))]


@torch_op("GatherQMM")
def convert_gather_qmm(ctx: TorchContext, node: Node) -> list:
    """GatherQMM(x, w, scales[, biases], lhs, rhs) [group_size, bits, mode, transpose, sorted x2] -> index_select + shifts + matmul."""
    group, bits, mode = _quant_args(node)
    lhs, rhs = len(node.inputs) - 2, len(node.inputs) - 1
    x = batch_operand(ctx, node, 0, lhs, take_batch)
    inputs = range(1, 4 if mode == "affine" else 3)
    parts = [ctx.input(node, i) for i in inputs]
    # Only the experts picked are unpacked: the selection works on the packed words.
    if not is_batch_iota(ctx.graph, node.inputs[rhs], ctx.in_info(node, 1).shape[:-2]):
        parts = [take_batch(ctx, p, ctx.in_info(node, i).shape, node.inputs[rhs]) for p, i in zip(parts, inputs)]
    w = _dequantize(ctx, parts, group, bits, mode, ctx.out_info(node).dtype)
    return [_product(ctx, x, w, bool(node.arguments[3]))]


def _pack(ctx: TorchContext, codes: Any, bits: int) -> Any:
    """int64 codes [..., K] -> uint32 words [..., K*bits/32] (the inverse of _unpack)."""
    # 32 codes fill `bits` words; word w takes the bits of code j that fall in it (shift left or right).
    pos = bits * np.arange(32)
    start = 32 * np.arange(bits)[:, None]
    overlaps = (pos[None, :] < start + 32) & (pos[None, :] + bits > start)
    left = np.where(overlaps, np.clip(pos[None, :] - start, 0, 31), 0).astype(np.int64)
    right = np.where(overlaps, np.clip(start - pos[None, :], 0, 63), 63).astype(np.int64)
    chunks = ctx.call(torch.unsqueeze, ctx.call(torch.unflatten, codes, -1, [-1, 32]), -2)
    parts = ctx.call(torch.bitwise_left_shift, chunks, ctx.buffer(left, hint="left"))
    parts = ctx.call(torch.bitwise_right_shift, parts, ctx.buffer(right, hint="right"))
    words = ctx.call(torch.sum, ctx.call(torch.bitwise_and, parts, _WORD), -1)
    return ctx.method("to", ctx.call(torch.flatten, words, -2), torch.uint32)


def _quantize(ctx: TorchContext, node: Node, group: int, bits: int) -> list:
    """Affine quantization of x [..., K] at run time, as MLX's CPU kernel computes it (float32)."""
    x = ctx.call(torch.unflatten, ctx.method("to", ctx.input(node, 0), torch.float32), -1, [-1, group])
    w_max = ctx.call(torch.amax, x, -1, keepdim=True)
    w_min = ctx.call(torch.amin, x, -1, keepdim=True)
    n_bins = float((1 << bits) - 1)
    mask = ctx.call(torch.gt, ctx.call(torch.abs, w_min), ctx.call(torch.abs, w_max))
    scale = ctx.call(torch.clamp, ctx.call(torch.div, ctx.call(torch.sub, w_max, w_min), n_bins), min=1e-7)
    scale = ctx.call(torch.where, mask, scale, ctx.call(torch.neg, scale))
    edge = ctx.call(torch.where, mask, w_min, w_max)
    q0 = ctx.call(torch.round, ctx.call(torch.div, edge, scale))
    q0_zero = ctx.call(torch.eq, q0, 0.0)
    scale = ctx.call(torch.where, q0_zero, scale, ctx.call(torch.div, edge, q0))
    bias = ctx.call(torch.where, q0_zero, ctx.call(torch.zeros_like, edge), edge)
    codes = ctx.call(torch.round, ctx.call(torch.div, ctx.call(torch.sub, x, bias), scale))
    codes = ctx.call(torch.clamp, codes, min=0.0, max=n_bins)
    codes = ctx.call(torch.flatten, ctx.method("to", codes, torch.int64), -2)
    dtype = torch_dtype(ctx.out_info(node, 1).dtype)
    return [_pack(ctx, codes, bits)] + [ctx.method("to", ctx.call(torch.squeeze, t, -1), dtype) for t in (scale, bias)]


@torch_op("Quantize")
def convert_quantize(ctx: TorchContext, node: Node) -> list:
    """Quantize(w | w_q, scales[, biases]) [group_size, bits, mode, dequantize] -> int64 shifts + mul/add, or round + packing."""
    group, bits, mode, dequantize = quantize_args(node)
    if dequantize:
        parts = [ctx.input(node, i) for i in range(len(node.inputs))]
        return [_dequantize(ctx, parts, group, bits, mode, ctx.out_info(node).dtype)]
    return _quantize(ctx, node, group, bits)
