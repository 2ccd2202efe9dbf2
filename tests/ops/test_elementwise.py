"""Parity of the elementwise translations (ops/elementwise.py)."""

from __future__ import annotations

import mlx.core as mx
import pytest

from .cases import OpCase, params, run_case

BINARY_SHAPES = [((2, 3), (2, 3)), ((4, 1, 5), (3, 1)), ((), (3,)), ((0, 3), (0, 3))]
UNARY_SHAPES = [((2, 3),), ((),), ((4, 0),)]
FLOATS = ("float32", "float16")

CASES = [
    OpCase("Add", lambda a, b: a + b, BINARY_SHAPES, FLOATS + ("int32",)),
    OpCase("Subtract", lambda a, b: a - b, BINARY_SHAPES, FLOATS + ("int32",)),
    OpCase("Multiply", lambda a, b: a * b, BINARY_SHAPES, FLOATS + ("int32",)),
    OpCase("Square", lambda a: mx.square(a), UNARY_SHAPES, FLOATS + ("int32",)),
    OpCase("Sqrt", lambda a: mx.sqrt(mx.abs(a)), UNARY_SHAPES, FLOATS, id="sqrt"),
    OpCase("Sqrt", lambda a: mx.rsqrt(mx.abs(a) + 0.5), UNARY_SHAPES, FLOATS, id="rsqrt"),
    OpCase("Exp", lambda a: mx.exp(a), UNARY_SHAPES, FLOATS),
]


@pytest.mark.parametrize("case,shape_index,dtype,opset", params(CASES))
def test_parity(case: OpCase, shape_index: int, dtype: str, opset: int) -> None:
    run_case(case, shape_index, dtype, opset)
