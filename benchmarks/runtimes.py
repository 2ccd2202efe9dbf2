"""The same models in every runtime mlxport exports to, side by side in one run, against MLX itself.

The seed MLP 784-256-10 and a small CNN are traced once with ``mlxport.trace`` and
saved as .onnx (ONNX Runtime), .pt (TorchScript), .pt2 (torch.export) and .tflite
(LiteRT: float32, float16 weights, dynamic-range int8) with a dynamic batch axis,
and as .mlxfn (MLX's own format; fixed shapes, batch 1). Each
file is timed with ``mlxport.bench.bench`` (batch-1 latency p50/p99, batch-64
throughput where the batch is dynamic, file size, peak RSS), and MLX is timed
directly on the model (eager). Ratios are against MLX: p50 latency (below 1x is
faster than MLX) and throughput (above 1x is faster). A PNG chart and the JSON go
to benchmarks/results/.

    python benchmarks/runtimes.py            # both models (minutes: a LiteRT conversion takes 10-20 s)
    python benchmarks/runtimes.py --quick    # fewer calls
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from common import MLP, RESULTS, SmallCNN, environment, write_results  # noqa: E402

MODELS: dict[str, tuple[Callable[[], Any], tuple[int, ...]]] = {
    "mlp": (MLP, (784,)),
    "cnn": (SmallCNN, (28, 28, 1)),
}
# File name ending -> save options; the LiteRT variants need the tflite extra (skipped with a note if absent).
FORMATS: dict[str, dict[str, Any]] = {
    ".onnx": {}, ".pt": {}, ".pt2": {}, ".tflite": {}, "-fp16.tflite": {"quantize": "float16"},
    "-dynint8.tflite": {"quantize": "dynamic_int8"}, ".mlxfn": {},
}
MLX_ROW = "MLX"


def time_mlx(model: Any, sample_shape: tuple[int, ...], *, batch: int, runs: int, seconds: float,
             warmup: int) -> dict[str, Any]:
    """MLX eager on the CPU device, in the same row format as ``bench``."""
    from mlxport.bench import RSSSampler, time_calls

    rng = np.random.default_rng(0)
    x1 = mx.array(rng.standard_normal((1, *sample_shape)).astype(np.float32))
    xb = mx.array(rng.standard_normal((batch, *sample_shape)).astype(np.float32))
    with RSSSampler() as rss:
        single = time_calls(lambda: mx.eval(model(x1)), runs=runs, seconds=seconds, warmup=warmup)
        batched = time_calls(lambda: mx.eval(model(xb)), runs=runs, seconds=seconds, warmup=warmup)
    return {"name": MLX_ROW, "backend": "mlx", "size_bytes": None, "latency_p50_ms": single["p50_ms"],
            "latency_p99_ms": single["p99_ms"], "latency_runs": single["runs"], "batch": batch,
            "batch_p50_ms": batched["p50_ms"], "throughput_sps": batch / (batched["p50_ms"] / 1e3),
            "peak_rss_bytes": rss.peak}


def run_model(name: str, workdir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    import mlxport
    from mlxport.bench import bench
    from mlxport.errors import MlxportError

    build, sample_shape = MODELS[name]
    mx.random.seed(0)
    model = build()
    mx.eval(model.parameters())
    model.eval()
    example = mx.zeros((1, *sample_shape))
    traced = mlxport.trace(model, (example,), dynamic_axes={"x": {0: "batch"}})
    paths, errors = [], []
    for suffix, options in FORMATS.items():
        path = workdir / f"{name}{suffix}"
        try:
            if suffix == ".mlxfn":
                # .mlxfn cannot hold a dynamic axis (see mlxport.api._format_of): batch 1 only.
                mlxport.export(model, (example,), path)
            else:
                traced.save(path, **options)
            paths.append(path)
        except (MlxportError, ImportError) as exc:
            errors.append(f"{path.name}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    rows = [time_mlx(model, sample_shape, batch=args.batch, runs=args.runs, seconds=args.seconds,
                     warmup=args.warmup)]
    rows += bench(paths, batch=args.batch, runs=args.runs, seconds=args.seconds, threads=args.threads,
                  warmup=args.warmup)
    for r in rows:
        r["model"] = name
    return rows + [{"model": name, "error": e} for e in errors]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--runs", type=int, default=200, help="at most this many timed calls (default 200)")
    parser.add_argument("--seconds", type=float, default=3.0, help="at most this long per measurement (3)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1,
                        help="ONNX Runtime, LiteRT and torch intra-op threads (default 1, as MLX's reference BLAS)")
    parser.add_argument("--quick", action="store_true", help="at most 50 calls or 1 s per measurement")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG (needs matplotlib)")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds = min(args.runs, 50), min(args.seconds, 1.0)

    from mlxport.bench import MissingDependencyError, format_table, save_chart

    env = environment()
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    if env["mlx_blas"] != "Accelerate" and sys.platform == "linux":
        print("note: MLX on Linux (mlx-cpu wheel) uses the netlib reference BLAS (unblocked, single-threaded), "
              "so MLX's matmuls are much slower than with an optimized BLAS; the ratios say more about that BLAS "
              "than about MLX.")
    print(f"threads for ONNX Runtime, LiteRT and torch: {args.threads}; peak RSS is the whole process's, so it grows "
          "as more runtimes load.\n")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mlxport-runtimes-") as tmp:
        for name in args.models:
            start = time.perf_counter()
            rows = run_model(name, Path(tmp), args)
            results += rows
            timed = [r for r in rows if "error" not in r]
            print(f"{name} (batch 1 latency; throughput at batch {args.batch}; "
                  f"{time.perf_counter() - start:.1f} s)")
            print(format_table(timed, baseline=MLX_ROW))
            for r in rows:
                if "error" in r:
                    print(f"  not exported: {r['error']}")
            print()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = write_results("runtimes", {"environment": env, "args": vars(args), "results": results})
    print(f"JSON: {json_path}")
    if not args.no_chart:
        try:
            rows = [dict(r, name=f"{r['model']} MLX") if r["name"] == MLX_ROW else r
                    for r in results if "error" not in r]
            chart = save_chart(rows,
                               RESULTS / f"runtimes-{stamp}.png", title="mlxport runtimes (CPU)")
            print(f"chart: {chart}")
        except MissingDependencyError as exc:
            print(f"no chart: {exc} ({exc.hint})")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
