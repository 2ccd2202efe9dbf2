"""What the subcommands share: ``module:attr`` targets, ``--input``/``--dynamic`` specs, example data.

Also the two pure functions behind ``mlxport export`` and ``mlxport validate``
(the CLI modules only parse arguments and call them).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..dtypes import MLX_DTYPES as DTYPES
from ..errors import ArtifactError
from ..formats import OPTION_FORMATS, Format, format_of, suffix_list
from . import UsageError



# ----------------------------------------------------------------------------
# module:attr targets
# ----------------------------------------------------------------------------


def _import_module(module: str) -> Any:
    if module.endswith(".py"):
        path = Path(module)
        if not path.is_file():
            raise UsageError(f"no such Python file: {module}", "Give MODULE:ATTR (importable) or FILE.py:ATTR.")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise UsageError(f"cannot import {module} as a Python file")
        mod = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(path.stem, mod)
        spec.loader.exec_module(mod)
        return mod
    # Like `python -m`: modules in the current directory are importable.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # Only a missing *target* module is a usage error; a missing dependency of it is a failure.
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise UsageError(f"cannot import module '{module}': no module named '{exc.name}'",
                             "Run from the directory that holds the package, install it, "
                             "or give a file path: path/to/models.py:build_model.") from exc
        raise


def _is_factory(obj: Callable) -> bool:
    """A callable that takes no required positional argument is a factory, not the model function."""
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return False
    for p in params:
        if p.kind == p.VAR_POSITIONAL:
            return False
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty:
            return False
    return True


def load_target(spec: str) -> Callable:
    """Resolve ``module:attr`` to the callable to export (modules in eval mode, parameters evaluated).

    ``attr`` may be an ``nn.Module`` instance, a class or zero-argument factory that returns
    a module or function, or the function of mx.arrays itself.
    """
    import mlx.core as mx
    import mlx.nn as nn

    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"expected MODULE:ATTR (like mypkg.models:build_model); got '{spec}'")
    mod = _import_module(module_name)
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n)))
            raise UsageError(f"module '{module_name}' has no attribute '{attr}'",
                             f"Callables in {module_name}: {', '.join(names) or 'none'}.")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        model: Any = obj
    elif inspect.isclass(obj) or (callable(obj) and _is_factory(obj)):
        try:
            model = obj()
        except TypeError as exc:
            raise UsageError(f"'{spec}' could not be called with no arguments: {exc}",
                             "Point at an nn.Module instance, a zero-argument factory or the function itself.") from exc
        if not callable(model) and not isinstance(model, nn.Module):
            raise UsageError(f"'{spec}' returned {type(model).__name__}, not an nn.Module or function")
    elif callable(obj):
        model = obj
    else:
        raise UsageError(f"'{spec}' is a {type(obj).__name__}, not an nn.Module, factory or function")
    if isinstance(model, nn.Module):
        model.eval()
        mx.eval(model.parameters())
    return model


def parameter_names(fn: Callable) -> list[str]:
    """The positional parameter names of a callable or module (for messages)."""
    from ..capture import traceable
    from ..errors import MlxportError

    try:
        fn = traceable(fn)
    except MlxportError:
        return []
    try:
        target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else fn.__call__
        return [p.name for p in inspect.signature(target).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    except (TypeError, ValueError):
        return []


# ----------------------------------------------------------------------------
# --input NAME:SHAPE[:DTYPE] and --dynamic NAME:AXIS=SYMBOL
# ----------------------------------------------------------------------------


@dataclass
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


def parse_input(spec: str) -> InputSpec:
    """``x:1x784:float32`` -> InputSpec; SHAPE ``scalar`` (or empty) is a 0-d input."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise UsageError(f"--input must be NAME:SHAPE[:DTYPE] like x:1x784:float32; got '{spec}'")
    name, shape_text = parts[0], parts[1].strip()
    dtype = parts[2] if len(parts) == 3 else "float32"
    if dtype not in DTYPES:
        raise UsageError(f"--input {spec}: unknown dtype '{dtype}'; use one of {', '.join(DTYPES)}")
    if shape_text in ("", "scalar"):
        return InputSpec(name, (), dtype)
    dims = shape_text.lower().split("x")
    if not all(d.isdigit() for d in dims):
        raise UsageError(f"--input {spec}: SHAPE must be sizes joined by 'x' like 1x784 (or 'scalar'); "
                         f"got '{shape_text}'", "Mark a dimension dynamic with --dynamic NAME:AXIS=SYMBOL.")
    return InputSpec(name, tuple(int(d) for d in dims), dtype)


