"""Bad input gives clear errors, and nothing is ever written outside the output folder (or half-written)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from mlxport.package import TARGETS, MissingDependencyError, PackageError, build, package

from .helpers import mlxport_cli, tree


@pytest.fixture
def work(models: Path, tmp_path: Path) -> Path:
    """A private copy of mlp.onnx and its sidecar in tmp_path/src."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("mlp.onnx", "mlp.onnx.mlxport.json"):
        shutil.copyfile(models / name, src / name)
    return tmp_path


@pytest.mark.parametrize("target", list(TARGETS))
def test_nothing_is_written_outside_the_output_folder(work: Path, target: str) -> None:
    before = tree(work)
    artifact = (work / "src" / "mlp.onnx").read_bytes()
    bundle = build(work / "src" / "mlp.onnx", target, work / "out" / "deep")
    after = tree(work)
    added = sorted(set(after) - set(before))
    assert added and all(p == "out" or p.startswith("out/deep") for p in added), added
    assert {k: v for k, v in after.items() if k in before} == before
    assert (work / "src" / "mlp.onnx").read_bytes() == artifact
    assert all(f.is_file() and (work / "out" / "deep") in f.parents for f in bundle.files)
    assert not list(work.rglob(".mlxport-package-*"))


def test_unknown_target(work: Path) -> None:
    with pytest.raises(PackageError, match=r"unknown target 'sagemkr'; choose one of sagemaker, triton, kserve, "
                                           r"edge \(did you mean sagemaker\?\)"):
        package(work / "src" / "mlp.onnx", "sagemkr", work / "out")
    res = mlxport_cli("package", str(work / "src" / "mlp.onnx"), "-t", "docker", "-o", str(work / "out"))
    assert res.returncode == 2 and "invalid choice: 'docker'" in res.stderr
    assert not (work / "out").exists()


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", "/abs", "a\\b", ".hidden", "", "x" * 129])
@pytest.mark.parametrize("target", ["triton", "edge"])
def test_unsafe_names_are_refused(work: Path, name: str, target: str) -> None:
    before = tree(work)
    with pytest.raises(PackageError, match="--name must be 1-128 letters, digits"):
        package(work / "src" / "mlp.onnx", target, work / "out", name=name)
    assert tree(work) == before


def test_output_folder_over_or_inside_the_artifact(work: Path) -> None:
    artifact = work / "src" / "mlp.onnx"
    with pytest.raises(PackageError, match="is a file; give a folder"):
        package(artifact, "sagemaker", artifact)
    with pytest.raises(PackageError, match="is inside the artifact"):
        package(artifact, "sagemaker", artifact / "sub")
    # The edge bundle would write src/mlp.onnx over the artifact itself.
    with pytest.raises(PackageError, match="would overwrite the artifact") as e:
        package(artifact, "edge", work / "src", force=True)
    assert "--name" in e.value.hint
    # A version folder that holds the artifact being packaged.
    repo = work / "repo"
    package(artifact, "triton", repo)
    with pytest.raises(PackageError, match="would overwrite the artifact"):
        package(repo / "mlp" / "1" / "model.onnx", "triton", repo, name="mlp", force=True)
    assert (repo / "mlp" / "1" / "model.onnx").read_bytes() == artifact.read_bytes()
    # A different name into a folder beside it is fine.
    assert package(artifact, "edge", work / "src", name="mlp_edge").name == "src"


def test_existing_entries_need_force(work: Path) -> None:
    artifact = work / "src" / "mlp.onnx"
    out = package(artifact, "sagemaker", work / "dist")
    (out / "keep.txt").write_text("mine")
    with pytest.raises(PackageError, match=r"already there: .*model\.tar\.gz.*Dockerfile") as e:
        package(artifact, "sagemaker", out)
    assert "--force" in e.value.hint
    (out / "Dockerfile").write_text("stale")
    package(artifact, "sagemaker", out, force=True)
    assert (out / "Dockerfile").read_text().startswith("# Built by") and (out / "keep.txt").read_text() == "mine"


def test_symlink_out_of_the_output_folder_is_refused(work: Path) -> None:
    outside = work / "outside"
    outside.mkdir()
    repo = work / "repo"
    repo.mkdir()
    (repo / "mlp").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PackageError, match="leads outside the output folder"):
        package(work / "src" / "mlp.onnx", "triton", repo)
    assert list(outside.iterdir()) == []


