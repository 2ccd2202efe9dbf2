"""Rewrite an exported LM decoder for ONNX Runtime's fused CPU kernels (a post-export ONNX pass).

``export_lm`` writes a standard graph: per layer ``Concat(past, new) -> present`` and an opset-23
``Attention`` with the causal/padding mask. ``fuse_for_ort`` rewrites that file in place:

- each layer's two ``Concat`` + ``Attention`` become one ``com.microsoft.GroupQueryAttention`` that writes
  the new keys and values into the cache itself, so ONNX Runtime GenAI can share the past and present
  buffers (``past_present_share_buffer: true``). Rotary stays outside (``do_rotary=0``): the graph's own
  ``RotaryEmbedding`` runs on the ``[batch, seq, heads * head_dim]`` projections GQA reads.
  ``seqlens_k`` is ``total - 1`` for every row and ``total_sequence_length`` is the width of
  ``attention_mask``; the padding part of the mask (a padded key is hidden from every query but itself)
  becomes GQA's ``attention_bias``, so left-padded batches keep the standard graph's semantics.
- the past length, which the graph read from the past's shape, is read from ``attention_mask`` minus the
  new tokens (a shared buffer's shape is its capacity, not the past length).
- ``Add`` (residual) + ``RMSNormalization`` become ``com.microsoft.SkipSimplifiedLayerNormalization``.
- sibling matmuls on one input (q/k/v, and gate/up in the MLP) become one ``Gemm`` or ``MatMulNBits`` on
  concatenated weights followed by a ``Split``.

The rewrite only matches the patterns mlxport's own LM export produces and raises ``CaptureError`` for a
graph it does not recognise (export with ``fused=False`` then).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CaptureError
from .onnx_view import ModelView, attr

if TYPE_CHECKING:
    import onnx

    from ..lm.step import LMSpec

MS = "com.microsoft"
HINT = "Export the standard graph instead (export_lm(..., fused=False)); it runs on any ONNX Runtime."


@dataclass
class FusionStats:
    """How many fused nodes the rewrite made."""

    group_query_attention: int = 0
    skip_simplified_layer_norm: int = 0
    fused_matmuls: int = 0  # groups of sibling matmuls merged into one
    removed_nodes: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Counts as a plain dict (for the metadata file)."""
        return {"GroupQueryAttention": self.group_query_attention,
                "SkipSimplifiedLayerNormalization": self.skip_simplified_layer_norm,
                "fused matmul groups": self.fused_matmuls, "removed nodes": self.removed_nodes}


def fuse_for_ort(path: str | Path, spec: LMSpec, *, out: str | Path | None = None, attention: bool = True,
                 skip_norm: bool = True, fuse_matmuls: bool = True) -> FusionStats:
    """Rewrite ``path`` (an ``export_lm`` model.onnx) to use ONNX Runtime's fused CPU kernels.

    Args:
        path: the model.onnx written by ``export_lm`` (opset 23+, not ``portable``).
        spec: its LMSpec (head counts and head size for GroupQueryAttention).
        out: where to write the rewritten model (default: over ``path``). Large weights go to ``<out>.data``
            when the source keeps them in an external file.
        attention: replace Concat + Attention by GroupQueryAttention (in-place cache).
        skip_norm: replace residual Add + RMSNormalization by SkipSimplifiedLayerNormalization.
        fuse_matmuls: merge sibling Gemm / MatMulNBits nodes on one input (q/k/v, gate/up).

    Returns:
        FusionStats with the number of each fused node.

    Raises:
        CaptureError: when ``attention`` is asked for and a layer's attention is not the pattern export_lm
            writes (so the cache could not be shared in place).
    """
    import onnx

    path = Path(path)
    external = (path.parent / (path.name + ".data")).exists()
    model = onnx.load(str(path))
    g = ModelView(model, "ortfused")
    stats = FusionStats()
    before = len(g.graph.node)
    if attention and _cache_dtype(g) not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
        raise CaptureError(f"GroupQueryAttention on CPU takes a float32 or float16 cache; this graph's cache is "
                           f"{onnx.TensorProto.DataType.Name(_cache_dtype(g)).lower()}", hint=HINT)
    if skip_norm:  # first: it reads shapes inferred on the graph as exported
        stats.skip_simplified_layer_norm = _fuse_skip_norm(g)
    if fuse_matmuls:
        stats.fused_matmuls = _fuse_sibling_matmuls(g)
    if attention:
        stats.group_query_attention = _fuse_attention(g, spec)
    g.prune()
    if not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(MS, 1))
    stats.removed_nodes = before - len(g.graph.node)
    _topological_sort(g)
    onnx.checker.check_model(model)  # structure only (contrib ops are unknown to the checker's shape pass)
    target = Path(out) if out is not None else path
    if external:
        onnx.save(model, str(target), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=target.name + ".data", size_threshold=1024)
    else:
        onnx.save(model, str(target))
    return stats


