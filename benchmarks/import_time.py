"""How long `import mlxport` and `mlxport --help` take, beside the bare interpreter, in one run.

Each command runs in a fresh process, interleaved (A, B, C, A, B, C, ...) so that load on the machine hits
all of them alike; the median and the minimum wall time of each are printed with the target and a verdict.
Targets (issue 10): `import mlxport` under 0.1 s and `mlxport --help` under 0.3 s, on this machine, measured
as the median minus nothing (the interpreter's own start-up is included, and printed for reference).

    python benchmarks/import_time.py            # 15 runs each
    python benchmarks/import_time.py --runs 40

It also lists which heavy modules (mlx, onnx, onnxruntime, torch, numpy) each command loaded: `import
mlxport` and `mlxport --help` must load none of them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HEAVY = ("mlx", "onnx", "onnxruntime", "torch", "tensorflow", "numpy", "coremltools")
PROBE = "import sys; {code}; print(__import__('json').dumps(sorted(m for m in {heavy!r} if m in sys.modules)))"
COMMANDS = {
    "python (start-up only)": ("pass", None),
    "import mlxport": ("import mlxport", 0.1),
    "mlxport --help": ("import sys; sys.argv = ['mlxport', '--help']; from mlxport.cli import main; main()", 0.3),
}


def _once(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    return time.perf_counter() - start


def _heavy_modules(code: str) -> list[str]:
    probe = PROBE.format(code=code.replace("main()", "(main() if False else None)"), heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="runs of each command (default 15)")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]} on {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    for code, _ in COMMANDS.values():  # warm the file cache and the bytecode cache
        _once(code)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, (code, _) in COMMANDS.items():
            times[name].append(_once(code))
    failed = False
    print(f"{'command':26} {'median':>9} {'min':>9} {'target':>8}  verdict   heavy modules loaded")
    for name, (code, target) in COMMANDS.items():
        median, best = statistics.median(times[name]), min(times[name])
        heavy = _heavy_modules(code) if target else []
        ok = target is None or (median < target and not heavy)
        failed |= not ok
        verdict = "" if target is None else ("pass" if ok else "FAIL")
        print(f"{name:26} {median * 1e3:7.1f}ms {best * 1e3:7.1f}ms {'' if target is None else f'{target:.1f} s':>8}  "
              f"{verdict:8}  {', '.join(heavy) or '-'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
