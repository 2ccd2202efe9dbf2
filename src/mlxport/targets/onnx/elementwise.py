"""Elementwise primitives: arithmetic, comparisons, logic, bitwise ops and unary math.

ONNX Runtime's CPU provider (1.32) lacks kernels that the ONNX spec allows,
measured by running every op on every dtype: no bool arithmetic or ordering,
Max/Min without int16/uint16, Where without bool/int16/uint16/uint64, Pow only
for floats and int32/int64, Neg without unsigned types, and no Bitwise* ops
before opset 18. The translations route those dtypes through one that runs.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from ...dtypes import FLOAT_DTYPES
from ...graph import Node
from ..args import BITWISE_OPS, args_error, bitwise_args, check_integer_or_bool
from .context import ConvertContext, onnx_op, register_direct

_DIRECT = {
    "Divide": "Div", "Equal": "Equal",
    "LogicalNot": "Not", "LogicalAnd": "And", "LogicalOr": "Or",
    "Exp": "Exp", "Sin": "Sin", "Cos": "Cos", "Tan": "Tan",
    "ArcSin": "Asin", "ArcCos": "Acos", "ArcTan": "Atan",
    "Sinh": "Sinh", "Cosh": "Cosh", "Tanh": "Tanh",
    "ArcSinh": "Asinh", "ArcCosh": "Acosh", "ArcTanh": "Atanh",
    "Sigmoid": "Sigmoid", "Erf": "Erf",
}
register_direct(_DIRECT, __name__)

_HALF = {"float16", "bfloat16"}
_SIGNED_TO_UNSIGNED = {"int8": "uint8", "int16": "uint16", "int32": "uint32", "int64": "uint64"}
# Dtypes ORT's Where/Max/Min have no CPU kernel for, and the type to run them in.
_WHERE_WIDE = {"bool": "uint8", "int16": "int32", "uint16": "int32", "uint64": "int64"}
_MINMAX_WIDE = {"int16": "int32", "uint16": "int32"}


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def _dtype(ctx: ConvertContext, node: Node, i: int = 0) -> str:
    return ctx.in_info(node, i).dtype


def _inputs(ctx: ConvertContext, node: Node) -> list[str]:
    return [ctx.input(node, i) for i in range(len(node.inputs))]


def _unsigned(dtype: str) -> bool:
    return dtype.startswith("uint")


def _cast(ctx: ConvertContext, x: str, src: str, dst: str) -> str:
    return x if src == dst else ctx.cast(x, dst)


def _widened(ctx: ConvertContext, op: str, inputs: Sequence[str], dtype: str, wide: dict[str, str],
             first: int = 0) -> str:
    """``op`` on ``dtype`` values, run in ``wide[dtype]`` (inputs from ``first`` on) where ORT lacks the kernel."""
    if dtype not in wide:
        return ctx.make(op, list(inputs))
    out = ctx.make(op, [*inputs[:first], *(ctx.cast(x, wide[dtype]) for x in inputs[first:])])
    return ctx.cast(out, dtype)


def _where(ctx: ConvertContext, cond: str, a: str, b: str, dtype: str) -> str:
    return _widened(ctx, "Where", [cond, a, b], dtype, _WHERE_WIDE, first=1)


def _in_float32(ctx: ConvertContext, dtype: str, xs: Sequence[str], build: Callable[..., str]) -> str:
    """``build(*xs, dtype)`` in float32 for half types, rounded once at the end like MLX.

    Multi-step formulas (expm1, atan2, erfinv...) would otherwise round every
    intermediate to 11 bits and drift past float16 tolerance.
    """
    if dtype not in _HALF:
        return build(*xs, dtype)
    out = build(*(ctx.cast(x, "float32") for x in xs), "float32")
    return ctx.cast(out, dtype)


def _horner(ctx: ConvertContext, v: str, coefs: Sequence[float], dtype: str) -> str:
    p = ctx.const(coefs[0], dtype)
    for c in coefs[1:]:
        p = ctx.make("Add", [ctx.make("Mul", [p, v]), ctx.const(c, dtype)])
    return p


# ----------------------------------------------------------------------------
# arithmetic
# ----------------------------------------------------------------------------


def _arith(ctx: ConvertContext, node: Node, op: str, bool_op: str, wide: dict[str, str] | None = None) -> list[str]:
    dtype = _dtype(ctx, node)
    if dtype == "bool":
        return [ctx.make(bool_op, _inputs(ctx, node))]
    return [_widened(ctx, op, _inputs(ctx, node), dtype, wide or {})]


@onnx_op("Add")
def convert_add(ctx: ConvertContext, node: Node) -> list[str]:
    """Add(a, b) -> ONNX Add (Or for bool)."""
    return _arith(ctx, node, "Add", "Or")


@onnx_op("Subtract")
def convert_subtract(ctx: ConvertContext, node: Node) -> list[str]:
    """Subtract(a, b) -> ONNX Sub (Xor for bool)."""
    return _arith(ctx, node, "Sub", "Xor")


@onnx_op("Multiply")
def convert_multiply(ctx: ConvertContext, node: Node) -> list[str]:
    """Multiply(a, b) -> ONNX Mul (And for bool)."""
    return _arith(ctx, node, "Mul", "And")


@onnx_op("Maximum")
def convert_maximum(ctx: ConvertContext, node: Node) -> list[str]:
    """Maximum(a, b) -> ONNX Max (NaN-propagating in ORT, as in MLX; Or for bool)."""
    return _arith(ctx, node, "Max", "Or", _MINMAX_WIDE)


@onnx_op("Minimum")
def convert_minimum(ctx: ConvertContext, node: Node) -> list[str]:
    """Minimum(a, b) -> ONNX Min (NaN-propagating in ORT, as in MLX; And for bool)."""
    return _arith(ctx, node, "Min", "And", _MINMAX_WIDE)


@onnx_op("Power")
def convert_power(ctx: ConvertContext, node: Node) -> list[str]:
    """Power(a, b) -> ONNX Pow; integers via int64 Pow with 0 for negative exponents; bool Or(a, Not b)."""
    a, b = _inputs(ctx, node)
    dtype = _dtype(ctx, node)
    if dtype == "bool":
        return [ctx.make("Or", [a, ctx.make("Not", [b])])]
    if dtype in FLOAT_DTYPES:
        return [ctx.make("Pow", [a, b])]
    # MLX multiplies in the integer type (wrapping on overflow) and gives 0 for any
    # negative exponent. ORT has integer Pow only for int32/int64 and goes through
    # double: int64 then a wrapping Cast matches MLX while |a|**b < 2**53.
    b64 = _cast(ctx, b, dtype, "int64")
    out = ctx.make("Pow", [_cast(ctx, a, dtype, "int64"), b64])
    if not _unsigned(dtype):
        zero = ctx.const(0, "int64")
        out = ctx.make("Where", [ctx.make("Less", [b64, zero]), zero, out])
    return [_cast(ctx, out, "int64", dtype)]


def _float_remainder(ctx: ConvertContext, a: str, b: str, dtype: str) -> str:
    # ONNX Mod(fmod=1) takes the dividend's sign, MLX the divisor's: add b where
    # the signs differ (Sign, not r * b, which can underflow to 0 in float16).
    r = ctx.make("Mod", [a, b], fmod=1)
    sign = ctx.make("Mul", [ctx.make("Sign", [r]), ctx.make("Sign", [b])])
    return ctx.make("Where", [ctx.make("Less", [sign, ctx.const(0, dtype)]), ctx.make("Add", [r, b]), r])


def _int_floor_divmod(ctx: ConvertContext, a: str, b: str, dtype: str) -> tuple[str, str]:
    """Floor quotient and divisor-signed remainder of integers (ONNX Div truncates)."""
    rem = ctx.make("Mod", [a, b])  # fmod=0: Python semantics, the sign of the divisor
    quot = ctx.make("Div", [a, b])
    if _unsigned(dtype):
        return quot, rem
    # Truncation rounded toward zero exactly where the truncated remainder differs
    # from the floored one; compare remainders rather than computing a - r (overflow).
    trunc_rem = ctx.make("Mod", [a, b], fmod=1)
    adjust = ctx.make("Not", [ctx.make("Equal", [trunc_rem, rem])])
    return ctx.make("Sub", [quot, ctx.cast(adjust, dtype)]), rem


@onnx_op("Remainder")
def convert_remainder(ctx: ConvertContext, node: Node) -> list[str]:
    """Remainder(a, b) -> ONNX Mod (integers); floats Mod(fmod=1) + Where fix-up to the divisor's sign."""
    a, b = _inputs(ctx, node)
    dtype = _dtype(ctx, node)
    if dtype == "bool":
        # a % True == False; a % False is undefined (MLX yields a).
        return [ctx.make("And", [a, ctx.make("Not", [b])])]
    if dtype in FLOAT_DTYPES:
        return [_float_remainder(ctx, a, b, dtype)]
    return [ctx.make("Mod", [a, b])]


