"""Parity of the quantized translations (targets/onnx/quant.py); packed weights must stay packed."""

from __future__ import annotations

import itertools
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import mlxport.targets.onnx.quant as quant
from mlxport.capture import capture
from mlxport.exporters.onnx import lower
from mlxport.graph import Graph, Node, TensorInfo
from mlxport.runners import OnnxRunner

from .cases import OPSETS, OpCase, default_inputs, params, run_case
from .test_linalg import needs

FLOATS = ("float32", "float16")
_rng = np.random.default_rng(0)
_DTYPES = {"float32": mx.float32, "float16": mx.float16}

# MLX's CPU kernels sum float16 products in float16 (_qmm, _qmm_t in backend/cpu/quantized.cpp). Against
# a float64 reference at K=256, |y|~5, MLX was off by up to 0.016 and ONNX Runtime by 0.0036.
F16_SUM = {"float16": (1e-2, 1e-2)}


def _quantized(shape: tuple[int, ...], group: int, bits: int, mode: str = "affine") -> dict:
    """{mx dtype: quantize(w) of one random weight in that dtype}, evaluated (constants, not traced)."""
    w = mx.array(_rng.standard_normal(shape).astype(np.float32) * 0.1)
    out = {}
    for dt in _DTYPES.values():
        packed = mx.quantize(w.astype(dt), group_size=group, bits=bits, mode=mode)
        mx.eval(packed)
        out[dt] = packed
    return out


def qmm(bits: int, group: int, transpose: bool, n: int = 32, k: int = 128, mode: str = "affine") -> Callable:
    """x -> quantized_matmul(x, W) with W [n, k] (transpose) or [k, n], quantized once per dtype."""
    weights = _quantized((n, k) if transpose else (k, n), group, bits, mode)

    def fn(x: mx.array) -> mx.array:
        return mx.quantized_matmul(x, *weights[x.dtype], transpose=transpose, group_size=group, bits=bits, mode=mode)

    return fn


def _k(group: int, transpose: bool) -> tuple[int, int]:
    """(n, k) with the quantized axis a multiple of the group size."""
    return (32, 2 * group) if transpose else (2 * group, 64)


GRID = [
    OpCase("QuantizedMatmul", qmm(bits, group, tr, *_k(group, tr)), [((3, _k(group, tr)[1]),)], FLOATS,
           tol=F16_SUM, id=f"b{bits}_g{group}_{'T' if tr else 'N'}")
    for bits, group, tr in itertools.product((2, 3, 4, 6, 8), (32, 64, 128), (True, False))
] + [
    # MLX also takes 1 and 5 bits.
    OpCase("QuantizedMatmul", qmm(1, 64, True), [((3, 128),)], FLOATS, tol=F16_SUM, id="b1_g64_T"),
    OpCase("QuantizedMatmul", qmm(5, 32, False, n=64, k=64), [((3, 64),)], FLOATS, tol=F16_SUM, id="b5_g32_N"),
]


def _module(module: nn.Module) -> nn.Module:
    mx.eval(module.parameters())
    return module


def _qlinear(bias: bool, bits: int = 4, dtype: mx.Dtype = mx.float32) -> nn.Module:
    layer = nn.QuantizedLinear(64, 24, bias=bias, group_size=32, bits=bits)
    layer.set_dtype(dtype)
    return _module(layer)


class _QEmbed(nn.Module):
    def __init__(self, tied: bool = False, bits: int = 4, vocab: int = 50) -> None:
        super().__init__()
        self.embed = nn.QuantizedEmbedding(vocab, 64, group_size=32, bits=bits)
        self.tied = tied

    def __call__(self, tokens: mx.array) -> mx.array:
        h = self.embed(tokens)
        return self.embed.as_linear(h) if self.tied else h


def _tokens(high: int) -> Callable:
    return lambda rng, shapes, dtype: [rng.integers(0, high, size=s).astype(np.int32) for s in shapes]


def _with_indices(high: int) -> Callable:
    def make(rng: np.random.Generator, shapes, dtype: str) -> list[np.ndarray]:
        return default_inputs(rng, shapes[:-1], dtype) + [rng.integers(0, high, size=shapes[-1]).astype(np.uint32)]

    return make


def gqmm(bits: int, group: int, transpose: bool, experts: int = 4, n: int = 16, k: int = 64) -> Callable:
    """(x [B, L, K], idx [B, L, top]) -> gather_qmm over ``experts`` quantized matrices (SwitchGLU's layout)."""
    weights = _quantized((experts, n, k) if transpose else (experts, k, n), group, bits)

    def fn(x: mx.array, idx: mx.array) -> mx.array:
        x = mx.expand_dims(x, (-2, -3))
        return mx.gather_qmm(x, *weights[x.dtype], rhs_indices=idx, transpose=transpose, group_size=group, bits=bits)

    return fn


