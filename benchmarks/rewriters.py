"""Graph rewriters side by side: mlxport's own passes against onnxscript's and ONNX Runtime's optimizers.

Two models, random weights, nothing downloaded:

(a) a tiny mlx-lm llama exported with ``export_lm``: the portable graph (opset 17, standard ops), the
    standard graph (opset 23 Attention, RMSNormalization, RotaryEmbedding) and our fused graph
    (``mlxport.rewrite.ort_fused``), beside what each tool makes of the portable and the standard graph:
    onnxscript's ``optimizer.optimize`` + ``rewriter.ort_fusions.optimize_for_ort`` and ONNX Runtime's
    ``transformers.optimizer.optimize_model`` (model types gpt2 and qwen3).
(b) a small NHWC CNN (Conv + BatchNorm + ReLU) exported with ``optimize=False``, beside our ONNX optimizer
    (``mlxport.rewrite.onnx_optimize``), onnxscript's optimizer + default rewrite rules and ONNX Runtime's
    own session-level graph optimizer (the file it saves at ORT_ENABLE_EXTENDED).

For each graph: the fused ops it holds, node count, ONNX Runtime latency (prefill and one decode step for
the LM; one image for the CNN; median of a bounded number of runs at ``--threads``) and the largest
difference from MLX. Every session runs at ORT_ENABLE_ALL, as a user's would.

Needs the bench extra (onnxscript): ``pip install ".[bench]"``.

    python benchmarks/rewriters.py                 # about a minute on 2 cores
    python benchmarks/rewriters.py --hidden 512 --layers 8 --prompt 128
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import numpy as np  # noqa: E402

from common import environment, write_results  # noqa: E402

LM_OPS = ("GroupQueryAttention", "MultiHeadAttention", "Attention", "SkipSimplifiedLayerNormalization",
          "SimplifiedLayerNormalization", "RMSNormalization", "RotaryEmbedding", "MatMulNBits", "Gemm", "MatMul")
CNN_OPS = ("Conv", "BatchNormalization", "Transpose", "Mul", "Add", "Relu", "Max", "FusedConv")
TOL = 1e-3  # largest difference from MLX we call a match (float32 graphs)


# ----------------------------------------------------------------------------
# Tools
# ----------------------------------------------------------------------------


def onnxscript_ort(src: Path, dst: Path) -> str:
    """onnxscript's generic optimizer, then its ONNX Runtime fusions (GQA, SkipRMSNorm, RotaryEmbedding...)."""
    import onnx
    import onnx_ir
    import onnxscript.optimizer
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model = onnx_ir.from_proto(onnxscript.optimizer.optimize(onnx.load(str(src))))
    model, counts = optimize_for_ort(model)
    onnx.save(onnx_ir.to_proto(model), str(dst))
    return ", ".join(f"{k}={v}" for k, v in counts.items() if v) or "no fusion"


def onnxscript_generic(src: Path, dst: Path) -> str:
    """onnxscript's optimizer (constant folding, dead code) and its default rewrite rules."""
    import onnx
    import onnxscript.optimizer
    import onnxscript.rewriter

    model = onnxscript.rewriter.rewrite(onnxscript.optimizer.optimize(onnx.load(str(src))))
    onnx.save(model, str(dst))
    return ""


def ort_transformers(model_type: str, heads: int, hidden: int) -> Callable[[Path, Path], str]:
    def run(src: Path, dst: Path) -> str:
        from onnxruntime.transformers.optimizer import optimize_model

        model = optimize_model(str(src), model_type=model_type, num_heads=heads, hidden_size=hidden)
        model.save_model_to_file(str(dst))
        stats = model.get_fused_operator_statistics()
        return ", ".join(f"{k}={v}" for k, v in stats.items() if v) or "no fusion"

    return run


def ort_session_optimizer(src: Path, dst: Path) -> str:
    """The graph ONNX Runtime itself runs after its load-time optimizations (saved at ORT_ENABLE_EXTENDED:
    the ENABLE_ALL layout passes write hardware-specific ops)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    return ""


# ----------------------------------------------------------------------------
# Measuring one graph
# ----------------------------------------------------------------------------


def histogram(path: Path) -> collections.Counter:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return collections.Counter(n.op_type for n in model.graph.node)


def session(path: Path, threads: int) -> tuple[Any, float]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    t = time.perf_counter()
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess, (time.perf_counter() - t) * 1e3


def _np_type(ort_type: str) -> Any:
    return {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
            "tensor(float16)": np.float16}[ort_type]


def lm_feeds(sess: Any, ids: np.ndarray, past: dict[str, np.ndarray], past_len: int, kv_shape: tuple) -> dict:
    """Feeds for one step from the session's own input list (names and dtypes as each graph declares them)."""
    seq = ids.shape[1]
    feeds: dict[str, np.ndarray] = {}
    for i in sess.get_inputs():
        t = _np_type(i.type)
        if i.name == "input_ids":
            feeds[i.name] = ids.astype(t)
        elif i.name == "attention_mask":
            feeds[i.name] = np.ones((1, past_len + seq), t)
        elif i.name == "position_ids":
            feeds[i.name] = np.arange(past_len, past_len + seq, dtype=t)[None]
        elif i.name.startswith("past_key_values."):
            feeds[i.name] = past.get(i.name, np.zeros(kv_shape, t)).astype(t)
        else:
            raise ValueError(f"unexpected LM input {i.name}")
    return feeds


