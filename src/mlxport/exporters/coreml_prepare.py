"""Rewrite the torch lowering into ops coremltools converts, keeping its results.

coremltools' torch frontend (9.0) and Core ML itself lack what some lowerings use:

- ``narrow`` is converted with the input's full shape as a constant, so it fails on a
  dynamic axis: it becomes slicing (``x[..., a:b]``), whose end coremltools masks. It has
  no ``take``: that becomes indexing of the flattened input.
- Core ML has no unsigned 16/32/64-bit tensors and no integer bit operations, so MLX's
  packed quantized weights cannot be unpacked at run time. Constant dequantization (a
  QuantizedMatmul's weight) is evaluated here into a float weight; a packed table read at
  run-time indices (a quantized embedding, the experts a GatherQMM picks) is evaluated for
  every row into a float table that the indices then gather from. Each table is checked
  against the lowering at random indices. The file then holds float weights, not packed ones.
- ``torch.sort`` cannot say ``stable=True`` to coremltools, so equal values may come out
  in another order (MLX's sort is stable).
- The TorchScript frontend expects a float32 program (it casts float16 inputs to float32 and
  lowers precision afterwards), so half types compute in float32 in the program, and
  ``compute_precision`` decides what Core ML runs at; unsigned index types become int64.

The other rewrites leave the module's results as they were (bit for bit, but for the order a
matmul sums in when its weight is now contiguous), which is checked on the examples before the
last two.
"""

from __future__ import annotations

import copy
import math
import operator
from typing import Any, Iterable

from ..errors import ArtifactError

# Calls whose integer form Core ML lacks (bool and/or/xor it has).
_BITWISE = {"bitwise_left_shift", "bitwise_right_shift", "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not"}
# Calls that keep a tensor's values in row-major order (the row index a table gather reads stays the same).
_ORDER_KEEPING_METHODS = {"to", "reshape", "view", "flatten", "long", "int"}
# Enumerating a table evaluates its rows in chunks of the example index's size; more rows than this is refused.
MAX_TABLE_ROWS = 1 << 20


def widened(tensors: Iterable[Any]) -> tuple[Any, ...]:
    """Example inputs for the widened program: half floats as float32."""
    import torch

    return tuple(t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in tensors)


def prepare_for_coreml(module: Any, examples: tuple[Any, ...]) -> Any:
    """A copy of the torch lowering that coremltools' TorchScript frontend converts.

    Args:
        module: the fx GraphModule from ``lower_torch``; it is not modified.
        examples: one tensor per input, as the module takes them (packed tables are decoded
            by evaluating the lowering, and the rewrite is checked against it, on these).

    Returns:
        An fx GraphModule taking the inputs with half floats as float32 (see :func:`widened`).

    Raises:
        ArtifactError: the rewrite would change the lowering's results (an mlxport bug), or the
            program reinterprets half-float bits, which a float32 program cannot.
    """
    import torch
    import torch.fx as fx

    gm = fx.GraphModule(module, copy.deepcopy(module.graph))
    values = _record(gm, examples)
    _fold_packed_constants(gm, values)
    _hoist_packed_tables(gm, values)
    _narrow_as_slicing(gm, values)
    _take_as_indexing(gm)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    with torch.no_grad():
        _check_same(module(*examples), gm(*examples))
    _widen_types(gm, values)
    _unstable_sorts(gm)
    gm.recompile()
    return gm


def _record(gm: Any, examples: tuple[Any, ...]) -> dict[Any, Any]:
    """Every node's value on the examples."""
    import torch
    import torch.fx as fx

    values: dict[Any, Any] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            values[n] = super().run_node(n)
            return values[n]

    with torch.no_grad():
        Recorder(gm).run(*examples)
    return values


def _is_packed(node: Any, values: dict[Any, Any]) -> bool:
    """A node Core ML cannot compute: an unsigned wide tensor, or an integer bit operation."""
    import torch

    value = values.get(node)
    if isinstance(value, torch.Tensor) and value.dtype in (torch.uint16, torch.uint32, torch.uint64):
        return True
    name = getattr(node.target, "__name__", node.target)
    return node.op in ("call_function", "call_method") and name in _BITWISE and \
        isinstance(value, torch.Tensor) and value.dtype != torch.bool


def _constants(gm: Any) -> set[Any]:
    """Nodes that depend on no input: attributes and calls on them."""
    const: set[Any] = set()
    for n in gm.graph.nodes:
        call = n.op in ("call_function", "call_method")
        if n.op == "get_attr" or (call and all(a in const for a in n.all_input_nodes)):
            const.add(n)
    return const


def _new_buffer(gm: Any, value: Any, hint: str) -> str:
    name, i = f"coreml_{hint}", 0
    while hasattr(gm, f"{name}_{i}"):
        i += 1
    # clone keeps the strides: a transposed weight stays transposed, so matmuls accumulate in the same order.
    gm.register_buffer(f"{name}_{i}", value.detach().clone())
    return f"{name}_{i}"