# --- attention ---------------------------------------------------------------------------------------------


def _fuse_attention(g: ModelView, spec: LMSpec) -> int:
    """Concat(past, k) / Concat(past, v) + Attention(q, present_k, present_v, mask) -> GroupQueryAttention."""
    attentions = [n for n in g.graph.node if n.op_type == "Attention" and n.domain in ("", "ai.onnx")]
    if not attentions:
        raise CaptureError("the graph has no ONNX Attention node to replace by GroupQueryAttention (was it exported "
                           "with portable=True, or does the architecture compute attention by hand?)", hint=HINT)
    _rewire_past_length(g)
    common = _common_inputs(g)
    new_nodes: dict[int, list[Any]] = {}
    dead: set[int] = set()
    for att in attentions:
        nodes, removed = _gqa_for(g, att, spec, common)
        new_nodes[id(att)] = nodes
        dead |= removed
    g.replace(new_nodes, dead)
    # The shared inputs (seqlens_k, the padding bias...) go first: they read only graph inputs.
    g.set_nodes(common["nodes"] + list(g.graph.node))
    return len(attentions)


def _rewire_past_length(g: ModelView) -> None:
    """Shape(past)[2] (the past length) -> Shape(attention_mask)[1] - Shape(input_ids)[1]."""
    past_inputs = {n for n in g.inputs if n.startswith("past_key_values.")}
    replaced = False
    for node in list(g.graph.node):
        uses = [i for i in node.input if i in past_inputs]
        if not uses:
            continue
        if node.op_type == "Shape":
            start, end = attr(node, "start", 0), attr(node, "end", None)
            if (start, end) == (0, 1):
                continue  # the batch size: the same with a shared buffer
            if (start, end) != (2, 3):
                raise CaptureError(f"node {node.name} reads Shape(past)[{start}:{end}]; only the batch size and the "
                                   "past length can be rewired for a shared cache", hint=HINT)
            total = g.node("Shape", ["attention_mask"], start=1, end=2)
            new = g.node("Shape", ["input_ids"], start=1, end=2)
            sub = g.node("Sub", [total.output[0], new.output[0]], [node.output[0]])
            idx = list(g.graph.node).index(node)
            g.graph.node.remove(node)
            for k, n in enumerate((total, new, sub)):
                g.graph.node.insert(idx + k, n)
            replaced = True
        elif node.op_type != "Concat":
            raise CaptureError(f"the past cache feeds {node.op_type} node {node.name}; GroupQueryAttention can only "
                               "take over a cache that is concatenated and attended to", hint=HINT)
    if replaced:
        g.reindex()


def _common_inputs(g: ModelView) -> dict[str, Any]:
    """seqlens_k (int32 [batch], total - 1), total_sequence_length (int32 scalar), attention_bias (padding)."""
    from onnx import TensorProto

    nodes: list[Any] = []

    def add(node: Any) -> str:
        nodes.append(node)
        return node.output[0]

    dtype = _cache_dtype(g)
    np_dtype = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
    total = add(g.node("Shape", ["attention_mask"], start=1, end=2))                       # [1] int64
    batch = add(g.node("Shape", ["attention_mask"], start=0, end=1))
    seq = add(g.node("Shape", ["input_ids"], start=1, end=2))
    one = g.const("one", np.array([1], np.int64))
    last = add(g.node("Sub", [total, one]))
    seqlens = add(g.node("Cast", [add(g.node("Expand", [last, batch]))], to=TensorProto.INT32))
    # query_seqlens (every row's new tokens are all valid) lets GQA take a batch of several new tokens after a past.
    queries = add(g.node("Cast", [add(g.node("Expand", [seq, batch]))], to=TensorProto.INT32))
    total32 = add(g.node("Cast", [add(g.node("Squeeze", [total, g.const("axis0", np.array([0], np.int64))]))],
                         to=TensorProto.INT32))
    # Padding bias [batch, 1, seq, total]: 0 where the key is not padding or is the query itself, else the most
    # negative finite value (the standard graph's mask: a padded query attends to itself, so no row is empty).
    past = add(g.node("Sub", [total, seq]))
    zero = g.const("zero", np.array(0, np.int64))
    step = g.const("step", np.array(1, np.int64))
    scalar = g.const("scalar", np.array([0], np.int64))
    rows = add(g.node("Range", [add(g.node("Squeeze", [past, scalar])), add(g.node("Squeeze", [total, scalar])),
                                step]))
    cols = add(g.node("Range", [zero, add(g.node("Squeeze", [total, scalar])), step]))
    itself = add(g.node("Equal", [add(g.node("Unsqueeze", [rows, g.const("ax1", np.array([1], np.int64))])),
                                  add(g.node("Unsqueeze", [cols, g.const("ax0", np.array([0], np.int64))]))]))
    attend = add(g.node("Unsqueeze", [add(g.node("Cast", ["attention_mask"], to=TensorProto.BOOL)),
                                      g.const("ax12", np.array([1, 2], np.int64))]))
    keep = add(g.node("Or", [attend, itself]))
    bias = add(g.node("Where", [keep, g.const("open", np.array(0, np_dtype)),
                                g.const("closed", np.array(np.finfo(np_dtype).min, np_dtype))]))
    return {"nodes": nodes, "seqlens_k": seqlens, "total": total32, "bias": bias, "queries": queries}