def measure_lm(path: Path, ref: dict[str, np.ndarray], prompt: np.ndarray, nxt: np.ndarray, kv_shape: tuple,
               args: argparse.Namespace) -> dict[str, Any]:
    hist = histogram(path)
    row: dict[str, Any] = {"nodes": sum(hist.values()), "ops": {k: hist[k] for k in LM_OPS if hist[k]}}
    sess, row["load_ms"] = session(path, args.threads)
    names = [o.name for o in sess.get_outputs()]
    pre = lm_feeds(sess, prompt, {}, 0, kv_shape)
    out = dict(zip(names, sess.run(None, pre)))
    past = {n.replace("present.", "past_key_values."): v for n, v in out.items() if n.startswith("present.")}
    dec = lm_feeds(sess, nxt, past, prompt.shape[1], kv_shape)
    out_dec = dict(zip(names, sess.run(None, dec)))
    row["diff_prefill"] = float(np.max(np.abs(out[names[0]][:, -1] - ref["prefill"])))
    row["diff_decode"] = float(np.max(np.abs(out_dec[names[0]][:, -1] - ref["decode"])))
    row["timed"] = {"prefill": lambda: sess.run(None, pre), "decode": lambda: sess.run(None, dec)}
    return row


def measure_cnn(path: Path, ref: np.ndarray, x: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    hist = histogram(path)
    row: dict[str, Any] = {"nodes": sum(hist.values()), "ops": {k: hist[k] for k in CNN_OPS if hist[k]}}
    sess, row["load_ms"] = session(path, args.threads)
    feed = {sess.get_inputs()[0].name: x}
    row["diff"] = float(np.max(np.abs(sess.run(None, feed)[0] - ref)))
    row["timed"] = {"run": lambda: sess.run(None, feed)}
    return row


def time_interleaved(rows: dict[str, dict], args: argparse.Namespace) -> None:
    """Median ms of every row's timed calls, taken in turns (one call of each per round), so that a change in the
    machine's load during the run hits every graph alike."""
    calls = [(r, key, fn) for r in rows.values() for key, fn in r.pop("timed", {}).items()]
    for _ in range(2):  # warm-up
        for _, _, fn in calls:
            fn()
    times: dict[int, list[float]] = {i: [] for i in range(len(calls))}
    deadline = time.perf_counter() + args.budget * max(len(calls), 1)
    for n in range(args.runs):
        if n >= 5 and time.perf_counter() > deadline:
            break
        for i, (_, _, fn) in enumerate(calls):
            t = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t)
    for i, (r, key, _) in enumerate(calls):
        r[key] = {"median_ms": float(np.median(times[i]) * 1e3), "runs": len(times[i])}


def tool_row(tool: Callable[[Path, Path], str], src: Path, dst: Path, measure: Callable[[Path], dict]) -> dict:
    """Run one tool and measure its output; a tool that fails or breaks the graph is reported, not fatal."""
    row: dict[str, Any] = {}
    try:
        t = time.perf_counter()
        row["fusions"] = tool(src, dst)
        row["rewrite_s"] = time.perf_counter() - t
    except Exception as e:  # noqa: BLE001 - a benchmark reports each tool's failure and goes on
        return {"error": f"rewrite failed: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"}
    try:
        row.update(measure(dst))
    except Exception as e:  # noqa: BLE001
        traceback.print_exc(limit=1, file=sys.stderr)
        row["error"] = f"ORT failed: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    return row


# ----------------------------------------------------------------------------
# (a) the language model
# ----------------------------------------------------------------------------


def _random_llama(config: dict[str, Any]) -> nn.Module:
    from mlx_lm.models import llama

    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    # Scaled like tests/lm/lmzoo.py, so that attention and the cache matter to the logits.
    model.update(nn.utils.tree_map(lambda v: v * 3.0 if v.ndim >= 2 else v, model.parameters()))
    model.eval()
    mx.eval(model.parameters())
    return model


