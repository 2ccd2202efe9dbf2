"""``mlxport bench`` in a subprocess on a tiny exported .onnx and .pt (dynamic batch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import pytest

import mlxport
from mlxport.bench import bench, format_table

FAST = ("--runs", "5", "--seconds", "0.05", "--warmup", "1", "--batch", "8", "--threads", "1")


def mlxport_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLXPORT_DEBUG"}
    return subprocess.run([sys.executable, "-m", "mlxport", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bench")
    mx.random.seed(0)
    model = nn.Linear(8, 4)
    mx.eval(model.parameters())
    traced = mlxport.trace(model, (mx.zeros((2, 8)),), dynamic_axes={"x": {0: "batch"}})
    for name in ("m.onnx", "m.pt"):
        traced.save(folder / name)
    return folder


def test_bench_table_and_json(artifacts: Path) -> None:
    res = mlxport_cli("bench", "m.onnx", "m.pt", *FAST, "--json", "out.json", cwd=artifacts)
    assert res.returncode == 0, res.stderr
    rows = {line.split()[0]: line.split() for line in res.stdout.splitlines() if line.startswith("m.")}
    assert rows["m.onnx"][1] == "onnxruntime" and rows["m.pt"][1] == "torchscript"
    for row in rows.values():
        # size, unit, p50, p99, runs, samples/s @batch, peak RSS
        assert float(row[4]) > 0 and float(row[5]) >= float(row[4]) and int(row[6]) >= 3
        assert row[8] == "@8" and float(row[7].replace(",", "")) > 0

    results = json.loads((artifacts / "out.json").read_text())
    assert [r["backend"] for r in results] == ["onnxruntime", "torchscript"]
    for r in results:
        assert r["size_bytes"] > 0 and r["peak_rss_bytes"] > 0 and r["dynamic_batch"]
        assert r["single_shapes"] == [[1, 8]] and r["batch"] == 8 and r["throughput_sps"] > 0
        assert 3 <= r["latency_runs"] <= 5 and r["latency_p99_ms"] >= r["latency_p50_ms"] > 0


def test_bench_fixed_shape_has_no_throughput(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    mx.eval(model.parameters())
    mlxport.export(model, (mx.zeros((2, 3)),), tmp_path / "f.onnx")
    results = bench([tmp_path / "f.onnx"], runs=3, seconds=0.01, warmup=0)
    assert results[0]["single_shapes"] == [[2, 3]] and results[0]["throughput_sps"] is None
    assert "f.onnx" in format_table(results)


def test_bench_bad_inputs(artifacts: Path) -> None:
    res = mlxport_cli("bench", "m.onnx", "missing.onnx", *FAST, cwd=artifacts)
    assert res.returncode == 1 and "no such artifact: missing.onnx" in res.stderr
    assert "onnxruntime" not in res.stdout  # checked before any timing
    (artifacts / "model.engine").write_bytes(b"")
    res = mlxport_cli("bench", "model.engine", cwd=artifacts)
    assert res.returncode == 1 and "unknown suffix '.engine'" in res.stderr and ".tflite" in res.stderr
    res = mlxport_cli("bench", "m.onnx", "--runs", "0", cwd=artifacts)
    assert res.returncode == 2 and "--runs" in res.stderr
    res = mlxport_cli("bench", cwd=artifacts)
    assert res.returncode == 2 and "ARTIFACT" in res.stderr
