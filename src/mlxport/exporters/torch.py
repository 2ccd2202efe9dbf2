"""Lower a captured Graph to a torch.fx GraphModule; save it as TorchScript (.pt) or torch.export (.pt2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import UnsupportedPrimitiveError
from ..graph import Graph

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


def check_supported(graph: Graph) -> None:
    """Raise one UnsupportedPrimitiveError listing every primitive without a torch translation."""
    from ..torchops.registry import load_all, lookup

    load_all()
    missing: dict[str, list] = {}
    for node in graph.nodes:
        if lookup(node.primitive) is None:
            missing.setdefault(node.primitive, []).append(node)
    if not missing:
        return
    lines = [f"{len(missing)} MLX primitive{'s' if len(missing) > 1 else ''} "
             f"{'have' if len(missing) > 1 else 'has'} no torch translation yet:"]
    for name, nodes in sorted(missing.items(), key=lambda kv: kv[1][0].index):
        lines.append(f"  - {name} ×{len(nodes)} (first: {nodes[0].describe(graph)})")
    lines.append("Export to .onnx instead (see `mlxport ops`), or add one in src/mlxport/torchops/.")
    raise UnsupportedPrimitiveError("\n".join(lines))


def lower_torch(graph: Graph) -> Any:
    """The graph as an fx.GraphModule taking and returning tensors exactly as the MLX function does."""
    torch = import_torch()
    import torch.fx as fx

    from ..passes import run_default_passes
    from ..torchops.registry import TorchContext, lookup

    check_supported(graph)
    # bfloat16 stays bfloat16 in torch (its CPU kernels have it); only the shared rewrites run.
    graph = run_default_passes(graph, bfloat16_as_float32=False, supports=lambda prim: lookup(prim) is not None)
    root = torch.nn.Module()
    fx_graph = fx.Graph()
    ctx = TorchContext(graph, fx_graph, root)
    for inp in graph.inputs:
        ctx.values[inp.name] = fx_graph.placeholder(_identifier(inp.name))
    for name, value in graph.constants.items():
        ctx.values[name] = ctx.buffer(value, hint=_identifier(name.strip("/")) or "c")
    for node in graph.nodes:
        ctx.current = node
        outs = lookup(node.primitive).func(ctx, node)  # type: ignore[union-attr]
        if len(outs) != len(node.outputs):
            raise RuntimeError(f"torch translation of {node.primitive} returned {len(outs)} values for "
                               f"{len(node.outputs)} outputs (node {node.index})")
        for ir_name, value in zip(node.outputs, outs):
            ctx.values[ir_name] = value
    results = [ctx.values[graph.output_sources[o.name]] for o in graph.outputs]
    fx_graph.output(tuple(results))
    fx_graph.eliminate_dead_code()  # translations may read a node's source rather than its result
    module = fx.GraphModule(root, fx_graph)
    module.eval()
    return module


def _identifier(name: str) -> str:
    out = "".join(c if c.isalnum() else "_" for c in name)
    return out if out and not out[0].isdigit() else f"v_{out}"


def example_tensors(arrays: list[Any]) -> tuple[Any, ...]:
    from ..capture import to_numpy
    from ..torchops.registry import to_tensor

    return tuple(to_tensor(to_numpy(a)) for a in arrays)


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
    """torch.export ExportedProgram (``.pt2``) with the graph's dynamic axes as ``Dim``s."""
    torch = import_torch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dims = {s: torch.export.Dim(s, min=1) for s in graph.symbols}
    names = [p.target for p in module.graph.nodes if p.op == "placeholder"]
    dynamic = {}
    for name, inp in zip(names, graph.inputs):
        axes = {a.axis: dims[a.symbol] for a in graph.dynamic_axes if a.input == inp.name}
        dynamic[name] = axes or None
    program = torch.export.export(module, examples, dynamic_shapes=dynamic if graph.dynamic_axes else None)
    torch.export.save(program, str(path))
    return path
