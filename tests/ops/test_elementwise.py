"""Parity of the elementwise translations (ops/elementwise.py)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import mlx.core as mx
import numpy as np
import pytest

from mlxport.errors import UnsupportedArgumentError
from mlxport.exporters.onnx import DEFAULT_OPSET, lower
from mlxport.graph import Graph, Node, TensorInfo
from mlxport.runners import OnnxRunner
from mlxport.validate import compare

from .cases import BASE_TOL, OPSETS, OpCase, default_inputs, params, run_case

BINARY_SHAPES = [((2, 3), (2, 3)), ((4, 1, 5), (3, 1)), ((), (3,)), ((0, 3), (0, 3))]
UNARY_SHAPES = [((2, 3),), ((),), ((4, 0),)]
FLOATS = ("float32", "float16")
NUMERIC = FLOATS + ("int32",)
# Relative accuracy near 0 is the point of these cases: no absolute slack.
STRICT = {"float32": (1e-5, 0.0)}

NAN, INF = float("nan"), float("inf")


# ----------------------------------------------------------------------------
# input makers: (rng, shapes, dtype) -> list[np.ndarray]
# ----------------------------------------------------------------------------


def _uniform(lo: float, hi: float) -> Callable:
    def make(rng: np.random.Generator, shapes: Sequence[tuple[int, ...]], dtype: str) -> list[np.ndarray]:
        return [rng.uniform(lo, hi, size=s).astype(dtype) for s in shapes]

    return make


def _fixed(*columns: Sequence[float]) -> Callable:
    """Given values, one list per input."""

    def make(rng: np.random.Generator, shapes: Sequence[tuple[int, ...]], dtype: str) -> list[np.ndarray]:
        return [np.asarray(c, dtype=np.float64).astype(dtype) for c in columns]

    return make


def _small_ints(rng: np.random.Generator, shapes: Sequence[tuple[int, ...]], dtype: str) -> list[np.ndarray]:
    """Few distinct values, so comparisons see ties."""
    if dtype == "bool":
        return default_inputs(rng, shapes, dtype)
    return [rng.integers(0 if dtype.startswith("u") else -2, 3, size=s).astype(dtype) for s in shapes]


def _divisions(rng: np.random.Generator, shapes: Sequence[tuple[int, ...]], dtype: str) -> list[np.ndarray]:
    """Dividends of both signs; divisors of both signs, never 0 for integers (a hardware trap)."""
    if dtype == "bool":
        return [rng.random(shapes[0]) < 0.5, np.ones(shapes[1], bool)]
    if dtype.startswith("u"):
        return [rng.integers(0, 50, size=shapes[0]).astype(dtype), rng.integers(1, 9, size=shapes[1]).astype(dtype)]
    a = rng.integers(-50, 51, size=shapes[0])
    b = rng.integers(1, 9, size=shapes[1]) * rng.choice([-1, 1], size=shapes[1])
    if dtype in FLOATS:
        a = a + rng.uniform(-1, 1, size=shapes[0])
        b = b * rng.uniform(0.3, 1, size=shapes[1])
    return [np.asarray(a).astype(dtype), np.asarray(b).astype(dtype)]


def _full_range(rng: np.random.Generator, shapes: Sequence[tuple[int, ...]], dtype: str) -> list[np.ndarray]:
    if dtype == "bool":
        return default_inputs(rng, shapes, dtype)
    info = np.iinfo(dtype)
    return [rng.integers(info.min, info.max, size=s, endpoint=True, dtype=dtype) for s in shapes]


def _shifts(rng: np.random.Generator, shapes: Sequence[tuple[int, ...]], dtype: str) -> list[np.ndarray]:
    """Any value shifted by 0..width-1 (wider shifts are undefined in MLX's C++)."""
    width = np.dtype(dtype).itemsize * 8
    return [_full_range(rng, shapes[:1], dtype)[0], rng.integers(0, width, size=shapes[1]).astype(dtype)]


def _powers(rng: np.random.Generator, shapes: Sequence[tuple[int, ...]], dtype: str) -> list[np.ndarray]:
    if dtype in FLOATS:
        return [rng.uniform(0.1, 3, size=shapes[0]).astype(dtype), rng.uniform(-3, 3, size=shapes[1]).astype(dtype)]
    return default_inputs(rng, shapes, dtype)


def _select(rng: np.random.Generator, shapes: Sequence[tuple[int, ...]], dtype: str) -> list[np.ndarray]:
    return [rng.random(shapes[0]) < 0.5] + default_inputs(rng, shapes[1:], dtype)


def _near_zero(rng: np.random.Generator, shapes: Sequence[tuple[int, ...]], dtype: str) -> list[np.ndarray]:
    mag = np.logspace(-12, -0.5, 64)
    return [np.concatenate([mag, -mag, [0.0, -0.0]]).astype(dtype)]


ERFINV_GRID = np.concatenate([np.linspace(-0.999, 0.999, 20001), np.logspace(-30, -1, 40), -np.logspace(-30, -1, 40),
                              1 - np.logspace(-7, -3, 40), [1.0, -1.0, 1.5, 0.0, NAN]])


def _values(primitive: str, fn: Callable, *columns: Sequence[float], id: str = "special") -> OpCase:
    """A float case on given values, one list per input (NaN, infinities, signed zeros...)."""
    return OpCase(primitive, fn, [tuple((len(c),) for c in columns)], FLOATS, make=_fixed(*columns), id=id)


SPECIAL_A = [NAN, 1.0, NAN, -INF, INF, -INF, 2.0, 0.0, -0.0, 3.0]
SPECIAL_B = [1.0, NAN, NAN, -INF, INF, INF, -INF, 0.0, 0.0, -0.0]
ATAN2_A = [0.0, 0.0, -0.0, -0.0, 1.0, -1.0, 0.0, INF, INF, -INF, -INF, 2.0, NAN, 1e-30, 3.0]
ATAN2_B = [0.0, -0.0, 0.0, -0.0, 0.0, -0.0, -2.0, INF, -INF, INF, -INF, INF, 1.0, -1.0, -1e-30]
REM_A = [5.5, -5.5, 5.5, -5.5, 1.0, -1.0, 0.0, -0.0, 4.0, -4.0, 1.0]
REM_B = [2.0, 2.0, -2.0, -2.0, INF, INF, 3.0, -3.0, 2.0, 2.0, 0.0]
BITS = ("int32", "uint32", "uint8", "int8", "int16", "int64", "uint64")

CASES = [
    # -- arithmetic ------------------------------------------------------------
    OpCase("Add", lambda a, b: a + b, BINARY_SHAPES, NUMERIC + ("bool",)),
    OpCase("Add", lambda a, b: a + b, [((2, 3), (1, 3))], NUMERIC, make=_small_ints, dynamic={"a": {0: "batch"}},
           id="dynamic"),
    OpCase("Subtract", lambda a, b: a - b, BINARY_SHAPES, NUMERIC + ("bool", "uint8")),
    OpCase("Multiply", lambda a, b: a * b, BINARY_SHAPES, NUMERIC + ("bool",)),
    OpCase("Divide", lambda a, b: a / b, BINARY_SHAPES, NUMERIC),
    OpCase("Maximum", lambda a, b: mx.maximum(a, b), BINARY_SHAPES, NUMERIC + ("bool", "int16", "uint16")),
    _values("Maximum", lambda a, b: mx.maximum(a, b), SPECIAL_A, SPECIAL_B),
    OpCase("Minimum", lambda a, b: mx.minimum(a, b), BINARY_SHAPES, NUMERIC + ("bool", "int16", "uint16")),
    _values("Minimum", lambda a, b: mx.minimum(a, b), SPECIAL_A, SPECIAL_B),
    OpCase("Power", lambda a, b: mx.power(a, b), BINARY_SHAPES, NUMERIC + ("bool", "uint8", "int16"), make=_powers),
    _values("Power", lambda a, b: mx.power(a, b), [-2, -2, -0.5, 0, 0, 3], [3, 2, -1, 0, 2, 0.5]),
    OpCase("Remainder", lambda a, b: a % b, BINARY_SHAPES, NUMERIC + ("uint32", "int16", "bool"), make=_divisions),
    _values("Remainder", lambda a, b: a % b, REM_A, REM_B),
    OpCase("FloorDivide", lambda a, b: a // b, BINARY_SHAPES, NUMERIC + ("uint32", "int8", "bool"), make=_divisions),
    _values("FloorDivide", lambda a, b: a // b, REM_A, REM_B),
    OpCase("DivMod", lambda a, b: mx.divmod(a, b), BINARY_SHAPES, NUMERIC + ("uint32", "int64", "bool"),
           make=_divisions),
    _values("DivMod", lambda a, b: mx.divmod(a, b), REM_A, REM_B),
    OpCase("LogAddExp", lambda a, b: mx.logaddexp(a, b), BINARY_SHAPES, FLOATS),
    _values("LogAddExp", lambda a, b: mx.logaddexp(a, b), SPECIAL_A, SPECIAL_B),
    # -- comparisons, logic and selection ---------------------------------------
    *[OpCase(prim, fn, BINARY_SHAPES, NUMERIC + ("bool",), make=_small_ints) for prim, fn in [
        ("Equal", lambda a, b: a == b), ("NotEqual", lambda a, b: a != b), ("Less", lambda a, b: a < b),
        ("LessEqual", lambda a, b: a <= b), ("Greater", lambda a, b: a > b), ("GreaterEqual", lambda a, b: a >= b)]],
    _values("NotEqual", lambda a, b: a != b, SPECIAL_A, SPECIAL_B),
    OpCase("LogicalNot", lambda a: mx.logical_not(a), UNARY_SHAPES, ("bool", "int32")),
    OpCase("LogicalAnd", lambda a, b: mx.logical_and(a, b), BINARY_SHAPES, ("bool", "float32")),
    OpCase("LogicalOr", lambda a, b: mx.logical_or(a, b), BINARY_SHAPES, ("bool", "float32")),
    OpCase("Select", lambda c, a, b: mx.where(c, a, b),
           [((2, 3), (2, 3), (2, 3)), ((4, 1, 5), (3, 1), (5,)), ((), (3,), ()), ((0, 3), (0, 3), (3,))],
           NUMERIC + ("bool", "int16", "uint16", "uint64"), make=_select),
    # -- bitwise ---------------------------------------------------------------
    OpCase("BitwiseBinary", lambda a, b: a & b, BINARY_SHAPES, BITS + ("bool",), make=_full_range, id="and"),
    OpCase("BitwiseBinary", lambda a, b: a | b, BINARY_SHAPES, BITS + ("bool",), make=_full_range, id="or"),
    OpCase("BitwiseBinary", lambda a, b: a ^ b, BINARY_SHAPES, BITS + ("bool",), make=_full_range, id="xor"),
    OpCase("BitwiseBinary", lambda a, b: a ^ b, [((2, 3), (1, 3))], ("int32",), make=_small_ints,
           dynamic={"a": {0: "batch"}}, id="xor_dynamic"),
    OpCase("BitwiseBinary", lambda a, b: a << b, BINARY_SHAPES, BITS, make=_shifts, id="left_shift"),
    OpCase("BitwiseBinary", lambda a, b: a >> b, BINARY_SHAPES, BITS, make=_shifts, id="right_shift"),
    # -- unary -----------------------------------------------------------------
    OpCase("Abs", lambda a: mx.abs(a), UNARY_SHAPES, NUMERIC + ("bool", "uint32")),
    OpCase("Negative", lambda a: -a, UNARY_SHAPES, NUMERIC + ("uint32", "uint8")),
    OpCase("Sign", lambda a: mx.sign(a), UNARY_SHAPES, NUMERIC + ("bool", "uint32")),
    _values("Sign", lambda a: mx.sign(a), SPECIAL_A),
    OpCase("Square", lambda a: mx.square(a), UNARY_SHAPES, NUMERIC + ("bool",)),
    OpCase("Sqrt", lambda a: mx.sqrt(a), UNARY_SHAPES, FLOATS, make=_uniform(0, 10), id="sqrt"),
    OpCase("Sqrt", lambda a: mx.rsqrt(a), UNARY_SHAPES, FLOATS, make=_uniform(0.1, 10), id="rsqrt"),
    OpCase("Exp", lambda a: mx.exp(a), UNARY_SHAPES, FLOATS),
    OpCase("Expm1", lambda a: mx.expm1(a), UNARY_SHAPES, FLOATS, make=_uniform(-5, 5)),
    OpCase("Expm1", lambda a: mx.expm1(a), [((130,),)], FLOATS, make=_near_zero, tol=STRICT, id="near_zero"),
    _values("Expm1", lambda a: mx.expm1(a), SPECIAL_A + [100.0, -100.0]),
    OpCase("Log", lambda a: mx.log(a), UNARY_SHAPES, FLOATS, make=_uniform(0.01, 100), id="e"),
    OpCase("Log", lambda a: mx.log2(a), UNARY_SHAPES, FLOATS, make=_uniform(0.01, 100), id="2"),
    OpCase("Log", lambda a: mx.log10(a), UNARY_SHAPES, FLOATS, make=_uniform(0.01, 100), id="10"),
    _values("Log", lambda a: mx.log2(a), SPECIAL_A + [-1.0, 1024.0]),
    OpCase("Log1p", lambda a: mx.log1p(a), UNARY_SHAPES, FLOATS, make=_uniform(-0.99, 10)),
    OpCase("Log1p", lambda a: mx.log1p(a), [((130,),)], FLOATS, make=_near_zero, tol=STRICT, id="near_zero"),
    _values("Log1p", lambda a: mx.log1p(a), SPECIAL_A + [-1.0, -2.0]),
    OpCase("Sin", lambda a: mx.sin(a), UNARY_SHAPES, FLOATS),
    OpCase("Cos", lambda a: mx.cos(a), UNARY_SHAPES, FLOATS),
    OpCase("Tan", lambda a: mx.tan(a), UNARY_SHAPES, FLOATS, make=_uniform(-1.4, 1.4)),
    OpCase("ArcSin", lambda a: mx.arcsin(a), UNARY_SHAPES, FLOATS, make=_uniform(-1, 1)),
    OpCase("ArcCos", lambda a: mx.arccos(a), UNARY_SHAPES, FLOATS, make=_uniform(-1, 1)),
    OpCase("ArcTan", lambda a: mx.arctan(a), UNARY_SHAPES, FLOATS, make=_uniform(-10, 10)),
    OpCase("ArcTan2", lambda a, b: mx.arctan2(a, b), BINARY_SHAPES, FLOATS),
    _values("ArcTan2", lambda a, b: mx.arctan2(a, b), ATAN2_A, ATAN2_B),
    OpCase("Sinh", lambda a: mx.sinh(a), UNARY_SHAPES, FLOATS, make=_uniform(-5, 5)),
    OpCase("Cosh", lambda a: mx.cosh(a), UNARY_SHAPES, FLOATS, make=_uniform(-5, 5)),
    OpCase("Tanh", lambda a: mx.tanh(a), UNARY_SHAPES, FLOATS),
    OpCase("ArcSinh", lambda a: mx.arcsinh(a), UNARY_SHAPES, FLOATS, make=_uniform(-10, 10)),
    OpCase("ArcCosh", lambda a: mx.arccosh(a), UNARY_SHAPES, FLOATS, make=_uniform(1, 10)),
    OpCase("ArcTanh", lambda a: mx.arctanh(a), UNARY_SHAPES, FLOATS, make=_uniform(-0.99, 0.99)),
    OpCase("Sigmoid", lambda a: mx.sigmoid(a), UNARY_SHAPES, FLOATS),
    OpCase("Erf", lambda a: mx.erf(a), UNARY_SHAPES, FLOATS),
    OpCase("ErfInv", lambda a: mx.erfinv(a), UNARY_SHAPES, FLOATS, make=_uniform(-0.999, 0.999)),
    # The accuracy proof: a dense grid over (-0.999, 0.999), tiny values, the tails and the edges.
    OpCase("ErfInv", lambda a: mx.erfinv(a), [((len(ERFINV_GRID),),)], FLOATS, make=_fixed(ERFINV_GRID),
           tol=STRICT, id="grid"),
    OpCase("Floor", lambda a: mx.floor(a), UNARY_SHAPES, NUMERIC),
    OpCase("Ceil", lambda a: mx.ceil(a), UNARY_SHAPES, NUMERIC),
    OpCase("Round", lambda a: mx.round(a), UNARY_SHAPES, NUMERIC),
    _values("Round", lambda a: mx.round(a), [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999, NAN], id="half_even"),
]


@pytest.mark.parametrize("case,shape_index,dtype,opset", params(CASES))
def test_parity(case: OpCase, shape_index: int, dtype: str, opset: int) -> None:
    run_case(case, shape_index, dtype, opset)


# ----------------------------------------------------------------------------
# Primitives a CPU trace never yields (folded away, or refused by export_function
# because they have no state()): one-node graphs built from the IR.
# ----------------------------------------------------------------------------


def _one_node(primitive: str, arguments: list[Any], inputs: Sequence[tuple[tuple[int, ...], str]],
              out_dtype: str | None = None) -> Graph:
    infos = [TensorInfo(f"x{i}", shape, dtype) for i, (shape, dtype) in enumerate(inputs)]
    out = TensorInfo("/mx/y", infos[0].shape, out_dtype or infos[0].dtype)
    node = Node(0, primitive, [i.name for i in infos], [out.name], arguments)
    tensors = {t.name: t for t in [*infos, out]}
    result = TensorInfo("output", out.shape, out.dtype)
    return Graph(infos, [result], [node], {}, {**tensors, "output": result}, output_sources={"output": out.name})


def _run_ir(graph: Graph, feed: Sequence[np.ndarray], opset: int) -> list[np.ndarray]:
    return OnnxRunner(lower(graph, opset).to_proto().SerializeToString())(*feed)


# name -> (arguments, dtypes, MLX reference)
IR_CASES: dict[str, tuple[list[Any], Sequence[str], Callable]] = {
    "BitwiseInvert": ([], ("int32", "uint32", "uint8", "int16", "int64", "bool"), mx.bitwise_invert),
    "StopGradient": ([], NUMERIC + ("bool",), mx.stop_gradient),
    "Copy": ([], NUMERIC + ("bool",), lambda x: x),
    "Contiguous": ([False], NUMERIC, mx.contiguous),
    "Conjugate": ([], NUMERIC, mx.conj),
}


def _ir_params() -> list[Any]:
    out = []
    for prim, (_, dtypes, _) in IR_CASES.items():
        for dtype in dtypes:
            for shape in [(2, 3), (), (4, 0)]:
                shape_id = "_".join(map(str, shape)) or "scalar"
                out.extend(pytest.param(prim, dtype, shape, opset, id=f"{prim}-{shape_id}-{dtype}-op{opset}")
                           for opset in OPSETS)
    return out


@pytest.mark.parametrize("primitive,dtype,shape,opset", _ir_params())
def test_ir_parity(primitive: str, dtype: str, shape: tuple[int, ...], opset: int) -> None:
    arguments, _, reference = IR_CASES[primitive]
    rng = np.random.default_rng(0)
    x = _full_range(rng, [shape], dtype)[0] if dtype not in FLOATS else default_inputs(rng, [shape], dtype)[0]
    x = np.asarray(x)
    expected = np.array(reference(mx.array(x)))
    got = _run_ir(_one_node(primitive, arguments, [(shape, dtype)]), [x], opset)[0]
    check = compare("output", expected, got, *BASE_TOL.get(dtype, (0.0, 0.0)))
    assert check.ok, check.line()


@pytest.mark.parametrize("primitive", ["StopGradient", "Copy", "Contiguous", "Conjugate"])
def test_identities_emit_no_node(primitive: str) -> None:
    graph = _one_node(primitive, [False] if primitive == "Contiguous" else [], [((2, 3), "float32")])
    assert lower(graph).op_counts() == {"Identity": 1}  # only the output binding


def test_bitwise_uses_native_ops_from_opset_18() -> None:
    graph = _one_node("BitwiseBinary", [2], [((2, 3), "int32"), ((2, 3), "int32")])
    assert lower(graph, DEFAULT_OPSET).op_counts() == {"BitwiseXor": 1}
    old = lower(graph, 17).op_counts()
    assert "BitwiseXor" not in old and old["ReduceSum"] == 1


@pytest.mark.parametrize("primitive,arguments,dtype,message", [
    ("Conjugate", [], "complex64", "[Conjugate] real inputs only"),
    ("Log", [7], "float32", "[Log] base must be 2 (state 0), 10 (state 1) or e (state 2); got state 7"),
    ("BitwiseBinary", [5], "int32", "[BitwiseBinary] op must be 0..4"),
    ("BitwiseBinary", [0], "float32", "[BitwiseBinary] And takes integer or bool inputs; got float32"),
    ("BitwiseBinary", [3], "bool", "[BitwiseBinary] LeftShift takes integer inputs; got bool"),
    ("BitwiseInvert", [], "float32", "[BitwiseInvert] takes integer or bool inputs; got float32"),
])
def test_unsupported_arguments(primitive: str, arguments: list[Any], dtype: str, message: str) -> None:
    n_inputs = 2 if primitive == "BitwiseBinary" else 1
    graph = _one_node(primitive, arguments, [((2,), dtype)] * n_inputs)
    with pytest.raises(UnsupportedArgumentError) as err:
        lower(graph)
    assert str(err.value).startswith(message)