def parse_dynamic(specs: Sequence[str]) -> dict[str, dict[int, str]]:
    """``["x:0=batch"]`` -> ``{"x": {0: "batch"}}``."""
    out: dict[str, dict[int, str]] = {}
    for spec in specs:
        name, sep, rest = spec.partition(":")
        axis_text, eq, symbol = rest.partition("=")
        try:
            axis = int(axis_text)
        except ValueError:
            axis = None
        if not sep or not eq or not name or axis is None or not symbol.isidentifier():
            raise UsageError(f"--dynamic must be NAME:AXIS=SYMBOL like x:0=batch; got '{spec}'")
        axes = out.setdefault(name, {})
        if axes.get(axis, symbol) != symbol:
            raise UsageError(f"--dynamic gives axis {axis} of '{name}' two names: {axes[axis]} and {symbol}")
        axes[axis] = symbol
    return out


def example_arrays(inputs: Sequence[InputSpec], npz: dict[str, np.ndarray] | None, seed: int) -> list[np.ndarray]:
    """Example values: from the .npz where given, else random normal floats and zero ints/bools."""
    from ..dtypes import numpy_dtype

    rng = np.random.default_rng(seed)
    out = []
    for spec in inputs:
        if npz is not None and spec.name in npz:
            arr = npz[spec.name]
            if tuple(arr.shape) != spec.shape:
                raise UsageError(f"--example gives '{spec.name}' the shape {list(arr.shape)}, but the input's "
                                 f"shape is {list(spec.shape)}")
            out.append(arr.astype(numpy_dtype(spec.dtype)))
        elif spec.dtype.startswith(("float", "bfloat")):
            out.append(rng.standard_normal(spec.shape).astype(np.float32).astype(numpy_dtype(spec.dtype)))
        else:
            out.append(np.zeros(spec.shape, dtype=numpy_dtype(spec.dtype)))
    return out


def load_npz(path: str | None) -> dict[str, np.ndarray] | None:
    if path is None:
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise UsageError(f"--example {path}: cannot read it as an .npz file ({exc})",
                         "Write one with numpy.savez(path, x=array, ...), one array per input name.") from exc


def progress_printer(quiet: bool = False) -> Callable[[str], None]:
    """A progress callback: stage messages with the elapsed time, on stderr."""
    start = time.perf_counter()

    def say(message: str) -> None:
        if not quiet:
            print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    return say


def check_suffix(path: str, flag: str) -> Format:
    """The format ``path``'s suffix names, or a usage error listing every suffix mlxport writes and reads."""
    fmt = format_of(path)
    if fmt is None:
        raise UsageError(f"{flag} {path}: unknown suffix '{Path(path).suffix}'; use one of {suffix_list()}")
    return fmt


# CLI flag -> the save option it sets (a flag for an option the output's format does not take is refused).
FORMAT_FLAGS = {"--opset": "opset", "--external-data": "external_data", "--no-optimize": "optimize",
                "--quantize": "quantize", "--calibration": "calibration", "--precision": "precision"}


def check_format_flags(fmt: Format, given: Sequence[str]) -> None:
    """Refuse format flags (``given``, e.g. ["--opset"]) that the output's format does not take."""
    for flag in given:
        option = FORMAT_FLAGS[flag]
        if option not in fmt.options:
            takers = " or ".join(f"a {f.suffix} file" for f in OPTION_FORMATS.get(option, ()))
            raise UsageError(f"{flag} applies to {', '.join(f.name for f in OPTION_FORMATS[option])} only, but "
                             f"-o/--output is a {fmt.suffix} file; drop {flag} or write {takers}")


# ----------------------------------------------------------------------------
# mlxport export
# ----------------------------------------------------------------------------


def _inputs_from_mlxfn(source: str) -> list[InputSpec]:
    from ..artifact import read_meta

    specs = []
    for i in read_meta(source).inputs:
        if not all(isinstance(d, int) for d in i.shape):
            raise UsageError(f"{source} has dynamic input dims {i.shape}; give the example shapes with --input")
        specs.append(InputSpec(i.name, tuple(int(d) for d in i.shape), i.dtype))
    if not specs:
        raise UsageError(f"{source} has no {Path(source).name}.mlxport.json beside it to read its inputs from; "
                         "give them with --input NAME:SHAPE[:DTYPE]")
    return specs


