"""Check an exported artifact against MLX and build a report for each output."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import mlx.core as mx
import numpy as np

from .capture import Signature, to_mx, to_numpy
from .errors import ShapeMismatchError, ToleranceError, ValidationError
from .graph import DynamicAxis, Graph
from .runners import Runner

# (rtol, atol) by dtype, for whole models: a float32 model accumulates rounding
# differences of a different summation order in every matmul.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float32": (1e-4, 1e-5),
    "float64": (1e-7, 1e-9),
    "float16": (1e-2, 1e-2),
    "bfloat16": (5e-2, 5e-2),
}


def default_tolerance(dtype: str) -> tuple[float, float]:
    """(rtol, atol) for an output dtype; integers and bools must match exactly."""
    return DEFAULT_TOLERANCES.get(dtype, (0.0, 0.0))


@dataclass
class OutputCheck:
    name: str
    expected_shape: tuple[int, ...]
    shape: tuple[int, ...]
    expected_dtype: str
    dtype: str
    max_abs: float
    max_rel: float
    rtol: float
    atol: float
    mismatched: int = 0

    @property
    def shape_ok(self) -> bool:
        return self.expected_shape == self.shape and self.expected_dtype == self.dtype

    @property
    def ok(self) -> bool:
        return self.shape_ok and self.mismatched == 0

    def line(self) -> str:
        mark = "✓" if self.ok else "x"
        shape = f"{self.expected_dtype}{list(self.expected_shape)}"
        if not self.shape_ok:
            return f"  -[{mark}] {self.name}: expected {shape}, got {self.dtype}{list(self.shape)}"
        return (f"  -[{mark}] {self.name}: {shape} max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g} "
                f"(rtol {self.rtol:g}, atol {self.atol:g})")


@dataclass
class ValidationRun:
    label: str
    outputs: list[OutputCheck]

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)


@dataclass
class Report:
    """What an export produced and how closely it matches MLX."""

    path: str
    format: str
    runs: list[ValidationRun] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    validated: bool = False

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs)

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for r in self.runs for o in r.outputs), default=0.0)

    def __str__(self) -> str:
        lines = [f"{self.format} export: {self.path}"]
        for k, v in self.info.items():
            lines.append(f"  {k}: {v}")
        if not self.validated and "validation" not in self.info:
            lines.append("  validation: skipped")
        for run in self.runs:
            lines.append(f" validation vs MLX ({run.label}):")
            lines.extend(o.line() for o in run.outputs)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "format": self.format, "validated": self.validated, "ok": self.ok,
            "info": {k: v for k, v in self.info.items()},
            "runs": [{"label": r.label, "outputs": [{
                "name": o.name, "shape": list(o.shape), "dtype": o.dtype, "max_abs": o.max_abs,
                "max_rel": o.max_rel, "rtol": o.rtol, "atol": o.atol, "ok": o.ok} for o in r.outputs]}
                for r in self.runs],
        }


def compare(name: str, expected: np.ndarray, got: np.ndarray, rtol: float | None, atol: float | None) -> OutputCheck:
    """Shape and dtype first, then |got - expected| <= atol + rtol * |expected| (NaNs equal)."""
    dtype = expected.dtype.name
    d_rtol, d_atol = default_tolerance(dtype)
    rtol = d_rtol if rtol is None else rtol
    atol = d_atol if atol is None else atol
    check = OutputCheck(name, tuple(expected.shape), tuple(got.shape), dtype, got.dtype.name, 0.0, 0.0, rtol, atol)
    if check.expected_shape != check.shape:
        return check
    e = expected.astype(np.float64)
    g = got.astype(np.float64)
    both_nan = np.isnan(e) & np.isnan(g)
    same_inf = np.isinf(e) & (e == g)
    with np.errstate(invalid="ignore"):  # inf - inf where both are the same infinity
        diff = np.where(both_nan | same_inf, 0.0, np.abs(e - g))
    diff = np.nan_to_num(diff, nan=np.inf)
    if diff.size:
        check.max_abs = float(diff.max())
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = diff / np.maximum(np.abs(e), 1e-12)
        check.max_rel = float(np.nan_to_num(rel, nan=0.0).max()) if check.max_abs else 0.0
    check.mismatched = int(np.count_nonzero(diff > atol + rtol * np.abs(np.nan_to_num(e))))
    return check


def second_size(example: int) -> int:
    """The other size a dynamic axis is validated at."""
    return 2 * example if example > 1 else 3


def random_like(arr: np.ndarray, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Random data of ``arr``'s dtype and value range, at another shape."""
    if arr.dtype == np.bool_:
        return rng.random(shape) < 0.5
    if arr.dtype.kind in "iu":
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        return rng.integers(lo, hi + 1, size=shape).astype(arr.dtype)
    scale = float(np.std(arr.astype(np.float32))) if arr.size else 0.0
    return (rng.standard_normal(shape) * (scale or 1.0)).astype(arr.dtype)


