"""Fold the decompositions of mx.fast ops back into fused RMSNorm / LayerNorm / RoPE / attention nodes.

Fused nodes carry the arguments a Mac-GPU trace gives (``state()`` without its
leading fallback placeholder): RMSNorm/LayerNorm ``[eps]``, RoPE ``[dims,
traditional, base, scale, forward]``, ScaledDotProductAttention ``[scale,
do_causal, has_sinks, output_logsumexp, force_fused]``.

A Linux CPU trace spells ``mx.fast.rms_norm`` as Square, Reduce, Multiply,
Add, rsqrt, Multiply...; a Mac GPU trace keeps one ``RMSNorm`` primitive. We
rewrite the first into the second, so both traces take the same lowering (the
ONNX RMSNormalization / LayerNormalization ops where the opset has them).
Runs after Broadcast elision, so patterns have no Broadcast nodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..graph import Graph, Node, TensorInfo
from .view import GraphView, replace_nodes


def _mean_of(v: GraphView, name: str, width: int, axis: int) -> str | None:
    """If ``name`` is sum(x, last axis) * (1/width), return x."""
    split = v.const_operand(name, "Multiply")
    if split is None or not np.isclose(split[2], 1.0 / width, rtol=1e-6):
        return None
    red = v.node(split[1], "Reduce")
    if red is None or int(red.arguments[0]) != 2 or list(red.arguments[1]) != [axis]:
        return None
    return red.inputs[0]


def _match_tail(v: GraphView, normed: str, in_dtype: str) -> tuple[list[Node], str | None, str | None, str]:
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
    from ..dtypes import numpy_dtype

    name = f"/fusion/{value:g}_{dtype}"
    if name not in graph.constants:
        graph.constants[name] = np.array(value, dtype=numpy_dtype(dtype))
        graph.tensors[name] = TensorInfo(name, (), dtype)
    return name


def fuse_norms(graph: Graph) -> int:
    """Replace decomposed RMSNorm / LayerNorm patterns by fused nodes; returns how many."""
    v = GraphView(graph)
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
        fused = Node(rs.index, kind, inputs, [out], [eps])
        for n in nodes:
            drop.add(id(n))
        new_nodes[id(tail[-1] if tail else mul)] = fused
        count += 1
    if count:
        graph.nodes = [new_nodes.get(id(n), n) for n in graph.nodes if id(n) not in drop or id(n) in new_nodes]
    return count


def _match_norm(v: GraphView, rs: Node) -> tuple[str, str, list[Node], float, str] | None:
    """Walk up from rsqrt: (kind, x, matched nodes, eps, the tensor rsqrt multiplies)."""
    split = v.const_operand(rs.inputs[0], "Add")
    if split is None:
        return None
    add, var_name, eps = split
    const = v.const_operand(var_name, "Multiply")
    if const is None:
        return None
    mul, reduced, inv_width = const
    red = v.node(reduced, "Reduce")
    if red is None or int(red.arguments[0]) != 2:
        return None
    sq = v.node(red.inputs[0], "Square")
    if sq is None:
        return None
    info = v.graph.tensors[sq.inputs[0]]
    axis = info.rank - 1
    width = info.shape[-1]
    if not isinstance(width, int) or list(red.arguments[1]) != [axis] or not np.isclose(inv_width, 1.0 / width, rtol=1e-6):
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


def _strip_astype(v: GraphView, name: str) -> str:
    node = v.node(name, "AsType")
    return node.inputs[0] if node is not None else name


def _binary_pair(v: GraphView, name: str, prim: str) -> tuple[str, str, Node] | None:
    node = v.node(name, prim)
    if node is None or len(node.inputs) != 2:
        return None
    return node.inputs[0], node.inputs[1], node


def _half_slices(v: GraphView, a: str, b: str) -> tuple[str, int, bool] | None:
    """(x, half, traditional) when a/b are x's rotary halves: [:h]/[h:2h] or [0:2h:2]/[1:2h:2]."""
    sa, sb = v.node(a, "Slice"), v.node(b, "Slice")
    if sa is None or sb is None or sa.inputs[0] != sb.inputs[0]:
        return None
    x = sa.inputs[0]
    info = v.graph.tensors[x]
    last = info.rank - 1
    (a0, a1, astep), (b0, b1, bstep) = ((s.arguments[0], s.arguments[1], s.arguments[2]) for s in (sa, sb))
    for i in range(last):
        if a0[i] != 0 or b0[i] != 0 or astep[i] != 1 or bstep[i] != 1 or a1[i] != info.shape[i] or b1[i] != info.shape[i]:
            return None
    if astep[last] == 1 and bstep[last] == 1 and a0[last] == 0 and b0[last] == a1[last] and b1[last] == 2 * a1[last]:
        return x, int(a1[last]), False
    if astep[last] == 2 and bstep[last] == 2 and a0[last] == 0 and b0[last] == 1 and a1[last] == b1[last]:
        return x, int(a1[last]) // 2, True
    return None


