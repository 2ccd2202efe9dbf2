"""An exported LM folder's weights inside model.onnx or beside it (model.onnx.data): load, prefill, decode, RSS.

One random mlx-lm llama (nothing downloaded) is exported twice with ``mlxport.export_lm``: ``external_data=True``
(the default, as ONNX Runtime GenAI's builder writes its folders) and ``external_data=False`` (CLI
``--single-file``). Each folder is then opened in a fresh process by ONNX Runtime GenAI, which loads the model,
prefills a 128-token prompt and decodes 32 tokens; the processes alternate (A, B, A, B, ...) so machine load
hits both alike. Printed per variant: median load+prefill seconds, decode tokens/s and peak RSS (VmHWM), and
the ratios.

    python benchmarks/lm_load.py                 # hidden 768, 8 layers, vocab 32000 (~80M params, 300 MB)
    python benchmarks/lm_load.py --hidden 1024   # larger
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PROBE = r"""
import sys, time
start = time.perf_counter()
import onnxruntime_genai as og
config = og.Config(sys.argv[1])
config.overlay('{"model": {"decoder": {"session_options": {"intra_op_num_threads": %d}}}}')
model = og.Model(config)
params = og.GeneratorParams(model)
params.set_search_options(max_length=256)
generator = og.Generator(model, params)
generator.append_tokens([[1] + list(range(5, 132))])
loaded = time.perf_counter() - start
start = time.perf_counter()
for _ in range(32):
    generator.generate_next_token()
decode = 32 / (time.perf_counter() - start)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]
print(loaded, decode, int(hwm) / 1e3)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--runs", type=int, default=3, help="processes per variant (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    args = parser.parse_args()

    import mlxport
    from common import environment, write_results
    from lm_generate import build

    env = environment()
    print(", ".join(f"{k} {v}" for k, v in env.items()))
    model = build(args.hidden, args.layers, args.vocab)
    with tempfile.TemporaryDirectory(prefix="mlxport-lm-load-") as tmp:
        folders = {}
        for name, external in (("model.onnx.data", True), ("single file", False)):
            start = time.perf_counter()
            result = mlxport.export_lm(model, None, Path(tmp) / name.replace(" ", "_"), external_data=external,
                                       check_tokens=0)
            print(f"export ({name}): {time.perf_counter() - start:.1f} s, decoder {result.model_bytes / 1e6:.0f} MB")
            folders[name] = result.folder
        rows: dict[str, list[list[float]]] = {name: [] for name in folders}
        for _ in range(args.runs):
            for name, folder in folders.items():
                done = subprocess.run([sys.executable, "-c", PROBE % args.threads, str(folder)], capture_output=True,
                                      text=True, check=True)
                rows[name].append([float(x) for x in done.stdout.split()[-3:]])
    medians = {name: [statistics.median(r[i] for r in runs) for i in range(3)] for name, runs in rows.items()}
    print(f"\n{'weights':18} {'load+prefill s':>15} {'decode tok/s':>13} {'peak RSS MB':>12}")
    for name, (load, decode, rss) in medians.items():
        print(f"{name:18} {load:15.3f} {decode:13.1f} {rss:12.0f}")
    (ext_load, ext_dec, ext_rss), (one_load, one_dec, one_rss) = medians.values()
    print(f"\nmodel.onnx.data vs single file: load+prefill {one_load / ext_load:.2f}x faster, decode "
          f"{ext_dec / one_dec:.2f}x, peak RSS {ext_rss / one_rss:.2f}x")
    write_results("lm_load", {"environment": env, "args": vars(args), "runs": rows, "medians": medians})
    return 0


if __name__ == "__main__":
    sys.exit(main())
