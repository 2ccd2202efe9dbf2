"""Parity of the nn translations (ops/nn.py): convolution, pooling views and the fused mx.fast ops."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlxport.capture import capture, to_mx, to_numpy
from mlxport.exporters.onnx import DEFAULT_OPSET, lower
from mlxport.graph import SymExpr
from mlxport.runners import OnnxRunner
from mlxport.validate import compare

from .cases import BASE_TOL, OPSETS, OpCase, params, run_case, single_node_graph

FLOATS = ("float32", "float16")


def _module(m: nn.Module) -> nn.Module:
    mx.random.seed(0)
    mx.eval(m.parameters())
    return m


def _max_window(x: mx.array, shape: Sequence[int], strides: Sequence[int], axes: Sequence[int]) -> mx.array:
    return mx.max(mx.as_strided(x, shape, strides), axis=tuple(axes))


_CONST_W = mx.array(np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32))

CASES = [
    # Convolution: weight as an input (Transpose/Slice nodes) and as a module constant (folded).
    OpCase("Convolution", lambda x, w: mx.conv1d(x, w, stride=2, padding=1), [((2, 9, 4), (6, 3, 4))], FLOATS, id="1d"),
    OpCase("Convolution", _module(nn.Conv2d(3, 4, 3, stride=2, padding=1)), [((2, 8, 8, 3),)], FLOATS, id="2d_module"),
    OpCase("Convolution", _module(nn.Conv2d(3, 4, 3, stride=2, padding=1)), [((2, 8, 8, 3),)],
           dynamic={"x": {0: "batch"}}, id="2d_dyn_batch"),
    OpCase("Convolution", _module(nn.Conv2d(3, 5, 3, padding=1)), [((2, 6, 7, 3),)],
           dynamic={"x": {0: "batch", 1: "height", 2: "width"}}, id="2d_dyn_spatial"),
    OpCase("Convolution", _module(nn.Conv2d(3, 4, 3)), [((0, 6, 6, 3),)], id="zero_batch"),
    OpCase("Convolution", lambda x, w: mx.conv2d(x, w, stride=(1, 2), padding=(2, 1), dilation=2, groups=2),
           [((1, 9, 9, 4), (6, 3, 3, 2))], FLOATS, id="groups_dilation"),
    OpCase("Convolution", _module(nn.Conv2d(4, 4, 3, padding=1, groups=4)), [((2, 7, 7, 4),)], FLOATS, id="depthwise"),
    OpCase("Convolution", lambda x, w: mx.conv3d(x, w, stride=(1, 2, 1), padding=1),
           [((1, 5, 6, 7, 2), (3, 2, 3, 2, 2))], FLOATS, id="3d"),
    OpCase("Convolution", lambda x, w: mx.conv_general(x, w, padding=([1], [2]), kernel_dilation=2, flip=True),
           [((1, 8, 3), (4, 3, 3))], FLOATS, id="flip_asym_1d"),
    OpCase("Convolution", lambda x: mx.conv_general(x, _CONST_W.astype(x.dtype), stride=(2, 1),
                                                    padding=([0, 2], [1, 0]), flip=True),
           [((2, 7, 6, 3),)], FLOATS, id="flip_asym_2d_const"),
    # Transposed convolutions trace to input_dilation > 1 with flip=True.
    OpCase("Convolution", _module(nn.ConvTranspose1d(4, 6, 3, stride=2, output_padding=1)), [((2, 8, 4),)], FLOATS,
           id="transpose1d"),
    OpCase("Convolution", _module(nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1)), [((2, 5, 6, 3),)], FLOATS,
           id="transpose2d"),
    OpCase("Convolution", _module(nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, dilation=2)), [((2, 5, 6, 3),)],
           dynamic={"x": {0: "batch", 1: "height"}}, id="transpose2d_dyn"),
    OpCase("Convolution", lambda x, w: mx.conv_transpose2d(x, w, stride=2, groups=2), [((1, 4, 5, 4), (6, 3, 3, 2))],
           FLOATS, id="transpose_groups"),
    OpCase("Convolution", lambda x: mx.conv_transpose2d(x, _CONST_W.astype(x.dtype), stride=(1, 2), padding=1,
                                                        groups=2), [((1, 4, 5, 6),)], FLOATS, id="transpose_groups_const"),
    OpCase("Convolution", _module(nn.ConvTranspose3d(2, 3, 2, stride=2)), [((1, 3, 4, 3, 2),)], id="transpose3d"),
    OpCase("Convolution", lambda x, w: mx.conv_general(x, w, stride=2, padding=([5], [6]), input_dilation=3,
                                                       kernel_dilation=2), [((2, 8, 4), (6, 3, 4))],
           id="input_dilation_stride_pad"),
    # Pooling windows (AsStrided + Reduce) become MaxPool / AveragePool.
    OpCase("AsStrided", nn.MaxPool2d(3, 2), [((2, 9, 9, 3),)], FLOATS, id="maxpool2d"),
    OpCase("AsStrided", nn.MaxPool2d(3, 2), [((2, 9, 9, 3),)], dynamic={"x": {0: "batch"}}, id="maxpool2d_dyn"),
    OpCase("AsStrided", nn.AvgPool2d((3, 2), (2, 1)), [((2, 9, 8, 3),)], FLOATS, id="avgpool2d"),
    OpCase("AsStrided", nn.MaxPool1d(3, 1), [((2, 8, 3),)], FLOATS, id="maxpool1d"),
    OpCase("AsStrided", nn.AvgPool1d(3, 2), [((2, 9, 3),)], FLOATS, dynamic={"x": {0: "batch"}}, id="avgpool1d"),
    OpCase("AsStrided", nn.MaxPool3d(2, 1), [((1, 4, 5, 3, 2),)], id="maxpool3d"),
    # MLX pads explicitly (-inf for max, 0 for average); the pad folds into the pool's pads.
    OpCase("AsStrided", nn.MaxPool2d(3, 2, padding=1), [((2, 9, 8, 3),)], FLOATS, dynamic={"x": {0: "batch"}},
           id="maxpool2d_pad"),
    OpCase("AsStrided", nn.AvgPool2d(3, 2, padding=(1, 0)), [((2, 9, 8, 3),)], FLOATS, id="avgpool2d_pad"),
    OpCase("AsStrided", nn.MaxPool1d(2, 1, padding=1), [((2, 7, 3),)], id="maxpool1d_pad"),
    OpCase("AsStrided", lambda x: _max_window(mx.pad(x, [(0, 0), (1, 1), (0, 0)]), (2, 5, 3, 3), (33, 6, 3, 1), [2]),
           [((2, 9, 3),)], id="zero_pad_max"),
    OpCase("AsStrided", lambda x: _max_window(x, (2, 4, 3, 3), (27, 3, 6, 1), [2]), [((2, 9, 3),)], FLOATS,
           id="dilated_window"),
    # General strided views: Gather with computed indices (int32 has no ONNX MaxPool).
    OpCase("AsStrided", nn.MaxPool2d(2, 1), [((2, 5, 5, 3),)], ("int32",), id="maxpool_int"),
    OpCase("AsStrided", nn.MaxPool1d(3, 2), [((2, 9, 3),)], ("int32",), dynamic={"x": {0: "batch"}}, id="int_dyn"),
    OpCase("AsStrided", lambda x: mx.as_strided(x, (3, 4), (2, 1), 1), [((4, 5),)], FLOATS + ("int32",), id="view"),
    OpCase("AsStrided", lambda x: mx.as_strided(x, (2, 3, 2), (0, -2, 3), 7), [((12,),)], ("float32",), id="neg_stride"),
    OpCase("AsStrided", lambda x: mx.as_strided(x, (3, 0, 2), (2, 1, 1)), [((6,),)], ("float32",), id="zero_size"),
    OpCase("AsStrided", lambda x: mx.as_strided(x, (), (), 5), [((6,),)], ("float32",), id="scalar"),
    OpCase("AsStrided", lambda x: mx.as_strided(x, (40, 50, 40), (1, 40, 0)), [((2000,),)], id="large_view"),
]

# Fused mx.fast primitives: a Linux CPU trace decomposes them, so they are tested on IR nodes.
IR_CASES = {"RMSNorm", "LayerNorm", "RoPE", "ScaledDotProductAttention"}


@pytest.mark.parametrize("case,shape_index,dtype,opset", params(CASES))
def test_parity(case: OpCase, shape_index: int, dtype: str, opset: int) -> None:
    run_case(case, shape_index, dtype, opset)


# ----------------------------------------------------------------------------
# Graph structure
# ----------------------------------------------------------------------------


def _op_types(fn: Callable, *shapes: tuple[int, ...], opset: int = DEFAULT_OPSET, **kw: Any) -> list[str]:
    graph, _, _ = capture(fn, tuple(mx.zeros(s) for s in shapes), **kw)
    return [n.op_type for n in lower(graph, opset).proto.graph.node]


def test_conv_stack_has_one_transpose_at_each_end() -> None:
    stack = _module(nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.Conv2d(8, 4, 3, stride=2, bias=False),
                                  nn.ConvTranspose2d(4, 2, 3, stride=2, bias=False)))
    ops = _op_types(stack, (2, 12, 12, 3), dynamic_axes={"x": {0: "batch"}})
    assert ops == ["Transpose", "Conv", "Conv", "ConvTranspose", "Transpose"], ops


def test_constant_weights_are_folded() -> None:
    ops = _op_types(_module(nn.ConvTranspose2d(3, 4, 3, stride=2)), (1, 5, 5, 3), opset=17)
    assert ops.count("Transpose") == 2 and "Slice" not in ops and "Reshape" not in ops, ops


@pytest.mark.parametrize("pool,shape,onnx_op", [(nn.MaxPool2d(3, 2), (2, 9, 9, 3), "MaxPool"),
                                                (nn.AvgPool2d(3, 2), (2, 9, 9, 3), "AveragePool"),
                                                (nn.MaxPool1d(2, 1), (2, 9, 3), "MaxPool")])
def test_pooling_lowers_to_pool_op(pool: nn.Module, shape: tuple[int, ...], onnx_op: str) -> None:
    ops = _op_types(pool, shape, dynamic_axes={"x": {0: "batch"}})
    assert onnx_op in ops and "Gather" not in ops, ops


def test_conv_then_pool_cancels_transposes() -> None:
    net = _module(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.MaxPool2d(3, 2)))
    assert _op_types(net, (1, 9, 9, 3))[:3] == ["Transpose", "Conv", "MaxPool"]


def test_general_view_uses_gather() -> None:
    assert _op_types(lambda x: mx.as_strided(x, (3, 4), (2, 1), 1), (4, 5)) == ["Reshape", "Gather"]


# ----------------------------------------------------------------------------
# Fused primitives, built as IR nodes with the arguments their state() gives
# ----------------------------------------------------------------------------

BATCH, SEQ = SymExpr.symbol("batch"), SymExpr.symbol("seq")
Feed = dict[str, np.ndarray]


def _ir_run(primitive: str, arguments: list[Any], feeds: Feed | list[Feed], expected: np.ndarray | list[np.ndarray],
            constants: dict[str, np.ndarray], order: Sequence[str], opset: int, *,
            dims: dict[str, dict[int, SymExpr]] | None = None, broadcast: dict[str, tuple[Any, ...]] | None = None,
            tol: tuple[float, float] | None = None) -> list[str]:
    """Lower one IR node (inputs named in ``order``), run ONNX Runtime on each feed and compare.

    ``dims`` gives symbolic axes per tensor ("out" is the node's output), so one graph serves
    every feed; ``broadcast`` inserts an MLX Broadcast node to that (symbolic) shape in front
    of an input, as mx.fast does for attention masks.
    """
    feeds = feeds if isinstance(feeds, list) else [feeds]
    expected = expected if isinstance(expected, list) else [expected]
    graph = single_node_graph(primitive, arguments, feeds[0], expected[0], constants, order, dims=dims,
                              broadcast=broadcast)
    model = lower(graph, opset)
    runner = OnnxRunner(model.to_proto().SerializeToString())
    for feed, want in zip(feeds, expected):
        rtol, atol = tol or BASE_TOL[want.dtype.name]
        check = compare("y", want, runner(**feed)[0], rtol, atol)
        assert check.shape_ok and check.ok, check.line()
    return [n.op_type for n in model.proto.graph.node]


def _rand(rng: np.random.Generator, shape: Sequence[int], dtype: str) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32).astype(dtype)


def _np(a: mx.array) -> np.ndarray:
    mx.eval(a)
    return np.array(to_numpy(a))


ir_params = pytest.mark.parametrize("dtype,opset", [(d, o) for d in FLOATS for o in OPSETS])


@ir_params
@pytest.mark.parametrize("shape,with_weight", [((2, 3, 16), True), ((5, 8), False), ((0, 4), True)])
def test_rms_norm(dtype: str, opset: int, shape: tuple[int, ...], with_weight: bool) -> None:
    rng = np.random.default_rng(0)
    x = _rand(rng, shape, dtype)
    w = _rand(rng, shape[-1:], dtype) if with_weight else np.array(1, dtype)
    ref = _np(mx.fast.rms_norm(to_mx(x), to_mx(w) if with_weight else None, 1e-5))
    ops = _ir_run("RMSNorm", [1e-5], {"x": x}, ref, {"w": w}, ["x", "w"], opset)
    assert ("RMSNormalization" in ops) == (opset >= 23)


@ir_params
@pytest.mark.parametrize("shape,affine", [((2, 3, 16), (True, True)), ((5, 8), (False, False)), ((4, 6), (True, False))])
def test_layer_norm(dtype: str, opset: int, shape: tuple[int, ...], affine: tuple[bool, bool]) -> None:
    rng = np.random.default_rng(1)
    x = _rand(rng, shape, dtype)
    w = _rand(rng, shape[-1:], dtype) if affine[0] else np.array(1, dtype)
    b = _rand(rng, shape[-1:], dtype) if affine[1] else np.array(0, dtype)
    ref = _np(mx.fast.layer_norm(to_mx(x), to_mx(w) if affine[0] else None, to_mx(b) if affine[1] else None, 1e-5))
    # float16: MLX rounds the normalized value before the affine step; one half ulp of |y| ~ 4 is 2e-3.
    tol = (2e-3, 2e-3) if dtype == "float16" else None
    ops = _ir_run("LayerNorm", [1e-5], {"x": x}, ref, {"w": w, "b": b}, ["x", "w", "b"], opset, tol=tol)
    assert ops == ["LayerNormalization"]


@pytest.mark.parametrize("opset", OPSETS)
def test_norms_dynamic(opset: int) -> None:
    rng = np.random.default_rng(6)
    w, b = _rand(rng, (16,), "float32"), _rand(rng, (16,), "float32")
    xs = [_rand(rng, shape, "float32") for shape in ((2, 3, 16), (3, 5, 16))]
    dims = {"x": {0: BATCH, 1: SEQ}, "out": {0: BATCH, 1: SEQ}}
    refs = [_np(mx.fast.rms_norm(to_mx(x), to_mx(w), 1e-6)) for x in xs]
    _ir_run("RMSNorm", [1e-6], [{"x": x} for x in xs], refs, {"w": w}, ["x", "w"], opset, dims=dims)
    refs = [_np(mx.fast.layer_norm(to_mx(x), to_mx(w), to_mx(b), 1e-6)) for x in xs]
    _ir_run("LayerNorm", [1e-6], [{"x": x} for x in xs], refs, {"w": w, "b": b}, ["x", "w", "b"], opset, dims=dims)


ROPE = [  # shape, dims, traditional, base, scale, offset, freqs, forward
    ((2, 3, 5, 8), 8, False, 10000.0, 1.0, 3, False, True),
    ((2, 3, 5, 8), 8, True, 10000.0, 1.0, 0, False, True),
    ((2, 4, 8), 4, False, 500.0, 0.5, 7, False, True),
    ((1, 2, 6, 12), 8, True, 10000.0, 1.0, 2, True, True),
    ((2, 2, 3, 4, 8), 6, False, 10000.0, 2.0, 1, False, True),
    ((3, 2, 5, 8), 8, False, 10000.0, 1.0, [0, 4, 9], False, True),
    ((2, 5, 6), 6, True, 10000.0, 1.0, [3, 1], False, True),
    ((2, 3, 5, 8), 4, True, 10000.0, 1.0, 5, False, False),
    ((2, 3, 5, 8), 8, False, 10000.0, 1.0, [2], False, False),
]


def _rope_ref(x: np.ndarray, dims: int, traditional: bool, base: float | None, scale: float, offset: np.ndarray,
              freqs: np.ndarray | None, forward: bool) -> np.ndarray:
    def rope(a: mx.array) -> mx.array:
        return mx.fast.rope(a, dims, traditional=traditional, base=base, scale=scale, offset=to_mx(offset),
                            freqs=None if freqs is None else to_mx(freqs))

    if forward:
        return _np(rope(to_mx(x)))
    # forward=False is the inverse rotation (RoPE's VJP): the transpose of the forward one.
    return _np(mx.vjp(rope, [mx.zeros(x.shape, dtype=to_mx(x).dtype)], [to_mx(x)])[1][0])


@ir_params
@pytest.mark.parametrize("spec", ROPE, ids=[f"rope{i}" for i in range(len(ROPE))])
def test_rope(dtype: str, opset: int, spec: tuple) -> None:
    shape, dims, traditional, base, scale, offset, with_freqs, forward = spec
    rng = np.random.default_rng(2)
    x = _rand(rng, shape, dtype)
    off = np.array(offset, np.int32)
    freqs = (10000.0 ** (np.arange(dims // 2, dtype=np.float32) / (dims // 2))).astype(np.float32)
    ref = _rope_ref(x, dims, traditional, None if with_freqs else base, scale, off, freqs if with_freqs else None,
                    forward)
    inputs = {"x": x, "offset": off}
    if with_freqs:
        inputs["freqs"] = freqs
    ops = _ir_run("RoPE", [dims, traditional, 1.0 if with_freqs else base, scale, forward], inputs, ref, {},
                  list(inputs), opset)
    assert ("RotaryEmbedding" in ops) == (opset >= 23)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("traditional,vector", [(False, False), (True, True)])
def test_rope_dynamic(opset: int, traditional: bool, vector: bool) -> None:
    rng = np.random.default_rng(3)
    feeds, refs = [], []
    for batch, seq in ((2, 4), (3, 7)):
        x = _rand(rng, (batch, 2, seq, 8), "float32")
        off = np.arange(batch, dtype=np.int32) + 1 if vector else np.array(2, np.int32)
        feeds.append({"x": x, "offset": off})
        refs.append(_rope_ref(x, 6, traditional, 10000.0, 1.0, off, None, True))
    dims = {"x": {0: BATCH, 2: SEQ}, "out": {0: BATCH, 2: SEQ}, "offset": {0: BATCH} if vector else {}}
    _ir_run("RoPE", [6, traditional, 10000.0, 1.0, True], feeds, refs, {}, ["x", "offset"], opset, dims=dims)


SDPA = [  # id, q heads, kv heads, q len, kv len, mask, sinks
    ("mha", 4, 4, 5, 5, None, False),
    ("gqa_causal", 4, 2, 6, 6, "causal", False),
    ("causal_cross", 2, 1, 3, 7, "causal", False),
    ("causal_decode", 4, 2, 1, 7, "causal", False),
    ("bool_mask", 4, 2, 5, 6, "bool", False),
    ("float_mask", 2, 2, 4, 6, "float", False),
    ("head_mask_gqa", 4, 2, 3, 5, "float_heads", False),
    ("sinks_gqa", 4, 2, 4, 4, "causal", True),
    ("sinks_mask", 2, 2, 3, 5, "float", True),
]


def _sdpa_case(rng: np.random.Generator, dtype: str, spec: tuple, batch: int = 2, q_len: int | None = None,
               k_len: int | None = None) -> dict[str, np.ndarray]:
    _, hq, hkv, lq, lk, mask_kind, with_sinks = spec
    lq, lk = q_len or lq, k_len or lk
    feed = {"q": _rand(rng, (batch, hq, lq, 8), dtype), "k": _rand(rng, (batch, hkv, lk, 8), dtype),
            "v": _rand(rng, (batch, hkv, lk, 8), dtype)}
    if mask_kind == "bool":
        # Every query sees at least one key (fully masked rows differ across runtimes).
        feed["mask"] = (rng.random((batch, 1, lq, lk)) < 0.6) | (np.arange(lk)[None, :] == np.arange(lq)[:, None])
    elif mask_kind == "float":
        feed["mask"] = _rand(rng, (lq, lk), dtype)
    elif mask_kind == "float_heads":
        feed["mask"] = _rand(rng, (1, hq, lq, lk), dtype)
    if with_sinks:
        feed["sinks"] = _rand(rng, (hq,), dtype)
    return feed


def _sdpa_ref(feed: dict[str, np.ndarray], scale: float, causal: bool) -> np.ndarray:
    mask = "causal" if causal else (to_mx(feed["mask"]) if "mask" in feed else None)
    sinks = to_mx(feed["sinks"]) if "sinks" in feed else None
    return _np(mx.fast.scaled_dot_product_attention(to_mx(feed["q"]), to_mx(feed["k"]), to_mx(feed["v"]),
                                                    scale=scale, mask=mask, sinks=sinks))


def _mask_target(feed: dict[str, np.ndarray]) -> tuple[int, ...]:
    return (*feed["q"].shape[:3], feed["k"].shape[2])


@ir_params
@pytest.mark.parametrize("spec", SDPA, ids=[s[0] for s in SDPA])
def test_sdpa(dtype: str, opset: int, spec: tuple) -> None:
    feed = _sdpa_case(np.random.default_rng(4), dtype, spec)
    scale, causal = 8 ** -0.5, spec[5] == "causal"
    broadcast = {"mask": _mask_target(feed)} if "mask" in feed else {}
    args = [scale, causal, "sinks" in feed, False, False]
    # float16: the scores are rounded to float16 before the softmax, and one ulp of a score
    # (~0.004 at |s| ~ 4) moves a probability by ~0.4%; runtimes round them differently.
    tol = (5e-3, 5e-3) if dtype == "float16" else None
    ops = _ir_run("ScaledDotProductAttention", args, feed, _sdpa_ref(feed, scale, causal), {}, list(feed), opset,
                  broadcast=broadcast, tol=tol)
    assert ("Attention" in ops) == (opset >= 23 and "sinks" not in feed)
    # The mask's broadcast to (B, Nq, qL, kL) is looked through, not materialized.
    assert "Expand" not in ops or "sinks" in feed or spec[5] == "float_heads", ops
    if spec[0] == "causal_decode":
        assert not {"Where", "Range"} & set(ops), ops


def sdpa_dynamic_case(spec: tuple) -> tuple[list[dict[str, np.ndarray]], bool, dict, dict]:
    """Feeds at two (batch, seq) sizes, causality, and the dynamic dims/broadcasts of an SDPA node."""
    rng = np.random.default_rng(7)
    self_attn = spec[3] == spec[4]
    feeds = [_sdpa_case(rng, "float32", spec, b, s, s if self_attn else s + 2) for b, s in ((2, 4), (3, 6))]
    kv_len = SEQ if self_attn else SymExpr.make({("seq",): 1, (): 2})
    dims = {"q": {0: BATCH, 2: SEQ}, "k": {0: BATCH, 2: kv_len}, "v": {0: BATCH, 2: kv_len}, "out": {0: BATCH, 2: SEQ}}
    broadcast = {}
    if "mask" in feeds[0]:
        rank = feeds[0]["mask"].ndim
        dims["mask"] = {rank - 2: SEQ, rank - 1: kv_len}
        if rank == 4 and feeds[0]["mask"].shape[0] != 1:
            dims["mask"][0] = BATCH
        broadcast["mask"] = (BATCH, spec[1], SEQ, kv_len)
    return feeds, spec[5] == "causal", dims, broadcast


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("spec", [SDPA[1], SDPA[4], SDPA[6], SDPA[7]], ids=lambda s: s[0])
def test_sdpa_dynamic(opset: int, spec: tuple) -> None:
    feeds, causal, dims, broadcast = sdpa_dynamic_case(spec)
    ops = _ir_run("ScaledDotProductAttention", [0.3, causal, "sinks" in feeds[0], False, False], feeds,
                  [_sdpa_ref(f, 0.3, causal) for f in feeds], {}, list(feeds[0]), opset, dims=dims, broadcast=broadcast)
    if causal and opset < 23:
        assert "Range" in ops, ops


def test_sdpa_logsumexp_is_refused() -> None:
    from mlxport.errors import UnsupportedArgumentError

    feed = _sdpa_case(np.random.default_rng(5), "float32", SDPA[0])
    with pytest.raises(UnsupportedArgumentError, match=r"\[ScaledDotProductAttention\] output_logsumexp"):
        _ir_run("ScaledDotProductAttention", [0.3, False, False, True, False], feed, feed["q"], {}, list(feed),
                DEFAULT_OPSET)