@onnx_op("FloorDivide")
def convert_floor_divide(ctx: ConvertContext, node: Node) -> list[str]:
    """FloorDivide(a, b) -> ONNX Floor(Div) for floats; integers Div with a Mod-based floor correction."""
    a, b = _inputs(ctx, node)
    dtype = _dtype(ctx, node)
    if dtype == "bool":
        return [ctx.make("And", [a, b])]
    if dtype in FLOAT_DTYPES:
        return [ctx.make("Floor", [ctx.make("Div", [a, b])])]
    return [_int_floor_divmod(ctx, a, b, dtype)[0]]


@onnx_op("DivMod")
def convert_divmod(ctx: ConvertContext, node: Node) -> list[str]:
    """DivMod(a, b) -> (FloorDivide, Remainder) from ONNX Div/Floor/Mod, sharing nodes."""
    a, b = _inputs(ctx, node)
    dtype = _dtype(ctx, node)
    if dtype == "bool":
        return [ctx.make("And", [a, b]), ctx.make("And", [a, ctx.make("Not", [b])])]
    if dtype in FLOAT_DTYPES:
        return [ctx.make("Floor", [ctx.make("Div", [a, b])]), _float_remainder(ctx, a, b, dtype)]
    return list(_int_floor_divmod(ctx, a, b, dtype))


