"""Parity of the reduction, scan and sort translations (ops/reduce.py)."""

from __future__ import annotations

from fractions import Fraction

import mlx.core as mx
import numpy as np
import pytest

from mlxport.capture import capture
from mlxport.exporters.onnx import lower
from mlxport.graph import DynamicAxis, Graph, Node, SymExpr, TensorInfo
from mlxport.runners import OnnxRunner

from .cases import OPSETS, OpCase, default_inputs, params, run_case

FLOATS = ("float32", "float16")
NUMERIC = FLOATS + ("int32",)
SHAPES_3D = [((2, 3, 4),)]


# -- input makers -------------------------------------------------------------


def _with_nans(rng, shapes, dtype):
    """Normal values with NaN and +-inf sprinkled in (some rows all NaN or all -inf)."""
    x = default_inputs(rng, shapes, dtype)[0]
    flat = x.reshape(-1, x.shape[-1])
    flat[0, 1] = flat[1, 0] = np.nan
    flat[2, :] = -np.inf
    flat[3, 2] = np.inf
    flat[4, :] = np.nan
    flat[5, 0], flat[5, -1] = np.inf, np.nan
    return [x]


def _with_infs(rng, shapes, dtype):
    """As _with_nans, every NaN made +inf."""
    x = _with_nans(rng, shapes, dtype)[0]
    x[np.isnan(x)] = np.inf
    return [x]


def _ties(rng, shapes, dtype):
    """Few distinct values, so equal elements (and equal extremes) are common."""
    return [rng.integers(-2, 3, size=s).astype(dtype) for s in shapes]


def _distinct(rng, shapes, dtype):
    """All values distinct (a permutation), so every partition position is well defined."""
    return [(rng.permutation(int(np.prod(s))).reshape(s) - 5).astype(dtype) for s in shapes]


def _big_ints(rng, shapes, dtype):
    """int32 values whose sums and products overflow: MLX wraps around."""
    return [rng.choice(np.array([2**30, 2**20 + 1, -(2**29), 3], np.int64), size=s).astype(dtype) for s in shapes]


def _near_one(rng, shapes, dtype):
    """Factors near 1, so long products stay finite in float16."""
    return [(1 + 0.1 * rng.standard_normal(s)).astype(dtype) for s in shapes]


def _sorted_and_values(rng, shapes, dtype):
    """A sorted 1-D sequence with repeats, and values hitting, between and beyond it."""
    seq = np.sort(rng.integers(-4, 5, size=shapes[0])).astype(dtype)
    values = rng.integers(-6, 7, size=shapes[1]).astype(np.float32) / (1 if dtype.startswith("int") else 2)
    return [seq, values.astype(dtype)]


def _sorted_with_nans(rng, shapes, dtype):
    seq = np.sort(np.concatenate([rng.standard_normal(shapes[0][0] - 2), [np.nan, np.nan]])).astype(dtype)
    values = rng.standard_normal(shapes[1]).astype(dtype)
    values.reshape(-1)[:4] = [np.nan, np.inf, -np.inf, seq[1]]
    return [seq, values]


def _partition_view(fn, kth):
    """What every valid partition agrees on: the sorted values before and after kth, and kth itself.

    MLX may return any arrangement with x[..., :kth] <= x[..., kth] <= x[..., kth+1:], and
    ours (a full sort) is one; so compare the sides as sorted multisets.
    """
    def view(x):
        p = fn(x, kth)
        return mx.sort(p[..., :kth], axis=-1), p[..., kth:kth + 1], mx.sort(p[..., kth + 1:], axis=-1)
    return view


# -- the table -----------------------------------------------------------------
# Zero-size inputs appear only on axes that are not reduced: MLX 0.32 (Linux CPU) now and then
# hangs evaluating a reduction over a zero-length axis; test_empty_axis_reductions checks
# those against numpy instead.

