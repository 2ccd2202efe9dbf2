"""Elementwise primitives as torch functions (MLX and torch share numpy's broadcasting)."""

from __future__ import annotations
import torch

from ...dtypes import torch_dtype
from ...graph import Node
from ..args import args_error, bitwise_args, check_integer_or_bool
from .context import TorchContext, torch_op

# Argument-free 1:1 mappings, registered one function per primitive below.
_DIRECT = {
    "Add": torch.add, "Subtract": torch.sub, "Multiply": torch.mul, "Maximum": torch.maximum,
    "Minimum": torch.minimum, "Power": torch.pow, "Equal": torch.eq, "NotEqual": torch.ne, "Less": torch.lt,
    "LessEqual": torch.le, "Greater": torch.gt, "GreaterEqual": torch.ge, "LogicalNot": torch.logical_not,
    "LogicalAnd": torch.logical_and, "LogicalOr": torch.logical_or, "Abs": torch.abs, "Negative": torch.neg,
    "Exp": torch.exp, "Expm1": torch.expm1, "Log1p": torch.log1p, "Sin": torch.sin, "Cos": torch.cos,
    "Tan": torch.tan, "ArcSin": torch.asin, "ArcCos": torch.acos, "ArcTan": torch.atan, "ArcTan2": torch.atan2,
    "Sinh": torch.sinh, "Cosh": torch.cosh, "Tanh": torch.tanh, "ArcSinh": torch.asinh, "ArcCosh": torch.acosh,
    "ArcTanh": torch.atanh, "Sigmoid": torch.sigmoid, "Erf": torch.erf, "ErfInv": torch.erfinv,
    "Floor": torch.floor, "Ceil": torch.ceil, "Round": torch.round, "Sign": torch.sign, "Select": torch.where,
    "LogAddExp": torch.logaddexp, "Remainder": torch.remainder, "FloorDivide": torch.floor_divide,
}
del _DIRECT["Power"]


# torch's CPU kernels lack most arithmetic on these: compute in int64 and cast back.
_WIDEN = {"uint16", "uint32", "uint64"}
_BOOL_SAFE = {"Equal", "NotEqual", "LogicalNot", "LogicalAnd", "LogicalOr", "Select", "Maximum", "Minimum",
              "Less", "LessEqual", "Greater", "GreaterEqual", "Add", "Multiply"}


def _direct(primitive: str, fn: object) -> None:
    def convert(ctx: TorchContext, node: Node) -> list:
        args = [ctx.input(node, i) for i in range(len(node.inputs))]
        dtypes = [ctx.in_info(node, i).dtype for i in range(len(node.inputs))]
        if primitive == "FloorDivide" and ctx.out_info(node).dtype.startswith(("float", "bfloat")):
            # MLX floors the quotient; torch.floor_divide differs on infinities and zeros.
            return [ctx.call(torch.floor, ctx.call(torch.div, *args))]
        widen = [i for i, d in enumerate(dtypes) if d in _WIDEN or (d == "bool" and primitive not in _BOOL_SAFE)]
        if primitive == "Select":
            widen = [i for i in widen if i > 0]
        if not widen:
            return [ctx.call(fn, *args)]
        for i in widen:
            args[i] = ctx.method("to", args[i], torch.int64)
        out = ctx.call(fn, *args)
        return [ctx.method("to", out, torch_dtype(ctx.out_info(node).dtype))]

    convert.__doc__ = f"{primitive}(x...) -> torch.{getattr(fn, '__name__', fn)}."
    convert.__name__ = f"convert_{primitive.lower()}"
    convert.__module__ = __name__
    torch_op(primitive)(convert)


for _name, _fn in _DIRECT.items():
    _direct(_name, _fn)


@torch_op("Power")
def convert_power(ctx: TorchContext, node: Node) -> list:
    """Power(a, b) -> torch.pow; integer powers with a negative exponent are 0, as in MLX."""
    a, b = ctx.input(node, 0), ctx.input(node, 1)
    dtype = ctx.out_info(node).dtype
    if dtype == "bool":
        return [ctx.call(torch.logical_or, a, ctx.call(torch.logical_not, b))]
    if not dtype.startswith(("int", "uint")):
        return [ctx.call(torch.pow, a, b)]
    wide_a, wide_b = ctx.method("to", a, torch.int64), ctx.method("to", b, torch.int64)
    powered = ctx.call(torch.pow, wide_a, ctx.call(torch.clamp, wide_b, min=0))
    zero = ctx.call(torch.zeros_like, powered)
    out = ctx.call(torch.where, ctx.call(torch.lt, wide_b, 0), zero, powered)
    return [ctx.method("to", out, torch_dtype(dtype))]


@torch_op("Divide")
def convert_divide(ctx: TorchContext, node: Node) -> list:
    """Divide(a, b) -> torch.div (integers truncate toward zero, as MLX's C++ does)."""
    a, b = ctx.input(node, 0), ctx.input(node, 1)
    if ctx.out_info(node).dtype.startswith(("int", "uint")):
        return [ctx.call(torch.div, a, b, rounding_mode="trunc")]
    return [ctx.call(torch.div, a, b)]


