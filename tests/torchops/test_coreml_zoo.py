"""The whole model zoo to Core ML (.mlpackage), with fixed shapes and with dynamic batch/sequence axes.

Each case is the zoo entry of tests/models/test_torch_formats.py (same builders, examples, dynamic axes
and tolerances). Off macOS coremltools cannot predict, so each export is checked three ways: the spec
matches the graph (inputs, ranges, outputs: the export's own structure validation), it holds the ops
expected, and the TorchScript program coremltools converted (the torch lowering as rewritten for Core
ML, traced) gives MLX's numbers at the probes, dynamic sizes included. On macOS the export is validated
numerically by Core ML itself.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="Core ML export goes through the torch target: "
                                             "pip install 'mlxport[torch]'")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ct = pytest.importorskip("coremltools", reason="Core ML export needs coremltools: pip install 'mlxport[coreml]'")

import mlxport  # noqa: E402
from mlxport.exporters.coreml import MAX_DYNAMIC_SIZE, describe_spec  # noqa: E402
from mlxport.exporters.coreml_prepare import prepare_for_coreml, widened  # noqa: E402
from mlxport.exporters.torch import lower_torch  # noqa: E402
from mlxport.dtypes import to_tensor  # noqa: E402
from mlxport.validate import compare, validation_inputs  # noqa: E402
from tests.models import zoo  # noqa: E402
from tests.models.test_torch_formats import CASES, ZooCase  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                         "ignore::FutureWarning")]
MACOS = sys.platform == "darwin"
# Quick enough for every run: a pooling CNN and the llama-style and 4-bit models with dynamic axes.
FAST = {("cnn-float32", True), ("cnn-float32", False), ("llama_style-float32", True),
        ("quantized_llama_4bit-float32", True)}
# Core ML ops each model must hold (the pooling CNN pools natively; attention stays matmuls).
EXPECTED_OPS = {"cnn": {"conv", "max_pool", "avg_pool", "linear"}, "mlp": {"linear"},
                "encoder": {"matmul", "softmax"}, "llama_style": {"matmul", "softmax", "gather"}}


def _params() -> list[Any]:
    out = []
    for name in CASES:
        for dynamic in (False, True):
            slow = (name, dynamic) not in FAST
            out.append(pytest.param(name, dynamic, id=f"{name}-{'dynamic' if dynamic else 'fixed'}",
                                    marks=[pytest.mark.slow] if slow else []))
    return out


def _same_shape(example: tuple[mx.array, ...], seed: int) -> tuple[mx.array, ...]:
    """Other values at the example's shapes (token ids for int32 inputs)."""
    out = []
    for a in example:
        if a.dtype == mx.int32:
            out.append(zoo.tokens(*a.shape, seed=seed))
        else:
            out.append(zoo.floats(tuple(a.shape), "float16" if a.dtype == mx.float16 else "float32", seed=seed))
    return tuple(out)


@pytest.mark.parametrize("name,dynamic", _params())
def test_zoo_model_to_coreml(tmp_path: Path, name: str, dynamic: bool) -> None:
    case: ZooCase = CASES[name]
    mx.random.seed(zoo.SEED)
    model = case.build()
    axes = case.dynamic if dynamic else None
    traced = mlxport.trace(model, case.example(), dynamic_axes=axes)
    path = tmp_path / "model.mlpackage"
    report = traced.save(path, **case.tol)
    if MACOS:
        assert report.validated and report.ok, str(report)
        return
    assert report.info["validation"] == "structure only: numeric validation needs macOS", str(report)
    desc = describe_spec(ct.utils.load_spec(str(path)))
    graph = traced.graph
    assert [f["name"] for f in desc["inputs"]] == [i.name for i in graph.inputs]
    assert [f["name"] for f in desc["outputs"]] == [o.name for o in graph.outputs]
    for f, info in zip(desc["inputs"], graph.inputs):
        want = [(1, MAX_DYNAMIC_SIZE) if axes and axis in axes.get(info.name, {}) else (d, d)
                for axis, d in enumerate(info.shape)]
        got = f["ranges"] or [(d, d) for d in f["shape"]]
        assert got == want, (f["name"], got, want)
    expected = EXPECTED_OPS.get(name.split("-")[0], {"matmul"} if "quantized" not in name else {"gather"})
    assert expected <= set(desc["ops"]), sorted(set(desc["ops"]))
    # Nothing Core ML cannot run survives the rewrite (packed words, bit operations).
    examples = tuple(to_tensor(a) for a in validation_inputs(graph, traced.examples)[-1][1])
    prepared = prepare_for_coreml(lower_torch(graph), examples)
    assert not any(str(getattr(n.target, "__name__", n.target)).startswith("bitwise")
                   for n in prepared.graph.nodes), prepared.code
    if any(o.dtype == "float16" for o in graph.outputs):
        return  # the program computes float16 models in float32 (Core ML's precision decides): no exact match
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.jit.trace(prepared, widened(examples), check_trace=False)
    probes = list(case.probes()) if dynamic else []
    probes.append(_same_shape(case.example(), seed=7))
    for probe in probes:
        want = zoo.run_mlx(model, probe)
        got = program(*[to_tensor(np.array(a)) for a in probe])
        got = [g.numpy() for g in (got if isinstance(got, (list, tuple)) else [got])]
        for i, (w, g) in enumerate(zip(want, got)):
            check = compare(f"output {i}", w, g, case.tol.get("rtol"), case.tol.get("atol"))
            assert check.ok, check.line()


@pytest.mark.skipif(MACOS, reason="on macOS the export is validated numerically instead")
@pytest.mark.parametrize("name", [
    "cnn-float32", pytest.param("llama_style-float16", marks=pytest.mark.slow),
    pytest.param("quantized_mlx_lm_mixtral_4bit-float16", marks=pytest.mark.slow)])
def test_zoo_model_at_float16_precision(tmp_path: Path, name: str) -> None:
    """Core ML's float16 compute precision: a float32 program lowered to float16 by coremltools."""
    case = CASES[name]
    mx.random.seed(zoo.SEED)
    traced = mlxport.trace(case.build(), case.example(), dynamic_axes=case.dynamic)
    path = tmp_path / "half.mlpackage"
    report = traced.save(path, precision="float16", **case.tol)
    assert report.info["precision"] == "float16" and report.info["validation"].startswith("structure only")
    # Every weight (a const of more than 64 elements) is stored in float16.
    kinds = {_const_dtype(op) for op in _operations(ct.utils.load_spec(str(path))) if op.type == "const"
             and _const_size(op) > 64}
    assert kinds == {"FLOAT16"}, kinds


def _operations(spec: Any) -> list[Any]:
    return [op for fn in spec.mlProgram.functions.values() for block in fn.block_specializations.values()
            for op in block.operations]


def _const_dtype(op: Any) -> str:
    from coremltools.proto import MIL_pb2

    return MIL_pb2.DataType.Name(op.outputs[0].type.tensorType.dataType)


def _const_size(op: Any) -> int:
    return int(np.prod([d.constant.size for d in op.outputs[0].type.tensorType.dimensions]))
