"""The README's and docs/cli.md's examples run as written.

The README's Python blocks run as one script; every `mlxport ...` line of its command-line block and of the
example in docs/cli.md runs in a fresh folder where `mypkg.models:build_model` is the README's MLP. Lines
that another test runs, or that start a server, are listed in SKIP with that test's name: any other new
example line is run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MYPKG = '''
import mlx.core as mx
import mlx.nn as nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(784, 256)
        self.l2 = nn.Linear(256, 10)

    def __call__(self, x):
        return self.l2(nn.relu(self.l1(x)))


def build_model():
    mx.random.seed(0)
    return MLP()
'''
# Example lines run by other tests (or that never end by themselves), with where they are tested.
SKIP = {
    "mlxport demo": "tests/cli/test_demo.py",
    "mlxport ops --format md --output docs/ops.md": "tests/cli/test_ops_doc.py",
}


def _blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), re.S)


def _readme_commands() -> list[str]:
    section = (REPO / "README.md").read_text().split("## Command line", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.startswith("mlxport ")]


def _cli_doc_commands() -> list[str]:
    return [line[2:].strip() for block in _blocks(REPO / "docs" / "cli.md", "")
            for line in block.splitlines() if line.startswith("$ mlxport ")]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLXPORT_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [".", env.get("PYTHONPATH")] if p)
    return env


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    argv = shlex.split(command)
    assert argv[0] == "mlxport", command
    return subprocess.run([sys.executable, "-m", "mlxport", *argv[1:]], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=600)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "models.py").write_text(MYPKG)
    return tmp_path


def test_readme_python_blocks_run(project: Path) -> None:
    blocks = _blocks(REPO / "README.md", "python")
    assert len(blocks) >= 2
    script = project / "readme_example.py"
    script.write_text("\n".join(blocks))
    res = subprocess.run([sys.executable, str(script)], cwd=project, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("mlp.onnx", "mlp.mlxfn", "mlp17.onnx", "model.onnx", "model.pt", "model.pt2"):
        assert (project / name).exists(), name


def test_readme_command_line_block_runs(project: Path) -> None:
    commands = _readme_commands()
    assert len(commands) >= 5
    for command in commands:
        if command in SKIP:
            continue
        res = _run(command, project)
        assert res.returncode == 0, f"{command}\n{res.stderr[-3000:]}"


def test_cli_doc_example_runs_and_prints_what_it_shows(project: Path) -> None:
    commands = _cli_doc_commands()
    assert commands, "docs/cli.md shows no `$ mlxport ...` example"
    text = (REPO / "docs" / "cli.md").read_text()
    for command in commands:
        res = _run(command, project)
        assert res.returncode == 0, f"{command}\n{res.stderr[-3000:]}"
        # The printed report has the lines the doc shows, with the same values where they are fixed.
        shown = text.split(f"$ {command}\n", 1)[1].split("```", 1)[0]
        for line in shown.splitlines():
            key = line.strip().split(":")[0]
            if key in ("opset", "onnx nodes", "primitives", "parameters", "dynamic axes"):
                assert line.strip() in res.stdout, (line, res.stdout)
