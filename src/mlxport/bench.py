"""Benchmark exported artifacts side by side: latency, throughput, file size and peak RSS."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .artifact import IOSpec, artifact_bytes
from .errors import ArtifactError, MlxportError
from .formats import format_of, require_format, suffix_list
from .runners import Runner, load

# Sizes for dynamic axes other than the first: no example size is stored in the artifact.
OTHER_DYNAMIC_SIZE = 16


class MissingDependencyError(MlxportError):
    """An optional dependency of the benchmark (matplotlib for charts) is not installed."""

    hint = "Install it with: pip install matplotlib"


def check_artifacts(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Fail before any timing starts when a path is missing or has a suffix no runner reads."""
    if not paths:
        raise ArtifactError("no artifacts to benchmark", hint=f"Pass one or more artifacts: {suffix_list()}.")
    checked = []
    for p in map(Path, paths):
        if not p.exists():
            raise ArtifactError(f"no such artifact: {p}", hint="Check the path; export one with `mlxport export`.")
        require_format(p, "the artifact to benchmark")
        checked.append(p)
    return checked


def _batch_is_dynamic(inputs: list[IOSpec]) -> bool:
    return bool(inputs) and all(i.shape and not isinstance(i.shape[0], int) for i in inputs)


def make_inputs(inputs: list[IOSpec], batch: int, seed: int = 0) -> list[np.ndarray]:
    """Random inputs: normal floats, integers in [0, 10) (valid token ids), random bools.

    A dynamic first axis takes ``batch``; other dynamic axes take OTHER_DYNAMIC_SIZE.
    """
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in inputs:
        shape = [d if isinstance(d, int) else (batch if k == 0 else OTHER_DYNAMIC_SIZE)
                 for k, d in enumerate(spec.shape)]
        # ml_dtypes' bfloat16 has numpy kind 'V': draw it as the float it is.
        kind = np.dtype("float32" if spec.dtype == "bfloat16" else spec.dtype).kind
        if kind == "f":
            arr = rng.standard_normal(shape).astype("float32")
        elif kind in "iu":
            arr = rng.integers(0, 10, shape).astype(spec.dtype)
        elif kind == "b":
            arr = rng.integers(0, 2, shape).astype(bool)
        else:
            raise ArtifactError(f"cannot make a random input of dtype {spec.dtype} for '{spec.name}'")
        arrays.append(arr)
    return arrays


def time_calls(fn: Callable[[], Any], *, runs: int, seconds: float, warmup: int = 3) -> dict[str, float]:
    """p50/p99 latency (ms) over at least 3 and at most ``runs`` calls or ``seconds``, after warm-up."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < runs and (len(times) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)), "runs": len(times)}


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class RSSSampler:
    """``with RSSSampler() as s: ...``, then ``s.peak``: this process's peak RSS during the block.

    A thread samples the RSS every 5 ms (ru_maxrss cannot be reset between artifacts).
    """

    def __enter__(self) -> "RSSSampler":
        self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads for one block (torch has one process-wide setting)."""
    if not threads:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def bench_runner(runner: Runner, *, batch: int = 64, runs: int = 200, seconds: float = 3.0,
                 warmup: int = 3) -> dict[str, Any]:
    """Time one loaded runner: single-sample latency and, with a dynamic first axis, batch throughput."""
    if not runner.inputs:
        raise ArtifactError(f"{getattr(runner, 'path', 'the artifact')} does not record its inputs, so no "
                            "inputs can be made for it", hint="Export it again with mlxport, which writes "
                            "<artifact>.mlxport.json beside it.")
    dynamic = _batch_is_dynamic(runner.inputs)
    single = make_inputs(runner.inputs, 1)
    out: dict[str, Any] = {"inputs": [i.describe() for i in runner.inputs], "dynamic_batch": dynamic}
    # Bind (check and cast) the inputs once, so the timings hold only the runtime's own call.
    feed = runner.bind(*single)
    latency = time_calls(lambda: runner.run(feed), runs=runs, seconds=seconds, warmup=warmup)
    out.update(latency_p50_ms=latency["p50_ms"], latency_p99_ms=latency["p99_ms"], latency_runs=latency["runs"])
    out["single_shapes"] = [list(a.shape) for a in single]
    if dynamic:
        batched = runner.bind(*make_inputs(runner.inputs, batch))
        tput = time_calls(lambda: runner.run(batched), runs=runs, seconds=seconds, warmup=warmup)
        out.update(batch=batch, batch_p50_ms=tput["p50_ms"], batch_runs=tput["runs"],
                   throughput_sps=batch / (tput["p50_ms"] / 1e3))
    else:
        out.update(batch=None, batch_p50_ms=None, batch_runs=0, throughput_sps=None)
    return out