def validation_inputs(graph: Graph, examples: Sequence[np.ndarray], seed: int = 0) -> list[tuple[str, list[np.ndarray]]]:
    """The example itself, then random inputs (at second sizes for dynamic axes)."""
    rng = np.random.default_rng(seed)
    runs = [("example inputs", list(examples))]
    sizes = {a.symbol: second_size(a.example) for a in graph.dynamic_axes if not a.derived}
    shapes = []
    for inp, ex in zip(graph.inputs, examples):
        shape = list(ex.shape)
        for a in graph.dynamic_axes:
            if a.input == inp.name:
                shape[a.axis] = a.size(sizes)
        shapes.append(shape)
    label = ", ".join(f"{k}={v}" for k, v in sizes.items()) or "same shapes"
    runs.append((f"random inputs, {label}", [random_like(ex, s, rng) for ex, s in zip(examples, shapes)]))
    return runs


def mlx_reference(fn: Callable, sig: Signature, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    outs = sig.call_flat(fn, [to_mx(a) for a in inputs])
    mx.eval(outs)
    return [np.array(to_numpy(o)) for o in outs]


def validate(runner: Runner, fn: Callable, sig: Signature, graph: Graph, examples: Sequence[np.ndarray], *,
             rtol: float | None = None, atol: float | None = None, raise_on_error: bool = True,
             references: dict[str, list[np.ndarray]] | None = None) -> list[ValidationRun]:
    """Run MLX and the artifact side by side; raise after checking every output of every run.

    ``references`` caches MLX's outputs by run label, so saving one trace to several formats
    computes them once.
    """
    runs = []
    for label, inputs in validation_inputs(graph, examples):
        if references is not None and label in references:
            expected = references[label]
        else:
            expected = mlx_reference(fn, sig, inputs)
            if references is not None:
                references[label] = expected
        try:
            got = runner(*inputs)
        except Exception as exc:  # runtimes raise their own untyped errors
            shapes = ", ".join(f"{i.name}: {a.dtype}{list(a.shape)}" for i, a in zip(graph.inputs, inputs))
            raise ValidationError(
                f"{runner.backend} failed to run the exported model on {label} ({shapes}): {exc}") from exc
        runs.append(ValidationRun(label, [compare(o.name, e, g, rtol, atol)
                                          for o, e, g in zip(graph.outputs, expected, got)]))
    if raise_on_error:
        raise_if_failed(runs)
    return runs


def raise_if_failed(runs: list[ValidationRun], report: Report | None = None) -> None:
    """Raise one error naming every failing output (the error carries the report, or the runs)."""
    bad = [(r, o) for r in runs for o in r.outputs if not o.ok]
    if not bad:
        return
    lines = [f"{len(bad)} output check{'s' if len(bad) > 1 else ''} failed against MLX:"]
    lines += [f"  ({r.label}) " + o.line().strip() for r, o in bad]
    cls = ShapeMismatchError if any(not o.shape_ok for _, o in bad) else ToleranceError
    raise cls("\n".join(lines), report if report is not None else runs)


__all__ = ["DynamicAxis", "Report", "compare", "default_tolerance", "validate"]
