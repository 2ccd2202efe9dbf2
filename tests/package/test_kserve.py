"""KServe bundles: the InferenceService manifest checked against KServe's required fields, plus its repository."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from mlxport.package import PackageError, build, package
from mlxport.package.kserve import check_manifest, isvc_name, manifest

from .helpers import mlxport_cli

yaml = pytest.importorskip("yaml")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")


def test_manifest_and_repository(models: Path, tmp_path: Path) -> None:
    path = package(models / "mlp.onnx", "kserve", tmp_path / "k8s", name="digits_v1")
    assert path == tmp_path / "k8s" / "inferenceservice.yaml"
    doc = yaml.safe_load(path.read_text())
    assert check_manifest(doc) == []
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1" and doc["kind"] == "InferenceService"
    assert doc["metadata"]["name"] == "digits-v1"
    model = doc["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "triton"} and model["protocolVersion"] == "v2"
    assert model["runtime"] == "kserve-tritonserver" and model["storageUri"] == "s3://BUCKET/path"
    assert model["resources"]["requests"] == model["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}
    repo = tmp_path / "k8s" / "model_repository"
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*")) == [
        "digits_v1", "digits_v1/1", "digits_v1/1/model.onnx", "digits_v1/1/model.onnx.mlxport.json",
        "digits_v1/config.pbtxt"]
    assert 'name: "digits_v1"' in (repo / "digits_v1" / "config.pbtxt").read_text()
    assert "/v2/models/digits_v1/ready" in (tmp_path / "k8s" / "README.md").read_text()
    with pytest.raises(PackageError, match="digits_v1/1 already exists") as e:
        package(models / "mlp.onnx", "kserve", tmp_path / "k8s", name="digits_v1")
    assert "--force" in e.value.hint and "--version" not in e.value.hint
    package(models / "mlp.onnx", "kserve", tmp_path / "k8s", name="digits_v1", force=True)


def test_options(models: Path, tmp_path: Path) -> None:
    bundle = build(models / "mlp.onnx", "kserve", tmp_path, storage_uri="gs://models/mlp", model_format="onnx",
                   cpu="500m", memory="3Gi", gpus=1)
    model = yaml.safe_load(bundle.path.read_text())["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "onnx" and model["storageUri"] == "gs://models/mlp"
    assert model["resources"]["limits"] == {"cpu": "500m", "memory": "3Gi", "nvidia.com/gpu": "1"}
    assert "kind: KIND_GPU" in (tmp_path / "model_repository" / "mlp" / "config.pbtxt").read_text()
    assert not any("placeholder" in n for n in bundle.notes)
    with pytest.raises(PackageError, match="storageUri must be a URI"):
        package(models / "mlp.onnx", "kserve", tmp_path / "b", storage_uri="/local/path")
    with pytest.raises(PackageError, match="resources.limits.memory must be a Kubernetes quantity"):
        package(models / "mlp.onnx", "kserve", tmp_path / "c", memory="lots")
    with pytest.raises(PackageError, match="--model-format must be one of triton, onnx"):
        package(models / "mlp.onnx", "kserve", tmp_path / "d", model_format="sklearn")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize("name,expected", [("digits", "digits"), ("Digits_V2.onnx", "digits-v2-onnx"),
                                           ("7up", "m-7up"), ("a" * 80, "a" * 63), ("__x__", "x")])
def test_isvc_names_are_valid(name: str, expected: str) -> None:
    assert isvc_name(name) == expected
    assert check_manifest(manifest(isvc_name(name), "s3://b/p")) == []


def test_check_manifest_finds_each_problem() -> None:
    good = manifest("mlp", "s3://b/p")
    assert check_manifest(good) == []
    cases = [
        (("apiVersion",), "serving.kserve.io/v1alpha1", "apiVersion must be serving.kserve.io/v1beta1"),
        (("kind",), "Service", "kind must be InferenceService"),
        (("metadata", "name"), "My_Model", "metadata.name must be lower-case"),
        (("metadata", "name"), "1model", "metadata.name must be lower-case"),
        (("metadata", "name"), "m" * 64, "at most 63"),
        (("spec", "predictor", "model", "modelFormat"), {"name": ""}, "modelFormat.name must be a non-empty"),
        (("spec", "predictor", "model", "storageUri"), "ftp://x/y", "storageUri must be a URI"),
        (("spec", "predictor", "model", "protocolVersion"), "v3", "protocolVersion must be v1, v2 or grpc-v2"),
        (("spec", "predictor", "model", "resources", "requests", "cpu"), "4", "requests.cpu (4) is above"),
        (("spec", "predictor", "model", "resources", "limits", "memory"), True, "must be a Kubernetes quantity"),
        (("spec", "predictor"), [], "spec.predictor must be a mapping"),
    ]
    for keys, value, message in cases:
        doc = copy.deepcopy(good)
        target = doc
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
        problems = check_manifest(doc)
        assert any(message in p for p in problems), (keys, value, problems)
    assert any("must be a mapping" in p for p in check_manifest("not a mapping"))
    del good["spec"]["predictor"]["model"]["storageUri"]
    assert any("storageUri" in p for p in check_manifest(good))


def test_cli_flags_for_other_targets_are_refused(models: Path, tmp_path: Path) -> None:
    res = mlxport_cli("package", str(models / "mlp.onnx"), "-t", "triton", "-o", str(tmp_path / "r"),
                      "--storage-uri", "s3://b/p")
    assert res.returncode == 2 and "--storage-uri is for --target kserve, not --target triton" in res.stderr
    res = mlxport_cli("package", str(models / "mlp.onnx"), "-t", "kserve", "-o", str(tmp_path / "k"),
                      "--storage-uri", "s3://b/models", "--cpu", "2")
    assert res.returncode == 0, res.stderr
    assert "storageUri: s3://b/models" in (tmp_path / "k" / "inferenceservice.yaml").read_text()
    assert not (tmp_path / "r").exists()
