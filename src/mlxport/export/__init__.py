"""Export targets: one module per format (onnx.py; more formats join here)."""
