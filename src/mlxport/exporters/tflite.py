"""LiteRT (TFLite) flatbuffers from the ONNX lowering, through onnx2tf in a child process.

The graph is lowered to standard ONNX (opset 17, no com.microsoft ops), onnx2tf turns
it into a Keras model with every input kept in MLX's layout, and TensorFlow's TFLite
converter writes one variant: float32, float16 weights, dynamic-range int8, or full
int8 calibrated on the user's data. TensorFlow runs in a child process
(``_onnx2tf_job.py``), so its import time and memory never reach the caller.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import ArtifactError, DynamicShapeError
from ..graph import Graph

# onnx2tf 1.29 pins old numpy/onnx/tensorflow in its metadata and tf-keras asks for the `tensorflow`
# wheel (twice tensorflow-cpu's size): both go in without their dependencies (see pyproject.toml).
NO_DEPS_STEP = "pip install --no-deps tf-keras==2.21.0 onnx2tf==1.29.24"
TFLITE_EXTRA = f'pip install "mlxport[tflite]" && {NO_DEPS_STEP}'
# The newest opset onnx2tf 1.29 translates fully; the ONNX target supports it (MIN_OPSET).
ONNX_OPSET = 17
QUANTIZE = ("float32", "float16", "dynamic_int8", "int8")
# (rtol, atol) by variant for float outputs, from the max abs errors measured against MLX on
# 5 random batches of 4 of the zoo models (tests/tflite): MLP 784-256-10 (outputs up to ~0.75),
# CNN 16x16x3 (~0.4), 2-layer encoder dims 64 (~3.8), 2-layer llama-style dims 64, vocab 256
# (logits ~2.6). float32 uses the dtype defaults (measured 2.4e-7 .. 1.2e-6).
TOLERANCES: dict[str, tuple[float, float]] = {
    # float16 weights, float32 math: MLP 2.3e-4, CNN 9.7e-5, encoder 5.3e-4, llama 1.6e-3.
    "float16": (1e-2, 5e-3),
    # int8 weights, float activations: MLP 6.1e-3, CNN 4.4e-3, encoder 1.4e-2, llama 7.3e-2.
    "dynamic_int8": (1e-1, 1.5e-1),
    # int8 weights and activations: MLP 8e-3 typical but 8.1e-2 on a batch beyond the calibrated
    # range, CNN 5e-3 / 6.1e-2. The encoder fails in LiteRT's int8 DIV (layer norm) and the llama
    # block is off by 0.79: attention and norms need dynamic_int8.
    "int8": (1e-1, 1.5e-1),
}
# A conversion of a large model takes minutes; this bounds a stuck TensorFlow.
TIMEOUT_S = 3600
_MODULES = {"tensorflow": "tensorflow-cpu", "tf_keras": "tf-keras", "onnx2tf": "onnx2tf",
            "ai_edge_litert": "ai-edge-litert", "onnx_graphsurgeon": "onnx-graphsurgeon",
            "sng4onnx": "sng4onnx", "sne4onnx": "sne4onnx", "h5py": "h5py", "psutil": "psutil"}


def check_stack() -> None:
    """Raise an ArtifactError naming the pip commands when a piece of the converter is missing."""
    missing = [pkg for mod, pkg in _MODULES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise ArtifactError(f"TFLite export needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                            "not installed",
                            hint=f"Install the converter with: {TFLITE_EXTRA} (onnx2tf pins old numpy/onnx/"
                                 "tensorflow versions and tf-keras the full tensorflow wheel, so both go in "
                                 "with --no-deps).")


def import_litert() -> Any:
    """``ai_edge_litert.interpreter``, or an error naming the extra to install."""
    try:
        from ai_edge_litert import interpreter
    except ImportError as exc:
        raise ArtifactError(f"running .tflite files needs ai-edge-litert, which is not installed: {exc}",
                            hint='Install it with: pip install "mlxport[tflite]" (or just: pip install '
                                 'ai-edge-litert)') from None
    return interpreter


def check_options(quantize: str | None, calibration: Any) -> str:
    """The quantize option, checked against the calibration argument."""
    quantize = quantize or "float32"
    if quantize not in QUANTIZE:
        raise ArtifactError(f"quantize must be one of {', '.join(QUANTIZE)}; got {quantize!r}")
    if quantize == "int8" and calibration is None:
        raise ArtifactError(
            "quantize='int8' (full integer) needs calibration data: pass calibration= a .npz file or a dict "
            "{input name: array} of representative inputs (mlxport never downloads sample data)",
            hint="Or use quantize='dynamic_int8', which needs no calibration.")
    if quantize != "int8" and calibration is not None:
        raise ArtifactError(f"calibration data is used only by quantize='int8'; got quantize={quantize!r}",
                            hint="Drop calibration, or ask for quantize='int8'.")
    return quantize


def check_graph(graph: Graph) -> None:
    """Dynamic axes other than a leading batch, and non-float32 float inputs, are refused up front."""
    others = [a for a in graph.dynamic_axes if a.axis != 0]
    if others:
        listed = ", ".join(f"{a.input}[{a.axis}]={a.symbol}" for a in others)
        raise DynamicShapeError(
            f"a .tflite file can have a dynamic first (batch) axis only; got {listed}. onnx2tf's graphs "
            "with other dynamic axes (sequence lengths) fail to convert or give wrong numbers",
            hint="Export the .tflite with those axes fixed (keep only {0: 'batch'} in dynamic_axes), or export "
                 ".onnx / .pt2, which keep them dynamic.")
    for info in graph.inputs:
        if info.dtype in ("float16", "bfloat16", "float64"):
            raise ArtifactError(
                f"input '{info.name}' is {info.dtype}; the TFLite target takes float32 models",
                hint="Trace the float32 model (model.set_dtype(mx.float32)) and pass quantize='float16' for "
                     "float16 weights.")


def calibration_arrays(calibration: str | os.PathLike | Mapping[str, Any], graph: Graph) -> dict[str, np.ndarray]:
    """One array per input: N calibration samples stacked on a new first axis, each a whole input.

    Accepted per input: shape ``[N, *input_shape]`` (N whole inputs), or ``[N, *input_shape[1:]]``
    (N rows along the batch axis; they are fed in groups of the model's batch size, one row at a
    time when the batch is dynamic).
    """
    if isinstance(calibration, (str, os.PathLike)):
        path = Path(calibration)
        if not path.exists():
            raise ArtifactError(f"no such calibration file: {path}")
        try:
            with np.load(path) as data:
                arrays = {k: np.asarray(data[k]) for k in data.files}
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"cannot read {path} as an .npz file: {exc}",
                                hint="Write one with numpy.savez(path, x=array, ...), one array per input "
                                     "name.") from exc
    elif isinstance(calibration, Mapping):
        arrays = {k: _to_numpy(v) for k, v in calibration.items()}
    else:
        raise ArtifactError(f"calibration must be a .npz path or a dict of arrays; got {type(calibration).__name__}")
    names = [i.name for i in graph.inputs]
    missing = [n for n in names if n not in arrays]
    unknown = sorted(set(arrays) - set(names))
    if missing or unknown:
        raise ArtifactError(f"calibration data must hold one array per input ({', '.join(names)}); "
                            f"missing {', '.join(missing) or 'none'}, unknown {', '.join(unknown) or 'none'}")
    dynamic_batch = {a.input for a in graph.dynamic_axes if a.axis == 0}
    out: dict[str, np.ndarray] = {}
    for info in graph.inputs:
        arr = arrays[info.name]
        shape = [int(d) if isinstance(d, int) else None for d in info.shape]
        batch = 1 if info.name in dynamic_batch else (shape[0] if shape else None)
        if _fits(arr.shape[1:], shape, info.name in dynamic_batch):
            samples = arr
        elif shape and batch and _fits(arr.shape[1:], shape[1:], False):
            count = arr.shape[0] // batch
            samples = arr[:count * batch].reshape(count, batch, *arr.shape[1:])
        else:
            want = "".join(f", {'?' if d is None else d}" for d in shape)
            raise ArtifactError(f"calibration array '{info.name}' has shape {list(arr.shape)}; expected "
                                f"[N{want}] (N whole inputs) or N rows along the batch axis")
        kind = np.dtype(info.dtype).kind
        if arr.dtype.kind not in ("iub" if kind in "iub" else "iuf"):
            raise ArtifactError(f"calibration array '{info.name}' is {arr.dtype}; the input is {info.dtype}")
        out[info.name] = np.ascontiguousarray(samples.astype(info.dtype))
    counts = {n: a.shape[0] for n, a in out.items()}
    if len(set(counts.values())) > 1:
        raise ArtifactError(f"calibration arrays hold different sample counts: {counts}")
    if not next(iter(counts.values()), 0):
        raise ArtifactError("calibration data holds no samples (rows along the batch axis come in groups of the "
                            "model's batch size)")
    return out


def _fits(shape: tuple[int, ...], want: list[int | None], dynamic_first: bool) -> bool:
    if len(shape) != len(want):
        return False
    return all(d is None or s == d or (k == 0 and dynamic_first) for k, (s, d) in enumerate(zip(shape, want)))


def _to_numpy(value: Any) -> np.ndarray:
    from ..capture import to_numpy

    try:
        import mlx.core as mx
    except ImportError:  # pragma: no cover - mlx is a core dependency
        return np.asarray(value)
    if isinstance(value, mx.array):
        return np.array(to_numpy(value))
    return np.asarray(value)


def export_tflite(graph: Graph, examples: list[np.ndarray], path: str | os.PathLike, *, quantize: str | None = None,
                  calibration: str | os.PathLike | Mapping[str, Any] | None = None,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write ``graph`` as a LiteRT flatbuffer.

    Args:
        graph: the captured graph (float32 inputs; a dynamic axis only at position 0).
        examples: one example input per graph input (they drive onnx2tf's own checks).
        path: the ``.tflite`` file to write.
        quantize: "float32" (default), "float16" (float16 weights), "dynamic_int8" (int8 weights,
            float activations) or "int8" (int8 weights and activations, float32 inputs and outputs).
        calibration: for "int8": a .npz file or a dict {input name: array} of representative inputs.
        progress: called with a short message at each stage.

    Returns:
        What the sidecar records about the flatbuffer: the quantize option, the signature key and
        the signature's input and output names for each graph input and output, its op types.
    """
    say = progress or (lambda _msg: None)
    quantize = check_options(quantize, calibration)
    check_graph(graph)
    check_stack()
    calib = calibration_arrays(calibration, graph) if calibration is not None else None
    path = Path(path)
    from .onnx import export_onnx

    with tempfile.TemporaryDirectory(prefix="mlxport-tflite-") as tmp:
        work = Path(tmp)
        onnx_path = work / "model.onnx"
        say(f"lowering {len(graph.nodes)} primitives to ONNX (opset {ONNX_OPSET}, standard ops) for onnx2tf")
        export_onnx(graph, onnx_path, opset=ONNX_OPSET, contrib_ops=False, checksum=False)
        job: dict[str, Any] = {"onnx": str(onnx_path), "workdir": str(work / "onnx2tf"), "quantize": quantize,
                               "output": str(work / "model.tflite"), "examples": {}}
        for k, (info, arr) in enumerate(zip(graph.inputs, examples)):
            job["examples"][info.name] = str(_save(work / f"example_{k}.npy", arr))
        if calib is not None:
            job["calibration"] = {n: str(_save(work / f"calibration_{k}.npy", a)) for k, (n, a) in
                                  enumerate(calib.items())}
        say(f"converting with onnx2tf and TensorFlow ({quantize}) in a child process")
        result = _run_job(job, work)
        mapping = _signature_mapping(graph, result)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(job["output"], path)
    return {"quantize": quantize, **mapping, "ops": result.get("ops", []),
            "convert_seconds": round(result.get("onnx2tf_seconds", 0) + result.get("tflite_seconds", 0), 3)}


