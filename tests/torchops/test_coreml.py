"""Core ML (.mlpackage) export from the torch lowering: structure on Linux, numbers on macOS."""

from __future__ import annotations

import sys
import warnings

import mlx.core as mx
import numpy as np
import pytest

pytest.importorskip("torch", reason="Core ML export goes through the torch target: pip install 'mlxport[torch]'")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ct = pytest.importorskip("coremltools", reason="Core ML export needs coremltools: pip install 'mlxport[coreml]'")

import mlxport  # noqa: E402
import mlxport.artifact  # noqa: E402
from mlxport.api import run_mlx  # noqa: E402
from mlxport.errors import ArtifactError  # noqa: E402
from mlxport.exporters.coreml import describe_spec  # noqa: E402
from tests.models.zoo import build, floats, tokens  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::FutureWarning")
MACOS = sys.platform == "darwin"


def _spec(path) -> dict:
    return describe_spec(ct.utils.load_spec(str(path)))


@pytest.fixture(scope="module")
def mlp_traced():
    return mlxport.trace(build("mlp"), (floats((2, 784)),), dynamic_axes={"x": {0: "batch"}})


@pytest.mark.skipif(MACOS, reason="on macOS the export is validated numerically instead")
def test_mlp_dynamic_batch_structure(mlp_traced, tmp_path) -> None:
    path = tmp_path / "mlp.mlpackage"
    report = mlp_traced.save(path)
    assert path.is_dir()
    assert report.validated is False
    assert report.info["validation"] == "structure only: numeric validation needs macOS"
    assert "structure only" in str(report)
    desc = _spec(path)
    (inp,) = desc["inputs"]
    assert inp["name"] == "x" and inp["dtype"] == "float32"
    assert inp["ranges"] == [(1, 4096), (784, 784)]
    assert [o["name"] for o in desc["outputs"]] == ["output"]
    assert "linear" in desc["ops"]
    side = mlxport.artifact.read_meta(path)
    assert len(side.sha256) == 64 and side.validation["info"]["precision"] == "float32"
    assert report.info["size"].endswith("kB") or report.info["size"].endswith("MB")


@pytest.mark.skipif(MACOS, reason="on macOS the export is validated numerically instead")
def test_mlp_float16_precision(mlp_traced, tmp_path) -> None:
    path = tmp_path / "mlp16.mlpackage"
    report = mlp_traced.save(path, precision="float16")
    assert report.info["precision"] == "float16"
    ops = _spec(path)["ops"]
    # FLOAT16 compute precision casts the float32 input down and the result back up.
    assert "cast" in ops and "linear" in ops


def test_directory_digest_and_size(mlp_traced, tmp_path) -> None:
    # A .mlpackage is a directory (and not byte-reproducible: its manifest holds fresh ids), so the
    # recorded digest is over its sorted files.
    from mlxport.artifact import artifact_sha256, read_meta

    path = tmp_path / "a.mlpackage"
    report = mlp_traced.save(path, validate=False)
    assert read_meta(path).sha256 == artifact_sha256(path)
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert report.info["size"] == f"{total / 1e6:.2f} MB"


def test_bad_precision(mlp_traced, tmp_path) -> None:
    with pytest.raises(ArtifactError, match="precision"):
        mlp_traced.save(tmp_path / "m.mlpackage", precision="int8", validate=False)


@pytest.mark.skipif(MACOS, reason="on macOS the export is validated numerically instead")
def test_llama_style_fixed_shapes(tmp_path) -> None:
    path = tmp_path / "llama.mlpackage"
    report = mlxport.export(build("llama_style"), (tokens(2, 8),), path)
    assert report.info["validation"].startswith("structure only")
    desc = _spec(path)
    (inp,) = desc["inputs"]
    assert inp["name"] == "tokens" and inp["dtype"] == "int32" and inp["shape"] == [2, 8]
    assert desc["outputs"][0]["name"] == "output"
    assert {"linear", "matmul"} <= set(desc["ops"]) or "scaled_dot_product_attention" in desc["ops"]


@pytest.mark.skipif(MACOS, reason="on macOS the export is validated numerically instead")
def test_llama_style_dynamic_batch_and_seq(tmp_path) -> None:
    # RoPE's half split is a narrow, which coremltools converts with the full (symbolic) shape as a
    # constant; the Core ML rewrite slices instead.
    path = tmp_path / "l.mlpackage"
    report = mlxport.export(build("llama_style"), (tokens(2, 8),), path, dynamic_axes={"tokens": {0: "b", 1: "s"}})
    assert report.info["validation"].startswith("structure only")
    (inp,) = _spec(path)["inputs"]
    assert inp["ranges"] == [(1, 4096), (1, 4096)]


def test_negative_strides_convert(tmp_path) -> None:
    # A view read backwards lowers to torch.take, which the Core ML rewrite turns into indexing.
    fn = lambda x: mx.as_strided(x, (2, 3, 2), (0, -2, 3), 7) * 2  # noqa: E731
    report = mlxport.export(fn, (mx.arange(12, dtype=mx.float32),), tmp_path / "v.mlpackage")
    assert report.ok


def test_unconvertible_model_says_what_and_what_to_do(tmp_path) -> None:
    fn = lambda x: x.reshape(1, 1, 1, 2, 3, 1) * 2 + 1  # noqa: E731  (Core ML stops at rank 5)
    with pytest.raises(ArtifactError, match="coremltools cannot convert the torch lowering.*rank") as info:
        mlxport.export(fn, (mx.ones((2, 3)),), tmp_path / "r.mlpackage")
    assert "at most 5 dimensions" in info.value.hint and ".onnx" in info.value.hint


def test_unsupported_input_dtype_is_refused_with_a_fix(tmp_path) -> None:
    with pytest.raises(ArtifactError, match="input 'x' is bfloat16") as info:
        mlxport.export(lambda x: x * 2, (mx.ones((2, 3), dtype=mx.bfloat16),), tmp_path / "b.mlpackage")
    assert "astype" in info.value.hint


@pytest.mark.skipif(MACOS, reason="Core ML runs on macOS")
def test_load_needs_macos(mlp_traced, tmp_path) -> None:
    path = tmp_path / "m.mlpackage"
    mlp_traced.save(path, validate=False)
    with pytest.raises(ArtifactError, match="needs macOS"):
        mlxport.load(path)


@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML prediction needs macOS")
def test_mlp_numbers_on_macos(mlp_traced, tmp_path) -> None:
    path = tmp_path / "mlp.mlpackage"
    report = mlp_traced.save(path)
    assert report.validated and report.ok
    x = np.random.default_rng(1).standard_normal((5, 784)).astype(np.float32)
    (got,) = mlxport.load(path)(x)
    (expected,) = run_mlx(mlp_traced, x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