CASES = [
    # Reduce: sum/prod/min/max over one or several axes; MLX keeps the reduced dims (the
    # Squeeze after it comes from mx.sum itself).
    OpCase("Reduce", lambda x: mx.sum(x, axis=1), [((2, 3, 4),), ((0, 3),)], NUMERIC, id="sum"),
    OpCase("Reduce", lambda x: mx.sum(x, axis=(0, 2), keepdims=True), SHAPES_3D, NUMERIC, id="sum-axes"),
    OpCase("Reduce", lambda x: mx.sum(x, axis=-1), [((2, 3, 4),), ((5,),)], ("bool", "uint8", "int8"), id="sum-promote"),
    OpCase("Reduce", lambda x: mx.sum(x), SHAPES_3D, ("int32",), make=_big_ints, id="sum-wrap"),
    OpCase("Reduce", lambda x: mx.prod(x, axis=-1), [((2, 3, 4),), ((0, 2),)], NUMERIC, id="prod"),
    # Products past 2^31 wrap in MLX; ours are exact in int64 up to 2^63 (ORT saturates beyond).
    OpCase("Reduce", lambda x: mx.prod(x, axis=(0, 2)), [((2, 3, 1),)], ("int32",), make=_big_ints, id="prod-wrap"),
    OpCase("Reduce", lambda x: mx.prod(x, axis=0), [((40, 3),)], ("float16",), make=_near_one, id="prod-long"),
    OpCase("Reduce", lambda x: mx.max(x, axis=1), SHAPES_3D, NUMERIC + ("bool", "uint32", "int16"), id="max"),
    OpCase("Reduce", lambda x: mx.min(x, axis=(-1, 0)), SHAPES_3D, NUMERIC + ("bool", "uint32"), id="min"),
    OpCase("Reduce", lambda x: (mx.max(x, axis=-1), mx.min(x, axis=-1)), [((6, 4),)], FLOATS, make=_with_nans,
           xfail={d: "ORT's ReduceMax/Min skip some NaNs (onnxruntime#10514); MLX returns NaN" for d in FLOATS},
           id="minmax-nan"),
    OpCase("Reduce", lambda x: (mx.max(x, axis=-1), mx.min(x, axis=-1)), [((6, 4),)], FLOATS, make=_with_infs,
           id="minmax-inf"),
    OpCase("Reduce", lambda x: mx.all(x, axis=1), [((2, 3, 4),), ((0, 2),)], ("bool", "float32", "int32"), id="all"),
    OpCase("Reduce", lambda x: mx.any(x, axis=(0, 2)), [((2, 3, 4),), ((2, 0, 3),)], ("bool", "float32"), id="any"),
    OpCase("Reduce", lambda x: mx.any(x, axis=-1), [((6, 4),)], ("float32",), make=_with_nans, id="any-nan"),
    OpCase("Reduce", lambda x: mx.mean(x, axis=-1), SHAPES_3D, FLOATS, id="mean"),
    OpCase("Reduce", lambda x: mx.var(x, axis=0), SHAPES_3D, FLOATS, id="var"),
    OpCase("Reduce", lambda x: mx.max(x, axis=0), [((3, 5),)], FLOATS, dynamic={"x": {0: "batch"}}, id="dyn-axis"),
    OpCase("Reduce", lambda x: mx.sum(x, axis=-1), [((3, 5),)], NUMERIC, dynamic={"x": {0: "batch"}}, id="dyn-batch"),
    # ArgReduce: uint32 output, first of tied extremes, first NaN wins.
    OpCase("ArgReduce", lambda x: mx.argmax(x, axis=1), SHAPES_3D, NUMERIC + ("bool", "uint32"), id="argmax"),
    OpCase("ArgReduce", lambda x: mx.argmin(x, axis=-1, keepdims=True), SHAPES_3D, NUMERIC + ("uint8",), id="argmin"),
    OpCase("ArgReduce", lambda x: (mx.argmax(x), mx.argmin(x)), [((4, 5),), ((7,),)], NUMERIC, make=_ties, id="ties"),
    OpCase("ArgReduce", lambda x: (mx.argmax(x, axis=-1), mx.argmin(x, axis=-1)), [((6, 4),)], FLOATS,
           make=_with_nans, id="nan"),
    OpCase("ArgReduce", lambda x: mx.argmax(x, axis=-1), [((3, 5),)], FLOATS, dynamic={"x": {0: "batch"}},
           id="dynamic"),
    # Scan: CumSum, or the prefix-doubling steps; reverse and exclusive variants.
    OpCase("Scan", lambda x: mx.cumsum(x, axis=1), [((2, 5, 3),), ((0, 3),), ((3, 0),)], NUMERIC, id="cumsum"),
    OpCase("Scan", lambda x: (mx.cumsum(x, axis=-1, reverse=True), mx.cumsum(x, axis=0, inclusive=False)),
           SHAPES_3D, NUMERIC, id="cumsum-flags"),
    OpCase("Scan", lambda x: mx.cumsum(x, axis=-1), SHAPES_3D, ("bool", "uint8", "uint32"), id="cumsum-dtypes"),
    OpCase("Scan", lambda x: mx.cumsum(x), [((2, 3),), ((),)], ("float32",), id="cumsum-flat"),
    OpCase("Scan", lambda x: (mx.cummax(x, axis=1), mx.cummin(x, axis=-1)), [((2, 7, 3),), ((3, 0),)],
           NUMERIC + ("bool", "uint32"), id="cummax"),
    OpCase("Scan", lambda x: (mx.cummax(x, axis=0, reverse=True, inclusive=False),
                              mx.cummin(x, axis=-1, inclusive=False), mx.cummin(x, axis=1, reverse=True)),
           SHAPES_3D, NUMERIC + ("bool",), id="cummax-flags"),
    OpCase("Scan", lambda x: (mx.cummax(x, axis=-1), mx.cummin(x, axis=-1, reverse=True)), [((6, 4),)], FLOATS,
           make=_with_nans, id="cummax-nan",
           xfail={"float16": "MLX 0.32's float16 cummax/cummin turn the element after a NaN into 0"}),
    OpCase("Scan", lambda x: mx.cummax(x, axis=0), [((37, 2),)], ("float32", "int32"), id="cummax-long"),
    OpCase("Scan", lambda x: (mx.cumprod(x, axis=1), mx.cumprod(x, axis=-1, reverse=True, inclusive=False)),
           SHAPES_3D, NUMERIC + ("bool",), id="cumprod"),
    # 37 float16 products regrouped: each of MLX's sequential steps and ours rounds to 2^-11.
    OpCase("Scan", lambda x: mx.cumprod(x, axis=0), [((37, 2),)], FLOATS, make=_near_one,
           tol={"float16": (5e-3, 1e-3)}, id="cumprod-long"),
    OpCase("Scan", lambda x: mx.cumprod(x, axis=-1), [((2, 6),)], ("int32",), make=_big_ints, id="cumprod-wrap"),
    OpCase("Scan", lambda x: (mx.cumsum(x, axis=1), mx.cummax(x, axis=1, reverse=True)), [((2, 5),)], NUMERIC,
           dynamic={"x": {0: "batch"}}, id="dyn-batch"),
    OpCase("Scan", lambda x: (mx.cumsum(x, axis=1, reverse=True), mx.cummax(x, axis=1),
                              mx.cummin(x, axis=1, reverse=True, inclusive=False), mx.cumprod(x, axis=1)),
           [((2, 5, 3),)], NUMERIC, dynamic={"x": {1: "seq"}}, id="dyn-axis"),
    # Sort / ArgSort: one ascending TopK; stable, NaN last.
    OpCase("Sort", lambda x: (mx.sort(x, axis=1), mx.sort(x, axis=-1)), [((2, 3, 4),), ((3, 0),)],
           NUMERIC + ("bool", "uint32"), id="axes"),
    OpCase("Sort", lambda x: mx.sort(x), [((6, 4),)], FLOATS, make=_with_nans, id="nan"),
    OpCase("Sort", lambda x: mx.sort(x, axis=None), [((3, 4),)], ("float32",), dynamic={"x": {0: "batch"}},
           id="dynamic"),
    OpCase("ArgSort", lambda x: (mx.argsort(x, axis=0), mx.argsort(x, axis=-1)), [((2, 3, 4),), ((3, 0),)],
           NUMERIC + ("bool", "uint32"), id="axes"),
    OpCase("ArgSort", lambda x: mx.argsort(x, axis=-1), [((3, 40),)], NUMERIC, make=_ties, id="stable"),
    OpCase("ArgSort", lambda x: mx.argsort(x), [((6, 4),)], FLOATS, make=_with_nans, id="nan"),
    OpCase("ArgSort", lambda x: mx.argsort(x, axis=0), [((3, 4),)], NUMERIC, dynamic={"x": {0: "batch"}},
           id="dynamic"),
    # Partition / ArgPartition: only what every valid partition agrees on is compared.
    OpCase("Partition", _partition_view(lambda x, k: mx.partition(x, k, axis=-1), 2), [((3, 6),), ((2, 3, 5),)],
           NUMERIC, id="kth2"),
    OpCase("Partition", _partition_view(lambda x, k: mx.partition(x, k - 6, axis=-1), 5), [((3, 6),)], NUMERIC,
           make=_ties, id="neg-kth-ties"),
    OpCase("Partition", lambda x: mx.sort(mx.partition(x, 1, axis=0)[:2], axis=0), [((5, 3),)], ("float32",),
           dynamic={"x": {1: "batch"}}, id="dynamic"),
    OpCase("ArgPartition", _partition_view(lambda x, k: mx.argpartition(x, k, axis=-1), 3), [((3, 7),)],
           NUMERIC, make=_distinct, id="kth3"),
    # The mixture-of-experts pattern: the top-k expert indices, as a set.
    OpCase("ArgPartition", lambda x: mx.sort(mx.argpartition(-x, kth=1, axis=-1)[..., :2], axis=-1),
           [((4, 8),)], FLOATS, make=_distinct, dynamic={"x": {0: "batch"}}, id="moe-topk"),
    # Softmax (last axis only; other axes decompose in MLX) and LogSumExp.
    OpCase("Softmax", lambda x: mx.softmax(x, axis=-1), [((2, 3, 4),), ((5,),)], FLOATS, id="base"),
    OpCase("Softmax", lambda x: mx.softmax(x, axis=-1, precise=True), [((2, 3, 4),)], FLOATS, id="precise"),
    OpCase("Softmax", lambda x: mx.softmax(x * 30, axis=-1), [((6, 4),)], FLOATS, make=_with_nans, id="inf"),
    OpCase("Softmax", lambda x: mx.softmax(x, axis=-1), [((3, 7),)], ("float32",), dynamic={"x": {0: "batch"}},
           id="dynamic"),
    OpCase("LogSumExp", lambda x: mx.logsumexp(x, axis=-1), [((2, 3, 4),), ((5,),)], FLOATS, id="base"),
    OpCase("LogSumExp", lambda x: mx.logsumexp(x * 100, axis=-1, keepdims=True), [((6, 4),)], FLOATS,
           make=_with_nans, id="inf"),
    OpCase("LogSumExp", lambda x: mx.logsumexp(x, axis=-1), [((3, 7),)], ("float32",),
           dynamic={"x": {0: "batch", 1: "seq"}}, id="dynamic"),
    # SearchSorted: counts below (left) or not above (right); NaN ordered last like MLX.
    OpCase("SearchSorted", lambda a, v: (mx.searchsorted(a, v), mx.searchsorted(a, v, side="right")),
           [((9,), (3, 4)), ((9,), ()), ((0,), (3,)), ((5,), (0, 2))], NUMERIC, make=_sorted_and_values, id="base"),
    OpCase("SearchSorted", lambda a, v: (mx.searchsorted(a, v), mx.searchsorted(a, v, side="right")),
           [((8,), (2, 5))], FLOATS, make=_sorted_with_nans, id="nan"),
    # The sequence is a constant here: the harness's second run would feed an unsorted one.
    OpCase("SearchSorted", lambda v: mx.searchsorted(mx.array([-1.0, 0.0, 0.0, 0.5, 2.0]), v, side="right"),
           [((4, 3),)], ("float32",), dynamic={"v": {0: "batch"}}, id="dynamic"),
]


