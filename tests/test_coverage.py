"""Every registered primitive has at least one parity case (STYLE.md §4)."""

from __future__ import annotations

from mlxport.targets.onnx.context import ONNX
from tests.ops.cases import covered_primitives


def test_every_registered_primitive_has_a_case() -> None:
    covered = covered_primitives()
    missing = sorted(set(ONNX.registrations()) - covered)
    assert not missing, f"primitives registered without a parity case in tests/ops/test_<family>.py: {missing}"