def export_target(
    target: str,
    output: str,
    inputs: Sequence[str] = (),
    dynamic: Sequence[str] = (),
    opset: int | None = None,
    validate: bool = True,
    atol: float | None = None,
    rtol: float | None = None,
    output_names: Sequence[str] | None = None,
    external_data: bool = False,
    optimize: bool = True,
    example: str | None = None,
    seed: int = 0,
    quiet: bool = False,
    quantize: str | None = None,
    calibration: str | None = None,
    precision: str | None = None,
) -> Any:
    """Export ``target`` (``module:attr`` or an .mlxfn file) to ``output``; returns the Report."""
    fmt = check_suffix(output, "-o/--output")
    given = {"--opset": opset is not None, "--external-data": external_data, "--no-optimize": not optimize,
             "--quantize": quantize is not None, "--calibration": calibration is not None,
             "--precision": precision is not None}
    check_format_flags(fmt, [flag for flag, on in given.items() if on])
    _check_quantize_flags(quantize, calibration)
    if not validate and (atol is not None or rtol is not None):
        raise UsageError("--atol/--rtol set a validation tolerance, but --no-validate skips validation; "
                         "use one or the other")
    say = progress_printer(quiet)
    npz = load_npz(example)
    specs = [parse_input(s) for s in inputs]
    if target.endswith(".onnx"):
        raise UsageError(f"export reads MLX (a MODULE:ATTR callable or an .mlxfn file); got the ONNX file {target}",
                         "To check an ONNX file against MLX use `mlxport validate`; to look at it, `mlxport inspect`.")
    if target.endswith(".mlxfn"):
        if not Path(target).exists():
            raise UsageError(f"no such file: {target}")
        fn: Any = target
        specs = specs or _inputs_from_mlxfn(target)
    else:
        say(f"loading {target}")
        fn = load_target(target)
        if not specs and npz:
            specs = [InputSpec(k, tuple(v.shape), v.dtype.name) for k, v in npz.items()]
        if not specs:
            params = parameter_names(fn)
            raise UsageError("give the example inputs with --input NAME:SHAPE[:DTYPE] (one per array argument, "
                             "in order) or --example FILE.npz",
                             f"{target} takes: {', '.join(params) or 'no named parameters'}.")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UsageError(f"--input names must be unique; got {', '.join(names)}")
    dynamic_axes = parse_dynamic(dynamic)
    unknown = sorted(set(dynamic_axes) - set(names))
    if unknown:
        raise UsageError(f"--dynamic names input {', '.join(unknown)}, but the inputs are {', '.join(names)}")
    arrays = example_arrays(specs, npz, seed)
    from ..api import export

    return export(fn, tuple(arrays), output, dynamic_axes=dynamic_axes or None, input_names=names,
                  output_names=list(output_names) if output_names else None, opset=opset, validate=validate,
                  atol=atol, rtol=rtol, external_data=True if external_data else None, optimize=optimize,
                  progress=say, quantize=quantize, calibration=calibration, precision=precision or "float32")


def _check_quantize_flags(quantize: str | None, calibration: str | None) -> None:
    """--calibration exactly when --quantize int8 (that both are .tflite-only is checked by the format table)."""
    if quantize == "int8" and calibration is None:
        raise UsageError("--quantize int8 needs --calibration FILE.npz (representative inputs, one array per input "
                         "name); mlxport never downloads calibration data",
                         "Or use --quantize dynamic_int8, which needs no calibration.")
    if calibration is not None and quantize != "int8":
        raise UsageError(f"--calibration is used only by --quantize int8, but --quantize is {quantize or 'not given'}; "
                         "add --quantize int8 or drop --calibration")
    if calibration is not None and not Path(calibration).exists():
        raise UsageError(f"--calibration {calibration}: no such file")


# ----------------------------------------------------------------------------
# mlxport validate
# ----------------------------------------------------------------------------


@dataclass
class ArtifactCheck:
    """The result of checking an artifact against an MLX callable at one or two sizes.

    ``note`` is set when the artifact's numbers cannot be computed on this platform (a Core ML package off
    macOS): its structure was checked against its signature instead, and ``runs`` is empty.
    """

    path: str
    target: str
    backend: str
    runs: list[Any] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs)

    def __str__(self) -> str:
        if self.note:
            return f"{self.path} ({self.backend}) vs {self.target}: structure OK\n note: {self.note}"
        lines = [f"{self.path} ({self.backend}) vs {self.target}: {'OK' if self.ok else 'FAILED'}"]
        for run in self.runs:
            lines.append(f" {run.label}:")
            lines.extend(o.line() for o in run.outputs)
        return "\n".join(lines)


def _artifact_inputs(path: str, meta: Any, runner: Any) -> list[tuple[str, list[Any], str]]:
    """(name, dims, dtype) per input, where a str dim is a symbol."""
    if meta.inputs:
        return [(i.name, list(i.shape), i.dtype) for i in meta.inputs]
    if runner is not None and runner.inputs:
        # ONNX without a sidecar: ONNX Runtime reports unnamed dynamic dims as None.
        return [(i.name, [d if d is not None else f"{i.name}_dim{k}" for k, d in enumerate(i.shape)], i.dtype)
                for i in runner.inputs]
    raise ArtifactError(f"{path} has no {Path(path).name}.mlxport.json beside it, so its inputs are unknown",
                        hint="Export it again with mlxport, which writes that file.")


