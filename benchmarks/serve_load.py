"""``mlxport serve`` beside ``mlflow models serve`` and in-process ONNX Runtime, in one run, on loopback.

The MLP 784-256-10 (random weights, dynamic batch axis) is exported to ONNX with mlxport, saved as an MLflow
model (``mlflow.onnx`` flavor) and served by both servers as subprocesses bound to 127.0.0.1. Each cold start
(process start -> first ``GET /ping`` 200) is timed while the other servers idle. Then a cheap asyncio HTTP/1.1
client drives every (workload, concurrency 1/8/32) cell over keep-alive connections, the servers taking turns
cell by cell so that a busy machine skews them alike: requests/s, samples/s, p50/p99 latency, and the CPU both
sides spent per request. Workloads: single-sample JSON on
SageMaker ``/invocations`` (``{"inputs": ...}``, the same bytes for both servers), single-sample binary
(``application/x-npy`` and the v2 binary tensor extension; mlxport only) and 64-sample batches (JSON for both,
binary for mlxport). In-process ``session.run`` (batch 1 and 64) is the limit, and a trivial HTTP endpoint
shows the client's own ceiling. Every workload's first answer is checked against ONNX Runtime.

    python benchmarks/serve_load.py --quick          # ~2 s per cell, about 2 minutes in all
    python benchmarks/serve_load.py --chart          # ~6 s per cell, plus a PNG
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from common import write_results  # noqa: E402
from httpload import Server, console_script, drive, free_port, request_once  # noqa: E402

CONCURRENCY = (1, 8, 32)
BATCH = 64
MODEL = "mlp"
TUNED = "mlxport+flags"  # the rows of --compare-args
TARGETS = {"vs_mlflow_rps": 3.0, "p99_ms": 50.0, "vs_ort_sps": 0.5, "cold_start_s": 1.0}


# ----------------------------------------------------------------------------
# Workloads: one pre-built HTTP request each
# ----------------------------------------------------------------------------


@dataclass
class Workload:
    """One request, sent again and again: its bytes, and how to read its answer back into an array."""

    name: str
    path: str
    headers: dict[str, str]
    body: bytes
    rows: int
    decode: str  # "sagemaker-json", "npy" or "v2-binary"
    expected: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def raw(self, port: int) -> bytes:
        head = [f"POST {self.path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(self.body)}"]
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + self.body


def _npy(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _v2_binary(array: np.ndarray) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({
        "inputs": [{"name": "x", "shape": list(array.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": array.nbytes}}],
        "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()
    return header + array.tobytes(), {"Content-Type": "application/octet-stream",
                                      "Inference-Header-Content-Length": str(len(header))}


def build_workloads(x1: np.ndarray, xb: np.ndarray, y1: np.ndarray, yb: np.ndarray) -> dict[str, list[Workload]]:
    """The workloads of each server; the JSON bodies are byte for byte the same for mlxport and MLflow."""
    json_h = {"Content-Type": "application/json"}
    npy_h = {"Content-Type": "application/x-npy", "Accept": "application/x-npy"}
    v2 = f"/v2/models/{MODEL}/infer"
    single_json = json.dumps({"inputs": x1.tolist()}).encode()
    batch_json = json.dumps({"inputs": xb.tolist()}).encode()
    v2_1, v2_1h = _v2_binary(x1)
    v2_b, v2_bh = _v2_binary(xb)

    def w(name: str, path: str, headers: dict[str, str], body: bytes, rows: int, decode: str) -> Workload:
        return Workload(name, path, headers, body, rows, decode, y1 if rows == 1 else yb)

    ours = [
        w("single JSON", "/invocations", json_h, single_json, 1, "sagemaker-json"),
        w("single npy", "/invocations", npy_h, _npy(x1), 1, "npy"),
        w("single v2-bin", v2, v2_1h, v2_1, 1, "v2-binary"),
        w(f"batch{BATCH} JSON", "/invocations", json_h, batch_json, BATCH, "sagemaker-json"),
        w(f"batch{BATCH} npy", "/invocations", npy_h, _npy(xb), BATCH, "npy"),
        w(f"batch{BATCH} v2-bin", v2, v2_bh, v2_b, BATCH, "v2-binary"),
    ]
    return {
        "mlxport": ours,
        TUNED: ours,
        "mlflow": [
            w("single JSON", "/invocations", json_h, single_json, 1, "sagemaker-json"),
            w(f"batch{BATCH} JSON", "/invocations", json_h, batch_json, BATCH, "sagemaker-json"),
        ],
        "echo": [w("single JSON", "/invocations", json_h, single_json, 1, "none")],
    }


def decode_answer(workload: Workload, body: bytes, headers: bytes) -> np.ndarray:
    """The output array in an answer (mlxport: ``outputs``; MLflow: ``predictions``, possibly keyed by name)."""
    import io

    if workload.decode == "npy":
        return np.load(io.BytesIO(body), allow_pickle=False)
    if workload.decode == "v2-binary":
        lower = headers.lower()
        start = lower.index(b"inference-header-content-length:") + len(b"inference-header-content-length:")
        size = int(lower[start:].split(b"\r\n", 1)[0])
        meta = json.loads(body[:size])["outputs"][0]
        return np.frombuffer(body[size:], dtype=np.float32).reshape(meta["shape"])
    payload = json.loads(body)
    data = payload.get("outputs", payload.get("predictions"))
    if isinstance(data, dict):
        data = next(iter(data.values()))
    return np.asarray(data, dtype=np.float32)


def save_mlflow_model(onnx_path: Path, out: Path) -> None:
    """``mlflow.onnx.save_model`` with a float32 [-1, 784] signature (run in a subprocess: mlflow's imports)."""
    import mlflow.onnx
    import onnx
    import onnxruntime as ort
    from mlflow.models import infer_signature

    x = np.zeros((1, 784), np.float32)
    y = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    mlflow.onnx.save_model(onnx.load(str(onnx_path)), str(out), signature=infer_signature(x, y))


# ----------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------


def export_mlp(out: Path) -> Path:
    """The 784-256-10 MLP with random weights, exported with a dynamic batch axis (input ``x``)."""
    import mlx.core as mx

    import mlxport
    from common import MLP

    mx.random.seed(0)
    model = MLP()
    mx.eval(model.parameters())
    path = out / f"{MODEL}.onnx"
    mlxport.export(model, (mx.zeros((1, 784)),), path, dynamic_axes={"x": {0: "batch"}})
    return path


def in_process(onnx_path: Path, inputs: list[np.ndarray], seconds: float, max_calls: int) -> list[dict[str, Any]]:
    """``session.run`` in a loop, with the session options the server uses by default: the limit."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    rows = []
    for x in inputs:
        feed = {"x": x}
        for _ in range(50):
            session.run(None, feed)
        times: list[int] = []
        clock = time.perf_counter_ns
        t0 = time.perf_counter()
        stop = t0 + seconds
        while time.perf_counter() < stop and len(times) < max_calls:
            t = clock()
            session.run(None, feed)
            times.append(clock() - t)
        elapsed = time.perf_counter() - t0
        ms = np.array(times, dtype=np.float64) / 1e6
        rows.append({"server": "in-process ORT", "workload": f"{'single' if len(x) == 1 else f'batch{len(x)}'} "
                     "session.run", "concurrency": 1, "rows": len(x), "requests": len(times), "ok": len(times),
                     "errors": {}, "seconds": elapsed, "rps": len(times) / elapsed,
                     "samples_per_s": len(times) * len(x) / elapsed, "p50_ms": float(np.median(ms)),
                     "samples_per_s_at_p50": len(x) / (float(np.median(ms)) / 1e3),
                     "p99_ms": float(np.percentile(ms, 99)), "client_cpu_us": None, "server_cpu_us": None})
    return rows


def check_answer(server: Server, w: Workload) -> str | None:
    """None when the server answers ``w`` with the right numbers, else what went wrong."""
    status, head, body = request_once(server.port, w.raw(server.port))
    if status != 200:
        return f"HTTP {status}: {body[:300]!r}"
    got = decode_answer(w, body, head)
    if got.shape != w.expected.shape or not np.allclose(got, w.expected, rtol=1e-4, atol=1e-5):
        return f"wrong answer: shape {got.shape} (expected {w.expected.shape}) or values off"
    return None


def measure(servers: list[Server], workloads: dict[str, list[Workload]], args: argparse.Namespace
            ) -> list[dict[str, Any]]:
    """Every (workload, concurrency) cell, the servers interleaved so a busy machine skews them alike."""
    rows: list[dict[str, Any]] = []
    broken: set[tuple[str, str]] = set()
    for s in servers:
        for w in workloads[s.name]:
            if w.decode != "none" and (problem := check_answer(s, w)):
                print(f"  {s.name} {w.name}: not measured, {problem}", flush=True)
                rows.append({"server": s.name, "workload": w.name, "error": problem})
                broken.add((s.name, w.name))
    names = list(dict.fromkeys(w.name for s in servers for w in workloads[s.name]))
    for name in names:
        for c in args.concurrency:
            for s in servers:
                w = next((w for w in workloads[s.name] if w.name == name), None)
                if w is None or (s.name, name) in broken:
                    continue
                r = drive(s.port, w.raw(s.port), c, warmup_s=args.warmup, seconds=args.seconds,
                          max_requests=args.max_requests, server_cpu=lambda s=s: s.cpu_and_rss()[0])
                row = {"server": s.name, "workload": name, "concurrency": c, "rows": w.rows,
                       "body_bytes": len(w.body), "samples_per_s": r["rps"] * w.rows,
                       "load_avg_1m": round(os.getloadavg()[0], 2), **r}
                rows.append(row)
                print("  " + format_row(row), flush=True)
    return rows


# ----------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------

_COLUMNS = f"{'server':<15} {'workload':<18} {'c':>3} {'req/s':>9} {'samples/s':>10} {'p50 ms':>8} " \
           f"{'p99 ms':>8} {'errors':>6} {'cli us/req':>10} {'srv us/req':>10}"


def format_row(r: dict[str, Any]) -> str:
    def us(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    failed = r["requests"] - r["ok"] + sum(r["errors"].values())
    return (f"{r['server']:<15} {r['workload']:<18} {r['concurrency']:>3} {r['rps']:>9.0f} "
            f"{r['samples_per_s']:>10.0f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.2f} {failed:>6} "
            f"{us(r['client_cpu_us']):>10} {us(r['server_cpu_us']):>10}")


def _cell(rows: list[dict[str, Any]], server: str, workload: str, c: int | None = None) -> dict[str, Any] | None:
    found = [r for r in rows if r["server"] == server and r["workload"] == workload and "error" not in r
             and (c is None or r["concurrency"] == c)]
    return max(found, key=lambda r: r["samples_per_s"]) if found else None


def _limit(r: dict[str, Any]) -> float:
    """In-process samples/s at the median call time: the runtime's own speed, whatever else the machine runs."""
    return max(r["samples_per_s"], r.get("samples_per_s_at_p50", 0.0))


def verdicts(rows: list[dict[str, Any]], cold: dict[str, float], c: int) -> list[dict[str, Any]]:
    """The issue's four targets at concurrency ``c``, each with its value (None when a side was not measured)."""
    ours, theirs = _cell(rows, "mlxport", "single JSON", c), _cell(rows, "mlflow", "single JSON", c)
    binary = [r for w in (f"batch{BATCH} npy", f"batch{BATCH} v2-bin") if (r := _cell(rows, "mlxport", w))]
    best = max(binary, key=lambda r: r["samples_per_s"]) if binary else None
    ort64 = _cell(rows, "in-process ORT", f"batch{BATCH} session.run")
    where = f" ({best['workload']}, c={best['concurrency']})" if best else ""
    out = [  # (target, limit text, value, bound, higher is better, unit)
        (f"mlxport / MLflow req/s, single JSON, c={c}", ours["rps"] / theirs["rps"] if ours and theirs else None,
         TARGETS["vs_mlflow_rps"], True, "x"),
        (f"mlxport p99, single JSON, c={c}", ours["p99_ms"] if ours else None, TARGETS["p99_ms"], False, " ms"),
        (f"mlxport binary samples/s{where} / in-process ORT batch {BATCH} (at its p50)",
         best["samples_per_s"] / _limit(ort64) if best and ort64 else None, TARGETS["vs_ort_sps"], True, "%"),
        ("mlxport cold start to /ping 200", cold.get("mlxport"), TARGETS["cold_start_s"], False, " s"),
    ]
    checks = []
    for target, value, bound, higher, unit in out:
        verdict = "n/a" if value is None else "PASS" if (value >= bound if higher else value <= bound) else "FAIL"
        limit = (">= " if higher else "<= ") + (f"{bound:.0%}" if unit == "%" else f"{bound:g}{unit}")
        checks.append({"target": target, "value": value, "limit": limit, "unit": unit, "verdict": verdict})
    return checks


def print_report(rows: list[dict[str, Any]], cold: dict[str, float], memory: dict[str, dict[str, int]],
                 checks: list[dict[str, Any]], c: int) -> None:
    print("\n" + _COLUMNS)
    print("-" * len(_COLUMNS))
    for r in rows:
        if "error" in r:
            print(f"{r['server']:<15} {r['workload']:<18}   not measured: {r['error']}")
        else:
            print(format_row(r))
    loads = [r["load_avg_1m"] for r in rows if "load_avg_1m" in r]
    if loads:
        print(f"\n1-minute load average during the cells: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} "
              "CPUs (above the CPU count, other work skewed the timings)")
    print("cold start (process start -> first /ping 200): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in cold.items()))
    print("server RSS after start -> after the load: " + ", ".join(
        f"{k} {m['after_start'] / 2**20:.0f} -> {m.get('after_load', 0) / 2**20:.0f} MiB" for k, m in memory.items()))
    refused = [f"{r['server']} {r['workload']} c={r['concurrency']}: {r['statuses']} {r['errors'] or ''}".rstrip()
               for r in rows if "error" not in r and (r["ok"] < r["requests"] or r["errors"])]
    if refused:
        print("non-200 answers and connection errors:\n  " + "\n  ".join(refused))
    dyn = _cell(rows, "mlxport", "single npy", c)
    ort1, ort64 = (_cell(rows, "in-process ORT", f"{w} session.run") for w in ("single", f"batch{BATCH}"))
    if dyn and ort1 and ort64:
        print(f"single-sample npy at c={c} (merged by dynamic batching): {dyn['samples_per_s']:.0f} samples/s = "
              f"{dyn['samples_per_s'] / ort1['samples_per_s']:.1%} of in-process ORT batch 1, "
              f"{dyn['samples_per_s'] / _limit(ort64):.1%} of batch {BATCH}")
    if ort64:
        print(f"in-process ORT batch {BATCH}: {ort64['samples_per_s']:.0f} samples/s by the clock, "
              f"{_limit(ort64):.0f} at its median call time (the limit the target uses)")
    print("\ntargets (issue 4):")
    for v in checks:
        value = "-" if v["value"] is None else (f"{v['value']:.1%}" if v["unit"] == "%" else
                                               f"{v['value']:.2f}{v['unit']}")
        print(f"  {v['verdict']:<4}  {v['target']}: {value} (target {v['limit']})")


def save_chart(rows: list[dict[str, Any]], path: Path) -> Path:
    """Samples/s and p99 latency of every measured cell, as horizontal bars (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [r for r in rows if "error" not in r]
    labels = [f"{r['server']} {r['workload']} c={r['concurrency']}" for r in cells]
    colors = {"mlxport": "tab:blue", TUNED: "tab:cyan", "mlflow": "tab:orange", "in-process ORT": "tab:green", "echo": "tab:gray"}
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.28 * len(cells) + 1.5), sharey=True)
    for ax, key, title in ((axes[0], "samples_per_s", "samples/s (log)"), (axes[1], "p99_ms", "p99 latency, ms (log)")):
        ax.barh(range(len(cells)), [max(r[key], 1e-3) for r in cells],
                color=[colors.get(r["server"], "tab:purple") for r in cells])
        ax.set_xscale("log")
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(cells)), labels, fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle("mlxport serve vs mlflow models serve vs in-process ONNX Runtime (MLP 784-256-10, loopback)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------


def prepare_mlflow(onnx_path: Path, work: Path, env: dict[str, str]) -> str | None:
    """Save the MLflow model (in a subprocess); None when done, else why not."""
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        return "mlflow is not installed (pip install mlflow)"
    log = work / "mlflow_save.log"
    with open(log, "wb") as out:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_save-mlflow", str(onnx_path),
                               str(work / "mlflow_model")], env=env, stdout=out, stderr=out, timeout=300)
    if done.returncode:
        return f"saving the MLflow model failed; {log} ends: {log.read_text(errors='replace')[-600:]}"
    return None


def start_servers(args: argparse.Namespace, onnx_path: Path, work: Path, quiet_env: dict[str, str],
                  stack: ExitStack, cold: dict[str, float], memory: dict[str, dict[str, int]]) -> list[Server]:
    """Start the servers one at a time (each cold start beside idle servers only); ``stack`` stops them."""
    commands: dict[str, tuple[list[str], dict[str, str] | None]] = {
        "echo": ([sys.executable, str(Path(__file__).resolve().parent / "httpload.py"), "echo", "{port}"], None),
        "mlxport": ([console_script("mlxport"), "serve", str(onnx_path), "--port", "{port}", "--host",
                     "127.0.0.1", *args.server_args.split()], None),
        "mlflow": ([console_script("mlflow"), "models", "serve", "-m", str(work / "mlflow_model"),
                    "--env-manager", "local", "-p", "{port}", "-h", "127.0.0.1"], quiet_env),
    }
    if args.compare_args and "mlxport" in args.servers:
        commands[TUNED] = ([*commands["mlxport"][0], *args.compare_args.split()], None)
    servers = []
    for name in [n for n in ("echo", "mlxport", TUNED, "mlflow") if n in args.servers or (n == TUNED and TUNED in commands)]:
        port = free_port()
        cmd = [a.replace("{port}", str(port)) for a in commands[name][0]]
        print(f"{name}: {' '.join(cmd[1:]) if name != 'echo' else 'trivial HTTP endpoint (client ceiling)'}",
              flush=True)
        server = stack.enter_context(Server(name, cmd, port, work / f"{name}.log", timeout_s=180,
                                            env=commands[name][1]))
        servers.append(server)
        if name != "echo":
            cold[name] = server.cold_start_s
            memory[name] = {"after_start": server.cpu_and_rss()[1]}
            print(f"  cold start {server.cold_start_s:.2f} s, RSS {memory[name]['after_start'] / 2**20:.0f} MiB",
                  flush=True)
    return servers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="0.5 s warm-up and 2 s per cell (about 2 minutes)")
    parser.add_argument("--seconds", type=float, help="measured seconds per cell (default 6; --quick 2)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per cell (default 1; --quick 0.5)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="per cell, at most (default 200000)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY),
                        help="connections, each with one request in flight (default 1 8 32)")
    parser.add_argument("--servers", nargs="+", default=["echo", "mlxport", "mlflow", "ort"],
                        choices=["echo", "mlxport", "mlflow", "ort"], help="which rows to measure (default all)")
    parser.add_argument("--server-args", default="",
                        help="extra flags for `mlxport serve`, e.g. \"--no-access-log --threads 1\"")
    parser.add_argument("--compare-args", default="",
                        help=f"also serve with these extra flags, as the '{TUNED}' rows, interleaved with the others "
                             "(e.g. \"--threads 1 --max-queue-delay-ms 0\")")
    parser.add_argument("--json", type=Path, help="where the JSON goes (default benchmarks/results/serve_load-*.json)")
    parser.add_argument("--chart", type=Path, nargs="?", const=True, default=None,
                        help="also save a PNG (default path beside the JSON)")
    parser.add_argument("--keep", type=Path, help="keep the exported model and the server logs in this folder")
    parser.add_argument("--_save-mlflow", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._save_mlflow:
        save_mlflow_model(Path(args._save_mlflow[0]), Path(args._save_mlflow[1]))
        return 0
    args.seconds = args.seconds or (2.0 if args.quick else 6.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    if min(args.concurrency) < 1 or args.seconds <= 0 or args.max_requests < 1:
        parser.error("--concurrency, --seconds and --max-requests must be positive")

    from importlib.metadata import PackageNotFoundError, version

    from common import environment

    env = environment()
    for pkg in ("mlflow", "uvicorn", "starlette", "uvloop", "httptools"):
        try:
            env[pkg] = version(pkg)
        except PackageNotFoundError:
            env[pkg] = None
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    print(f"{len(args.concurrency)} concurrencies x {args.warmup:g} s warm-up + {args.seconds:g} s per cell; client "
          f"and servers share the {os.cpu_count()} CPUs, so compare rows of this run only.\n", flush=True)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    cold: dict[str, float] = {}
    memory: dict[str, dict[str, int]] = {}
    quiet_env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    with tempfile.TemporaryDirectory(prefix="mlxport-serve-load-") as tmp, ExitStack() as stack:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        onnx_path = export_mlp(work)
        import onnxruntime as ort

        rng = np.random.default_rng(0)
        x1 = rng.standard_normal((1, 784)).astype(np.float32)
        xb = rng.standard_normal((BATCH, 784)).astype(np.float32)
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        y1, yb = (session.run(None, {"x": x})[0] for x in (x1, xb))
        workloads = build_workloads(x1, xb, y1, yb)
        print("request bodies: " + ", ".join(f"{w.name} {len(w.body)} B" for w in workloads["mlxport"]))
        if "mlflow" in args.servers and (problem := prepare_mlflow(onnx_path, work, quiet_env)):
            print(f"mlflow: not measured, {problem}", flush=True)
            rows.append({"server": "mlflow", "workload": "-", "error": problem})
            args.servers.remove("mlflow")
        servers = start_servers(args, onnx_path, work, quiet_env, stack, cold, memory)
        print("\nload (servers interleaved per cell):\n  " + _COLUMNS, flush=True)
        rows += measure(servers, workloads, args)
        for server in servers:
            if server.name != "echo":
                memory[server.name]["after_load"] = server.cpu_and_rss()[1]
        stack.close()  # stop the servers before timing in-process ONNX Runtime
        if "ort" in args.servers:
            for r in in_process(onnx_path, [x1, xb], args.seconds, args.max_requests):
                rows.append(r)
                print("  " + format_row(r), flush=True)
    checks = verdicts(rows, cold, max(args.concurrency))
    print_report(rows, cold, memory, checks, max(args.concurrency))
    payload = {"environment": env, "args": {k: str(v) for k, v in vars(args).items() if not k.startswith("_")},
               "cold_start_s": cold, "rss_bytes": memory, "targets": checks, "results": rows,
               "total_seconds": time.perf_counter() - started}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2, default=str))
        json_path = args.json
    else:
        json_path = write_results("serve_load", payload)
    print(f"\nJSON: {json_path}")
    if args.chart:
        chart = json_path.with_suffix(".png") if args.chart is True else args.chart
        try:
            print(f"chart: {save_chart(rows, chart)}")
        except ImportError as exc:
            print(f"no chart: {exc} (pip install matplotlib)")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