def _cache_dtype(g: ModelView) -> int:
    for i in g.graph.input:
        if i.name.startswith("past_key_values."):
            return i.type.tensor_type.elem_type
    raise CaptureError("the graph has no past_key_values.* input", hint=HINT)


def _concat_of_past(g: ModelView, name: str, past_prefix: str) -> tuple[Any, str, str]:
    """The Concat(past, new, axis=2) producing ``name``: (node, past input, new tensor)."""
    node = g.producer.get(name)
    if (node is None or node.op_type != "Concat" or attr(node, "axis") not in (2, -2) or len(node.input) != 2
            or not node.input[0].startswith(past_prefix) or node.input[0] not in g.inputs):
        raise CaptureError(f"the attention's {'key' if 'key' in past_prefix else 'value'} input {name} is not "
                           "Concat(past_key_values.N, new) along the sequence axis", hint=HINT)
    return node, node.input[0], node.input[1]


def _gqa_for(g: ModelView, att: Any, spec: LMSpec, common: dict[str, Any]) -> tuple[list[Any], set[int]]:
    """The nodes replacing one Attention node, and the ids of the nodes it makes dead."""
    if len(att.input) < 4 or any(att.input[4:]) or not att.input[3] or attr(att, "is_causal", 0):
        raise CaptureError(f"{att.name}: expected Attention(q, k, v, mask) with a boolean causal/padding mask and no "
                           "past inputs", hint=HINT)
    if attr(att, "q_num_heads") is not None or any(att.output[1:]):
        raise CaptureError(f"{att.name}: expected 4-D q/k/v and a single output", hint=HINT)
    k_cat, past_k, k_new = _concat_of_past(g, att.input[1], "past_key_values.")
    v_cat, past_v, v_new = _concat_of_past(g, att.input[2], "past_key_values.")
    for cat in (k_cat, v_cat):
        if cat.output[0] not in g.outputs or [c for c in g.consumers[cat.output[0]] if c is not att]:
            raise CaptureError(f"{cat.output[0]} is used by more than the attention and the graph output", hint=HINT)
    heads, kv_heads, head_dim = spec.num_heads, spec.num_kv_heads, spec.head_dim
    out: list[Any] = []
    flat = g.const("bsd", np.array([0, 0, -1], np.int64))

    def to_bsd(name: str, n: int) -> str:
        """[B, N, S, H] -> [B, S, N*H]; a RotaryEmbedding over Transpose(BSNH) is moved onto the 3-D tensor."""
        rot = g.producer.get(name)
        if (rot is not None and rot.op_type == "RotaryEmbedding" and len(g.consumers[name]) == 1
                and rot.input[0] in g.producer and g.producer[rot.input[0]].op_type == "Transpose"
                and list(attr(g.producer[rot.input[0]], "perm", [])) == [0, 2, 1, 3]
                and len(g.consumers[rot.input[0]]) == 1 and len(rot.input) == 3):
            src = g.producer[rot.input[0]].input[0]
            x3 = g.node("Reshape", [src, flat])
            attrs = {a.name: attr(rot, a.name) for a in rot.attribute}
            attrs["num_heads"] = n
            r3 = g.node("RotaryEmbedding", [x3.output[0], rot.input[1], rot.input[2]], **attrs)
            out.extend([x3, r3])
            return r3.output[0]
        t = g.node("Transpose", [name], perm=[0, 2, 1, 3])
        r = g.node("Reshape", [t.output[0], flat])
        out.extend([t, r])
        return r.output[0]

    q = to_bsd(att.input[0], heads)
    k = to_bsd(k_new, kv_heads)
    v = to_bsd(v_new, kv_heads)
    scale = attr(att, "scale")
    attrs: dict[str, Any] = {"num_heads": heads, "kv_num_heads": kv_heads, "do_rotary": 0,
                             "scale": float(scale) if scale is not None else 1.0 / math.sqrt(head_dim)}
    softcap = attr(att, "softcap", 0.0)
    if softcap:
        attrs["softcap"] = float(softcap)
    gqa = g.node("GroupQueryAttention",
                 [q, k, v, past_k, past_v, common["seqlens_k"], common["total"], "", "", "", common["bias"], "", "", "", "",
                  "", common["queries"]],
                 [g.name("gqa"), k_cat.output[0], v_cat.output[0]], domain=MS, **attrs)
    out.append(gqa)
    bsnh = g.const("bsnh", np.array([0, 0, heads, head_dim], np.int64))
    users = g.consumers[att.output[0]]
    dead = {id(k_cat), id(v_cat)}
    if len(users) == 1 and users[0].op_type == "Transpose" and list(attr(users[0], "perm", [])) == [0, 2, 1, 3]:
        out.append(g.node("Reshape", [gqa.output[0], bsnh], [users[0].output[0]]))
        dead.add(id(users[0]))
    else:
        r = g.node("Reshape", [gqa.output[0], bsnh])
        out.extend([r, g.node("Transpose", [r.output[0]], [att.output[0]], perm=[0, 2, 1, 3])])
    return out, dead