_G4 = _quantized((4, 16, 64), 32, 4)
_LHS = mx.array([2, 0, 1], dtype=mx.uint32)
_RHS = mx.array([3, 3, 0], dtype=mx.uint32)


def _gqmm_explicit(x: mx.array) -> mx.array:
    return mx.gather_qmm(x, *_G4[x.dtype], lhs_indices=_LHS, rhs_indices=_RHS, transpose=True, group_size=32, bits=4)


def _switch_glu() -> nn.Module:
    from mlx_lm.models.switch_layers import SwitchGLU

    module = SwitchGLU(64, 64, num_experts=4)
    nn.quantize(module, group_size=32, bits=4)
    return _module(module)


def _kv_scores(q: mx.array, k: mx.array) -> mx.array:
    # mlx-lm's quantized KV cache: keys quantized at run time, then a QuantizedMatmul on the packed keys.
    return mx.quantized_matmul(q, *mx.quantize(k, group_size=32, bits=8), transpose=True, group_size=32, bits=8)


def quantize_fn(group: int, bits: int) -> Callable:
    return lambda w: mx.quantize(w, group_size=group, bits=bits)


CASES = GRID + [
    # Leading batch/sequence dims, dynamic.
    OpCase("QuantizedMatmul", qmm(4, 64, True), [((2, 3, 128),)], FLOATS, tol=F16_SUM, dynamic={"x": {0: "batch", 1: "seq"}},
           id="b4_dynamic"),
    OpCase("QuantizedMatmul", qmm(3, 32, False), [((2, 3, 128),)], FLOATS, tol=F16_SUM, dynamic={"x": {0: "batch"}},
           id="b3_N_dynamic"),
    # No zero-row case: MLX 0.32.4 itself dies with SIGFPE on quantized_matmul of a (0, K) input.
    OpCase("QuantizedMatmul", qmm(4, 32, True), [((128,),)], FLOATS, tol=F16_SUM, id="vector"),
    OpCase("QuantizedMatmul", _qlinear(False), [((2, 3, 64),)], ("float32",), dynamic={"x": {0: "batch", 1: "seq"}},
           id="qlinear"),
    OpCase("QuantizedMatmul", _qlinear(True), [((2, 3, 64),)], ("float32",), dynamic={"x": {0: "batch", 1: "seq"}},
           id="qlinear_bias"),
    OpCase("QuantizedMatmul", _qlinear(True, bits=8), [((1, 64),)], ("float32",), id="qlinear_8bit"),
    # bfloat16 runs in float32 inside (the lead's graph pass); MLX rounds its partial sums to bfloat16.
    OpCase("QuantizedMatmul", _qlinear(True, dtype=mx.bfloat16), [((2, 3, 64),)], ("bfloat16",),
           tol={"bfloat16": (2e-2, 2e-2)}, dynamic={"x": {1: "seq"}}, id="qlinear_bf16"),
    OpCase("QuantizedMatmul", qmm(4, 32, True, mode="mxfp4"), [((3, 128),)], FLOATS, tol=F16_SUM, id="mxfp4"),
    OpCase("QuantizedMatmul", qmm(8, 32, True, mode="mxfp8"), [((3, 128),)], FLOATS, tol=F16_SUM, id="mxfp8"),
    OpCase("QuantizedMatmul", qmm(4, 16, False, mode="nvfp4"), [((3, 128),)], FLOATS, tol=F16_SUM, id="nvfp4_N"),
    # A tied quantized embedding: Gather of packed rows, MLX's dequantize ops, then QuantizedMatmul on the same words.
    OpCase("QuantizedMatmul", _module(_QEmbed(tied=True)), [((2, 5),)], make=_tokens(50),
           dynamic={"tokens": {1: "seq"}}, xfail=needs("Gather", "BitwiseBinary"), id="qembedding_tied"),
    OpCase("BitwiseBinary", _module(_QEmbed(bits=3)), [((2, 5),)], make=_tokens(50), dynamic={"tokens": {0: "batch"}},
           xfail=needs("Gather", "BitwiseBinary"), id="qembedding_3bit"),
    OpCase("GatherQMM", gqmm(4, 32, True), [((2, 3, 64), (2, 3, 2))], FLOATS, tol=F16_SUM, make=_with_indices(4),
           dynamic={"x": {0: "batch"}, "idx": {0: "batch"}}, xfail=needs("Arange"), id="b4_T"),
    OpCase("GatherQMM", gqmm(3, 64, False, n=64), [((1, 2, 64), (1, 2, 2))], FLOATS, tol=F16_SUM, make=_with_indices(4),
           xfail=needs("Arange"), id="b3_N"),
    OpCase("GatherQMM", gqmm(8, 128, True, k=128), [((1, 2, 128), (1, 2, 3))], ("float32",), make=_with_indices(4),
           xfail=needs("Arange"), id="b8_T"),
    OpCase("GatherQMM", _gqmm_explicit, [((3, 2, 64),)], FLOATS, tol=F16_SUM, id="lhs_rhs"),
    OpCase("GatherQMM", lambda x, i: mx.gather_qmm(x, *_G4[x.dtype], rhs_indices=i, sorted_indices=True, group_size=32,
                                                   bits=4),
           [((4, 1, 64), (4,))], ("float32",), make=lambda rng, s, d: default_inputs(rng, s[:1], d) + [
               np.array([0, 1, 1, 3], np.uint32)], xfail=needs("Arange"), id="sorted"),
    OpCase("GatherQMM", _switch_glu(), [((2, 3, 64), (2, 3, 2))], make=_with_indices(4),
           dynamic={"x": {1: "seq"}, "indices": {1: "seq"}}, xfail=needs("Arange"), id="switch_glu"),
] + [
    # Run-time quantization (mlx-lm's quantized KV cache): codes must match exactly.
    OpCase("Quantize", quantize_fn(group, bits), [((4, 2 * group),)], FLOATS, id=f"b{bits}_g{group}")
    for bits, group in itertools.product((2, 3, 4, 5, 6, 8), (32, 64, 128))
] + [
    OpCase("Quantize", quantize_fn(64, 4), [((2, 3, 128),), ((0, 64),)], FLOATS, dynamic={"w": {0: "batch"}}, id="dynamic"),
    # Unscaled N(0, 1) keys: |y| ~ 8, so float32 summation order alone moves y by ~2e-6.
    OpCase("QuantizedMatmul", _kv_scores, [((1, 2, 3, 64), (1, 2, 5, 64))], FLOATS, tol={**F16_SUM, "float32": (1e-5, 1e-5)},
           dynamic={"k": {2: "kv"}}, id="runtime_weights"),
]


