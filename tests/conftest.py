"""Test-suite wide settings: the versions header, xdist groups for modules that share one expensive fixture."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

# Modules whose module- or session-scoped fixtures convert, export or start something expensive: with
# `pytest -n 2 --dist loadgroup` each group runs on one worker, so the fixture is built once, not per worker.
GROUPS = {
    "tests/lm": "lm",
    "tests/tflite/test_tflite_zoo.py": "tflite_zoo",
    "tests/tflite/test_seed_example.py": "tflite_seed",
    "tests/models/test_torch_formats.py": "torch_formats",
    "tests/registry/test_mlflow.py": "mlflow",
    "tests/serve/test_openai.py": "openai",
    "tests/package": "package",
    "tests/serve/test_fuzz.py": "fuzz",
}
_ROOT = Path(__file__).resolve().parent.parent

# The packages whose releases have broken us or may: printed at the top of every run (CI's log included),
# each beside its pin in constraints.txt when the installed version differs from it.
KEY_PACKAGES = ("mlx", "numpy", "onnx", "onnxruntime", "onnxruntime-genai", "mlx-lm", "torch", "tensorflow-cpu",
                "ai-edge-litert", "onnx2tf", "coremltools", "transformers", "starlette", "uvicorn", "mlflow", "ray",
                "pytest", "pytest-xdist", "schemathesis", "hypothesis")


def _pins() -> dict[str, str]:
    path = _ROOT / "constraints.txt"
    if not path.exists():
        return {}
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def pytest_report_header(config: pytest.Config) -> list[str]:
    pins = _pins()
    found, drift = [], []
    for name in KEY_PACKAGES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(f"{name} {version}")
        pin = pins.get(name)
        if pin and version.split("+")[0] != pin.split("+")[0]:
            drift.append(f"{name} {version} (constraints.txt: {pin})")
    lines = [f"python {sys.version.split()[0]}; key packages: " + ", ".join(found)]
    if drift:
        lines.append("NOT the pinned set (install with `pip install -c constraints.txt \".[test]\"`): "
                     + ", ".join(drift))
    return lines


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        rel = Path(str(item.fspath)).resolve().relative_to(_ROOT).as_posix()
        for prefix, group in GROUPS.items():
            if rel == prefix or rel.startswith(prefix + "/"):
                item.add_marker(pytest.mark.xdist_group(group))
                break
