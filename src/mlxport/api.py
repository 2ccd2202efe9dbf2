"""The Python API: ``mlxport.export`` (format chosen by the file suffix)."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import mlx.core as mx
import numpy as np

from .artifact import ArtifactMeta, IOSpec, artifact_bytes, read_meta, write_meta
from .capture import Signature, capture, to_mx, to_numpy, traceable
from .errors import ArtifactError, CaptureError, DynamicShapeError, ValidationError
from .formats import Format, OPTION_FORMATS, require_format
from .graph import Graph, SymExpr
from .runners import load
from .validate import Report, raise_if_failed
from .validate import validate as validate_runs
from .writers import SaveOptions


def _resolve_source(fn_or_module: Any) -> Callable:
    """A callable to trace: a function, an nn.Module, or a path to an ``.mlxfn`` file."""
    if isinstance(fn_or_module, (str, os.PathLike)):
        path = Path(fn_or_module)
        if path.suffix != ".mlxfn":
            raise ArtifactError(f"can convert from an .mlxfn file or a Python callable; got the path {path}")
        if not path.exists():
            raise ArtifactError(f"no such file: {path}")
        imported = mx.import_function(str(path))
        meta = read_meta(path)
        names = [i.name for i in meta.inputs]

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
        from_mlxfn.__mlxport_output_names__ = [o.name for o in meta.outputs]  # type: ignore[attr-defined]
        return from_mlxfn
    return fn_or_module


def graph_meta(graph: Graph, fmt: Format, report: Report | None = None, digests: dict[str, str] | None = None,
               extra: dict[str, Any] | None = None, path: Path | None = None) -> ArtifactMeta:
    """The metadata of an artifact written from ``graph``: signature, dynamic axes, source, checksums, report."""
    def spec(t: Any) -> IOSpec:
        return IOSpec(t.name, [str(d) if isinstance(d, SymExpr) else int(d) for d in t.shape], t.dtype)

    digests = digests or {}
    return ArtifactMeta(
        format=fmt.name, source=graph.metadata.get("source"), mlx_version=graph.metadata.get("mlx_version"),
        inputs=[spec(i) for i in graph.inputs], outputs=[spec(o) for o in graph.outputs],
        dynamic_axes=[vars(a) for a in graph.dynamic_axes], sha256=digests.get(path.name) if path else None,
        files=digests, validation=report.to_dict() if report is not None else None, extra=dict(extra or {}))


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
        precision: Core ML compute precision, "float32" or "float16" (other formats refuse it).
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
    # Before tracing, so that a wrong suffix or a misplaced format option costs nothing.
    _check_options(_format_of(path, dynamic=bool(dynamic_axes)),
                   SaveOptions(opset=opset, external_data=external_data, optimize=optimize, contrib_ops=contrib_ops,
                               precision=precision, quantize=quantize, calibration=calibration))
    traced = trace(fn_or_module, example_args, dynamic_axes=dynamic_axes, input_names=input_names,
                   output_names=output_names, progress=progress)
    return traced.save(path, opset=opset, validate=validate, atol=atol, rtol=rtol, external_data=external_data,
                       optimize=optimize, contrib_ops=contrib_ops, checksum=checksum, progress=progress,
                       precision=precision, quantize=quantize, calibration=calibration)


def _format_of(path: Path, dynamic: bool) -> Format:
    fmt = require_format(path, "the file to write")
    if dynamic and not fmt.dynamic_axes:
        raise CaptureError(
            "dynamic_axes cannot be exported to .mlxfn: that needs MLX's shapeless export, which gives wrong "
            "results and can corrupt memory at other sizes (mlx issues #2596, #2607). Export the .mlxfn with "
            "fixed shapes (no dynamic_axes), or export to .onnx, whose dynamic axes mlxport derives and validates")
    return fmt


def _check_options(fmt: Format, options: SaveOptions) -> None:
    """Refuse format options given for a format that does not take them (naming the formats that do)."""
    for name in options.given():
        if name not in fmt.options:
            takers = " and ".join(f.suffix for f in OPTION_FORMATS.get(name, ()))
            raise ArtifactError(f"the option {name} applies to {takers} files; this export writes {fmt.suffix} "
                                f"({fmt.name})", hint=f"Drop {name}, or save to a {takers} path.")


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
    fn = traceable(_resolve_source(fn_or_module))
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

        Format options apply to the formats that list them in ``mlxport.formats`` (``opset``, ``external_data``,
        ``optimize``, ``contrib_ops``: ONNX; ``quantize``, ``calibration``: TFLite; ``precision``: Core ML);
        another format refuses them with an ArtifactError naming the formats that take them.
        """
        say = progress or (lambda _msg: None)
        path = Path(path)
        graph = self.graph
        fmt = _format_of(path, dynamic=bool(graph.dynamic_axes))
        options = SaveOptions(opset=opset, external_data=external_data, optimize=optimize, contrib_ops=contrib_ops,
                              checksum=checksum, precision=precision, quantize=quantize, calibration=calibration,
                              rtol=rtol, atol=atol)
        _check_options(fmt, options)
        start = time.perf_counter()
        report = Report(str(path), fmt.name)
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
        written = fmt.load_writer()(self, path, options, say)
        report.info.update(written.info)
        size = artifact_bytes(path)
        report.info["size"] = f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"
        report.info["export seconds"] = round(self.capture_seconds + time.perf_counter() - start, 3)
        # The signature first: runners read it (names, a TFLite signature map) while validating.
        write_meta(path, graph_meta(graph, fmt, None, written.digests, written.extra, path))
        if validate and not fmt.runs_here():
            say(f"checking the {fmt.name} file's structure against the graph")
            signature = graph_meta(graph, fmt)
            problems = fmt.check_structure(path, signature.inputs, signature.outputs)
            if problems:
                raise ValidationError(f"{path.name} does not match the graph: " + "; ".join(problems), report)
            report.info["validation"] = f"structure only: numeric validation needs {fmt.predicts_on_name}"
            validate = False
        if validate:
            say("validating against MLX")
            report.runs = validate_runs(load(path), self.fn, self.sig, graph, self.examples, rtol=written.rtol,
                                        atol=written.atol, raise_on_error=False, references=self._references)
            report.validated = True
        write_meta(path, graph_meta(graph, fmt, report, written.digests, written.extra, path))
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


def run_mlx(fn: Callable, *args: Any) -> list[np.ndarray]:
    """Call an MLX function on numpy/mx inputs and return numpy outputs (a helper for tests)."""
    outs = fn(*[to_mx(a) for a in args])
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    mx.eval(outs)
    return [np.array(to_numpy(o)) for o in outs]