# --- SkipSimplifiedLayerNormalization ---------------------------------------------------------------------------


def _fuse_skip_norm(g: ModelView) -> int:
    """Add(a, b) -> RMSNormalization(axis=-1) with a and b computed tensors of one shape -> SkipSimplifiedLN."""
    shapes = _inferred_shapes(g.model)
    count = 0
    replace: dict[int, Any] = {}
    dead: set[int] = set()
    for norm in g.graph.node:
        if norm.op_type != "RMSNormalization" or attr(norm, "stash_type", 1) != 1:
            continue
        add = g.producer.get(norm.input[0])
        if add is None or add.op_type != "Add" or len(norm.input) < 2 or norm.input[1] not in g.init:
            continue
        a, b = add.input
        rank = len(shapes.get(norm.input[0], ()))
        axis = attr(norm, "axis", -1)
        if (a in g.init or b in g.init or axis not in (-1, rank - 1) or rank != 3
                or shapes.get(a) != shapes.get(b) or shapes.get(a) is None or len(g.init[norm.input[1]].dims) != 1):
            continue
        rest = [c for c in g.consumers[add.output[0]] if c is not norm]
        sum_name = add.output[0] if (rest or add.output[0] in g.outputs) else ""
        fused = g.node("SkipSimplifiedLayerNormalization", [a, b, norm.input[1]],
                       [norm.output[0], "", "", sum_name], domain=MS, epsilon=float(attr(norm, "epsilon", 1e-5)))
        replace[id(norm)] = fused
        dead.add(id(add))
        count += 1
    g.replace({k: [v] for k, v in replace.items()}, dead)
    return count


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, tuple[Any, ...]]:
    """Tensor name -> shape (ints and symbols) from ONNX shape inference; unknown tensors are absent.

    ONNX cannot infer contrib ops, so a copy stands in ``MatMul(A, [K, N] input)`` for each MatMulNBits (same
    output shape) and inference runs on that.
    """
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    dtype = next((i.type.tensor_type.elem_type for i in copy.graph.input if i.name.startswith("past_key_values.")),
                 onnx.TensorProto.FLOAT)
    for node in copy.graph.node:
        if node.op_type == "MatMulNBits" and node.domain == MS:
            k, n = int(attr(node, "K")), int(attr(node, "N"))
            stand_in = f"{node.name}/stand_in_weight"
            copy.graph.input.append(onnx.helper.make_tensor_value_info(stand_in, dtype, [k, n]))
            del node.input[1:]
            node.input.append(stand_in)
            del node.attribute[:]
            node.op_type, node.domain = "MatMul", ""
    try:
        inferred = onnx.shape_inference.infer_shapes(copy, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best effort; without it nothing is fused
        return {}
    out: dict[str, tuple[Any, ...]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
            if None not in dims:
                out[vi.name] = dims
    return out


# --- sibling matmuls ------------------------------------------------------------------------------------------


def _fuse_sibling_matmuls(g: ModelView) -> int:
    """Gemm (transB) or MatMulNBits nodes reading one input with their own constant weights -> one node + Split."""
    groups: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
    for node in g.graph.node:
        key = _matmul_key(g, node)
        if key is not None:
            groups[key].append(node)
    replace: dict[int, list[Any]] = {}
    dead: set[int] = set()
    for nodes in groups.values():
        if len(nodes) < 2:
            continue
        merged = _merge(g, nodes)
        replace[id(nodes[0])] = merged
        dead |= {id(n) for n in nodes[1:]}
    g.replace(replace, dead)
    return len(replace)


def _owned(g: ModelView, name: str, node: Any) -> bool:
    return name in g.init and all(c is node for c in g.consumers[name])


def _matmul_key(g: ModelView, node: Any) -> tuple[Any, ...] | None:
    """A grouping key for nodes that can be merged, or None."""
    if node.op_type == "Gemm" and node.domain in ("", "ai.onnx"):
        if (attr(node, "transB", 0) != 1 or attr(node, "transA", 0) or attr(node, "alpha", 1.0) != 1.0
                or attr(node, "beta", 1.0) != 1.0 or not _owned(g, node.input[1], node)):
            return None
        bias = len(node.input) > 2 and bool(node.input[2])
        if bias and (not _owned(g, node.input[2], node) or len(g.init[node.input[2]].dims) != 1):
            return None
        w = g.init[node.input[1]]
        return ("Gemm", node.input[0], bias, w.data_type, w.dims[1])
    if node.op_type == "MatMulNBits" and node.domain == MS:
        consts = [i for i in node.input[1:] if i]
        if len(node.input) > 4 and node.input[4]:  # g_idx reorders K: leave it alone
            return None
        if not all(_owned(g, i, node) for i in consts):
            return None
        layout = tuple(bool(i) for i in node.input[1:]) + tuple(
            tuple(g.init[i].dims[1:]) if len(g.init[i].dims) > 1 else () for i in node.input[1:] if i)
        attrs = tuple(sorted((a.name, str(attr(node, a.name))) for a in node.attribute if a.name != "N"))
        return ("MatMulNBits", node.input[0], layout, attrs)
    return None


def _merge(g: ModelView, nodes: list[Any]) -> list[Any]:
    """One matmul over the weights concatenated along N, then Split back into the original outputs."""
    from onnx import numpy_helper

    first = nodes[0]
    if first.op_type == "Gemm":
        weight = g.const("w", np.concatenate([g.array(n.input[1]) for n in nodes], axis=0))
        sizes = [g.init[n.input[1]].dims[0] for n in nodes]
        inputs = [first.input[0], weight]
        if len(first.input) > 2 and first.input[2]:
            inputs.append(g.const("b", np.concatenate([g.array(n.input[2]) for n in nodes])))
        mm = g.node("Gemm", inputs, transB=1)
        axis = 1
    else:
        sizes = [int(attr(n, "N")) for n in nodes]
        inputs = [first.input[0]]
        for pos in range(1, len(first.input)):
            if not first.input[pos]:
                inputs.append("")
                continue
            # Every per-output-row tensor (packed words, scales, zero points, bias) starts with N, or is a flat
            # [N * blocks] run of whole rows: concatenating along axis 0 stacks the rows either way.
            parts = [numpy_helper.to_array(g.init[n.input[pos]]) for n in nodes]
            inputs.append(g.const("q", np.concatenate(parts, axis=0)))
        attrs = {a.name: attr(first, a.name) for a in first.attribute}
        attrs["N"] = sum(sizes)
        mm = g.node("MatMulNBits", inputs, domain=MS, **attrs)
        axis = -1
    split = g.node("Split", [mm.output[0], g.const("sizes", np.array(sizes, np.int64))],
                   [n.output[0] for n in nodes], axis=axis)
    for n in nodes:
        for name in n.input[1:]:
            if name and name in g.init:
                g.drop_initializer(name)
    return [mm, split]


# --- clean-up ---------------------------------------------------------------------------------------------------


def _topological_sort(g: ModelView) -> None:
    order, stuck = g.topological_order(set(g.inputs) | set(g.init))
    if stuck:
        ready = set(g.inputs) | set(g.init) | {o for n in order for o in n.output} | {""}
        raise CaptureError(f"the fused graph has a cycle or a missing input at {stuck[0].name} "
                           f"({[i for i in stuck[0].input if i not in ready]})", hint=HINT)
    g.set_nodes(order)
