"""Capture an MLX function into a `Graph` with `mx.export_function`'s callback.

Dynamic axes are derived by tracing at several sizes and fitting every shape
and integer argument that changes as a multilinear polynomial of the symbols
(a 2-level factorial design, then one more trace to verify the fit). We do not
use ``shapeless=True``: it has known wrong-result bugs (see ANCHORS.md).
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Iterator, Mapping, Sequence

import mlx.core as mx
import numpy as np

from .dtypes import numpy_dtype
from .errors import CaptureError, DynamicShapeError
from .graph import DynamicAxis, Graph, Node, SymExpr, TensorInfo

_INTERNAL = "/mx/"

_MX_DTYPES: dict[Any, str] = {
    mx.bool_: "bool", mx.uint8: "uint8", mx.uint16: "uint16", mx.uint32: "uint32",
    mx.uint64: "uint64", mx.int8: "int8", mx.int16: "int16", mx.int32: "int32",
    mx.int64: "int64", mx.float16: "float16", mx.bfloat16: "bfloat16",
    mx.float32: "float32", mx.float64: "float64", mx.complex64: "complex64",
}
_NAME_TO_MX = {v: k for k, v in _MX_DTYPES.items()}


def dtype_name(dtype: Any) -> str:
    """The numpy-style name of an mx dtype ("float32", "bfloat16"...)."""
    return _MX_DTYPES[dtype]


def mx_dtype(name: str) -> Any:
    return _NAME_TO_MX[name]


def to_numpy(array: mx.array) -> np.ndarray:
    """View an evaluated mx.array as numpy without copying (bfloat16 via ml_dtypes)."""
    if array.dtype == mx.bfloat16:
        return np.asarray(array.view(mx.uint16)).view(numpy_dtype("bfloat16"))
    return np.asarray(array)


def to_mx(value: Any) -> mx.array:
    """Convert a numpy array (bfloat16 included) to mx.array."""
    if isinstance(value, mx.array):
        return value
    arr = np.asarray(value)
    if arr.dtype.name == "bfloat16":
        return mx.array(arr.view(np.uint16)).view(mx.bfloat16)
    return mx.array(arr)


# ----------------------------------------------------------------------------
# Function signature: names and structure of inputs and outputs
# ----------------------------------------------------------------------------


def _parameter_names(fn: Callable, count: int) -> list[str]:
    target = fn.__call__ if not inspect.isfunction(fn) and not inspect.ismethod(fn) else fn
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        params = []
    names: list[str] = []
    for p in params:
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
        elif p.kind == p.VAR_POSITIONAL:
            names.extend(f"{p.name}_{i}" for i in range(count - len(names)))
            break
    if len(names) < count:
        names.extend(f"input_{i}" for i in range(len(names), count))
    return names[:count]


def _flatten(value: Any, prefix: str, where: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}", where)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _flatten(item, f"{prefix}.{i}", where)
    else:
        yield prefix, value


def _unflatten(template: Any, leaves: Iterator[Any]) -> Any:
    if isinstance(template, dict):
        return {k: _unflatten(v, leaves) for k, v in template.items()}
    if isinstance(template, (list, tuple)):
        return type(template)(_unflatten(v, leaves) for v in template)
    return next(leaves)


@dataclass
class Signature:
    """How the user's function maps to flat array inputs and outputs."""

    input_names: list[str]
    input_template: tuple
    output_names: list[str] = field(default_factory=list)
    output_template: Any = None

    def call_flat(self, fn: Callable, arrays: Sequence[mx.array]) -> tuple[mx.array, ...]:
        args = _unflatten(self.input_template, iter(arrays))
        out = fn(*args)
        flat = [a for _, a in _flatten(out, "", "output")]
        bad = [type(a).__name__ for a in flat if not isinstance(a, mx.array)]
        if bad:
            raise CaptureError(
                f"the function must return mx.array values (alone, in a tuple, list or dict); "
                f"got {', '.join(sorted(set(bad)))}"
            )
        if self.output_template is None:
            self.output_template = _structure(out)
        return tuple(flat)