@pytest.mark.parametrize("case,shape_index,dtype,opset", params(CASES))
def test_parity(case: OpCase, shape_index: int, dtype: str, opset: int) -> None:
    run_case(case, shape_index, dtype, opset)


# -- logcumsumexp: MLX 0.32 cannot export it ("Unable to get state for primitive CumLogAddExp"),
# so the Scan node is built by hand from its state (type 4 = LogAddExp) ---------------------


def _scan_graph(shape: tuple, dtype: str, axis: int, reverse: bool, inclusive: bool, dynamic: bool) -> Graph:
    dims = tuple(SymExpr.make({("batch",): Fraction(1)}) if dynamic and i == axis else d for i, d in enumerate(shape))
    x, y = TensorInfo("x", dims, dtype), TensorInfo("y", dims, dtype)
    graph = Graph([x], [y], [Node(0, "Scan", ["x"], ["y"], [4, axis, reverse, inclusive])], {}, {"x": x, "y": y},
                  output_sources={"y": "y"})
    if dynamic:
        graph.dynamic_axes = [DynamicAxis("batch", "x", axis, shape[axis])]
    return graph


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("axis,reverse,inclusive,dynamic", [
    (1, False, True, False), (1, True, False, False), (0, False, False, False), (1, True, True, True),
    (1, False, False, True)])