@pytest.mark.parametrize("case,shape_index,dtype,opset", params(CASES))
def test_parity(case: OpCase, shape_index: int, dtype: str, opset: int) -> None:
    run_case(case, shape_index, dtype, opset)


# The standard-ONNX lowering of the cases that MatMulNBits takes by default.
STANDARD = [c for c in CASES if c.id.startswith("b4_") and c.primitive == "QuantizedMatmul"] + [
    c for c in CASES if c.id in ("qlinear", "qlinear_bias", "qembedding_tied")]


@pytest.mark.parametrize("case,shape_index,dtype,opset", params(STANDARD))
def test_parity_standard_onnx(case: OpCase, shape_index: int, dtype: str, opset: int,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quant, "CONTRIB_OPS", False)
    run_case(case, shape_index, dtype, opset)


# Opt-in accuracy level 4 quantizes activations to int8 per block: about 0.6% of max |y| off.
INT8_TOL = {"float32": (5e-2, 5e-2), "float16": (5e-2, 5e-2)}
FAST = [OpCase("QuantizedMatmul", qmm(bits, 64, True), [((3, 128),)], FLOATS, tol=INT8_TOL, id=f"b{bits}_int8")
        for bits in (2, 4, 8)]


@pytest.mark.parametrize("case,shape_index,dtype,opset", params(FAST))
def test_parity_nbits_accuracy_level_4(case: OpCase, shape_index: int, dtype: str, opset: int,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quant, "NBITS_ACCURACY_LEVEL", 4)
    graph, _, _ = capture(case.fn, (mx.zeros(case.shapes[0][0], dtype=_DTYPES[dtype]),))
    assert lower(graph, opset).op_counts().get("MatMulNBits") == 1
    run_case(case, shape_index, dtype, opset)


# ----------------------------------------------------------------------------
# Packed weights stay packed; graph structure
# ----------------------------------------------------------------------------


def _lowered(fn: Callable, *args: mx.array, opset: int | None = None):
    graph, _, _ = capture(fn, args)
    return lower(graph, opset)


@pytest.mark.parametrize("contrib", [True, False])
@pytest.mark.parametrize("bits", [4, 3])
@pytest.mark.parametrize("opset", OPSETS)
def test_quantized_linear_file_stays_packed(bits: int, contrib: bool, opset: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quant, "CONTRIB_OPS", contrib)
    layer = _module(nn.QuantizedLinear(512, 256, bias=True, group_size=64, bits=bits))
    model = _lowered(layer, mx.zeros((1, 512)), opset=opset)
    float_bytes = 512 * 256 * 4
    limit = 0.35 if bits == 4 else 0.30
    assert model.weight_bytes < limit * float_bytes, (model.weight_bytes, {k: (v.shape, v.dtype) for k, v in
                                                                          model.initializers.items()})
    ops = model.op_counts()
    if contrib and bits == 4:
        assert ops.get("MatMulNBits") == 1 and "BitShift" not in ops, ops
    else:
        assert "MatMulNBits" not in ops and ops.get("BitShift", 0) >= 2, ops


