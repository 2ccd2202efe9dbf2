"""Test-suite wide settings: xdist groups for modules that share one expensive fixture."""

from __future__ import annotations

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
}
_ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        rel = Path(str(item.fspath)).resolve().relative_to(_ROOT).as_posix()
        for prefix, group in GROUPS.items():
            if rel == prefix or rel.startswith(prefix + "/"):
                item.add_marker(pytest.mark.xdist_group(group))
                break
