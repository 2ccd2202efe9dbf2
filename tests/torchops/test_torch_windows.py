"""Strided views and pooling in the torch lowering (targets/torch/windows.py): AsStrided as slices of its input,
and a Reduce over a window view as torch max/avg pooling. Each case is checked against MLX, and the
lowering is checked to take the intended path (no as_strided, no rank-6 tensor where a pool does)."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch target needs PyTorch: pip install 'mlxport[torch]'")

from mlxport.capture import capture, to_mx  # noqa: E402
from mlxport.exporters.torch import lower_torch  # noqa: E402
from mlxport.graph import SymExpr  # noqa: E402
from mlxport.dtypes import to_tensor  # noqa: E402
from mlxport.targets.torch.windows import MAX_WINDOW_SLICES, window_plan  # noqa: E402
from tests.ops.cases import OpCase, default_inputs, run_case_torch  # noqa: E402

BATCH = {"x": {0: "batch"}}


def _calls(module: Any) -> list[str]:
    return [getattr(n.target, "__name__", str(n.target)) for n in module.graph.nodes
            if n.op in ("call_function", "call_method")]


def _lowered(fn: Any, shape: tuple[int, ...], dtype: str = "float32", dynamic: dict | None = None) -> Any:
    x = default_inputs(np.random.default_rng(0), [shape], dtype)[0]
    graph, _, _ = capture(fn, (to_mx(x),), dynamic_axes=dynamic)
    return lower_torch(graph)


def _max_rank(module: Any, *inputs: np.ndarray) -> int:
    """The largest rank of any tensor the module computes on these inputs."""
    import torch.fx as fx

    ranks = [0]

    class Ranks(fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            out = super().run_node(n)
            if isinstance(out, torch.Tensor) and n.op != "output":
                ranks.append(out.dim())
            return out

    with torch.no_grad():
        Ranks(module).run(*[to_tensor(a) for a in inputs])
    return max(ranks)


# -- window_plan ---------------------------------------------------------------------------------------


def test_plan_reads_a_pooling_view_as_windows_of_the_padded_input() -> None:
    # MaxPool2d(3, stride 2) over a padded [2, 18, 18, 8] input: [N, oH, oW, kH, kW, C].
    plan = window_plan(2 * 18 * 18 * 8, [2, 8, 8, 3, 3, 8], [2592, 288, 16, 144, 8, 1], 0)
    assert plan is not None
    assert [(a.size, a.stride) for a in plan] == [(2, 2592), (18, 144), (18, 8), (8, 1)]
    assert [sorted(a.outs) for a in plan] == [[(0, 1)], [(1, 2), (3, 1)], [(2, 2), (4, 1)], [(5, 1)]]


def test_plan_keeps_a_dynamic_batch_whole() -> None:
    batch = SymExpr.symbol("batch")
    length = SymExpr.make({("batch",): 2592})
    plan = window_plan(length, [batch, 8, 8, 3, 3, 8], [2592, 288, 16, 144, 8, 1], 0)
    assert plan is not None and plan[0].size == batch and plan[0].outs == ((0, 1),)


def test_plan_refuses_what_it_cannot_slice() -> None:
    assert window_plan(12, [2, 3, 2], [0, -2, 3], 7) is None  # negative stride: torch.take instead
    assert window_plan(6, [3, 0, 2], [2, 1, 1], 0) is None  # zero-size view: torch.as_strided
    # A dynamic axis read with a step cannot be bounded statically.
    batch = SymExpr.symbol("batch")
    assert window_plan(SymExpr.make({("batch",): 8}), [batch, 4], [16, 1], 0) is None
    # Every position its own slice: more than MAX_WINDOW_SLICES.
    n = MAX_WINDOW_SLICES + 1
    assert window_plan(4 * n, [n, n], [1, 1], 0) is None


# -- AsStrided as slices, against MLX ------------------------------------------------------------------

VIEW_CASES = [
    # Overlapping windows that no Reduce collapses: slices stacked along the window axis.
    OpCase("AsStrided", lambda x: mx.as_strided(x, (4, 3), (2, 1), 1), [((12,),)], ("float32", "int32"),
           id="overlap"),
    OpCase("AsStrided", lambda x: mx.as_strided(x, (2, 3, 4, 2), (24, 4, 1, 12), 0) * 2, [((2, 2, 3, 4),)],
           ("float32", "float16"), id="regroup"),
    OpCase("AsStrided", lambda x: mx.as_strided(x, (3, 2, 5), (10, 0, 1), 5), [((4, 10),)], id="broadcast"),
    OpCase("AsStrided", lambda x: mx.as_strided(x, (2, 2, 3), (1, 4, 8), 3) + 1, [((30,),)], id="transposed"),
    OpCase("AsStrided", lambda x: mx.as_strided(x, (x.shape[0], 3, 2), (12, 2, 1), 0), [((2, 3, 4),)],
           dynamic=BATCH, id="dyn_windows"),
]


@pytest.mark.parametrize("case", VIEW_CASES, ids=lambda c: c.id)
def test_view_as_slices(case: OpCase) -> None:
    for dtype in case.dtypes:
        run_case_torch(case, 0, dtype)
    module = _lowered(case.fn, case.shapes[0][0], dynamic=case.dynamic)
    assert "as_strided" not in _calls(module) and "take" not in _calls(module)


def test_slices_equal_torch_as_strided_exactly() -> None:
    rng = np.random.default_rng(3)
    for shape, strides, offset in [((4, 3), (2, 1), 1), ((3, 3, 2), (6, 3, 1), 2), ((2, 4, 2, 3), (24, 6, 12, 1), 0),
                                   ((5, 2), (3, 7), 4)]:
        size = offset + sum((n - 1) * s for n, s in zip(shape, strides)) + 3  # the last element read, and a tail
        x = rng.standard_normal(size).astype(np.float32)
        module = _lowered(lambda a, s=shape, t=strides, o=offset: mx.as_strided(a, s, t, o), (size,))
        assert "as_strided" not in _calls(module)
        got = module(torch.from_numpy(x))[0]
        want = torch.as_strided(torch.from_numpy(x), shape, strides, offset)
        assert torch.equal(got, want), (shape, strides, offset)


# -- Reduce over windows as pooling -------------------------------------------------------------------


def _model(layer: nn.Module) -> nn.Module:
    mx.eval(layer.parameters())
    return layer


POOL_CASES = [
    (nn.MaxPool2d(3, 2, padding=1), (2, 9, 8, 3), "max_pool2d"),
    (nn.AvgPool2d(2, 2), (2, 8, 8, 4), "avg_pool2d"),  # windows that do not overlap: Reshape + Transpose
    (nn.AvgPool2d((3, 2), (2, 1)), (2, 9, 8, 3), "avg_pool2d"),
    (nn.MaxPool1d(3, 2), (2, 9, 3), "max_pool1d"),
    (nn.AvgPool1d(2, 1, padding=1), (2, 7, 3), "avg_pool1d"),
    (nn.MaxPool3d(2, 1), (1, 4, 5, 3, 2), "max_pool3d"),
    (lambda x: mx.min(mx.as_strided(x, (x.shape[0], 3, 2, 4), (32, 8, 4, 1), 0), axis=2),
     (2, 8, 4), "max_pool1d"),  # a min over windows: -max_pool(-x)
]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("fn,shape,pool", POOL_CASES, ids=[p for _, _, p in POOL_CASES])
def test_pooling(fn: Any, shape: tuple[int, ...], pool: str, dtype: str) -> None:
    fn = _model(fn) if isinstance(fn, nn.Module) else fn
    case = OpCase("Reduce", fn, [(shape,)], (dtype,), dynamic=BATCH)
    run_case_torch(case, 0, dtype)
    module = _lowered(fn, shape, dtype, dynamic=BATCH)
    calls = _calls(module)
    assert pool in calls and "as_strided" not in calls
    # Core ML takes tensors up to rank 5: the window view ([N, oH, oW, kH, kW, C]) is never built.
    x = default_inputs(np.random.default_rng(1), [shape], dtype)[0]
    assert _max_rank(module, x) <= 5


def test_pooling_of_ints_keeps_the_view() -> None:
    # torch has no integer pools: the windows are slices, the Reduce a torch.amax.
    case = OpCase("AsStrided", _model(nn.MaxPool2d(2, 1)), [((2, 5, 5, 3),)], ("int32",))
    run_case_torch(case, 0, "int32")
    calls = _calls(_lowered(case.fn, (2, 5, 5, 3), "int32"))
    assert "max_pool2d" not in calls and "amax" in calls and "as_strided" not in calls


def test_dilated_sum_keeps_the_view() -> None:
    # avg_pool has no dilation: a dilated sum over windows stays slices + torch.sum.
    fn = lambda x: mx.sum(mx.as_strided(x, (2, 3, 2, 4), (36, 3, 6, 1), 0), axis=2)  # noqa: E731
    case = OpCase("AsStrided", fn, [((2, 9, 4),)])
    run_case_torch(case, 0, "float32")
    calls = _calls(_lowered(fn, (2, 9, 4)))
    assert "avg_pool1d" not in calls and "sum" in calls
