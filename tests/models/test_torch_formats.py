"""The model zoo through the torch target: TorchScript (.pt) and torch.export (.pt2), dynamic axes included.

Each zoo entry is traced once per module (``mlxport.trace`` in a module-scoped fixture) and saved to
both formats, so MLX's reference outputs and the capture are shared. The mlx-lm tiny configs follow
test_mlx_lm.py and test_quantized.py (same examples, probes, dynamic axes and tolerances).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import numpy as np
import pytest

pytest.importorskip("torch", reason="the .pt/.pt2 formats need PyTorch: pip install 'mlxport[torch]'")

import mlxport  # noqa: E402
from mlxport.validate import compare  # noqa: E402

from . import zoo  # noqa: E402

BATCH = {0: "batch"}
BATCH_SEQ = {0: "batch", 1: "seq"}
LM = {"inputs": BATCH_SEQ}
# MLX's float16 QuantizedMatmul rounds more than torch's dequantized matmul (see test_quantized.py).
HALF_QUANT_TOL = {"rtol": 2e-2, "atol": 3e-2}
SUFFIXES = (".pt", ".pt2")


@dataclass(frozen=True)
class ZooCase:
    """One model at one dtype: how to build it, its example, dynamic axes, probes and tolerances."""

    build: Callable[[], Any]
    example: Callable[[], tuple[mx.array, ...]]
    dynamic: dict
    probes: Callable[[], tuple[tuple[mx.array, ...], ...]] = lambda: ()
    tol: dict = field(default_factory=dict)
    slow: bool = True
    # Mixtral's expert sorting is a Python branch on the token count: traced at large sizes.
    size_branch: bool = False


def _lm_probes() -> tuple[tuple[mx.array, ...], ...]:
    # seq == 1 included: there mlx-lm takes its no-mask branch and must still agree.
    return ((zoo.tokens(3, 7, seed=1),), (zoo.tokens(1, 1, seed=2),))


def _cases() -> dict[str, ZooCase]:
    cases: dict[str, ZooCase] = {}
    for dtype in ("float32", "float16"):
        fast = dtype == "float32"
        cases[f"mlp-{dtype}"] = ZooCase(lambda d=dtype: zoo.build("mlp", d),
                                        lambda d=dtype: (zoo.floats((1, 784), d),), {"x": BATCH}, slow=not fast)
        cases[f"cnn-{dtype}"] = ZooCase(lambda d=dtype: zoo.build("cnn", d),
                                        lambda d=dtype: (zoo.floats((2, 16, 16, 3), d),), {"x": BATCH}, slow=not fast)
        cases[f"encoder-{dtype}"] = ZooCase(lambda d=dtype: zoo.build("encoder", d),
                                            lambda d=dtype: (zoo.floats((2, 8, 64), d),), {"x": BATCH_SEQ},
                                            slow=not fast)
        cases[f"llama_style-{dtype}"] = ZooCase(lambda d=dtype: zoo.build("llama_style", d),
                                                lambda: (zoo.tokens(2, 8),), {"tokens": BATCH_SEQ}, slow=not fast)
        cases[f"quantized_llama_4bit-{dtype}"] = ZooCase(
            lambda d=dtype: zoo.quantize(zoo.build("llama_style", d), 4), lambda: (zoo.tokens(2, 8),),
            {"tokens": BATCH_SEQ}, tol=HALF_QUANT_TOL if dtype == "float16" else {})
        # Every mlx-lm architecture of test_mlx_lm.py; both example batch sizes in float32, batch 2 in
        # float16 (its probes still run batch 1 and 3), which keeps the module's time down.
        for arch in ("llama", "qwen2", "gemma", "phi3", "gpt2"):
            for batch in (1, 2) if dtype == "float32" else (2,):
                cases[f"mlx_lm_{arch}-{dtype}-b{batch}"] = ZooCase(
                    lambda a=arch, d=dtype: zoo.mlx_lm_model(a, d), lambda b=batch: (zoo.tokens(b, 4),), LM,
                    probes=_lm_probes)
    # Mixtral: float32 only (MLX's CPU GatherMM refuses float16; test_mlx_lm.py xfails that). Batch is
    # fixed at 1 here, the size torch.export is most tempted to specialize; the next case varies it.
    cases["mlx_lm_mixtral_seq-float32-b1"] = ZooCase(
        lambda: zoo.mlx_lm_model("mixtral"), lambda: (zoo.tokens(1, 2),), {"inputs": {1: "seq"}},
        probes=lambda: ((zoo.tokens(1, 5, seed=1),),))
    # 4 x 24 tokens make 192 (token, expert) pairs: MLX's sorted branch, checked against the graph.
    cases["mlx_lm_mixtral-float32"] = ZooCase(lambda: zoo.mlx_lm_model("mixtral"), lambda: (zoo.tokens(1, 4),), LM,
                                              probes=lambda: ((zoo.tokens(4, 24, seed=2),),), size_branch=True)
    # Quantized like mlx_lm.convert (test_quantized.py): float16, 4 bits, and 8 bits for the dense
    # (QuantizedMatmul) and expert (GatherQMM) kinds.
    for arch in ("llama", "qwen2", "mixtral"):
        for bits in (4, 8) if arch != "qwen2" else (4,):
            cases[f"quantized_mlx_lm_{arch}_{bits}bit-float16"] = ZooCase(
                lambda a=arch, b=bits: zoo.quantize(zoo.mlx_lm_model(a, "float16"), b), lambda: (zoo.tokens(2, 2),),
                {"inputs": {1: "seq"}} if arch == "mixtral" else LM,
                probes=lambda: ((zoo.tokens(2, 5, seed=1),),), tol=HALF_QUANT_TOL)
    return cases


CASES = _cases()


def _params() -> list:
    out = []
    for name, case in CASES.items():
        model, _, rest = name.partition("-")
        for suffix in SUFFIXES:
            out.append(pytest.param(name, suffix, id=f"{model}-{suffix[1:]}-{rest}",
                                    marks=[pytest.mark.slow] if case.slow else []))
    return out


@pytest.fixture(scope="module")
def traced(request: pytest.FixtureRequest) -> tuple[ZooCase, Any, Any]:
    """(case, model, Traced): one capture per zoo entry, shared by the .pt and .pt2 tests."""
    case = CASES[request.param]
    mx.random.seed(zoo.SEED)
    model = case.build()
    return case, model, mlxport.trace(model, case.example(), dynamic_axes=case.dynamic)


@pytest.mark.parametrize("traced,suffix", _params(), indirect=["traced"])
def test_zoo_model(tmp_path: Path, traced: tuple[ZooCase, Any, Any], suffix: str) -> None:
    case, model, trace = traced
    path = tmp_path / f"model{suffix}"
    # Saved first, so that REPRO=1 (conftest.py) can keep a failing export with its inputs.
    np.savez(tmp_path / "inputs.npz", *trace.examples)
    report = trace.save(path, **case.tol)
    # The example, then random inputs at the dynamic axes' second sizes.
    assert report.validated and report.ok and len(report.runs) == 2, str(report)
    if case.size_branch:
        assert report.info.get("note", "").startswith("the traced graph changes below some size"), str(report)
    runner = mlxport.load(path)
    assert runner.backend == {".pt": "torchscript", ".pt2": "torch.export"}[suffix]
    for name, axes in case.dynamic.items():
        (spec,) = [i for i in runner.inputs if i.name == name]
        assert all(spec.shape[axis] == symbol for axis, symbol in axes.items()), spec
    for probe in case.probes():
        zoo.assert_matches_mlx(runner, model, probe, case.tol.get("rtol"), case.tol.get("atol"))


_LOADER = """
import sys
import numpy as np
import torch

