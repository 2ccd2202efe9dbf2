"""The TFLite/LiteRT target: onnx2tf conversion, quantized variants, the LiteRT runner."""

from __future__ import annotations

import importlib.util

import pytest

# What the conversion tests need; test extra + `pip install --no-deps tf-keras==2.21.0 onnx2tf==1.29.24`.
_STACK = ("tensorflow", "tf_keras", "onnx2tf", "ai_edge_litert", "onnx_graphsurgeon", "sng4onnx", "sne4onnx")
MISSING = [m for m in _STACK if importlib.util.find_spec(m) is None]
requires_stack = pytest.mark.skipif(
    bool(MISSING), reason=f"the TFLite stack is missing {', '.join(MISSING)}: pip install 'mlxport[tflite]' && "
                          "pip install --no-deps tf-keras==2.21.0 onnx2tf==1.29.24")
