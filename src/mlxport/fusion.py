"""Fold the decompositions of mx.fast norms back into fused RMSNorm / LayerNorm nodes.

A Linux CPU trace spells ``mx.fast.rms_norm`` as Square, Reduce, Multiply,
Add, rsqrt, Multiply...; a Mac GPU trace keeps one ``RMSNorm`` primitive. We
rewrite the first into the second, so both traces take the same lowering (the
ONNX RMSNormalization / LayerNormalization ops where the opset has them).
Runs after Broadcast elision, so patterns have no Broadcast nodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .graph import Graph, Node, TensorInfo


class _View:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.producer = {o: n for n in graph.nodes for o in n.outputs}
        self.users = graph.consumers()
        self.outputs = set(graph.output_sources.values())

    def node(self, name: str, primitive: str) -> Node | None:
        n = self.producer.get(name)
        return n if n is not None and n.primitive == primitive else None

    def only_user(self, name: str) -> Node | None:
        users = self.users.get(name, [])
        if len(users) != 1 or name in self.outputs:
            return None
        return users[0]

    def scalar(self, name: str) -> float | None:
        value = self.graph.constants.get(name)
        if value is None or value.size != 1:
            return None
        return float(np.asarray(value, dtype=np.float32).reshape(-1)[0])

    def split_const(self, node: Node) -> tuple[str, float] | None:
        """(other input, scalar constant) of a binary node with one scalar-constant operand."""
        for i in (0, 1):
            c = self.scalar(node.inputs[i])
            if c is not None:
                return node.inputs[1 - i], c
        return None


def _mean_of(v: _View, name: str, width: int, axis: int) -> str | None:
    """If ``name`` is sum(x, last axis) * (1/width), return x."""
    mul = v.node(name, "Multiply")
    if mul is None:
        return None
    split = v.split_const(mul)
    if split is None or not np.isclose(split[1], 1.0 / width, rtol=1e-6):
        return None
    red = v.node(split[0], "Reduce")
    if red is None or int(red.arguments[0]) != 2 or list(red.arguments[1]) != [axis]:
        return None
    return red.inputs[0]


def _match_tail(v: _View, normed: str, in_dtype: str) -> tuple[list[Node], str | None, str | None, str]:
    """Optional AsType back to the input dtype, then optional * weight and + bias (1-D, last dim)."""
    used: list[Node] = []
    cur = normed
    user = v.only_user(cur)
    if user is not None and user.primitive == "AsType" and user.arguments[0] == in_dtype:
        used.append(user)
        cur = user.outputs[0]
    weight = bias = None
    width = v.graph.tensors[normed].shape[-1]
    for prim in ("Multiply", "Add"):
        user = v.only_user(cur)
        if user is None or user.primitive != prim or user.inputs.count(cur) != 1:
            break
        other = user.inputs[1 - user.inputs.index(cur)]
        if tuple(v.graph.tensors[other].shape) != (width,):
            break
        used.append(user)
        cur = user.outputs[0]
        if prim == "Multiply":
            weight = other
        else:
            bias = other
    return used, weight, bias, cur


def _add_scalar(graph: Graph, value: float, dtype: str) -> str:
    from .ops.registry import numpy_dtype

    name = f"/fusion/{value:g}_{dtype}"
    if name not in graph.constants:
        graph.constants[name] = np.array(value, dtype=numpy_dtype(dtype))
        graph.tensors[name] = TensorInfo(name, (), dtype)
    return name


def fuse_norms(graph: Graph) -> int:
    """Replace decomposed RMSNorm / LayerNorm patterns by fused nodes; returns how many."""
    v = _View(graph)
    drop: set[int] = set()
    new_nodes: dict[int, Node] = {}
    count = 0
    for rs in graph.nodes:
        if rs.primitive != "Sqrt" or not rs.arguments or not rs.arguments[0] or id(rs) in drop:
            continue
        match = _match_norm(v, rs)
        if match is None:
            continue
        kind, x, matched, eps, centered_src = match
        x_info = v.graph.tensors[x]
        scale_src = centered_src
        mul = v.only_user(rs.outputs[0])
        if mul is None or mul.primitive != "Multiply" or scale_src not in mul.inputs:
            continue
        tail, weight, bias, out = _match_tail(v, mul.outputs[0], x_info.dtype)
        if kind == "RMSNorm" and bias is not None:
            # x * rsqrt * w + b is not an RMSNorm: keep the bias add outside.
            tail, bias = tail[:-1], None
            out = tail[-1].outputs[0] if tail else mul.outputs[0]
        if graph.tensors[out].dtype != x_info.dtype:
            continue
        nodes = matched + [rs, mul] + tail
        inner = {o for n in nodes for o in n.outputs} - {out}
        if any(u for name in inner for u in v.users.get(name, []) if u not in nodes) or inner & v.outputs:
            continue
        w = weight or _add_scalar(graph, 1.0, x_info.dtype)
        inputs = [x, w] if kind == "RMSNorm" else [x, w, bias or _add_scalar(graph, 0.0, x_info.dtype)]
        fused = Node(rs.index, kind, inputs, [out], [None, eps])
        for n in nodes:
            drop.add(id(n))
        new_nodes[id(tail[-1] if tail else mul)] = fused
        count += 1
    if count:
        graph.nodes = [new_nodes.get(id(n), n) for n in graph.nodes if id(n) not in drop or id(n) in new_nodes]
    return count


def _match_norm(v: _View, rs: Node) -> tuple[str, str, list[Node], float, str] | None:
    """Walk up from rsqrt: (kind, x, matched nodes, eps, the tensor rsqrt multiplies)."""
    add = v.node(rs.inputs[0], "Add")
    if add is None:
        return None
    split = v.split_const(add)
    if split is None:
        return None
    var_name, eps = split
    mul = v.node(var_name, "Multiply")
    if mul is None:
        return None
    const = v.split_const(mul)
    if const is None:
        return None
    red = v.node(const[0], "Reduce")
    if red is None or int(red.arguments[0]) != 2:
        return None
    sq = v.node(red.inputs[0], "Square")
    if sq is None:
        return None
    info = v.graph.tensors[sq.inputs[0]]
    axis = info.rank - 1
    width = info.shape[-1]
    if not isinstance(width, int) or list(red.arguments[1]) != [axis] or not np.isclose(const[1], 1.0 / width, rtol=1e-6):
        return None
    matched: list[Node] = [sq, red, mul, add]
    base = sq.inputs[0]
    sub = v.node(base, "Subtract")
    kind = "RMSNorm"
    src = base
    if sub is not None:
        mean_src = _mean_of(v, sub.inputs[1], width, axis)
        if mean_src == sub.inputs[0]:
            kind = "LayerNorm"
            mean_mul = v.producer[sub.inputs[1]]
            matched += [sub, mean_mul, v.producer[mean_mul.inputs[0] if v.scalar(mean_mul.inputs[1]) is not None else mean_mul.inputs[1]]]
            src = sub.inputs[0]
    x = src
    up = v.node(src, "AsType")
    if up is not None and up.arguments[0] == "float32" and v.graph.tensors[up.inputs[0]].dtype in ("float16", "bfloat16"):
        x = up.inputs[0]
        matched.append(up)
    return kind, x, matched, float(np.float32(eps)), base


__all__: list[Any] = ["fuse_norms"]