@onnx_op("LogAddExp")
def convert_logaddexp(ctx: ConvertContext, node: Node) -> list[str]:
    """LogAddExp(a, b) -> ONNX Max + Softplus(Min - Max), with equal infinities guarded."""
    a, b = _inputs(ctx, node)
    dtype = _dtype(ctx, node)
    hi, lo = ctx.make("Max", [a, b]), ctx.make("Min", [a, b])
    # lo - hi <= 0 keeps exp from overflowing; it is NaN for equal infinities,
    # where 0 gives hi + log 2 = hi. NaN inputs still fail Equal and propagate.
    diff = ctx.make("Where", [ctx.make("Equal", [hi, lo]), ctx.const(0, dtype), ctx.make("Sub", [lo, hi])])
    return [ctx.make("Add", [hi, ctx.make("Softplus", [diff])])]


# ----------------------------------------------------------------------------
# comparisons and selection
# ----------------------------------------------------------------------------


def _compare(ctx: ConvertContext, node: Node, op: str) -> list[str]:
    a, b = _inputs(ctx, node)
    if _dtype(ctx, node) == "bool":
        # ORT orders no bools; False < True as uint8.
        a, b = ctx.cast(a, "uint8"), ctx.cast(b, "uint8")
    return [ctx.make(op, [a, b])]


@onnx_op("NotEqual")
def convert_not_equal(ctx: ConvertContext, node: Node) -> list[str]:
    """NotEqual(a, b) -> ONNX Not(Equal)."""
    return [ctx.make("Not", [ctx.make("Equal", _inputs(ctx, node))])]


# Twin wrappers by design (STYLE.md §2, one function per primitive); the work is in _compare.
@onnx_op("Less")
def convert_less(ctx: ConvertContext, node: Node) -> list[str]:
    """Less(a, b) -> ONNX Less."""
    return _compare(ctx, node, "Less")


@onnx_op("LessEqual")
def convert_less_equal(ctx: ConvertContext, node: Node) -> list[str]:
    """LessEqual(a, b) -> ONNX LessOrEqual."""
    return _compare(ctx, node, "LessOrEqual")


@onnx_op("Greater")
def convert_greater(ctx: ConvertContext, node: Node) -> list[str]:
    """Greater(a, b) -> ONNX Greater."""
    return _compare(ctx, node, "Greater")


@onnx_op("GreaterEqual")
def convert_greater_equal(ctx: ConvertContext, node: Node) -> list[str]:
    """GreaterEqual(a, b) -> ONNX GreaterOrEqual."""
    return _compare(ctx, node, "GreaterOrEqual")


