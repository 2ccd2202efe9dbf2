"""Language models: export an mlx-lm decoder with its KV cache, package it for ONNX Runtime GenAI, generate."""