def bench_lm(args: argparse.Namespace, work: Path) -> dict[str, dict]:
    from mlx_lm.models import cache as mlx_cache

    from mlxport.lm.export import export_lm

    config = dict(model_type="llama", hidden_size=args.hidden, num_hidden_layers=args.layers,
                  intermediate_size=args.hidden * 2, num_attention_heads=args.heads,
                  num_key_value_heads=args.kv_heads, rms_norm_eps=1e-5, vocab_size=args.vocab,
                  max_position_embeddings=1024, tie_word_embeddings=False)
    rng = np.random.default_rng(0)
    prompt = rng.integers(3, args.vocab, (1, args.prompt)).astype(np.int64)
    nxt = rng.integers(3, args.vocab, (1, 1)).astype(np.int64)

    def reference(model: nn.Module) -> dict[str, np.ndarray]:
        """MLX's last-position logits for the prefill, then for one decode step on mlx-lm's own cache."""
        cache = mlx_cache.make_prompt_cache(model)
        ref = {"prefill": np.array(model(mx.array(prompt), cache=cache)[:, -1])}
        ref["decode"] = np.array(model(mx.array(nxt), cache=cache)[:, -1])
        return ref

    model = _random_llama(config)
    refs = {"float": reference(model)}
    kv_shape = (1, args.kv_heads, 0, args.hidden // args.heads)
    paths: dict[str, Path] = {}
    rows: dict[str, dict] = {}
    variants = [("portable", dict(portable=True)), ("standard", dict(fused=False)), ("fused", dict(fused=True))]
    if args.int4:
        # export_lm quantizes the model it is given in place: the fused int4 graph exports that one as it is.
        variants += [("standard-int4", dict(fused=False, precision="int4")),
                     ("fused-int4", dict(fused=True, precision="source"))]
    for name, kw in variants:
        t = time.perf_counter()
        export_lm(model, None, work / name, config=config, validate=False, **kw)
        paths[name] = work / name / "model.onnx"
        rows[f"mlxport {name}"] = {"rewrite_s": time.perf_counter() - t, "fusions": ""}
        if name == "standard-int4":
            refs["int4"] = reference(model)

    def measure(path: Path) -> dict[str, Any]:
        ref = refs["int4" if "int4" in path.parent.name or "int4" in path.name else "float"]
        return measure_lm(path, ref, prompt, nxt, kv_shape, args)

    for name in list(rows):
        rows[name].update(measure(paths[name.split()[1]]))
    tools: list[tuple[str, Callable[[Path, Path], str]]] = [
        ("onnxscript optimize_for_ort", onnxscript_ort),
        ("ORT optimizer gpt2", ort_transformers("gpt2", args.heads, args.hidden)),
        ("ORT optimizer qwen3", ort_transformers("qwen3", args.heads, args.hidden)),
    ]
    for src in ("portable", "standard") + (("standard-int4",) if args.int4 else ()):
        for label, tool in tools if src != "standard-int4" else tools[:1]:
            dst = work / f"{label.replace(' ', '_')}_{src}.onnx"
            rows[f"{label} ({src})"] = tool_row(tool, paths[src], dst, measure)
    time_interleaved(rows, args)
    return rows


# ----------------------------------------------------------------------------
# (b) the CNN
# ----------------------------------------------------------------------------


class ConvNet(nn.Module):
    """Conv + BatchNorm + ReLU three times on an NHWC image, global average pool, linear head."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        chans = [3, width, width, 2 * width]
        self.convs = [nn.Conv2d(a, b, 3, padding=1) for a, b in zip(chans, chans[1:])]
        self.norms = [nn.BatchNorm(b) for b in chans[1:]]
        self.head = nn.Linear(chans[-1], 10)

    def __call__(self, x: mx.array) -> mx.array:
        for conv, norm in zip(self.convs, self.norms):
            x = nn.relu(norm(conv(x)))
        return self.head(x.mean(axis=(1, 2)))


def bench_cnn(args: argparse.Namespace, work: Path) -> dict[str, dict]:
    import mlxport

    mx.random.seed(0)
    net = ConvNet()
    # Non-trivial running statistics, so that folding BatchNorm changes the weights.
    for norm in net.norms:
        norm.running_mean = mx.random.normal(norm.running_mean.shape) * 0.1
        norm.running_var = mx.random.uniform(0.5, 1.5, norm.running_var.shape)
    net.eval()
    mx.eval(net.parameters())
    x = np.random.default_rng(0).standard_normal((1, args.image, args.image, 3)).astype(np.float32)
    ref = np.array(net(mx.array(x)))
    rows: dict[str, dict] = {}
    raw, ours = work / "cnn_raw.onnx", work / "cnn_ours.onnx"
    for label, path, optimize in (("mlxport optimize=False", raw, False), ("mlxport (rewrite.onnx_optimize)", ours, True)):
        t = time.perf_counter()
        mlxport.export(net, (mx.array(x),), str(path), optimize=optimize, validate=False)
        rows[label] = {"rewrite_s": time.perf_counter() - t, "fusions": ""}
        rows[label].update(measure_cnn(path, ref, x, args))
    measure = lambda p: measure_cnn(p, ref, x, args)  # noqa: E731
    for label, tool in (("onnxscript optimize+rewrite", onnxscript_generic),
                        ("ORT session optimizer", ort_session_optimizer)):
        for src_label, src in (("raw", raw), ("ours", ours)):
            rows[f"{label} ({src_label})"] = tool_row(tool, src, work / f"cnn_{label.split()[0]}_{src_label}.onnx",
                                                      measure)
    time_interleaved(rows, args)
    return rows


# ----------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------


def _ops(ops: dict[str, int], names: tuple[str, ...]) -> str:
    short = {"GroupQueryAttention": "GQA", "MultiHeadAttention": "MHA", "SkipSimplifiedLayerNormalization": "SkipSLN",
             "SimplifiedLayerNormalization": "SLN", "RMSNormalization": "RMSNorm", "RotaryEmbedding": "Rotary",
             "MatMulNBits": "MMNBits", "BatchNormalization": "BN"}
    return " ".join(f"{short.get(k, k)}:{ops[k]}" for k in names if ops.get(k))


def _said(row: dict) -> str:
    """What the tool itself reported fusing."""
    return f"  (tool: {row['fusions']})" if row.get("fusions") else ""


def print_lm(rows: dict[str, dict]) -> None:
    print(f"\n(a) llama LM: {'graph':<38}{'nodes':>6}{'load ms':>9}{'prefill ms':>11}{'decode ms':>10}"
          f"{'diff pre':>10}{'diff dec':>10}  match  fused ops")
    for name, r in rows.items():
        if "error" in r and "nodes" not in r:
            print(f"{'':13}{name:<38}  {r['error']}")
            continue
        if "error" in r:
            print(f"{'':13}{name:<38}{r['nodes']:>6}  {r['error']}  [{_ops(r['ops'], LM_OPS)}]")
            continue
        ok = r["diff_prefill"] <= TOL and r["diff_decode"] <= TOL
        print(f"{'':13}{name:<38}{r['nodes']:>6}{r['load_ms']:>9.1f}{r['prefill']['median_ms']:>11.3f}"
              f"{r['decode']['median_ms']:>10.3f}{r['diff_prefill']:>10.1e}{r['diff_decode']:>10.1e}  "
              f"{'yes' if ok else 'NO ':<5}  {_ops(r['ops'], LM_OPS)}{_said(r)}")


def print_cnn(rows: dict[str, dict]) -> None:
    print(f"\n(b) NHWC CNN: {'graph':<37}{'nodes':>6}{'load ms':>9}{'run ms':>9}{'diff':>10}  match  ops")
    for name, r in rows.items():
        if "error" in r:
            print(f"{'':14}{name:<37}  {r['error']}")
            continue
        print(f"{'':14}{name:<37}{r['nodes']:>6}{r['load_ms']:>9.1f}{r['run']['median_ms']:>9.3f}{r['diff']:>10.1e}  "
              f"{'yes' if r['diff'] <= TOL else 'NO ':<5}  {_ops(r['ops'], CNN_OPS)}{_said(r)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--prompt", type=int, default=64, help="prefill tokens")
    p.add_argument("--image", type=int, default=64, help="CNN input height and width")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--budget", type=float, default=2.0, help="seconds per timed call at most (after 5 rounds)")
    p.add_argument("--keep", type=Path, help="keep the graphs in this folder")
    p.add_argument("--int4", action=argparse.BooleanOptionalAction, default=True,
                   help="also the int4 (MatMulNBits) export, standard and fused")
    args = p.parse_args()

    env = environment()
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    import onnxscript

    print(f"tools: onnxscript {onnxscript.__version__}, onnxruntime.transformers (ships with onnxruntime)")
    print(f"LM: llama hidden {args.hidden}, {args.layers} layers, heads {args.heads}/{args.kv_heads}, vocab "
          f"{args.vocab}; prefill {args.prompt} tokens, decode 1 token after them; {args.threads} thread(s); "
          f"diff = max |logits - MLX| of the last position; match = diff <= {TOL}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        lm = bench_lm(args, work)
        print_lm(lm)
        cnn = bench_cnn(args, work)
        print_cnn(cnn)
    out = write_results("rewriters", {"environment": env, "args": {k: str(v) for k, v in vars(args).items()},
                                      "lm": lm, "cnn": cnn})
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
