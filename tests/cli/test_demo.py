"""``mlxport demo`` end to end (trains for a few seconds), and its error without scikit-learn."""

from __future__ import annotations

import re
from pathlib import Path

from .test_cli import mlxport


def test_demo(tmp_path: Path) -> None:
    res = mlxport("demo", "-o", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    mlx_acc = re.search(r"MLX:\s+([\d.]+)%", res.stdout)
    ort_acc = re.search(r"ONNX Runtime:\s+([\d.]+)%", res.stdout)
    assert mlx_acc and ort_acc, res.stdout
    assert mlx_acc.group(1) == ort_acc.group(1)
    assert float(mlx_acc.group(1)) > 90.0
    assert "dynamic axes: x[0]=batch" in res.stdout and "-[x]" not in res.stdout
    assert re.search(r"ONNX Runtime\s+\d.* (us|ms)\s+\d.* (us|ms)", res.stdout)  # the timing table
    for name in ("mlp.onnx", "mlp.onnx.mlxport.json", "mlp.mlxfn", "mlp.mlxfn.mlxport.json"):
        assert (tmp_path / "out" / name).exists()
    assert "training the MLP" in res.stderr


def test_demo_without_scikit_learn(tmp_path: Path) -> None:
    fake = tmp_path / "fake" / "sklearn"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'sklearn'\", name='sklearn')\n")
    res = mlxport("demo", "-o", "out", cwd=tmp_path, env={"PYTHONPATH": f"{fake.parent}"})
    assert res.returncode == 1
    assert "needs scikit-learn" in res.stderr and 'pip install "mlxport[demo]"' in res.stderr
