"""Typed parsers of MLX primitives' arguments, shared by every target.

A node's ``arguments`` are its primitive's ``state()`` (mlx/primitives.h). Each
parser here decodes one layout, checks it against what the targets can lower and
raises the one wording of each argument error: an UnsupportedArgumentError with
the ``[Primitive]`` prefix that says what is allowed and what was given.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from ..dtypes import FLOAT_DTYPES
from ..errors import UnsupportedArgumentError
from ..graph import Node, SymExpr, TensorInfo


# mlx::core::QuantizationMode order, and the affine bit widths MLX packs.
QUANT_MODES = {0: "affine", 1: "mxfp4", 2: "mxfp8", 3: "nvfp4"}
AFFINE_BITS = (1, 2, 3, 4, 5, 6, 8)

# mlx::core::Scan::ReduceType order.
SCAN_KINDS = ("Max", "Min", "Sum", "Prod", "LogAddExp")
# The enums other primitives' state() holds, in MLX's order.
REDUCE_KINDS = ("And", "Or", "Sum", "Prod", "Min", "Max")  # Reduce::ReduceType
SCATTER_KINDS = ("Max", "Min", "Sum", "Prod", "None")  # Scatter::ReduceType (Scatter, SliceUpdate)
SCATTER_AXIS_KINDS = ("Sum", "None")  # ScatterAxis::ReduceType
ARG_REDUCE_KINDS = ("ArgMin", "ArgMax")  # ArgReduce::ReduceType
BITWISE_OPS = ("And", "Or", "Xor", "LeftShift", "RightShift")  # BitwiseBinary::Op


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


def choice_arg(node: Node, value: Any, names: Sequence[str], what: str = "reduce type") -> int:
    """An enum argument (an int indexing ``names``, MLX's order), checked."""
    if not isinstance(value, int) or isinstance(value, SymExpr) or not 0 <= value < len(names):
        allowed = (f"0 ({names[0]}) or 1 ({names[1]})" if len(names) == 2
                   else f"0..{len(names) - 1} ({', '.join(names)})")
        raise args_error(node, f"{what} must be {allowed}; got {value}")
    return value


def check_integer_or_bool(node: Node, dtype: str) -> None:
    """Bitwise primitives take integer or bool inputs."""
    if dtype in FLOAT_DTYPES or dtype.startswith("complex"):
        raise args_error(node, f"takes integer or bool inputs; got {dtype}")


def bitwise_args(node: Node, dtype: str) -> int:
    """The op (index into BITWISE_OPS) of a BitwiseBinary node, checked against the inputs' dtype."""
    kind = choice_arg(node, node.arguments[0] if node.arguments else None, BITWISE_OPS, "op")
    if dtype in FLOAT_DTYPES or dtype.startswith("complex") or (dtype == "bool" and kind > 2):
        raise args_error(node, f"{BITWISE_OPS[kind]} takes integer{' or bool' if kind < 3 else ''} inputs; got {dtype}")
    return kind


def check_conv_padding(node: Node, pad_lo: Sequence[int], pad_hi: Sequence[int]) -> None:
    """Convolution padding must be non-negative."""
    if min([*pad_lo, *pad_hi]) < 0:
        raise args_error(node, "padding must be non-negative (MLX slices negative padding away); "
                               f"got {list(pad_lo)}, {list(pad_hi)}")


def rope_dims(node: Node) -> int:
    """The rotated dims of a RoPE node: a static even number."""
    dims = node.arguments[0]
    if isinstance(dims, SymExpr) or int(dims) % 2:
        raise args_error(node, f"dims must be a static even number; got {dims}")
    return int(dims)


def sdpa_args(node: Node, q: TensorInfo, k: TensorInfo) -> tuple[float, bool, bool]:
    """(scale, causal, has_sinks) of a ScaledDotProductAttention node with inputs q, k ([B, N, L, D])."""
    scale, causal, sinks, logsumexp = node.arguments[:4]
    if logsumexp:
        raise args_error(node, "output_logsumexp is only produced while tracing gradients; "
                               "export the inference function (outside mx.grad/value_and_grad); got True")
    # A single query (a decode step) sees every key under MLX's bottom-right causal mask.
    return float(scale), bool(causal) and q.shape[2] != 1, bool(sinks)


def check_static_heads(node: Node, heads: Any, kv_heads: Any) -> None:
    """Attention's head counts must be static (grouped heads are reshaped by their ratio)."""
    if isinstance(heads, SymExpr) or isinstance(kv_heads, SymExpr):
        raise args_error(node, f"head counts must be static; got {heads} and {kv_heads}")


def attention_shape(node: Node, q: TensorInfo, k: TensorInfo) -> tuple[Any, int, int, Any, Any, Any, int]:
    """(batch, heads, kv_heads, q_len, k_len, head_dim, rep) of an attention node with q, k as [B, N, L, D];
    ``rep`` query heads share one key/value head. The head counts must be static."""
    batch, heads, q_len, head_dim = q.shape
    kv_heads, k_len = k.shape[1], k.shape[2]
    check_static_heads(node, heads, kv_heads)
    return batch, int(heads), int(kv_heads), q_len, k_len, head_dim, int(heads) // int(kv_heads)


def block_masked_inputs(node: Node) -> int:
    """How many inputs a BlockMaskedMM node has (a, b and 1 or 3 masks)."""
    count = len(node.inputs)
    if count not in (3, 4, 5):
        raise args_error(node, f"expects 3, 4 or 5 inputs (a, b and masks); got {count}")
    return count


def quantize_args(node: Node) -> tuple[int, int, str, bool]:
    """(group_size, bits, mode name, dequantize) of a Quantize node; quantizing at run time is affine only."""
    group, bits, mode = quant_args(node)
    dequantize = bool(node.arguments[-1])
    if not dequantize and mode != "affine":
        raise args_error(node, f"quantizing at run time is supported for affine mode; got {mode}")
    return group, bits, mode, dequantize


def check_inverted_count(node: Node, dtype: str) -> None:
    """NumberOfElements computes 1/count only in a float dtype."""
    if dtype not in FLOAT_DTYPES:
        raise args_error(node, f"an inverted count needs a float dtype; got {dtype}")


def static_last_axis(node: Node, info: TensorInfo) -> int:
    """The size of the last axis, which a transform (Hadamard) needs static."""
    n = info.shape[-1]
    if isinstance(n, SymExpr):
        raise args_error(node, f"the transformed (last) axis must have a static size; got {n}")
    return int(n)


def check_sorted_sequence(node: Node, info: TensorInfo) -> None:
    """SearchSorted's sorted input is 1-D."""
    if info.rank != 1:
        raise args_error(node, f"the sorted sequence must be 1-D; got {info.describe()}")


def check_batch_axis(node: Node, info: TensorInfo) -> None:
    """MaskedScatter's x has a leading batch axis."""
    if info.rank < 1:
        raise args_error(node, f"x must have a leading batch axis; got {info.describe()}")


def check_scatter_window(node: Node, info: TensorInfo, window: Sequence[Any], axes: Sequence[int]) -> None:
    """Scatter's update slices are 1 on the indexed axes and the full input elsewhere."""
    for d in range(info.rank):
        if window[d] != (1 if d in axes else info.shape[d]):
            raise args_error(node, f"update slices must be 1 on indexed axes and full elsewhere; got {tuple(window)} "
                                   f"for axes {axes} of {info.describe()}")