@onnx_op("Select")
def convert_select(ctx: ConvertContext, node: Node) -> list[str]:
    """Select(cond, a, b) -> ONNX Where."""
    cond, a, b = _inputs(ctx, node)
    return [_where(ctx, cond, a, b, ctx.out_info(node).dtype)]


# ----------------------------------------------------------------------------
# bitwise
# ----------------------------------------------------------------------------

def _bitwise(ctx: ConvertContext, node: Node, native: bool) -> list[str]:
    a, b = _inputs(ctx, node)
    dtype = _dtype(ctx, node)
    kind = bitwise_args(node, dtype)
    if kind < 3:
        name = BITWISE_OPS[kind]
        if dtype == "bool":
            return [ctx.make(name, [a, b])]
        if native:
            return [ctx.make("Bitwise" + name, [a, b])]
        return [_bitwise_by_bits(ctx, a, b, dtype, kind)]
    return [_shift(ctx, a, b, dtype, left=kind == 3)]


def _bitwise_by_bits(ctx: ConvertContext, a: str, b: str, dtype: str, kind: int) -> str:
    """And/Or/Xor of integers before opset 18: split into a trailing bit axis, combine, sum back."""
    width = np.dtype(dtype).itemsize * 8
    shifts = ctx.const(np.arange(width, dtype=np.uint64))
    two = ctx.const(2, "uint64")
    last = ctx.const([-1], np.int64)

    def bits(x: str) -> str:
        # via the unsigned type of the same width: the two's-complement pattern, zero-extended
        wide = _cast(ctx, _cast(ctx, x, dtype, _SIGNED_TO_UNSIGNED.get(dtype, dtype)), "uint" + str(width), "uint64")
        wide = ctx.make("Unsqueeze", [wide, last])
        return ctx.make("Mod", [ctx.make("BitShift", [wide, shifts], direction="RIGHT"), two])

    ba, bb = bits(a), bits(b)
    if kind == 0:
        combined = ctx.make("Mul", [ba, bb])
    elif kind == 1:
        combined = ctx.make("Max", [ba, bb])
    else:
        combined = ctx.make("Mod", [ctx.make("Add", [ba, bb]), two])
    # Distinct powers of two never carry, so summing bit * 2**k rebuilds the value.
    # ORT's int64 ReduceSum goes through double: sum at most 32 bits at a time.
    weights = ctx.const(np.left_shift(np.int64(1), np.arange(width, dtype=np.int64) % 32))
    weighted = ctx.make("Mul", [ctx.cast(combined, "int64"), weights])
    if width <= 32:
        return ctx.cast(ctx.make("ReduceSum", [weighted, last], keepdims=0), dtype)
    halves = []
    for lo in (0, 32):
        half = ctx.make("Slice", [weighted, ctx.const([lo], np.int64), ctx.const([lo + 32], np.int64), last])
        halves.append(ctx.cast(ctx.make("ReduceSum", [half, last], keepdims=0), "uint64"))
    high = ctx.make("BitShift", [halves[1], ctx.const(32, "uint64")], direction="LEFT")
    return _cast(ctx, ctx.make("Add", [halves[0], high]), "uint64", dtype)


def _shift(ctx: ConvertContext, a: str, b: str, dtype: str, left: bool) -> str:
    """ONNX BitShift (unsigned only); signed types shift their bit pattern, arithmetic to the right."""
    direction = "LEFT" if left else "RIGHT"
    if _unsigned(dtype):
        return ctx.make("BitShift", [a, b], direction=direction)
    udtype = _SIGNED_TO_UNSIGNED[dtype]
    ub = ctx.cast(b, udtype)
    if left:
        # Shifting the two's-complement pattern and casting back wraps like MLX's <<.
        return ctx.cast(ctx.make("BitShift", [ctx.cast(a, udtype), ub], direction=direction), dtype)
    # Arithmetic shift: a negative a is ~(~a >> b), and ~a = -1 - a is non-negative.
    neg = ctx.make("Less", [a, ctx.const(0, dtype)])
    minus_one = ctx.const(-1, dtype)
    t = _where(ctx, neg, ctx.make("Sub", [minus_one, a]), a, dtype)
    r = ctx.cast(ctx.make("BitShift", [ctx.cast(t, udtype), ub], direction=direction), dtype)
    return _where(ctx, neg, ctx.make("Sub", [minus_one, r]), r, dtype)


