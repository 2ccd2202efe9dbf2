"""The Python API: ``mlxport.export`` (format chosen by the file suffix)."""

from __future__ import annotations

import json
import os
import sys
import warnings
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import mlx.core as mx
import numpy as np

from .capture import Signature, capture, to_mx, to_numpy
from .errors import ArtifactError, CaptureError, DynamicShapeError, ValidationError
from .graph import Graph, SymExpr
from .runners import SIDE_SUFFIX, IOSpec, file_sha256, load, read_sidecar
from .validate import Report, raise_if_failed
from .validate import validate as validate_runs

FORMATS = {".onnx": "ONNX", ".mlxfn": "MLX", ".pt": "TorchScript", ".pt2": "torch.export",
           ".tflite": "TFLite", ".mlpackage": "Core ML"}


def _resolve_source(fn_or_module: Any) -> Callable:
    """A callable to trace: a function, an nn.Module, or a path to an ``.mlxfn`` file."""
    if isinstance(fn_or_module, (str, os.PathLike)):
        path = Path(fn_or_module)
        if path.suffix != ".mlxfn":
            raise ArtifactError(f"can convert from an .mlxfn file or a Python callable; got the path {path}")
        if not path.exists():
            raise ArtifactError(f"no such file: {path}")
        imported = mx.import_function(str(path))
        meta = read_sidecar(path)
        names = [i["name"] for i in meta.get("inputs", [])]

        def from_mlxfn(*args: mx.array) -> Any:
            try:
                out = imported(*args)
            except ValueError as exc:
                if "No imported function found" not in str(exc):
                    raise
                raise CaptureError(
                    f"{path.name} holds fixed-shape traces that do not accept inputs of shapes "
                    f"{', '.join(str(list(a.shape)) for a in args)}. Export the ONNX file with the example's "
                    "shapes (no dynamic_axes), or export again from the Python model (dynamic axes work there)"
                ) from None
            return out[0] if len(out) == 1 else tuple(out)

        def warm_up(example_args: Sequence[Any]) -> None:
            # The imported weights are lazy Load primitives that a trace cannot
            # record; one evaluation materializes them.
            args = example_args if isinstance(example_args, (tuple, list)) else (example_args,)
            try:
                mx.eval(imported(*[to_mx(a) for a in args]))
            except (RuntimeError, ValueError) as exc:
                shapes = ", ".join(str(list(np.shape(a))) for a in args)
                raise CaptureError(f"{path.name} does not accept inputs of shapes {shapes}: {exc}") from exc

        from_mlxfn.__qualname__ = path.name
        from_mlxfn.__mlxport_warm_up__ = warm_up  # type: ignore[attr-defined]
        from_mlxfn.__mlxport_input_names__ = names  # type: ignore[attr-defined]
        from_mlxfn.__mlxport_output_names__ = [o["name"] for o in meta.get("outputs", [])]  # type: ignore[attr-defined]
        return from_mlxfn
    return fn_or_module


def _io_specs(graph: Graph) -> tuple[list[IOSpec], list[IOSpec]]:
    def spec(t: Any) -> IOSpec:
        return IOSpec(t.name, [str(d) if isinstance(d, SymExpr) else int(d) for d in t.shape], t.dtype)

    return [spec(i) for i in graph.inputs], [spec(o) for o in graph.outputs]


def write_sidecar(path: Path, graph: Graph, report: Report, digests: dict[str, str],
                  extra: dict[str, Any] | None = None) -> Path:
    """Metadata beside the artifact: signature, dynamic axes, source, checksums and the validation report.

    ``extra`` adds format-specific keys (``tflite``: the flatbuffer's signature names).
    """
    inputs, outputs = _io_specs(graph)
    meta = {
        "format": report.format,
        "source": graph.metadata.get("source"),
        "mlx_version": graph.metadata.get("mlx_version"),
        "inputs": [vars(i) for i in inputs],
        "outputs": [vars(o) for o in outputs],
        "dynamic_axes": [vars(a) for a in graph.dynamic_axes],
        "sha256": digests.get(path.name),
        "files": digests,
        "validation": report.to_dict(),
        **(extra or {}),
    }
    side = Path(str(path) + SIDE_SUFFIX)
    side.write_text(json.dumps(meta, indent=2, default=str))
    return side


