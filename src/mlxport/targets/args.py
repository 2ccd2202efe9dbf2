"""Typed parsers of MLX primitives' arguments, shared by every target.

A node's ``arguments`` are its primitive's ``state()`` (mlx/primitives.h). Each
parser here decodes one layout, checks it against what the targets can lower and
raises the one wording of each argument error: an UnsupportedArgumentError with
the ``[Primitive]`` prefix that says what is allowed and what was given.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..dtypes import FLOAT_DTYPES
from ..errors import UnsupportedArgumentError
from ..graph import Node, SymExpr, TensorInfo


# mlx::core::QuantizationMode order, and the affine bit widths MLX packs.
QUANT_MODES = {0: "affine", 1: "mxfp4", 2: "mxfp8", 3: "nvfp4"}
AFFINE_BITS = (1, 2, 3, 4, 5, 6, 8)

# mlx::core::Scan::ReduceType order.
SCAN_KINDS = ("Max", "Min", "Sum", "Prod", "LogAddExp")


def args_error(node: Node, message: str) -> UnsupportedArgumentError:
    """An UnsupportedArgumentError with the `[Primitive]` prefix."""
    return UnsupportedArgumentError(f"[{node.primitive}] {message}")


def static_ints(node: Node, values: Iterable[Any], what: str) -> list[int]:
    """Require a list of static ints (no dynamic dimension) in an argument."""
    out = []
    for v in values:
        if isinstance(v, SymExpr):
            raise args_error(node, f"{what} must not depend on a dynamic axis; got {v}")
        out.append(int(v))
    return out


def quant_args(node: Node) -> tuple[int, int, str]:
    """(group_size, bits, mode name) of a quantized primitive, checked against what MLX produces."""
    group, bits, mode = (int(v) for v in node.arguments[:3])
    if mode not in QUANT_MODES:
        raise args_error(node, f"mode must be one of {sorted(QUANT_MODES.values())}; got code {mode}")
    name = QUANT_MODES[mode]
    if name == "affine" and bits not in AFFINE_BITS:
        raise args_error(node, f"affine bits must be one of {AFFINE_BITS}; got {bits}")
    if name != "affine" and (bits, group) not in ((4, 32), (8, 32), (4, 16)):
        raise args_error(node, f"{name} takes bits/group_size 4/32, 8/32 or 4/16; got {bits}/{group}")
    return group, bits, name


def axis_arg(node: Node, value: Any, rank: int) -> int:
    """A static axis in [-rank, rank), normalized to [0, rank)."""
    if rank == 0:
        raise args_error(node, "input must have at least one axis; got a scalar")
    if isinstance(value, (SymExpr, bool)) or not isinstance(value, int) or not -rank <= value < rank:
        raise args_error(node, f"axis must be a static int in [{-rank}, {rank}); got {value}")
    return value % rank


def scan_args(node: Node, info: TensorInfo, out_dtype: str) -> tuple[str, int, bool, bool]:
    """(kind, axis, reverse, inclusive) of a Scan node."""
    kind_id, axis, reverse, inclusive = node.arguments[:4]
    if not 0 <= int(kind_id) < len(SCAN_KINDS):
        raise args_error(node, f"scan type must be 0..4 (Max, Min, Sum, Prod, LogAddExp); got {kind_id}")
    kind = SCAN_KINDS[int(kind_id)]
    if kind == "LogAddExp" and out_dtype not in FLOAT_DTYPES:
        raise args_error(node, f"logcumsumexp needs a floating-point input; got {info.dtype}")
    return kind, axis_arg(node, axis, info.rank), bool(reverse), bool(inclusive)


def gather_args(node: Node, info: TensorInfo) -> tuple[list[int], list[Any], list[int]]:
    """(indexed axes, slice sizes, non-indexed axes to trim) of a Gather node.

    MLX's Gather takes a slice of ``slice_sizes`` at each index; the slice is 1 on the
    indexed axes (as mx indexing makes it) and may be shorter than the input elsewhere.
    """
    rank = info.rank
    raw_axes = list(node.arguments[0])
    if any(isinstance(a, SymExpr) for a in raw_axes):
        raise args_error(node, f"axes must be static; got {raw_axes}")
    axes = [int(a) % rank for a in raw_axes]
    sizes = list(node.arguments[1])
    for a in axes:
        if sizes[a] != 1:
            raise args_error(node, f"slice sizes must be 1 on the indexed axes; got {sizes[a]} on axis {a}")
    trim = [a for a in range(rank) if a not in axes and sizes[a] != info.shape[a]]
    return axes, sizes, trim


def arange_args(node: Node, out: TensorInfo) -> tuple[Any, Any, Any, bool]:
    """(start, step, length, is_float) of an Arange node; the length is the output's (maybe dynamic) size."""
    start, _, step = node.arguments[:3]
    if isinstance(step, SymExpr):
        raise args_error(node, f"step must be static; got {step}")
    if out.dtype == "bool":
        raise args_error(node, "the output dtype must be numeric (MLX has no bool arange); got bool")
    is_float = out.dtype in FLOAT_DTYPES
    if not is_float and isinstance(start, SymExpr) and not float(step).is_integer():
        raise args_error(node, f"an integer arange with a dynamic start needs an integer step; got {step}")
    return start, step, out.shape[0], is_float
