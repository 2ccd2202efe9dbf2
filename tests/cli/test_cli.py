"""The ``mlxport`` command end to end, in subprocesses, on the tiny models of tests/cli/models.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlxport.formats import suffix_list
from mlxport.exporters.onnx import DEFAULT_OPSET

REPO = Path(__file__).resolve().parents[2]
MODEL = "tests.cli.models:build_model"


def mlxport(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m mlxport ARGS`` with the repository on the path (for tests.cli.models)."""
    full = {k: v for k, v in os.environ.items() if k != "MLXPORT_DEBUG"}
    full["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [full.get("PYTHONPATH")] if p])
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "mlxport", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=300)


def test_help_lists_every_command(tmp_path: Path) -> None:
    res = mlxport("--help", cwd=tmp_path)
    assert res.returncode == 0
    for command in ("export", "validate", "inspect", "ops", "demo", "bench"):
        assert f"  {command}" in res.stdout
    assert mlxport(cwd=tmp_path).returncode == 2
    res = mlxport("exprot", cwd=tmp_path)
    assert res.returncode == 2 and "did you mean `mlxport export`" in res.stderr
    res = mlxport("export", "--help", cwd=tmp_path)
    assert res.returncode == 0 and "--dynamic NAME:AXIS=SYMBOL" in res.stdout


