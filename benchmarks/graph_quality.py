"""Graph quality: mlxport's ONNX export of an MLX llama beside torch.onnx's export of the same model.

The same random weights go into a Hugging Face ``LlamaForCausalLM`` (exported with
``torch.onnx.export(dynamo=True)``) and into mlx-lm's llama (exported with
mlxport at opset 17 and at the default opset). Printed side by side, from one run:
node counts, op histogram, file size, ONNX Runtime latency (1 thread, median of a
bounded number of runs) and the largest logit difference between the files.

Needs the bench extra: ``pip install ".[bench]"`` (torch 2.13.0, transformers, onnxscript).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def build_pair(hidden: int, layers: int, heads: int, kv_heads: int, vocab: int) -> tuple[Any, Any]:
    """A Hugging Face llama with random weights and the mlx-lm llama holding the same weights."""
    import mlx.core as mx
    import torch
    from mlx_lm.models import llama
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    inter = int(hidden * 8 / 3) // 8 * 8
    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab,
                      max_position_embeddings=1024, rms_norm_eps=1e-5, tie_word_embeddings=False)
    hf = LlamaForCausalLM(cfg).eval()
    args = llama.ModelArgs(model_type="llama", hidden_size=hidden, num_hidden_layers=layers, intermediate_size=inter,
                           num_attention_heads=heads, num_key_value_heads=kv_heads, rms_norm_eps=1e-5,
                           vocab_size=vocab, rope_theta=cfg.rope_parameters["rope_theta"]
                           if hasattr(cfg, "rope_parameters") and cfg.rope_parameters else 10000.0,
                           tie_word_embeddings=False)
    ours = llama.Model(args)
    weights = [(k, mx.array(v.detach().numpy())) for k, v in hf.state_dict().items() if "rotary" not in k]
    ours.load_weights(weights)
    mx.eval(ours.parameters())
    return hf, ours


def export_torch(hf: Any, path: Path, seq: int) -> float:
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, use_cache=False).logits

    start = time.perf_counter()
    dims = {"input_ids": {0: torch.export.Dim("batch", min=1, max=64), 1: torch.export.Dim("seq", min=2, max=1024)}}
    torch.onnx.export(Logits(hf), (torch.zeros((1, seq), dtype=torch.long),), str(path), input_names=["input_ids"],
                      output_names=["logits"], dynamic_shapes=dims, dynamo=True, opset_version=18)
    return time.perf_counter() - start


def latency(path: Path, feed: dict[str, np.ndarray], runs: int, seconds: float) -> tuple[float, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    out = sess.run(None, feed)[0]
    for _ in range(3):
        sess.run(None, feed)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < runs and (len(times) < 5 or time.perf_counter() < deadline):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    opts = parser.parse_args()

    import mlx.core as mx
    import onnx

    import mlxport
    from mlxport.exporters.onnx import DEFAULT_OPSET

    hf, ours = build_pair(opts.hidden, opts.layers, opts.heads, opts.kv_heads, opts.vocab)
    tokens = np.random.default_rng(0).integers(0, opts.vocab, size=(1, opts.seq))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        t = export_torch(hf, Path(tmp) / "torch.onnx", opts.seq)
        files["torch.onnx (dynamo, opset 18)"] = (Path(tmp) / "torch.onnx", {"input_ids": tokens.astype(np.int64)}, t)
        for opset in (17, DEFAULT_OPSET):
            path = Path(tmp) / f"mlxport{opset}.onnx"
            start = time.perf_counter()
            mlxport.export(ours, (mx.array(tokens.astype(np.int32)),), path,
                           dynamic_axes={"inputs": {0: "batch", 1: "seq"}}, opset=opset)
            files[f"mlxport (opset {opset})"] = (path, {"inputs": tokens.astype(np.int32)}, time.perf_counter() - start)
        reference = None
        for label, (path, feed, seconds) in files.items():
            model = onnx.load(str(path), load_external_data=False)
            ops = collections.Counter(n.op_type for n in model.graph.node)
            size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
            ms, out = latency(path, feed, opts.runs, opts.seconds)
            reference = out if reference is None else reference
            rows.append((label, sum(ops.values()), size, ms, float(np.abs(out - reference).max()), seconds, ops))
    print(f"llama hidden {opts.hidden}, {opts.layers} layers, {opts.heads}/{opts.kv_heads} heads, vocab {opts.vocab}, "
          f"{opts.seq} tokens; ONNX Runtime CPU, 1 thread (median)")
    print(f"{'export':<30}{'nodes':>7}{'size':>10}{'latency':>11}{'vs torch':>10}{'max |dlogit|':>14}{'export s':>10}")
    base_ms = rows[0][3]
    for label, nodes, size, ms, diff, seconds, _ in rows:
        print(f"{label:<30}{nodes:>7}{size / 1e6:>8.2f}MB{ms:>9.2f}ms{base_ms / ms:>9.2f}x{diff:>14.2e}{seconds:>9.1f}s")
    for label, *_, ops in rows:
        print(f"\n{label}: " + ", ".join(f"{k} {v}" for k, v in ops.most_common()))


if __name__ == "__main__":
    main()
