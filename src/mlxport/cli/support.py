"""The support table, generated from the translation registry (``mlxport ops`` and docs/ops.md)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

REGENERATE = "mlxport ops --format md --output docs/ops.md"


@dataclass
class Row:
    primitive: str
    family: str
    opsets: str
    doc: str
    torch: str = ""


def _torch_primitives() -> set[str] | None:
    """Primitives the torch target translates, or None when PyTorch is not installed."""
    from ..targets.torch.context import TORCH

    try:
        return set(TORCH.registrations())
    except ImportError:
        return None


def _opset_range(start: int, stop: int | None) -> str:
    if stop is None:
        return f"{start}+"
    return str(start) if stop == start else f"{start}-{stop}"


def support_rows() -> list[Row]:
    """One row per reachable (primitive, opset range), sorted by primitive."""
    from ..exporters.onnx import MIN_OPSET
    from ..targets.onnx.context import ONNX

    torch = _torch_primitives()
    rows = []
    for primitive, entries in ONNX.registrations().items():
        for i, reg in enumerate(entries):
            nxt = entries[i + 1].since if i + 1 < len(entries) else None
            start = max(reg.since, MIN_OPSET)
            stop = None if nxt is None else nxt - 1
            if stop is not None and stop < start:
                continue  # shadowed below the lowest opset mlxport writes
            in_torch = "n/a" if torch is None else ("yes" if primitive in torch else "")
            rows.append(Row(primitive, reg.family, _opset_range(start, stop), reg.doc, in_torch))
    return rows


def _header(rows: list[Row]) -> tuple[str, str]:
    from ..exporters.onnx import DEFAULT_OPSET, MIN_OPSET

    primitives = len({r.primitive for r in rows})
    families = Counter(r.family for r in {r.primitive: r for r in rows}.values())
    summary = (f"{primitives} MLX primitives have an ONNX translation "
               f"({', '.join(f'{f} {n}' for f, n in sorted(families.items()))}).")
    opsets = (f"mlxport writes ONNX opset {MIN_OPSET} or newer (default {DEFAULT_OPSET}); a primitive has one "
              "row per opset range where its translation changes. The torch column says whether the torch "
              "target (.pt TorchScript, .pt2 torch.export) translates it too.")
    return summary, opsets


def format_support(fmt: str = "text", primitives: list[str] | None = None) -> str:
    """The table as Markdown (``md``, the docs/ops.md text) or aligned plain text."""
    rows = support_rows()
    if primitives:
        rows = [r for r in rows if r.primitive in primitives]
    summary, opsets = _header(support_rows())
    if fmt == "md":
        lines = ["# Supported MLX primitives", "",
                 f"Generated from the translation registry by `{REGENERATE}`; do not edit by hand.", "",
                 summary, opsets, "Each translation's line says what the primitive's `arguments` hold and "
                 "which ONNX ops it emits. To add one, see [adding_ops.md](adding_ops.md).", "",
                 "| Primitive | Family | Opsets | torch | Translation |", "|---|---|---|---|---|"]
        for r in rows:
            doc = r.doc.replace("|", "\\|")
            lines.append(f"| `{r.primitive}` | {r.family} | {r.opsets} | {r.torch} | {doc} |")
        return "\n".join(lines) + "\n"
    if fmt != "text":
        raise ValueError(f"format must be 'md' or 'text'; got {fmt!r}")
    widths = [max([len(h)] + [len(getattr(r, a)) for r in rows])
              for h, a in (("primitive", "primitive"), ("family", "family"), ("opsets", "opsets"))]
    head = "  ".join(h.ljust(w) for h, w in zip(("primitive", "family", "opsets"), widths)) + "  translation"
    lines = [summary, opsets, "", head, "-" * len(head)]
    for r in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip((r.primitive, r.family, r.opsets), widths)) + "  " + r.doc)
    return "\n".join(lines) + "\n"
