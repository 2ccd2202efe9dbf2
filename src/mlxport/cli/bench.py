"""``mlxport bench``: latency, throughput, file size and peak memory of exported artifacts, side by side."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from ..formats import FORMATS, suffix_list


def configure_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxport bench", description="Time exported artifacts with the runtime each suffix names ("
        + ", ".join(f"{f.suffix}: {f.runtime}" + ("" if f.predicts_on is None else f" ({f.predicts_on_name} only)")
                    for f in FORMATS) + ") and print one table: file size, single-sample latency p50/p99 (batch 1 when the first axis is dynamic, else "
        "the artifact's own shapes), throughput at --batch (dynamic first axis only) and the process's peak "
        "RSS. Inputs are random: normal floats, integers in [0, 10).")
    parser.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help=f"artifacts: {suffix_list()}")
    parser.add_argument("--batch", type=int, default=64, help="batch size of the throughput run (default 64)")
    parser.add_argument("--runs", type=int, default=200, help="at most this many timed calls per measurement "
                        "(default 200)")
    parser.add_argument("--seconds", type=float, default=3.0, help="at most this many seconds per measurement "
                        "(default 3)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before each measurement (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads of ONNX Runtime, LiteRT and "
                        "torch (default: their own choice); MLX ignores it")
    parser.add_argument("--json", metavar="OUT.json", help="also write the results as JSON")
    parser.add_argument("--chart", metavar="OUT.png", help="also save a bar chart (needs matplotlib)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = configure_parser().parse_args(argv)
    from ..bench import bench, check_artifacts, format_table, require_matplotlib, save_chart
    from . import UsageError

    if args.batch < 1 or args.runs < 1 or args.seconds <= 0 or args.warmup < 0 or (args.threads or 0) < 0:
        raise UsageError(f"--batch and --runs must be >= 1, --seconds > 0, --warmup and --threads >= 0; got "
                         f"--batch {args.batch} --runs {args.runs} --seconds {args.seconds} --warmup "
                         f"{args.warmup} --threads {args.threads}")
    # Fail before the timings, not after them.
    check_artifacts(args.artifacts)
    if args.chart:
        require_matplotlib()
    results = bench(args.artifacts, batch=args.batch, runs=args.runs, seconds=args.seconds, threads=args.threads,
                    warmup=args.warmup)
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"JSON: {args.json}")
    if args.chart:
        print(f"chart: {save_chart(results, args.chart)}")
    return 0
