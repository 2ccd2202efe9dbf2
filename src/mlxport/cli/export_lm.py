"""``mlxport export-lm``: an mlx-lm model folder -> an ONNX decoder with KV cache, ready for ONNX Runtime GenAI."""

from __future__ import annotations

import argparse
from typing import Sequence

EXAMPLES = """examples:
  mlxport export-lm ./my-mlx-model -o ./onnx-model
  mlxport export-lm ./my-mlx-model -o ./onnx-model --precision int4
  mlxport export-lm ./my-mlx-4bit-model -o ./onnx-model --portable
"""


def configure_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxport export-lm", description="Export an mlx-lm model folder (config.json + safetensors, float or "
        "MLX-quantized) as one ONNX graph for prefill and decode with the key/value cache as inputs and outputs, "
        "plus genai_config.json and the tokenizer, so ONNX Runtime GenAI (or `mlxport generate`) runs the folder. "
        "Validated against MLX at two sizes and by greedy tokens.", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a local mlx-lm model folder (nothing is downloaded)")
    parser.add_argument("-o", "--output", required=True, help="the folder to write")
    parser.add_argument("--precision", default="source", choices=["source", "float32", "float16", "int4", "int8"],
                        help="keep the source's weights (default), cast a float model, or quantize a float model "
                             "to int4/int8 with MLX's affine quantization (MatMulNBits in ONNX)")
    parser.add_argument("--group-size", type=int, default=32, choices=[32, 64, 128],
                        help="quantization group size for --precision int4/int8 (default 32)")
    parser.add_argument("--portable", action="store_true",
                        help="standard ONNX ops at opset 17 only (no ONNX Runtime contrib ops), for any runtime")
    parser.add_argument("--no-fuse", dest="fused", action="store_false", default=None,
                        help="keep the standard attention graph (Concat cache, ONNX Attention) instead of ONNX "
                             "Runtime's fused kernels (GroupQueryAttention with an in-place cache, "
                             "SkipSimplifiedLayerNormalization, merged matmuls); --portable implies it")
    parser.add_argument("--check-tokens", type=int, default=8,
                        help="mlx-lm's greedy tokens the graph must agree with (default 8; 0 skips)")
    parser.add_argument("--threads", type=int, help="pin ONNX Runtime GenAI's intra-op threads in genai_config.json "
                        "(default: none; set them where the model runs: generate/serve --threads)")
    parser.add_argument("--single-file", dest="external_data", action="store_false",
                        help="keep the weights inside model.onnx (default: model.onnx.data beside it, which ONNX "
                             "Runtime GenAI loads faster and in less memory)")
    parser.add_argument("--no-validate", dest="validate", action="store_false", help="skip every check against MLX")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = configure_parser().parse_args(argv)
    from ..lm.export import export_lm, load_source
    from . import UsageError
    from .common import progress_printer

    if args.check_tokens < 0:
        raise UsageError(f"--check-tokens must be >= 0; got {args.check_tokens}")
    say = progress_printer(args.quiet)
    say(f"loading {args.source}")
    model, tokenizer, config = load_source(args.source)
    result = export_lm(model, tokenizer, args.output, config=config, source_folder=args.source,
                       precision=args.precision, group_size=args.group_size, portable=args.portable, fused=args.fused,
                       validate=args.validate, check_tokens=args.check_tokens, threads=args.threads,
                       external_data=args.external_data, progress=say)
    print(result.report)
    if result.greedy_match is not None:
        print(f"greedy tokens match mlx-lm: {result.greedy_match} ({len(result.greedy_tokens)} tokens)")
    for name, size in result.files.items():
        print(f"  {name:<24} {size / 1e6:10.2f} MB")
    print(f"wrote {result.folder} ({result.size / 1e6:.2f} MB); run it: mlxport generate {result.folder} --prompt ...")
    return 0
