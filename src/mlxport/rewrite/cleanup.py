"""Backend-neutral clean-up rewrites of the captured IR graph, run before any lowering."""

from __future__ import annotations

import dataclasses

from ..graph import Dim, Graph, Node
from .view import GraphView, remove_dead_nodes

# Primitives whose inputs broadcast numpy-style in ONNX and torch alike.
NUMPY_BROADCASTING = {
    "Add", "Subtract", "Multiply", "Divide", "Maximum", "Minimum", "Power", "Remainder",
    "Equal", "NotEqual", "Less", "LessEqual", "Greater", "GreaterEqual", "LogicalAnd",
    "LogicalOr", "BitwiseBinary", "LogAddExp", "ArcTan2", "Select", "FloorDivide", "DivMod",
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
    view = GraphView(graph)
    replace: dict[str, str] = {}
    keep: list[Node] = []
    for node in graph.nodes:
        node.inputs = [replace.get(n, n) for n in node.inputs]
        if node.primitive == "Broadcast" and node.outputs[0] not in view.outputs:
            out, src = node.outputs[0], node.inputs[0]
            consumers = view.users.get(out, [])
            if consumers and all(_elidable(graph, c, out, src, replace) for c in consumers):
                replace[out] = src
                continue
        keep.append(node)
    graph.nodes = keep
    return len(replace)


def _elidable(graph: Graph, consumer: Node, out: str, src: str, replace: dict[str, str]) -> bool:
    # AddMM's addend broadcasts too (Gemm's C, or MatMul + Add).
    if consumer.primitive == "Matmul":
        # ONNX MatMul broadcasts batch dims like numpy.matmul; the matrix dims must be untouched.
        src_shape, out_shape = graph.tensors[src].shape, graph.tensors[out].shape
        if len(src_shape) < 2 or tuple(src_shape[-2:]) != tuple(out_shape[-2:]):
            return False
        batches = [tuple(graph.tensors[src if n == out else replace.get(n, n)].shape[:-2]) for n in consumer.inputs]
        return _broadcast(batches) == tuple(graph.tensors[consumer.outputs[0]].shape[:-2])
    addmm_c = consumer.primitive == "AddMM" and consumer.inputs.index(out) == 2 and consumer.inputs.count(out) == 1
    if consumer.primitive not in NUMPY_BROADCASTING and not addmm_c:
        return False
    if addmm_c:
        return _broadcast([graph.tensors[src].shape, graph.tensors[consumer.outputs[0]].shape]) == tuple(
            graph.tensors[consumer.outputs[0]].shape)
    shapes = [graph.tensors[src if n == out else replace.get(n, n)].shape for n in consumer.inputs]
    target = graph.tensors[consumer.outputs[0]].shape
    return _broadcast(shapes) == tuple(target)


def compute_bfloat16_in_float32(graph: Graph) -> Graph:
    """Compute bfloat16 tensors in float32, keeping bfloat16 at the edges and in the weights.

    ONNX Runtime's CPU provider has almost no bfloat16 kernels. The file keeps
    the bfloat16 inputs, outputs and weights (no size growth); each is cast to
    float32 where it enters the computation, and explicit ``astype(bfloat16)``
    rounding in the model is kept as a round trip through bfloat16.
    """
    bf16 = "bfloat16"
    if not any(t.dtype == bf16 for t in graph.tensors.values()):
        return graph
    tensors = {k: dataclasses.replace(v) for k, v in graph.tensors.items()}
    nodes: list[Node] = []
    replace: dict[str, str] = {}

    def upcast(name: str, index: int) -> str:
        wide = f"{name}/f32"
        if wide not in tensors:
            tensors[wide] = dataclasses.replace(tensors[name], name=wide, dtype="float32")
            nodes.append(Node(index, "AsType", [name], [wide], ["float32"]))
        return wide

    sources = {i.name for i in graph.inputs} | set(graph.constants)
    for node in graph.nodes:
        ins = []
        for n in node.inputs:
            n = replace.get(n, n)
            if n in sources and tensors[n].dtype == bf16:
                n = upcast(n, node.index)
            ins.append(n)
        if node.primitive == "AsType" and node.arguments and node.arguments[0] == bf16:
            rounded = node.outputs[0] + "/bf16"
            tensors[rounded] = dataclasses.replace(tensors[node.outputs[0]], name=rounded, dtype=bf16)
            nodes.append(Node(node.index, "AsType", ins, [rounded], [bf16]))
            nodes.append(Node(node.index, "AsType", [rounded], list(node.outputs), ["float32"]))
            tensors[node.outputs[0]].dtype = "float32"
            continue
        args = ["float32" if a == bf16 else a for a in node.arguments]
        for o in node.outputs:
            if tensors[o].dtype == bf16:
                tensors[o].dtype = "float32"
        nodes.append(Node(node.index, node.primitive, ins, list(node.outputs), args))
    sources_out = dict(graph.output_sources)
    for out in graph.outputs:
        src = replace.get(sources_out[out.name], sources_out[out.name])
        if out.dtype == bf16 and tensors[src].dtype != bf16:
            narrow = f"{src}/out_bf16"
            tensors[narrow] = dataclasses.replace(tensors[src], name=narrow, dtype=bf16)
            nodes.append(Node(len(graph.nodes), "AsType", [src], [narrow], [bf16]))
            sources_out[out.name] = narrow
    return dataclasses.replace(graph, nodes=nodes, tensors=tensors, output_sources=sources_out)


def dedupe_small_constants(graph: Graph, max_elements: int = 64) -> int:
    """Merge small constants with equal values (MLX makes a new scalar per use, e.g. eps per layer)."""
    seen: dict[tuple, str] = {}
    replace: dict[str, str] = {}
    for name, value in graph.constants.items():
        # Named parameters keep their identity (two norms initialised to ones stay two weights).
        if value.size > max_elements or not name.startswith("/"):
            continue
        key = (value.dtype.str, value.dtype.name, value.shape, value.tobytes())
        if key in seen:
            replace[name] = seen[key]
        else:
            seen[key] = name
    if replace:
        for node in graph.nodes:
            node.inputs = [replace.get(n, n) for n in node.inputs]
        graph.output_sources = {k: replace.get(v, v) for k, v in graph.output_sources.items()}
    return len(replace)


def _freeze(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def eliminate_common_subexpressions(graph: Graph) -> int:
    """Merge nodes with the same primitive, inputs and arguments (RoPE tables per layer...)."""
    seen: dict[tuple, Node] = {}
    replace: dict[str, str] = {}
    keep: list[Node] = []
    for node in graph.nodes:
        node.inputs = [replace.get(n, n) for n in node.inputs]
        key = (node.primitive, tuple(node.inputs), repr(_freeze(node.arguments)), len(node.outputs))
        twin = seen.get(key)
        if twin is not None and all(graph.tensors[a].dtype == graph.tensors[b].dtype
                                    for a, b in zip(node.outputs, twin.outputs)):
            replace.update(zip(node.outputs, twin.outputs))
            continue
        seen[key] = node
        keep.append(node)
    graph.nodes = keep
    graph.output_sources = {k: replace.get(v, v) for k, v in graph.output_sources.items()}
    return len(replace)


def collapse_flattened_matmuls(graph: Graph) -> int:
    """Flatten(x) -> Matmul/AddMM(., W) -> Unflatten  ==>  Matmul/AddMM(x, W) on the full rank.

    A matmul on a [B, L, D] input flattens to 2-D around the product; ONNX MatMul
    takes the batched input directly. Not for a transposed constant weight
    (nn.Linear), which lowers to Gemm(transB=1) on the flat input instead.
    """
    view = GraphView(graph)
    producer, users, outputs = view.producer, view.users, view.outputs
    drop: set[int] = set()
    changed = 0
    for unflat in graph.nodes:
        if unflat.primitive != "Unflatten" or int(unflat.arguments[0]) != 0:
            continue
        mm = producer.get(unflat.inputs[0])
        if mm is None or mm.primitive not in ("Matmul", "AddMM") or len(users.get(mm.outputs[0], [])) != 1:
            continue
        flat = producer.get(mm.inputs[0])
        if flat is None or flat.primitive != "Flatten":
            continue
        if mm.outputs[0] in outputs or flat.outputs[0] in outputs:
            continue
        weight_t = producer.get(mm.inputs[1])
        if (weight_t is not None and weight_t.primitive == "Transpose" and weight_t.inputs[0] in graph.constants
                and list(weight_t.arguments[0]) == [1, 0]):
            # nn.Linear's weight: 2-D Gemm(transB=1) reads it as stored. MatMul on the 3-D input
            # would need a transposed copy of every weight in the file (the slowest part of export).
            continue
        src = graph.tensors[flat.inputs[0]]
        w = graph.tensors[mm.inputs[1]]
        out = graph.tensors[unflat.outputs[0]]
        if w.rank != 2 or src.rank != out.rank or tuple(src.shape[:-1]) != tuple(out.shape[:-1]):
            continue
        if mm.primitive == "AddMM" and graph.tensors[mm.inputs[2]].rank > 1:
            continue
        mm.inputs[0] = flat.inputs[0]
        mm.outputs[0] = unflat.outputs[0]
        drop.add(id(unflat))
        changed += 1
    graph.nodes = [n for n in graph.nodes if id(n) not in drop]
    if changed:
        remove_dead_nodes(graph)
    return changed


_RESHAPES = {"Reshape", "Flatten", "Unflatten"}


def merge_reshapes(graph: Graph) -> int:
    """Reshape(Reshape(x)) -> Reshape(x): only the final shape matters (Flatten/Unflatten alike)."""
    view = GraphView(graph)
    producer, users, outputs = view.producer, view.users, view.outputs
    merged = 0
    for node in graph.nodes:
        if node.primitive not in _RESHAPES:
            continue
        first = producer.get(node.inputs[0])
        while (first is not None and first.primitive in _RESHAPES and len(users.get(first.outputs[0], [])) == 1
               and first.outputs[0] not in outputs):
            node.inputs[0] = first.inputs[0]
            merged += 1
            first = producer.get(node.inputs[0])
    if merged:
        remove_dead_nodes(graph)
    return merged
