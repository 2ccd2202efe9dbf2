"""Elementwise primitives: arithmetic, comparisons, logic and unary math."""

from __future__ import annotations

from ..graph import Node
from .registry import ConvertContext, onnx_op, register_direct

_DIRECT = {
    "Add": "Add", "Subtract": "Sub", "Multiply": "Mul", "Divide": "Div",
    "Maximum": "Max", "Minimum": "Min", "Power": "Pow",
    "Equal": "Equal", "Less": "Less", "LessEqual": "LessOrEqual",
    "Greater": "Greater", "GreaterEqual": "GreaterOrEqual",
    "LogicalNot": "Not", "LogicalAnd": "And", "LogicalOr": "Or",
    "Abs": "Abs", "Negative": "Neg", "Exp": "Exp", "Sin": "Sin", "Cos": "Cos",
    "Tanh": "Tanh", "Sigmoid": "Sigmoid", "Erf": "Erf", "Select": "Where",
}
register_direct(_DIRECT, __name__)


@onnx_op("Square")
def convert_square(ctx: ConvertContext, node: Node) -> list[str]:
    """Square(x) -> ONNX Mul(x, x)."""
    x = ctx.input(node, 0)
    return [ctx.make("Mul", [x, x])]


@onnx_op("Sqrt")
def convert_sqrt(ctx: ConvertContext, node: Node) -> list[str]:
    """Sqrt(x) [recip] -> ONNX Sqrt, or Reciprocal(Sqrt) when recip (rsqrt)."""
    out = ctx.make("Sqrt", [ctx.input(node, 0)])
    return [ctx.make("Reciprocal", [out])] if node.arguments and node.arguments[0] else [out]
