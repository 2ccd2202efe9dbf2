"""Lower a captured Graph to a torch.fx GraphModule; save it as TorchScript (.pt) or torch.export (.pt2)."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

from ..errors import DynamicShapeError
from ..graph import Graph, SymExpr

TORCH_EXTRA = 'pip install "mlxport[torch]"'


def import_torch() -> Any:
    """torch, or an error naming the extra to install."""
    try:
        import torch
    except ImportError as exc:
        from ..errors import ArtifactError

        raise ArtifactError(f"the torch target needs PyTorch, which is not installed: {exc}",
                            hint=f"Install it with: {TORCH_EXTRA}") from None
    return torch


def lower_torch(graph: Graph) -> Any:
    """The graph as an fx.GraphModule taking and returning tensors exactly as the MLX function does."""
    torch = import_torch()
    import torch.fx as fx

    from ..rewrite import run_default_passes
    from ..targets import lowering
    from ..targets.torch.context import TORCH, TorchContext

    # Checked on the captured graph, so the error names nodes as the user's trace has them.
    lowering.check_supported(graph, TORCH)
    # bfloat16 stays bfloat16 in torch (its CPU kernels have it); only the shared rewrites run.
    graph = run_default_passes(graph, bfloat16_as_float32=False, supports=TORCH.supports)
    root = torch.nn.Module()
    fx_graph = fx.Graph()
    ctx = TorchContext(graph, fx_graph, root)
    for inp in graph.inputs:
        ctx.values[inp.name] = fx_graph.placeholder(_identifier(inp.name))
    for name, value in graph.constants.items():
        ctx.values[name] = ctx.buffer(value, hint=_identifier(name.strip("/")) or "c")
    lowering.translate_nodes(graph, TORCH, ctx)
    results = [ctx.values[graph.output_sources[o.name]] for o in graph.outputs]
    fx_graph.output(tuple(results))
    fx_graph.eliminate_dead_code()  # translations may read a node's source rather than its result
    module = fx.GraphModule(root, fx_graph)
    module.eval()
    return module


def _identifier(name: str) -> str:
    out = "".join(c if c.isalnum() else "_" for c in name)
    return out if out and not out[0].isdigit() else f"v_{out}"


def save_torchscript(module: Any, path: str | os.PathLike) -> Path:
    """TorchScript (torch.jit.script): loads with plain ``torch.jit.load``, no mlxport needed."""
    torch = import_torch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    import warnings

    with warnings.catch_warnings():
        # fx's empty root module triggers a harmless TorchScript annotation warning.
        warnings.filterwarnings("ignore", message="The TorchScript type system doesn't support instance-level")
        scripted = torch.jit.script(module)
    scripted.save(str(path))
    return path


def save_exported(module: Any, graph: Graph, examples: tuple[Any, ...], path: str | os.PathLike) -> Path:
    """torch.export ExportedProgram (``.pt2``) with the graph's dynamic axes as ``Dim``s.

    An axis that a Split divides (``seq/2``) becomes a derived Dim (``2*_seq``), and one
    that a fixed-size piece is cut from gets the smallest size that leaves the rest non-negative.
    """
    torch = import_torch()
    import torch.fx.experimental._config as fx_config

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    derived = [a for a in graph.dynamic_axes if a.derived]
    if derived:
        a = derived[0]
        raise DynamicShapeError(
            f"axis {a.axis} of '{a.input}' is the sum {a.symbol} of other axes, which torch.export's Dims cannot "
            "express", hint="Save to .pt (TorchScript) or .onnx, which keep it dynamic, or fix that axis.")
    constraints = axis_constraints(graph)
    dims = export_dims(constraints)
    names = [p.target for p in module.graph.nodes if p.op == "placeholder"]
    dynamic = {}
    axes_of = {}
    for name, inp in zip(names, graph.inputs):
        axes = {a.axis: dims[a.symbol] for a in graph.dynamic_axes if a.input == inp.name}
        axes_of.update({(name, a.axis): a.symbol for a in graph.dynamic_axes if a.input == inp.name})
        dynamic[name] = axes or None
    # Size-oblivious guards: without them torch adds a `piece != 1` guard for each size a Split
    # makes (its 0/1 specialization) and rejects sizes MLX accepts. Elsewhere they can add guards
    # of their own (the encoder's attention wants `seq != 1`), so they go first only for graphs
    # whose axes are constrained, and each mode is the other's fallback.
    oblivious_first = any(c.multiple_of > 1 or c.min > 1 or c.max is not None for c in constraints.values())
    messages: list[str] = []
    program = None
    for oblivious in (oblivious_first, not oblivious_first):
        try:
            with fx_config.patch(backed_size_oblivious=oblivious and bool(graph.dynamic_axes)):
                program = torch.export.export(module, examples, dynamic_shapes=dynamic if graph.dynamic_axes else None)
            break
        except torch._dynamo.exc.UserError as exc:
            if "Constraints violated" not in str(exc) or not graph.dynamic_axes:
                raise
            messages.append(str(exc))
    if program is None:
        raise _constraint_error(graph, "\n".join(messages), axes_of)
    torch.export.save(program, str(path))
    return path


@dataclass(frozen=True)
class AxisConstraint:
    """What the graph's dimension expressions require of one dynamic axis."""

    symbol: str
    multiple_of: int = 1
    min: int = 1
    max: int | None = None


