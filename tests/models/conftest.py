"""Fixtures of the model-zoo tests: a fixed seed, and REPRO=1 copies of failing exports."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import mlx.core as mx
import pytest

from .zoo import SEED


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same MLX random state."""
    mx.random.seed(SEED)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.zoo_failed = report.failed  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _repro(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """With REPRO=1, a failing test leaves its artifacts (model files, inputs.npz) in repro/models/<test>."""
    yield
    if os.environ.get("REPRO") == "1" and getattr(request.node, "zoo_failed", False) and any(tmp_path.iterdir()):
        target = Path("repro") / "models" / request.node.name.replace("/", "_")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(tmp_path, target)
