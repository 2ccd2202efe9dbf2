"""The captured graph (our IR): typed tensors, constants and primitive nodes.

One Graph feeds every export target. Dimensions are either ints or `SymExpr`s:
multilinear polynomials over the dynamic-axis symbols named by the user
(``batch``, ``seq``...), e.g. ``batch*seq*8`` or ``seq + 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterator, Mapping, Sequence, Union

import numpy as np

Monomial = tuple[str, ...]


@dataclass(frozen=True)
class SymExpr:
    """A multilinear polynomial over named symbols with rational coefficients."""

    terms: tuple[tuple[Monomial, Fraction], ...]

    @staticmethod
    def make(terms: Mapping[Monomial, Fraction | int]) -> "SymExpr | int":
        """Build an expression; collapses to a plain int when no symbol is left."""
        clean = {tuple(sorted(m)): Fraction(c) for m, c in terms.items() if c != 0}
        if all(m == () for m in clean):
            value = clean.get((), Fraction(0))
            if value.denominator == 1:
                return int(value)
        return SymExpr(tuple(sorted(clean.items())))

    @staticmethod
    def symbol(name: str) -> "SymExpr":
        return SymExpr((((name,), Fraction(1)),))

    @property
    def symbols(self) -> set[str]:
        return {s for m, _ in self.terms for s in m}

    def evaluate(self, bindings: Mapping[str, int]) -> int:
        total = Fraction(0)
        for mono, coef in self.terms:
            total += coef * math.prod(bindings[s] for s in mono)
        if total.denominator != 1:
            raise ValueError(f"{self} is not an integer at {dict(bindings)}")
        return int(total)

    def as_dict(self) -> dict[Monomial, Fraction]:
        return dict(self.terms)

    # Affine arithmetic with ints and other expressions (enough for index math in translations).
    def __add__(self, other: "SymExpr | int") -> "SymExpr | int":
        terms = self.as_dict()
        for mono, coef in (other.terms if isinstance(other, SymExpr) else (((), Fraction(int(other))),)):
            terms[mono] = terms.get(mono, Fraction(0)) + coef
        return SymExpr.make(terms)

    __radd__ = __add__

    def __neg__(self) -> "SymExpr | int":
        return SymExpr.make({m: -c for m, c in self.terms})

    def __sub__(self, other: "SymExpr | int") -> "SymExpr | int":
        return self + (-other)

    def __rsub__(self, other: int) -> "SymExpr | int":
        return (-self) + other

    def __str__(self) -> str:
        parts = []
        for mono, coef in self.terms:
            body = "*".join(mono)
            if not mono:
                parts.append(str(coef))
            elif coef == 1:
                parts.append(body)
            else:
                parts.append(f"{coef}*{body}")
        return " + ".join(parts) or "0"

    __repr__ = __str__


Dim = Union[int, SymExpr]


def evaluate_value(value: Any, bindings: Mapping[str, int]) -> Any:
    """Replace every SymExpr inside a nested argument value by its number."""
    if isinstance(value, SymExpr):
        return value.evaluate(bindings)
    if isinstance(value, (list, tuple)):
        return type(value)(evaluate_value(v, bindings) for v in value)
    return value


def is_static(dims: Any) -> bool:
    """True when a (nested) value holds no SymExpr."""
    if isinstance(dims, SymExpr):
        return False
    if isinstance(dims, (list, tuple)):
        return all(is_static(d) for d in dims)
    return True


def format_shape(shape: Sequence[Dim]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


@dataclass
class TensorInfo:
    """Name, shape (ints or SymExprs) and numpy-style dtype name of one tensor."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str

    @property
    def rank(self) -> int:
        return len(self.shape)

    def describe(self) -> str:
        return f"{self.dtype}{format_shape(self.shape)}"


@dataclass
class Node:
    """One MLX primitive: its name, input/output tensor names and arguments."""

    index: int
    primitive: str
    inputs: list[str]
    outputs: list[str]
    arguments: list[Any] = field(default_factory=list)

    def describe(self, graph: "Graph") -> str:
        ins = ", ".join(graph.tensors[n].describe() for n in self.inputs)
        return f"node {self.index}, inputs {ins or 'none'}"


@dataclass
class DynamicAxis:
    """A user-named dynamic dimension bound to an input axis."""

    symbol: str
    input: str
    axis: int
    example: int

    @property
    def terms(self) -> list[str]:
        """The named axes this one adds up: ``["past", "seq"]`` for ``past+seq``, ``[symbol]`` for a plain axis."""
        return self.symbol.split("+")

    @property
    def derived(self) -> bool:
        """True for a sum of other axes (its size follows from theirs)."""
        return "+" in self.symbol

    def size(self, sizes: "Mapping[str, int]") -> int:
        """This axis's size given the plain axes' sizes."""
        return sum(sizes[t] for t in self.terms)


@dataclass
class Graph:
    """The captured computation: inputs, outputs, constants and nodes in order."""

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    nodes: list[Node]
    constants: dict[str, np.ndarray]
    tensors: dict[str, TensorInfo]
    dynamic_axes: list[DynamicAxis] = field(default_factory=list)
    # The tensor each output name refers to inside the graph (outputs may alias
    # inputs, constants or each other).
    output_sources: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def symbols(self) -> dict[str, DynamicAxis]:
        return {d.symbol: d for d in self.dynamic_axes if not d.derived}

    def consumers(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                users.setdefault(name, []).append(node)
        return users

    def primitive_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.primitive] = counts.get(node.primitive, 0) + 1
        return counts

    def iter_nodes(self, primitive: str) -> Iterator[Node]:
        return (n for n in self.nodes if n.primitive == primitive)

    @property
    def num_parameters(self) -> int:
        return int(sum(c.size for c in self.constants.values()))