# Opset twins by design (STYLE.md §2, `since=` variants); the work is in _bitwise.
@onnx_op("BitwiseBinary")
def convert_bitwise_binary(ctx: ConvertContext, node: Node) -> list[str]:
    """BitwiseBinary(a, b) [op] -> ONNX And/Or/Xor (bool), bit-split Mod/ReduceSum (ints), BitShift."""
    return _bitwise(ctx, node, native=False)


@onnx_op("BitwiseBinary", since=18)
def convert_bitwise_binary_18(ctx: ConvertContext, node: Node) -> list[str]:
    """BitwiseBinary(a, b) [op] -> ONNX BitwiseAnd/Or/Xor (And/Or/Xor for bool), BitShift."""
    return _bitwise(ctx, node, native=True)


@onnx_op("BitwiseInvert")
def convert_bitwise_invert(ctx: ConvertContext, node: Node) -> list[str]:
    """BitwiseInvert(x) -> ONNX Sub(-1 or the unsigned max, x) (Not for bool); no BitwiseNot needed."""
    x = ctx.input(node, 0)
    dtype = _dtype(ctx, node)
    if dtype == "bool":
        return [ctx.make("Not", [x])]
    check_integer_or_bool(node, dtype)
    ones = np.iinfo(dtype).max if _unsigned(dtype) else -1
    return [ctx.make("Sub", [ctx.const(ones, dtype), x])]


# ----------------------------------------------------------------------------
# unary
# ----------------------------------------------------------------------------


def _identity(ctx: ConvertContext, node: Node) -> list[str]:
    return [ctx.input(node, 0)]


@onnx_op("StopGradient", "Copy", "Contiguous")
def convert_identity(ctx: ConvertContext, node: Node) -> list[str]:
    """StopGradient/Copy/Contiguous(x) [Contiguous: allow_col_major] -> the input itself (no node)."""
    return _identity(ctx, node)


@onnx_op("Conjugate")
def convert_conjugate(ctx: ConvertContext, node: Node) -> list[str]:
    """Conjugate(x) -> the input itself for real dtypes (ONNX has no complex types)."""
    dtype = _dtype(ctx, node)
    if dtype.startswith("complex"):
        raise args_error(node, f"real inputs only (ONNX has no complex dtypes); got {dtype}")
    return _identity(ctx, node)


@onnx_op("Abs")
def convert_abs(ctx: ConvertContext, node: Node) -> list[str]:
    """Abs(x) -> ONNX Abs (bool: the input)."""
    return _identity(ctx, node) if _dtype(ctx, node) == "bool" else [ctx.make("Abs", [ctx.input(node, 0)])]


@onnx_op("Negative")
def convert_negative(ctx: ConvertContext, node: Node) -> list[str]:
    """Negative(x) -> ONNX Neg (Sub(0, x) for unsigned types: ORT has no unsigned Neg)."""
    x = ctx.input(node, 0)
    dtype = _dtype(ctx, node)
    if _unsigned(dtype):
        return [ctx.make("Sub", [ctx.const(0, dtype), x])]
    return [ctx.make("Neg", [x])]


@onnx_op("Sign")
def convert_sign(ctx: ConvertContext, node: Node) -> list[str]:
    """Sign(x) -> ONNX Sign; floats map NaN to 0 like MLX (Where(Equal(x, x))); bool: the input."""
    x = ctx.input(node, 0)
    dtype = _dtype(ctx, node)
    if dtype == "bool":
        return [x]
    out = ctx.make("Sign", [x])
    if dtype in FLOAT_DTYPES:
        # MLX computes (x > 0) - (x < 0), which is 0 for NaN; ONNX Sign keeps NaN.
        out = ctx.make("Where", [ctx.make("Equal", [x, x]), out, ctx.const(0, dtype)])
    return [out]


@onnx_op("Square")
def convert_square(ctx: ConvertContext, node: Node) -> list[str]:
    """Square(x) -> ONNX Mul(x, x) (bool: the input)."""
    x = ctx.input(node, 0)
    return [x] if _dtype(ctx, node) == "bool" else [ctx.make("Mul", [x, x])]