def test_logcumsumexp(opset: int, dtype: str, axis: int, reverse: bool, inclusive: bool, dynamic: bool) -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 6)) * 3).astype(dtype)
    x[0, 2] = -np.inf
    x[1, :] = -np.inf
    x[2, 3] = np.inf
    x[3, 1] = np.nan
    runner = OnnxRunner(lower(_scan_graph(x.shape, dtype, axis, reverse, inclusive, dynamic), opset)
                        .to_proto().SerializeToString())
    for feed in ([x, x[:, :5]] if dynamic else [x]):
        expected = np.array(mx.logcumsumexp(mx.array(feed), axis=axis, reverse=reverse, inclusive=inclusive))
        (got,) = runner(feed)
        rtol, atol = (1e-5, 1e-5) if dtype == "float32" else (1e-3, 1e-3)
        np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32), rtol=rtol, atol=atol)


# -- graph structure -----------------------------------------------------------


def _op_counts(fn, *shapes: tuple, dtype: str = "float32", opset: int = OPSETS[-1]) -> dict[str, int]:
    graph, _, _ = capture(fn, tuple(mx.zeros(s, dtype=getattr(mx, dtype)) for s in shapes))
    return lower(graph, opset).op_counts()


def test_scan_doubling_steps() -> None:
    # ceil(log2(9)) = 4 Max steps, each one Slice + Pad; no Cast for float32.
    counts = _op_counts(lambda x: mx.cummax(x, axis=-1), (2, 9))
    assert (counts.get("Max"), counts.get("Pad"), counts.get("Cast")) == (4, 4, None), counts


