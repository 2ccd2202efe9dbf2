"""Triton repositories: config.pbtxt parsed with Triton's own schema, checked against ONNX Runtime, served."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from mlxport.package import PackageError, build, package
from mlxport.package.triton import check_config, config_text
from mlxport.artifact import IOSpec, file_sha256

from .helpers import free_port, mlxport_cli, onnx_reference, running_server

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")


def parse(path: Path):
    config = model_config_pb2.ModelConfig()
    text_format.Parse(path.read_text(), config)
    return config


def ort_signature(path: Path) -> tuple[list, list]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.get_inputs(), session.get_outputs()


def test_batched_config_matches_onnxruntime(models: Path, tmp_path: Path) -> None:
    folder = package(models / "mlp.onnx", "triton", tmp_path / "repo")
    assert folder == tmp_path / "repo" / "mlp"
    assert sorted(p.name for p in folder.iterdir()) == ["1", "config.pbtxt"]
    assert sorted(p.name for p in (folder / "1").iterdir()) == ["model.onnx", "model.onnx.mlxport.json"]
    assert (folder / "1" / "model.onnx").read_bytes() == (models / "mlp.onnx").read_bytes()
    config = parse(folder / "config.pbtxt")
    assert config.name == "mlp" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 64
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [(g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in config.instance_group] == \
        [(1, "KIND_CPU")]
    assert config.version_policy.latest.num_versions == 1
    ins, outs = ort_signature(models / "mlp.onnx")
    # ONNX Runtime: x [batch, 16] -> output [batch, 4]; Triton leaves the batch axis out of dims.
    for got, want in ((config.input, ins), (config.output, outs)):
        assert [t.name for t in got] == [w.name for w in want]
        for t, w in zip(got, want):
            assert model_config_pb2.DataType.Name(t.data_type) == "TYPE_FP32" and w.type == "tensor(float)"
            assert list(t.dims) == [d if isinstance(d, int) else -1 for d in w.shape[1:]]
    meta = json.loads((folder / "1" / "model.onnx.mlxport.json").read_text())
    assert meta["sha256"] == meta["files"]["model.onnx"] and "mlp.onnx" not in meta["files"]


def test_fixed_shapes_give_max_batch_size_zero(models: Path, tmp_path: Path) -> None:
    config = parse(package(models / "fixed.onnx", "triton", tmp_path) / "config.pbtxt")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [2, 16] and list(config.output[0].dims) == [2, 4]
    # Full dims with -1 when batching is turned off for a dynamic model.
    config = parse(package(models / "mlp.onnx", "triton", tmp_path, name="nobatch", max_batch_size=0)
                   / "config.pbtxt")
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [-1, 16]


def test_max_batch_size_without_batch_axis_is_refused(models: Path, tmp_path: Path) -> None:
    with pytest.raises(PackageError, match=r"--max-batch-size 8 needs a dynamic batch axis.*'x' has the fixed") as e:
        package(models / "fixed.onnx", "triton", tmp_path / "repo", max_batch_size=8)
    assert "--dynamic x:0=batch" in e.value.hint and "--max-batch-size 0" in e.value.hint
    assert not (tmp_path / "repo").exists()
    res = mlxport_cli("package", str(models / "fixed.onnx"), "-t", "triton", "-o", str(tmp_path / "r"),
                      "--max-batch-size", "4")
    assert res.returncode == 1 and "needs a dynamic batch axis" in res.stderr and "hint:" in res.stderr


def test_options_reach_the_config(models: Path, tmp_path: Path) -> None:
    config = parse(package(models / "two.onnx", "triton", tmp_path, max_batch_size=16, max_queue_delay_us=500,
                           instances=3, instance_kind="gpu", version_policy="specific:1,3") / "config.pbtxt")
    assert config.max_batch_size == 16 and config.dynamic_batching.max_queue_delay_microseconds == 500
    assert config.instance_group[0].count == 3
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind) == "KIND_GPU"
    assert list(config.version_policy.specific.versions) == [1, 3]
    assert [t.name for t in config.input] == ["a", "b"] and [list(t.dims) for t in config.input] == [[3], [3]]
    with pytest.raises(PackageError, match="version policy must be"):
        package(models / "two.onnx", "triton", tmp_path / "x", version_policy="newest")


def test_check_config_reports_every_mismatch() -> None:
    ins, outs = [IOSpec("x", ["batch", 16], "float32")], [IOSpec("y", ["batch", 4], "int64")]
    good = config_text("m", ins, outs, max_batch_size=8)
    assert check_config(good, "m", ins, outs).max_batch_size == 8
    bad = good.replace("dims: [ 16 ]", "dims: [ 15 ]").replace("TYPE_INT64", "TYPE_INT32").replace('"m"', '"n"')
    with pytest.raises(PackageError) as e:
        check_config(bad, "m", ins, outs)
    text = str(e.value)
    assert "name is 'n'" in text and "dims [15]" in text and "data_type TYPE_INT32" in text
    with pytest.raises(PackageError, match="does not parse as Triton's ModelConfig"):
        check_config(good.replace("max_batch_size", "max_batch"), "m", ins, outs)
    fixed = [IOSpec("x", [2, 16], "float32")]
    with pytest.raises(PackageError, match="max_batch_size is 8, but 'x' has the fixed first axis"):
        check_config(config_text("m", fixed, fixed, max_batch_size=8), "m", fixed, fixed)
    # A scalar per batch row is dims [1] reshaped to [].
    scalar = [IOSpec("s", [None], "float32")]
    text = config_text("m", scalar, scalar, max_batch_size=4)
    assert "reshape: { shape: [ ] }" in text and check_config(text, "m", scalar, scalar)


def test_add_versions_and_refuse_a_different_signature(models: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    package(models / "mlp.onnx", "triton", repo, name="digits")
    config_before = (repo / "digits" / "config.pbtxt").read_text()
    with pytest.raises(PackageError, match="digits/1 already exists") as e:
        package(models / "mlp.onnx", "triton", repo, name="digits")
    assert "--version 2" in e.value.hint
    bundle = build(models / "mlp.onnx", "triton", repo, name="digits", version=2, max_batch_size=8)
    assert sorted(p.name for p in (repo / "digits").iterdir()) == ["1", "2", "config.pbtxt"]
    assert (repo / "digits" / "config.pbtxt").read_text() == config_before  # kept, as the note says
    assert any("kept the existing" in n for n in bundle.notes)
    with pytest.raises(PackageError, match="already describes another signature"):
        package(models / "two.onnx", "triton", repo, name="digits", version=3)
    assert not (repo / "digits" / "3").exists()
    package(models / "mlp.onnx", "triton", repo, name="digits", version=2, max_batch_size=8, force=True)
    assert parse(repo / "digits" / "config.pbtxt").max_batch_size == 8
    assert not [p for p in repo.rglob(".mlxport-package-*")]


def test_external_data_travels(models: Path, tmp_path: Path) -> None:
    folder = package(models / "wide.onnx", "triton", tmp_path)
    assert sorted(p.name for p in (folder / "1").iterdir()) == ["model.onnx", "model.onnx.mlxport.json",
                                                               "wide.onnx.data"]
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    np.testing.assert_array_equal(onnx_reference(folder / "1" / "model.onnx", {"x": x})[0],
                                  onnx_reference(models / "wide.onnx", {"x": x})[0])


def test_artifact_without_sidecar_gets_one_with_its_checksum(models: Path, tmp_path: Path) -> None:
    shutil.copyfile(models / "mlp.onnx", tmp_path / "plain.onnx")
    folder = package(tmp_path / "plain.onnx", "triton", tmp_path / "repo")
    meta = json.loads((folder / "1" / "model.onnx.mlxport.json").read_text())
    assert meta["sha256"] == file_sha256(tmp_path / "plain.onnx") == meta["files"]["model.onnx"]
    assert meta["inputs"] == [{"name": "x", "shape": ["batch", 16], "dtype": "float32"}]
    assert parse(folder / "config.pbtxt").max_batch_size == 64


def test_non_onnx_is_refused(models: Path, tmp_path: Path) -> None:
    pt = tmp_path / "m.pt"
    pt.write_bytes(b"not used")
    with pytest.raises(PackageError, match=r"--target triton takes \.onnx .*got m\.pt") as e:
        package(pt, "triton", tmp_path / "repo")
    assert "mlxport export" in e.value.hint and "sagemaker" in e.value.hint


@pytest.mark.slow
def test_mlxport_serve_serves_the_repository(models: Path, tmp_path: Path) -> None:
    import requests

    repo = tmp_path / "repo"
    package(models / "mlp.onnx", "triton", repo, name="digits")
    shutil.copytree(repo / "digits" / "1", repo / "digits" / "2")
    package(models / "two.onnx", "triton", repo)
    port = free_port()
    rng = np.random.default_rng(1)
    with running_server([str(repo), "--port", str(port), "--version-policy", "all", "--no-access-log"],
                        {}, port, tmp_path / "server.log") as url:
        index = requests.post(f"{url}/v2/repository/index", timeout=10).json()
        assert {(r["name"], r["version"], r["state"]) for r in index} == {
            ("digits", "1", "READY"), ("digits", "2", "READY"), ("two", "1", "READY")}
        meta = requests.get(f"{url}/v2/models/digits", timeout=10).json()
        assert meta["platform"] == "onnxruntime_onnx" and meta["inputs"][0]["shape"] == [-1, 16]
        x = rng.standard_normal((5, 16)).astype(np.float32)
        body = {"inputs": [{"name": "x", "shape": [5, 16], "datatype": "FP32", "data": x.ravel().tolist()}]}
        for path in ("/v2/models/digits/infer", "/v2/models/digits/versions/1/infer"):
            res = requests.post(url + path, json=body, timeout=10)
            assert res.status_code == 200, res.text
            out = res.json()["outputs"][0]
            got = np.array(out["data"], dtype=np.float32).reshape(out["shape"])
            np.testing.assert_allclose(got, onnx_reference(models / "mlp.onnx", {"x": x})[0], rtol=1e-6, atol=1e-6)
        a, b = rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal((2, 3)).astype(np.float32)
        body = {"inputs": [{"name": n, "shape": [2, 3], "datatype": "FP32", "data": v.tolist()}
                           for n, v in (("a", a), ("b", b))]}
        res = requests.post(f"{url}/v2/models/two/infer", json=body, timeout=10)
        assert res.status_code == 200, res.text
        out = res.json()["outputs"][0]
        np.testing.assert_allclose(np.array(out["data"], dtype=np.float32).reshape(out["shape"]), a * 2 - b,
                                   rtol=1e-6, atol=1e-6)
