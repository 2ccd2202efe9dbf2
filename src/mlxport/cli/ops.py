"""``mlxport ops``: the support table of MLX primitives, generated from the translation registry."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Sequence

from . import UsageError


def configure_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxport ops", description="List the MLX primitives mlxport translates to ONNX: family, the opset "
        "ranges of each translation and what it emits. docs/ops.md is this table in Markdown.")
    parser.add_argument("primitives", nargs="*", metavar="PRIMITIVE",
                        help="show only these primitives (exact MLX names; 'list' shows all)")
    parser.add_argument("--format", choices=("text", "md"), default="text", help="output format (default text)")
    parser.add_argument("-o", "--output", help="write the table to this file instead of stdout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = configure_parser().parse_args(argv)
    from .support import format_support, support_rows

    wanted = [p for p in args.primitives if p != "list"]
    known = {r.primitive for r in support_rows()}
    unknown = [p for p in wanted if p not in known]
    if unknown:
        close = sorted({m for p in unknown for m in difflib.get_close_matches(p, known, n=3)})
        raise UsageError(f"no ONNX translation is registered for {', '.join(unknown)}",
                         (f"Close names: {', '.join(close)}. " if close else "")
                         + "Names are MLX primitive names, e.g. Add, Matmul; run `mlxport ops` for all.")
    text = format_support(args.format, wanted or None)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
