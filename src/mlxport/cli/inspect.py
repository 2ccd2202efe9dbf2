"""``mlxport inspect``: inputs, outputs, opsets, node counts, weights, size and metadata of an artifact."""

from __future__ import annotations

import argparse
import json
from typing import Sequence


def configure_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxport inspect", description="Describe an exported artifact: inputs and outputs (with symbolic "
        "dims), opsets, node counts by op type, initializers, file and external-data sizes, and the metadata "
        "mlxport wrote beside it (<artifact>.mlxport.json). For .mlxfn files the signature comes from that "
        "metadata.")
    parser.add_argument("artifact", help="an .onnx or .mlxfn file")
    parser.add_argument("--json", action="store_true", help="print the description as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = configure_parser().parse_args(argv)
    from ..inspect import format_inspection, inspect_artifact

    info = inspect_artifact(args.artifact)
    print(json.dumps(info, indent=2, default=str) if args.json else format_inspection(info))
    return 0