def _save(path: Path, arr: np.ndarray) -> Path:
    np.save(path, np.ascontiguousarray(arr))
    return path


def _run_job(job: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run ``_onnx2tf_job.py`` on ``job``; return its result or raise with its error and output."""
    job_path = work / "job.json"
    job_path.write_text(json.dumps(job))
    script = Path(__file__).with_name("_onnx2tf_job.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(script), str(job_path)], cwd=work, env=env, capture_output=True,
                              text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ArtifactError(f"onnx2tf did not finish within {TIMEOUT_S} s",
                            hint="Try a smaller model, or export .onnx instead.") from None
    result_path = Path(str(job_path) + ".result.json")
    result = json.loads(result_path.read_text()) if result_path.exists() else {"ok": False}
    if proc.returncode == 0 and result.get("ok"):
        result["wall_seconds"] = time.perf_counter() - start
        return result
    tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
    error = result.get("error") or f"the converter process exited with code {proc.returncode}"
    if result.get("blocked_download"):
        raise ArtifactError(f"onnx2tf tried to download sample data, which mlxport does not allow: {error}",
                            hint="Please report this with the model; export .onnx meanwhile.")
    detail = _flex_hint(error + "\n" + tail)
    raise ArtifactError(f"onnx2tf/TensorFlow could not convert the model: {error}\n{tail}".rstrip(),
                        hint=detail or "Run with MLXPORT_DEBUG=1 for the whole traceback; export .onnx or .pt2 "
                                       "instead, which cover every primitive mlxport lowers.")


def _flex_hint(text: str) -> str:
    if "select TensorFlow op" in text or "Flex" in text or "not supported by the native TFLite runtime" in text:
        return ("Some ops have no LiteRT builtin kernel (they would need the Flex delegate, which "
                "ai_edge_litert lacks); export .onnx or .pt2 for this model.")
    if "TFLITE_BUILTINS_INT8" in text or "quantiz" in text.lower():
        return "Some ops have no int8 kernel: try quantize='dynamic_int8'."
    return ""


def _signature_mapping(graph: Graph, result: dict[str, Any]) -> dict[str, Any]:
    """Graph input/output names -> the flatbuffer signature's names, checked by shape."""
    signatures = result.get("signatures") or {}
    if len(signatures) != 1:
        raise ArtifactError(f"the converted flatbuffer has {len(signatures)} signatures; expected one")
    key = next(iter(signatures))
    sig_in, sig_out = result["inputs"], result["outputs"]
    inputs = _match([i.name for i in graph.inputs], list(sig_in), result.get("keras_inputs") or list(sig_in))
    outputs = _match([o.name for o in graph.outputs], list(sig_out), list(sig_out))
    problems = []
    for info in graph.inputs:
        got = sig_in[inputs[info.name]]["shape"]
        want = [-1 if not isinstance(d, int) else int(d) for d in info.shape]
        if got != want:
            problems.append(f"input '{info.name}' is {got} in the flatbuffer, {want} in MLX")
    for info in graph.outputs:
        got = sig_out[outputs[info.name]]["shape"]
        if len(got) != len(info.shape) or any(isinstance(d, int) and g not in (d, -1) for g, d in zip(got, info.shape)):
            problems.append(f"output '{info.name}' is {got} in the flatbuffer, {list(info.shape)} in MLX")
    if problems:
        raise ArtifactError("onnx2tf changed the signature: " + "; ".join(problems),
                            hint="Export .onnx or .pt2 for this model, and please report it.")
    return {"signature": key, "inputs": inputs, "outputs": outputs}


def _match(names: list[str], keys: list[str], ordered: list[str]) -> dict[str, str]:
    """Match by name, then by onnx2tf's sanitized name or ``output_N``, then by position."""
    if set(names) == set(keys):
        return {n: n for n in names}
    sanitized = {_sanitize(n): n for n in names}
    if set(sanitized) == set(keys):
        return {sanitized[k]: k for k in keys}
    if set(keys) == {f"output_{k}" for k in range(len(names))}:
        return {n: f"output_{k}" for k, n in enumerate(names)}
    if len(ordered) == len(names) and set(ordered) == set(keys):
        return dict(zip(names, ordered))
    raise ArtifactError(f"cannot match the flatbuffer's signature names {keys} to {names}")


def _sanitize(name: str) -> str:
    # onnx2tf's rule for TensorFlow op names (no colons, no leading slashes).
    return name.replace(":", "__").lstrip("/")


__all__ = ["QUANTIZE", "TFLITE_EXTRA", "TOLERANCES", "calibration_arrays", "check_graph", "check_options",
           "check_stack", "export_tflite", "import_litert", "NO_DEPS_STEP"]
