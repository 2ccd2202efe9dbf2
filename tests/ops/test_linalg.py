"""Parity of the matrix-product translations (ops/linalg.py)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlxport.capture import capture
from mlxport.exporters.onnx import lower
from mlxport.targets.onnx.context import ONNX

from .cases import OpCase, default_inputs, params, run_case

FLOATS = ("float32", "float16")
# MLX's matmul only takes inexact types ("[matmul] Only inexact types are supported"): no int32 cases.
# MLX's CPU GatherMM and BlockMaskedMM run float32 only ("[GatherMM::eval] Currently only supports float32").

ONNX.load()


def needs(*primitives: str) -> dict[str, str]:
    """xfail (strict) for every dtype while another family lacks a primitive this trace contains."""
    missing = [p for p in primitives if ONNX.lookup(p, 17) is None]
    if not missing:
        return {}
    reason = f"{', '.join(missing)} has no translation yet (another family)"
    return {d: reason for d in FLOATS}


def _module(module: nn.Module) -> nn.Module:
    mx.eval(module.parameters())
    return module


_linear = _module(nn.Linear(8, 5, bias=False))
_linear_bias = _module(nn.Linear(8, 5))
_rng = np.random.default_rng(0)
_W_CONST = mx.array(_rng.standard_normal((6, 8)).astype(np.float32))
_EXPERTS = mx.array(_rng.standard_normal((4, 8, 5)).astype(np.float32))
_EXPERTS_NK = mx.array(_rng.standard_normal((4, 5, 8)).astype(np.float32))


def _experts(x: mx.array, which: mx.array = _EXPERTS) -> mx.array:
    return which.astype(x.dtype)


def _with_indices(high: int, count: int = 1):
    """Inputs: floats for the first shapes, then ``count`` uint32 index arrays in [0, high)."""

    def make(rng: np.random.Generator, shapes, dtype: str) -> list[np.ndarray]:
        floats = default_inputs(rng, shapes[:-count], dtype)
        ints = [rng.integers(0, high, size=s).astype(np.uint32) for s in shapes[-count:]]
        return floats + ints

    return make


def _moe(x: mx.array, idx: mx.array) -> mx.array:
    # SwitchGLU's layout: tokens [B, L, 1, 1, D], top-k expert ids [B, L, k].
    return mx.gather_mm(mx.expand_dims(x, (-2, -3)), _experts(x), rhs_indices=idx)


def _moe_nk(x: mx.array, idx: mx.array) -> mx.array:
    return mx.gather_mm(mx.expand_dims(x, (-2, -3)), mx.swapaxes(_experts(x, _EXPERTS_NK), -1, -2), rhs_indices=idx)


_LHS = mx.array([2, 0, 1], dtype=mx.uint32)
_RHS = mx.array([3, 3, 0], dtype=mx.uint32)
_IOTA = mx.array([0, 1, 2], dtype=mx.uint32)
_MASK_OUT = mx.array([[True, False, True], [False, True, True]])
_MASK_LHS = mx.array(_rng.random((2, 2)).astype(np.float32))
_MASK_RHS = mx.array(_rng.random((2, 3)).astype(np.float32))

CASES = [
    # Hadamard sizes 2^k and m * 2^k for MLX's m in {12, 20, 28}; float16 runs the matmul in float32.
    # MLX runs a butterfly, rounding each of its log2(n) stages (to float16 for float16 inputs);
    # ONNX runs one float32 matmul and rounds once: a few ulps of the sum apart.
    OpCase("Hadamard", lambda x: mx.hadamard_transform(x, scale=0.5), [((2, 16),), ((2, 3, 64),)], FLOATS,
           dynamic={"x": {0: "batch"}}, tol={"float32": (1e-4, 1e-5), "float16": (2e-2, 2e-2)}, id="pow2"),
    OpCase("Hadamard", lambda x: mx.hadamard_transform(x), [((2, 12),), ((2, 40),), ((1, 56),)], FLOATS,
           tol={"float32": (1e-4, 1e-5), "float16": (2e-2, 2e-2)}, id="m_pow2"),
    OpCase("Matmul", lambda a, b: a @ b, [((3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((0, 3), (3, 4)), ((2, 0), (0, 4))],
           FLOATS),
    # Batch dims broadcast: MLX adds Broadcast nodes, the lowering lets MatMul broadcast instead.
    OpCase("Matmul", lambda a, b: a @ b, [((2, 1, 3, 4), (5, 4, 6)), ((3, 4), (2, 4, 5))], FLOATS, id="bcast"),
    # 1-D operands reach Matmul as ExpandDims/Squeeze around a 2-D product.
    OpCase("Matmul", lambda a, b: a @ b, [((4,), (4, 5)), ((2, 3, 4), (4,)), ((4,), (4,))], FLOATS, id="vector"),
    OpCase("Matmul", lambda a, b: a @ b.T, [((3, 4), (5, 4))], FLOATS, id="transB"),
    OpCase("Matmul", lambda x: x @ _W_CONST.astype(x.dtype).T, [((3, 8),)], FLOATS, id="const_transB"),
    OpCase("Matmul", lambda x: _linear(x), [((2, 3, 8),)], ("float32",), dynamic={"x": {0: "batch"}}, id="linear"),
    OpCase("Matmul", lambda a, b: mx.swapaxes(a, -1, -2) @ b, [((2, 4, 3), (2, 4, 5))], FLOATS, id="batched_T"),
    OpCase("AddMM", lambda c, a, b: mx.addmm(c, a, b, alpha=2.0, beta=0.5), [((3, 4), (3, 5), (5, 4)), ((4,), (3, 5), (5, 4))],
           FLOATS),
    OpCase("AddMM", lambda c, a, b: mx.addmm(c, a, b), [((2, 3, 4), (2, 3, 5), (5, 4)), ((4,), (2, 3, 5), (2, 5, 4))],
           FLOATS, id="batched"),
    OpCase("AddMM", lambda c, a, b: mx.addmm(c, a, b, alpha=-1.5, beta=3.0), [((2, 3, 4), (2, 3, 5), (5, 4))], FLOATS,
           id="batched_scaled"),
    OpCase("AddMM", lambda c, a, b: mx.addmm(c, a, b), [((4,), (5,), (5, 4)), ((2, 4), (2, 0), (0, 4))], FLOATS, id="edge"),
    OpCase("AddMM", lambda x: _linear_bias(x), [((2, 3, 8),)], ("float32",), dynamic={"x": {0: "batch"}}, id="linear"),
    # Explicit lhs and rhs indices (constants): a real Gather on both operands.
    OpCase("GatherMM", lambda x, w: mx.gather_mm(x, w, lhs_indices=_LHS, rhs_indices=_RHS), [((3, 2, 8), (4, 8, 5))],
           id="both"),
    # A constant iota as lhs: the lhs Gather is skipped.
    OpCase("GatherMM", lambda x, w: mx.gather_mm(x, w, lhs_indices=_IOTA, rhs_indices=_RHS, sorted_indices=False),
           [((3, 2, 8), (4, 8, 5))], id="iota"),
    # Mixture of experts with runtime expert ids and a dynamic batch (MLX adds an Arange iota for lhs).
    OpCase("GatherMM", _moe, [((2, 3, 8), (2, 3, 2))], make=_with_indices(4),
           dynamic={"x": {0: "batch"}, "idx": {0: "batch"}}, xfail=needs("Arange"), id="moe"),
    OpCase("GatherMM", _moe_nk, [((1, 2, 8), (1, 2, 2))], make=_with_indices(4),
           xfail=needs("Arange"), id="moe_nk"),
    OpCase("GatherMM", lambda x, w, i: mx.gather_mm(x, w, rhs_indices=i, sorted_indices=True), [((4, 1, 8), (4, 8, 5), (4,))],
           make=lambda rng, s, d: default_inputs(rng, s[:2], d) + [np.array([0, 1, 1, 3], np.uint32)],
           xfail=needs("Arange"), id="sorted"),
    OpCase("BlockMaskedMM", lambda a, b: mx.block_masked_mm(a, b, 32, mask_out=_MASK_OUT), [((64, 40), (40, 70))]),
    OpCase("BlockMaskedMM", lambda a, b, ml, mr: mx.block_masked_mm(a, b, 32, None, ml, mr),
           [((2, 40, 70), (70, 33), (2, 2, 3), (3, 2))], ("float32",),
           make=lambda rng, s, d: default_inputs(rng, s[:2], d) + [rng.random(s[2]) < 0.5, rng.random(s[3]) < 0.5],
           id="operands"),
    OpCase("BlockMaskedMM", lambda a, b: mx.block_masked_mm(a, b, 32, _MASK_OUT, _MASK_LHS, _MASK_RHS), [((64, 64), (64, 96))],
           ("float32",), id="all_float_masks"),
]


@pytest.mark.parametrize("case,shape_index,dtype,opset", params(CASES))
def test_parity(case: OpCase, shape_index: int, dtype: str, opset: int) -> None:
    run_case(case, shape_index, dtype, opset)


def _op_types(fn, *args) -> dict[str, int]:
    graph, _, _ = capture(fn, args)
    return lower(graph).op_counts()


def test_linear_weight_is_not_transposed_at_run_time() -> None:
    ops = _op_types(_linear, mx.zeros((2, 3, 8)))
    assert "Transpose" not in ops and ops.get("MatMul", 0) + ops.get("Gemm", 0) == 1, ops


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)

    def __call__(self, tokens: mx.array) -> mx.array:
        return self.embed.as_linear(self.embed(tokens) * 2.0)


def test_tied_embedding_is_stored_once_and_not_transposed() -> None:
    model = _module(_Tied())
    graph, _, _ = capture(model, (mx.array([[1, 2, 3]], dtype=mx.int32),), dynamic_axes={"tokens": {1: "seq"}})
    if ONNX.lookup("Gather", 17) is None:
        pytest.xfail("Gather has no translation yet (index family)")
    onnx_model = lower(graph)
    ops = onnx_model.op_counts()
    assert "Transpose" not in ops and ops.get("Gemm") == 1, ops
    assert onnx_model.weight_bytes < 10 * 8 * 4 + 200, {k: v.shape for k, v in onnx_model.initializers.items()}


def test_tied_embedding_parity() -> None:
    if ONNX.lookup("Gather", 17) is None:
        pytest.xfail("Gather has no translation yet (index family)")
    model = _module(_Tied())
    case = OpCase("Matmul", model, [((1, 3),)], make=lambda rng, s, d: [rng.integers(0, 10, s[0]).astype(np.int32)],
                  dynamic={"tokens": {1: "seq"}})
    for opset in case.opsets:
        run_case(case, 0, "float32", opset)


def test_batch_broadcast_needs_no_expand() -> None:
    ops = _op_types(lambda a, b: a @ b, mx.zeros((2, 1, 3, 4)), mx.zeros((5, 4, 6)))
    assert ops == {"MatMul": 1}, ops


def test_gather_mm_iota_lhs_is_not_gathered() -> None:
    ops = _op_types(lambda x, w: mx.gather_mm(x, w, lhs_indices=_IOTA, rhs_indices=_RHS), mx.zeros((3, 2, 8)), mx.zeros((4, 8, 5)))
    assert ops.get("Gather") == 1 and ops.get("MatMul") == 1, ops