def export(
    fn_or_module: Any,
    example_args: Sequence[Any] | Any,
    path: str | os.PathLike,
    *,
    dynamic_axes: Mapping[str, Any] | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    opset: int | None = None,
    validate: bool = True,
    atol: float | None = None,
    rtol: float | None = None,
    external_data: bool | None = None,
    optimize: bool = True,
    contrib_ops: bool | None = None,
    checksum: bool = True,
    progress: Callable[[str], None] | None = None,
    precision: str = "float32",
    quantize: str | None = None,
    calibration: str | os.PathLike | Mapping[str, Any] | None = None,
) -> Report:
    """Capture an MLX function or module and write it in the format the suffix names.

    Args:
        fn_or_module: an ``nn.Module``, a function of mx.arrays, or a path to an ``.mlxfn`` file.
        example_args: example inputs (a tuple; a single array is accepted too).
        path: the output file: ``.onnx``, ``.mlxfn``, ``.pt`` (TorchScript), ``.pt2`` (torch.export),
            ``.tflite`` (LiteRT) or ``.mlpackage`` (Core ML; validated by structure only off macOS).
        dynamic_axes: ``{input: {axis: name}}`` for dimensions that may vary at run time.
        input_names: names of the inputs (default: the function's parameter names).
        output_names: names of the outputs (default: dict keys, ``output`` or ``output_N``).
        opset: ONNX opset (default: the newest the pinned ONNX Runtime runs on CPU; >= 17).
        validate: compare the artifact with MLX on the example and, for dynamic axes, a second size.
        atol: absolute tolerance (default by dtype).
        rtol: relative tolerance (default by dtype).
        external_data: write ONNX weights to a side file (default: only above ~1.8 GB).
        optimize: fold constants and clean layout chains in the ONNX graph.
        contrib_ops: let ONNX use ONNX Runtime's com.microsoft ops where faster (4-bit MatMulNBits);
            False keeps to standard ONNX for other runtimes and converters.
        checksum: record each written file's sha256 in the metadata file (hashed while writing; at
            ~1 GB/s it is the slowest part of exporting a large model).
        progress: called with a short message at each stage.
        precision: Core ML compute precision, "float32" or "float16" (other formats ignore it).
        quantize: TFLite only: "float32" (default), "float16" (float16 weights), "dynamic_int8" (int8
            weights) or "int8" (int8 weights and activations; inputs and outputs stay float32). The
            quantized variants are validated with the looser default tolerances of
            ``mlxport.exporters.tflite.TOLERANCES`` unless atol/rtol are given.
        calibration: TFLite "int8" only: representative inputs, a .npz file or a dict {input name:
            array}; each array stacks N whole inputs ([N, *shape]) or N rows of the batch axis.

    Returns:
        A Report: per output shape and max abs/rel error against MLX, graph statistics.
    """
    path = Path(path)
    _format_of(path, dynamic=bool(dynamic_axes))
    traced = trace(fn_or_module, example_args, dynamic_axes=dynamic_axes, input_names=input_names,
                   output_names=output_names, progress=progress)
    return traced.save(path, opset=opset, validate=validate, atol=atol, rtol=rtol, external_data=external_data,
                       optimize=optimize, contrib_ops=contrib_ops, checksum=checksum, progress=progress,
                       precision=precision, quantize=quantize, calibration=calibration)


def _format_of(path: Path, dynamic: bool) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ArtifactError(f"cannot tell the format of '{path.name}': use one of the suffixes {', '.join(FORMATS)}")
    if fmt == "MLX" and dynamic:
        raise CaptureError(
            "dynamic_axes cannot be exported to .mlxfn: that needs MLX's shapeless export, which gives wrong "
            "results and can corrupt memory at other sizes (mlx issues #2596, #2607). Export the .mlxfn with "
            "fixed shapes (no dynamic_axes), or export to .onnx, whose dynamic axes mlxport derives and validates")
    return fmt


