"""Core ML (.mlpackage) export from the torch lowering: structure on Linux, numbers on macOS."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("torch", reason="Core ML export goes through the torch target: pip install 'mlxport[torch]'")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ct = pytest.importorskip("coremltools", reason="Core ML export needs coremltools: pip install 'mlxport[coreml]'")

import mlxport  # noqa: E402
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
    side = mlxport.runners.read_sidecar(path)
    assert len(side["sha256"]) == 64 and side["validation"]["info"]["precision"] == "float32"
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
    from mlxport.api import _dir_sha256

    path = tmp_path / "a.mlpackage"
    report = mlp_traced.save(path, validate=False)
    assert mlxport.runners.read_sidecar(path)["sha256"] == _dir_sha256(path)
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


def test_llama_style_dynamic_batch_is_refused_clearly(tmp_path) -> None:
    # coremltools' torch frontend cannot take symbolic sizes in `narrow` (RoPE's half split).
    with pytest.raises(ArtifactError, match="coremltools cannot convert"):
        mlxport.export(build("llama_style"), (tokens(2, 8),), tmp_path / "l.mlpackage",
                       dynamic_axes={"tokens": {0: "batch"}})


def test_cnn_is_refused_clearly(tmp_path) -> None:
    # MLX pooling lowers to as_strided, which coremltools' torch frontend does not convert.
    with pytest.raises(ArtifactError, match="as_strided"):
        mlxport.export(build("cnn"), (floats((2, 16, 16, 3)),), tmp_path / "c.mlpackage",
                       dynamic_axes={"x": {0: "batch"}})


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
