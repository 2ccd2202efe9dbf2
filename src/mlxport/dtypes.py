"""Dtypes in one place: MLX dtype names and their numpy, ONNX and torch counterparts.

The IR names a dtype the way MLX and numpy do (``"float32"``, ``"bfloat16"``).
numpy has no bfloat16 of its own: ``ml_dtypes.bfloat16`` stands in for it, and
ONNX Runtime and torch exchange it as raw uint16 bits. This module imports only
numpy at load time; onnx, ml_dtypes and torch are imported when first needed.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from .errors import UnsupportedArgumentError

# Every dtype the IR uses (MLX's, less complex64, which no target has a translation for).
MLX_DTYPES = ("bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
              "float16", "bfloat16", "float32", "float64")
FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})

# onnxruntime's type strings (NodeArg.type) -> dtype name.
ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(bfloat16)": "bfloat16",
    "tensor(double)": "float64", "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32",
    "tensor(int64)": "int64", "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64", "tensor(bool)": "bool",
}

# onnx.TensorProto's enum member for each dtype name (looked up when onnx is first needed).
_ONNX_NAMES = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64", "float16": "FLOAT16",
    "bfloat16": "BFLOAT16", "float32": "FLOAT", "float64": "DOUBLE",
}


@lru_cache(maxsize=None)
def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype for a dtype name; bfloat16 (and ml_dtypes' float8 types) through ml_dtypes.

    Args:
        name: a numpy or ml_dtypes dtype name such as ``"float32"`` or ``"bfloat16"``.

    Returns:
        The numpy dtype.

    Raises:
        TypeError: when neither numpy nor ml_dtypes knows the name.
    """
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes  # registers bfloat16 & co. with numpy

        try:
            return np.dtype(getattr(ml_dtypes, name))
        except AttributeError:
            raise TypeError(f"dtype {name!r} is not a numpy or ml_dtypes type") from None


def onnx_dtype(name: str) -> int:
    """The ``onnx.TensorProto`` data type for a dtype name.

    Raises:
        UnsupportedArgumentError: for a dtype ONNX has no type for.
    """
    from onnx import TensorProto

    try:
        return int(getattr(TensorProto, _ONNX_NAMES[name]))
    except KeyError:
        raise UnsupportedArgumentError(
            f"dtype {name} has no ONNX equivalent; supported: {', '.join(_ONNX_NAMES)}") from None


def onnx_dtype_of(dtype: np.dtype) -> int:
    """The ``onnx.TensorProto`` data type of a numpy dtype (ml_dtypes' bfloat16 included)."""
    return onnx_dtype(np.dtype(dtype).name)


def numpy_dtype_of_onnx(onnx_type: int) -> np.dtype:
    """The numpy dtype of an ``onnx.TensorProto`` data type (bfloat16 as ml_dtypes.bfloat16)."""
    from onnx import TensorProto, helper

    if onnx_type == TensorProto.BFLOAT16:
        return numpy_dtype("bfloat16")
    return np.dtype(helper.tensor_dtype_to_np_dtype(onnx_type))


def torch_dtype(name: str) -> Any:
    """The ``torch.dtype`` for a dtype name (imports torch).

    Raises:
        UnsupportedArgumentError: for a dtype torch has no type for.
    """
    import torch

    if name not in MLX_DTYPES:
        raise UnsupportedArgumentError(
            f"dtype {name} has no torch equivalent; supported: {', '.join(MLX_DTYPES)}")
    return getattr(torch, name)


def to_tensor(value: np.ndarray) -> Any:
    """A torch tensor sharing nothing with MLX's buffers (bfloat16 through its bits)."""
    import torch

    arr = np.array(value, copy=True, order="C")  # keeps 0-d arrays 0-d (ascontiguousarray does not)
    if arr.dtype.name == "bfloat16":
        return torch.from_numpy(arr.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(arr)