for name in sys.argv[1:]:
    m = torch.jit.load(name + ".pt")
    feed = np.load(name + ".in.npz")
    with torch.no_grad():
        out = m(*[torch.from_numpy(feed[k]) for k in feed.files])
    np.savez(name + ".out.npz", *[o.numpy() for o in out])
assert "mlxport" not in sys.modules, "the TorchScript files pulled in mlxport"
"""


@pytest.mark.slow
def test_mlx_lm_torchscript_loads_without_mlxport(tmp_path: Path) -> None:
    """mlx-lm TorchScript files (dense, mixture of experts, 4-bit) run with plain torch.jit.load."""
    models = {
        "llama": (zoo.mlx_lm_model("llama"), LM, zoo.tokens(3, 7, seed=1)),
        "mixtral": (zoo.mlx_lm_model("mixtral"), {"inputs": {1: "seq"}}, zoo.tokens(2, 5, seed=1)),
        "qwen2_4bit": (zoo.quantize(zoo.mlx_lm_model("qwen2"), 4), LM, zoo.tokens(3, 6, seed=1)),
    }
    for name, (model, dynamic, probe) in models.items():
        report = mlxport.export(model, (zoo.tokens(2, 2),), tmp_path / f"{name}.pt", dynamic_axes=dynamic)
        assert report.ok, str(report)
        np.savez(tmp_path / f"{name}.in.npz", np.array(probe))
    # -I: isolated mode, so neither the working directory nor PYTHONPATH can supply mlxport's source tree.
    subprocess.run([sys.executable, "-I", "-c", _LOADER, *models], check=True, timeout=300, cwd=tmp_path)
    for name, (model, _, probe) in models.items():
        got = np.load(tmp_path / f"{name}.out.npz")["arr_0"]
        check = compare(name, zoo.run_mlx(model, (probe,))[0], got, None, None)
        assert check.ok, check.line()
