"""torch.export (.pt2) with dynamic axes that a Split divides (derived Dims) or cuts at a fixed size.

torch.export rejects a plain ``Dim`` for such an axis ("Constraints violated ... seq = 2*_seq"); the
exporter reads the axis' divisor and bounds from the IR. What torch still cannot keep dynamic gives a
DynamicShapeError that names the axis, the condition and what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the .pt2 format needs PyTorch: pip install 'mlxport[torch]'")

import mlxport  # noqa: E402
from mlxport.capture import capture  # noqa: E402
from mlxport.errors import DynamicShapeError  # noqa: E402
from mlxport.exporters.torch import AxisConstraint, axis_constraints, lower_torch, save_exported  # noqa: E402
from mlxport.dtypes import to_tensor  # noqa: E402

BATCH_SEQ = {"x": {0: "batch", 1: "seq"}}


def halves_product(x: mx.array) -> mx.array:
    """phi3's gate/up split, along the sequence axis instead: seq/2 each."""
    a, b = mx.split(x, 2, axis=1)
    return a * b


def thirds_sum(x: mx.array) -> mx.array:
    a, b, c = mx.split(x, 3, axis=1)
    return a + 2 * b + 3 * c


def cut_three(x: mx.array) -> mx.array:
    """A fixed 3-step prefix and the rest (seq - 3), swapped."""
    head, tail = mx.split(x, [3], axis=1)
    return mx.concatenate([tail * 2, head], axis=1)


def split_batch(x: mx.array) -> mx.array:
    a, b = mx.split(x, 2, axis=0)
    return a - b


# (function, example shape, expected constraints, sizes the .pt2 must run, sizes it must refuse)
CASES: dict[str, tuple[Callable, tuple[int, ...], dict[str, AxisConstraint], list, list]] = {
    "halves": (halves_product, (2, 6, 4),
               {"batch": AxisConstraint("batch"), "seq": AxisConstraint("seq", multiple_of=2, min=2)},
               [(1, 2, 4), (3, 4, 4), (1, 10, 4)], [(2, 5, 4)]),
    # An odd example size: 9 = 3 * 3, then 18 at the second size.
    "thirds": (thirds_sum, (1, 9, 4),
               {"batch": AxisConstraint("batch"), "seq": AxisConstraint("seq", multiple_of=3, min=3)},
               [(1, 3, 4), (2, 6, 4), (3, 15, 4)], [(1, 7, 4)]),
    # An odd example (5 = 3 + 2); seq == 3 leaves an empty tail, seq == 4 a tail of one.
    "cut_three": (cut_three, (2, 5, 4),
                  {"batch": AxisConstraint("batch"), "seq": AxisConstraint("seq", min=3)},
                  [(1, 3, 4), (2, 4, 4), (3, 11, 4)], [(2, 2, 4)]),
    "split_batch": (split_batch, (4, 3, 4),
                    {"batch": AxisConstraint("batch", multiple_of=2, min=2), "seq": AxisConstraint("seq")},
                    [(2, 1, 4), (6, 5, 4)], [(3, 3, 4)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_constraints_from_the_graph(name: str) -> None:
    fn, shape, expected, _, _ = CASES[name]
    graph, _, _ = capture(fn, (mx.zeros(shape),), dynamic_axes=BATCH_SEQ)
    assert axis_constraints(graph) == expected


@pytest.mark.parametrize("name", list(CASES))
def test_pt2_keeps_split_axes_dynamic(tmp_path: Path, name: str) -> None:
    fn, shape, _, sizes, refused = CASES[name]
    rng = np.random.default_rng(0)
    path = tmp_path / f"{name}.pt2"
    report = mlxport.export(fn, (mx.array(rng.standard_normal(shape).astype(np.float32)),), path,
                            dynamic_axes=BATCH_SEQ)
    assert report.ok and len(report.runs) == 2, str(report)
    runner = mlxport.load(path)
    for size in sizes:
        x = rng.standard_normal(size).astype(np.float32)
        np.testing.assert_allclose(runner(x)[0], np.array(fn(mx.array(x))), rtol=1e-5, atol=1e-6)
    for size in refused:
        x = rng.standard_normal(size).astype(np.float32)
        # Outside the graph's domain (MLX refuses an uneven split and clamps a cut past the end,
        # which the traced graph does not express): the program checks at run time, no garbage out.
        with pytest.raises((AssertionError, RuntimeError), match="Guard failed|Runtime assertion"):
            runner(x)


def _wants_six(x: Any) -> Any:
    # Python control flow on a size: torch.export can only keep this if seq >= 6 always holds.
    return x[:, :6] * 2 if x.shape[1] >= 6 else x


def test_axis_torch_cannot_keep_gives_a_clear_error(tmp_path: Path) -> None:
    import torch.fx as fx

    graph, _, arrays = capture(lambda x: x * 2, (mx.zeros((2, 8, 4)),), dynamic_axes=BATCH_SEQ)
    module = lower_torch(graph)
    # Replace the lowering by a function that branches on the size, as a translation must not.
    g = fx.Graph()
    x = g.placeholder(next(n.target for n in module.graph.nodes if n.op == "placeholder"))
    g.output((g.call_function(_wants_six, (x,)),))
    branching = fx.GraphModule(torch.nn.Module(), g)
    example = (to_tensor(np.zeros((4, 16, 4), np.float32)),)
    with pytest.raises(DynamicShapeError) as info:
        save_exported(branching, graph, example, tmp_path / "m.pt2")
    message = str(info.value)
    assert message.startswith("torch.export cannot keep the dynamic axis seq free"), message
    assert "6 <= seq" in message, message  # the condition, in the user's axis name
    assert "drop it from dynamic_axes" in info.value.hint and ".pt or .onnx" in info.value.hint
    assert not (tmp_path / "m.pt2").exists()
