"""``mlxport registry`` on the local repository, its flag checks, and the missing-MLflow error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlxport.cli import main
from mlxport.registry import BackendUnavailableError, resolve


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["registry", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_push_list_promote_rollback_show(tmp_path: Path, artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = str(tmp_path / "repo")
    code, out, _ = _cli(capsys, "push", str(artifact), "--name", "digits", "--repo", repo)
    assert code == 0 and "as digits version 1" in out and "validation passed" in out
    code, out, _ = _cli(capsys, "--repo", repo, "--json", "push", str(artifact), "--name", "digits",
                        "--description", "second")
    assert code == 0 and json.loads(out)["version"] == 2 and json.loads(out)["lineage"]["description"] == "second"
    code, out, _ = _cli(capsys, "promote", "digits", "1", "--repo", repo)
    assert code == 0 and out.strip() == "promote: digits@production -> version 1"
    assert "-> version 2 (was version 1)" in _cli(capsys, "promote", "digits", "2", "--repo", repo)[1]
    code, out, _ = _cli(capsys, "list", "digits", "--repo", repo)
    lines = out.splitlines()
    assert code == 0 and lines[1].split()[:4] == ["VERSION", "ALIASES", "SIZE", "VALIDATION"]
    assert lines[2].split()[:2] == ["1", "-"] and lines[3].split()[:2] == ["2", "production"]
    assert "passed (max abs" in lines[3] and "kB" in lines[3]
    code, out, _ = _cli(capsys, "rollback", "digits", "--repo", repo, "--alias", "production")
    assert code == 0 and "digits@production -> version 1 (was version 2)" in out
    code, out, _ = _cli(capsys, "show", "digits@production", "--repo", repo)
    assert code == 0 and "digits 1 (production)" in out and "mlx version:" in out and "sha256:" in out
    code, out, _ = _cli(capsys, "list", "--repo", repo, "--json")
    assert json.loads(out) == ["digits"]
    code, out, _ = _cli(capsys, "show", "digits/2", "--json", "--repo", repo)
    shown = json.loads(out)
    assert shown["version"] == 2 and shown["aliases"] == [] and shown["parent"] == 1


def test_errors_and_flag_conflicts(tmp_path: Path, artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = str(tmp_path / "repo")
    code, _, err = _cli(capsys, "push", str(artifact), "--name", "../escape", "--repo", repo)
    assert code == 1 and "model name must match" in err and "hint:" in err
    assert not (tmp_path / "escape").exists()
    code, _, err = _cli(capsys, "show", "digits@production", "--repo", repo)
    assert code == 1 and "no model 'digits'" in err
    code, _, err = _cli(capsys, "list", "--backend", "mlflow", "--repo", repo)
    assert code == 2 and "--repo" in err and "--backend is mlflow" in err
    code, _, err = _cli(capsys, "list", "--tracking-uri", "http://127.0.0.1:9", "--repo", repo)
    assert code == 2 and "--tracking-uri" in err and "--backend mlflow" in err
    code, _, err = _cli(capsys, "show", "models:/digits@production", "--backend", "local")
    assert code == 2 and "names an MLflow version" in err
    code, _, _ = _cli(capsys, "push", str(artifact))  # --name is required
    assert code == 2
    code, out, _ = _cli(capsys, "--help")
    assert code == 0 and "push" in out and "rollback" in out
    main(["--help"])
    assert "registry" in capsys.readouterr().out


def test_missing_mlflow_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
    with pytest.raises(BackendUnavailableError) as info:
        resolve("models:/digits@production", tracking_uri="http://127.0.0.1:9")
    assert "pip install 'mlxport[mlflow]'" in info.value.hint
    code, _, err = _cli(capsys, "--backend", "mlflow", "--tracking-uri", "http://127.0.0.1:9", "list")
    assert code == 1 and "needs the mlflow package" in err and "mlxport[mlflow]" in err
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, _, err = _cli(capsys, "--backend", "mlflow", "list")
    assert code == 1 and "needs a tracking server" in err and "MLFLOW_TRACKING_URI" in err


def test_the_console_command_runs(tmp_path: Path, artifact: Path) -> None:
    env = {**os.environ, "MLXPORT_REPO": str(tmp_path / "repo")}
    cmd = [sys.executable, "-m", "mlxport", "registry"]
    done = subprocess.run([*cmd, "push", str(artifact), "--name", "digits"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([*cmd, "show", "digits", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and json.loads(done.stdout)["location"] == str(tmp_path / "repo" / "digits" / "1")