def _structure(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _structure(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_structure(v) for v in value)
    return None


def _output_names(template: Any, count: int) -> list[str]:
    if template is None:
        return ["output"]
    names = [p.lstrip(".") for p, _ in _flatten(template, "", "output")]
    if isinstance(template, (list, tuple)):
        names = [f"output_{n}" for n in names]
    return names


def make_signature(fn: Callable, example_args: Sequence[Any], input_names: Sequence[str] | None) -> tuple[Signature, list[mx.array]]:
    """Flatten the example arguments and name every array input."""
    if not isinstance(example_args, (tuple, list)):
        example_args = (example_args,)
    top = _parameter_names(fn, len(example_args))
    names: list[str] = []
    arrays: list[mx.array] = []
    for top_name, arg in zip(top, example_args):
        for path, leaf in _flatten(arg, top_name, "input"):
            if isinstance(leaf, np.ndarray):
                leaf = to_mx(leaf)
            if not isinstance(leaf, mx.array):
                raise CaptureError(
                    f"example input '{path}' must be an mx.array or numpy array; got "
                    f"{type(leaf).__name__} ({leaf!r:.60}). Pass arrays for every traced "
                    "input and bind other arguments with functools.partial or a lambda."
                )
            names.append(path)
            arrays.append(leaf)
    if input_names is not None:
        if len(input_names) != len(arrays):
            raise CaptureError(
                f"input_names has {len(input_names)} names but the example has {len(arrays)} "
                f"array inputs ({', '.join(names)}); give one name per array"
            )
        names = list(input_names)
    if len(set(names)) != len(names):
        raise CaptureError(f"input names must be unique; got {names}")
    template = tuple(_structure(a) for a in example_args)
    return Signature(names, template), arrays


# ----------------------------------------------------------------------------
# One trace
# ----------------------------------------------------------------------------


@dataclass
class _Trace:
    inputs: list[tuple[str, tuple[int, ...], str]]
    outputs: list[tuple[str, tuple[int, ...], str]]
    constants: list[tuple[str, mx.array]]
    prims: list[dict[str, Any]]


def _convert_arg(value: Any) -> Any:
    if isinstance(value, mx.Dtype):
        return dtype_name(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_convert_arg(v) for v in value)
    return value


# The mx.fast primitives' state() starts with a placeholder for the fallback
# function. MLX 0.32's export drops it, but keep the IR independent of that.
_FAST_PRIMITIVES = {"RMSNorm", "LayerNorm", "RoPE", "ScaledDotProductAttention"}


def _canonical_arguments(primitive: str, args: list[Any]) -> list[Any]:
    if primitive in _FAST_PRIMITIVES and args and args[0] is None:
        return args[1:]
    return args


@contextlib.contextmanager
def _compile_disabled() -> Iterator[None]:
    # Compiled functions export as Compiled* primitives with no state; tracing
    # with compilation off yields the plain primitives (ANCHORS.md).
    mx.disable_compile()
    try:
        yield
    finally:
        mx.enable_compile()


def _trace(fn: Callable, sig: Signature, arrays: Sequence[mx.array]) -> _Trace:
    records: dict[str, Any] = {"prims": [], "constants": []}

    def callback(rec: dict[str, Any]) -> None:
        kind = rec["type"]
        if kind == "inputs":
            records["inputs"] = [(n, tuple(s), dtype_name(d)) for n, s, d in rec["inputs"]]
        elif kind == "outputs":
            records["outputs"] = [(n, tuple(s), dtype_name(d)) for n, s, d in rec["outputs"]]
        elif kind == "constants":
            records["constants"].extend(rec["constants"])
        elif kind == "primitive":
            records["prims"].append({
                "name": rec["name"],
                "inputs": [(n, tuple(s), dtype_name(d)) for n, s, d in rec["inputs"]],
                "outputs": [(n, tuple(s), dtype_name(d)) for n, s, d in rec["outputs"]],
                "arguments": _canonical_arguments(rec["name"], _convert_arg(list(rec["arguments"]))),
            })

    def flat(*xs: mx.array) -> tuple[mx.array, ...]:
        return sig.call_flat(fn, xs)

    with _compile_disabled():
        try:
            mx.export_function(callback, flat, *arrays)
        except CaptureError:
            raise
        except (ValueError, RuntimeError, TypeError) as exc:
            shapes = ", ".join(f"{n}: {dtype_name(a.dtype)}[{','.join(map(str, a.shape))}]"
                               for n, a in zip(sig.input_names, arrays))
            raise CaptureError(f"tracing the function failed with inputs ({shapes}): {exc}") from exc
    return _Trace(records.get("inputs", []), records.get("outputs", []), records["constants"], records["prims"])


# ----------------------------------------------------------------------------
# Dynamic axes: traces at several sizes, then a fit
# ----------------------------------------------------------------------------


def parse_dynamic_axes(dynamic_axes: Mapping[str, Any] | None, names: Sequence[str], arrays: Sequence[mx.array]) -> list[DynamicAxis]:
    """Normalise torch-style dynamic_axes ({"x": {0: "batch"}} or {"x": [0]})."""
    if not dynamic_axes:
        return []
    axes: list[DynamicAxis] = []
    for inp, spec in dynamic_axes.items():
        if inp not in names:
            raise CaptureError(
                f"dynamic_axes names input '{inp}', but the inputs are {', '.join(names)}; "
                "use one of those names"
            )
        idx = names.index(inp)
        rank = arrays[idx].ndim
        if isinstance(spec, Mapping):
            items = list(spec.items())
        elif isinstance(spec, (list, tuple)):
            items = [(a, f"{inp}_dim{a % max(rank, 1)}") for a in spec]
        else:
            raise CaptureError(f"dynamic_axes['{inp}'] must be a dict {{axis: name}} or a list of axes; got {spec!r}")
        for axis, symbol in items:
            if not isinstance(axis, int) or not -rank <= axis < rank:
                raise CaptureError(
                    f"dynamic axis {axis!r} of input '{inp}' is out of range: it has rank {rank} "
                    f"(shape {list(arrays[idx].shape)}); use an axis in [-{rank}, {rank - 1}]"
                )
            terms = [t.strip() for t in symbol.split("+")] if isinstance(symbol, str) else []
            if not terms or not all(t.isidentifier() for t in terms):
                raise CaptureError(f"dynamic axis names must be identifiers like 'batch', or a sum of them like "
                                   f"'past+seq' for an axis as long as two others; got {symbol!r} for '{inp}'")
            axes.append(DynamicAxis("+".join(terms), inp, axis % rank, int(arrays[idx].shape[axis])))
    examples: dict[str, int] = {}
    for a in axes:
        if examples.setdefault(a.symbol, a.example) != a.example:
            raise CaptureError(
                f"dynamic axis '{a.symbol}' has size {examples[a.symbol]} in one input and {a.example} "
                f"in '{a.input}' (axis {a.axis}); inputs sharing a dimension name must share its size"
            )
    for a in axes:
        if not a.derived:
            continue
        missing = [t for t in a.terms if t not in examples]
        if missing:
            raise CaptureError(f"dynamic axis '{a.symbol}' of '{a.input}' adds up {', '.join(missing)}, which no "
                               "input names as an axis of its own; name each term on some input's axis")
        if a.size(examples) != a.example:
            raise CaptureError(f"dynamic axis '{a.symbol}' of '{a.input}' has size {a.example} in the example, but "
                               f"{' + '.join(str(examples[t]) for t in a.terms)} = {a.size(examples)}; make the "
                               "example sizes add up")
    return axes


def trace_levels(example: int) -> tuple[int, int, int]:
    """Two sizes for the fit and a third to verify it (multiples keep divisibility)."""
    p = max(example, 2)
    return p, 2 * p, 3 * p


def _resized(arrays: Sequence[mx.array], names: Sequence[str], axes: list[DynamicAxis], sizes: Mapping[str, int]) -> list[mx.array]:
    out = []
    for name, arr in zip(names, arrays):
        shape = list(arr.shape)
        for a in axes:
            if a.input == name:
                shape[a.axis] = a.size(sizes)
        out.append(arr if shape == list(arr.shape) else mx.zeros(shape, dtype=arr.dtype))
    return out


def _structure_key(t: _Trace) -> tuple:
    return (
        tuple(n for n, _, _ in t.inputs),
        tuple(n for n, _, _ in t.outputs),
        tuple((n, a.dtype) for n, a in t.constants),
        tuple((p["name"], tuple(i[0] for i in p["inputs"]), tuple(o[0] for o in p["outputs"])) for p in t.prims),
    )


_LARGE_TRACE_SCALE = 16


def _factorial_traces(fn: Callable, sig: Signature, arrays: Sequence[mx.array], axes: list[DynamicAxis],
                      symbols: list[str], levels: list[tuple[int, ...]], keys: list[tuple[int, ...]]
                      ) -> tuple[list[_Trace], _Trace, dict[str, int], str | None]:
    """Trace at every combination of two sizes per symbol, then at a third; say how the graphs differ."""
    traces = []
    for key in keys:
        sizes = {s: lv[b] for s, lv, b in zip(symbols, levels, key)}
        traces.append(_trace(fn, sig, _resized(arrays, sig.input_names, axes, sizes)))
    verify = {s: lv[2] for s, lv in zip(symbols, levels)}
    check = _trace(fn, sig, _resized(arrays, sig.input_names, axes, verify))
    for t in traces[1:] + [check]:
        if _structure_key(t) != _structure_key(traces[0]):
            return traces, check, verify, _first_difference(traces[0], t)
    return traces, check, verify, None


def _first_difference(a: _Trace, b: _Trace) -> str:
    for i, (x, y) in enumerate(zip(a.prims, b.prims)):
        if x["name"] != y["name"] or len(x["inputs"]) != len(y["inputs"]):
            return f"node {i} is {x['name']} at one size and {y['name']} at the other"
    if len(a.prims) != len(b.prims):
        return f"{len(a.prims)} nodes at one size, {len(b.prims)} at the other"
    if len(a.constants) != len(b.constants):
        return f"{len(a.constants)} constants at one size, {len(b.constants)} at the other"
    return "the wiring between nodes differs"


def _numeric(v: Any) -> Fraction | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, float) and not float(v).is_integer():
        return None
    return Fraction(int(v))


