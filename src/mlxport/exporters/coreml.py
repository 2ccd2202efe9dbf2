"""Core ML ML Programs (``.mlpackage``) through coremltools, from the torch lowering."""

from __future__ import annotations

import logging
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..artifact import IOSpec
from ..errors import ArtifactError
from ..graph import Graph

COREML_EXTRA = 'pip install "mlxport[coreml]"'
# An ML Program needs a finite upper bound on every RangeDim.
MAX_DYNAMIC_SIZE = 4096
_PRECISIONS = ("float32", "float16")
_IO_DTYPES = {"float32": np.float32, "float16": np.float16, "int32": np.int32}


def import_coremltools() -> Any:
    """coremltools, or an error naming the extra to install."""
    try:
        with warnings.catch_warnings():
            # It warns at import about untested torch/scikit-learn versions; conversion still works.
            warnings.simplefilter("ignore")
            import coremltools as ct
    except ImportError as exc:
        raise ArtifactError(f"Core ML export needs coremltools, which is not installed: {exc}",
                            hint=f"Install it with: {COREML_EXTRA}") from None
    return ct


def save_mlpackage(module: Any, graph: Graph, examples: Sequence[np.ndarray], path: str | os.PathLike, *,
                   precision: str = "float32") -> Path:
    """An ML Program (macOS 13+) with the graph's dynamic axes as bounded ``RangeDim``s.

    The torch lowering is first rewritten into ops coremltools converts (see
    ``coreml_prepare.prepare_for_coreml``: narrow as slicing, packed quantized weights
    dequantized, half and unsigned types widened); the rewrite is checked to give the
    lowering's results on ``examples``.

    Args:
        module: the torch lowering of ``graph`` (``lower_torch``); it is not modified.
        graph: the captured graph (names, shapes, dtypes, dynamic axes).
        examples: one input per graph input, the dynamic axes at the size to trace at.
        path: the ``.mlpackage`` directory to write (replaced if it exists).
        precision: "float32" (compare numbers with this) or "float16" compute precision.

    Returns:
        The path written.
    """
    from .coreml_prepare import prepare_for_coreml, widened
    from .torch import import_torch
    from ..dtypes import to_tensor

    if precision not in _PRECISIONS:
        raise ArtifactError(f"Core ML precision must be one of {', '.join(_PRECISIONS)}; got {precision!r}")
    ct = import_coremltools()
    torch = import_torch()
    path = Path(path)
    dynamic = {(a.input, a.axis) for a in graph.dynamic_axes}
    inputs = []
    for info, arr in zip(graph.inputs, examples):
        if info.dtype not in _IO_DTYPES:
            raise ArtifactError(f"Core ML inputs are float32, float16 or int32; input '{info.name}' is {info.dtype}",
                                hint="Cast that input in the traced function (e.g. x.astype(mx.float32)), "
                                     "or export .onnx / .pt, which take every MLX dtype")
        dims = [ct.RangeDim(lower_bound=1, upper_bound=MAX_DYNAMIC_SIZE, default=int(size))
                if (info.name, axis) in dynamic else int(size) for axis, size in enumerate(arr.shape)]
        inputs.append(ct.TensorType(name=info.name, shape=ct.Shape(dims), dtype=_IO_DTYPES[info.dtype]))
    # Outputs keep the graph's dtype where Core ML has it (float16 outputs need macOS 13, the target).
    outputs = [ct.TensorType(name=o.name, dtype=_IO_DTYPES.get(o.dtype)) for o in graph.outputs]
    tensors = tuple(to_tensor(a) for a in examples)
    prepared = prepare_for_coreml(module, tensors)
    # coremltools converts a float32 TorchScript program and casts float16 inputs to it.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(prepared, widened(tensors), check_trace=False)
    target = ct.precision.FLOAT32 if precision == "float32" else ct.precision.FLOAT16
    failed = _FailedOps()
    log = logging.getLogger("coremltools")
    log.addHandler(failed)
    try:
        model = ct.convert(traced, convert_to="mlprogram", inputs=inputs, outputs=outputs, compute_precision=target,
                           minimum_deployment_target=ct.target.macOS13)
    except Exception as exc:  # coremltools raises bare ValueError/KeyError/AssertionError from its op converters
        raise _conversion_error(exc, failed.ops) from exc
    finally:
        log.removeHandler(failed)
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path))
    return path


