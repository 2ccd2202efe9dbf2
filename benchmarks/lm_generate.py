"""Generation speed of an exported language model: ONNX Runtime GenAI and mlxport's ORT loop beside mlx-lm.

A random llama (mlx-lm's own ``llama.Model``; sizes below, nothing downloaded) is exported with
``mlxport.export_lm`` as float32 and as int4 (MLX's 4-bit affine quantization, MatMulNBits in ONNX), each as the
standard graph (``fused=False``: Concat cache, ONNX Attention) and the fused one (GroupQueryAttention with an
in-place cache, SkipSimplifiedLayerNormalization, merged matmuls). Each
engine prefills the same prompt and then decodes greedily; prefill time and decode tokens/s are measured in
one run, side by side. mlx-lm runs on mlx-cpu, whose stock reference BLAS is slow on Linux: its figures are
what a Linux user of MLX gets, not what MLX does on a Mac.

    python benchmarks/lm_generate.py            # ~60M parameters, 128-token prompt, 64 new tokens
    python benchmarks/lm_generate.py --quick    # a smaller model, fewer tokens
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from common import environment, write_results  # noqa: E402


def build(hidden: int, layers: int, vocab: int) -> Any:
    """A random mlx-lm llama with GQA (4 kv heads)."""
    from mlx_lm.models import llama

    args = llama.ModelArgs.from_dict(dict(
        model_type="llama", hidden_size=hidden, num_hidden_layers=layers, intermediate_size=hidden * 8 // 3 // 64 * 64,
        num_attention_heads=hidden // 64, num_key_value_heads=4, rms_norm_eps=1e-5, vocab_size=vocab,
        max_position_embeddings=2048, tie_word_embeddings=True))
    mx.random.seed(0)
    model = llama.Model(args)
    mx.eval(model.parameters())
    return model


def time_steps(steps: Iterator[int], count: int) -> tuple[float, float, list[int]]:
    """Seconds to the first token (prefill + 1 step) and decode tokens/s over the rest."""
    start = time.perf_counter()
    tokens = [next(steps)]
    first = time.perf_counter() - start
    t1 = time.perf_counter()
    for _ in range(count - 1):
        tokens.append(next(steps))
    rate = (count - 1) / (time.perf_counter() - t1)
    return first, rate, tokens


def mlx_steps(model: Any, prompt: list[int], count: int) -> Iterator[int]:
    from mlx_lm.generate import generate_step

    for token, _ in generate_step(mx.array(prompt), model, max_tokens=count):
        yield int(token)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~10M model and 32 new tokens")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of ONNX Runtime (default 2)")
    args = parser.parse_args()
    from mlxport.lm.export import export_lm
    from mlxport.lm.generate import GenerationConfig, LMRunner

    hidden, layers, vocab, prompt_len, count = (256, 4, 8192, 64, 32) if args.quick else (512, 8, 32000, 128, 64)
    rng = np.random.default_rng(0)
    prompt = [int(t) for t in rng.integers(3, vocab, prompt_len)]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("float32", "int4"):
            engines: dict[str, Callable[[], Iterator[int]]] = {}
            for graph in ("standard", "fused"):
                model = build(hidden, layers, vocab)
                params = sum(v.size for _, v in __import__("mlx.utils", fromlist=["tree_flatten"]).tree_flatten(
                    model.parameters()))
                out = Path(tmp) / f"{precision}-{graph}"
                start = time.perf_counter()
                result = export_lm(model, None, out, precision="source" if precision == "float32" else "int4",
                                   threads=args.threads, check_tokens=4, fused=graph == "fused")
                seconds = time.perf_counter() - start
                print(f"{precision} {graph} graph: {params / 1e6:.1f}M parameters, exported in {seconds:.1f} s, "
                      f"model.onnx {result.files['model.onnx'] / 1e6:.1f} MB", flush=True)
                (out / "tokenizer.json").write_text("{}")  # the ids are given directly; no text is decoded
                if not engines:
                    engines["mlx-lm (mlx-cpu)"] = lambda m=model: mlx_steps(m, prompt, count)
                config = GenerationConfig(max_tokens=count)
                for backend in ("genai", "onnxruntime"):
                    try:
                        runner = LMRunner.__new__(LMRunner)
                        _open_without_tokenizer(runner, out, backend, args.threads)
                    except Exception as exc:  # noqa: BLE001 - report and go on with the other engines
                        print(f"  {backend}: not available ({exc})")
                        continue
                    steps = runner._steps_genai if backend == "genai" else runner._steps_ort
                    engines[f"{'ORT GenAI' if backend == 'genai' else 'mlxport ORT loop'} {graph}"] = (
                        lambda s=steps, c=config: s(prompt, c))
            reference = None
            for name, make in engines.items():
                for _ in range(1):  # warm-up: first session runs allocate
                    time_steps(make(), 2)
                first, rate, tokens = time_steps(make(), count)
                reference = reference or tokens
                agree = sum(a == b for a, b in zip(tokens, reference))
                rows.append({"precision": precision, "engine": name, "first_token_ms": round(first * 1000, 1),
                             "decode_tok_s": round(rate, 1), "agree_with_mlx": f"{agree}/{count}"})
                print(f"  {name:<26} first token {first * 1000:8.1f} ms   decode {rate:8.1f} tok/s   "
                      f"tokens equal to mlx-lm: {agree}/{count}", flush=True)
    print()
    for precision in ("float32", "int4"):
        base = next(r for r in rows if r["precision"] == precision and r["engine"].startswith("mlx-lm"))
        for r in rows:
            if r["precision"] == precision and r is not base:
                print(f"{precision:8} {r['engine']:<26} decode {r['decode_tok_s'] / base['decode_tok_s']:.1f}x "
                      f"mlx-lm's tokens/s")
    path = write_results("lm_generate", {"environment": environment(), "rows": rows,
                                         "model": {"hidden": hidden, "layers": layers, "vocab": vocab},
                                         "prompt_tokens": prompt_len, "new_tokens": count})
    print(f"results: {path}")


def _open_without_tokenizer(runner: Any, folder: Path, backend: str, threads: int) -> None:
    """LMRunner's engine set-up without its tokenizer (the benchmark feeds token ids)."""
    import json

    runner.folder = folder
    runner.config = json.loads((folder / "genai_config.json").read_text())
    runner.context_length = int(runner.config["model"]["context_length"])
    runner.eos = set()
    runner.backend = backend
    if backend == "genai":
        import onnxruntime_genai as og

        runner._og = og
        runner._model = og.Model(str(folder))
    else:
        from mlxport.runners import OnnxRunner

        dec = runner.config["model"]["decoder"]
        runner._runner = OnnxRunner(folder / "model.onnx", threads=threads)
        runner._layers, runner._kv_heads, runner._head = (int(dec["num_hidden_layers"]),
                                                         int(dec["num_key_value_heads"]), int(dec["head_size"]))
        runner._cache_dtype = np.float32


if __name__ == "__main__":
    main()