def _fit(obs: dict[tuple[int, ...], Fraction], symbols: list[str], levels: list[tuple[int, int]]) -> dict[tuple[str, ...], Fraction]:
    if not symbols:
        return {(): obs[()]}
    p, q = levels[0]
    lo = _fit({k[1:]: v for k, v in obs.items() if k[0] == 0}, symbols[1:], levels[1:])
    hi = _fit({k[1:]: v for k, v in obs.items() if k[0] == 1}, symbols[1:], levels[1:])
    out: dict[tuple[str, ...], Fraction] = {}
    for mono in set(lo) | set(hi):
        slope = (hi.get(mono, Fraction(0)) - lo.get(mono, Fraction(0))) / (q - p)
        const = lo.get(mono, Fraction(0)) - slope * p
        out[mono] = out.get(mono, Fraction(0)) + const
        out[tuple(sorted(mono + (symbols[0],)))] = slope
    return out


class _Merger:
    """Walks the same value in every trace in parallel and fits what varies."""

    def __init__(self, symbols: list[str], levels: list[tuple[int, int]], keys: list[tuple[int, ...]],
                 verify: dict[str, int]) -> None:
        self.symbols, self.levels, self.keys, self.verify = symbols, levels, keys, verify
        self._cache: dict[tuple, tuple[Any, Any]] = {}

    def merge(self, values: list[Any], check: Any, where: str) -> Any:
        first = values[0]
        if isinstance(first, (list, tuple)):
            if any(not isinstance(v, (list, tuple)) or len(v) != len(first) for v in values + [check]):
                raise DynamicShapeError(f"{where}: the argument's structure changes with the dynamic sizes")
            return type(first)(self.merge([v[i] for v in values], check[i], f"{where}[{i}]") for i in range(len(first)))
        if all(v == first and type(v) is type(first) for v in values) and check == first:
            return first
        nums = [_numeric(v) for v in values]
        if any(n is None for n in nums) or _numeric(check) is None:
            raise DynamicShapeError(
                f"{where} takes the non-integer values {values + [check]} at different dynamic sizes; "
                "only integer sizes can depend on a dynamic axis"
            )
        key = (tuple(nums), _numeric(check))
        if key not in self._cache:
            # Shapes repeat the same few patterns (batch, seq, batch*seq...): fit each once.
            expr = SymExpr.make(_fit(dict(zip(self.keys, nums)), self.symbols, self.levels))
            self._cache[key] = (expr, expr.evaluate(self.verify) if isinstance(expr, SymExpr) else expr)
        expr, predicted = self._cache[key]
        if predicted != check:
            raise DynamicShapeError(
                f"{where} is {values} at sizes {self._sizes()} and {check} at {self.verify}; it is not a "
                f"polynomial of degree one in each of {', '.join(self.symbols)}. If it is not a size (an axis, "
                "a reduce type), the model chooses its operations by the input size, which one graph cannot "
                "express: keep that axis fixed"
            )
        return expr

    def _sizes(self) -> str:
        return "/".join(f"{s}∈{{{p},{q}}}" for s, (p, q) in zip(self.symbols, self.levels))