def trace(
    fn_or_module: Any,
    example_args: Sequence[Any] | Any,
    *,
    dynamic_axes: Mapping[str, Any] | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> "Traced":
    """Capture once; then ``.save(path)`` writes any format, each validated against MLX.

    Args:
        fn_or_module: an ``nn.Module``, a function of mx.arrays, or a path to an ``.mlxfn`` file.
        example_args: example inputs (a tuple; a single array is accepted too).
        dynamic_axes: ``{input: {axis: name}}`` for dimensions that may vary at run time.
        input_names: names of the inputs (default: the function's parameter names).
        output_names: names of the outputs (default: dict keys, ``output`` or ``output_N``).
        progress: called with a short message at each stage.

    Returns:
        A Traced: call it like the MLX function; ``save(path, ...)`` takes export's format options.
    """
    say = progress or (lambda _msg: None)
    fn = _resolve_source(fn_or_module)
    if input_names is None and getattr(fn, "__mlxport_input_names__", None):
        input_names = fn.__mlxport_input_names__  # type: ignore[attr-defined]
    if output_names is None and getattr(fn, "__mlxport_output_names__", None):
        output_names = fn.__mlxport_output_names__  # type: ignore[attr-defined]
    if getattr(fn, "__mlxport_warm_up__", None):
        fn.__mlxport_warm_up__(example_args)  # type: ignore[attr-defined]
    say("capturing the graph")
    start = time.perf_counter()
    if not isinstance(example_args, (tuple, list)):
        example_args = (example_args,)
    graph, sig, arrays = capture(fn, example_args, input_names=input_names, output_names=output_names,
                                 dynamic_axes=dynamic_axes)
    return Traced(fn, graph, sig, arrays, time.perf_counter() - start)


class Traced:
    """A captured MLX function: one graph, saved to any format, MLX's reference outputs computed once."""

    def __init__(self, fn: Callable, graph: Graph, sig: Signature, arrays: list[mx.array], seconds: float) -> None:
        self.fn, self.graph, self.sig, self.arrays = fn, graph, sig, arrays
        self.examples = [np.array(to_numpy(a)) for a in arrays]
        self.capture_seconds = seconds
        self._references: dict[str, list[np.ndarray]] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the original MLX function."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        ins = ", ".join(i.describe() for i in self.graph.inputs)
        return f"<Traced {self.graph.metadata.get('source')}: ({ins}), {len(self.graph.nodes)} primitives>"

    def save(self, path: str | os.PathLike, *, opset: int | None = None, validate: bool = True,
             atol: float | None = None, rtol: float | None = None, external_data: bool | None = None,
             optimize: bool = True, contrib_ops: bool | None = None, checksum: bool = True,
             progress: Callable[[str], None] | None = None, precision: str = "float32",
             quantize: str | None = None,
             calibration: str | os.PathLike | Mapping[str, Any] | None = None) -> Report:
        """Write the graph in the format the suffix names, then validate it (see ``export``).

        ``precision`` ("float32" or "float16") is Core ML's compute precision; other formats ignore it.
        ``quantize`` and ``calibration`` choose the TFLite variant; other formats refuse them.
        """
        say = progress or (lambda _msg: None)
        path = Path(path)
        graph, fn, sig, arrays, examples = self.graph, self.fn, self.sig, self.arrays, self.examples
        fmt = _format_of(path, dynamic=bool(graph.dynamic_axes))
        if fmt != "TFLite" and (quantize not in (None, "float32") or calibration is not None):
            raise ArtifactError(f"quantize and calibration apply to .tflite files; {path.name} is {fmt}",
                                hint="Drop quantize/calibration, or save to a .tflite path.")
        extra: dict[str, Any] = {}
        start = time.perf_counter()
        report = Report(str(path), fmt)
        report.info["primitives"] = len(graph.nodes)
        report.info["parameters"] = graph.num_parameters
        if graph.dynamic_axes:
            report.info["dynamic axes"] = ", ".join(f"{a.input}[{a.axis}]={a.symbol}" for a in graph.dynamic_axes)
        if graph.metadata.get("traced_at_large_sizes"):
            report.info["note"] = ("the traced graph changes below some size (Python code branches on a shape), "
                                   "so it was traced at large sizes; validation checks it at the example's sizes")
            if not validate:
                warnings.warn("the graph was traced at large sizes because the model branches on a size; only "
                              "validation shows it is right at small ones, and validate=False skips it", stacklevel=2)
        if fmt == "ONNX":
            from .exporters.onnx import check, export_onnx

            say(f"lowering {len(graph.nodes)} primitives to ONNX")
            model = export_onnx(graph, path, opset=opset, external_data=external_data, optimize_graph=optimize,
                                contrib_ops=contrib_ops, checksum=checksum)
            digests = model.stats["sha256"]
            report.info["opset"] = model.opset
            report.info["onnx nodes"] = len(model.proto.graph.node)
            say("checking the graph with onnx.checker")
            check(model)
        elif fmt == "MLX":
            _export_mlxfn(fn, sig, arrays, graph, path)
            digests = {path.name: file_sha256(path)} if checksum else {}
        elif fmt == "Core ML":
            say(f"lowering {len(graph.nodes)} primitives to torch, then Core ML")
            _export_coreml(graph, examples, path, precision)
            report.info["precision"] = precision
            digests = {path.name: _dir_sha256(path)} if checksum else {}
        elif fmt == "TFLite":
            rtol, atol, extra = _export_tflite(graph, examples, path, quantize, calibration, rtol, atol, say)
            report.info["quantize"] = extra["tflite"]["quantize"]
            digests = {path.name: file_sha256(path)} if checksum else {}
        else:
            say(f"lowering {len(graph.nodes)} primitives to torch")
            _export_torch(graph, examples, path, fmt)
            digests = {path.name: file_sha256(path)} if checksum else {}
        report.info["size"] = _size(path)
        report.info["export seconds"] = round(self.capture_seconds + time.perf_counter() - start, 3)
        if validate and fmt == "Core ML" and sys.platform != "darwin":
            # coremltools predicts only on macOS: check the spec against the graph instead.
            from .exporters.coreml import check_structure

            say("checking the Core ML spec against the graph")
            problems = check_structure(path, graph)
            if problems:
                raise ValidationError(f"{path.name} does not match the graph: " + "; ".join(problems), report)
            report.info["validation"] = "structure only: numeric validation needs macOS"
            validate = False
        if validate:
            say("validating against MLX")
            report.runs = validate_runs(load(path), fn, sig, graph, examples, rtol=rtol, atol=atol,
                                        raise_on_error=False, references=self._references)
            report.validated = True
        write_sidecar(path, graph, report, digests, extra)
        if validate:
            try:
                raise_if_failed(report.runs, report)
            except ValidationError as exc:
                if graph.metadata.get("traced_at_large_sizes"):
                    raise DynamicShapeError(
                        "the traced graph changes with the dynamic sizes "
                        f"({graph.metadata.get('size_branch')}); traced at large sizes, it does not match MLX at "
                        f"the example's sizes:\n{exc}\nThe model branches on a shape: keep that axis fixed") from None
                if report.info.get("quantize") in ("int8", "dynamic_int8"):
                    exc.hint = ("Quantization moved the outputs past the default tolerance: pass atol/rtol to "
                                "accept it, or quantize less (int8 -> dynamic_int8 -> float16; full int8 suits "
                                "dense and convolutional models, not attention or norms).")
                raise
        return report


def _size(path: Path) -> str:
    total = path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in _files(path))
    data = Path(str(path) + ".data")
    if data.exists():
        total += data.stat().st_size
    return f"{total / 1e6:.2f} MB" if total >= 1e5 else f"{total / 1e3:.1f} kB"


