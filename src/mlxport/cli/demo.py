"""``mlxport demo``: train the seed MLP on scikit-learn's digits, export, validate, compare and time it."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def configure_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxport demo", description="Train a 784-256-10 MLP on scikit-learn's bundled digits (upscaled to "
        "28x28) for a few seconds, export it to ONNX with a dynamic batch axis and to .mlxfn, validate both "
        "against MLX, check ONNX Runtime's test accuracy equals MLX's and time both runtimes. "
        'Needs the demo extra: pip install "mlxport[demo]".')
    parser.add_argument("-o", "--output-dir", default="mlxport-demo",
                        help="where the exported files go (default ./mlxport-demo)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default 10, ~0.5 s each)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, data split and batches")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = configure_parser().parse_args(argv)
    from ..demo import run_demo
    from .common import progress_printer

    result = run_demo(args.output_dir, epochs=args.epochs, seed=args.seed, progress=progress_printer(args.quiet))
    print(result)
    if result.onnx_accuracy != result.mlx_accuracy:
        print(f"error: ONNX Runtime's accuracy {result.onnx_accuracy:.2%} differs from MLX's "
              f"{result.mlx_accuracy:.2%}", file=sys.stderr)
        return 1
    return 0
