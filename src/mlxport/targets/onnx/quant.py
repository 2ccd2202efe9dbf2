"""Quantized primitives: QuantizedMatmul, GatherQMM, Quantize (packed weights stay packed).

MLX stores each row of codes as one little-endian bit stream in uint32 words:
code i occupies bits [bits*i, bits*(i+1)) of the row, lowest first, so with 3,
5 or 6 bits a code can straddle two words (checked against mx.dequantize for
bits 1-6 and 8). Affine mode reads w = scale * code + bias per group of the last
axis; mxfp4/mxfp8/nvfp4 read w = scale * lut[code] with 8-bit scale codes.

The file keeps those words as they are. Two lowerings:

- MatMulNBits (com.microsoft, ONNX Runtime's block-quantized kernel) for affine
  4-bit constant weights with transpose=True (2 and 8 bits too at accuracy
  level 4): MLX's bytes already are its B layout. Without zero points it
  computes (code - 2^(bits-1)) * scale, so the bias moves into a per-group
  term: x @ (s*q + b)^T = MatMulNBits(x) + groupsum(x) @ (b + 2^(bits-1) s)^T.
  Float zero points (-b/s) would be exact too but hit a ~70x slower kernel,
  and overflow float16 when s ~ 0.
- Standard ONNX everywhere else (and when contrib ops are off): BitShift
  unpacking (opset 11, uint32), Cast, Mul/Add per group, MatMul. ONNX Runtime
  folds this chain at load for constant weights: float speed and float memory.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ...dtypes import numpy_dtype
from ...graph import Node, SymExpr
from ..args import quant_args, quantize_args, static_ints
from ..common import FP4_E2M1, batch_operand, e8m0_table, fp8_e4m3_table, is_batch_iota
from .context import ConvertContext, Initializer, onnx_op
from .linalg import take_batch

# Use com.microsoft ops where they apply. ``lower(..., contrib_ops=...)`` overrides
# this per export (False keeps the file to standard ONNX, e.g. for onnx2tf).
CONTRIB_OPS = True
# MatMulNBits accuracy_level; ``lower(..., nbits_accuracy_level=...)`` overrides. 4 quantizes
# activations to int8 per block: 4-8x faster, ~0.6% relative error, so opt-in only.
NBITS_ACCURACY_LEVEL = 0

# ONNX Runtime 1.32's CPU MatMulNBits (x86) at exact accuracy: 4 bits 0.6-1.2 ms for 1x4096 @ 4096x4096,
# 2 and 8 bits ~200 ms (a reference loop). At accuracy_level 4 all three take 0.15-0.3 ms.
_NBITS = {0: (4,), 4: (2, 4, 8)}
def contrib_ops_enabled(ctx: ConvertContext) -> bool:
    return bool(ctx.options.get("contrib_ops", CONTRIB_OPS))


def _accuracy_level(ctx: ConvertContext) -> int:
    return int(ctx.options.get("nbits_accuracy_level", NBITS_ACCURACY_LEVEL))


_quant_args = quant_args


def _unsqueeze(ctx: ConvertContext, x: str, axis: int) -> str:
    return ctx.make("Unsqueeze", [x, ctx.const(np.array([axis], np.int64))])


def _reshape_tail(ctx: ConvertContext, x: str, lead: int, tail: Sequence[int]) -> str:
    """Reshape keeping the first ``lead`` dims (0 = copy, so dynamic dims need no Shape op)."""
    return ctx.make("Reshape", [x, ctx.const(np.array([0] * lead + list(tail), np.int64))])


def _shift(ctx: ConvertContext, x: str, amounts: np.ndarray | int, direction: str) -> str:
    return ctx.make("BitShift", [x, ctx.const(np.asarray(amounts, np.uint32))], direction=direction)


def unpack(ctx: ConvertContext, words: str, lead: int, width: int, bits: int) -> str:
    """uint32 words [*lead, width] -> uint32 codes [*lead, width*32/bits] (MLX's LSB-first bit stream)."""
    if 32 % bits == 0:
        per = 32 // bits
        # Code j of a word: shift it to the top, then down to the bottom (no BitwiseAnd before opset 18).
        top = _shift(ctx, _unsqueeze(ctx, words, -1), [32 - bits * (j + 1) for j in range(per)], "LEFT")
        codes = _shift(ctx, top, 32 - bits, "RIGHT")
        return _reshape_tail(ctx, codes, lead, [width * per])
    # `bits` words hold 32 codes; code j starts at bit s of word lo and may run into word lo + 1.
    pos = bits * np.arange(32)
    lo, s = pos // 32, pos % 32
    straddles = s + bits > 32
    hi = np.where(straddles, lo + 1, lo)
    # Non-straddling codes get a shift >= bits for the second word: only bits the mask drops.
    hi_shift = np.where(straddles, 32 - s, np.where(s > 0, 32 - s, bits))
    chunks = _reshape_tail(ctx, words, lead, [width // bits, bits])
    low = _shift(ctx, ctx.make("Gather", [chunks, ctx.const(lo.astype(np.int64))], axis=-1), s, "RIGHT")
    high = _shift(ctx, ctx.make("Gather", [chunks, ctx.const(hi.astype(np.int64))], axis=-1), hi_shift, "LEFT")
    # The two parts never share a bit below `bits`, so Add (wrapping) acts as Or.
    window = ctx.make("Add", [low, high])
    codes = _shift(ctx, _shift(ctx, window, 32 - bits, "LEFT"), 32 - bits, "RIGHT")
    return _reshape_tail(ctx, codes, lead, [width // bits * 32])


def _as_dtype(ctx: ConvertContext, name: str, have: str, want: str) -> str:
    """``name`` as ``want``: a constant narrowed in the file, otherwise a Cast (the file never widens)."""
    if have == want:
        return name
    if ctx.is_const(name) and numpy_dtype(want).itemsize <= numpy_dtype(have).itemsize:
        init = ctx.initializers[name]
        return ctx.lazy_const(init.shape, numpy_dtype(want), lambda: init.value().astype(numpy_dtype(want)), hint="q")
    return ctx.cast(name, want)


def dequantize(ctx: ConvertContext, node: Node, parts: Sequence[str], lead: int, group: int, bits: int,
               mode: str, dtype: str) -> str:
    """Float [*lead, K] weights from packed words [*lead, W], scales and (affine) biases.

    ``parts`` are the ONNX names of words, scales[, biases]; their dtypes are those of
    the node's inputs 1, 2[, 3] (GatherQMM, QuantizedMatmul) or 0, 1[, 2] (Quantize).
    """
    first = 0 if node.primitive == "Quantize" else 1
    width = static_ints(node, ctx.in_info(node, first).shape[-1:], "the packed width")[0]
    k = width * 32 // bits
    codes = unpack(ctx, parts[0], lead, width, bits)
    # Dequantize in float32: ONNX Runtime's CPU constant folder has no float16 Mul/Add, so a
    # float16 chain would run at every call (23 ms vs 1.4 ms for 4096x4096); one Cast at the end.
    work = "float32"
    s_dtype = ctx.in_info(node, first + 1).dtype
    if mode == "affine":
        values = ctx.cast(codes, work)
        scale = _as_dtype(ctx, parts[1], s_dtype, work)
    else:
        lut = FP4_E2M1 if bits == 4 else fp8_e4m3_table()
        values = ctx.make("Gather", [ctx.const(lut), ctx.cast(codes, "int64")], axis=0)
        table = fp8_e4m3_table() if group == 16 else e8m0_table()
        scale = ctx.make("Gather", [ctx.const(table), ctx.cast(parts[1], "int64")], axis=0)
    grouped = ctx.make("Mul", [_reshape_tail(ctx, values, lead, [k // group, group]), _unsqueeze(ctx, scale, -1)])
    if len(parts) > 2:
        bias = _as_dtype(ctx, parts[2], ctx.in_info(node, first + 2).dtype, work)
        grouped = ctx.make("Add", [grouped, _unsqueeze(ctx, bias, -1)])
    return _as_dtype(ctx, _reshape_tail(ctx, grouped, lead, [k]), work, dtype)


def _product(ctx: ConvertContext, x: str, x_rank: int, w: str, w_rank: int, transpose: bool) -> str:
    """x @ w.T (transpose) or x @ w, with Gemm's transB for 2-D operands."""
    if not transpose:
        return ctx.make("MatMul", [x, w])
    if x_rank == 2 and w_rank == 2:
        return ctx.make("Gemm", [x, w], transB=1)
    perm = list(range(w_rank - 2)) + [w_rank - 1, w_rank - 2]
    return ctx.make("MatMul", [x, ctx.make("Transpose", [w], perm=perm)])


def _users(ctx: ConvertContext, name: str) -> int:
    return sum(n.inputs.count(name) for n in ctx.graph.nodes)


def nbits_blob(ctx: ConvertContext, ir_name: str, onnx_name: str, shape: tuple[int, int, int]) -> str:
    """The packed weight as MatMulNBits' bytes [N, K/group, group*bits/8], one initializer per weight."""
    blobs = ctx.shared.setdefault("nbits_blobs", {})
    if ir_name not in blobs:
        words = ctx.initializers[onnx_name]
        blobs[ir_name] = ctx.lazy_const(shape, np.dtype(np.uint8), hint="B",
                                        make=lambda: np.ascontiguousarray(words.value()).view(np.uint8).reshape(shape))
    return blobs[ir_name]


def shares_nbits_blob(ctx: ConvertContext, ir_name: str) -> bool:
    """True for a tied quantized embedding: a packed uint32 weight read only by row lookups (Gather on
    axis 0) and by transposed affine QuantizedMatmuls that MatMulNBits can run."""
    plans = ctx.shared.setdefault("nbits_tied", {})
    if ir_name not in plans:
        plans[ir_name] = _tied(ctx, ir_name)
    return plans[ir_name]


def _tied(ctx: ConvertContext, ir_name: str) -> bool:
    if not contrib_ops_enabled(ctx) or ir_name not in ctx.graph.constants:
        return False
    users = [n for n in ctx.graph.nodes if ir_name in n.inputs]
    gathers = matmuls = 0
    for n in users:
        if n.primitive == "Gather" and n.inputs[0] == ir_name and n.inputs.count(ir_name) == 1 and len(n.inputs) == 2 \
                and list(n.arguments[0]) == [0]:
            gathers += 1
        elif n.primitive == "QuantizedMatmul" and n.inputs[1] == ir_name and n.inputs.count(ir_name) == 1:
            group, bits, mode = _quant_args(n)
            if (mode != "affine" or not n.arguments[3] or bits not in _NBITS.get(_accuracy_level(ctx), _NBITS[0])
                    or group < 16 or group & (group - 1) or ctx.graph.tensors[ir_name].rank != 2
                    or isinstance(ctx.graph.tensors[n.inputs[0]].shape[-1], SymExpr)
                    or ctx.graph.tensors[n.outputs[0]].dtype not in ("float32", "float16")):
                return False
            matmuls += 1
        else:
            return False
    return gathers > 0 and matmuls > 0


def gather_tied_rows(ctx: ConvertContext, ir_name: str, idx: str) -> str:
    """Rows of a tied packed weight looked up from MatMulNBits' bytes and rebuilt as uint32 words."""
    info = ctx.graph.tensors[ir_name]
    n, words = int(info.shape[0]), int(info.shape[1])
    blob = nbits_blob(ctx, ir_name, ctx.values[ir_name], _blob_shape(ctx, ir_name, n, words))
    rows = ctx.make("Gather", [ctx.make("Reshape", [blob, ctx.const(np.array([n, words * 4], np.int64))]), idx],
                    axis=0)
    split = ctx.make("Concat", [ctx.make("Shape", [idx]), ctx.const(np.array([words, 4], np.int64))], axis=0)
    as_int = ctx.cast(ctx.make("Reshape", [rows, split]), "int64")
    # Little-endian: byte j of a word weighs 256**j (ONNX has no bitcast from bytes to words).
    weights = ctx.const(np.array([1, 1 << 8, 1 << 16, 1 << 24], np.int64))
    summed = ctx.make("ReduceSum", [ctx.make("Mul", [as_int, weights]), ctx.const(np.array([-1], np.int64))],
                      keepdims=0)
    return ctx.cast(summed, "uint32")


def _blob_shape(ctx: ConvertContext, ir_name: str, n: int, words: int) -> tuple[int, int, int]:
    """MatMulNBits' byte layout for the weight, from the QuantizedMatmul that reads it."""
    node = next(m for m in ctx.graph.nodes if m.primitive == "QuantizedMatmul" and m.inputs[1] == ir_name)
    group, bits, _ = _quant_args(node)
    k = words * 32 // bits
    return n, k // group, group * bits // 8


def _constant(ctx: ConvertContext, name: str) -> Initializer | None:
    """The initializer behind ``name``, looking through a Cast (bfloat16 scales computed in float32)."""
    if name in ctx.initializers:
        return ctx.initializers[name]
    prod = ctx.producer(name)
    if prod is not None and prod.op_type == "Cast" and prod.input[0] in ctx.initializers:
        return ctx.initializers[prod.input[0]]
    return None


def _matmul_nbits(ctx: ConvertContext, node: Node, group: int, bits: int) -> str | None:
    """The MatMulNBits lowering of an affine QuantizedMatmul, or None where it does not apply."""
    x_info, w_info = ctx.in_info(node, 0), ctx.in_info(node, 1)
    dtype = ctx.out_info(node).dtype
    names = [ctx.input(node, i) for i in range(4)]
    level = _accuracy_level(ctx)
    s_init, b_init = _constant(ctx, names[2]), _constant(ctx, names[3])
    if (bits not in _NBITS.get(level, _NBITS[0]) or dtype not in ("float32", "float16") or w_info.rank != 2
            or not ctx.is_const(names[1]) or s_init is None or b_init is None
            or isinstance(x_info.shape[-1], SymExpr) or group < 16 or group & (group - 1)):
        return None
    # MatMulNBits wants bytes: a second copy of words that another node reads as uint32 would store
    # the weight twice. A tied quantized embedding shares the bytes instead: its lookup gathers rows of
    # them and rebuilds the words (tied_blob); anything else keeps the standard lowering.
    if _users(ctx, node.inputs[1]) > 1 and not shares_nbits_blob(ctx, node.inputs[1]):
        return None
    n, k = int(w_info.shape[0]), int(x_info.shape[-1])
    blob = nbits_blob(ctx, node.inputs[1], names[1], (n, k // group, group * bits // 8))
    scales = _as_dtype(ctx, names[2], ctx.in_info(node, 2).dtype, dtype)
    out = ctx.make("MatMulNBits", [names[0], blob, scales], domain="com.microsoft", K=k, N=n, bits=bits,
                   block_size=group, accuracy_level=level or None)

    def shifted_bias() -> np.ndarray:
        # MatMulNBits subtracts 2^(bits-1) from every code; fold that into the bias.
        s, b = s_init.value().astype(np.float32), b_init.value().astype(np.float32)
        return np.ascontiguousarray((b + 2.0 ** (bits - 1) * s).T).astype(numpy_dtype(dtype))

    if not np.any(shifted_bias()):
        return out  # symmetric weights: no bias term
    bias_t = ctx.lazy_const((k // group, n), numpy_dtype(dtype), shifted_bias, hint="qbias")
    grouped = _reshape_tail(ctx, names[0], x_info.rank - 1, [k // group, group])
    sums = ctx.make("ReduceSum", [grouped, ctx.const(np.array([-1], np.int64))], keepdims=0)
    return ctx.make("Add", [out, ctx.make("MatMul", [sums, bias_t])])


@onnx_op("QuantizedMatmul")
def convert_quantized_matmul(ctx: ConvertContext, node: Node) -> list[str]:
    """QuantizedMatmul(x, w, scales[, biases]) [group_size, bits, mode, transpose] -> MatMulNBits or BitShift + MatMul."""
    group, bits, mode = _quant_args(node)
    transpose = bool(node.arguments[3])
    if mode == "affine" and transpose and contrib_ops_enabled(ctx):
        out = _matmul_nbits(ctx, node, group, bits)
        if out is not None:
            return [out]
    parts = [ctx.input(node, i) for i in range(1, 4 if mode == "affine" else 3)]
    w = dequantize(ctx, node, parts, ctx.in_info(node, 1).rank - 1, group, bits, mode, ctx.out_info(node).dtype)
    return [_product(ctx, ctx.input(node, 0), ctx.in_info(node, 0).rank, w, ctx.in_info(node, 1).rank, transpose)]


@onnx_op("GatherQMM")
def convert_gather_qmm(ctx: ConvertContext, node: Node) -> list[str]:
    """GatherQMM(x, w, scales[, biases], lhs, rhs) [group_size, bits, mode, transpose, sorted x2] -> Gather + BitShift + MatMul."""
    group, bits, mode = _quant_args(node)
    transpose = bool(node.arguments[3])
    lhs, rhs = len(node.inputs) - 2, len(node.inputs) - 1
    x = batch_operand(ctx, node, 0, lhs, take_batch)
    # Only the experts picked are unpacked: Gather works on the packed words.
    inputs = range(1, 4 if mode == "affine" else 3)
    w_shape = ctx.in_info(node, 1).shape
    if is_batch_iota(ctx.graph, node.inputs[rhs], w_shape[:-2]):
        parts, lead = [ctx.input(node, i) for i in inputs], len(w_shape) - 1
    else:
        parts = [take_batch(ctx, ctx.input(node, i), ctx.in_info(node, i).shape, node.inputs[rhs]) for i in inputs]
        lead = ctx.in_info(node, rhs).rank + 1
    w = dequantize(ctx, node, parts, lead, group, bits, mode, ctx.out_info(node).dtype)
    rank = max(ctx.out_info(node).rank, 3)
    return [_product(ctx, x, rank, w, rank, transpose)]


def _quantize(ctx: ConvertContext, node: Node, group: int, bits: int) -> list[str]:
    """Affine quantization of x [..., K] at run time, as MLX's CPU kernel computes it (float32)."""
    info = ctx.in_info(node, 0)
    lead, k = info.rank - 1, static_ints(node, info.shape[-1:], "the quantized axis")[0]
    f32 = "float32"
    x = _reshape_tail(ctx, _as_dtype(ctx, ctx.input(node, 0), info.dtype, f32), lead, [k // group, group])
    axes = ctx.const(np.array([-1], np.int64))
    # ReduceMax/Min take their axes as an input from opset 18 on.
    w_max, w_min = (ctx.make(op, [x, axes], keepdims=1) if ctx.opset >= 18 else ctx.make(op, [x], keepdims=1, axes=[-1])
                    for op in ("ReduceMax", "ReduceMin"))
    n_bins = ctx.const(np.float32((1 << bits) - 1))
    zero = ctx.const(np.float32(0))
    mask = ctx.make("Greater", [ctx.make("Abs", [w_min]), ctx.make("Abs", [w_max])])
    scale = ctx.make("Max", [ctx.make("Div", [ctx.make("Sub", [w_max, w_min]), n_bins]), ctx.const(np.float32(1e-7))])
    scale = ctx.make("Where", [mask, scale, ctx.make("Neg", [scale])])
    edge = ctx.make("Where", [mask, w_min, w_max])
    q0 = ctx.make("Round", [ctx.make("Div", [edge, scale])])
    q0_zero = ctx.make("Equal", [q0, zero])
    scale = ctx.make("Where", [q0_zero, scale, ctx.make("Div", [edge, q0])])
    bias = ctx.make("Where", [q0_zero, zero, edge])
    codes = ctx.make("Round", [ctx.make("Div", [ctx.make("Sub", [x, bias]), scale])])
    codes = ctx.make("Clip", [codes, zero, n_bins])
    codes = _reshape_tail(ctx, ctx.cast(codes, "int64"), lead, [k])
    words = _pack(ctx, codes, lead, k, bits)
    dtype = ctx.out_info(node, 1).dtype
    squeeze = [ctx.make("Squeeze", [t, axes]) for t in (scale, bias)]
    return [words] + [_as_dtype(ctx, t, f32, dtype) for t in squeeze]


def _pack(ctx: ConvertContext, codes: str, lead: int, k: int, bits: int) -> str:
    """int64 codes [..., K] -> uint32 words [..., K*bits/32] (the inverse of unpack)."""
    # 32 codes fill `bits` words; word w gets code j's bits that fall in it, moved by Mul/Div.
    pos = bits * np.arange(32)
    start = 32 * np.arange(bits)[:, None]
    overlaps = (pos[None, :] < start + 32) & (pos[None, :] + bits > start)
    mul = np.where(overlaps, 2 ** np.clip(pos[None, :] - start, 0, 31), 0).astype(np.int64)
    div = np.where(overlaps, 2 ** np.clip(start - pos[None, :], 0, 31), 1).astype(np.int64)
    chunks = _unsqueeze(ctx, _reshape_tail(ctx, codes, lead, [k // 32, 32]), -2)
    parts = ctx.make("Div", [ctx.make("Mul", [chunks, ctx.const(mul)]), ctx.const(div)])
    parts = ctx.make("Mod", [parts, ctx.const(np.int64(1 << 32))])
    words = ctx.make("ReduceSum", [parts, ctx.const(np.array([-1], np.int64))], keepdims=0)
    return _reshape_tail(ctx, ctx.cast(words, "uint32"), lead, [k * bits // 32])


@onnx_op("Quantize")
def convert_quantize(ctx: ConvertContext, node: Node) -> list[str]:
    """Quantize(w | w_q, scales[, biases]) [group_size, bits, mode, dequantize] -> BitShift + Mul/Add, or Round + packing."""
    group, bits, mode, dequantize_ = quantize_args(node)
    if dequantize_:
        parts = [ctx.input(node, i) for i in range(len(node.inputs))]
        lead = ctx.in_info(node, 0).rank - 1
        return [dequantize(ctx, node, parts, lead, group, bits, mode, ctx.out_info(node).dtype)]
    return _quantize(ctx, node, group, bits)
