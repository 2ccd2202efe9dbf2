"""Capture: names, structure, and dynamic axes derived from traces at several sizes."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlxport.capture import capture, trace_levels
from mlxport.errors import CaptureError, DynamicShapeError
from mlxport.graph import SymExpr


class TwoIn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 4)

    def __call__(self, tokens: mx.array, mask: mx.array) -> dict[str, mx.array]:
        return {"logits": self.proj(tokens) * mask[..., None], "total": mask.sum(axis=-1)}


def test_names_come_from_parameters_and_dict_keys() -> None:
    m = TwoIn()
    graph, _, _ = capture(m, (mx.zeros((2, 3, 8)), mx.ones((2, 3))))
    assert [i.name for i in graph.inputs] == ["tokens", "mask"]
    assert [o.name for o in graph.outputs] == ["logits", "total"]
    assert {"proj.weight", "proj.bias"} <= set(graph.constants)


def test_tuple_outputs_and_explicit_names() -> None:
    graph, _, _ = capture(lambda a, b: (a + b, a * b), (mx.zeros((2,)), mx.zeros((2,))),
                          input_names=["p", "q"], output_names=["sum", "prod"])
    assert [i.name for i in graph.inputs] == ["p", "q"]
    assert [o.name for o in graph.outputs] == ["sum", "prod"]


def test_default_tuple_output_names() -> None:
    graph, _, _ = capture(lambda a: (a + 1, a * 2), (mx.zeros((2,)),))
    assert [o.name for o in graph.outputs] == ["output_0", "output_1"]


def test_dynamic_products_and_sums_are_fitted() -> None:
    def fn(x: mx.array) -> mx.array:
        b, l, d = x.shape
        flat = x.reshape(b * l, d)
        pad = mx.concatenate([x, x[:, :1]], axis=1)
        return flat.sum() + pad.sum() + mx.arange(l).sum()

    graph, _, _ = capture(fn, (mx.zeros((1, 5, 4)),), dynamic_axes={"x": {0: "batch", 1: "seq"}})
    batch, seq = SymExpr.symbol("batch"), SymExpr.symbol("seq")
    shapes = [graph.tensors[o].shape for n in graph.nodes for o in n.outputs]
    assert (SymExpr.make({("batch", "seq"): 1}), 4) in shapes
    assert (batch, SymExpr.make({("seq",): 1, (): 1}), 4) in shapes
    arange = next(graph.iter_nodes("Arange"))
    assert arange.arguments[1] == seq


def test_trace_levels_avoid_size_one() -> None:
    assert trace_levels(1) == (2, 4, 6)
    assert trace_levels(5) == (5, 10, 15)


def test_graph_growing_with_the_size_is_reported() -> None:
    def fn(x: mx.array) -> mx.array:
        for _ in range(x.shape[0].bit_length()):
            x = x + 1
        return x

    with pytest.raises(DynamicShapeError, match="changes with the dynamic sizes .* even when traced at large sizes"):
        capture(fn, (mx.zeros((3, 2)),), dynamic_axes={"x": {0: "n"}})


def test_size_branch_is_traced_at_large_sizes_and_validated(tmp_path) -> None:
    """A branch taken only at small sizes is avoided by tracing large; validation at the example checks it."""
    import mlxport

    def fn(x: mx.array) -> mx.array:
        # Like mlx-lm's MoE: an optimisation above a size threshold, same result either way.
        return mx.sort(x, axis=0)[::-1][::-1] * 2 if x.shape[0] >= 5 else mx.sort(x, axis=0) * 2

    graph, _, _ = capture(fn, (mx.zeros((3, 2)),), dynamic_axes={"x": {0: "n"}})
    assert graph.metadata["traced_at_large_sizes"]
    report = mlxport.export(fn, (mx.random.normal((3, 2)),), tmp_path / "m.onnx", dynamic_axes={"x": {0: "n"}})
    assert report.ok and "large sizes" in str(report)


def test_wrong_large_size_graph_fails_validation(tmp_path) -> None:
    import mlxport

    def fn(x: mx.array) -> mx.array:
        return x * 2 if x.shape[0] % 2 == 0 else x + 1

    with pytest.raises(DynamicShapeError, match=r"(?s)changes with the dynamic sizes \(node \d+ .*\).*does not match MLX.*keep that axis fixed"):
        mlxport.export(fn, (mx.random.normal((3, 2)),), tmp_path / "m.onnx", dynamic_axes={"x": {0: "n"}})


def test_eager_constant_from_shape_is_reported() -> None:
    def fn(x: mx.array) -> mx.array:
        table = mx.array(np.arange(x.shape[0], dtype=np.float32))
        return x + table[:, None]

    with pytest.raises(DynamicShapeError, match="computed eagerly"):
        capture(fn, (mx.zeros((3, 2)),), dynamic_axes={"x": {0: "n"}})


def test_non_array_input_is_rejected() -> None:
    with pytest.raises(CaptureError, match="must be an mx.array or numpy array; got int"):
        capture(lambda x, k: x * k, (mx.zeros((2,)), 3))


def test_unknown_dynamic_input_and_axis() -> None:
    with pytest.raises(CaptureError, match="names input 'y', but the inputs are x"):
        capture(lambda x: x + 1, (mx.zeros((2, 3)),), dynamic_axes={"y": {0: "b"}})
    with pytest.raises(CaptureError, match="out of range: it has rank 2"):
        capture(lambda x: x + 1, (mx.zeros((2, 3)),), dynamic_axes={"x": {2: "b"}})


def test_wrong_example_shape_names_the_inputs() -> None:
    layer = nn.Linear(8, 4)
    with pytest.raises(CaptureError, match=r"x: float32\[2,5\]"):
        capture(layer, (mx.zeros((2, 5)),))


def test_numpy_examples_are_accepted() -> None:
    graph, _, arrays = capture(lambda x: x * 2, (np.ones((2, 2), np.float32),))
    assert graph.inputs[0].dtype == "float32" and isinstance(arrays[0], mx.array)


@pytest.mark.parametrize("name,fn,dyn", [
    ("mean_over_seq", lambda x: x.mean(axis=1), {"x": {1: "seq"}}),
    ("mean_over_batch_and_seq", lambda x: x.mean(axis=(0, 1)), {"x": {0: "batch", 1: "seq"}}),
    ("divide_by_a_size", lambda x: x / x.shape[1], {"x": {1: "seq"}}),
    ("variance", lambda x: x.var(axis=1), {"x": {1: "seq"}}),
])
def test_size_derived_scalars_follow_the_dynamic_axes(tmp_path, name, fn, dyn) -> None:
    """MLX bakes 1/n of a mean into a constant at trace time; it must be recomputed from the shape."""
    import mlxport

    graph, _, _ = capture(fn, (mx.zeros((2, 5, 4)),), dynamic_axes=dyn)
    assert "NumberOfElements" in graph.primitive_counts()
    report = mlxport.export(fn, (mx.random.normal((2, 5, 4)),), tmp_path / f"{name}.onnx", dynamic_axes=dyn)
    assert report.ok and len(report.runs) == 2


def test_an_axis_may_be_the_sum_of_two_others(tmp_path) -> None:
    # A KV-cache step: the mask covers past + new positions; both lengths vary independently.
    def step(new: mx.array, past: mx.array, mask: mx.array) -> mx.array:
        total = mx.concatenate([past, new], axis=1)
        return total * mask[..., None]

    args = (mx.ones((1, 3, 4)), mx.ones((1, 2, 4)), mx.ones((1, 5)))
    axes = {"new": {1: "seq"}, "past": {1: "past"}, "mask": {1: "past + seq"}}
    graph, _, _ = capture(step, args, dynamic_axes=axes)
    mask = next(i for i in graph.inputs if i.name == "mask")
    assert isinstance(mask.shape[1], SymExpr) and mask.shape[1].symbols == {"past", "seq"}
    from mlxport import export

    report = export(step, args, tmp_path / "step.onnx", dynamic_axes=axes)
    assert report.validated and "past=" in report.runs[1].label


@pytest.mark.parametrize("axes, message", [
    ({"new": {1: "seq"}, "mask": {1: "past+seq"}}, "no input names as an axis"),
    ({"new": {1: "seq"}, "past": {1: "past"}, "mask": {1: "past+seq+seq"}}, "make the example sizes add up"),
    ({"new": {1: "seq"}, "past": {1: "past"}, "mask": {1: "past-seq"}}, "a sum of them"),
])
def test_bad_sum_axes_say_what_to_fix(axes, message) -> None:
    def step(new: mx.array, past: mx.array, mask: mx.array) -> mx.array:
        return mx.concatenate([past, new], axis=1) * mask[..., None]

    with pytest.raises(CaptureError, match=message):
        capture(step, (mx.ones((1, 3, 4)), mx.ones((1, 2, 4)), mx.ones((1, 5))), dynamic_axes=axes)