def test_a_failure_leaves_nothing_half_written(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlxport.package.sagemaker as sagemaker

    def broken(source, name, path):  # writes part of the archive, then fails
        path.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(sagemaker, "write_model_tar", broken)
    with pytest.raises(OSError, match="disk full"):
        package(work / "src" / "mlp.onnx", "sagemaker", work / "new")
    assert not (work / "new").exists()
    (work / "old").mkdir()
    (work / "old" / "keep.txt").write_text("mine")
    with pytest.raises(OSError, match="disk full"):
        package(work / "src" / "mlp.onnx", "sagemaker", work / "old")
    assert tree(work / "old") == {"keep.txt": 4}


def test_changed_or_missing_artifacts(work: Path, models: Path) -> None:
    with pytest.raises(PackageError, match="no such artifact"):
        package(work / "src" / "nope.onnx", "triton", work / "out")
    artifact = work / "src" / "mlp.onnx"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    with pytest.raises(PackageError, match="does not match the sha256 in mlp.onnx.mlxport.json") as e:
        package(artifact, "sagemaker", work / "out")
    assert "Export it again" in e.value.hint
    shutil.copyfile(models / "wide.onnx", work / "src" / "wide.onnx")
    with pytest.raises(PackageError, match=r"keeps its weights in .*wide\.onnx\.data, which is missing"):
        package(work / "src" / "wide.onnx", "edge", work / "out")
    assert not (work / "out").exists()


def test_external_data_that_climbs_out_is_refused(models: Path, tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(models / "wide.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../secret.data"
    onnx.save(model, str(tmp_path / "evil.onnx"))
    with pytest.raises(PackageError, match="names the external data file '../secret.data'"):
        package(tmp_path / "evil.onnx", "edge", tmp_path / "out")


def test_missing_extras(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    artifact = work / "src" / "mlp.onnx"
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)
    with pytest.raises(MissingDependencyError, match="needs tritonclient") as e:
        package(artifact, "triton", work / "repo")
    assert "pip install 'tritonclient[grpc]'" in e.value.hint and "--no-validate" in e.value.hint
    assert package(artifact, "triton", work / "repo", validate=False).is_dir()
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(MissingDependencyError, match="PyYAML") as e:
        package(artifact, "kserve", work / "k8s")
    assert e.value.hint == "pip install pyyaml"
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    (work / "src" / "m.tflite").write_bytes(b"TFL3")
    with pytest.raises(MissingDependencyError, match="LiteRT") as e:
        package(work / "src" / "m.tflite", "edge", work / "edge")
    assert e.value.hint == "pip install ai-edge-litert"
    assert not (work / "k8s").exists() and not (work / "edge").exists()


def test_option_for_another_target(work: Path) -> None:
    with pytest.raises(PackageError, match=r"--target edge does not take storage_uri \(storage_uri is for kserve\)"):
        package(work / "src" / "mlp.onnx", "edge", work / "out", storage_uri="s3://b/p")
    with pytest.raises(PackageError, match="version is for triton"):
        package(work / "src" / "mlp.onnx", "kserve", work / "out", version=2)


def test_cli_help_and_errors(work: Path) -> None:
    res = mlxport_cli("--help")
    assert res.returncode == 0 and "package " in res.stdout
    res = mlxport_cli("package", "--help")
    assert res.returncode == 0 and "--target" in res.stdout and "--storage-uri" in res.stdout
    res = mlxport_cli("package", str(work / "src" / "mlp.onnx"), "-t", "edge", "-o", str(work / "out"),
                      "--name", "../x")
    assert res.returncode == 1 and "error: --name must be" in res.stderr and "Traceback" not in res.stderr
    res = mlxport_cli("package", str(work / "src" / "mlp.onnx"), "-t", "triton", "-o", str(work / "repo"),
                      "--version", "0")
    assert res.returncode == 1 and "--version must be a whole number >= 1" in res.stderr
    res = mlxport_cli("package", str(work / "src" / "mlp.onnx"), "-t", "triton", "-o", str(work / "repo"),
                      "--version", "3", "--instances", "2")
    assert res.returncode == 0, res.stderr
    assert f"{work / 'repo' / 'mlp' / '3' / 'model.onnx'}" in res.stdout and "note: serve it:" in res.stdout