def _rotation(v: GraphView, r1: str, r2: str) -> tuple[str, str, str, str, list[Node]] | None:
    """r1 = a*cos - b*sin, r2 = a*sin + b*cos  ->  (a, b, cos, sin, nodes)."""
    sub = _binary_pair(v, r1, "Subtract")
    add = _binary_pair(v, r2, "Add")
    if sub is None or add is None:
        return None
    m1, m2 = v.node(sub[0], "Multiply"), v.node(sub[1], "Multiply")
    m3, m4 = v.node(add[0], "Multiply"), v.node(add[1], "Multiply")
    if None in (m1, m2, m3, m4):
        return None
    trig = {}
    for n in (m1, m2, m3, m4):
        for i in (0, 1):
            src = _strip_astype(v, n.inputs[i])
            kind = v.producer.get(src)
            if kind is not None and kind.primitive in ("Cos", "Sin"):
                trig[id(n)] = (n.inputs[1 - i], kind.primitive, kind)
    if len(trig) != 4:
        return None
    (a, k1, c), (b, k2, s) = trig[id(m1)], trig[id(m2)]
    (a2, k3, _), (b2, k4, _) = trig[id(m3)], trig[id(m4)]
    if (k1, k2, k3, k4) != ("Cos", "Sin", "Sin", "Cos") or (a, b) != (a2, b2) or c.inputs[0] != s.inputs[0]:
        return None
    return a, b, c.inputs[0], s.inputs[0], [sub[2], add[2], m1, m2, m3, m4]


def _theta(v: GraphView, theta: str, half: int, seq: Any) -> tuple[str, float, float | None, str | None] | None:
    """theta = (arange(L) + offset) * scale [:, None] * inv_freq -> (offset, scale, base, freqs)."""
    mul = v.node(theta, "Multiply")
    if mul is None:
        return None
    pos_col, inv = mul.inputs
    if v.node(pos_col, "ExpandDims") is None:
        pos_col, inv = inv, pos_col
    expand = v.node(pos_col, "ExpandDims")
    if expand is None:
        return None
    scaled = v.const_operand(expand.inputs[0], "Multiply")
    if scaled is None:
        return None
    _, pos, scale = scaled
    shifted = v.node(pos, "Add")
    if shifted is None:
        return None
    arange = v.node(shifted.inputs[0], "Arange") or v.node(shifted.inputs[1], "Arange")
    if arange is None or list(arange.arguments[:1]) != [0.0] or arange.arguments[1] != seq or arange.arguments[2] != 1.0:
        return None
    offset = shifted.inputs[1] if arange.outputs[0] == shifted.inputs[0] else shifted.inputs[0]
    offset = _strip_astype(v, offset)
    if v.graph.tensors[offset].rank != 0:
        return None
    exp = v.node(inv, "Exp")
    if exp is not None:
        split = v.const_operand(exp.inputs[0], "Multiply")
        if split is None:
            return None
        _, ramp_name, slope = split
        ramp = v.node(ramp_name, "Arange")
        if ramp is None or list(ramp.arguments) != [0.0, float(-half), -1.0]:
            return None
        return offset, scale, _base_from_slope(slope, half), None
    div = v.node(inv, "Divide")
    if div is not None and v.scalar(div.inputs[0]) == 1.0 and tuple(v.graph.tensors[div.inputs[1]].shape) == (half,):
        return offset, scale, None, div.inputs[1]
    return None


