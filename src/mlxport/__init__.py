"""mlxport: take an MLX model to production (ONNX and MLX formats, validated against MLX)."""

from __future__ import annotations

# The package mlxport.export (the targets) is imported before the function of
# the same name is bound, so that importing a target later never rebinds
# mlxport.export to the package.
from . import export as _targets  # noqa: F401
from .api import export
from .capture import capture
from .errors import (
    ArtifactError,
    CaptureError,
    DynamicShapeError,
    MlxportError,
    ShapeMismatchError,
    ToleranceError,
    UnsupportedArgumentError,
    UnsupportedPrimitiveError,
    ValidationError,
)
from .runners import load
from .validate import Report

__version__ = "0.1.0"

__all__ = [
    "ArtifactError", "CaptureError", "DynamicShapeError", "MlxportError", "Report", "ShapeMismatchError",
    "ToleranceError", "UnsupportedArgumentError", "UnsupportedPrimitiveError", "ValidationError",
    "capture", "export", "load", "__version__",
]
