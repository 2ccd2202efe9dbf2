"""The ONNX target: its registry and context (context.py) and translations by family."""
