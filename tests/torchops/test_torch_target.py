"""The torch target: the ONNX parity table run through the torch lowering, and .pt/.pt2 files end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch target needs PyTorch: pip install 'mlxport[torch]'")

import mlxport  # noqa: E402
from mlxport.errors import UnsupportedPrimitiveError  # noqa: E402
from mlxport.targets.torch.context import TORCH  # noqa: E402
from tests.models import zoo  # noqa: E402
from tests.ops.cases import all_cases, run_case_torch  # noqa: E402

TORCH_CASES = [c for c in all_cases() if c.primitive in TORCH]

# Known torch-only failures, each with its reason: {(primitive, case id, dtype): reason} (strict xfail).
TORCH_XFAIL: dict[tuple[str, str, str], str] = {}


def _params() -> list:
    out = []
    for case in TORCH_CASES:
        for si, shapes in enumerate(case.shapes):
            for dtype in case.dtypes:
                if dtype in case.xfail:
                    continue
                shape_id = "x".join("_".join(map(str, s)) or "scalar" for s in shapes) or "none"
                reason = TORCH_XFAIL.get((case.primitive, case.id, dtype))
                marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
                out.append(pytest.param(case, si, dtype, id=f"{case.primitive}-{case.id or 'base'}-{shape_id}-{dtype}",
                                        marks=marks))
    return out


@pytest.mark.parametrize("case,shape_index,dtype", _params())
def test_parity(case, shape_index: int, dtype: str) -> None:
    run_case_torch(case, shape_index, dtype)


@pytest.fixture
def mlp() -> nn.Module:
    return zoo.build("mlp")


@pytest.mark.parametrize("suffix,backend", [(".pt", "torchscript"), (".pt2", "torch.export")])
def test_mlp_round_trip_with_dynamic_batch(tmp_path: Path, mlp: nn.Module, suffix: str, backend: str) -> None:
    path = tmp_path / f"mlp{suffix}"
    report = mlxport.export(mlp, (mx.random.normal((1, 784)),), path, dynamic_axes={"x": {0: "batch"}})
    assert report.ok and len(report.runs) == 2
    runner = mlxport.load(path)
    assert runner.backend == backend and [i.name for i in runner.inputs] == ["x"]
    x = np.random.default_rng(1).standard_normal((7, 784)).astype(np.float32)
    np.testing.assert_allclose(runner(x)[0], np.array(mlp(mx.array(x))), rtol=1e-5, atol=1e-5)


def test_torchscript_loads_without_mlxport(tmp_path: Path, mlp: nn.Module) -> None:
    """A .pt file is plain TorchScript: torch.jit.load in a process that never imports mlxport."""
    path = tmp_path / "mlp.pt"
    mlxport.export(mlp, (mx.zeros((1, 784)),), path, dynamic_axes={"x": {0: "batch"}})
    x = np.random.default_rng(2).standard_normal((3, 784)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys, numpy as np, torch\n"
        f"m = torch.jit.load({str(path)!r})\n"
        f"y = m(torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r})))[0]\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, y.detach().numpy())\n"
        "assert 'mlxport' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), np.array(mlp(mx.array(x))), rtol=1e-5, atol=1e-5)


def test_untranslated_primitive_is_listed(tmp_path: Path) -> None:
    def fn(x: mx.array) -> mx.array:
        return mx.fft.irfft(mx.fft.rfft(x))

    with pytest.raises(UnsupportedPrimitiveError, match=r"(?s)no torch translation yet.*FFT ×2.*Export to .onnx instead"):
        mlxport.export(fn, (mx.zeros((3, 8)),), tmp_path / "f.pt")