class _FailedOps(logging.Handler):
    """Collects the torch ops coremltools reports while failing ("converting 'narrow' op (located at: ...)")."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.ops: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = re.search(r"converting '([^']+)' op \(located at: '([^']*)'\)", record.getMessage())
        if found:
            self.ops.append((found.group(1), found.group(2)))


# What to do when coremltools refuses an op, by the op's name in its torch frontend.
_OP_HINTS = {"as_strided": "a strided view that is not a window of its input (mlxport lowers those as slices)"}


def _conversion_error(exc: BaseException, ops: list[tuple[str, str]]) -> ArtifactError:
    """coremltools' failure as what failed (the torch op and node when it said) and what to do instead."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    where = ""
    if ops:
        kind, node = ops[-1]
        where = f" at torch op '{kind}'" + (f" (node {node})" if node else "")
        if kind in _OP_HINTS:
            where += f", {_OP_HINTS[kind]}"
    other = "Export .onnx or .pt instead, which take every primitive mlxport lowers."
    if "rank <= 5" in text:
        hint = ("Core ML tensors have at most 5 dimensions; keep the model's intermediates at rank 5 or less. "
                + other)
    elif re.search(r"\bis\d+\b", text) or "symbolic" in text.lower():
        hint = ("coremltools could not handle a dynamic size there: fix that axis (drop it from dynamic_axes). "
                + other)
    else:
        hint = "Core ML's torch frontend lacks this op or this use of it. " + other
    return ArtifactError(f"coremltools cannot convert the torch lowering{where}: {first}", hint=hint)


_SPEC_TYPES = {"FLOAT32": "float32", "FLOAT16": "float16", "INT32": "int32", "DOUBLE": "float64"}


def describe_spec(spec: Any) -> dict[str, Any]:
    """Inputs and outputs of a Core ML spec: name, dtype, shape and per-axis (lower, upper) ranges; op types."""
    from coremltools.proto import FeatureTypes_pb2 as ft

    def feature(f: Any) -> dict[str, Any]:
        arr = f.type.multiArrayType
        ranges = [(r.lowerBound, r.upperBound) for r in arr.shapeRange.sizeRanges]
        return {"name": f.name, "dtype": _SPEC_TYPES.get(ft.ArrayFeatureType.ArrayDataType.Name(arr.dataType), "?"),
                "shape": list(arr.shape), "ranges": ranges}

    ops = [op.type for fn in spec.mlProgram.functions.values() for block in fn.block_specializations.values()
           for op in block.operations]
    return {"inputs": [feature(f) for f in spec.description.input],
            "outputs": [feature(f) for f in spec.description.output], "ops": ops}


def check_structure(path: str | os.PathLike, inputs: list[IOSpec], outputs: list[IOSpec]) -> list[str]:
    """Problems found comparing an ``.mlpackage``'s spec with a signature (empty when it matches).

    ``inputs``/``outputs`` are the artifact's signature as its metadata records it: an int per fixed dim, a
    symbol (str) per dynamic one.
    """
    ct = import_coremltools()
    spec = ct.utils.load_spec(str(path))
    desc = describe_spec(spec)
    problems = []
    if [f["name"] for f in desc["inputs"]] != [i.name for i in inputs]:
        problems.append(f"inputs {[f['name'] for f in desc['inputs']]} != {[i.name for i in inputs]}")
    for f, info in zip(desc["inputs"], inputs):
        if f["dtype"] != info.dtype:
            problems.append(f"input '{info.name}' is {f['dtype']}, expected {info.dtype}")
        if len(f["shape"]) != len(info.shape):
            problems.append(f"input '{info.name}' has rank {len(f['shape'])}, expected {len(info.shape)}")
            continue
        for axis, dim in enumerate(info.shape):
            lo, hi = f["ranges"][axis] if f["ranges"] else (f["shape"][axis], f["shape"][axis])
            if not isinstance(dim, int) and not (lo <= 1 and hi > 1):
                problems.append(f"input '{info.name}' axis {axis} is dynamic but ranges over [{lo}, {hi}]")
            if isinstance(dim, int) and not lo == hi == dim:
                problems.append(f"input '{info.name}' axis {axis} should be {dim}; ranges over [{lo}, {hi}]")
    if [f["name"] for f in desc["outputs"]] != [o.name for o in outputs]:
        problems.append(f"outputs {[f['name'] for f in desc['outputs']]} != {[o.name for o in outputs]}")
    for f, info in zip(desc["outputs"], outputs):
        # Core ML computes float16 outputs at float16 precision but may still declare them float32.
        if f["dtype"] != info.dtype and {f["dtype"], info.dtype} != {"float16", "float32"}:
            problems.append(f"output '{info.name}' is {f['dtype']}, expected {info.dtype}")
    if not desc["ops"]:
        problems.append("the ML Program has no operations")
    return problems