def test_bfloat16_scales_still_take_matmul_nbits() -> None:
    model = _lowered(_qlinear(False, dtype=mx.bfloat16), mx.zeros((2, 64), dtype=mx.bfloat16))
    assert model.op_counts().get("MatMulNBits") == 1, model.op_counts()


def test_nbits_lowering_is_lean() -> None:
    ops = _lowered(_qlinear(False), mx.zeros((2, 3, 64))).op_counts()
    # MatMulNBits plus the per-group bias term (Reshape, ReduceSum, MatMul, Add); MLX's affine
    # quantization often makes bias == -8 * scale exactly, and then the term is left out.
    assert ops in ({"MatMulNBits": 1, "Reshape": 1, "ReduceSum": 1, "MatMul": 1, "Add": 1}, {"MatMulNBits": 1}), ops


@pytest.mark.parametrize("contrib", [True, False])
def test_quantized_embedding_table_stays_packed(contrib: bool, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    if needs("Gather", "BitwiseBinary"):
        pytest.xfail("Gather/BitwiseBinary have no translation yet (other families)")
    monkeypatch.setattr(quant, "CONTRIB_OPS", contrib)
    module = _module(_QEmbed(tied=True, vocab=1024))
    tokens = mx.array([[1, 2, 3], [1023, 0, 7]], dtype=mx.int32)
    model = _lowered(module, tokens)
    inits = {k: (v.shape, v.dtype.name) for k, v in model.initializers.items()}
    assert model.weight_bytes < 0.35 * 1024 * 64 * 4, inits
    packed = [v for v in inits.values() if v[1] in ("uint32", "uint8") and np.prod(v[0]) > 64]
    if contrib:
        # The tied output projection runs in MatMulNBits; the lookup gathers rows of the same bytes.
        assert packed == [((1024, 2, 16), "uint8")], inits
        assert model.op_counts().get("MatMulNBits") == 1
    else:
        # Standard ops: the Gather and the unpacking matmul read one copy of the packed words.
        assert packed == [((1024, 8), "uint32")], inits
        assert "MatMulNBits" not in model.op_counts()
    from mlxport import export

    report = export(module, (tokens,), tmp_path / "tied.onnx", contrib_ops=contrib)  # validated against MLX
    assert report.validated and all(o.mismatched == 0 for run in report.runs for o in run.outputs)


# ----------------------------------------------------------------------------
# Quantize with dequantize=True: a fused primitive of MLX's GPU backends (CPU traces decompose it)
# ----------------------------------------------------------------------------

IR_CASES = ("Quantize",)


@pytest.mark.parametrize("mode,bits,group", [("affine", 3, 32), ("affine", 4, 64), ("affine", 6, 128), ("affine", 8, 32),
                                             ("mxfp4", 4, 32), ("mxfp8", 8, 32), ("nvfp4", 4, 16)])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("opset", OPSETS)
def test_dequantize_ir(mode: str, bits: int, group: int, dtype: str, opset: int) -> None:
    w = mx.array(_rng.standard_normal((3, 2, 4 * group)).astype(np.float32)).astype(_DTYPES[dtype])
    packed = mx.quantize(w, group_size=group, bits=bits, mode=mode)
    out_dtype = None if mode == "affine" else _DTYPES[dtype]  # the mx* modes default to bfloat16
    expected = np.array(mx.dequantize(*packed, group_size=group, bits=bits, mode=mode, dtype=out_dtype))
    arrays = [np.array(a) for a in packed]
    names = ["w_q", "scales", "biases"][:len(arrays)]
    tensors = {n: TensorInfo(n, a.shape, a.dtype.name) for n, a in zip(names, arrays)}
    tensors["w"] = TensorInfo("w", expected.shape, dtype)
    code = {"affine": 0, "mxfp4": 1, "mxfp8": 2, "nvfp4": 3}[mode]
    node = Node(0, "Quantize", names, ["w"], [group, bits, code, True])
    graph = Graph([tensors[n] for n in names], [TensorInfo("out", expected.shape, dtype)], [node], {}, tensors,
                  output_sources={"out": "w"})
    got = OnnxRunner(lower(graph, opset).to_proto().SerializeToString())(*arrays)[0]
    # float16: scale * code + bias rounds twice here, once in MLX's kernel (1 ulp apart, 0.002 at |w| < 4).
    tol = (1e-3, 2e-3) if dtype == "float16" else (0, 0)
    np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32), rtol=tol[0], atol=tol[1])
