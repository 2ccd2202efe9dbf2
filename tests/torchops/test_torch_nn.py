"""The fused mx.fast primitives through the torch target: single IR nodes (as tests/ops/test_nn.py builds
them for ONNX), run eagerly and as TorchScript, and a small mlx-lm llama exported to .pt and .pt2."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import mlx.core as mx
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch target needs PyTorch: pip install 'mlxport[torch]'")

import mlxport  # noqa: E402
from mlxport.capture import capture, to_mx  # noqa: E402
from mlxport.errors import UnsupportedArgumentError  # noqa: E402
from mlxport.exporters.torch import lower_torch  # noqa: E402
from mlxport.graph import SymExpr  # noqa: E402
from mlxport.dtypes import to_tensor  # noqa: E402
from mlxport.validate import compare  # noqa: E402
from tests.ops.cases import BASE_TOL, single_node_graph  # noqa: E402
from tests.ops.test_nn import (  # noqa: E402
    BATCH, FLOATS, ROPE, SDPA, SEQ, _mask_target, _np, _rand, _rope_ref, _sdpa_case, _sdpa_ref, sdpa_dynamic_case,
)

Feed = dict[str, np.ndarray]
# Scripting fx's empty root module warns harmlessly (save_torchscript filters the same message).
pytestmark = [pytest.mark.filterwarnings("ignore:The TorchScript type system doesn't support"),
              pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")]


def _torch_run(primitive: str, arguments: list[Any], feeds: Feed | list[Feed], expected: np.ndarray | list[np.ndarray],
               constants: dict[str, np.ndarray], order: Sequence[str], *,
               dims: dict[str, dict[int, SymExpr]] | None = None, broadcast: dict[str, tuple[Any, ...]] | None = None,
               tol: tuple[float, float] | None = None) -> Any:
    """Lower one IR node with lower_torch, run it eagerly and scripted on each feed and compare.

    Arguments as in tests/ops/test_nn.py's ``_ir_run``; returns the fx GraphModule.
    """
    feeds = feeds if isinstance(feeds, list) else [feeds]
    expected = expected if isinstance(expected, list) else [expected]
    graph = single_node_graph(primitive, arguments, feeds[0], expected[0], constants, order, dims=dims,
                              broadcast=broadcast)
    module = lower_torch(graph)
    scripted = torch.jit.script(module)
    for feed, want in zip(feeds, expected):
        rtol, atol = tol or BASE_TOL[want.dtype.name]
        args = [to_tensor(feed[n]) for n in feed]
        with torch.no_grad():
            for run in (module, scripted):
                check = compare("y", want, run(*args)[0].numpy(), rtol, atol)
                assert check.shape_ok and check.ok, check.line()
    return module


def _calls(module: Any) -> list[str]:
    module.graph.eliminate_dead_code()  # lower_torch keeps the unused Broadcast of a looked-through mask
    return [getattr(n.target, "__name__", str(n.target)) for n in module.graph.nodes if n.op in ("call_function", "call_method")]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,with_weight", [((2, 3, 16), True), ((5, 8), False), ((0, 4), True)])
def test_rms_norm(dtype: str, shape: tuple[int, ...], with_weight: bool) -> None:
    rng = np.random.default_rng(0)
    x = _rand(rng, shape, dtype)
    w = _rand(rng, shape[-1:], dtype) if with_weight else np.array(1, dtype)
    ref = _np(mx.fast.rms_norm(to_mx(x), to_mx(w) if with_weight else None, 1e-5))
    _torch_run("RMSNorm", [1e-5], {"x": x}, ref, {"w": w}, ["x", "w"])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,affine", [((2, 3, 16), (True, True)), ((5, 8), (False, False)), ((4, 6), (True, False))])
def test_layer_norm(dtype: str, shape: tuple[int, ...], affine: tuple[bool, bool]) -> None:
    rng = np.random.default_rng(1)
    x = _rand(rng, shape, dtype)
    w = _rand(rng, shape[-1:], dtype) if affine[0] else np.array(1, dtype)
    b = _rand(rng, shape[-1:], dtype) if affine[1] else np.array(0, dtype)
    ref = _np(mx.fast.layer_norm(to_mx(x), to_mx(w) if affine[0] else None, to_mx(b) if affine[1] else None, 1e-5))
    _torch_run("LayerNorm", [1e-5], {"x": x}, ref, {"w": w, "b": b}, ["x", "w", "b"])


def test_norms_dynamic() -> None:
    rng = np.random.default_rng(6)
    w, b = _rand(rng, (16,), "float32"), _rand(rng, (16,), "float32")
    xs = [_rand(rng, shape, "float32") for shape in ((2, 3, 16), (3, 5, 16))]
    dims = {"x": {0: BATCH, 1: SEQ}, "out": {0: BATCH, 1: SEQ}}
    refs = [_np(mx.fast.rms_norm(to_mx(x), to_mx(w), 1e-6)) for x in xs]
    _torch_run("RMSNorm", [1e-6], [{"x": x} for x in xs], refs, {"w": w}, ["x", "w"], dims=dims)
    refs = [_np(mx.fast.layer_norm(to_mx(x), to_mx(w), to_mx(b), 1e-6)) for x in xs]
    _torch_run("LayerNorm", [1e-6], [{"x": x} for x in xs], refs, {"w": w, "b": b}, ["x", "w", "b"], dims=dims)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("spec", ROPE, ids=[f"rope{i}" for i in range(len(ROPE))])
def test_rope(dtype: str, spec: tuple) -> None:
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
    _torch_run("RoPE", [dims, traditional, 1.0 if with_freqs else base, scale, forward], inputs, ref, {}, list(inputs))


@pytest.mark.parametrize("traditional,vector", [(False, False), (True, True)])
def test_rope_dynamic(traditional: bool, vector: bool) -> None:
    rng = np.random.default_rng(3)
    feeds, refs = [], []
    for batch, seq in ((2, 4), (3, 7)):
        x = _rand(rng, (batch, 2, seq, 8), "float32")
        off = np.arange(batch, dtype=np.int32) + 1 if vector else np.array(2, np.int32)
        feeds.append({"x": x, "offset": off})
        refs.append(_rope_ref(x, 6, traditional, 10000.0, 1.0, off, None, True))
    dims = {"x": {0: BATCH, 2: SEQ}, "out": {0: BATCH, 2: SEQ}, "offset": {0: BATCH} if vector else {}}
    _torch_run("RoPE", [6, traditional, 10000.0, 1.0, True], feeds, refs, {}, ["x", "offset"], dims=dims)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("spec", SDPA, ids=[s[0] for s in SDPA])
def test_sdpa(dtype: str, spec: tuple) -> None:
    feed = _sdpa_case(np.random.default_rng(4), dtype, spec)
    scale, causal = 8 ** -0.5, spec[5] == "causal"
    broadcast = {"mask": _mask_target(feed)} if "mask" in feed else {}
    # float16: the scores are rounded to float16 before the softmax (as in tests/ops/test_nn.py).
    tol = (5e-3, 5e-3) if dtype == "float16" else None
    module = _torch_run("ScaledDotProductAttention", [scale, causal, "sinks" in feed, False, False], feed,
                        _sdpa_ref(feed, scale, causal), {}, list(feed), broadcast=broadcast, tol=tol)
    calls = _calls(module)
    # The mask's broadcast to (B, Nq, qL, kL) is looked through unless heads must split it.
    assert "expand" not in calls or "sinks" in feed or spec[5] == "float_heads", calls
    if spec[0] == "causal_decode":
        assert "masked_fill" not in calls and "arange" not in calls, calls


@pytest.mark.parametrize("spec", [SDPA[1], SDPA[4], SDPA[6], SDPA[7]], ids=lambda s: s[0])
def test_sdpa_dynamic(spec: tuple) -> None:
    feeds, causal, dims, broadcast = sdpa_dynamic_case(spec)
    module = _torch_run("ScaledDotProductAttention", [0.3, causal, "sinks" in feeds[0], False, False], feeds,
                        [_sdpa_ref(f, 0.3, causal) for f in feeds], {}, list(feeds[0]), dims=dims, broadcast=broadcast)
    if causal:
        assert "arange" in _calls(module)


def test_sdpa_logsumexp_is_refused() -> None:
    feed = _sdpa_case(np.random.default_rng(5), "float32", SDPA[0])
    with pytest.raises(UnsupportedArgumentError, match=r"\[ScaledDotProductAttention\] output_logsumexp"):
        _torch_run("ScaledDotProductAttention", [0.3, False, False, True, False], feed, feed["q"], {}, list(feed))


def _llama() -> Any:
    from mlx_lm.models import llama

    args = llama.ModelArgs(model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=100,
                           rope_theta=10000.0, tie_word_embeddings=False)
    mx.random.seed(0)
    model = llama.Model(args)
    mx.eval(model.parameters())
    return model


def test_llama_lowers_to_fused_ops() -> None:
    pytest.importorskip("mlx_lm")
    model = _llama()
    graph, _, _ = capture(model, (mx.zeros((1, 6), dtype=mx.int32),), dynamic_axes={"inputs": {0: "batch", 1: "seq"}})
    calls = _calls(lower_torch(graph))
    # 5 RMSNorms (one rsqrt each), 2 attentions (one softmax each); RoPE angles are shared by q and k.
    assert calls.count("rsqrt") == 5 and calls.count("softmax") == 2 and calls.count("cos") == 1, calls


@pytest.mark.parametrize("suffix,backend", [(".pt", "torchscript"), (".pt2", "torch.export")])
def test_llama_round_trip_with_dynamic_batch_and_seq(tmp_path: Path, suffix: str, backend: str) -> None:
    pytest.importorskip("mlx_lm")
    model = _llama()
    path = tmp_path / f"llama{suffix}"
    report = mlxport.export(model, (mx.zeros((1, 6), dtype=mx.int32),), path,
                            dynamic_axes={"inputs": {0: "batch", 1: "seq"}})
    assert report.ok and len(report.runs) >= 2
    runner = mlxport.load(path)
    assert runner.backend == backend
    tokens = np.random.default_rng(1).integers(0, 100, (3, 9)).astype(np.int32)
    np.testing.assert_allclose(runner(tokens)[0], np.array(model(mx.array(tokens))), rtol=1e-4, atol=1e-4)
