"""Shared pieces of the benchmarks: models, memory probes, timing statistics, BLAS detection."""

from __future__ import annotations

import ctypes
import json
import os
import platform
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LlamaConfig:
    """A llama-style decoder: sizes only, the weights are random."""

    name: str
    vocab: int
    dim: int
    layers: int
    heads: int
    kv_heads: int
    hidden: int
    tied: bool = True
    rope_base: float = 10000.0
    eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def parameters(self) -> int:
        kv = self.kv_heads * self.head_dim
        block = 2 * self.dim * self.dim + 2 * self.dim * kv + 3 * self.dim * self.hidden + 2 * self.dim
        head = 0 if self.tied else self.vocab * self.dim
        return self.vocab * self.dim + self.layers * block + self.dim + head


# A ladder from ~1M to ~500M parameters (float32: 4 bytes each).
LADDER = [
    LlamaConfig("llama-1M", vocab=1024, dim=128, layers=4, heads=4, kv_heads=4, hidden=344),
    LlamaConfig("llama-10M", vocab=8192, dim=256, layers=10, heads=4, kv_heads=4, hidden=688),
    LlamaConfig("llama-50M", vocab=16384, dim=512, layers=10, heads=8, kv_heads=8, hidden=1376, tied=False),
    LlamaConfig("llama-150M", vocab=32000, dim=768, layers=14, heads=12, kv_heads=4, hidden=2560, tied=False),
    LlamaConfig("llama-500M", vocab=32000, dim=1536, layers=16, heads=12, kv_heads=4, hidden=4864),
]
CONFIGS = {c.name: c for c in LADDER}


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.scale = cfg.heads, cfg.kv_heads, cfg.head_dim ** -0.5
        self.q_proj = nn.Linear(cfg.dim, cfg.heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.heads * cfg.head_dim, cfg.dim, bias=False)
        self.rope = nn.RoPE(cfg.head_dim, base=cfg.rope_base)

    def __call__(self, x: mx.array) -> mx.array:
        b, length, _ = x.shape
        q = self.q_proj(x).reshape(b, length, self.heads, -1).transpose(0, 2, 1, 3)
        k = self.k_proj(x).reshape(b, length, self.kv_heads, -1).transpose(0, 2, 1, 3)
        v = self.v_proj(x).reshape(b, length, self.kv_heads, -1).transpose(0, 2, 1, 3)
        q, k = self.rope(q), self.rope(k)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask="causal")
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(b, length, -1))