@onnx_op("Sqrt")
def convert_sqrt(ctx: ConvertContext, node: Node) -> list[str]:
    """Sqrt(x) [recip] -> ONNX Sqrt, or Reciprocal(Sqrt) when recip (rsqrt)."""
    out = ctx.make("Sqrt", [ctx.input(node, 0)])
    return [ctx.make("Reciprocal", [out])] if node.arguments and node.arguments[0] else [out]


def _rounding(ctx: ConvertContext, node: Node, op: str) -> list[str]:
    # Integer inputs are already whole: MLX returns them unchanged.
    if _dtype(ctx, node) not in FLOAT_DTYPES:
        return _identity(ctx, node)
    return [ctx.make(op, [ctx.input(node, 0)])]


# Twin wrappers by design (STYLE.md §2, one function per primitive); the work is in _rounding.
@onnx_op("Floor")
def convert_floor(ctx: ConvertContext, node: Node) -> list[str]:
    """Floor(x) -> ONNX Floor (integers: the input)."""
    return _rounding(ctx, node, "Floor")


@onnx_op("Ceil")
def convert_ceil(ctx: ConvertContext, node: Node) -> list[str]:
    """Ceil(x) -> ONNX Ceil (integers: the input)."""
    return _rounding(ctx, node, "Ceil")


@onnx_op("Round")
def convert_round(ctx: ConvertContext, node: Node) -> list[str]:
    """Round(x) -> ONNX Round (half to even, as MLX; integers: the input)."""
    return _rounding(ctx, node, "Round")


# mlx::core::Log::Base order (its state()): two, ten, e.
_LOG_BASES = {0: 2.0, 1: 10.0, 2: math.e}


@onnx_op("Log")
def convert_log(ctx: ConvertContext, node: Node) -> list[str]:
    """Log(x) [base] -> ONNX Log, times 1/ln(base) for base 2 and 10 (in float32 for half types)."""
    state = node.arguments[0] if node.arguments else None
    if state not in _LOG_BASES:
        raise args_error(node, f"base must be 2 (state 0), 10 (state 1) or e (state 2); got state {state}")
    x = ctx.input(node, 0)
    base = _LOG_BASES[state]
    if base == math.e:
        return [ctx.make("Log", [x])]

    def build(v: str, dtype: str) -> str:
        return ctx.make("Mul", [ctx.make("Log", [v]), ctx.const(1.0 / math.log(base), dtype)])

    return [_in_float32(ctx, _dtype(ctx, node), [x], build)]


@onnx_op("Expm1")
def convert_expm1(ctx: ConvertContext, node: Node) -> list[str]:
    """Expm1(x) -> ONNX Exp, Sub, Div, Log: Kahan's (u - 1) * x / log(u) for |x| < 1, else u - 1."""

    def build(x: str, dtype: str) -> str:
        # u - 1 alone loses every digit for tiny x; the ratio cancels the rounding
        # error of u = exp(x). u == 1 (x below half an ulp) returns x itself.
        u = ctx.make("Exp", [x])
        one = ctx.const(1, dtype)
        um1 = ctx.make("Sub", [u, one])
        kahan = ctx.make("Div", [ctx.make("Mul", [um1, x]), ctx.make("Log", [u])])
        small = ctx.make("Where", [ctx.make("Equal", [u, one]), x, kahan])
        return ctx.make("Where", [ctx.make("Less", [ctx.make("Abs", [x]), one]), small, um1])

    return [_in_float32(ctx, _dtype(ctx, node), [ctx.input(node, 0)], build)]


@onnx_op("Log1p")
def convert_log1p(ctx: ConvertContext, node: Node) -> list[str]:
    """Log1p(x) -> ONNX Add, Log, Div, Mul, Where: log(u) * x / (u - 1) with u = 1 + x, guarded."""

    def build(x: str, dtype: str) -> str:
        # The ratio x / (u - 1) undoes the rounding of u = 1 + x (Goldberg's log1p);
        # u == 1 returns x, and u == inf returns inf where x / (u - 1) is NaN.
        one = ctx.const(1, dtype)
        u = ctx.make("Add", [x, one])
        log_u = ctx.make("Log", [u])
        ratio = ctx.make("Mul", [log_u, ctx.make("Div", [x, ctx.make("Sub", [u, one])])])
        ratio = ctx.make("Where", [ctx.make("Equal", [u, ctx.const(np.inf, dtype)]), u, ratio])
        return ctx.make("Where", [ctx.make("Equal", [u, one]), x, ratio])

    return [_in_float32(ctx, _dtype(ctx, node), [ctx.input(node, 0)], build)]


