"""mlxport: take an MLX model to production (ONNX, torch, LiteRT, Core ML and MLX formats, validated against MLX).

The package root is lazy (PEP 562): ``import mlxport`` loads no MLX, ONNX or torch, so ``mlxport --help``
and the pure modules (``mlxport.formats``, ``mlxport.artifact``, ``mlxport.serve.codec``) stay fast and work
without them. Each public name below is imported from its module the first time it is used.
"""

from __future__ import annotations

import importlib

# Not typing.TYPE_CHECKING: importing typing (and the re/enum modules it loads) would double the import time.
TYPE_CHECKING = False
__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY: dict[str, str] = {
    "Traced": "api", "export": "api", "trace": "api",
    "capture": "capture",
    "load": "runners",
    "Report": "validate",
    "export_lm": "lm.export",
    "GenerationConfig": "lm.generate", "LMRunner": "lm.generate",
    "ArtifactError": "errors", "CaptureError": "errors", "DynamicShapeError": "errors", "MlxportError": "errors",
    "ShapeMismatchError": "errors", "ToleranceError": "errors", "UnsupportedArgumentError": "errors",
    "UnsupportedPrimitiveError": "errors", "ValidationError": "errors",
}

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlxport' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .api import Traced, export, trace
    from .capture import capture
    from .errors import (ArtifactError, CaptureError, DynamicShapeError, MlxportError, ShapeMismatchError,
                         ToleranceError, UnsupportedArgumentError, UnsupportedPrimitiveError, ValidationError)
    from .lm.export import export_lm
    from .lm.generate import GenerationConfig, LMRunner
    from .runners import load
    from .validate import Report
