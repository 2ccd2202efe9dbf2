"""Every registered primitive has at least one parity case (STYLE.md §4)."""

from __future__ import annotations

from mlxport.ops.registry import registrations
from tests.ops.cases import all_cases


def test_every_registered_primitive_has_a_case() -> None:
    covered = {c.primitive for c in all_cases()}
    missing = sorted(set(registrations()) - covered)
    assert not missing, f"primitives registered without a parity case in tests/ops/test_<family>.py: {missing}"
