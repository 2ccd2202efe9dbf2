"""The README's quick start and CI agree: `.ci/run` runs the README's test command, pinned by constraints.txt."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _quick_start() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the README's quick start has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_is_two_commands() -> None:
    commands = _quick_start()
    assert len(commands) == 2, commands
    assert "mlxport demo" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _quick_start()[1] in ci, "`.ci/run` must run the README's test command, as written"


def test_test_install_is_pinned() -> None:
    """Every pip install of the test command resolves against constraints.txt, which pins what CI needs."""
    command = _quick_start()[1]
    installs = [part for part in command.split("&&") if "pip install" in part]
    assert installs and all("-c constraints.txt" in part for part in installs), command
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)$", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    for name in ("pytest", "pytest-xdist", "schemathesis", "hypothesis", "onnx", "onnxruntime", "mlx", "torch",
                 "tensorflow-cpu", "transformers", "onnx2tf", "tf-keras"):
        assert name in pins, f"constraints.txt does not pin {name}"
    # The no-deps packages are pinned on the command line too: both must agree.
    for name, version in re.findall(r"(tf-keras|onnx2tf)==(\S+)", command):
        assert pins[name] == version, (name, version, pins[name])