def test_export_validate_inspect_onnx(tmp_path: Path) -> None:
    res = mlxport("export", MODEL, "--input", "x:1x16:float32", "--dynamic", "x:0=batch", "-o", "m.onnx",
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "capturing the graph" in res.stderr and "s] validating against MLX" in res.stderr
    assert "ONNX export: m.onnx" in res.stdout and "random inputs, batch=3" in res.stdout
    assert "-[x]" not in res.stdout
    assert (tmp_path / "m.onnx.mlxport.json").exists()

    res = mlxport("validate", "m.onnx", "--against", MODEL, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "OK" in res.stdout and "(batch=1)" in res.stdout and "(batch=3)" in res.stdout

    # Example values set the dynamic sizes of the first run; the second run doubles them.
    np.savez(tmp_path / "ex.npz", x=np.ones((5, 16), np.float32))
    res = mlxport("validate", "m.onnx", "--against", MODEL, "--example", "ex.npz", cwd=tmp_path)
    assert res.returncode == 0 and "(batch=5)" in res.stdout and "(batch=10)" in res.stdout

    res = mlxport("validate", "m.onnx", "--against", "tests.cli.models:build_other", cwd=tmp_path)
    assert res.returncode == 1
    assert "FAILED" in res.stdout and "-[x] output" in res.stdout and "failed against MLX" in res.stderr

    res = mlxport("inspect", "m.onnx", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    for text in ("x: float32[batch,16]", "output: float32[batch,4]", f"opsets: ai.onnx {DEFAULT_OPSET}", "Gemm",
                 "initializers: 4", "dynamic axes: x[0]=batch (example 1)", "sha256: matches the file"):
        assert text in res.stdout
    info = json.loads(mlxport("inspect", "m.onnx", "--json", cwd=tmp_path).stdout)
    assert info["nodes"] == sum(info["op_counts"].values()) and info["sidecar"]["validation"]["ok"]

    # A file that changed after export no longer matches the sidecar's hash.
    side = tmp_path / "m.onnx.mlxport.json"
    side.write_text(side.read_text().replace(info["sidecar"]["sha256"], "0" * 64))
    assert "DIFFERS" in mlxport("inspect", "m.onnx", cwd=tmp_path).stdout


def test_export_mlxfn_then_convert_it(tmp_path: Path) -> None:
    res = mlxport("export", "tests.cli.models:add_scaled", "--input", "a:2x3", "--input", "b:3", "-o", "a.mlxfn",
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "MLX export: a.mlxfn" in res.stdout
    res = mlxport("inspect", "a.mlxfn", cwd=tmp_path)
    assert res.returncode == 0 and "a: float32[2,3]" in res.stdout and "MLX primitives: 4" in res.stdout
    # An .mlxfn source takes its inputs from its sidecar.
    res = mlxport("export", "a.mlxfn", "-o", "a.onnx", "--opset", "17", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "opset: 17" in res.stdout
    res = mlxport("validate", "a.onnx", "--against", "tests.cli.models:add_scaled", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("target", ["tests.cli.models:instance", "tests.cli.models:TinyMLP",
                                    str(REPO / "tests" / "cli" / "models.py") + ":build_model"])
def test_export_targets_and_options(tmp_path: Path, target: str) -> None:
    """An instance, a class and a factory in a file path all resolve; names and npz examples apply."""
    np.savez(tmp_path / "ex.npz", x=np.ones((2, 16), np.float32))
    res = mlxport("export", target, "--example", "ex.npz", "--output-names", "logits", "-o", "m.onnx", "-q",
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # --quiet
    info = json.loads(mlxport("inspect", "m.onnx", "--json", cwd=tmp_path).stdout)
    assert [o["name"] for o in info["outputs"]] == ["logits"]
    assert info["inputs"] == [{"name": "x", "shape": [2, 16], "dtype": "float32"}]


def test_external_data(tmp_path: Path) -> None:
    res = mlxport("export", "tests.cli.models:build_wide", "--input", "x:1x64", "--external-data", "-o", "w.onnx",
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "w.onnx.data").exists()
    res = mlxport("inspect", "w.onnx", cwd=tmp_path)
    assert "external data: w.onnx.data" in res.stdout


def test_multiple_outputs_are_named(tmp_path: Path) -> None:
    res = mlxport("export", "tests.cli.models:two_outputs", "--input", "x:3", "--output-names", "sq,inc",
                  "-o", "t.onnx", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "-[✓] sq" in res.stdout and "-[✓] inc" in res.stdout


BAD = [
    # (arguments after `export`, exit code, text in stderr)
    ([MODEL, "--input", "x:1xA", "-o", "m.onnx"], 2, "SHAPE must be sizes joined by 'x'"),
    ([MODEL, "--input", "x", "-o", "m.onnx"], 2, "--input must be NAME:SHAPE[:DTYPE]"),
    ([MODEL, "--input", "x:1x16:float33", "-o", "m.onnx"], 2, "unknown dtype 'float33'"),
    ([MODEL, "-o", "m.onnx"], 2, "takes: x"),
    ([MODEL, "--input", "x:1x16", "--dynamic", "x0=batch", "-o", "m.onnx"], 2, "--dynamic must be NAME:AXIS=SYMBOL"),
    ([MODEL, "--input", "x:1x16", "--dynamic", "y:0=batch", "-o", "m.onnx"], 2, "but the inputs are x"),
    ([MODEL, "--input", "x:1x16", "--dynamic", "x:5=batch", "-o", "m.onnx"], 1, "out of range"),
    (["nosuch.models:build", "--input", "x:1x16", "-o", "m.onnx"], 2, "cannot import module 'nosuch.models'"),
    (["tests.cli.models:nope", "--input", "x:1x16", "-o", "m.onnx"], 2, "has no attribute 'nope'"),
    (["tests.cli.models", "--input", "x:1x16", "-o", "m.onnx"], 2, "expected MODULE:ATTR"),
    (["tests.cli.models:broken_factory", "--input", "x:1x16", "-o", "m.onnx"], 2, "returned int"),
    ([MODEL, "--input", "x:1x16", "-o", "m.h5"], 2, f"unknown suffix '.h5'; use one of {suffix_list()}"),
    ([MODEL, "--input", "x:1x16", "-o", "m.mlxfn", "--opset", "17"], 2, "--opset applies to ONNX only"),
    ([MODEL, "--input", "x:1x16", "-o", "m.pt", "--opset", "17"], 2, "--opset applies to ONNX only"),
    ([MODEL, "--input", "x:1x16", "-o", "m.mlxfn", "--external-data"], 2, "--external-data applies to ONNX only"),
    ([MODEL, "--input", "x:1x16", "-o", "m.onnx", "--no-validate", "--atol", "1e-3"], 2, "--no-validate"),
    ([MODEL, "--input", "x:1x16", "-o", "m.onnx", "--opset", "9"], 1, "opset must be between 17"),
    ([MODEL, "--input", "x:1x8", "-o", "m.onnx"], 1, "tracing the function failed"),
]


@pytest.mark.parametrize("args,code,message", BAD, ids=[m.split("'")[0][:40] for _, _, m in BAD])
def test_bad_export_input(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    res = mlxport("export", *args, cwd=tmp_path)
    assert res.returncode == code, res.stderr
    assert message in res.stderr
    assert "error: " in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "m.mlxfn").exists()


def test_failures_show_hint_and_debug_traceback(tmp_path: Path) -> None:
    args = ("export", MODEL, "--input", "x:1x8", "-o", "m.onnx")
    res = mlxport(*args, cwd=tmp_path)
    assert res.returncode == 1 and "hint: Check the example inputs" in res.stderr
    res = mlxport(*args, cwd=tmp_path, env={"MLXPORT_DEBUG": "1"})
    assert res.returncode == 1 and "Traceback" in res.stderr


def test_validate_and_inspect_bad_input(tmp_path: Path) -> None:
    res = mlxport("validate", "missing.onnx", "--against", MODEL, cwd=tmp_path)
    assert res.returncode == 1 and "no such artifact: missing.onnx" in res.stderr
    res = mlxport("validate", "m.onnx", cwd=tmp_path)
    assert res.returncode == 2 and "--against" in res.stderr
    (tmp_path / "m.txt").write_text("x")
    res = mlxport("inspect", "m.txt", cwd=tmp_path)
    assert res.returncode == 1 and "unknown suffix '.txt'" in res.stderr
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    res = mlxport("inspect", "bad.onnx", cwd=tmp_path)
    assert res.returncode == 1 and "not a readable ONNX model" in res.stderr


def test_ops_table(tmp_path: Path) -> None:
    from mlxport.cli.support import format_support
    from mlxport.targets.onnx.context import ONNX

    res = mlxport("ops", cwd=tmp_path)
    assert res.returncode == 0
    listed = {line.split()[0] for line in res.stdout.splitlines()[5:] if line.strip()}
    assert listed == set(ONNX.registrations())
    res = mlxport("ops", "--format", "md", "-o", "ops.md", cwd=tmp_path)
    assert res.returncode == 0
    assert (tmp_path / "ops.md").read_text() == format_support("md")
    res = mlxport("ops", "Matmul", cwd=tmp_path)
    assert res.returncode == 0 and "Matmul" in res.stdout and "Add " not in res.stdout
    res = mlxport("ops", "Matmull", cwd=tmp_path)
    assert res.returncode == 2 and "Close names: Matmul" in res.stderr