@onnx_op("ArcTan2")
def convert_arctan2(ctx: ConvertContext, node: Node) -> list[str]:
    """ArcTan2(a, b) -> ONNX Atan of min(|a|,|b|)/max(|a|,|b|), octant fix-ups by Where."""

    def build(a: str, b: str, dtype: str) -> str:
        def c(v: float) -> str:
            return ctx.const(v, dtype)

        def signbit(v: str) -> str:
            # v < 0, or -0.0 (whose reciprocal is -inf), as std::atan2 distinguishes
            return ctx.make("Or", [ctx.make("Less", [v, c(0)]), ctx.make("Less", [ctx.make("Reciprocal", [v]), c(0)])])

        abs_a, abs_b = ctx.make("Abs", [a]), ctx.make("Abs", [b])
        hi = ctx.make("Max", [abs_a, abs_b])
        ratio = ctx.make("Div", [ctx.make("Min", [abs_a, abs_b]), hi])
        # |a| == |b| gives 1 (pi/4, also for two infinities), or 0 when both are 0.
        equal = ctx.make("Where", [ctx.make("Greater", [hi, c(0)]), c(1), c(0)])
        t = ctx.make("Atan", [ctx.make("Where", [ctx.make("Equal", [abs_a, abs_b]), equal, ratio])])
        t = ctx.make("Where", [ctx.make("Greater", [abs_a, abs_b]), ctx.make("Sub", [c(math.pi / 2), t]), t])
        t = ctx.make("Where", [signbit(b), ctx.make("Sub", [c(math.pi), t]), t])
        return ctx.make("Where", [signbit(a), ctx.make("Neg", [t]), t])

    return [_in_float32(ctx, _dtype(ctx, node), _inputs(ctx, node), build)]


# erfinv(y) / y as polynomials (Horner order), fitted for mlxport by weighted least
# squares against scipy's erfinv in the variables of Giles (2010): v = w - 2.5 for
# w = -log(1 - y^2) < 5, v = sqrt(w) - 3 beyond (up to float32's 1 - 2**-24).
# Relative error of the fits: 7e-9 and 2e-8, below float32 rounding.
_ERFINV_CENTRAL = (-8.94141383e-09, 2.32647999e-08, 4.68266961e-07, -3.46309298e-06, -4.97306974e-06,
                   0.000218345886, -0.00125272525, -0.00417738827, 0.24664028, 1.50140941)
_ERFINV_TAIL = (9.9117533e-05, -0.000292598794, -3.26509471e-05, 0.00146332779, -0.00361036765,
                0.00569557725, -0.00763437431, 0.00944424514, 1.00167477, 2.83297682)


@onnx_op("ErfInv")
def convert_erfinv(ctx: ConvertContext, node: Node) -> list[str]:
    """ErfInv(y) -> y * polynomial in -log((1-y)(1+y)) (two ranges, ONNX Log/Sqrt/Mul/Add/Where)."""

    def build(y: str, dtype: str) -> str:
        one = ctx.const(1, dtype)
        # (1 - y)(1 + y) keeps 1 - y exact near |y| = 1, where 1 - y*y would not.
        w = ctx.make("Mul", [ctx.make("Sub", [one, y]), ctx.make("Add", [one, y])])
        w = ctx.make("Neg", [ctx.make("Log", [w])])
        central = _horner(ctx, ctx.make("Sub", [w, ctx.const(2.5, dtype)]), _ERFINV_CENTRAL, dtype)
        tail = _horner(ctx, ctx.make("Sub", [ctx.make("Sqrt", [w]), ctx.const(3, dtype)]), _ERFINV_TAIL, dtype)
        p = ctx.make("Where", [ctx.make("Less", [w, ctx.const(5, dtype)]), central, tail])
        out = ctx.make("Mul", [y, p])
        # erfinv(+-1) = +-inf (the tail polynomial of w = inf is not); |y| > 1 is NaN via Log.
        edge = ctx.make("Equal", [ctx.make("Abs", [y]), one])
        return ctx.make("Where", [edge, ctx.make("Mul", [y, ctx.const(np.inf, dtype)]), out])

    return [_in_float32(ctx, _dtype(ctx, node), [ctx.input(node, 0)], build)]