def _fold_packed_constants(gm: Any, values: dict[Any, Any]) -> int:
    """Evaluate constant subgraphs that hold packed values (dequantized weights) into float buffers."""
    import torch

    const = _constants(gm)
    tainted: set[Any] = set()
    for n in gm.graph.nodes:
        if n in const and (_is_packed(n, values) or any(a in tainted for a in n.all_input_nodes)):
            tainted.add(n)
    folded = 0
    for n in list(gm.graph.nodes):
        if n not in tainted or n.op == "get_attr" or not isinstance(values.get(n), torch.Tensor):
            continue
        if all(u in const for u in n.users) or _is_packed(n, values):
            continue  # only the packed words themselves, or an intermediate: its users are folded instead
        with gm.graph.inserting_before(n):
            new = gm.graph.get_attr(_new_buffer(gm, values[n], "folded"))
        values[new] = values[n]
        n.replace_all_uses_with(new)
        folded += 1
    return folded


def _index_root(node: Any, const: set[Any]) -> Any:
    """The tensor an index is a cast or reshape of (its values, in order): tokens for ``tokens.to(int64)``."""
    import torch

    while node.op in ("call_method", "call_function") and \
            (node.target in _ORDER_KEEPING_METHODS if node.op == "call_method"
             else node.target in (torch.reshape, torch.flatten)):
        tensors = [a for a in node.all_input_nodes if a not in const]
        if len(tensors) != 1 or node.args[0] is not tensors[0]:
            break
        node = tensors[0]
    return node


def _table_gathers(gm: Any, const: set[Any], values: dict[Any, Any]) -> list[tuple[Any, Any, int]]:
    """(gather node, index node, rows) for each read of a constant table at run-time indices along axis 0."""
    import torch

    found = []
    for n in gm.graph.nodes:
        if n.op not in ("call_function", "call_method") or n in const:
            continue
        getitem = n.target is operator.getitem or (n.op == "call_method" and n.target == "__getitem__")
        if getitem and len(n.args) == 2 and n.args[0] in const:
            index = n.args[1]
        elif n.target is torch.index_select and len(n.args) == 3 and n.args[0] in const and n.args[1] == 0:
            index = n.args[2]
        else:
            continue
        table = values.get(n.args[0])
        if isinstance(table, torch.Tensor) and table.dim() >= 1 and hasattr(index, "op") and index not in const:
            found.append((n, index, int(table.shape[0])))
    return found


def _hoist_packed_tables(gm: Any, values: dict[Any, Any]) -> int:
    """Replace row-wise decoding of a packed table read at run-time indices by a gather from a decoded table."""
    import torch

    const = _constants(gm)
    roots: dict[Any, list[tuple[Any, int]]] = {}
    for gather, index, rows in _table_gathers(gm, const, values):
        roots.setdefault(_index_root(index, const), []).append((gather, rows))
    hoisted = 0
    for root, gathers in roots.items():
        if len({rows for _, rows in gathers}) != 1 or not isinstance(values.get(root), torch.Tensor):
            continue
        if getattr(root, "_erased", False):
            continue
        closure, candidates = _closure(gm, root, const, values, {g for g, _ in gathers})
        # A decoded table may be larger than the packed tables it reads (8 codes per 4-bit word), not more.
        budget = 32 * sum(values[g.args[0]].numel() for g, _ in gathers)
        for node in candidates:
            if getattr(node, "_erased", False):
                continue  # upstream of a table already hoisted
            table = _decode_table(node, root, closure, values, gathers[0][1], budget)
            if table is None:
                continue
            with gm.graph.inserting_before(node):
                attr = gm.graph.get_attr(_new_buffer(gm, table, "table"))
                index = gm.graph.call_method("to", (root, torch.int64))
                new = gm.graph.call_function(operator.getitem, (attr, index))
            values.update({attr: table, index: values[root].to(torch.int64), new: values[node]})
            node.replace_all_uses_with(new)
            gm.graph.eliminate_dead_code()
            hoisted += 1
    return hoisted


