"""The IR rewrites every target runs, in order: the one entry point the exporters call."""

from __future__ import annotations

import dataclasses
from typing import Callable

from ..graph import Graph
from .cleanup import (collapse_flattened_matmuls, compute_bfloat16_in_float32, dedupe_small_constants,
                      eliminate_common_subexpressions, elide_broadcasts, merge_reshapes)
from .fusion import fuse_attention, fuse_norms, fuse_rope


def run_default_passes(graph: Graph, *, bfloat16_as_float32: bool = True,
                       supports: Callable[[str], bool] = lambda _prim: True) -> Graph:
    """Apply the clean-up and fusion rewrites to a copy (the captured graph serves several targets).

    Args:
        graph: the captured graph; left untouched.
        bfloat16_as_float32: compute bfloat16 tensors in float32 (for runtimes without bfloat16 kernels).
        supports: tells whether the target can lower a fused primitive the passes may introduce
            (RMSNorm, LayerNorm, RoPE, ScaledDotProductAttention).

    Returns:
        The rewritten copy.
    """
    graph = dataclasses.replace(graph, nodes=[dataclasses.replace(n, inputs=list(n.inputs)) for n in graph.nodes],
                                constants=dict(graph.constants), tensors=dict(graph.tensors))
    if bfloat16_as_float32:
        graph = compute_bfloat16_in_float32(graph)
    dedupe_small_constants(graph)
    eliminate_common_subexpressions(graph)
    # Fusion patterns are written without Broadcast nodes: elide them first.
    elide_broadcasts(graph)
    collapse_flattened_matmuls(graph)
    merge_reshapes(graph)
    if supports("RMSNorm") and supports("LayerNorm"):
        fuse_norms(graph)
    if supports("RoPE"):
        fuse_rope(graph)
    if supports("ScaledDotProductAttention"):
        fuse_attention(graph)
    return graph