def _files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file())


def _dir_sha256(folder: Path) -> str:
    """One sha256 over a directory (an .mlpackage): each file's relative path and digest, in sorted order."""
    import hashlib

    digest = hashlib.sha256()
    for f in _files(folder):
        digest.update(f"{f.relative_to(folder).as_posix()}\0{file_sha256(f)}\n".encode())
    return digest.hexdigest()


def _export_coreml(graph: Graph, examples: list[np.ndarray], path: Path, precision: str) -> None:
    """A Core ML ML Program from the torch lowering, traced with the dynamic axes at their second size."""
    from .exporters.coreml import save_mlpackage
    from .exporters.torch import lower_torch
    from .validate import validation_inputs

    save_mlpackage(lower_torch(graph), graph, validation_inputs(graph, examples)[-1][1], path, precision=precision)
    inputs_spec, outputs_spec = _io_specs(graph)
    Path(str(path) + SIDE_SUFFIX).write_text(json.dumps({"inputs": [vars(i) for i in inputs_spec],
                                                         "outputs": [vars(o) for o in outputs_spec]}))


def _export_tflite(graph: Graph, examples: list[np.ndarray], path: Path, quantize: str | None, calibration: Any,
                   rtol: float | None, atol: float | None,
                   say: Callable[[str], None]) -> tuple[float | None, float | None, dict[str, Any]]:
    """A LiteRT flatbuffer through onnx2tf; returns the tolerances to validate it with and the sidecar's extra."""
    from .exporters.tflite import TOLERANCES, export_tflite

    info = export_tflite(graph, examples, path, quantize=quantize, calibration=calibration, progress=say)
    extra = {"tflite": {k: info[k] for k in ("quantize", "signature", "inputs", "outputs", "ops")}}
    # The runner needs the signature mapping while validating, before the full metadata is written.
    inputs_spec, outputs_spec = _io_specs(graph)
    Path(str(path) + SIDE_SUFFIX).write_text(json.dumps({"inputs": [vars(i) for i in inputs_spec],
                                                         "outputs": [vars(o) for o in outputs_spec], **extra}))
    if rtol is None and atol is None and info["quantize"] in TOLERANCES:
        rtol, atol = TOLERANCES[info["quantize"]]
    return rtol, atol, extra


