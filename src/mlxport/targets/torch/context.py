"""The torch target's registry and the context its translations build torch.fx nodes with.

A translation has the signature ``fn(ctx, node) -> list[Value]``: it adds
``torch.fx`` nodes through ``ctx`` and returns the values holding the node's
outputs. Values are fx nodes (tensors, or ints computed from sizes) or plain
Python numbers. The graph becomes an ``fx.GraphModule``, scripted to
TorchScript (``.pt``) or exported with ``torch.export`` (``.pt2``); dynamic
dimensions are read from the inputs with ``Tensor.size(axis)`` so both keep them.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ...dtypes import to_tensor
from ...errors import UnsupportedArgumentError
from ...graph import Dim, Graph, Node, SymExpr, TensorInfo
from ..registry import Registry

TORCH = Registry("torch", __package__, ("elementwise", "index", "linalg", "nn", "quant", "reduce", "shape"),
                 note="yet (targets .pt TorchScript and .pt2 torch.export)",
                 alternative="Export to .onnx instead, which translates more primitives.")
torch_op = TORCH.register


@dataclass
class TorchContext:
    """What a torch translation may use: the IR, the fx graph and builders for its nodes."""

    graph: Graph
    fx_graph: Any
    root: Any
    values: dict[str, Any] = field(default_factory=dict)  # IR tensor name -> fx node or Python value
    _dims: dict[Any, Any] = field(default_factory=dict)
    _buffers: int = 0
    _producers: dict[str, Node] | None = None
    current: Node | None = None

    # -- values ----------------------------------------------------------------
    def input(self, node: Node, i: int) -> Any:
        return self.values[node.inputs[i]]

    def in_info(self, node: Node, i: int) -> TensorInfo:
        return self.graph.tensors[node.inputs[i]]

    def out_info(self, node: Node, i: int = 0) -> TensorInfo:
        return self.graph.tensors[node.outputs[i]]

    def producer(self, name: str) -> Node | None:
        """The IR node whose output ``name`` is (None for inputs and constants)."""
        if self._producers is None:
            self._producers = {out: n for n in self.graph.nodes for out in n.outputs}
        return self._producers.get(name)

    def const_value(self, node: Node, i: int) -> np.ndarray | None:
        """The value of a constant input (an IR constant), else None."""
        return self.graph.constants.get(node.inputs[i])

    # -- nodes -----------------------------------------------------------------
    def call(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """A call_function node."""
        return self.fx_graph.call_function(fn, tuple(args), dict(kwargs))

    def method(self, name: str, obj: Any, *args: Any) -> Any:
        """A call_method node (``obj.name(*args)``)."""
        return self.fx_graph.call_method(name, (obj, *args))

    def buffer(self, value: np.ndarray, hint: str = "c") -> Any:
        """Register a constant tensor on the module and read it in the graph."""
        name = f"{hint}_{self._buffers}"
        self._buffers += 1
        self.root.register_buffer(name, to_tensor(value))
        return self.fx_graph.get_attr(name)

    # -- dimensions ------------------------------------------------------------
    def dim(self, dim: Dim) -> Any:
        """An int, or an fx node computing a dynamic dimension from the input sizes."""
        if not isinstance(dim, SymExpr):
            return int(dim)
        if dim in self._dims:
            return self._dims[dim]
        total: Any = None
        for mono, coef in dim.terms:
            term: Any = None
            for sym in mono:
                axis = self.graph.symbols[sym]
                size = self._size(axis.input, axis.axis)
                term = size if term is None else self.call(operator.mul, term, size)
            if term is None:
                term = int(coef) if coef.denominator == 1 else None
                if term is None:
                    raise UnsupportedArgumentError(f"constant fraction {coef} in a dimension")
            else:
                if coef.numerator != 1:
                    term = self.call(operator.mul, term, int(coef.numerator))
                if coef.denominator != 1:
                    term = self.call(operator.floordiv, term, int(coef.denominator))
            total = term if total is None else self.call(operator.add, total, term)
        self._dims[dim] = total
        return total

    def _size(self, name: str, axis: int) -> Any:
        key = ("size", name, axis)
        if key not in self._dims:
            self._dims[key] = self.method("size", self.values[name], axis)
        return self._dims[key]

    def shape(self, dims: Sequence[Dim]) -> list[Any]:
        return [self.dim(d) for d in dims]
