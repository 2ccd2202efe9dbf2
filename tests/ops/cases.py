"""Table-driven parity checks: trace one MLX function, lower it, run ONNX Runtime, compare with MLX."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import mlx.core as mx
import numpy as np
import pytest

from mlxport.capture import capture, to_mx, to_numpy
from mlxport.graph import DynamicAxis, Graph, Node, TensorInfo
from mlxport.exporters.onnx import DEFAULT_OPSET, lower
from mlxport.runners import OnnxRunner
from mlxport.validate import compare

# STYLE.md §4: float32 (1e-5, 1e-6), half types (1e-3, 1e-3); widen per case with a comment.
BASE_TOL = {"float32": (1e-5, 1e-6), "float16": (1e-3, 1e-3), "bfloat16": (1e-2, 1e-2)}
OPSETS = (17, DEFAULT_OPSET)

Shapes = Sequence[tuple[int, ...]]


@dataclass
class OpCase:
    """One row of the parity table.

    Args:
        primitive: the MLX primitive the trace must contain (exact name).
        fn: a function of mx.arrays that produces it.
        shapes: input shape sets; each set is a tuple of shapes, one per input.
        dtypes: dtype names to run (inputs are made in that dtype unless ``make`` says otherwise).
        tol: {dtype: (rtol, atol)} overrides, each with a reason in a comment at the case.
        xfail: {dtype: reason} for known failures (strict).
        make: custom input maker ``(rng, shapes, dtype) -> list[np.ndarray]``.
        dynamic: dynamic_axes for the trace (checked at the example and one other size).
        id: a short label distinguishing cases of the same primitive.
    """

    primitive: str
    fn: Callable
    shapes: Sequence[Shapes]
    dtypes: Sequence[str] = ("float32",)
    tol: dict[str, tuple[float, float]] = field(default_factory=dict)
    xfail: dict[str, str] = field(default_factory=dict)
    make: Callable | None = None
    dynamic: dict[str, Any] | None = None
    id: str = ""
    opsets: Sequence[int] = OPSETS


def _np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def default_inputs(rng: np.random.Generator, shapes: Shapes, dtype: str) -> list[np.ndarray]:
    out = []
    for s in shapes:
        if dtype == "bool":
            out.append(rng.random(s) < 0.5)
        elif dtype.startswith(("int", "uint")):
            lo = 0 if dtype.startswith("u") else -8
            out.append(rng.integers(lo, 9, size=s).astype(dtype))
        else:
            out.append(rng.standard_normal(s).astype(np.float32).astype(_np_dtype(dtype)))
    return out


def params(cases: Sequence[OpCase]) -> list[Any]:
    """pytest params: one per case x shape set x dtype x opset; ids start with the primitive."""
    out = []
    for case in cases:
        for si, shapes in enumerate(case.shapes):
            for dtype in case.dtypes:
                for opset in case.opsets:
                    marks = []
                    if dtype in case.xfail:
                        marks.append(pytest.mark.xfail(reason=case.xfail[dtype], strict=True))
                    shape_id = "x".join("_".join(map(str, s)) or "scalar" for s in shapes) or "none"
                    pid = f"{case.primitive}-{case.id or 'base'}-{shape_id}-{dtype}-op{opset}"
                    out.append(pytest.param(case, si, dtype, opset, id=pid, marks=marks))
    return out


def run_case(case: OpCase, shape_index: int, dtype: str, opset: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    shapes = case.shapes[shape_index]
    make = case.make or default_inputs
    inputs = make(rng, shapes, dtype)
    graph, sig, arrays = capture(case.fn, tuple(to_mx(a) for a in inputs), dynamic_axes=case.dynamic)
    prims = graph.primitive_counts()
    assert case.primitive in prims, f"trace has {sorted(prims)}, not {case.primitive}"
    model = lower(graph, opset)
    proto = model.to_proto()
    runner = OnnxRunner(proto.SerializeToString())
    feeds: list[list[np.ndarray]] = [inputs]
    if case.dynamic:
        from mlxport.validate import validation_inputs

        feeds = [f for _, f in validation_inputs(graph, inputs, seed)]
    for feed in feeds:
        expected = mx_outputs(case.fn, sig, feed)
        try:
            got = runner(*feed)
        except Exception:
            _repro(proto, feed, case, dtype)
            raise
        for out, e, g in zip(graph.outputs, expected, got):
            rtol, atol = case.tol.get(dtype, BASE_TOL.get(e.dtype.name, (0.0, 0.0)))
            check = compare(out.name, e, g, rtol, atol)
            if not check.ok:
                _repro(proto, feed, case, dtype)
            assert check.shape_ok, check.line()
            assert check.ok, check.line()


def mx_outputs(fn: Callable, sig: Any, feed: Sequence[np.ndarray]) -> list[np.ndarray]:
    outs = sig.call_flat(fn, [to_mx(a) for a in feed])
    mx.eval(outs)
    return [np.array(to_numpy(o)) for o in outs]


def _repro(proto: Any, feed: Sequence[np.ndarray], case: OpCase, dtype: str) -> None:
    """With REPRO=1, write the failing model and its inputs to repro/ for a standalone rerun."""
    if os.environ.get("REPRO") != "1":
        return
    import onnx

    d = Path("repro") / f"{case.primitive}-{case.id or 'base'}-{dtype}"
    d.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, d / "model.onnx")
    np.savez(d / "inputs.npz", *[np.asarray(a) for a in feed])


FAMILIES = ("elementwise", "shape", "index", "linalg", "reduce", "nn", "quant")


def _family_modules() -> list[Any]:
    import importlib

    mods = []
    for fam in FAMILIES:
        try:
            mods.append(importlib.import_module(f"tests.ops.test_{fam}"))
        except ModuleNotFoundError:
            continue
    return mods


def all_cases() -> list[OpCase]:
    """Every OpCase of every family module (tests/ops/test_<family>.py)."""
    return [c for mod in _family_modules() for c in getattr(mod, "CASES", [])]


def covered_primitives() -> set[str]:
    """Primitives with a parity test: OpCase rows, plus ``IR_CASES`` names for primitives that a
    Linux CPU trace never yields (fused mx.fast ops), tested with IR nodes built from their state()."""
    names = {c.primitive for c in all_cases()}
    for mod in _family_modules():
        names |= set(getattr(mod, "IR_CASES", ()))
    return names


def run_case_torch(case: OpCase, shape_index: int, dtype: str, seed: int = 0) -> None:
    """The same parity check through the torch target (the fx module run eagerly)."""
    import torch

    from mlxport.exporters.torch import lower_torch
    from mlxport.dtypes import to_tensor

    rng = np.random.default_rng(seed)
    inputs = (case.make or default_inputs)(rng, case.shapes[shape_index], dtype)
    graph, sig, _ = capture(case.fn, tuple(to_mx(a) for a in inputs), dynamic_axes=case.dynamic)
    module = lower_torch(graph)
    feeds: list[list[np.ndarray]] = [inputs]
    if case.dynamic:
        from mlxport.validate import validation_inputs

        feeds = [f for _, f in validation_inputs(graph, inputs, seed)]
    for feed in feeds:
        expected = mx_outputs(case.fn, sig, feed)
        with torch.no_grad():
            got = [t.numpy() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().view(_np_dtype("bfloat16"))
                   for t in module(*[to_tensor(a) for a in feed])]
        for out, e, g in zip(graph.outputs, expected, got):
            rtol, atol = case.tol.get(dtype, BASE_TOL.get(e.dtype.name, (0.0, 0.0)))
            check = compare(out.name, e, g, rtol, atol)
            assert check.ok, check.line()


def single_node_graph(primitive: str, arguments: list[Any], feed: dict[str, np.ndarray], expected: np.ndarray,
                      constants: dict[str, np.ndarray], order: Sequence[str], *,
                      dims: dict[str, dict[int, Any]] | None = None,
                      broadcast: dict[str, tuple[Any, ...]] | None = None) -> Graph:
    """An IR graph holding one node, for primitives a Linux CPU trace never yields (fused, GPU-only).

    Inputs are the feed's arrays (named), constants are IR constants, ``order`` names the node's
    inputs; ``dims`` gives symbolic axes per tensor ("out" is the node's output), so one graph
    serves several feeds; ``broadcast`` inserts an MLX Broadcast node to that (symbolic) shape in
    front of an input, as mx.fast does for attention masks.
    """
    dims = dims or {}

    def info(name: str, shape: Sequence[int], dtype: np.dtype) -> TensorInfo:
        sym = dims.get(name, {})
        return TensorInfo(name, tuple(sym.get(i, d) for i, d in enumerate(shape)), dtype.name)

    tensors = {n: info(n, a.shape, a.dtype) for n, a in feed.items()}
    tensors.update({n: TensorInfo(n, a.shape, a.dtype.name) for n, a in constants.items()})
    nodes, names = [], list(order)
    for name, shape in (broadcast or {}).items():
        full = f"{name}_full"
        tensors[full] = TensorInfo(full, tuple(shape), tensors[name].dtype)
        nodes.append(Node(len(nodes), "Broadcast", [name], [full], [list(shape)]))
        names[names.index(name)] = full
    tensors["out"] = info("out", expected.shape, expected.dtype)
    nodes.append(Node(len(nodes), primitive, names, ["out"], arguments))
    axes = {str(s): DynamicAxis(str(s), n, i, feed[n].shape[i]) for n in feed for i, s in dims.get(n, {}).items()}
    return Graph([tensors[n] for n in feed], [TensorInfo("y", tensors["out"].shape, tensors["out"].dtype)], nodes,
                 dict(constants), tensors, list(axes.values()), {"y": "out"})
