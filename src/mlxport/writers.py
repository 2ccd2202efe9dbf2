"""One writer per format: a captured graph to a file, with what the report and the metadata file need.

``formats.FORMATS`` names each format's writer; ``Traced.save`` calls it, then validates and writes the
metadata. A writer has one signature, ``write(traced, path, options, say) -> Written``, and imports its
backend (onnx, torch, coremltools, onnx2tf) only when it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .artifact import artifact_sha256
from .errors import CaptureError

if TYPE_CHECKING:  # pragma: no cover
    from .api import Traced


@dataclass
class SaveOptions:
    """The format options of ``Traced.save``; each format reads the ones its table row lists."""

    opset: int | None = None
    external_data: bool | None = None
    optimize: bool = True
    contrib_ops: bool | None = None
    checksum: bool = True
    precision: str = "float32"
    quantize: str | None = None
    calibration: Any = None
    rtol: float | None = None
    atol: float | None = None

    # The value of each format-specific option that means "not asked for": a format refuses any other.
    DEFAULTS = {"opset": None, "external_data": None, "optimize": True, "contrib_ops": None,
                "precision": "float32", "quantize": (None, "float32"), "calibration": None}

    def given(self) -> list[str]:
        """The format-specific options set to something other than their default."""
        out = []
        for name, default in self.DEFAULTS.items():
            value = getattr(self, name)
            if value not in (default if isinstance(default, tuple) else (default,)):
                out.append(name)
        return out


@dataclass
class Written:
    """What a writer reports: file digests, report lines, extra metadata keys, validation tolerances."""

    digests: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    rtol: float | None = None
    atol: float | None = None


Say = Callable[[str], None]


def _digest(path: Path, options: SaveOptions) -> dict[str, str]:
    return {path.name: artifact_sha256(path)} if options.checksum else {}


def write_onnx(traced: "Traced", path: Path, options: SaveOptions, say: Say) -> Written:
    """ONNX through the ONNX target, streamed to disk (weights hashed while written), then onnx.checker."""
    from .exporters.onnx import check, export_onnx

    graph = traced.graph
    say(f"lowering {len(graph.nodes)} primitives to ONNX")
    model = export_onnx(graph, path, opset=options.opset, external_data=options.external_data,
                        optimize_graph=options.optimize, contrib_ops=options.contrib_ops, checksum=options.checksum)
    say("checking the graph with onnx.checker")
    check(model)
    return Written(model.stats["sha256"], {"opset": model.opset, "onnx nodes": len(model.proto.graph.node)},
                   rtol=options.rtol, atol=options.atol)


def write_mlxfn(traced: "Traced", path: Path, options: SaveOptions, say: Say) -> Written:
    """MLX's own format, at the example's shapes."""
    import mlx.core as mx

    sig, fn = traced.sig, traced.fn

    def flat(*xs: Any) -> Any:
        return sig.call_flat(fn, xs)

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    try:
        mx.export_function(str(path), flat, *traced.arrays)
    except (RuntimeError, ValueError) as exc:
        raise CaptureError(f"mx.export_function could not write {path}: {exc}") from exc
    return Written(_digest(path, options), rtol=options.rtol, atol=options.atol)


def write_torch(traced: "Traced", path: Path, options: SaveOptions, say: Say) -> Written:
    """TorchScript (``.pt``) or torch.export (``.pt2``) from the torch lowering of the graph."""
    from .exporters.torch import lower_torch, save_exported, save_torchscript
    from .dtypes import to_tensor
    from .validate import validation_inputs

    graph = traced.graph
    say(f"lowering {len(graph.nodes)} primitives to torch")
    module = lower_torch(graph)
    if path.suffix.lower() == ".pt":
        save_torchscript(module, path)
    else:
        # torch.export specializes sizes of 1: trace the dynamic axes at their second size.
        inputs = validation_inputs(graph, traced.examples)[-1][1]
        save_exported(module, graph, tuple(to_tensor(a) for a in inputs), path)
    return Written(_digest(path, options), rtol=options.rtol, atol=options.atol)


def write_coreml(traced: "Traced", path: Path, options: SaveOptions, say: Say) -> Written:
    """A Core ML ML Program from the torch lowering, traced with the dynamic axes at their second size."""
    from .exporters.coreml import save_mlpackage
    from .exporters.torch import lower_torch
    from .validate import validation_inputs

    graph = traced.graph
    say(f"lowering {len(graph.nodes)} primitives to torch, then Core ML")
    save_mlpackage(lower_torch(graph), graph, validation_inputs(graph, traced.examples)[-1][1], path,
                   precision=options.precision)
    return Written(_digest(path, options), {"precision": options.precision}, rtol=options.rtol, atol=options.atol)


def write_tflite(traced: "Traced", path: Path, options: SaveOptions, say: Say) -> Written:
    """A LiteRT flatbuffer through onnx2tf; quantized variants validate with their looser default tolerances."""
    from .exporters.tflite import TOLERANCES, export_tflite

    info = export_tflite(traced.graph, traced.examples, path, quantize=options.quantize,
                         calibration=options.calibration, progress=say)
    # The runner reads the signature mapping from the metadata while validating.
    extra = {"tflite": {k: info[k] for k in ("quantize", "signature", "inputs", "outputs", "ops")}}
    rtol, atol = options.rtol, options.atol
    if rtol is None and atol is None and info["quantize"] in TOLERANCES:
        rtol, atol = TOLERANCES[info["quantize"]]
    return Written(_digest(path, options), {"quantize": info["quantize"]}, extra, rtol=rtol, atol=atol)


__all__ = ["SaveOptions", "Written", "write_coreml", "write_mlxfn", "write_onnx", "write_tflite", "write_torch"]
