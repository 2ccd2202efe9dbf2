"""``mlxport generate``: text from an exported LM folder (ONNX Runtime GenAI, or mlxport's ONNX Runtime loop)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def configure_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxport generate", description="Generate text from a folder written by `mlxport export-lm`, "
        "streaming it to stdout.")
    parser.add_argument("folder", help="the exported LM folder")
    parser.add_argument("--prompt", required=True, help="the prompt text")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt as a user message in the chat template")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens to generate at most (default 64)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (default 1)")
    parser.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0: all)")
    parser.add_argument("--stop", action="append", default=[], help="stop at this string (repeatable)")
    parser.add_argument("--seed", type=int, help="random seed for sampling")
    parser.add_argument("--backend", default="auto", choices=["auto", "genai", "onnxruntime"],
                        help="ONNX Runtime GenAI or mlxport's loop on ONNX Runtime (default: GenAI when installed)")
    parser.add_argument("--threads", type=int, help="intra-op threads of either backend (default: the folder's "
                        "genai_config.json, else the runtime's own choice)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = configure_parser().parse_args(argv)
    import time

    from ..lm.generate import GenerationConfig, LMRunner
    from . import UsageError

    config = GenerationConfig(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                              top_k=args.top_k, stop=args.stop, seed=args.seed)
    try:
        config.check()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    lm = LMRunner(args.folder, backend=args.backend, threads=args.threads)
    prompt = lm.apply_chat_template([{"role": "user", "content": args.prompt}]) if args.chat else args.prompt
    start, count, reason = time.perf_counter(), 0, "length"
    try:
        for chunk in lm.stream(prompt, config):
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
            count += chunk.token is not None
            reason = chunk.finish_reason or reason
    except ValueError as exc:  # the prompt does not fit the context, or an empty prompt
        raise UsageError(str(exc), hint="Shorten the prompt or lower --max-tokens.") from None
    seconds = time.perf_counter() - start
    print(f"\n[{lm.backend}: {count} tokens in {seconds:.2f} s, {count / max(seconds, 1e-9):.1f} tok/s, "
          f"finish: {reason}]", file=sys.stderr)
    return 0
