"""ONNX Runtime latency of exported models beside MLX on CPU, measured side by side in one run.

Each model is exported with ``mlxport.export`` (static shapes, validated against
MLX), then timed: ONNX Runtime on CPU with intra_op_num_threads=1 and 2, MLX on
the CPU device, eager and under mx.compile. Median and p99 latency over a
bounded number of calls after warmup; the speedup columns are MLX eager median
divided by ONNX Runtime median.

    python benchmarks/latency.py            # every model
    python benchmarks/latency.py --quick    # fewer calls, the small models only
    python benchmarks/latency.py --models mlp-b1 llama-10M
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from common import (  # noqa: E402
    CONFIGS, MLP, Encoder, SmallCNN, build_llama, environment, mlx_blas, time_calls, write_results,
)

THREADS = (1, 2)


@dataclass
class Bench:
    name: str
    build: Callable[[], Any]
    input_shape: tuple[int, ...]
    dtype: str = "float32"
    high: int = 0  # integer inputs: exclusive upper bound (a vocabulary size)
    slow: bool = False  # left out of --quick


BENCHES = [
    Bench("mlp-b1", MLP, (1, 784)),
    Bench("mlp-b64", MLP, (64, 784)),
    Bench("cnn", SmallCNN, (1, 28, 28, 1)),
    Bench("encoder", Encoder, (1, 128), "int32", high=8192, slow=True),
    Bench("llama-10M", lambda: build_llama(CONFIGS["llama-10M"]), (1, 128), "int32",
          high=CONFIGS["llama-10M"].vocab, slow=True),
]


def make_input(bench: Bench) -> np.ndarray:
    rng = np.random.default_rng(0)
    if bench.dtype == "int32":
        return rng.integers(0, bench.high, bench.input_shape).astype(np.int32)
    return rng.standard_normal(bench.input_shape).astype(np.float32)


def ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def time_ort(path: Path, threads: int, x: np.ndarray, timing: dict[str, Any]) -> dict[str, float]:
    sess = ort_session(path, threads)
    feed = {sess.get_inputs()[0].name: x}
    return time_calls(lambda: sess.run(None, feed), **timing)


def run_bench(bench: Bench, workdir: Path, timing: dict[str, Any]) -> dict[str, Any]:
    from mlxport.api import export
    from mlxport.errors import MlxportError

    mx.random.seed(0)
    model = bench.build()
    mx.eval(model.parameters())
    model.eval()
    x_np = make_input(bench)
    x = mx.array(x_np)
    out: dict[str, Any] = {"model": bench.name, "input": f"{bench.dtype}{list(bench.input_shape)}",
                           "parameters": sum(v.size for _, v in _flat(model.parameters()))}
    path = workdir / f"{bench.name}.onnx"
    try:
        report = export(model, (x,), path, validate=True)
        out["validated"] = True
        out["max_abs"] = report.max_abs
        out["onnx_nodes"] = report.info.get("onnx nodes")
    except MlxportError as exc:
        # A failed validation still leaves a file to time; anything else is reported as an error.
        out["validated"] = False
        out["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        if not path.exists():
            return out

    for threads in THREADS:
        out[f"ort{threads}"] = time_ort(path, threads, x_np, timing)

    out["mlx"] = time_calls(lambda: mx.eval(model(x)), **timing)
    compiled = mx.compile(model)
    out["mlx_compiled"] = time_calls(lambda: mx.eval(compiled(x)), **timing)
    for threads in THREADS:
        out[f"speedup_ort{threads}"] = out["mlx"]["median_ms"] / out[f"ort{threads}"]["median_ms"]
    return out


def _flat(tree: Any) -> list[tuple[str, mx.array]]:
    from mlx.utils import tree_flatten

    return tree_flatten(tree)


def _num(ms: float) -> str:
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


def _ms(stat: dict[str, float] | None) -> str:
    if not stat:
        return f"{'-':>17}"
    return f"{_num(stat['median_ms']):>8}/{_num(stat['p99_ms']):<8}"


def print_table(results: list[dict[str, Any]]) -> None:
    print("\nLatency in ms, median/p99 (ORT = ONNX Runtime CPU; speedup = MLX eager median / ORT median;"
          "\nmax abs = largest difference from MLX in the export's validation)")
    head = (f"{'model':<11}{'input':<23}{'ORT 1 thread':>17} {'ORT 2 threads':>17} {'MLX eager':>17} "
            f"{'MLX compiled':>17} {'x ORT1':>7}{'x ORT2':>7}  {'max abs':<9} runs (ORT1/ORT2/MLX/compiled)")
    print(head)
    for r in results:
        if "ort1" not in r:
            print(f"{r['model']:<11}{r['input']:<23}ERROR: {r.get('error')}")
            continue
        runs = "/".join(str(r[k]["runs"]) for k in ("ort1", "ort2", "mlx", "mlx_compiled"))
        print(f"{r['model']:<11}{r['input']:<23}{_ms(r['ort1'])} {_ms(r['ort2'])} {_ms(r['mlx'])} "
              f"{_ms(r['mlx_compiled'])} {r['speedup_ort1']:>6.1f}x{r['speedup_ort2']:>6.1f}x  "
              f"{r.get('max_abs', float('nan')):<9.1e} {runs}")
        if not r.get("validated"):
            print(f"{'':<11}validation FAILED: {r.get('error')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", help=f"models (default: all: {', '.join(b.name for b in BENCHES)})")
    parser.add_argument("--quick", action="store_true", help="the small models and fewer calls")
    parser.add_argument("--runs", type=int, default=200, help="most timed calls per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds per measurement (at least 5 calls)")
    args = parser.parse_args(argv)

    known = {b.name: b for b in BENCHES}
    unknown = [m for m in args.models or [] if m not in known]
    if unknown:
        parser.error(f"unknown models {', '.join(unknown)}; choose from {', '.join(known)}")
    benches = [known[m] for m in args.models] if args.models else [b for b in BENCHES if not (args.quick and b.slow)]
    timing = {"warmup": args.warmup, "runs": args.runs, "budget_s": args.budget}
    if args.quick:
        timing.update(runs=min(args.runs, 50), budget_s=min(args.budget, 1.0))

    mx.set_default_device(mx.cpu)
    blas = mlx_blas()
    env = environment()
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items() if k != "mlx_blas"))
    print(f"MLX CPU BLAS: {blas['blas']} ({', '.join(blas['libraries']) or 'no library found'})")
    if blas["blas"].startswith("reference"):
        print("  note: MLX's matmuls run on the unoptimized reference BLAS here, so MLX timings of "
              "matmul-heavy models are far from what an optimized BLAS would give")
    print(f"timing: {timing['warmup']} warmup calls, then up to {timing['runs']} calls or "
          f"{timing['budget_s']:.0f} s per measurement (at least 5)")

    # Import the exporter's ONNX module up front so its import time is not in the first export.
    importlib.import_module("mlxport.exporters.onnx")
    results = []
    with tempfile.TemporaryDirectory(prefix="mlxport-latency-") as tmp:
        for bench in benches:
            start = time.perf_counter()
            print(f"  {bench.name}...", flush=True)
            r = run_bench(bench, Path(tmp), timing)
            r["wall_seconds"] = time.perf_counter() - start
            results.append(r)
    print_table(results)
    path = write_results("latency", {"environment": env, "mlx_blas": blas, "timing": timing, "results": results})
    print(f"\nJSON: {path}")
    return 0 if all("ort1" in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