def test_float_reductions_add_no_casts() -> None:
    counts = _op_counts(lambda x: (mx.sum(x, axis=1), mx.max(x, axis=0), mx.softmax(x, axis=-1)), (3, 4),
                        dtype="float16")
    assert "Cast" not in counts, counts


def test_argmax_is_one_top_k() -> None:
    counts = _op_counts(lambda x: mx.argmax(x, axis=-1), (3, 50))
    assert counts.get("TopK") == 1 and "ArgMax" not in counts and "IsNaN" not in counts, counts


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("fn,reference", [
    pytest.param(lambda x: mx.sum(x, axis=1), lambda x: np.sum(x, axis=1), id="sum"),
    pytest.param(lambda x: mx.sum(x.astype(mx.int32), axis=(0, 1)),
                 lambda x: np.sum(x, axis=(0, 1), dtype=np.int32), id="sum-int"),
    pytest.param(lambda x: mx.prod(x, axis=-1), lambda x: np.prod(x, axis=-1), id="prod"),
    pytest.param(lambda x: mx.all(x, axis=1), lambda x: np.all(x, axis=1), id="all"),
    pytest.param(lambda x: mx.any(x > 0, axis=-1), lambda x: np.any(x > 0, axis=-1), id="any"),
])
def test_empty_axis_reductions(opset: int, fn, reference) -> None:
    # Reducing a zero-length axis gives the identity (0, 1, True, False). Checked against numpy:
    # evaluating these in MLX 0.32 on Linux CPU now and then hangs (capture does not evaluate).
    x = np.zeros((3, 0), np.float32)
    graph, _, _ = capture(fn, (mx.array(x),))
    assert "Reduce" in graph.primitive_counts()
    (got,) = OnnxRunner(lower(graph, opset).to_proto().SerializeToString())(x)
    expected = reference(x)
    assert got.dtype == expected.dtype and got.shape == expected.shape, (got.dtype, got.shape)
    np.testing.assert_array_equal(got, expected)
