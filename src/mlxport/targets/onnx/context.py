"""The ONNX target's registry and the context its translations build ONNX nodes with.

A translation has the signature ``fn(ctx, node) -> list[str]``: it emits ONNX
nodes through ``ctx`` and returns the ONNX value names that hold the node's
outputs (an output may be an existing value: the node then costs nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import onnx
from onnx import helper

from ...dtypes import numpy_dtype, onnx_dtype
from ...graph import Dim, Graph, Node, SymExpr, TensorInfo
from ..registry import Registry

ONNX = Registry("ONNX", __package__, ("elementwise", "index", "linalg", "nn", "quant", "reduce", "shape"),
                version_name="opset")
onnx_op = ONNX.register


def register_direct(table: dict[str, str], family_module: str) -> None:
    """Register argument-free 1:1 primitives from a table {MLX name: ONNX op}."""
    for primitive, op_type in table.items():

        def convert(ctx: ConvertContext, node: Node, _op: str = op_type) -> list[str]:
            return [ctx.make(_op, [ctx.input(node, i) for i in range(len(node.inputs))])]

        convert.__doc__ = f"{primitive}(x...) -> ONNX {op_type}."
        convert.__module__ = family_module
        convert.__name__ = f"convert_{primitive.lower()}"
        onnx_op(primitive)(convert)


# ----------------------------------------------------------------------------
# Initializers: materialized lazily so folded weights never all sit in memory
# ----------------------------------------------------------------------------


@dataclass
class Initializer:
    """A constant of the ONNX graph: an array, or a function that makes it at write time."""

    shape: tuple[int, ...]
    dtype: np.dtype
    source: np.ndarray | Callable[[], np.ndarray]
    external_hint: bool = False

    def value(self) -> np.ndarray:
        return self.source if isinstance(self.source, np.ndarray) else self.source()

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


@dataclass
class ConvertContext:
    """What a translation may use: the IR, the opset and builders for ONNX nodes."""

    graph: Graph
    opset: int
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: dict[str, Initializer] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)  # IR tensor name -> ONNX value name
    value_info: dict[str, TensorInfo] = field(default_factory=dict)  # ONNX name -> IR info (when known)
    opset_imports: dict[str, int] = field(default_factory=dict)
    _counter: int = 0
    _small_consts: dict[tuple, str] = field(default_factory=dict)
    _dim_cache: dict[Any, str] = field(default_factory=dict)
    current: Node | None = None
    # Lowering options (contrib_ops, nbits_accuracy_level...) chosen by the caller of lower().
    options: dict[str, Any] = field(default_factory=dict)
    _producer: dict[str, onnx.NodeProto] = field(default_factory=dict)
    # State translations share across nodes (e.g. one MatMulNBits blob per packed weight).
    shared: dict[str, Any] = field(default_factory=dict)

    # -- names ---------------------------------------------------------------
    def fresh(self, hint: str = "t") -> str:
        self._counter += 1
        return f"{hint}_{self._counter}"

    def input(self, node: Node, i: int) -> str:
        """ONNX value name of the node's i-th input."""
        return self.values[node.inputs[i]]

    def in_info(self, node: Node, i: int) -> TensorInfo:
        return self.graph.tensors[node.inputs[i]]

    def out_info(self, node: Node, i: int = 0) -> TensorInfo:
        return self.graph.tensors[node.outputs[i]]

    # -- node builders ---------------------------------------------------------
    def make(self, op_type: str, inputs: Sequence[str], *, outputs: int | Sequence[str] = 1,
             domain: str = "", **attrs: Any) -> Any:
        """Append an ONNX node; returns its output name (or a list when outputs > 1)."""
        if isinstance(outputs, int):
            names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        else:
            names = list(outputs)
        clean = {k: v for k, v in attrs.items() if v is not None}
        prefix = f"n{self.current.index}_" if self.current is not None else ""
        proto = helper.make_node(op_type, list(inputs), names, name=self.fresh(prefix + op_type),
                                 domain=domain or None, **clean)
        self.nodes.append(proto)
        for n in names:
            self._producer[n] = proto
        if domain and domain not in self.opset_imports:
            self.opset_imports[domain] = 1
        return names[0] if isinstance(outputs, int) and outputs == 1 else names

    def producer(self, name: str) -> onnx.NodeProto | None:
        """The ONNX node that computes ``name`` (None for inputs and initializers)."""
        return self._producer.get(name)

    def const(self, value: Any, dtype: str | np.dtype | None = None, hint: str = "c") -> str:
        """Add a constant initializer (small ones are shared by value)."""
        arr = np.asarray(value, dtype=numpy_dtype(dtype) if isinstance(dtype, str) else dtype)
        if arr.size <= 64:
            key = (arr.dtype.str, arr.dtype.name, arr.shape, arr.tobytes())
            if key in self._small_consts:
                return self._small_consts[key]
            name = self.fresh(hint)
            self._small_consts[key] = name
        else:
            name = self.fresh(hint)
        self.initializers[name] = Initializer(arr.shape, arr.dtype, arr)
        return name

    def lazy_const(self, shape: Sequence[int], dtype: np.dtype, make: Callable[[], np.ndarray], hint: str = "w") -> str:
        """Add an initializer computed only when the file is written (folded weights)."""
        name = self.fresh(hint)
        self.initializers[name] = Initializer(tuple(shape), np.dtype(dtype), make)
        return name

    def const_value(self, name: str) -> np.ndarray | None:
        """The value of an initializer, or None if ``name`` is computed at run time."""
        init = self.initializers.get(name)
        return None if init is None else init.value()

    def is_const(self, name: str) -> bool:
        return name in self.initializers

    def cast(self, name: str, dtype: str) -> str:
        return self.make("Cast", [name], to=onnx_dtype(dtype))

    # -- dimensions and shapes -----------------------------------------------
    def dim(self, dim: Dim) -> str:
        """An int64 [1] tensor holding one dimension (computed from input shapes when symbolic)."""
        if not isinstance(dim, SymExpr):
            return self.const([int(dim)], np.int64)
        if dim in self._dim_cache:
            return self._dim_cache[dim]
        total: str | None = None
        for mono, coef in dim.terms:
            term = self._monomial(mono) if mono else None
            if coef.denominator != 1 or term is None:
                if term is None:
                    term_val = self.const([int(coef.numerator)], np.int64)
                elif coef.numerator == 1:
                    term_val = term
                else:
                    term_val = self.make("Mul", [term, self.const([int(coef.numerator)], np.int64)])
                if coef.denominator != 1:
                    term_val = self.make("Div", [term_val, self.const([int(coef.denominator)], np.int64)])
            elif coef != 1:
                term_val = self.make("Mul", [term, self.const([int(coef)], np.int64)])
            else:
                term_val = term
            total = term_val if total is None else self.make("Add", [total, term_val])
        assert total is not None
        self._dim_cache[dim] = total
        return total

    def _monomial(self, mono: tuple[str, ...]) -> str:
        if mono in self._dim_cache:
            return self._dim_cache[mono]
        if len(mono) == 1:
            axis = self.graph.symbols[mono[0]]
            shape = self.make("Shape", [self.values[axis.input]], start=axis.axis, end=axis.axis + 1)
            out = shape
        else:
            out = self.make("Mul", [self._monomial(mono[:-1]), self._monomial(mono[-1:])])
        self._dim_cache[mono] = out
        return out

    def shape_tensor(self, dims: Sequence[Dim]) -> str:
        """A 1-D int64 tensor with these dimensions (a constant when all are static)."""
        dims = list(dims)
        if all(not isinstance(d, SymExpr) for d in dims):
            return self.const(np.array(dims, dtype=np.int64).reshape(len(dims)), hint="shape")
        key = ("shape", tuple(dims))
        if key in self._dim_cache:
            return self._dim_cache[key]
        pieces: list[str] = []
        run: list[int] = []
        for d in dims:
            if isinstance(d, SymExpr):
                if run:
                    pieces.append(self.const(np.array(run, dtype=np.int64), hint="shape"))
                    run = []
                pieces.append(self.dim(d))
            else:
                run.append(int(d))
        if run:
            pieces.append(self.const(np.array(run, dtype=np.int64), hint="shape"))
        out = pieces[0] if len(pieces) == 1 else self.make("Concat", pieces, axis=0)
        self._dim_cache[key] = out
        return out

    def scalar(self, dim: Dim, dtype: str = "int64") -> str:
        """A 0-d tensor holding a dimension, as ``dtype``."""
        if not isinstance(dim, SymExpr):
            return self.const(np.array(dim, dtype=numpy_dtype(dtype)))
        out = self.make("Squeeze", [self.dim(dim), self.const([0], np.int64)])
        return out if dtype == "int64" else self.cast(out, dtype)
