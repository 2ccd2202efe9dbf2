"""``mlxport export``: capture an MLX callable and write any format (suffix-chosen), validated against MLX."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..formats import BY_SUFFIX, suffix_list

EXAMPLES = """examples:
  mlxport export mypkg.models:build_model --input x:1x784:float32 --dynamic x:0=batch -o model.onnx
  mlxport export models.py:MLP --input x:2x16 -o mlp.mlxfn
  mlxport export model.mlxfn -o model.onnx --opset 17
  mlxport export models.py:MLP --input x:1x784 --dynamic x:0=batch -o mlp.tflite --quantize dynamic_int8
  mlxport export models.py:MLP --input x:1x784 -o mlp.tflite --quantize int8 --calibration calib.npz
  mlxport export models.py:MLP --input x:1x784 --dynamic x:0=batch -o mlp.mlpackage --precision float16
"""


def configure_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxport export", description="Capture an MLX model or function and write it in the format the "
        f"output suffix names ({suffix_list()}); then compare it with MLX at the example size and, for dynamic "
        "axes, a second size.", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    req = parser.add_argument_group("required arguments")
    req.add_argument("target", help="MODULE:ATTR (or FILE.py:ATTR) naming an nn.Module, a class or zero-argument "
                     "factory returning a module or function, or the function itself; or an .mlxfn file")
    req.add_argument("-o", "--output", required=True, help=f"the file to write: {suffix_list()}")
    opt = parser.add_argument_group("optional arguments")
    opt.add_argument("--input", dest="inputs", action="append", default=[], metavar="NAME:SHAPE[:DTYPE]",
                     help="one example input per array argument, in order, e.g. x:1x784:float32 (dtype "
                     "default float32; SHAPE 'scalar' for 0-d); values are random normal for floats, zeros "
                     "otherwise, unless --example gives them")
    opt.add_argument("--dynamic", action="append", default=[], metavar="NAME:AXIS=SYMBOL",
                     help="mark an input axis dynamic, e.g. x:0=batch (repeatable; a shared SYMBOL means "
                     "the same size)")
    opt.add_argument("--example", metavar="FILE.npz", help="example input values, one array per input name")
    opt.add_argument("--opset", type=int, help=".onnx only: ONNX opset (default: the newest ONNX Runtime runs "
                     "on CPU; >= 17)")
    opt.add_argument("--output-names", action="append", metavar="NAME[,NAME...]",
                     help="names of the outputs, comma-separated (or the option repeated)")
    opt.add_argument("--no-validate", dest="validate", action="store_false",
                     help="skip the comparison with MLX (not recommended)")
    opt.add_argument("--atol", type=float, help="absolute tolerance (default by output dtype)")
    opt.add_argument("--rtol", type=float, help="relative tolerance (default by output dtype)")
    opt.add_argument("--external-data", action="store_true",
                     help=".onnx only: write the weights to <output>.data (default: only above ~1.8 GB)")
    opt.add_argument("--no-optimize", dest="optimize", action="store_false",
                     help=".onnx only: skip constant folding and layout clean-up in the ONNX graph")
    opt.add_argument("--quantize", choices=["float32", "float16", "dynamic_int8", "int8"],
                     help=".tflite only: float32 (default), float16 weights, dynamic_int8 (int8 weights) or int8 "
                     "(int8 weights and activations, float32 inputs/outputs; needs --calibration)")
    opt.add_argument("--calibration", metavar="FILE.npz",
                     help="representative inputs for --quantize int8, one array per input name: N whole inputs "
                     "stacked on a new first axis, or N rows of the batch axis (never downloaded)")
    opt.add_argument("--precision", choices=["float32", "float16"],
                     help=f"{BY_SUFFIX['.mlpackage'].suffix} only: Core ML compute precision (default float32)")
    opt.add_argument("--seed", type=int, default=0, help="seed of the random example values (default 0)")
    opt.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = configure_parser().parse_args(argv)
    if args.output_names:
        args.output_names = [n for item in args.output_names for n in item.split(",") if n]
    from .common import export_target

    report = export_target(**vars(args))
    print(report)
    return 0