def _closure(gm: Any, root: Any, const: set[Any], values: dict[Any, Any],
             gathers: set[Any]) -> tuple[list[Any], list[Any]]:
    """Nodes computed from ``root`` alone (with constants and sizes), and candidates to hoist among them.

    Candidates downstream of a table gather and of a packed value, in the order to try: where the
    closure is left (a dequantized expert weight, before its matmul with activations), then where
    unpacking ends (the float codes of an embedding, which everything after depends on as well).
    """
    import torch

    inside: list[Any] = []
    member = {root}
    reads_table: set[Any] = set()  # downstream of a table gather
    unpacked: set[Any] = set()  # downstream of a packed value
    for n in gm.graph.nodes:
        if n.op not in ("call_function", "call_method") or n in const:
            continue
        ins = n.all_input_nodes
        free = all(a in member or a in const or not isinstance(values.get(a), torch.Tensor) for a in ins)
        if not free or not any(a in member for a in ins):
            continue
        member.add(n)
        inside.append(n)
        if n in gathers or any(a in reads_table for a in ins):
            reads_table.add(n)
        if _is_packed(n, values) or any(a in unpacked or _is_packed(a, values) for a in ins):
            unpacked.add(n)
    # Unpacking goes on below a node while integer values lead to a packed one; floats end it.
    packed_below: set[Any] = set()
    for n in reversed(inside):
        if any(u in member and (_is_packed(u, values) or (u in packed_below and not _is_float(u, values)))
               for u in n.users):
            packed_below.add(n)
    usable = [n for n in inside if n in reads_table and n in unpacked and not _is_packed(n, values)
              and n not in packed_below and isinstance(values.get(n), torch.Tensor)]
    exits = [n for n in usable if any(u not in member for u in n.users)]
    ends = [n for n in usable if n not in exits and any(_is_packed(a, values) for a in n.all_input_nodes)]
    return inside, exits + ends


def _is_float(node: Any, values: dict[Any, Any]) -> bool:
    import torch

    value = values.get(node)
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def _evaluate(closure: list[Any], root: Any, value: Any, values: dict[Any, Any], want: Any) -> Any:
    """``want``'s value with ``root`` replaced by ``value`` (the closure re-run; everything else as recorded)."""
    import torch.fx as fx

    env = {root: value}
    for n in closure:
        args = fx.node.map_arg(n.args, lambda a: env[a] if a in env else values[a])
        kwargs = fx.node.map_arg(n.kwargs, lambda a: env[a] if a in env else values[a])
        if n.op == "call_function":
            env[n] = n.target(*args, **kwargs)
        else:
            env[n] = getattr(args[0], n.target)(*args[1:], **kwargs)
        if n is want:
            return env[n]
    raise KeyError(want)


def _decode_table(node: Any, root: Any, closure: list[Any], values: dict[Any, Any], rows: int,
                  budget: int) -> Any | None:
    """``node``'s value for every index 0..rows-1 ([rows, *row shape]), or None if it is not row-wise in
    ``root`` or would hold more than ``budget`` elements."""
    import torch

    example, out = values[root], values[node]
    if tuple(out.shape[:example.dim()]) != tuple(example.shape) or example.numel() == 0 or rows > MAX_TABLE_ROWS:
        return None
    row_shape, count = tuple(out.shape[example.dim():]), example.numel()
    if rows * math.prod(row_shape) > budget:
        return None
    needed = {node}
    for n in reversed(closure[:closure.index(node) + 1]):
        if n in needed:
            needed.update(n.all_input_nodes)
    prefix = [n for n in closure if n in needed]
    gen = torch.Generator().manual_seed(0)
    probes = [torch.randint(0, rows, tuple(example.shape), generator=gen).to(example.dtype) for _ in range(2)]
    with torch.no_grad():
        # Row-wise in the index: each position's value depends on its own index only. Checked first on
        # shuffled probes (cheap), then on the whole table read at them.
        wants = [_evaluate(prefix, root, probe, values, node) for probe in probes]
        for probe, want in zip(probes, wants):
            flat = probe.reshape(-1).to(torch.int64)
            order = torch.argsort(flat, stable=True)
            moved = _evaluate(prefix, root, flat[order].to(example.dtype).reshape(example.shape), values, node)
            if not _identical(moved.reshape(count, *row_shape), want.reshape(count, *row_shape)[order]):
                return None
        chunks = []
        for start in range(0, rows, count):
            idx = torch.arange(start, start + count).clamp(max=rows - 1).to(example.dtype).reshape(example.shape)
            chunks.append(_evaluate(prefix, root, idx, values, node).reshape(count, *row_shape))
        table = torch.cat(chunks)[:rows]
        for probe, want in zip([example, *probes], [out, *wants]):
            if not _identical(table[probe.to(torch.int64)], want):
                return None
    return table