@torch_op("Square")
def convert_square(ctx: TorchContext, node: Node) -> list:
    """Square(x) -> torch.mul(x, x)."""
    x = ctx.input(node, 0)
    return [ctx.call(torch.mul, x, x)]


@torch_op("Sqrt")
def convert_sqrt(ctx: TorchContext, node: Node) -> list:
    """Sqrt(x) [recip] -> torch.sqrt, or torch.rsqrt when recip."""
    return [ctx.call(torch.rsqrt if node.arguments and node.arguments[0] else torch.sqrt, ctx.input(node, 0))]


@torch_op("Log")
def convert_log(ctx: TorchContext, node: Node) -> list:
    """Log(x) [base: 0 two, 1 ten, 2 e (mlx::core::Log::Base)] -> torch.log2 / log10 / log."""
    base = node.arguments[0] if node.arguments else 2
    fns = {0: torch.log2, 1: torch.log10, 2: torch.log}
    if base not in fns:
        raise args_error(node, f"base must be 2 (state 0), 10 (state 1) or e (state 2); got state {base}")
    return [ctx.call(fns[base], ctx.input(node, 0))]


@torch_op("StopGradient", "Copy", "Contiguous")
def convert_identity(ctx: TorchContext, node: Node) -> list:
    """StopGradient/Copy/Contiguous(x) -> the input itself."""
    return [ctx.input(node, 0)]


@torch_op("DivMod")
def convert_divmod(ctx: TorchContext, node: Node) -> list:
    """DivMod(a, b) -> (FloorDivide, Remainder) as torch.floor/div and torch.remainder (floor_divide for ints)."""
    a, b = ctx.input(node, 0), ctx.input(node, 1)
    dtype = ctx.out_info(node).dtype
    if dtype == "bool":
        # a // True == a and a % True == False; divisions by False are undefined in MLX.
        return [ctx.call(torch.logical_and, a, b), ctx.call(torch.logical_and, a, ctx.call(torch.logical_not, b))]
    if dtype.startswith(("float", "bfloat")):
        # MLX floors the quotient; torch.floor_divide differs on infinities and zeros.
        return [ctx.call(torch.floor, ctx.call(torch.div, a, b)), ctx.call(torch.remainder, a, b)]
    if dtype in _WIDEN:
        a, b = ctx.method("to", a, torch.int64), ctx.method("to", b, torch.int64)
    quotient, remainder = ctx.call(torch.floor_divide, a, b), ctx.call(torch.remainder, a, b)
    if dtype in _WIDEN:
        quotient, remainder = (ctx.method("to", v, torch_dtype(dtype)) for v in (quotient, remainder))
    return [quotient, remainder]


# In args.BITWISE_OPS order (MLX's BitwiseBinary::Op).
_BITWISE_FNS = (torch.bitwise_and, torch.bitwise_or, torch.bitwise_xor, torch.bitwise_left_shift,
                torch.bitwise_right_shift)


@torch_op("BitwiseBinary")
def convert_bitwise_binary(ctx: TorchContext, node: Node) -> list:
    """BitwiseBinary(a, b) [op] -> torch.bitwise_and/or/xor/left_shift/right_shift."""
    dtype = ctx.out_info(node).dtype
    kind = bitwise_args(node, dtype)
    a, b = ctx.input(node, 0), ctx.input(node, 1)
    if kind < 3 or dtype not in _WIDEN:
        return [ctx.call(_BITWISE_FNS[kind], a, b)]
    # torch has no unsigned shift kernels: shift the zero-extended (uint16/32) or same-bits
    # (uint64) int64 and truncate back.
    a, b = ctx.method("to", a, torch.int64), ctx.method("to", b, torch.int64)
    out = ctx.call(_BITWISE_FNS[kind], a, b)
    if kind == 4 and dtype == "uint64":
        # int64's >> copies the top bit: clear the b high bits it filled (b < 64; none when b == 0).
        high = ctx.call(torch.bitwise_left_shift, ctx.call(torch.full_like, b, -1), ctx.call(torch.sub, 64, b))
        filled = ctx.call(torch.where, ctx.call(torch.eq, b, 0), ctx.call(torch.zeros_like, high), high)
        out = ctx.call(torch.bitwise_and, out, ctx.call(torch.bitwise_not, filled))
    return [ctx.method("to", out, torch_dtype(dtype))]


@torch_op("BitwiseInvert")
def convert_bitwise_invert(ctx: TorchContext, node: Node) -> list:
    """BitwiseInvert(x) -> torch.bitwise_not (logical not for bool; unsigned via int64 and back)."""
    x = ctx.input(node, 0)
    dtype = ctx.out_info(node).dtype
    check_integer_or_bool(node, dtype)
    if dtype not in _WIDEN:
        return [ctx.call(torch.bitwise_not, x)]
    return [ctx.method("to", ctx.call(torch.bitwise_not, ctx.method("to", x, torch.int64)), torch_dtype(dtype))]


@torch_op("Conjugate")
def convert_conjugate(ctx: TorchContext, node: Node) -> list:
    """Conjugate(x) -> the input itself for real dtypes, torch.conj_physical for complex ones."""
    if ctx.out_info(node).dtype.startswith("complex"):
        return [ctx.call(torch.conj_physical, ctx.input(node, 0))]
    return [ctx.input(node, 0)]
