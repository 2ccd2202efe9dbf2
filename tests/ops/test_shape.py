"""Parity of the layout translations (ops/shape.py)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import onnxruntime as ort
import pytest

from mlxport.capture import capture
from mlxport.errors import UnsupportedArgumentError
from mlxport.exporters.onnx import lower
from mlxport.graph import DynamicAxis, Graph, Node, SymExpr, TensorInfo

from .cases import OPSETS, OpCase, params, run_case

FLOATS = ("float32", "float16")
ALL = FLOATS + ("int32",)
BATCH = {"x": {0: "batch"}}
CAST_DTYPES = ("float32", "float16", "int32", "uint32", "int64", "bool", "uint8")


def _cast_cases() -> list[OpCase]:
    cases = []
    for dst in CAST_DTYPES:
        srcs = tuple(d for d in CAST_DTYPES if d != dst)
        cases.append(OpCase("AsType", lambda x, d=dst: x.astype(getattr(mx, d if d != "bool" else "bool_")),
                            [((2, 5),), ((),), ((0, 3),)], srcs, id=f"to_{dst}"))
    return cases


CASES = [
    OpCase("Reshape", lambda x: x.reshape(3, 4), [((2, 6),), ((12,),)], ALL),
    OpCase("Reshape", lambda x: x.reshape(1, 1), [((),)], ALL, id="scalar"),
    OpCase("Reshape", lambda x: x.reshape(-1, 2), [((0, 4),)], ALL, id="zero"),
    OpCase("Reshape", lambda x: x.reshape(x.shape[0], 2, -1), [((2, 3, 4),)], ALL, dynamic=BATCH, id="dyn"),
    OpCase("Reshape", lambda x: x.reshape(-1), [((2, 3, 4),)], ("float32",), dynamic=BATCH, id="dyn_all"),
    OpCase("Reshape", lambda x: x.reshape(x.shape[0] * x.shape[1], -1), [((2, 3, 4),)], ("float32",),
           dynamic={"x": {0: "batch", 1: "seq"}}, id="dyn_two"),
    OpCase("Flatten", lambda x: mx.flatten(x, 1, 2), [((2, 3, 4),), ((2, 0, 4),)], ALL),
    OpCase("Flatten", lambda x: mx.flatten(x, 0, -2), [((2, 3, 4),)], ("float32",), dynamic=BATCH, id="dyn"),
    OpCase("Unflatten", lambda x: mx.unflatten(x, 1, (2, 3)), [((2, 6),), ((0, 6),)], ALL),
    OpCase("Unflatten", lambda x: mx.unflatten(x, -1, (2, 3)), [((2, 6),)], ("float32",), dynamic=BATCH, id="dyn"),
    OpCase("Unflatten", lambda x: mx.unflatten(x, 0, (-1, 2)), [((4, 3),)], ("float32",), dynamic=BATCH,
           id="dyn_axis"),
    OpCase("ExpandDims", lambda x: mx.expand_dims(x, (-1, 0)), [((2, 3),), ((),), ((0,),)], ALL),
    OpCase("Squeeze", lambda x: mx.squeeze(x, (0, -1)), [((1, 3, 1),), ((1, 0, 1),)], ALL),
    OpCase("Squeeze", lambda x: mx.squeeze(x, -1), [((2, 3, 1),)], ("float32",), dynamic=BATCH, id="dyn"),
    OpCase("Broadcast", lambda x: mx.broadcast_to(x, (2, 3, 4)), [((3, 1),), ((),), ((3, 4),), ((1, 4),)], ALL),
    OpCase("Broadcast", lambda x: mx.broadcast_to(x, (2, 0, 4)), [((1, 4),)], ALL, id="zero"),
    OpCase("Broadcast", lambda x: mx.broadcast_to(x[:, :1], x.shape), [((2, 3),)], ALL, dynamic=BATCH, id="dyn"),
    OpCase("Broadcast", lambda x: mx.broadcast_to(x[:1], x.shape), [((2, 3),)], ("float32",), dynamic=BATCH,
           id="dyn_axis"),
    OpCase("Transpose", lambda x: mx.transpose(x, (2, 0, 1)), [((2, 3, 4),), ((2, 0, 4),)], ALL),
    OpCase("Transpose", lambda x: x.T, [((2, 3),)], ("float32",), dynamic=BATCH, id="dyn"),
    *_cast_cases(),
    OpCase("Concatenate", lambda a, b: mx.concatenate([a, b], axis=-1), [((2, 3), (2, 4)), ((2, 0), (2, 1))], ALL),
    OpCase("Concatenate", lambda a, b: mx.concatenate([a, b, a], axis=0), [((1, 3), (2, 3)), ((0, 3), (1, 3))], ALL,
           id="three"),
    OpCase("Concatenate", lambda a, b: mx.concatenate([a, b], axis=1), [((2, 3), (2, 1))], ("float32",),
           dynamic={"a": {0: "batch"}, "b": {0: "batch"}}, id="dyn"),
    OpCase("Split", lambda x: mx.split(x, 3, axis=1), [((2, 6),), ((0, 3),)], ALL),
    OpCase("Split", lambda x: mx.split(x, [2, 3], axis=-1), [((2, 5),)], ALL, id="indices"),
    OpCase("Split", lambda x: mx.split(x, [1], axis=1), [((2, 3),)], ("float32",), dynamic=BATCH, id="dyn"),
    OpCase("Split", lambda x: mx.split(x, 2, axis=0), [((4, 3),)], ("float32",), dynamic=BATCH, id="dyn_axis"),
    OpCase("Slice", lambda x: x[1:3, ::2], [((4, 5),)], ALL),
    OpCase("Slice", lambda x: x[::-1], [((4, 2),), ((1, 2),)], ALL, id="reverse"),
    OpCase("Slice", lambda x: x[5:1:-2, -1:0:-3], [((7, 6),), ((4, 6),)], ALL, id="negative_step"),
    OpCase("Slice", lambda x: x[..., -1:], [((2, 3),), ((0, 3),)], ALL, id="last"),
    OpCase("Slice", lambda x: x[3:1], [((4, 2),)], ("float32",), id="empty"),
    OpCase("Slice", lambda x: x[:-1, 1:], [((4, 3),)], ("float32", "int32"), dynamic=BATCH, id="dyn_stop"),
    OpCase("Slice", lambda x: x[::-1, ::-2], [((4, 3),)], ("float32",), dynamic=BATCH, id="dyn_reverse"),
    OpCase("Slice", lambda x: x[: x.shape[0] // 2], [((4, 3),)], ("float32",), dynamic=BATCH, id="dyn_half"),
    OpCase("Slice", lambda x: x[1:, :2], [((4, 3),)], ("float32",), dynamic={"x": {0: "batch", 1: "seq"}},
           id="dyn_two"),
    OpCase("Pad", lambda x: mx.pad(x, [(1, 2), (0, 3)]), [((2, 3),), ((0, 3),)], ALL),
    OpCase("Pad", lambda x: mx.pad(x, 1, constant_values=2), [((2, 3),), ((),)], ALL, id="value"),
    OpCase("Pad", lambda x: mx.pad(x, [(0, 0), (2, 1)], constant_values=-1), [((2, 3),)], ALL, dynamic=BATCH,
           id="dyn"),
    # The output dtype follows the input's; "+ x" keeps a constant arange from being the graph output.
    OpCase("Arange", lambda x: mx.arange(0.5, 3.2, 0.7, dtype=x.dtype) + x, [((1,),)], ALL),
    OpCase("Arange", lambda x: mx.arange(5, -3, -1.5, dtype=x.dtype) + x, [((1,),)], ALL, id="negative_step"),
    OpCase("Arange", lambda x: mx.arange(0, 10, 2.5, dtype=x.dtype), [((1,),)], ("int32",), id="int_odd_step"),
    OpCase("Arange", lambda x: mx.arange(3, 3, dtype=x.dtype) + x, [((1,),)], ALL, id="empty"),
    OpCase("Arange", lambda x: mx.arange(2, 9, dtype=x.dtype), [((1,),)], ("uint32",), id="uint32"),
    # Longer than the constant limit: an ONNX Range, which adds instead of accumulating like MLX.
    OpCase("Arange", lambda x: mx.arange(0, 500, 0.1, dtype=x.dtype), [((1,),)], ("float32",), id="long"),
    OpCase("Arange", lambda x: mx.arange(x.shape[0], dtype=x.dtype), [((3,),)], ALL, dynamic=BATCH, id="dyn"),
    OpCase("Arange", lambda x: mx.arange(1, 2 * x.shape[0] + 1, 2, dtype=mx.uint32), [((3,),)], ("float32",),
           dynamic=BATCH, id="dyn_uint32"),
    OpCase("Arange", lambda x: mx.arange(0.5, x.shape[0], 1.0, dtype=x.dtype), [((3,),)], FLOATS, dynamic=BATCH,
           id="dyn_float"),
    OpCase("Arange", lambda x: mx.arange(x.shape[0], 2 * x.shape[0], dtype=x.dtype), [((3,),)], ALL,
           dynamic=BATCH, id="dyn_start"),
    OpCase("Full", lambda x: mx.full((3, 4), x[0, 0]), [((2, 3),)], ALL),
    OpCase("Full", lambda x: mx.full(x.shape, 2.5, dtype=x.dtype) + x, [((2, 3),), ((0, 3),)], ALL, id="shape"),
    OpCase("Full", lambda x: mx.full(x.shape, 2.5, dtype=x.dtype), [((2, 3),)], ALL, dynamic=BATCH, id="dyn"),
    OpCase("View", lambda x: x.view(mx.uint32), [((2, 3),), ((),)], ("int32",)),
    OpCase("View", lambda x: x.view(mx.int32), [((2, 3),)], ("uint32",), id="signed"),
    OpCase("View", lambda x: x.view(mx.uint8), [((2, 3),)], ("bool",), id="bool"),
]


@pytest.mark.parametrize("case,shape_index,dtype,opset", params(CASES))
def test_parity(case: OpCase, shape_index: int, dtype: str, opset: int) -> None:
    run_case(case, shape_index, dtype, opset)


def _op_counts(fn, *shapes, dynamic=None) -> dict[str, int]:
    """ONNX op counts, less identity Transposes (rewrite/onnx_optimize.py keeps one that names a graph output)."""
    graph, _, _ = capture(fn, tuple(mx.zeros(s) for s in shapes), dynamic_axes=dynamic)
    counts: dict[str, int] = {}
    for n in lower(graph).proto.graph.node:
        perm = [list(a.ints) for a in n.attribute if a.name == "perm"]
        if n.op_type != "Transpose" or not perm or perm[0] != sorted(perm[0]):
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def test_lean_graphs() -> None:
    # Gather + Squeeze is one ONNX Gather; take along axis 1 needs no Transpose.
    assert _op_counts(lambda x: x[mx.array([0, 2])], (4, 5)) == {"Gather": 1}
    assert _op_counts(lambda x: mx.take(x, mx.array([[0, 2]]), axis=1), (4, 5)) == {"Gather": 1}
    # Broadcasting that only adds leading unit dims is an Unsqueeze.
    assert _op_counts(lambda x: mx.broadcast_to(x, (1, 3, 4)), (3, 4)) == {"Unsqueeze": 1}
    # A dynamic reshape keeps a constant target (0/-1), with no Shape ops.
    assert _op_counts(lambda x: x.reshape(x.shape[0], -1), (2, 3, 4), dynamic=BATCH) == {"Reshape": 1}
    # Dynamic reverse and x[:-1] slices need no Shape op either.
    assert _op_counts(lambda x: x[:-1, ::-1], (4, 3), dynamic=BATCH) == {"Slice": 1}
    # Full slices disappear.
    assert _op_counts(lambda x: x[:, :] * x, (2, 3)) == {"Mul": 1}


def test_view_bit_reinterpretation_is_unsupported() -> None:
    graph, _, _ = capture(lambda x: x.view(mx.int32), (mx.zeros((2, 3)),))
    with pytest.raises(UnsupportedArgumentError, match=r"\[View\].*float32 -> int32"):
        lower(graph)


# ----------------------------------------------------------------------------
# Primitives only a shapeless trace yields: IR nodes built from their state()
# ----------------------------------------------------------------------------

IR_CASES = ("NumberOfElements", "BroadcastAxes")


def ir_run(graph: Graph, feeds: dict[str, np.ndarray], opset: int, optimize: bool = True) -> list[np.ndarray]:
    model = lower(graph, opset, optimize_graph=optimize).to_proto()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def ir_graph(inputs: list[TensorInfo], node: Node, outputs: list[TensorInfo], axes=()) -> Graph:
    tensors = {t.name: t for t in inputs + outputs}
    return Graph(inputs, outputs, [node], {}, tensors, list(axes), {o.name: o.name for o in outputs})


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("inverted,dtype", [(True, "float32"), (False, "int32"), (True, "float16")])
def test_number_of_elements(opset: int, inverted: bool, dtype: str) -> None:
    batch = SymExpr.symbol("batch")
    x = TensorInfo("x", (batch, 3, 4), "float32")
    for axes in ([1, 2], [0, -1], []):
        out = TensorInfo("out", (), dtype)
        graph = ir_graph([x], Node(0, "NumberOfElements", ["x"], ["out"], [axes, inverted, dtype]), [out],
                          [DynamicAxis("batch", "x", 0, 2)])
        for n in (2, 5):
            # Unoptimized: the optimizer folds a constant graph output away (rewrite/onnx_optimize.py).
            (got,) = ir_run(graph, {"x": np.zeros((n, 3, 4), np.float32)}, opset, optimize=False)
            count = float(np.prod([(n, 3, 4)[a] for a in axes]))
            want = np.array(1.0 / count if inverted else count).astype(dtype)
            assert got.dtype == want.dtype and got.shape == ()
            np.testing.assert_allclose(got, want, rtol=1e-3)


@pytest.mark.parametrize("opset", OPSETS)
def test_broadcast_axes(opset: int) -> None:
    # broadcast_arrays(a[2,1,5,3], b[4,1,7], ignore_axes=[-1]) -> a becomes [2,4,5,3].
    a = TensorInfo("a", (2, 1, 5, 3), "float32")
    b = TensorInfo("b", (4, 1, 7), "float32")
    out = TensorInfo("out", (2, 4, 5, 3), "float32")
    graph = ir_graph([a, b], Node(0, "BroadcastAxes", ["a", "b"], ["out"], [[-1]]), [out])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((2, 1, 5, 3)).astype(np.float32), "b": np.zeros((4, 1, 7), np.float32)}
    (got,) = ir_run(graph, feeds, opset)
    np.testing.assert_array_equal(got, np.broadcast_to(feeds["a"], (2, 4, 5, 3)))

