"""Clean-up passes over the lowered ONNX nodes: fold constants, cancel layout chains, drop dead code.

Translations emit plain, obviously-correct ONNX; these passes make the graph as
lean as torch.onnx's. Folded constants are lazy (made when the file is
written), and a weight shared by several nodes is never folded into a second
copy (tied embeddings stay one tensor in the file).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import onnx
from onnx import helper

from ..dtypes import numpy_dtype_of_onnx
from ..targets.onnx.context import ConvertContext, Initializer
from .onnx_view import OnnxView, attrs

_SMALL = 4096  # elements: folding below this never matters for file size


def _reshape_target(data: np.ndarray, shape: np.ndarray, allowzero: int) -> tuple[int, ...]:
    target = [int(s) for s in shape]
    if not allowzero:
        target = [data.shape[i] if s == 0 else s for i, s in enumerate(target)]
    return tuple(target)


def _transpose_2d(w: np.ndarray, rows: int = 512) -> np.ndarray:
    """W.T, copied in row blocks: about twice as fast as np.ascontiguousarray(W.T) on large weights."""
    out = np.empty((w.shape[1], w.shape[0]), w.dtype)
    for i in range(0, w.shape[0], rows):
        out[:, i:i + rows] = w[i:i + rows].T
    return out


_UNARY = {"Neg": np.negative, "Sqrt": np.sqrt, "Reciprocal": np.reciprocal, "Exp": np.exp, "Abs": np.abs}
_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}


def _evaluate(node: onnx.NodeProto, args: list[np.ndarray]) -> np.ndarray | None:
    a = attrs(node)
    op = node.op_type
    if op == "Identity":
        return args[0]
    if op == "Transpose":
        perm = a.get("perm") or list(range(args[0].ndim))[::-1]
        if list(perm) == [1, 0]:
            return _transpose_2d(args[0])
        return np.ascontiguousarray(np.transpose(args[0], perm))
    if op == "Cast":
        return args[0].astype(numpy_dtype_of_onnx(a["to"]))
    if op == "Reshape":
        return args[0].reshape(_reshape_target(args[0], args[1], a.get("allowzero", 0)))
    if op == "Unsqueeze":
        out = args[0]
        for ax in sorted(int(x) % (args[0].ndim + len(args[1])) for x in args[1]):
            out = np.expand_dims(out, ax)
        return out
    if op == "Squeeze":
        axes = tuple(int(x) % args[0].ndim for x in args[1]) if len(args) > 1 else None
        return np.squeeze(args[0], axis=axes)
    if op == "Concat":
        return np.concatenate(args, axis=a["axis"])
    if op in _UNARY and args[0].dtype.kind == "f":
        return _UNARY[op](args[0])
    if op in _BINARY and args[0].dtype == args[1].dtype:
        return _BINARY[op](args[0], args[1]).astype(args[0].dtype)
    if op == "Div" and args[0].dtype == args[1].dtype:
        if args[0].dtype.kind in "iu":
            return np.trunc(args[0] / args[1]).astype(args[0].dtype)
        return np.divide(args[0], args[1]).astype(args[0].dtype)
    return None


_FOLDABLE = {"Identity", "Transpose", "Cast", "Reshape", "Unsqueeze", "Squeeze", "Concat", "Div", *_UNARY, *_BINARY}


def fold_constants(ctx: ConvertContext, uses: dict[str, int], outputs: set[str] = frozenset()) -> int:
    """Evaluate nodes whose inputs are all constants into (lazy) initializers."""
    folded = 0
    keep: list[onnx.NodeProto] = []
    for node in ctx.nodes:
        inputs = [n for n in node.input if n]
        # A graph output must stay a node output (an initializer cannot be one).
        if (node.op_type not in _FOLDABLE or len(node.output) != 1 or not inputs or node.output[0] in outputs
                or not all(n in ctx.initializers for n in inputs)):
            keep.append(node)
            continue
        inits = [ctx.initializers[n] for n in inputs]
        big = [i for n, i in zip(inputs, inits) if i.size > _SMALL]
        # Never duplicate a large shared weight, never inflate the file.
        if any(uses.get(n, 0) > 1 for n, i in zip(inputs, inits) if i.size > _SMALL):
            keep.append(node)
            continue
        if (node.op_type == "Cast" and inits[0].size > 64
                and numpy_dtype_of_onnx(attrs(node)["to"]).itemsize > inits[0].dtype.itemsize):
            # A widening cast of a weight would grow the file; the runtime folds it at load time.
            keep.append(node)
            continue
        if big:
            probe = [np.zeros(i.shape, i.dtype) if i.size <= 1 << 16 else None for i in inits]
            shape, dtype = _lazy_meta(node, inits, probe)
            if shape is None:
                keep.append(node)
                continue
            ctx.initializers[node.output[0]] = Initializer(shape, dtype, _deferred(node, inits))
        else:
            value = _evaluate(node, [i.value() for i in inits])
            if value is None:
                keep.append(node)
                continue
            value = np.asarray(value)  # numpy ufuncs return scalars for 0-d inputs
            ctx.initializers[node.output[0]] = Initializer(value.shape, value.dtype, value)
        for n in inputs:
            uses[n] = uses.get(n, 0) - 1
        folded += 1
    ctx.nodes[:] = keep
    return folded


def _lazy_meta(node: onnx.NodeProto, inits: list[Initializer], probe: list[np.ndarray | None]) -> tuple[Any, Any]:
    """Shape and dtype of a fold without materializing large inputs."""
    op, a = node.op_type, attrs(node)
    src = inits[0]
    if op == "Identity":
        return src.shape, src.dtype
    if op == "Transpose":
        perm = a.get("perm") or list(range(len(src.shape)))[::-1]
        return tuple(src.shape[p] for p in perm), src.dtype
    if op == "Cast":
        return src.shape, numpy_dtype_of_onnx(a["to"])
    if op in ("Reshape", "Squeeze", "Unsqueeze") and all(p is not None for p in probe[1:]):
        dummy = np.lib.stride_tricks.as_strided(np.zeros(1, src.dtype), src.shape, [0] * len(src.shape))
        out = _evaluate(node, [dummy] + [i.value() for i in inits[1:]])
        return (out.shape, src.dtype) if out is not None else (None, None)
    return None, None


def _deferred(node: onnx.NodeProto, inits: list[Initializer]) -> Callable[[], np.ndarray]:
    def make() -> np.ndarray:
        out = _evaluate(node, [i.value() for i in inits])
        assert out is not None
        return np.asarray(out)

    return make


def cancel_layout_chains(ctx: ConvertContext, outputs: list[str]) -> int:
    """Compose Transpose pairs, merge Reshape pairs, drop Identity and no-op Transposes."""
    changed = 0
    view = OnnxView(ctx.nodes, outputs)
    uses, prod, out_set = view.use_counts(), view.producer, view.outputs
    removed: set[int] = set()
    for node in ctx.nodes:
        op = node.op_type
        first = prod.get(node.input[0]) if node.input else None
        if op == "Identity" and node.output[0] not in out_set:
            view.rewire(node.output[0], node.input[0])
            removed.add(id(node))
            changed += 1
        elif op == "Transpose":
            perm = list(attrs(node).get("perm", []))
            if first is not None and first.op_type == "Transpose" and id(first) not in removed \
                    and uses.get(first.output[0], 0) == 1:
                inner = list(attrs(first).get("perm", []))
                if inner and perm:
                    composed = [inner[p] for p in perm]
                    node.input[0] = first.input[0]
                    del node.attribute[:]
                    node.attribute.append(helper.make_attribute("perm", composed))
                    removed.add(id(first))
                    perm = composed
                    changed += 1
            if perm and perm == sorted(perm):
                src = node.input[0]
                if node.output[0] not in out_set:
                    view.rewire(node.output[0], src)
                    removed.add(id(node))
                    changed += 1
                elif src in prod and id(prod[src]) not in removed and uses.get(src, 0) == 1 and src not in out_set:
                    # An identity Transpose at a graph output: let the producer write the output.
                    producer = prod[src]
                    producer.output[list(producer.output).index(src)] = node.output[0]
                    removed.add(id(node))
                    changed += 1
        elif op == "Reshape" and first is not None and first.op_type == "Reshape" \
                and id(first) not in removed and uses.get(first.output[0], 0) == 1:
            shape = ctx.const_value(node.input[1])
            if shape is not None and not np.any(shape == 0):
                node.input[0] = first.input[0]
                removed.add(id(first))
                changed += 1
    ctx.nodes[:] = [n for n in ctx.nodes if id(n) not in removed]
    return changed


_UNARY_ELEMENTWISE = {
    "Relu", "Sigmoid", "Tanh", "Neg", "Exp", "Log", "Abs", "Sqrt", "Reciprocal", "Erf", "Cast", "Sin", "Cos",
    "Softplus", "Floor", "Ceil", "Round", "Sign", "Not", "Identity", "LeakyRelu", "Elu", "HardSigmoid",
}
_BINARY_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "PRelu"}


def _perm_of(node: onnx.NodeProto) -> list[int]:
    return list(attrs(node).get("perm", []))


def sink_transposes(ctx: ConvertContext, outputs: list[str]) -> int:
    """Move a Transpose below the elementwise ops it feeds, so that it meets its inverse.

    Convolutions run channels-first inside an NHWC model: Transpose, Conv,
    Transpose, then bias/ReLU/BatchNorm... Sinking the trailing Transpose
    through those ops (transposing their constants instead) lets it cancel
    against the next convolution's leading Transpose.
    """
    moved = 0
    out_set = set(outputs)
    for _ in range(64):
        view = OnnxView(ctx.nodes, outputs)
        step = False
        for t in list(ctx.nodes):
            if t.op_type != "Transpose" or t.output[0] in out_set or view.uses(t.output[0]) != 1:
                continue
            perm = _perm_of(t)
            consumer = view.consumers.get(t.output[0], [None])[0]
            if not perm or consumer is None or len(consumer.output) != 1:
                continue
            if consumer.op_type in _UNARY_ELEMENTWISE and len(consumer.input) == 1:
                pass
            elif consumer.op_type in _BINARY_ELEMENTWISE and len(consumer.input) == 2:
                other = consumer.input[1 - list(consumer.input).index(t.output[0])]
                init = ctx.initializers.get(other)
                if init is None or len(init.shape) > len(perm) or list(consumer.input).count(t.output[0]) != 1:
                    continue
                if init.size != 1 or len(init.shape) > 1:
                    # A scalar broadcasts the same in either layout; anything else is re-laid out.
                    inverse = [perm.index(i) for i in range(len(perm))]
                    value = init.value().reshape((1,) * (len(perm) - len(init.shape)) + tuple(init.shape))
                    moved_value = np.ascontiguousarray(np.transpose(value, inverse))
                    name = ctx.fresh("sunk")
                    ctx.initializers[name] = Initializer(moved_value.shape, moved_value.dtype, moved_value)
                    consumer.input[list(consumer.input).index(other)] = name
            else:
                continue
            # consumer(T(x)) -> T(consumer(x)): rewire, then move T after the consumer.
            x = t.input[0]
            result = consumer.output[0]
            inner = ctx.fresh("pre_t")
            consumer.input[list(consumer.input).index(t.output[0])] = x
            consumer.output[0] = inner
            t.input[0] = inner
            t.output[0] = result
            ctx.nodes.remove(t)
            ctx.nodes.insert(ctx.nodes.index(consumer) + 1, t)
            moved += 1
            step = True
        if not step:
            break
    return moved


def drop_unit_axis_round_trips(ctx: ConvertContext, outputs: list[str]) -> int:
    """Unsqueeze(x, A) -> Reduce*(axes within A, keepdims) -> Squeeze(A) is x: remove the chain."""
    view = OnnxView(ctx.nodes, outputs)
    prod = view.producer
    changed = 0
    for node in list(ctx.nodes):
        if not node.op_type.startswith("Reduce") or node.output[0] in outputs:
            continue
        unsq = prod.get(node.input[0])
        if unsq is None or unsq.op_type != "Unsqueeze" or len(unsq.input) < 2:
            continue
        added = ctx.const_value(unsq.input[1])
        axes = ctx.const_value(node.input[1]) if len(node.input) > 1 and node.input[1] else attrs(node).get("axes")
        if added is None or axes is None or not attrs(node).get("keepdims", 1):
            continue
        if set(int(a) for a in np.asarray(axes).reshape(-1)) <= set(int(a) for a in added.reshape(-1)):
            view.rewire(node.output[0], node.input[0])
            changed += 1
    for node in list(ctx.nodes):
        if node.op_type != "Squeeze" or len(node.input) < 2 or node.output[0] in outputs:
            continue
        unsq = prod.get(node.input[0])
        if unsq is None or unsq.op_type != "Unsqueeze" or len(unsq.input) < 2:
            continue
        a, b = ctx.const_value(node.input[1]), ctx.const_value(unsq.input[1])
        if a is not None and b is not None and sorted(a.reshape(-1).tolist()) == sorted(b.reshape(-1).tolist()):
            view.rewire(node.output[0], unsq.input[0])
            changed += 1
    return changed


def _conv_bias(ctx: ConvertContext) -> int:
    """Conv(x, W) + b[1, C, 1...] -> Conv(x, W, b): the bias add joins the convolution."""
    view = OnnxView(ctx.nodes)
    changed = 0
    for conv in ctx.nodes:
        if conv.op_type != "Conv" or len(conv.input) > 2 or view.uses(conv.output[0]) != 1:
            continue
        add = view.consumers[conv.output[0]][0]
        if add.op_type != "Add":
            continue
        other = add.input[1] if add.input[0] == conv.output[0] else add.input[0]
        init = ctx.initializers.get(other)
        weight = ctx.initializers.get(conv.input[1])
        if init is None or weight is None or init.dtype != weight.dtype or len(init.shape) < 2:
            continue
        channels = init.shape[1]
        if (any(d != 1 for i, d in enumerate(init.shape) if i != 1) or len(init.shape) != len(weight.shape)
                or channels != weight.shape[0]):
            continue
        bias = init.value().reshape(channels)
        name = ctx.fresh("conv_bias")
        ctx.initializers[name] = Initializer((channels,), bias.dtype, np.ascontiguousarray(bias))
        conv.input.append(name)
        view.rewire(add.output[0], conv.output[0])
        changed += 1
    return changed


def _per_channel(init: Initializer, channels: int, rank: int) -> np.ndarray | None:
    """The (C,) vector of a constant that broadcasts along axis 1 only (or a scalar)."""
    if init.size == 1 and len(init.shape) <= rank:
        return np.full(channels, float(init.value().reshape(-1)[0]), np.float64)
    shape = (1,) * (rank - len(init.shape)) + tuple(init.shape)
    if len(shape) != rank or shape[1] != channels or any(d != 1 for i, d in enumerate(shape) if i != 1):
        return None
    return init.value().reshape(channels).astype(np.float64)


def fold_affine_into_conv(ctx: ConvertContext, outputs: list[str]) -> int:
    """Conv -> (+,-,*) per-channel constants (eval BatchNorm, scales) ==> one Conv with new W and B.

    torch.onnx folds BatchNorm into the preceding Conv in eval mode; so do we.
    """
    view = OnnxView(ctx.nodes, outputs)
    out_set = view.outputs
    changed = 0
    for conv in list(ctx.nodes):
        if conv.op_type != "Conv" or conv.input[1] not in ctx.initializers or view.uses(conv.input[1]) != 1:
            continue
        weight = ctx.initializers[conv.input[1]]
        if weight.dtype.kind != "f" or int(attrs(conv).get("group", 1)) < 1:
            continue
        channels, rank = weight.shape[0], len(weight.shape)
        scale = np.ones(channels)
        shift = np.zeros(channels)
        if len(conv.input) > 2 and conv.input[2]:
            if conv.input[2] not in ctx.initializers:
                continue
            shift = ctx.initializers[conv.input[2]].value().astype(np.float64).reshape(channels)
        cur, last = conv.output[0], None
        while view.uses(cur) == 1 and cur not in out_set:
            op = view.consumers[cur][0]
            if (op.op_type not in ("Add", "Sub", "Mul") or list(op.input).count(cur) != 1
                    or op.output[0] in out_set):
                break
            other = op.input[1] if op.input[0] == cur else op.input[0]
            init = ctx.initializers.get(other)
            vec = _per_channel(init, channels, rank) if init is not None and init.dtype == weight.dtype else None
            if vec is None or (op.op_type == "Sub" and op.input[0] != cur):
                break
            if op.op_type == "Mul":
                scale, shift = scale * vec, shift * vec
            else:
                shift = shift + vec if op.op_type == "Add" else shift - vec
            cur, last = op.output[0], op
        if last is None:
            continue
        w_init = weight
        factor = scale.astype(weight.dtype).reshape((channels,) + (1,) * (rank - 1))

        def make(w_init: Initializer = w_init, factor: np.ndarray = factor) -> np.ndarray:
            return (w_init.value() * factor).astype(w_init.dtype)

        new_w = ctx.lazy_const(weight.shape, weight.dtype, make, hint="conv_w")
        new_b = ctx.const(shift.astype(weight.dtype), hint="conv_b")
        del conv.input[1:]
        conv.input.extend([new_w, new_b])
        view.rewire(last.output[0], conv.output[0])
        changed += 1
    return changed


def peephole(ctx: ConvertContext) -> int:
    """Rewrite small patterns to the op a hand-written graph would use (Max(x, 0) -> Relu)."""
    changed = _conv_bias(ctx)
    for node in ctx.nodes:
        if node.op_type == "Max" and len(node.input) == 2:
            for keep, other in ((0, 1), (1, 0)):
                init = ctx.initializers.get(node.input[other])
                if init is not None and init.size == 1 and init.dtype.kind == "f" and float(init.value().reshape(-1)[0]) == 0.0:
                    x = node.input[keep]
                    # Relu keeps x's shape; only valid when the constant does not broadcast x up.
                    if len(init.shape) <= 1:
                        node.op_type = "Relu"
                        del node.input[:]
                        node.input.append(x)
                        changed += 1
                    break
    return changed


def eliminate_dead_code(ctx: ConvertContext, outputs: list[str]) -> int:
    """Drop the nodes no graph output depends on; returns how many."""
    return OnnxView(ctx.nodes, outputs).remove_dead()


def optimize(ctx: ConvertContext, outputs: list[str]) -> dict[str, int]:
    """Run the passes to a fixed point; returns what each removed."""
    stats = {"folded": 0, "layout": 0, "dead": 0}
    for _ in range(8):
        stats["dead"] += eliminate_dead_code(ctx, outputs)
        f = fold_constants(ctx, OnnxView(ctx.nodes, outputs).use_counts(), set(outputs))
        c = (sink_transposes(ctx, outputs) + fold_affine_into_conv(ctx, outputs) + cancel_layout_chains(ctx, outputs)
             + drop_unit_axis_round_trips(ctx, outputs) + peephole(ctx))
        stats["folded"] += f
        stats["layout"] += c
        if not f and not c:
            break
    stats["dead"] += eliminate_dead_code(ctx, outputs)
    return stats
