"""docs/ops.md is the support table generated from the registry, not a hand-kept copy."""

from __future__ import annotations

from pathlib import Path

from mlxport.cli.support import REGENERATE, format_support

DOC = Path(__file__).resolve().parents[2] / "docs" / "ops.md"


def test_ops_doc_is_up_to_date() -> None:
    assert DOC.read_text() == format_support("md"), f"docs/ops.md is stale; regenerate it with `{REGENERATE}`"


def test_every_translation_has_a_docstring() -> None:
    from mlxport.cli.support import support_rows

    missing = sorted({r.primitive for r in support_rows() if not r.doc})
    assert not missing, f"translations without a one-line docstring (STYLE.md §2): {missing}"
