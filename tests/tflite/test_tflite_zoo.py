"""The model zoo through LiteRT: float32 parity, and the measured error of the quantized variants.

Each model is traced once with a dynamic batch; each (model, variant) is converted once
per module (a conversion takes 5-20 s) and shared by the tests that read it.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import numpy as np
import pytest

import mlxport
from mlxport.validate import compare

from ..models import zoo
from . import requires_stack

pytestmark = [pytest.mark.slow, requires_stack]

# name -> (example inputs, input name, per-sample shape, random inputs of batch n from a seed)
MODELS: dict[str, tuple[Callable[[], tuple[mx.array, ...]], str, Callable[[int, int], mx.array]]] = {
    "mlp": (lambda: (zoo.floats((1, 784)),), "x", lambda n, s: zoo.floats((n, 784), seed=s)),
    "cnn": (lambda: (zoo.floats((2, 16, 16, 3)),), "x", lambda n, s: zoo.floats((n, 16, 16, 3), seed=s)),
    "encoder": (lambda: (zoo.floats((2, 8, 64)),), "x", lambda n, s: zoo.floats((n, 8, 64), seed=s)),
    "llama_style": (lambda: (zoo.tokens(2, 8),), "tokens", lambda n, s: zoo.tokens(n, 8, seed=s)),
}
# Max abs error against MLX allowed per (model, variant): the error measured on 5 random batches
# of 4 (outputs up to ~0.75 MLP, ~0.4 CNN, ~3.5 encoder, ~2 llama), times about 3. Full int8
# clips outputs beyond the calibrated range, hence its bound well above its typical ~5e-3.
BOUNDS: dict[tuple[str, str], float] = {
    ("mlp", "float16"): 1e-3,        # measured 2.3e-4
    ("mlp", "dynamic_int8"): 2e-2,   # measured 6.1e-3
    ("mlp", "int8"): 1e-1,           # measured 8.1e-3 typical, 0.081 worst batch (64 calibration rows)
    # Max pooling with padding: onnx2tf's -3.4e38 pad value would wreck int8 (see _onnx2tf_job.py).
    ("cnn", "int8"): 1e-1,           # measured 5.2e-3 typical, 0.061 worst batch
    ("encoder", "float16"): 2e-3,    # measured 5.3e-4
    ("llama_style", "dynamic_int8"): 2e-1,  # measured 7.3e-2 (attention in float, int8 weights)
}
CALIBRATION_BATCHES = 16  # x 8 samples


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tflite")


_TRACED: dict[str, tuple[Any, Any]] = {}
_SAVED: dict[tuple[str, str], tuple[Any, Path]] = {}


def traced(name: str) -> tuple[Any, Any]:
    """(model, Traced) for a zoo model, traced once with a dynamic batch."""
    if name not in _TRACED:
        example, input_name, _ = MODELS[name]
        model = zoo.build(name)
        _TRACED[name] = (model, mlxport.trace(model, example(), dynamic_axes={input_name: {0: "batch"}}))
    return _TRACED[name]


def saved(name: str, quantize: str, workdir: Path) -> tuple[Any, Path]:
    """(Report, path) of one conversion, made once (int8 calibrates on a .npz written here)."""
    key = (name, quantize)
    if key not in _SAVED:
        _, input_name, make = MODELS[name]
        options: dict[str, Any] = {"quantize": quantize}
        if quantize == "int8":
            calib = workdir / f"{name}-calibration.npz"
            rows = np.concatenate([np.array(make(8, 100 + k)) for k in range(CALIBRATION_BATCHES)])
            np.savez(calib, **{input_name: rows})
            options["calibration"] = calib
        path = workdir / f"{name}-{quantize}.tflite"
        _SAVED[key] = (traced(name)[1].save(path, **options), path)
    return _SAVED[key]


def max_error(runner: Any, model: Any, make: Callable[[int, int], mx.array], seeds: range = range(3)) -> float:
    worst = 0.0
    for seed in seeds:
        x = make(4, seed)
        (got,) = runner(x)
        worst = max(worst, float(np.abs(got - np.array(model(x))).max()))
    return worst


@pytest.mark.parametrize("name", list(MODELS))
def test_float32_parity(name: str, workdir: Path) -> None:
    report, path = saved(name, "float32", workdir)
    assert report.validated and report.ok, str(report)
    assert report.info["quantize"] == "float32" and len(report.runs) == 2  # the example, then batch x2
    model, trace = traced(name)
    runner = mlxport.load(path)
    assert runner.backend == "litert"
    assert [(i.name, i.shape, i.dtype) for i in runner.inputs] == [
        (i.name, ["batch", *i.shape[1:]], i.dtype) for i in trace.graph.inputs]
    for batch in (1, 5):
        x = MODELS[name][2](batch, 7)
        (got,) = runner(x)
        check = compare("output", np.array(model(x)), got, None, None)
        assert check.ok, check.line()


@pytest.mark.parametrize("name,quantize", list(BOUNDS))
def test_quantized_error_bound(name: str, quantize: str, workdir: Path) -> None:
    report, path = saved(name, quantize, workdir)
    # Validated with the variant's default tolerances (mlxport.exporters.tflite.TOLERANCES).
    assert report.validated and report.ok, str(report)
    assert report.info["quantize"] == quantize
    bound = BOUNDS[(name, quantize)]
    assert 0 < report.max_abs <= bound, str(report)
    model, _ = traced(name)
    runner = mlxport.load(path)
    assert runner.quantize == quantize
    err = max_error(runner, model, MODELS[name][2])
    assert 0 < err <= bound
    # Smaller files: float16 weights save half the float32 weight bytes, int8 three quarters (ideally;
    # biases and small tensors stay wider).
    fp32 = saved(name, "float32", workdir)[1].stat().st_size
    weight_bytes = 4 * report.info["parameters"]
    saving = {"float16": 0.35, "dynamic_int8": 0.5, "int8": 0.5}[quantize]
    assert fp32 - path.stat().st_size >= saving * weight_bytes


def test_int8_encoder_fails_with_a_way_out(workdir: Path) -> None:
    """Full int8 breaks the encoder's layer norms (LiteRT's int8 DIV fails, or the numbers drift): the
    validation error names dynamic_int8 as the way out."""
    from mlxport.errors import ValidationError

    with pytest.raises(ValidationError) as info:
        saved("encoder", "int8", workdir)
    assert "dynamic_int8" in f"{info.value} {info.value.hint}"


def test_cnn_input_stays_nhwc(workdir: Path) -> None:
    """The flatbuffer itself takes MLX's NHWC input: nothing to transpose, in the runner or for other users."""
    _, path = saved("cnn", "float32", workdir)
    runner = mlxport.load(path)
    assert runner.inputs[0].shape == ["batch", 16, 16, 3]
    from ai_edge_litert.interpreter import Interpreter

    (detail,) = Interpreter(model_path=str(path)).get_input_details()
    assert list(detail["shape_signature"]) == [-1, 16, 16, 3]
    model, _ = traced("cnn")
    x = zoo.floats((3, 16, 16, 3), seed=4)
    (got,) = runner(x)
    np.testing.assert_allclose(got, np.array(model(x)), rtol=1e-4, atol=1e-5)


