#!/usr/bin/env python3
"""Run this edge bundle's model on an .npy/.npz input: checks SHA256SUMS first, then runs LiteRT or ONNX Runtime.

Written by ``mlxport package --target edge``. Needs only numpy and the runtime the model needs:
``ai-edge-litert`` for .tflite, ``onnxruntime`` for .onnx. It does not use mlxport.

    python run.py                        # zeros shaped like the inputs (dynamic dims = 1): a smoke test
    python run.py input.npy              # one-input models
    python run.py inputs.npz -o out.npz  # arrays named like the inputs (or arr_0, arr_1, ... in order)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def verify(folder: Path) -> list[str]:
    """Check every file listed in SHA256SUMS; returns their names."""
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        fail(f"{sums} is missing, so the model cannot be verified (pass --skip-verify to run it anyway)")
    names = []
    for line in sums.read_text().splitlines():
        if not line.strip():
            continue
        expected, _, name = line.partition("  ")
        path = folder / name
        if "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
            fail(f"SHA256SUMS lists '{name}', which is not a file in {folder}")
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != expected.strip():
            fail(f"{name} does not match its sha256 in SHA256SUMS: the file is corrupt or was changed")
        names.append(name)
    return names


def read_inputs(path: str | None, specs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Arrays by input name: from an .npy (one input) or .npz file, or zeros when no file is given."""
    if path is None:
        return {s["name"]: np.zeros([d if isinstance(d, int) and d >= 0 else 1 for d in s["shape"]],
                                    dtype=np.dtype(s["dtype"])) for s in specs}
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        fail(f"cannot read {path} as .npy or .npz: {exc}")
    names = [s["name"] for s in specs]
    if isinstance(data, np.ndarray):
        if len(specs) != 1:
            fail(f"{path} holds one array, but the model has {len(specs)} inputs ({', '.join(names)}); use an "
                 ".npz with one array per input name")
        return {names[0]: data}
    with data:
        keys = list(data.files)
        aliases = {s.get("tensor"): s["name"] for s in specs if s.get("tensor")}
        feed = {}
        for i, spec in enumerate(specs):
            for key in (spec["name"], spec.get("tensor"), f"arr_{i}"):
                if key in keys:
                    feed[spec["name"]] = data[key]
                    break
        unknown = [k for k in keys if k not in names and k not in aliases and not k.startswith("arr_")]
    missing = [n for n in names if n not in feed]
    if missing or unknown:
        fail(f"{path} has the arrays {keys}; the model's inputs are {names}"
             + (f" (missing {missing})" if missing else "") + (f" (unknown {unknown})" if unknown else ""))
    return feed


def conform(arr: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Check the rank and fixed dims; cast safely; quantize real values for integer-quantized inputs."""
    shape, dtype = spec["shape"], np.dtype(spec["dtype"])
    if arr.ndim != len(shape) or any(isinstance(d, int) and d >= 0 and d != n for d, n in zip(shape, arr.shape)):
        fail(f"input '{spec['name']}' must have the shape {shape} (-1 or null: any size); got {list(arr.shape)}")
    quant = spec.get("quantization")
    if quant and dtype.kind in "iu" and arr.dtype.kind == "f":
        scale, zero = quant["scales"][0], quant["zero_points"][0]
        info = np.iinfo(dtype)
        return np.clip(np.round(arr / scale) + zero, info.min, info.max).astype(dtype)
    if arr.dtype != dtype:
        if not np.can_cast(arr.dtype, dtype, casting="same_kind"):
            fail(f"input '{spec['name']}' must be {dtype.name}; got {arr.dtype.name}")
        arr = arr.astype(dtype)
    return np.ascontiguousarray(arr)


def run_tflite(model: Path, meta: dict[str, Any], feed: dict[str, np.ndarray], threads: int | None,
               ) -> list[np.ndarray]:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        fail("this bundle runs a .tflite model with LiteRT: pip install ai-edge-litert")
    interp = Interpreter(model_path=str(model), num_threads=threads)
    tensor = {s["name"]: s.get("tensor", s["name"]) for s in meta["inputs"] + meta["outputs"]}
    if meta.get("signature"):
        # The signature runner resizes dynamic inputs itself.
        runner = interp.get_signature_runner(meta["signature"])
        outs = runner(**{tensor[n]: a for n, a in feed.items()})
        return [np.array(outs[tensor[s["name"]]]) for s in meta["outputs"]]
    details = {d["name"]: d for d in interp.get_input_details()}
    for name, arr in feed.items():
        d = details[tensor[name]]
        if list(d["shape"]) != list(arr.shape):
            interp.resize_tensor_input(d["index"], list(arr.shape))
    interp.allocate_tensors()
    for name, arr in feed.items():
        interp.set_tensor(details[tensor[name]]["index"], arr)
    interp.invoke()
    out_index = {d["name"]: d["index"] for d in interp.get_output_details()}
    return [np.array(interp.get_tensor(out_index[tensor[s["name"]]])) for s in meta["outputs"]]


def run_onnx(model: Path, meta: dict[str, Any], feed: dict[str, np.ndarray], threads: int | None) -> list[np.ndarray]:
    try:
        import onnxruntime as ort
    except ImportError:
        fail("this bundle runs an .onnx model with ONNX Runtime: pip install onnxruntime")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def dequantize(arr: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    quant = spec.get("quantization")
    if not quant or arr.dtype.kind not in "iu":
        return arr
    return ((arr.astype(np.float32) - quant["zero_points"][0]) * quant["scales"][0]).astype(np.float32)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", nargs="?", help=".npy (one input) or .npz (by input name); default: zeros")
    parser.add_argument("-o", "--output", help="write the outputs to this .npz (by output name)")
    parser.add_argument("--threads", type=int, help="runtime threads (default: the runtime's choice)")
    parser.add_argument("--raw", action="store_true", help="keep quantized outputs as integers (no dequantize)")
    parser.add_argument("--skip-verify", action="store_true", help="do not check SHA256SUMS (not recommended)")
    args = parser.parse_args(argv)
    meta_path = HERE / "metadata.json"
    if not meta_path.is_file():
        fail(f"{meta_path} is missing; run run.py from the folder mlxport package wrote")
    if not args.skip_verify:
        verify(HERE)
    meta = json.loads(meta_path.read_text())
    model = HERE / meta["model_file"]
    given = read_inputs(args.input, meta["inputs"])
    feed = {s["name"]: conform(given[s["name"]], s) for s in meta["inputs"]}
    runner = run_tflite if model.suffix == ".tflite" else run_onnx
    outputs = runner(model, meta, feed, args.threads)
    named = {}
    for spec, arr in zip(meta["outputs"], outputs):
        arr = arr if args.raw else dequantize(arr, spec)
        named[spec["name"]] = arr
        flat = arr.reshape(-1)[:6]
        print(f"{spec['name']}: {arr.dtype.name}{list(arr.shape)} {np.array2string(flat, precision=5)}"
              f"{' ...' if arr.size > 6 else ''}")
    if args.output:
        np.savez(args.output, **named)
        print(f"outputs written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