def _narrow_as_slicing(gm: Any, values: dict[Any, Any]) -> int:
    """``narrow(x, dim, start, length)`` with an int start -> ``x[..., start:start + length]``.

    A start that is a tensor (DynamicSlice) stays a narrow: slicing would trace it as a constant.
    """
    import torch

    count = 0
    for n in list(gm.graph.nodes):
        is_narrow = (n.op == "call_function" and n.target is torch.narrow) or (n.op == "call_method"
                                                                               and n.target == "narrow")
        if not is_narrow or n.kwargs or len(n.args) != 4 or not isinstance(n.args[1], int):
            continue
        x, dim, start, length = n.args
        if not all(isinstance(v, int) or isinstance(values.get(v), int) for v in (start, length)):
            continue
        with gm.graph.inserting_before(n):
            if isinstance(start, int) and isinstance(length, int):
                end: Any = start + length
            else:
                end = gm.graph.call_function(operator.add, (start, length))
            cut = slice(start, end)
            index = (slice(None),) * dim + (cut,) if dim >= 0 else (Ellipsis, cut) + (slice(None),) * (-dim - 1)
            new = gm.graph.call_function(operator.getitem, (x, index))
        n.replace_all_uses_with(new)
        gm.graph.erase_node(n)
        count += 1
    return count


def _take_as_indexing(gm: Any) -> int:
    """``torch.take(x, idx)`` -> ``x.reshape(-1)[idx]`` (a gather coremltools converts; it has no take)."""
    import torch

    count = 0
    for n in list(gm.graph.nodes):
        if n.op == "call_function" and n.target is torch.take and len(n.args) == 2 and not n.kwargs:
            with gm.graph.inserting_before(n):
                flat = gm.graph.call_function(torch.reshape, (n.args[0], [-1]))
                new = gm.graph.call_function(operator.getitem, (flat, n.args[1]))
            n.replace_all_uses_with(new)
            gm.graph.erase_node(n)
            count += 1
    return count


def _unstable_sorts(gm: Any) -> None:
    """``torch.sort(x, dim, stable=True)`` -> ``torch.sort(x, dim, descending)``: coremltools takes no
    ``stable`` argument. Core ML's argsort may order equal values differently from MLX."""
    import torch

    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target is torch.sort and "stable" in n.kwargs:
            kwargs = dict(n.kwargs)
            del kwargs["stable"]
            n.kwargs = kwargs


def _widen_types(gm: Any, values: dict[Any, Any]) -> None:
    """Half floats compute in float32, unsigned wide ints in int64 (coremltools stores int32)."""
    import torch
    import torch.fx as fx

    wide = {torch.float16: torch.float32, torch.bfloat16: torch.float32, torch.uint16: torch.int64,
            torch.uint32: torch.int64, torch.uint64: torch.int64}
    for n in gm.graph.nodes:
        if n.op == "call_method" and n.target == "view" and len(n.args) == 2 and isinstance(n.args[1], torch.dtype):
            source = values.get(n.args[0])
            if n.args[1] in wide or getattr(source, "dtype", None) in wide:
                raise ArtifactError(f"the program reinterprets the bits of a {getattr(source, 'dtype', '?')} tensor "
                                    f"as {n.args[1]} ({n.name}), which Core ML cannot do in a wider type",
                                    hint="Export .onnx or .pt, which keep the types as MLX has them.")
        n.args, n.kwargs = (fx.node.map_aggregate(a, lambda v: wide.get(v, v) if isinstance(v, torch.dtype) else v)
                            for a in (n.args, n.kwargs))
    for name, buf in list(gm.named_buffers()):
        if buf.dtype in wide:
            owner, _, leaf = name.rpartition(".")
            gm.get_submodule(owner).register_buffer(leaf, buf.to(wide[buf.dtype]))


def _identical(a: Any, b: Any) -> bool:
    """Same shape, dtype and values (NaN equal to NaN)."""
    import torch

    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return a == b
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return bool(((a == b) | (a.isnan() & b.isnan())).all())
    return bool(torch.equal(a, b))


# How far a rewritten output may be from the lowering's: a hoisted weight is contiguous where the lowering
# multiplied a strided view of it, so a matmul may sum in another order (measured: 5e-7 in float32).
_SUMMATION_TOL = {"float64": (1e-12, 1e-12), "float32": (1e-5, 1e-6), "float16": (1e-3, 1e-3),
                  "bfloat16": (1e-2, 1e-2)}


def _check_same(before: Any, after: Any) -> None:
    """The rewrite's outputs equal the lowering's (up to summation order), else an error to report."""
    import torch

    outs_a = list(before) if isinstance(before, (list, tuple)) else [before]
    outs_b = list(after) if isinstance(after, (list, tuple)) else [after]
    for i, (a, b) in enumerate(zip(outs_a, outs_b)):
        if _identical(a, b):
            continue
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.is_floating_point() \
                and a.shape == b.shape and a.dtype == b.dtype:
            rtol, atol = _SUMMATION_TOL[str(a.dtype).replace("torch.", "")]
            if torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True):
                continue
        diff = (a.double() - b.double()).abs().max().item() if getattr(a, "shape", 0) == getattr(b, "shape", 1) \
            else "shape or dtype"
        raise ArtifactError(f"rewriting the torch lowering for Core ML changed output {i} (max |diff| {diff})",
                            hint="This is an mlxport bug; please report it. Export .onnx or .pt meanwhile.")
