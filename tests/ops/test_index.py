"""Parity of the indexing translations (ops/index.py)."""

from __future__ import annotations

from typing import Callable, Sequence

import mlx.core as mx
import numpy as np
import pytest

from mlxport.capture import capture
from mlxport.exporters.onnx import lower
from mlxport.graph import Node, TensorInfo

from .cases import OPSETS, OpCase, default_inputs, params, run_case
from .test_shape import ir_graph, ir_run

FLOATS = ("float32", "float16")
ALL = FLOATS + ("int32",)
BATCH = {"x": {0: "batch"}}


def indices(bounds: Sequence[int | None], dtypes: Sequence[str] = (), negative: bool = True) -> Callable:
    """An input maker: data inputs in the case dtype; input i is an index array into [-b, b) when bounds[i] is
    set ([0, b) for unsigned dtypes or ``negative=False``)."""

    def make(rng: np.random.Generator, shapes, dtype: str) -> list[np.ndarray]:
        out = []
        for i, (shape, bound) in enumerate(zip(shapes, bounds)):
            if bound is None:
                out.extend(default_inputs(rng, [shape], dtype))
                continue
            idx_dtype = dtypes[i] if i < len(dtypes) and dtypes[i] else "int32"
            lo = -bound if negative and not idx_dtype.startswith("u") else 0
            out.append(rng.integers(lo, bound, size=shape).astype(idx_dtype))
        return out

    return make


def distinct(bound: int) -> Callable:
    """Input maker for (x, idx, u): idx holds distinct values (plain scatters are undefined on duplicates)."""

    def make(rng: np.random.Generator, shapes, dtype: str) -> list[np.ndarray]:
        x, u = default_inputs(rng, [shapes[0], shapes[2]], dtype)
        n = int(np.prod(shapes[1]))
        return [x, rng.permutation(bound)[:n].reshape(shapes[1]).astype(np.int32), u]

    return make


def masked(rng: np.random.Generator, shapes, dtype: str) -> list[np.ndarray]:
    x, src = default_inputs(rng, [shapes[0], shapes[2]], dtype)
    return [x, rng.random(shapes[1]) < 0.5, src]


def _set(x: mx.array, idx, value) -> mx.array:
    x[idx] = value
    return x


def _set_mask(x: mx.array, mask: mx.array, src: mx.array) -> mx.array:
    x[mask] = src
    return x


DUPES = mx.array([1, 3, 1, 1])