def _base_from_slope(slope: float, half: int) -> float:
    """MLX stores log(base)/half in float32; recover the base a user typed (10000, 500000...)."""
    base = float(np.exp(np.float64(slope) * half))
    for candidate in (round(base), round(base, 1), round(base, 3)):
        if candidate > 0 and np.float32(np.log(candidate) / half) == np.float32(slope):
            return float(candidate)
    return base


def fuse_rope(graph: Graph) -> int:
    """Replace decomposed mx.fast.rope patterns (both layouts, partial dims) by RoPE nodes."""
    v = GraphView(graph)
    count = 0
    replaced: dict[int, Node] = {}
    for cat in graph.nodes:
        if cat.primitive != "Concatenate" or len(cat.inputs) not in (2, 3):
            continue
        r1, r2 = cat.inputs[:2]
        e1, e2 = v.node(r1, "ExpandDims"), v.node(r2, "ExpandDims")
        traditional_layout = e1 is not None and e2 is not None
        if traditional_layout:
            r1, r2 = e1.inputs[0], e2.inputs[0]
        rot = _rotation(v, r1, r2)
        if rot is None:
            continue
        a, b, cos_theta, sin_theta, rot_nodes = rot
        halves = _half_slices(v, a, b)
        if halves is None or halves[2] != traditional_layout:
            continue
        x, half, traditional = halves
        info = graph.tensors[x]
        out_node = cat
        if traditional:
            reshape = v.only_user(cat.outputs[0])
            if reshape is None or reshape.primitive != "Reshape":
                continue
            out_node = reshape
        elif int(cat.arguments[0]) % info.rank != info.rank - 1:
            continue
        dims = 2 * half
        if len(cat.inputs) == 3:
            # Non-traditional partial rotation concatenates the untouched rest in the same node.
            rest = v.node(cat.inputs[2], "Slice")
            if traditional or rest is None or rest.inputs[0] != x or rest.arguments[0][-1] != dims:
                continue
        elif dims != info.shape[-1]:
            tail = v.only_user(out_node.outputs[0])
            if tail is None or tail.primitive != "Concatenate" or tail.inputs[0] != out_node.outputs[0]:
                continue
            rest = v.node(tail.inputs[1], "Slice")
            if rest is None or rest.inputs[0] != x or rest.arguments[0][-1] != dims:
                continue
            out_node = tail
        params = _theta(v, cos_theta, half, info.shape[-2])
        if params is None:
            continue
        offset, scale, base, freqs = params
        inputs = [x, offset] + ([freqs] if freqs is not None else [])
        fused = Node(out_node.index, "RoPE", inputs, list(out_node.outputs),
                     [dims, traditional, base if base is not None else 0.0, float(scale), True])
        replaced[id(out_node)] = fused
        count += 1
    if count:
        replace_nodes(graph, replaced)
    return count


def _is_causal_mask(v: GraphView, name: str, length: Any) -> bool:
    """GreaterEqual(arange(L)[:, None], arange(L)[None]) — the mask MLX builds for mask="causal"."""
    ge = v.node(name, "GreaterEqual")
    if ge is None:
        return False
    rows, cols = v.node(ge.inputs[0], "ExpandDims"), v.node(ge.inputs[1], "ExpandDims")
    if rows is None or cols is None or list(rows.arguments[0]) != [1] or list(cols.arguments[0]) != [0]:
        return False
    ar, ac = v.node(rows.inputs[0], "Arange"), v.node(cols.inputs[0], "Arange")
    return (ar is not None and ac is not None and list(ar.arguments) == list(ac.arguments)
            and list(ar.arguments) == [0.0, length, 1.0])


