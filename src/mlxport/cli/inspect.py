"""``mlxport inspect``: inputs, outputs, opsets, node counts, weights, size and metadata of an artifact."""

from __future__ import annotations

import argparse
import json
from typing import Sequence

from ..formats import suffix_list


def configure_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxport inspect", description="Describe an exported artifact without running it: inputs and "
        "outputs (with symbolic dims), node counts by op type (ONNX: opsets, initializers, external data; "
        "Core ML: ranges, also off macOS), sizes, and the metadata mlxport wrote beside it "
        "(<artifact>.mlxport.json), including whether the file still matches its recorded sha256.")
    parser.add_argument("artifact", help=f"an artifact: {suffix_list()}")
    parser.add_argument("--json", action="store_true", help="print the description as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = configure_parser().parse_args(argv)
    from ..inspect import format_inspection, inspect_artifact

    info = inspect_artifact(args.artifact)
    print(json.dumps(info, indent=2, default=str) if args.json else format_inspection(info))
    return 0
