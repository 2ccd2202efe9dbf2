"""``mlxport validate``: re-run an exported artifact against the MLX callable it was exported from."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..formats import suffix_list

EXAMPLES = """examples:
  mlxport validate model.onnx --against mypkg.models:build_model
  mlxport validate model.mlxfn --against models.py:MLP --atol 1e-4
"""


def configure_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxport validate", description="Run an artifact and the MLX callable on the same inputs, shaped "
        "from the artifact's metadata (<artifact>.mlxport.json): at the example size of each dynamic axis and "
        "at a second size. Prints every output's max error; exits 1 if any exceeds the tolerance. A Core ML "
        "package off macOS is checked by structure (inputs, outputs, ranges) and exits 0 with a note.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", help=f"an artifact: {suffix_list()}")
    parser.add_argument("--against", required=True, metavar="MODULE:ATTR",
                        help="the MLX model or function (as for `mlxport export`)")
    parser.add_argument("--example", metavar="FILE.npz", help="input values for the example-size run")
    parser.add_argument("--atol", type=float, help="absolute tolerance (default by output dtype)")
    parser.add_argument("--rtol", type=float, help="relative tolerance (default by output dtype)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = configure_parser().parse_args(argv)
    from .common import validate_artifact

    result = validate_artifact(args.artifact, args.against, atol=args.atol, rtol=args.rtol,
                               example=args.example, seed=args.seed)
    print(result)
    if not result.ok:
        bad = sum(not o.ok for r in result.runs for o in r.outputs)
        print(f"error: {bad} output check{'s' if bad > 1 else ''} failed against MLX\n"
              "hint: pass --atol/--rtol to accept a larger error, or re-export the artifact", file=sys.stderr)
        return 1
    return 0