def test_names_without_sidecar(workdir: Path, tmp_path: Path) -> None:
    """A .tflite alone (no metadata file) is read from its signature: names, dynamic batch, dtype."""
    _, path = saved("mlp", "float32", workdir)
    bare = tmp_path / "bare.tflite"
    shutil.copyfile(path, bare)
    runner = mlxport.load(bare)
    assert [(i.name, i.shape, i.dtype) for i in runner.inputs] == [("x", [None, 784], "float32")]
    assert [o.name for o in runner.outputs] == ["output"]
    model, _ = traced("mlp")
    x = zoo.floats((2, 784), seed=5)
    np.testing.assert_allclose(runner(x=x)[0], np.array(model(x)), rtol=1e-4, atol=1e-5)


def test_concurrent_calls_of_several_batch_sizes(workdir: Path) -> None:
    _, path = saved("mlp", "float32", workdir)
    runner = mlxport.load(path)
    model, _ = traced("mlp")
    inputs = [np.array(zoo.floats((n, 784), seed=n)) for n in (1, 2, 3, 4) * 3]
    expected = [np.array(model(mx.array(x))) for x in inputs]
    results: dict[int, np.ndarray] = {}

    def call(k: int) -> None:
        results[k] = runner(inputs[k])[0]

    threads = [threading.Thread(target=call, args=(k,)) for k in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, e in enumerate(expected):
        np.testing.assert_allclose(results[k], e, rtol=1e-4, atol=1e-5)


def test_bench_reads_tflite(workdir: Path) -> None:
    from mlxport.bench import bench, format_table

    _, path = saved("mlp", "float32", workdir)
    (row,) = bench([path], runs=3, seconds=0.01, warmup=0, batch=8, threads=1)
    assert row["backend"] == "litert" and row["dynamic_batch"] and row["throughput_sps"] > 0
    assert row["size_bytes"] == path.stat().st_size and "litert" in format_table([row])


def test_two_inputs_three_named_outputs(tmp_path: Path) -> None:
    """Signature names map back to MLX's, whatever order the flatbuffer lists its tensors in."""
    import mlx.nn as nn

    mx.random.seed(0)
    conv, lin = nn.Conv2d(3, 5, 3, padding=1), nn.Linear(7, 4)
    mx.eval(conv.parameters(), lin.parameters())

    def heads(img: mx.array, seq: mx.array) -> dict[str, mx.array]:
        feat = nn.relu(conv(img))
        return {"feat": feat, "proj": lin(seq), "pooled": feat.mean(axis=(1, 2))}

    img, seq = mx.random.normal((2, 6, 6, 3)), mx.random.normal((2, 5, 7))
    report = mlxport.export(heads, (img, seq), tmp_path / "heads.tflite",
                            dynamic_axes={"img": {0: "batch"}, "seq": {0: "batch"}})
    assert report.ok, str(report)
    runner = mlxport.load(tmp_path / "heads.tflite")
    assert [i.name for i in runner.inputs] == ["img", "seq"]
    names = [o.name for o in runner.outputs]
    assert sorted(names) == ["feat", "pooled", "proj"]
    img3, seq3 = mx.random.normal((3, 6, 6, 3)), mx.random.normal((3, 5, 7))
    expected = heads(img3, seq3)
    for name, got in zip(names, runner(seq=seq3, img=img3)):
        np.testing.assert_allclose(got, np.array(expected[name]), rtol=1e-4, atol=1e-5, err_msg=name)
