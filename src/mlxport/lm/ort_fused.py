"""Check the graph rewritten for ONNX Runtime's fused kernels (``mlxport.rewrite.ort_fused``) against MLX."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import ValidationError
from ..rewrite.ort_fused import HINT

if TYPE_CHECKING:
    from .step import LMSpec


def check_fused(path: str | Path, step: Callable[..., Any], spec: LMSpec, *, rtol: float | None,
                atol: float | None) -> list[Any]:
    """Compare the fused graph with the MLX step at the sizes export_lm validates (batch 1: 4 tokens after 3;
    batch 3: 8 tokens after 6), plus a prefill from an empty past. Returns the ValidationRuns; raises
    ValidationError when an output is outside the tolerance."""
    import mlx.core as mx

    from ..runners import OnnxRunner
    from ..validate import ValidationRun, compare
    from .step import example_inputs

    runner = OnnxRunner(path)
    runs = []
    for batch, seq, past in ((1, 4, 3), (3, 8, 6), (1, 5, 0)):
        mx.random.seed(batch * 100 + seq)
        example = example_inputs(spec, batch=batch, seq=seq, past=past)
        want = step(*example)
        mx.eval(want)
        feed = [np.array(a.astype(mx.float32)) if a.dtype == mx.bfloat16 else np.array(a) for a in example]
        got = runner(*feed)
        checks = [compare(name, np.array(want[name].astype(mx.float32)), np.asarray(g, np.float32), rtol, atol)
                  for name, g in zip(spec.output_names(), got)]
        runs.append(ValidationRun(f"fused graph, batch {batch}, {seq} tokens after {past}", checks))
    bad = [o for r in runs for o in r.outputs if not o.ok]
    if bad:
        raise ValidationError("the graph rewritten for ONNX Runtime's fused kernels differs from MLX: "
                              + "; ".join(o.line() for o in bad[:4]), hint=HINT)
    return runs
