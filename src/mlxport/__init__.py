"""mlxport: take an MLX model to production (ONNX and MLX formats, validated against MLX)."""

from __future__ import annotations

from .api import Traced, export, trace
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
from .lm.export import export_lm
from .lm.generate import GenerationConfig, LMRunner
from .runners import load
from .validate import Report

__version__ = "0.1.0"

__all__ = [
    "ArtifactError", "CaptureError", "DynamicShapeError", "MlxportError", "Report", "ShapeMismatchError",
    "ToleranceError", "UnsupportedArgumentError", "UnsupportedPrimitiveError", "ValidationError",
    "GenerationConfig", "LMRunner", "Traced", "capture", "export", "export_lm", "load", "trace", "__version__",
]