def _describe_signature(specs: Sequence[tuple[str, list[Any], str]]) -> str:
    from ..artifact import IOSpec

    return ", ".join(IOSpec(n, dims, t).describe() for n, dims, t in specs)


def _check_arity(artifact: str, against: str, fn: Callable, specs: Sequence[tuple[str, list[Any], str]]) -> None:
    """Before anything runs: the callable must take as many arrays as the artifact has inputs."""
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    except (TypeError, ValueError):
        return
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return
    required = [p for p in params if p.default is p.empty]
    if not len(required) <= len(specs) <= len(params):
        raise UsageError(
            f"{artifact} takes {len(specs)} input{'s' * (len(specs) != 1)} ({_describe_signature(specs)}), but "
            f"{against} takes {len(params)} ({', '.join(p.name for p in params) or 'none'}); is it the callable "
            "the artifact was exported from?")


def validate_artifact(artifact: str, against: str, *, atol: float | None = None, rtol: float | None = None,
                      example: str | None = None, seed: int = 0) -> ArtifactCheck:
    """Run ``artifact`` and the MLX callable ``against`` on the same inputs; compare every output.

    Inputs follow the artifact's signature: the example size of each dynamic axis, then a second size. A
    format that cannot run here (Core ML off macOS) is checked by structure against its signature instead.
    """
    fmt = check_suffix(artifact, "ARTIFACT")
    if not Path(artifact).exists():
        raise ArtifactError(f"no such artifact: {artifact}")
    import mlx.core as mx

    from ..artifact import read_meta
    from ..capture import make_signature, traceable
    from ..errors import CaptureError
    from ..runners import load
    from ..validate import ValidationRun, compare, mlx_reference, random_like, second_size

    meta = read_meta(artifact)
    fn = traceable(load_target(against))
    if not fmt.runs_here():
        specs = _artifact_inputs(artifact, meta, None)
        _check_arity(artifact, against, fn, specs)
        problems = fmt.check_structure(artifact, meta.inputs, meta.outputs)
        if problems:
            raise ArtifactError(f"{artifact} does not match its signature: " + "; ".join(problems))
        return ArtifactCheck(artifact, against, fmt.backend,
                             note=f"{fmt.name} computes on {fmt.predicts_on_name} only: the package's inputs, "
                                  "outputs and ranges match its signature; validate its numbers on "
                                  f"{fmt.predicts_on_name}")
    runner = load(artifact)
    specs = _artifact_inputs(artifact, meta, runner)
    _check_arity(artifact, against, fn, specs)
    examples = meta.examples
    npz = load_npz(example)
    rng = np.random.default_rng(seed)
    symbols = {d for _, dims, _ in specs for d in dims if isinstance(d, str)}
    first = {s: examples.get(s, 1) for s in symbols}
    for name, dims, _ in specs:
        # Example values fix the sizes of the dynamic axes they span.
        arr = (npz or {}).get(name)
        if arr is not None and arr.ndim == len(dims):
            first.update({d: int(n) for d, n in zip(dims, arr.shape) if isinstance(d, str)})
    second = {s: second_size(v) for s, v in first.items()}
    base = example_arrays([InputSpec(n, tuple(d if isinstance(d, int) else first[d] for d in dims), t)
                           for n, dims, t in specs], npz, seed)
    names = [n for n, _, _ in specs]
    sig, _ = make_signature(fn, tuple(mx.array(0) for _ in names), names)
    result = ArtifactCheck(artifact, against, runner.backend)
    runs = [("example sizes", first, base)]
    if symbols:
        runs.append(("second sizes", second, [random_like(arr, [d if isinstance(d, int) else second[d] for d in dims],
                                                          rng) for arr, (_, dims, _) in zip(base, specs)]))
    for label, binding, feed in runs:
        try:
            expected = mlx_reference(fn, sig, feed)
        except (ValueError, TypeError, RuntimeError, CaptureError) as exc:
            # MLX refused the artifact's inputs: their shapes or dtypes do not fit the callable.
            raise UsageError(f"{against} does not accept {artifact}'s inputs ({_describe_signature(specs)}): {exc}",
                             "Is it the callable the artifact was exported from? `mlxport inspect "
                             f"{artifact}` shows the signature it records.") from None
        got = runner(*feed)
        out_names = [o.name for o in runner.outputs] or [f"output_{i}" for i in range(len(got))]
        if len(expected) != len(got):
            raise UsageError(f"{against} returns {len(expected)} arrays but {artifact} has {len(got)} outputs "
                             f"({', '.join(out_names)}); is it the callable the artifact was exported from?")
        where = ", ".join(f"{k}={v}" for k, v in sorted(binding.items()))
        result.runs.append(ValidationRun(f"{label}{' (' + where + ')' if where else ''}",
                                         [compare(n, e, g, rtol, atol) for n, e, g in zip(out_names, expected, got)]))
    return result