def _finfo_max(dtype: str) -> float:
    return {"float16": 65504.0, "bfloat16": 3.3895313892515355e38, "float32": 3.4028234663852886e38}[dtype]


def fuse_attention(graph: Graph) -> int:
    """Replace decomposed mx.fast.scaled_dot_product_attention by ScaledDotProductAttention nodes."""
    v = GraphView(graph)
    count = 0
    replaced: dict[int, Node] = {}
    for sm in graph.nodes:
        if sm.primitive != "Softmax":
            continue
        match = _match_attention(v, sm)
        if match is None:
            continue
        out_node, inputs, scale, causal = match
        replaced[id(out_node)] = Node(out_node.index, "ScaledDotProductAttention", inputs, list(out_node.outputs),
                                      [scale, causal, False, False, False])
        count += 1
    if count:
        replace_nodes(graph, replaced)
    return count


def _match_attention(v: GraphView, sm: Node) -> tuple[Node, list[str], float, bool] | None:
    scores = sm.inputs[0]
    mask: str | None = None
    causal = False
    select = v.node(scores, "Select")
    add = v.node(scores, "Add")
    if select is not None:
        fill = v.scalar(select.inputs[2])
        dtype = v.graph.tensors[select.inputs[2]].dtype
        # MLX fills masked scores with the lowest finite value of the dtype (-65504 in float16).
        if fill is None or dtype not in ("float16", "bfloat16", "float32") or fill > -0.5 * _finfo_max(dtype):
            return None
        mask, scores = select.inputs[0], select.inputs[1]
    elif add is not None and v.node(add.inputs[0], "Matmul") is not None:
        scores, mask = add.inputs
    qk = v.node(scores, "Matmul")
    if qk is None or v.only_user(scores) is None:
        return None
    qs, kt = qk.inputs
    gqa = v.node(qs, "Unflatten")
    if gqa is not None:
        if int(gqa.arguments[0]) != 1:
            return None
        qs = gqa.inputs[0]
    split = v.const_operand(qs, "Multiply")
    if split is None:
        return None
    _, q, scale = split
    trans = v.node(kt, "Transpose")
    if trans is None:
        return None
    k = trans.inputs[0]
    if gqa is not None:
        if list(trans.arguments[0]) != [0, 1, 2, 4, 3]:
            return None
        ek = v.node(k, "ExpandDims")
        if ek is None or list(ek.arguments[0]) != [2]:
            return None
        k = ek.inputs[0]
    elif list(trans.arguments[0]) != [0, 1, 3, 2]:
        return None
    pv = v.only_user(sm.outputs[0])
    if pv is None or pv.primitive != "Matmul" or pv.inputs[0] != sm.outputs[0]:
        return None
    val = pv.inputs[1]
    out_node = pv
    if gqa is not None:
        ev = v.node(val, "ExpandDims")
        flat = v.only_user(pv.outputs[0])
        if ev is None or list(ev.arguments[0]) != [2] or flat is None or flat.primitive != "Flatten" \
                or list(flat.arguments) != [1, 2]:
            return None
        val, out_node = ev.inputs[0], flat
    qi, ki, vi = (v.graph.tensors[n] for n in (q, k, val))
    if qi.rank != 4 or ki.rank != 4 or vi.rank != 4:
        return None
    if mask is not None and gqa is not None:
        # With grouped heads MLX splits the mask's head axis like the queries'; undo that.
        split_mask = v.node(mask, "Unflatten")
        if split_mask is not None and int(split_mask.arguments[0]) == 1:
            mask = split_mask.inputs[0]
    if mask is not None and v.graph.tensors[mask].rank > 4:
        return None
    if mask is not None and v.graph.tensors[mask].dtype == "bool" and _is_causal_mask(v, mask, qi.shape[2]) \
            and qi.shape[2] == ki.shape[2]:
        causal, mask = True, None
    inputs = [q, k, val] + ([mask] if mask is not None else [])
    return out_node, inputs, float(np.float32(scale)), causal
