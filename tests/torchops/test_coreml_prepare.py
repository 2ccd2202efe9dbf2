"""The rewrite of the torch lowering for Core ML (exporters/coreml_prepare.py), checked numerically with torch:
the rewritten program computes what the lowering computes, on inputs other than those it was built from."""

from __future__ import annotations

import operator
from typing import Any

import mlx.core as mx
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="Core ML export goes through the torch target: "
                                             "pip install 'mlxport[torch]'")
import torch.fx as fx  # noqa: E402

import mlxport  # noqa: E402
from mlxport.exporters.coreml_prepare import prepare_for_coreml, widened  # noqa: E402
from mlxport.exporters.torch import lower_torch  # noqa: E402
from mlxport.dtypes import to_tensor  # noqa: E402
from mlxport.validate import compare  # noqa: E402
from tests.models import zoo  # noqa: E402

_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


def _targets(gm: Any) -> list[str]:
    return [str(getattr(n.target, "__name__", n.target)) for n in gm.graph.nodes if n.op.startswith("call_")]


def _used_buffers(gm: Any) -> list[Any]:
    return [getattr(gm, n.target) for n in gm.graph.nodes if n.op == "get_attr"]


def _prepared(model: Any, example: tuple[mx.array, ...], dynamic: dict | None = None) -> tuple[Any, Any]:
    graph = mlxport.trace(model, example, dynamic_axes=dynamic).graph
    module = lower_torch(graph)
    return module, prepare_for_coreml(module, tuple(to_tensor(np.array(a)) for a in example))


def _same(a: Any, b: Any, tol: tuple[float, float] | None = None) -> None:
    """Equal outputs; with ``tol`` (rtol, atol) floats may differ by summation order."""
    a, b = (list(v) if isinstance(v, (list, tuple)) else [v] for v in (a, b))
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        if tol is None:
            assert torch.equal(x, y), (x - y).abs().max()
        else:
            check = compare("output", x.numpy(), y.numpy(), *tol)
            assert check.ok, check.line()


# A decoded weight is contiguous where the lowering multiplied a strided view: float32 summation order.
SUM_ORDER = (1e-5, 1e-6)


def test_narrow_becomes_slicing() -> None:
    class Halves(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            half = x.size(-1) // 2
            return torch.narrow(x, -1, 0, half) * torch.narrow(x, -1, half, half), x.narrow(0, 1, 1)

    gm = fx.symbolic_trace(Halves())
    x = torch.randn(3, 8)
    prepared = prepare_for_coreml(gm, (x,))
    assert "narrow" not in _targets(prepared) and "getitem" in _targets(prepared)
    for probe in (x, torch.randn(5, 12)):  # the slice ends follow the input's size
        _same(gm(probe), prepared(probe))
    assert "narrow" in _targets(gm)  # the lowering itself is left as it was


def test_quantized_model_is_dequantized_exactly() -> None:
    # 4-bit embedding (a packed table read at the tokens) and 4-bit linears (constant dequantization).
    model = zoo.quantize(zoo.build("llama_style"), 4)
    module, prepared = _prepared(model, (zoo.tokens(2, 4),), {"tokens": {0: "batch", 1: "seq"}})
    assert any(b.dtype in _UNSIGNED for b in _used_buffers(module))
    assert not any(b.dtype in _UNSIGNED for b in _used_buffers(prepared))
    assert not any(t.startswith("bitwise") for t in _targets(prepared))
    for probe in (zoo.tokens(2, 4, seed=3), zoo.tokens(3, 7, seed=4), zoo.tokens(1, 1, seed=5)):
        t = to_tensor(np.array(probe))
        with torch.no_grad():
            _same(module(t), prepared(t), SUM_ORDER)


@pytest.mark.slow
def test_quantized_experts_are_dequantized_exactly() -> None:
    # GatherQMM: the experts each token picks are unpacked at run time; the rewrite gathers decoded tables.
    model = zoo.quantize(zoo.mlx_lm_model("mixtral"), 4)
    module, prepared = _prepared(model, (zoo.tokens(2, 2),), {"inputs": {1: "seq"}})
    assert not any(t.startswith("bitwise") for t in _targets(prepared))
    t = to_tensor(np.array(zoo.tokens(2, 5, seed=1)))
    with torch.no_grad():
        _same(module(t), prepared(t), SUM_ORDER)


def test_a_mix_across_rows_is_not_tabulated() -> None:
    # A cumulative sum over positions depends on other rows' indices: only the row-wise decode before
    # it becomes a table, the cumsum stays a run-time op.
    class Decode(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("words", torch.arange(40, dtype=torch.int64).reshape(10, 4).to(torch.uint32))

        def forward(self, idx: Any) -> Any:
            codes = torch.bitwise_right_shift(self.words[idx].to(torch.int64), 1)
            return torch.cumsum(codes.to(torch.float32), 0)

    gm = fx.symbolic_trace(Decode())
    idx = torch.tensor([3, 1, 4, 1], dtype=torch.int32)
    prepared = prepare_for_coreml(gm, (idx,))
    assert "cumsum" in _targets(prepared) and not any(t.startswith("bitwise") for t in _targets(prepared))
    tables = [b for b in _used_buffers(prepared) if b.dtype == torch.float32]
    assert [tuple(t.shape) for t in tables] == [(10, 4)]
    probe = torch.tensor([9, 0, 2, 2], dtype=torch.int32)
    _same(gm(probe), prepared(probe))


def test_take_becomes_indexing() -> None:
    class Take(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return torch.take(x, torch.tensor([[5, 0], [2, 2]]))

    gm = fx.symbolic_trace(Take())
    x = torch.randn(2, 3)
    prepared = prepare_for_coreml(gm, (x,))
    assert "take" not in _targets(prepared)
    _same(gm(x), prepared(x))


def test_half_types_compute_in_float32() -> None:
    model = zoo.build("mlp", "float16")
    example = (zoo.floats((2, 784), "float16"),)
    module, prepared = _prepared(model, example)
    assert {b.dtype for b in _used_buffers(prepared)} == {torch.float32}
    probe = zoo.floats((2, 784), "float16", seed=4)
    with torch.no_grad():
        (got,) = prepared(*widened([to_tensor(np.array(probe))]))
    assert got.dtype == torch.float32
    (want,) = zoo.run_mlx(model, (probe,))
    check = compare("output", want.astype(np.float32), got.numpy(), 1e-2, 1e-2)  # MLX rounds to float16 per op
    assert check.ok, check.line()


def test_stable_sort_loses_its_flag_only() -> None:
    class Sort(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return operator.getitem(torch.sort(x, dim=1, stable=True), 1)

    gm = fx.symbolic_trace(Sort())
    x = torch.randn(3, 5)
    prepared = prepare_for_coreml(gm, (x,))
    (sort,) = [n for n in prepared.graph.nodes if n.target is torch.sort]
    assert "stable" not in sort.kwargs and sort.kwargs["dim"] == 1
    _same(gm(x), prepared(x))  # distinct values: the same order