def _check_constants(traces: list[_Trace], merger: "_Merger") -> dict[str, tuple[Any, bool]]:
    """Constants must not change with the dynamic sizes, except scalar sizes and their inverses.

    MLX computes ``mean`` as ``sum * (1/n)`` with 1/n a scalar made at trace time (and
    ``x / x.shape[1]`` makes n one). Those are fitted like shapes and returned as
    {constant name: (count expression, inverted)}, to be computed from the input shapes.
    """
    base = traces[0].constants
    sized: dict[str, tuple[Any, bool]] = {}
    for i, (name, a) in enumerate(base):
        values = [t.constants[i][1] for t in traces]
        if all(v.shape == a.shape and (a.size > 4096 or bool(mx.array_equal(v, a))) for v in values[1:]):
            continue
        fitted = _fit_scalar(name, values, merger) if a.size == 1 and a.ndim == 0 else None
        if fitted is None:
            raise DynamicShapeError(
                f"constant {name} ({dtype_name(a.dtype)}[{','.join(map(str, a.shape))}]) changes with the dynamic "
                "sizes: it was computed eagerly from a shape (e.g. with numpy or .item()). Build it with mx ops "
                "from the input (mx.arange(x.shape[1]) traces as Arange)"
            )
        sized[name] = fitted
    return sized