def axis_constraints(graph: Graph) -> dict[str, AxisConstraint]:
    """Divisibility and bounds of each dynamic axis, read from the IR's shapes and arguments.

    A term ``p/q*seq`` means ``seq`` is a multiple of ``q``; a size ``a*seq + b`` (one symbol)
    must be >= 0, which bounds ``seq`` from below (a > 0) or above (a < 0). Terms over several
    symbols (``batch*seq/2``) constrain no single axis; torch.export turns those into run-time checks.
    """
    multiple = {s: 1 for s in graph.symbols}
    offset: set[str] = set()  # symbols in a fraction with a fractional constant ((seq+1)/2): not a multiple
    for dim in _graph_dims(graph):
        terms = dim.as_dict()
        for mono, coef in terms.items():
            if len(mono) == 1 and mono[0] in multiple:
                multiple[mono[0]] = math.lcm(multiple[mono[0]], coef.denominator)
                if coef.denominator > 1 and terms.get((), Fraction(0)).denominator > 1:
                    offset.add(mono[0])
    low = {s: Fraction(1) for s in graph.symbols}
    high: dict[str, Fraction] = {}
    for info in graph.tensors.values():
        for dim in info.shape:
            if not isinstance(dim, SymExpr) or len(dim.symbols) != 1 or any(len(m) > 1 for m, _ in dim.terms):
                continue
            (sym,) = dim.symbols
            if sym not in low:
                continue
            terms = dim.as_dict()
            a, b = terms[(sym,)], terms.get((), Fraction(0))
            if a > 0:
                low[sym] = max(low[sym], -b / a)
            else:
                high[sym] = min(high.get(sym, b / -a), b / -a)
    out = {}
    for sym in graph.symbols:
        q = 1 if sym in offset else multiple[sym]
        lo = max(q, math.ceil(low[sym] / q) * q)
        hi = math.floor(high[sym] / q) * q if sym in high else None
        out[sym] = AxisConstraint(sym, q, lo, hi)
    return out


def export_dims(constraints: dict[str, AxisConstraint]) -> dict[str, Any]:
    """One torch.export Dim per symbol: ``Dim(s, min=...)``, or ``q * Dim('_s')`` for a multiple of q."""
    torch = import_torch()
    Dim = torch.export.Dim
    dims = {}
    for sym, c in constraints.items():
        if c.multiple_of == 1:
            dims[sym] = Dim(_identifier(sym), min=c.min, **({"max": c.max} if c.max is not None else {}))
        else:
            bounds = {"max": c.max // c.multiple_of} if c.max is not None else {}
            dims[sym] = c.multiple_of * Dim(f"_{_identifier(sym)}", min=c.min // c.multiple_of, **bounds)
    return dims


def _graph_dims(graph: Graph) -> Iterator[SymExpr]:
    """Every SymExpr in tensor shapes and node arguments."""
    def walk(value: Any) -> Iterator[SymExpr]:
        if isinstance(value, SymExpr):
            yield value
        elif isinstance(value, (list, tuple)):
            for v in value:
                yield from walk(v)

    for info in graph.tensors.values():
        yield from walk(info.shape)
    for node in graph.nodes:
        yield from walk(node.arguments)


def _constraint_error(graph: Graph, message: str, axes_of: dict[tuple[str, int], str]) -> DynamicShapeError:
    """torch.export refused the dynamic axes: say which, why, and what to do instead."""
    def readable(guard: str) -> str:
        guard = re.sub(r" and \S+ <= IntInfinity\(\)", "", guard)
        # torch names sizes L['x'].size()[1]; the user named that axis.
        return re.sub(r"L\['(\w+)'\]\.size\(\)\[(\d+)\]",
                      lambda m: axes_of.get((m.group(1), int(m.group(2))), m.group(0)), guard)

    guards = dict.fromkeys(readable(line.split("satisfy the generated guard", 1)[1].strip().rstrip("."))
                           for line in message.splitlines() if "satisfy the generated guard" in line)
    named = dict.fromkeys(n.strip() for found in re.findall(r"Constraints violated \(([^)]*)\)", message)
                          for n in found.split(","))
    axes = ", ".join(named) or ", ".join(graph.symbols)
    mixed = sorted({str(d) for d in _graph_dims(graph) if len(d.symbols) > 1})
    lines = [f"torch.export cannot keep the dynamic axis {axes} free: the graph only works at sizes where"]
    lines += [f"  - {g}" for g in list(guards)[:6]] or ["  (torch named no condition)"]
    if mixed:
        lines.append(f"Sizes in the graph that tie the axes together: {', '.join(mixed[:6])}.")
    return DynamicShapeError(
        "\n".join(lines),
        hint=f"Keep {axes} fixed for .pt2 (drop it from dynamic_axes), or save to .pt or .onnx, "
             "which keep it dynamic.",
    )