class FeedForward(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.hidden, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.hidden, bias=False)
        self.down_proj = nn.Linear(cfg.hidden, cfg.dim, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.attention_norm = nn.RMSNorm(cfg.dim, eps=cfg.eps)
        self.attention = Attention(cfg)
        self.mlp_norm = nn.RMSNorm(cfg.dim, eps=cfg.eps)
        self.mlp = FeedForward(cfg)

    def __call__(self, x: mx.array) -> mx.array:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    """Embedding, N pre-norm blocks, final RMSNorm, tied or untied LM head; returns logits."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.dim)
        self.layers = [Block(cfg) for _ in range(cfg.layers)]
        self.norm = nn.RMSNorm(cfg.dim, eps=cfg.eps)
        if not cfg.tied:
            self.lm_head = nn.Linear(cfg.dim, cfg.vocab, bias=False)

    def __call__(self, tokens: mx.array) -> mx.array:
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        return self.embed_tokens.as_linear(x) if self.cfg.tied else self.lm_head(x)


def build_llama(cfg: LlamaConfig, seed: int = 0) -> Llama:
    """A float32 model with its random weights materialized one layer at a time.

    Evaluating layer by layer keeps the random-number temporaries small, so the
    RSS after this call is close to the weight bytes (the baseline of the memory
    target).
    """
    mx.random.seed(seed)
    model = Llama(cfg)
    for module in [model.embed_tokens, *model.layers, model.norm] + ([] if cfg.tied else [model.lm_head]):
        mx.eval(module.parameters())
    mx.clear_cache()
    return model


def weight_arrays(model: nn.Module) -> list[tuple[str, mx.array]]:
    from mlx.utils import tree_flatten

    return tree_flatten(model.parameters())


def weight_bytes(model: nn.Module) -> int:
    return sum(a.nbytes for _, a in weight_arrays(model))


class MLP(nn.Module):
    """784-256-10 with ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.fc2 = nn.Linear(256, 10)

    def __call__(self, x: mx.array) -> mx.array:
        return self.fc2(nn.relu(self.fc1(x)))


class SmallCNN(nn.Module):
    """28x28x1 (NHWC) -> conv 16 -> pool -> conv 32 -> pool -> linear 10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(7 * 7 * 32, 10)

    def __call__(self, x: mx.array) -> mx.array:
        x = self.pool(nn.relu(self.conv1(x)))
        x = self.pool(nn.relu(self.conv2(x)))
        return self.fc(x.reshape(x.shape[0], -1))


class Encoder(nn.Module):
    """A BERT-small-like encoder: nn.TransformerEncoder (4 layers, d=256, 4 heads) on embeddings."""

    def __init__(self, vocab: int = 8192, dim: int = 256, layers: int = 4, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.encoder = nn.TransformerEncoder(layers, dim, heads, mlp_dims=4 * dim)

    def __call__(self, tokens: mx.array) -> mx.array:
        return self.encoder(self.embed(tokens), None)


# ----------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------


def _status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    """Current resident set size."""
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb * 1024
    import psutil

    return psutil.Process().memory_info().rss


class PeakRSS:
    """The peak RSS since the last reset.

    On Linux, writing 5 to /proc/self/clear_refs resets the kernel's high-water
    mark (VmHWM) to the current RSS, so one process can measure the peak of one
    stage after another. Elsewhere it falls back to ru_maxrss (peak since start).
    """

    def __init__(self) -> None:
        self.resettable = self._reset()

    def _reset(self) -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return _status_kb("VmHWM") is not None
        except OSError:
            return False

    def reset(self) -> None:
        self.resettable = self._reset()

    def peak(self) -> int:
        if self.resettable:
            return max(_status_kb("VmHWM") or 0, 0) * 1024
        scale = 1 if platform.system() == "Darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


# ----------------------------------------------------------------------------
# Timing and environment
# ----------------------------------------------------------------------------


def time_calls(fn: Callable[[], Any], *, warmup: int, runs: int, budget_s: float) -> dict[str, float]:
    """Median and p99 latency (ms) of ``fn`` over at most ``runs`` calls or ``budget_s`` seconds."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < runs and (len(times) < 5 or time.perf_counter() < deadline):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    arr = np.array(times) * 1e3
    return {"median_ms": float(np.median(arr)), "p99_ms": float(np.percentile(arr, 99)), "runs": len(times)}


_BLAS_PROBES = [
    ("OpenBLAS", "openblas_get_config"),
    ("MKL", "mkl_get_version_string"),
    ("BLIS", "bli_info_get_version_str"),
    ("Accelerate", "cblas_sgemm$NEWLAPACK"),
]


def mlx_blas() -> dict[str, Any]:
    """Which BLAS the MLX CPU backend loaded: the BLAS-like libraries mapped from MLX's own package.

    numpy loads its own OpenBLAS into the same process, so only libraries that
    live beside libmlx (mlx/lib, mlx_cpu.libs) or that libmlx names count. A
    generic libblas.so without any optimized library's entry points is the
    netlib reference BLAS (single-threaded, unblocked).
    """
    a = mx.ones((64, 64))
    mx.eval(a @ a)  # make sure the CPU backend and its BLAS are loaded
    mlx_dir = Path(mx.__file__).resolve().parent.parent
    libs: list[str] = []
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1] if line.strip() else ""
            name = os.path.basename(path).lower()
            if not path.startswith("/") or path in libs:
                continue
            from_mlx = "mlx" in path and str(mlx_dir) in path
            blas_like = any(k in name for k in ("blas", "mkl", "lapack", "blis", "accelerate"))
            if blas_like and (from_mlx or "numpy" not in path):
                libs.append(path)
    if platform.system() == "Darwin":
        return {"blas": "Accelerate", "libraries": []}
    kind = None
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for label, symbol in _BLAS_PROBES:
            if hasattr(lib, symbol):
                kind = label
                break
        if kind:
            break
    if kind is None:
        kind = "reference BLAS (netlib)" if libs else "unknown (no BLAS library mapped)"
    return {"blas": kind, "libraries": [os.path.basename(p) for p in libs]}


def environment() -> dict[str, Any]:
    import onnxruntime as ort

    import mlxport

    return {
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "mlx": mx.__version__, "onnxruntime": ort.__version__, "mlxport": mlxport.__version__,
        "mlx_blas": mlx_blas()["blas"],
        # Other work on the machine skews timings; the load average says how busy it was.
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def write_results(stem: str, payload: dict[str, Any]) -> Path:
    """Write JSON to benchmarks/results/<stem>-<timestamp>.json (gitignored)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    def encode(o: Any) -> Any:
        return asdict(o) if hasattr(o, "__dataclass_fields__") else str(o)

    path.write_text(json.dumps(payload, indent=2, default=encode))
    return path


def fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