def _export_torch(graph: Graph, examples: list[np.ndarray], path: Path, fmt: str) -> None:
    """TorchScript or torch.export from the torch lowering of the graph."""
    from .exporters.torch import lower_torch, save_exported, save_torchscript
    from .dtypes import to_tensor
    from .validate import validation_inputs

    module = lower_torch(graph)
    if fmt == "TorchScript":
        save_torchscript(module, path)
    else:
        # torch.export specializes sizes of 1: trace the dynamic axes at their second size.
        inputs = validation_inputs(graph, examples)[-1][1]
        save_exported(module, graph, tuple(to_tensor(a) for a in inputs), path)
    inputs_spec, outputs_spec = _io_specs(graph)
    Path(str(path) + SIDE_SUFFIX).write_text(json.dumps({"inputs": [vars(i) for i in inputs_spec],
                                                         "outputs": [vars(o) for o in outputs_spec]}))


def _export_mlxfn(fn: Callable, sig: Signature, arrays: list[mx.array], graph: Graph, path: Path) -> None:
    """MLX's own format, at the example's shapes."""
    def flat(*xs: mx.array) -> tuple[mx.array, ...]:
        return sig.call_flat(fn, xs)

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    try:
        mx.export_function(str(path), flat, *arrays)
    except (RuntimeError, ValueError) as exc:
        raise CaptureError(f"mx.export_function could not write {path}: {exc}") from exc
    inputs, outputs = _io_specs(graph)
    side = Path(str(path) + SIDE_SUFFIX)
    side.write_text(json.dumps({"inputs": [vars(i) for i in inputs], "outputs": [vars(o) for o in outputs]}))


def run_mlx(fn: Callable, *args: Any) -> list[np.ndarray]:
    """Call an MLX function on numpy/mx inputs and return numpy outputs (a helper for tests)."""
    outs = fn(*[to_mx(a) for a in args])
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    mx.eval(outs)
    return [np.array(to_numpy(o)) for o in outs]
