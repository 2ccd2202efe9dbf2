"""The local repository: atomic pushes, lineage, aliases with rollback, resolve, and what the server sees."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mlxport.registry import (AliasChange, InvalidNameError, ModelSpec, NotFoundError, RegistryError, parse_spec,
                              resolve)
from mlxport.registry.local import LocalRegistry, _host_tag, clean_stale
from mlxport.artifact import file_sha256
from mlxport.runners import load


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return load(path)(x)[0]


def test_push_writes_numbered_versions_with_lineage(tmp_path: Path, artifact: Path) -> None:
    reg = LocalRegistry(tmp_path / "repo")
    first = reg.push(artifact, "digits")
    second = reg.push(artifact, "digits", description="retrained")
    assert (first.version, second.version) == (1, 2)
    assert (first.parent, second.parent) == (None, 1)
    folder = tmp_path / "repo" / "digits" / "2"
    assert sorted(p.name for p in folder.iterdir()) == ["digits.onnx", "digits.onnx.mlxport.json", "version.json"]
    record = json.loads((folder / "version.json").read_text())
    side = json.loads(Path(str(artifact) + ".mlxport.json").read_text())
    assert record["version"] == 2 and record["artifact"] == "digits.onnx" and record["description"] == "retrained"
    assert record["source"] == side["source"] == "Sequential"
    assert record["mlx_version"] == side["mlx_version"] and record["mlx_version"]
    assert record["validation"] == side["validation"] and record["verdict"].startswith("passed (max abs")
    assert record["source_artifact"] == str(artifact.resolve())
    assert record["pushed_by"] and record["pushed_at"].startswith("20")
    # sha256 of every file in the folder except the record itself, and the size is theirs
    assert record["sha256"] == {p.name: file_sha256(p) for p in folder.iterdir() if p.name != "version.json"}
    assert record["sha256"]["digits.onnx"] == side["sha256"]
    assert record["size"] == sum((folder / n).stat().st_size for n in record["sha256"])
    x = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    np.testing.assert_array_equal(_run(folder / "digits.onnx", x), _run(artifact, x))


def test_promote_rollback_walks_back_the_alias_history(tmp_path: Path, artifact: Path) -> None:
    reg = LocalRegistry(tmp_path / "repo")
    for _ in range(3):
        reg.push(artifact, "digits")
    assert reg.promote("digits", 1) == AliasChange("digits", "production", 1, None, "promote")
    reg.promote("digits", "2")
    assert reg.promote("digits", 3).previous == 2
    reg.promote("digits", 1, alias="staging")
    assert [(v.version, v.aliases) for v in reg.versions("digits")] == [(1, ["staging"]), (2, []), (3, ["production"])]
    assert reg.rollback("digits") == AliasChange("digits", "production", 2, 3, "rollback")
    assert reg.show("digits@production").version == 2
    assert reg.rollback("digits", "production").version == 1
    with pytest.raises(RegistryError, match="no previous version to roll back to"):
        reg.rollback("digits")
    with pytest.raises(RegistryError, match="no previous version"):
        reg.rollback("digits", alias="staging")
    state = json.loads((tmp_path / "repo" / "digits" / "aliases.json").read_text())
    assert state["aliases"] == {"production": 1, "staging": 1}
    assert [(e["action"], e["alias"], e["version"], e["previous"]) for e in state["history"]] == [
        ("promote", "production", 1, None), ("promote", "production", 2, 1), ("promote", "production", 3, 2),
        ("promote", "staging", 1, None), ("rollback", "production", 2, 3), ("rollback", "production", 1, 2)]
    assert not [p for p in (tmp_path / "repo" / "digits").iterdir() if p.name.startswith(".tmp-")]


def test_rollback_skips_versions_removed_by_hand(tmp_path: Path, artifact: Path) -> None:
    import shutil

    reg = LocalRegistry(tmp_path / "repo")
    for v in range(1, 4):
        reg.push(artifact, "digits")
        reg.promote("digits", v)
    shutil.rmtree(tmp_path / "repo" / "digits" / "2")
    assert reg.rollback("digits").version == 1


def test_show_fetch_and_resolve(tmp_path: Path, artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "repo"
    reg = LocalRegistry(root)
    reg.push(artifact, "digits")
    reg.push(artifact, "digits")
    reg.promote("digits", 1)
    assert reg.show("digits").version == 2
    assert reg.show("digits@latest").version == 2
    assert reg.show("digits/1").aliases == ["production"]
    assert reg.fetch("digits@production") == root / "digits" / "1" / "digits.onnx"
    assert resolve("digits@production", repo=root) == root / "digits" / "1" / "digits.onnx"
    assert resolve("digits/2", repo=root) == root / "digits" / "2" / "digits.onnx"
    monkeypatch.setenv("MLXPORT_REPO", str(root))
    assert resolve("digits@production") == root / "digits" / "1" / "digits.onnx"
    assert resolve(artifact) == artifact  # an existing path is served as it is
    with pytest.raises(NotFoundError, match="no such model path"):
        resolve("digits")  # a bare name is a path; the registry needs NAME@ALIAS or NAME/VERSION
    monkeypatch.chdir(tmp_path)
    assert LocalRegistry().root == root  # $MLXPORT_REPO
    monkeypatch.delenv("MLXPORT_REPO")
    assert LocalRegistry().root == Path("mlxport-repo")


@pytest.mark.parametrize("name", ["../evil", "a/b", "", "..", ".hidden", "123", "a b", "x" * 200, "/abs"])
def test_bad_model_names_are_refused(tmp_path: Path, artifact: Path, name: str) -> None:
    reg = LocalRegistry(tmp_path / "repo")
    with pytest.raises(InvalidNameError, match="model name must match"):
        reg.push(artifact, name)
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())
    assert not (tmp_path / "evil").exists()


def test_bad_specs_aliases_and_unknowns(tmp_path: Path, artifact: Path) -> None:
    reg = LocalRegistry(tmp_path / "repo")
    reg.push(artifact, "digits")
    for alias in ("latest", "v3", "7", "a b", "", "../x"):
        with pytest.raises(InvalidNameError):
            reg.promote("digits", 1, alias=alias)
    with pytest.raises(InvalidNameError, match="version must be a whole number"):
        reg.promote("digits", "1.5")
    with pytest.raises(NotFoundError, match="has no version 9; versions: 1"):
        reg.promote("digits", 9)
    with pytest.raises(NotFoundError, match="no alias 'production'"):
        reg.show("digits@production")
    with pytest.raises(NotFoundError, match="no alias 'production'"):
        reg.rollback("digits")
    with pytest.raises(NotFoundError, match=r"no model 'mnist' .*models: digits"):
        reg.versions("mnist")
    with pytest.raises(NotFoundError, match="has no version 4"):
        reg.fetch("digits/4")
    with pytest.raises(InvalidNameError, match="empty model spec"):
        parse_spec("")
    with pytest.raises(InvalidNameError):
        parse_spec("digits/../../etc")
    assert parse_spec("models:/digits@prod") == ModelSpec("digits", alias="prod")
    assert parse_spec("digits/3") == ModelSpec("digits", version=3)
    assert str(parse_spec("digits@prod")) == "digits@prod"


def test_bad_artifacts_are_refused_and_leave_nothing(tmp_path: Path, artifact: Path) -> None:
    reg = LocalRegistry(tmp_path / "repo")
    with pytest.raises(NotFoundError, match="no such artifact"):
        reg.push(tmp_path / "missing.onnx", "digits")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(RegistryError, match="expected an exported artifact"):
        reg.push(text, "digits")
    data = bytearray(artifact.read_bytes())
    data[-1] ^= 0xFF
    artifact.write_bytes(bytes(data))  # changed after export: the metadata's sha256 no longer matches
    with pytest.raises(RegistryError, match="does not match the sha256 in its metadata"):
        reg.push(artifact, "digits")
    assert [p.name for p in (tmp_path / "repo" / "digits").iterdir()] == []  # no version, no temporary folder


def test_push_without_metadata_and_with_external_data(tmp_path: Path) -> None:
    import mlx.core as mx
    import mlx.nn as nn

    import mlxport

    mx.random.seed(1)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    mx.eval(model.parameters())
    src = tmp_path / "src" / "wide.onnx"
    src.parent.mkdir()
    mlxport.export(model, (mx.random.normal((1, 64)),), src, external_data=True)
    assert Path(str(src) + ".data").exists()
    reg = LocalRegistry(tmp_path / "repo")
    info = reg.push(src, "wide")
    folder = Path(info.location)
    # the artifact is renamed after the model; its weights file keeps the name the ONNX file refers to
    assert sorted(p.name for p in folder.iterdir()) == ["version.json", "wide.onnx", "wide.onnx.data",
                                                        "wide.onnx.mlxport.json"]
    x = np.ones((1, 64), np.float32)
    np.testing.assert_array_equal(_run(folder / "wide.onnx", x), _run(src, x))
    bare = tmp_path / "bare" / "plain.onnx"
    bare.parent.mkdir()
    bare.write_bytes(src.read_bytes())
    info = reg.push(bare, "plain")
    assert info.verdict == "unknown (no metadata file)"
    assert info.lineage["mlx_version"] is None and list(info.lineage["sha256"]) == ["plain.onnx"]


def test_concurrent_pushes_get_distinct_versions(tmp_path: Path, artifact: Path) -> None:
    root = tmp_path / "repo"
    barrier = threading.Barrier(6)
    results: list[int] = []
    errors: list[BaseException] = []

    def push() -> None:
        try:
            barrier.wait(10)
            results.append(LocalRegistry(root).push(artifact, "digits").version)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=push) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    versions = LocalRegistry(root).versions("digits")
    assert [v.version for v in versions] == [1, 2, 3, 4, 5, 6]
    assert [v.parent for v in versions] == [None, 1, 2, 3, 4, 5]
    assert all(v.lineage["version"] == v.version for v in versions)
    assert not [p for p in (root / "digits").iterdir() if p.name.startswith(".push-")]


def test_kill_9_during_push_leaves_no_visible_version(tmp_path: Path, artifact: Path) -> None:
    from mlxport.serve.repository import ModelEntry

    big = tmp_path / "big.onnx"
    with open(big, "wb") as f:
        f.truncate(4 << 30)  # sparse: takes no disk, but copying and hashing it takes seconds
    root = tmp_path / "repo"
    model_dir = root / "digits"
    script = ("import sys; from mlxport.registry.local import LocalRegistry; "
              "LocalRegistry(sys.argv[1]).push(sys.argv[2], 'digits')")
    proc = subprocess.Popen([sys.executable, "-c", script, str(root), str(big)])
    partial = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and partial is None:
            assert proc.poll() is None, "the push finished (or failed) before it could be killed"
            copies = list(model_dir.glob(".push-*/digits.onnx")) if model_dir.exists() else []
            if copies and copies[0].stat().st_size > (8 << 20):
                partial = copies[0]
            time.sleep(0.005)
        assert partial is not None, "no partial copy appeared within 60 s"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert partial.exists() and partial.stat().st_size < big.stat().st_size  # half-written, but hidden
    assert ModelEntry("digits", model_dir).on_disk() == {}  # what the server's scan sees
    assert LocalRegistry(root).versions("digits") == []
    info = LocalRegistry(root).push(artifact, "digits")
    assert info.version == 1 and info.parent is None
    assert not list(model_dir.glob(".push-*"))  # the dead push's folder was cleaned up
    assert set(ModelEntry("digits", model_dir).on_disk()) == {"1"}


def test_clean_stale_keeps_live_pushes(tmp_path: Path) -> None:
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait()
    tag = _host_tag()
    live = tmp_path / f".push-{tag}-1-aaaa"             # pid 1 is always alive
    own = tmp_path / f".push-{tag}-{os.getpid()}-bbbb"  # a push in another thread of this process
    dead = tmp_path / f".push-{tag}-{dead_pid.pid}-cccc"
    foreign = tmp_path / ".push-0000ffff-1-dddd"         # another host: only age counts
    old_foreign = tmp_path / ".push-0000ffff-1-eeee"
    tmp_file = tmp_path / f".tmp-{tag}-{dead_pid.pid}-ffff"
    for d in (live, own, dead, foreign, old_foreign):
        d.mkdir()
    tmp_file.write_text("{}")
    (tmp_path / "3").mkdir()
    past = time.time() - 3 * 24 * 3600
    os.utime(old_foreign, (past, past))
    removed = clean_stale(tmp_path)
    assert sorted(removed) == sorted([dead.name, old_foreign.name, tmp_file.name])
    assert live.exists() and own.exists() and foreign.exists() and (tmp_path / "3").exists()


def test_the_server_serves_the_repository(tmp_path: Path, artifact: Path) -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from mlxport.serve.repository import Repository, ServeOptions

    root = tmp_path / "repo"
    reg = LocalRegistry(root)
    reg.push(artifact, "digits")
    reg.push(artifact, "digits")
    reg.promote("digits", 1)
    x = np.random.default_rng(1).normal(size=(2, 16)).astype(np.float32)

    async def serve() -> tuple[str, np.ndarray]:
        with ThreadPoolExecutor(2) as pool:
            repo = Repository(ServeOptions(), pool)
            assert repo.add_source(root) == ["digits"]
            await repo.start()
            try:
                model = repo.get("digits")
                return model.version, (await model.infer({"x": x}))[0]
            finally:
                await repo.close(5)

    version, out = asyncio.run(serve())
    assert version == "2"  # the server's default is the newest version (aliases are the registry's)
    np.testing.assert_allclose(out, _run(artifact, x), rtol=1e-6, atol=1e-6)


def test_push_a_package_folder_checks_its_folder_digest(tmp_path: Path) -> None:
    from mlxport.artifact import artifact_sha256 as _dir_sha256

    package = tmp_path / "src" / "net.mlpackage"
    (package / "Data" / "weights").mkdir(parents=True)
    (package / "Manifest.json").write_text('{"version": 1}')
    (package / "Data" / "weights" / "weight.bin").write_bytes(bytes(range(256)) * 8)
    side = Path(str(package) + ".mlxport.json")
    side.write_text(json.dumps({"format": "Core ML", "sha256": _dir_sha256(package)}))
    reg = LocalRegistry(tmp_path / "repo")
    info = reg.push(package, "net")
    copy = Path(info.location) / "net.mlpackage"
    assert info.artifact == "net.mlpackage" and _dir_sha256(copy) == _dir_sha256(package)
    assert sorted(info.lineage["sha256"]) == ["net.mlpackage.mlxport.json", "net.mlpackage/Data/weights/weight.bin",
                                              "net.mlpackage/Manifest.json"]
    (package / "Manifest.json").write_text('{"version": 2}')
    with pytest.raises(RegistryError, match="does not match the sha256"):
        reg.push(package, "net")
    assert [v.version for v in reg.versions("net")] == [1]
