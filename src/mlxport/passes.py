"""Backend-neutral rewrites of the captured graph, run before any lowering."""

from __future__ import annotations

import dataclasses

from .graph import Dim, Graph, Node

# Primitives whose inputs broadcast numpy-style in ONNX and torch alike.
NUMPY_BROADCASTING = {
    "Add", "Subtract", "Multiply", "Divide", "Maximum", "Minimum", "Power", "Remainder",
    "Equal", "NotEqual", "Less", "LessEqual", "Greater", "GreaterEqual", "LogicalAnd",
    "LogicalOr", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "LogAddExp", "ArcTan2", "Select",
    "LeftShift", "RightShift", "FloorDivide",
}


def _broadcast(shapes: list[tuple[Dim, ...]]) -> tuple[Dim, ...] | None:
    rank = max(len(s) for s in shapes)
    out: list[Dim] = []
    for i in range(rank):
        dims = {s[i - rank + len(s)] for s in shapes if i - rank + len(s) >= 0}
        dims.discard(1)
        if len(dims) > 1:
            return None
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def elide_broadcasts(graph: Graph) -> int:
    """Drop Broadcast nodes whose every consumer broadcasts its inputs anyway.

    MLX makes broadcasting explicit (``Broadcast`` before ``Add``); ONNX's
    elementwise ops broadcast implicitly, so the Expand would only cost time.
    """
    users = graph.consumers()
    outputs = set(graph.output_sources.values())
    replace: dict[str, str] = {}
    keep: list[Node] = []
    for node in graph.nodes:
        node.inputs = [replace.get(n, n) for n in node.inputs]
        if node.primitive == "Broadcast" and node.outputs[0] not in outputs:
            out, src = node.outputs[0], node.inputs[0]
            consumers = users.get(out, [])
            if consumers and all(_elidable(graph, c, out, src, replace) for c in consumers):
                replace[out] = src
                continue
        keep.append(node)
    graph.nodes = keep
    return len(replace)


def _elidable(graph: Graph, consumer: Node, out: str, src: str, replace: dict[str, str]) -> bool:
    # AddMM's addend broadcasts too (Gemm's C, or MatMul + Add).
    addmm_c = consumer.primitive == "AddMM" and consumer.inputs.index(out) == 2 and consumer.inputs.count(out) == 1
    if consumer.primitive not in NUMPY_BROADCASTING and not addmm_c:
        return False
    if addmm_c:
        return _broadcast([graph.tensors[src].shape, graph.tensors[consumer.outputs[0]].shape]) == tuple(
            graph.tensors[consumer.outputs[0]].shape)
    shapes = [graph.tensors[src if n == out else replace.get(n, n)].shape for n in consumer.inputs]
    target = graph.tensors[consumer.outputs[0]].shape
    return _broadcast(shapes) == tuple(target)


def run_default_passes(graph: Graph) -> Graph:
    """Apply the rewrites to a copy (the captured graph serves several targets)."""
    graph = dataclasses.replace(graph, nodes=[dataclasses.replace(n, inputs=list(n.inputs)) for n in graph.nodes])
    elide_broadcasts(graph)
    return graph