CASES = [
    # Gather: one index array (ONNX Gather), several (GatherND), scalar, empty, broadcast, negative.
    OpCase("Gather", lambda x, i: x[i], [((4, 5), (2, 3)), ((4,), ()), ((4, 5), (0,))], ALL, make=indices([None, 4])),
    OpCase("Gather", lambda x, i, j: x[i, j], [((4, 5), (2, 1), (3,)), ((4, 5, 2), (3,), (3,))], ALL,
           make=indices([None, 4, 5]), id="two"),
    OpCase("Gather", lambda x, i: x[:, i], [((3, 5), (2,)), ((3, 5, 2), (2, 2))], ALL, make=indices([None, 5]),
           id="second_axis"),
    OpCase("Gather", lambda x, i: mx.take(x, i, axis=-1), [((3, 2, 5), (2, 2)), ((3, 5), ())], ALL,
           make=indices([None, 5]), id="take"),
    OpCase("Gather", lambda x, i: mx.take(x, i), [((3, 5), (4,))], ("float32",), make=indices([None, 15]),
           id="take_flat"),
    OpCase("Gather", lambda x, i, j: x[i, ..., j], [((4, 3, 5), (2,), (2,))], ("float32",),
           make=indices([None, 4, 5]), id="ellipsis"),
    OpCase("Gather", lambda x, i: x[i], [((4, 5), (3,))], ("float32",), make=indices([None, 4], [None, "uint32"]),
           id="uint32_index"),
    OpCase("Gather", lambda x, i: x[i], [((4, 5), (3,))], ("float32",), make=indices([None, 4], [None, "int64"]),
           id="int64_index"),
    OpCase("Gather", lambda x, i: x[i], [((4, 5), (3,))], ("float32",), make=indices([None, 4]),
           dynamic={"i": {0: "n"}}, id="dyn_index"),
    OpCase("Gather", lambda x, i: x[:, i], [((2, 5), (3,))], ("float32",), make=indices([None, 5]), dynamic=BATCH,
           id="dyn"),
    OpCase("Gather", lambda x, i, j: x[i, j], [((4, 5), (3,), (3,))], ("float32",), make=indices([None, 4, 5]),
           dynamic={"i": {0: "n"}, "j": {0: "n"}}, id="dyn_two"),
    OpCase("GatherAxis", lambda x, i: mx.take_along_axis(x, i, axis=1), [((3, 5), (3, 2)), ((3, 5), (1, 4))], ALL,
           make=indices([None, 5])),
    OpCase("GatherAxis", lambda x, i: mx.take_along_axis(x, i, axis=-1), [((2, 3), (2, 1))], ("float32",),
           make=indices([None, 3]), dynamic={"x": {0: "batch"}, "i": {0: "batch"}}, id="dyn"),
    # Scatter: add accumulates duplicates; max/min before opset 18 go through the duplicate combiner.
    OpCase("Scatter", lambda x, i, u: x.at[i].add(u), [((4, 3), (5,), (5, 3)), ((4,), (6,), ())], ALL,
           make=indices([None, 4, None]), id="add"),
    OpCase("Scatter", lambda x, u: x.at[DUPES].add(u), [((4, 3), (4, 3))], ALL, id="add_dupes"),
    OpCase("Scatter", lambda x, u: x.at[DUPES].multiply(u), [((4, 3), (4, 3))], ALL, id="mul_dupes"),
    OpCase("Scatter", lambda x, u: x.at[DUPES].maximum(u), [((4, 3), (4, 3))], ALL, id="max_dupes"),
    OpCase("Scatter", lambda x, u: x.at[DUPES].minimum(u), [((4, 3), (4, 3))], ("float32", "int32", "uint32"),
           id="min_dupes"),
    OpCase("Scatter", lambda x, i, u: _set(x, i, u), [((5, 3), (2,), (2, 3)), ((5, 3), (0,), (0, 3))], ALL,
           make=distinct(5), id="set"),
    OpCase("Scatter", lambda x, i, u: x.at[:, i].add(u), [((2, 5, 3), (4,), (2, 4, 3))], ALL,
           make=indices([None, 5, None]), id="second_axis"),
    OpCase("Scatter", lambda x, i, j, u: x.at[i, j].add(u), [((4, 5), (3,), (3,), (3,))], ("float32",),
           make=indices([None, 4, 5, None]), id="two"),
    OpCase("Scatter", lambda x, i, u: x.at[i].add(u), [((4, 3), (5,), (5, 3))], ("float32",),
           make=indices([None, 4, None]), dynamic={"i": {0: "n"}, "u": {0: "n"}}, id="dyn"),
    OpCase("ScatterAxis", lambda x, i, u: mx.put_along_axis(x, i, u, axis=1), [((3, 5), (3, 1), (3, 1))], ALL,
           make=distinct(3), id="set"),
    # The vjp of take_along_axis is a summing ScatterAxis (duplicates accumulate).
    OpCase("ScatterAxis", lambda x, i, u: mx.vjp(lambda y: mx.take_along_axis(y, i, axis=1), [x], [u])[1][0],
           [((3, 5), (3, 4), (3, 4))], ALL, make=indices([None, 5, None]), id="add"),
    OpCase("ScatterAxis", lambda x, i, u: mx.put_along_axis(x, i, u, axis=-1), [((2, 3), (2, 1), ())], ("float32",),
           make=indices([None, 3, None]), dynamic={"x": {0: "batch"}, "i": {0: "batch"}}, id="dyn"),
    # SliceUpdate: one contiguous axis -> Concat; several or strided -> ScatterND; reductions.
    OpCase("SliceUpdate", lambda x, u: _set(x, slice(1, 3), u), [((4, 3), (2, 3)), ((4, 3), ())], ALL),
    OpCase("SliceUpdate", lambda x, u: _set(x, (slice(None), slice(2, None)), u), [((2, 4), (2, 2))], ALL,
           id="tail"),
    OpCase("SliceUpdate", lambda x, u: _set(x, (slice(None, None, 2), slice(1, 5, 2)), u), [((4, 6), (2, 2))], ALL,
           id="strided"),
    OpCase("SliceUpdate", lambda x, u: _set(x, (slice(None, None, -1), 1), u), [((3, 4), (3,))], ALL,
           id="reversed"),
    OpCase("SliceUpdate", lambda x, u: x.at[1:3].add(u), [((4, 3), (2, 3))], ALL, id="add"),
    OpCase("SliceUpdate", lambda x, u: x.at[1:3, ::2].multiply(u), [((4, 3), (2, 2))], ALL, id="mul"),
    OpCase("SliceUpdate", lambda x, u: x.at[:, 1:].maximum(u), [((4, 3), (4, 2))], ALL, id="max"),
    OpCase("SliceUpdate", lambda x, u: x.at[::2, 1:].minimum(u), [((4, 3), (2, 2))], ALL, id="min"),
    OpCase("SliceUpdate", lambda x: mx.pad(x, [(1, 2), (0, 3)], mode="edge"), [((2, 3),)], ALL, id="pad_edge"),
    OpCase("SliceUpdate", lambda x, u: _set(x, (slice(None), slice(1, 3)), u), [((2, 4), (2, 2))], ("float32",),
           dynamic={"x": {0: "batch"}, "u": {0: "batch"}}, id="dyn"),
    OpCase("SliceUpdate", lambda x, u: _set(x, (slice(None), slice(None, None, 2)), u), [((2, 4), (2, 2))],
           ("float32",), dynamic={"x": {0: "batch"}, "u": {0: "batch"}}, id="dyn_strided"),
    OpCase("SliceUpdate", lambda x, u: _set(x, slice(x.shape[0] - 2, None), u), [((4, 3), (2, 3))], ("float32",),
           dynamic=BATCH, id="dyn_start"),
    OpCase("SliceUpdate", lambda x: _set(x, slice(1, None), x[:-1] * 2), [((4, 3),)], ("float32",), dynamic=BATCH,
           id="dyn_axis"),
    # Dynamic slices: the start is a runtime array (0-d or 1-d).
    OpCase("DynamicSlice", lambda x, s: mx.slice(x, s, axes=(0,), slice_size=(2, 3)), [((5, 3), (1,))], ALL,
           make=indices([None, 4], negative=False)),
    OpCase("DynamicSlice", lambda x, s: mx.slice(x, s, axes=(2, 1), slice_size=(2, 2, 2)), [((2, 3, 4), (2,))],
           ALL, make=indices([None, 2], [None, "uint32"]), id="two"),
    OpCase("DynamicSlice", lambda x, s: mx.slice(x, s, axes=(0,), slice_size=(2, 2)), [((5, 3), (1,))], ("int32",),
           make=indices([None, 4], negative=False), id="short_window"),
    OpCase("DynamicSlice", lambda x, s: mx.slice(x, s, axes=(1,), slice_size=(1, 2)), [((3, 4), ())],
           ("float32",), make=indices([None, 3], [None, "int64"], negative=False), id="scalar_start"),
    OpCase("DynamicSliceUpdate", lambda x, u, s: mx.slice_update(x, u, s, axes=(0,)), [((5, 3), (2, 3), (1,))],
           ALL, make=indices([None, None, 4], negative=False)),
    OpCase("DynamicSliceUpdate", lambda x, u, s: mx.slice_update(x, u, s, axes=(2, 1)),
           [((2, 3, 4), (2, 1, 2), (2,))], ALL, make=indices([None, None, 2], negative=False), id="two"),
    OpCase("DynamicSliceUpdate", lambda x, u, s: mx.slice_update(x, u, s, axes=(0,)), [((5, 3), (2, 2), (1,))],
           ("float32",), make=indices([None, None, 4], negative=False), id="short_window"),
    OpCase("DynamicSliceUpdate", lambda x, u, s: mx.slice_update(x, u, s, axes=(1,)), [((2, 5), (2, 2), ())],
           ("float32",), make=indices([None, None, 4], negative=False),
           dynamic={"x": {0: "batch"}, "u": {0: "batch"}}, id="dyn"),
    OpCase("DynamicSliceUpdate", lambda x, u, s: mx.slice_update(x, u, s, axes=(1, 0)),
           [((3, 5), (3, 2), (2,))], ("float32",), make=indices([None, None, 1], negative=False),
           dynamic={"x": {0: "batch"}, "u": {0: "batch"}}, id="dyn_two"),
    OpCase("MaskedScatter", _set_mask, [((2, 3), (2, 3), (6,)), ((2, 3, 4), (2, 3), (6, 4)), ((0, 3), (0, 3), (2,))],
           ALL, make=masked),
]