def _fit_scalar(name: str, values: list[mx.array], merger: "_Merger") -> tuple[Any, bool] | None:
    """(count, inverted) when every value is a product of dynamic sizes (times a constant) or its inverse."""
    nums = [float(v.astype(mx.float32).item()) for v in values]
    for inverted in (False, True):
        counts = [1.0 / n if inverted and n else n for n in nums]
        rounded = [round(c) for c in counts]
        if any(r <= 0 or abs(r - c) > 1e-4 * r for r, c in zip(rounded, counts)):
            continue
        try:
            expr = merger.merge(rounded[:-1], rounded[-1], f"constant {name}")
        except DynamicShapeError:
            continue
        if isinstance(expr, SymExpr) and len(expr.terms) == 1:
            return expr, inverted
    return None


# ----------------------------------------------------------------------------
# The capture entry point
# ----------------------------------------------------------------------------


def traceable(obj: Any) -> Callable:
    """The function to trace for ``obj``: a function of mx.arrays, or an ``nn.Module``'s ``__call__``, or,
    for a module written PyTorch-style (``forward`` and no ``__call__``), its bound ``forward``.

    Raises:
        CaptureError: ``obj`` is none of these; the message names what was given and what is accepted.
    """
    import mlx.nn as nn

    accepted = ("an nn.Module (defining __call__ or forward), a function of mx.arrays, or a path to an .mlxfn "
                "file")
    if isinstance(obj, nn.Module):
        if callable(obj):  # nn.Module itself defines no __call__
            return obj
        forward = getattr(obj, "forward", None)
        if callable(forward):
            return forward
        raise CaptureError(f"{type(obj).__name__} is an nn.Module that defines neither __call__ nor forward; "
                           f"expected {accepted}",
                           hint=f"Define __call__(self, x) (MLX's convention) or forward(self, x) on "
                                f"{type(obj).__name__}.")
    if isinstance(obj, type):
        raise CaptureError(f"got the class {obj.__name__}, not an instance; expected {accepted}",
                           hint=f"Pass an instance: {obj.__name__}() (with its weights loaded).")
    if not callable(obj):
        raise CaptureError(f"got {type(obj).__name__} ({_short_repr(obj)}); expected {accepted}",
                           hint="Pass the model instance (with its weights loaded) or the function itself.")
    return obj


