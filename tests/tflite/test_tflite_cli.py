"""``mlxport export -o x.tflite --quantize int8 --calibration c.npz`` and ``mlxport bench`` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mlxport

from . import requires_stack

pytestmark = [pytest.mark.slow, requires_stack]
REPO = Path(__file__).resolve().parents[2]


def mlxport_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLXPORT_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, "-m", "mlxport", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_export_int8_with_calibration_then_bench(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=rows)
    res = mlxport_cli("export", "tests.cli.models:build_model", "--input", "x:2x16", "--dynamic", "x:0=batch",
                      "-o", "m.tflite", "--quantize", "int8", "--calibration", "calib.npz", "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "TFLite export: m.tflite" in res.stdout and "quantize: int8" in res.stdout
    meta = json.loads((tmp_path / "m.tflite.mlxport.json").read_text())
    assert meta["format"] == "TFLite" and meta["tflite"]["quantize"] == "int8"
    assert meta["tflite"]["inputs"] == {"x": "x"} and meta["validation"]["ok"]
    assert "QUANTIZE" in meta["tflite"]["ops"] and "FULLY_CONNECTED" in meta["tflite"]["ops"]
    runner = mlxport.load(tmp_path / "m.tflite")
    assert runner.quantize == "int8" and runner.outputs[0].shape == ["batch", 4]
    assert runner(rows[:5])[0].shape == (5, 4)
    res = mlxport_cli("bench", "m.tflite", "--runs", "3", "--seconds", "0.01", "--warmup", "0", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "litert" in res.stdout and "m.tflite" in res.stdout