@pytest.mark.parametrize("case,shape_index,dtype,opset", params(CASES))
def test_parity(case: OpCase, shape_index: int, dtype: str, opset: int) -> None:
    run_case(case, shape_index, dtype, opset)


def _op_counts(fn: Callable, *arrays: mx.array, opset: int | None = None) -> dict[str, int]:
    graph, _, _ = capture(fn, arrays)
    return lower(graph, opset).op_counts()


def test_lean_graphs() -> None:
    x = mx.zeros((4, 6))
    # A one-axis slice update is Slice + Concat, with no index tensor.
    assert _op_counts(lambda x, u: _set(x, (slice(None), slice(2, 4)), u), x, mx.ones((4, 2))) == \
        {"Slice": 2, "Concat": 1}
    # Scatter on the first axis: Unsqueeze of the int64 indices + ScatterND; MLX's update Reshape is skipped.
    counts = _op_counts(lambda x, i, u: x.at[i].add(u), x, mx.array([0, 2], dtype=mx.int64), mx.ones((2, 6)))
    assert counts == {"Unsqueeze": 1, "ScatterND": 1}, counts
    # The duplicate combiner appears only below opset 18.
    assert "ReduceMax" not in _op_counts(lambda x, u: x.at[DUPES].maximum(u), x, mx.ones((4, 6)))
    assert "ReduceMax" in _op_counts(lambda x, u: x.at[DUPES].maximum(u), x, mx.ones((4, 6)), opset=17)


@pytest.mark.parametrize("opset", OPSETS)
def test_gather_short_slices(opset: int) -> None:
    # mx indexing always takes full slices on non-indexed axes; the primitive allows shorter ones.
    x, idx = TensorInfo("x", (4, 5), "float32"), TensorInfo("idx", (3,), "int32")
    out = TensorInfo("out", (3, 1, 2), "float32")
    graph = ir_graph([x, idx], Node(0, "Gather", ["x", "idx"], ["out"], [[0], [1, 2]]), [out])
    data = np.arange(20, dtype=np.float32).reshape(4, 5)
    (got,) = ir_run(graph, {"x": data, "idx": np.array([3, -1, 0], np.int32)}, opset)
    np.testing.assert_array_equal(got, data[[3, -1, 0]][:, None, :2])