def bench(paths: Sequence[str | os.PathLike], *, batch: int = 64, runs: int = 200, seconds: float = 3.0,
          threads: int | None = None, warmup: int = 3) -> list[dict[str, Any]]:
    """Benchmark each artifact with the runtime its suffix names.

    Args:
        paths: ``.onnx``, ``.mlxfn``, ``.pt``, ``.pt2`` or ``.tflite`` files exported by mlxport (their
            ``.mlxport.json`` metadata gives the inputs of the non-ONNX formats).
        batch: batch size of the throughput measurement (only for a dynamic first axis).
        runs: at most this many timed calls per measurement.
        seconds: at most this long per measurement (at least 3 calls are always timed).
        threads: intra-op threads of ONNX Runtime, LiteRT and torch (default: their own choice; on a busy
            machine torch's thread pool can make small batches 100x slower); MLX ignores it.
        warmup: untimed calls before each measurement.

    Returns:
        One dict per artifact: path, backend, size_bytes, latency_p50_ms / latency_p99_ms (batch 1 for
        a dynamic first axis, else the artifact's own shapes), throughput_sps (samples/s at ``batch``,
        None for fixed shapes), peak_rss_bytes (this process while loading and running it).
    """
    if batch < 1 or runs < 1 or seconds <= 0:
        raise ValueError(f"batch and runs must be >= 1 and seconds > 0; got batch={batch}, runs={runs}, "
                         f"seconds={seconds}")
    results = []
    for path in check_artifacts(paths):
        fmt = format_of(path)
        with RSSSampler() as rss, _torch_threads(threads if fmt is not None and fmt.extra == "torch" else None):
            options = {"threads": threads} if threads and fmt is not None and "threads" in fmt.runner_options else {}
            start = time.perf_counter()
            runner = load(path, **options)
            load_s = time.perf_counter() - start
            row = bench_runner(runner, batch=batch, runs=runs, seconds=seconds, warmup=warmup)
        results.append({"path": str(path), "name": path.name, "backend": runner.backend,
                        "size_bytes": artifact_bytes(path), "load_s": load_s, **row, "peak_rss_bytes": rss.peak})
    return results


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover - the loop always returns


def format_table(results: Sequence[dict[str, Any]], *, baseline: str | None = None) -> str:
    """A text table of ``bench`` results; ``baseline`` (a row's name) adds p50 and throughput ratio columns."""
    base = next((r for r in results if r["name"] == baseline), None)
    header = ["artifact", "backend", "size", "p50 ms", "p99 ms", "runs", "samples/s", "peak RSS"]
    if base:
        header += [f"p50 vs {baseline}", f"samples/s vs {baseline}"]
    rows = []
    for r in results:
        tput = f"{r['throughput_sps']:,.0f} @{r['batch']}" if r.get("throughput_sps") else "-"
        row = [r["name"], r["backend"], _fmt_bytes(r["size_bytes"]) if r.get("size_bytes") is not None else "-",
               f"{r['latency_p50_ms']:.3f}", f"{r['latency_p99_ms']:.3f}", str(r["latency_runs"]), tput,
               _fmt_bytes(r["peak_rss_bytes"]) if r.get("peak_rss_bytes") else "-"]
        if base:
            row.append(f"{r['latency_p50_ms'] / base['latency_p50_ms']:.2f}x")
            both = r.get("throughput_sps") and base.get("throughput_sps")
            row.append(f"{r['throughput_sps'] / base['throughput_sps']:.2f}x" if both else "-")
        rows.append(row)
    widths = [max(len(h), *(len(row[k]) for row in rows)) for k, h in enumerate(header)]
    left = {0, 1}  # text columns; numbers are right-aligned

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if k in left else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def require_matplotlib() -> Any:
    """matplotlib.pyplot with a headless backend, or a MissingDependencyError naming the install command."""
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError("--chart needs matplotlib, which is not installed") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_chart(results: Sequence[dict[str, Any]], path: str | os.PathLike, *, title: str = "mlxport bench") -> Path:
    """A PNG with two bar charts: p50 latency (ms) and, where measured, throughput (samples/s)."""
    plt = require_matplotlib()
    label = "path" if len({r["name"] for r in results}) < len(results) else "name"  # same file name twice
    names = [f"{r.get(label, r['name'])}\n({r['backend']})" for r in results]
    with_tput = [r for r in results if r.get("throughput_sps")]
    fig, axes = plt.subplots(1, 2 if with_tput else 1, figsize=(6 + 1.2 * len(results), 4.5), squeeze=False)
    ax = axes[0][0]
    ax.bar(names, [r["latency_p50_ms"] for r in results], color="tab:blue")
    ax.set_ylabel("p50 latency, batch 1 (ms)")
    ax.set_title("latency (lower is better)")
    if with_tput:
        ax = axes[0][1]
        ax.bar([n for n, r in zip(names, results) if r.get("throughput_sps")],
               [r["throughput_sps"] for r in with_tput], color="tab:green")
        ax.set_ylabel(f"samples/s at batch {with_tput[0]['batch']}")
        ax.set_title("throughput (higher is better)")
    for row in axes:
        for a in row:
            a.tick_params(axis="x", labelsize=7, labelrotation=30)
            values = [p.get_height() for p in a.patches if p.get_height() > 0]
            # Models of very different sizes side by side: a log axis keeps the small bars readable.
            if values and max(values) / min(values) > 50:
                a.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


__all__ = ["MissingDependencyError", "RSSSampler", "bench", "bench_runner", "check_artifacts", "format_table",
           "make_inputs", "save_chart", "time_calls"]
