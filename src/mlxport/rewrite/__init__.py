"""Graph rewriting in one place.

IR passes (run on the captured graph before any target lowers it):

- ``view``: ``GraphView``, the producers/consumers index the passes match on, and ``remove_dead_nodes``.
- ``cleanup``: bfloat16 computed in float32, small-constant dedupe, CSE, Broadcast elision, reshape merging.
- ``fusion``: Linux-CPU decompositions of RMSNorm, LayerNorm, RoPE and SDPA folded back into fused primitives.
- ``pipeline``: ``run_default_passes``, the one entry point the exporters call.

ONNX passes (run on ONNX nodes, imported on use: they need ``onnx``):

- ``onnx_view``: ``OnnxView``/``ModelView``, the producers/consumers index, initializers and dead-code removal.
- ``onnx_optimize``: constant folding, transpose sinking, BatchNorm/bias folding into Conv, peepholes.
- ``ort_fused``: an exported LM rewritten for ONNX Runtime's contrib kernels (GroupQueryAttention,
  SkipSimplifiedLayerNormalization, merged sibling matmuls).
"""

from __future__ import annotations

from .pipeline import run_default_passes

__all__ = ["run_default_passes"]
