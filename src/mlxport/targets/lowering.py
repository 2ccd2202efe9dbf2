"""The lowering driver every target shares: check the whole graph, then translate node by node.

A target supplies its :class:`~mlxport.targets.registry.Registry` and a context
object (the ONNX ``ConvertContext``, the torch ``TorchContext``). The context
must have ``values`` (IR tensor name -> the target's value) and ``current``
(the node being translated); everything else on it is the target's own.
"""

from __future__ import annotations

from typing import Any

from ..errors import UnsupportedPrimitiveError
from ..graph import Graph, Node
from .registry import Registry

SUPPORT_POINTER = "See `mlxport ops`; to add one, see docs/adding_ops.md."


def unsupported_message(graph: Graph, registry: Registry, version: int | None = None) -> str | None:
    """The text of the "unsupported primitives" error for ``graph``, or None when every node translates.

    Every node is checked first, so one message lists each missing primitive with its count and
    its first node (index, input shapes and dtypes).
    """
    missing: dict[str, list[Node]] = {}
    for node in graph.nodes:
        if registry.lookup(node.primitive, version) is None:
            missing.setdefault(node.primitive, []).append(node)
    if not missing:
        return None
    many = len(missing) > 1
    where = registry.describe(version)
    lines = [f"{len(missing)} MLX primitive{'s' if many else ''} {'have' if many else 'has'} no {registry.target} "
             f"translation{' ' + where if where else ''}:"]
    width = max(len(k) for k in missing)
    for name, nodes in sorted(missing.items(), key=lambda kv: kv[1][0].index):
        lines.append(f"  - {name} ×{len(nodes)}".ljust(width + 9) + f" (first: {nodes[0].describe(graph)})")
    lines.append(f"{registry.alternative} {SUPPORT_POINTER}".strip())
    return "\n".join(lines)


def check_supported(graph: Graph, registry: Registry, version: int | None = None) -> None:
    """Raise one UnsupportedPrimitiveError listing every primitive of ``graph`` without a translation."""
    message = unsupported_message(graph, registry, version)
    if message is not None:
        raise UnsupportedPrimitiveError(message)


def translate_nodes(graph: Graph, registry: Registry, ctx: Any, version: int | None = None) -> None:
    """Call each node's translation with ``ctx`` and bind its outputs in ``ctx.values``.

    The caller has bound the graph's inputs and constants in ``ctx.values`` first.

    Raises:
        UnsupportedPrimitiveError: when a primitive has no translation (checked before any runs).
        RuntimeError: when a translation returns a different number of values than the node has outputs.
    """
    check_supported(graph, registry, version)
    for node in graph.nodes:
        ctx.current = node
        reg = registry.lookup(node.primitive, version)
        assert reg is not None  # check_supported ran
        outs = reg.func(ctx, node)
        if len(outs) != len(node.outputs):
            raise RuntimeError(f"{registry.target} translation of {node.primitive} returned {len(outs)} values for "
                               f"{len(node.outputs)} outputs (node {node.index})")
        for ir_name, value in zip(node.outputs, outs):
            ctx.values[ir_name] = value
    ctx.current = None