def _short_repr(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 60 else text[:57] + "..."


def capture(
    fn: Callable,
    example_args: Sequence[Any],
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Any] | None = None,
) -> tuple[Graph, Signature, list[mx.array]]:
    """Trace ``fn`` on ``example_args`` into a Graph.

    Args:
        fn: an ``nn.Module`` or function of mx.arrays (parameters must be evaluated).
        example_args: the positional example inputs (arrays, or lists/dicts of arrays).
        input_names: names for the flat array inputs (default: the parameter names).
        output_names: names for the flat outputs (default: dict keys, ``output``, ``output_N``).
        dynamic_axes: ``{input: {axis: symbol}}`` for dimensions that may vary.

    Returns:
        The graph, the signature (how to call ``fn`` with flat arrays) and the example arrays.
    """
    fn = traceable(fn)
    sig, arrays = make_signature(fn, example_args, input_names)
    axes = parse_dynamic_axes(dynamic_axes, sig.input_names, arrays)
    mx.eval(arrays)
    owner = getattr(fn, "__self__", fn)  # a module's bound forward reads the module's parameters
    if hasattr(owner, "parameters"):
        mx.eval(owner.parameters())
    symbols = list(dict.fromkeys(a.symbol for a in axes if not a.derived))
    examples = {a.symbol: a.example for a in axes}
    if not symbols:
        traces = [_trace(fn, sig, arrays)]
        keys: list[tuple[int, ...]] = [()]
        check = traces[0]
        verify: dict[str, int] = {}
        levels: list[tuple[int, int, int]] = []
    else:
        keys = list(itertools.product((0, 1), repeat=len(symbols)))
        first_difference = None
        for scale in (1, _LARGE_TRACE_SCALE):
            levels = [tuple(v * scale for v in trace_levels(examples[s])) for s in symbols]
            traces, check, verify, difference = _factorial_traces(fn, sig, arrays, axes, symbols, levels, keys)
            first_difference = first_difference or difference
            if difference is None:
                break
            # Models that branch on a size (mlx-lm's MoE sorts tokens past 64) usually take the
            # general path at large sizes, and that graph is right at small sizes too: retry
            # there once. Validation at the example's size checks the claim.
        if difference is not None:
            raise DynamicShapeError(
                f"the traced graph changes with the dynamic sizes ({difference}), so one graph cannot serve all "
                "sizes, even when traced at large sizes only. Python code that branches on a shape cannot be "
                "exported with that axis dynamic"
            )
    merger = _Merger(symbols, [lv[:2] for lv in levels], keys, verify)
    large = bool(symbols) and levels[0][0] != trace_levels(examples[symbols[0]])[0]
    sized = _check_constants(traces + [check], merger) if symbols else {}
    graph = _build_graph(traces, check, merger, sig, axes, output_names)
    _compute_sized_constants(graph, sized)
    _name_parameters(graph, fn)
    graph.metadata["source"] = getattr(fn, "__qualname__", type(fn).__name__)
    graph.metadata["mlx_version"] = mx.__version__
    graph.metadata["traced_at_large_sizes"] = large
    if large:
        graph.metadata["size_branch"] = first_difference
    return graph, sig, arrays


def _compute_sized_constants(graph: Graph, sized: dict[str, tuple[Any, bool]]) -> None:
    """Replace size-derived scalar constants by NumberOfElements nodes over the bound input axes."""
    new_nodes: list[Node] = []
    for letter, (expr, inverted) in sized.items():
        name = _INTERNAL + letter
        info = graph.tensors[name]
        ((mono, coef),) = expr.terms
        bound = {a.symbol: a for a in graph.dynamic_axes if not a.derived}
        factors: list[str] = []
        for i, sym in enumerate(mono):
            axis = bound[sym]
            out = f"{name}/count{i}"
            graph.tensors[out] = TensorInfo(out, (), info.dtype)
            new_nodes.append(Node(-1, "NumberOfElements", [axis.input], [out], [[axis.axis], inverted, info.dtype]))
            factors.append(out)
        if coef != 1:
            scale = f"{name}/coef"
            value = float(1 / coef if inverted else coef)
            graph.constants[scale] = to_numpy(mx.array(value, dtype=mx_dtype(info.dtype)))
            graph.tensors[scale] = TensorInfo(scale, (), info.dtype)
            factors.append(scale)
        result = factors[0]
        for j, f in enumerate(factors[1:]):
            out = f"{name}/prod{j}" if j < len(factors) - 2 else name + "/value"
            graph.tensors[out] = TensorInfo(out, (), info.dtype)
            new_nodes.append(Node(-1, "Multiply", [result, f], [out], []))
            result = out
        del graph.constants[name]
        for node in graph.nodes:
            node.inputs = [result if n == name else n for n in node.inputs]
        graph.output_sources = {k: result if v == name else v for k, v in graph.output_sources.items()}
    graph.nodes = new_nodes + graph.nodes


