"""Options and errors of the TFLite target that need no conversion (fast)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import mlxport
from mlxport.cli import UsageError
from mlxport.cli.common import export_target
from mlxport.errors import ArtifactError, DynamicShapeError
from mlxport.exporters import tflite

from ..models import zoo

CLI_MODEL = "tests.cli.models:build_model"


@pytest.fixture(scope="module")
def mlp() -> mlxport.Traced:
    model = zoo.build("mlp")
    return mlxport.trace(model, (zoo.floats((1, 784)),), dynamic_axes={"x": {0: "batch"}})


def test_int8_needs_calibration(mlp: mlxport.Traced, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="needs calibration data") as info:
        mlp.save(tmp_path / "m.tflite", quantize="int8")
    assert "never downloads" in str(info.value) and "dynamic_int8" in info.value.hint
    assert not (tmp_path / "m.tflite").exists()


def test_calibration_only_with_int8(mlp: mlxport.Traced, tmp_path: Path) -> None:
    calib = {"x": np.zeros((4, 784), np.float32)}
    with pytest.raises(ArtifactError, match="only by quantize='int8'"):
        mlp.save(tmp_path / "m.tflite", quantize="dynamic_int8", calibration=calib)
    with pytest.raises(ArtifactError, match="quantize must be one of float32, float16, dynamic_int8, int8"):
        mlp.save(tmp_path / "m.tflite", quantize="int4")


def test_quantize_is_refused_by_other_formats(mlp: mlxport.Traced, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"the option quantize applies to \.tflite files; this export writes \.onnx \(ONNX\)"):
        mlp.save(tmp_path / "m.onnx", quantize="float16")
    assert not (tmp_path / "m.onnx").exists()


def test_dynamic_axes_other_than_batch_are_refused(tmp_path: Path) -> None:
    model = zoo.build("encoder")
    traced = mlxport.trace(model, (zoo.floats((2, 8, 64)),), dynamic_axes={"x": {0: "batch", 1: "seq"}})
    with pytest.raises(DynamicShapeError, match=r"dynamic first \(batch\) axis only; got x\[1\]=seq") as info:
        traced.save(tmp_path / "e.tflite")
    assert "keep only {0: 'batch'}" in info.value.hint and ".onnx" in info.value.hint


def test_float16_models_are_refused(tmp_path: Path) -> None:
    model = zoo.build("mlp", "float16")
    traced = mlxport.trace(model, (zoo.floats((1, 784), "float16"),))
    with pytest.raises(ArtifactError, match="input 'x' is float16; the TFLite target takes float32") as info:
        traced.save(tmp_path / "m.tflite")
    assert "quantize='float16'" in info.value.hint


def test_missing_stack_names_the_pip_commands(mlp: mlxport.Traced, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx2tf" else real(name, *a))
    with pytest.raises(ArtifactError, match="TFLite export needs onnx2tf, which is not installed") as info:
        mlp.save(tmp_path / "m.tflite")
    assert 'pip install "mlxport[tflite]"' in info.value.hint
    assert "pip install --no-deps tf-keras==2.21.0 onnx2tf==1.29.24" in info.value.hint


def test_missing_litert_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.__import__

    def no_litert(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("ai_edge_litert"):
            raise ImportError("No module named 'ai_edge_litert'")
        return real(name, *args, **kwargs)

    (tmp_path / "m.tflite").write_bytes(b"")
    monkeypatch.setattr(builtins, "__import__", no_litert)
    with pytest.raises(ArtifactError, match="needs ai-edge-litert") as info:
        mlxport.load(tmp_path / "m.tflite")
    assert "mlxport[tflite]" in info.value.hint


# ----------------------------------------------------------------------------
# Calibration data
# ----------------------------------------------------------------------------


def test_calibration_whole_inputs_and_batch_rows(mlp: mlxport.Traced, tmp_path: Path) -> None:
    rows = np.random.default_rng(0).standard_normal((10, 784)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=rows)
    from_rows = tflite.calibration_arrays(tmp_path / "c.npz", mlp.graph)
    # A dynamic batch: one row per sample.
    assert from_rows["x"].shape == (10, 1, 784)
    np.testing.assert_array_equal(from_rows["x"][3, 0], rows[3])
    whole = tflite.calibration_arrays({"x": rows.reshape(5, 2, 784)}, mlp.graph)
    assert whole["x"].shape == (5, 2, 784)
    fixed = mlxport.trace(zoo.build("mlp"), (zoo.floats((2, 784)),))
    # A fixed batch of 2: rows are grouped in twos (the odd one left out).
    grouped = tflite.calibration_arrays({"x": rows[:9].astype(np.float64)}, fixed.graph)
    assert grouped["x"].shape == (4, 2, 784) and grouped["x"].dtype == np.float32


@pytest.mark.parametrize("calibration,message", [
    ({"y": np.zeros((4, 784))}, "one array per input .x.; missing x, unknown y"),
    ({"x": np.zeros((4, 783))}, r"has shape \[4, 783\]; expected \[N, \?, 784\]"),
    ({"x": np.zeros((0, 784))}, "no samples"),
    ({"x": np.array(["a"] * 784 * 2).reshape(2, 784)}, "is <U1; the input is float32"),
    ("missing.npz", "no such calibration file"),
])
def test_bad_calibration(mlp: mlxport.Traced, calibration: object, message: str) -> None:
    with pytest.raises(ArtifactError, match=message):
        tflite.calibration_arrays(calibration, mlp.graph)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------
# CLI flags
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("output,extra,message", [
    ("m.onnx", ["--quantize", "float16"], "--quantize applies to TFLite only, but -o/--output is a .onnx file"),
    ("m.pt", ["--calibration", "c.npz"], "--calibration applies to TFLite only, but -o/--output is a .pt file"),
    ("m.tflite", ["--quantize", "int8"], "--quantize int8 needs --calibration FILE.npz"),
    ("m.tflite", ["--calibration", "c.npz"], "--calibration is used only by --quantize int8, but --quantize is not"),
    ("m.tflite", ["--quantize", "dynamic_int8", "--calibration", "c.npz"],
     "--calibration is used only by --quantize int8, but --quantize is dynamic_int8"),
    ("m.tflite", ["--quantize", "int8", "--calibration", "nosuch.npz"], "--calibration nosuch.npz: no such file"),
])
def test_cli_quantize_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str, extra: list[str],
                            message: str) -> None:
    from mlxport.cli.export import configure_parser

    monkeypatch.chdir(tmp_path)
    np.savez("c.npz", x=np.zeros((4, 16), np.float32))
    args = configure_parser().parse_args([CLI_MODEL, "--input", "x:2x16", "-o", output, *extra])
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        export_target(**vars(args))
    assert not Path(output).exists()


def test_tolerances_cover_each_quantized_variant() -> None:
    assert set(tflite.TOLERANCES) == set(tflite.QUANTIZE) - {"float32"}
    for rtol, atol in tflite.TOLERANCES.values():
        assert 0 < rtol <= 0.1 and 0 < atol <= 0.15
    bounds = [tflite.TOLERANCES[q] for q in ("float16", "dynamic_int8", "int8")]
    assert bounds == sorted(bounds)  # fewer bits, looser bound