def _name_parameters(graph: Graph, fn: Callable) -> None:
    """Name constants after the module parameters they are (``layers.0.mlp.up.weight``)."""
    if not hasattr(fn, "parameters"):
        return
    from mlx.utils import tree_flatten

    by_buffer: dict[tuple, str] = {}
    for path, arr in tree_flatten(fn.parameters()):
        if isinstance(arr, mx.array) and arr.size:
            view = to_numpy(arr)
            by_buffer.setdefault((view.ctypes.data, view.shape, view.dtype.str), path)
    taken = set(graph.tensors) | {o.name for o in graph.outputs}
    renames: dict[str, str] = {}
    for name, value in graph.constants.items():
        path = by_buffer.get((value.ctypes.data, value.shape, value.dtype.str)) if value.size else None
        if path and path not in taken:
            renames[name] = path
            taken.add(path)
    if not renames:
        return
    graph.constants = {renames.get(k, k): v for k, v in graph.constants.items()}
    graph.tensors = {renames.get(k, k): v for k, v in graph.tensors.items()}
    for old, new in renames.items():
        graph.tensors[new].name = new
    for node in graph.nodes:
        node.inputs = [renames.get(n, n) for n in node.inputs]
    graph.output_sources = {k: renames.get(v, v) for k, v in graph.output_sources.items()}


def _build_graph(traces: list[_Trace], check: _Trace, merger: _Merger, sig: Signature,
                 axes: list[DynamicAxis], output_names: Sequence[str] | None) -> Graph:
    base = traces[0]
    rename: dict[str, str] = {}
    for (letter, _, _), name in zip(base.inputs, sig.input_names):
        rename[letter] = name

    def internal(letter: str) -> str:
        return rename.get(letter, _INTERNAL + letter)

    def info(records: list[list[tuple]], i: int, where: str) -> TensorInfo:
        letter, _, dtype = records[0][i]
        shape = merger.merge([list(r[i][1]) for r in records[:-1]], list(records[-1][i][1]), where)
        return TensorInfo(internal(letter), tuple(shape), dtype)

    tensors: dict[str, TensorInfo] = {}
    inputs = []
    for i in range(len(base.inputs)):
        t = info([tr.inputs for tr in traces] + [check.inputs], i, f"input {sig.input_names[i]} shape")
        inputs.append(t)
        tensors[t.name] = t
    constants: dict[str, np.ndarray] = {}
    for name, arr in base.constants:
        constants[internal(name)] = to_numpy(arr)
        tensors[internal(name)] = TensorInfo(internal(name), tuple(arr.shape), dtype_name(arr.dtype))
    nodes: list[Node] = []
    for idx, prim in enumerate(base.prims):
        recs = [tr.prims[idx] for tr in traces] + [check.prims[idx]]
        where = f"node {idx} ({prim['name']})"
        for j in range(len(prim["outputs"])):
            t = info([r["outputs"] for r in recs], j, f"{where} output shape")
            tensors[t.name] = t
        for j, (letter, _, dtype) in enumerate(prim["inputs"]):
            if internal(letter) not in tensors:
                tensors[internal(letter)] = info([r["inputs"] for r in recs], j, f"{where} input shape")
        args = merger.merge([r["arguments"] for r in recs[:-1]], recs[-1]["arguments"], f"{where} arguments")
        nodes.append(Node(idx, prim["name"], [internal(n) for n, _, _ in prim["inputs"]],
                          [internal(n) for n, _, _ in prim["outputs"]], list(args)))

    names = list(output_names) if output_names is not None else _output_names(sig.output_template, len(base.outputs))
    if len(names) != len(base.outputs):
        raise CaptureError(
            f"output_names has {len(names)} names but the function returns {len(base.outputs)} arrays; "
            "give one name per returned array"
        )
    if len(set(names)) != len(names) or set(names) & set(sig.input_names):
        raise CaptureError(f"output names must be unique and differ from the input names; got {names}")
    outputs, sources = [], {}
    for i, name in enumerate(names):
        t = info([tr.outputs for tr in traces] + [check.outputs], i, f"output {name} shape")
        sources[name] = t.name
        outputs.append(TensorInfo(name, t.shape, t.dtype))
    return Graph(inputs, outputs, nodes, constants, tensors, axes, sources)
