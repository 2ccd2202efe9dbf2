"""The child process of the TFLite exporter: ONNX -> Keras (onnx2tf) -> one LiteRT flatbuffer.

Run as ``python _onnx2tf_job.py JOB.json`` by ``mlxport.exporters.tflite``; it imports
numpy, TensorFlow and onnx2tf but never mlxport, so TensorFlow's import time and memory
stay out of the caller's process. The job file names the ONNX model, the example inputs
(``.npy``), the variant to write and, for full int8, the calibration arrays; the result
(written to ``JOB.result.json``) lists the flatbuffer's signature, or the error.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from typing import Any, Iterator

# onnx2tf's "pseudo" replacements of ops that LiteRT's builtin op set lacks (they would
# become Flex ops that ai_edge_litert cannot run): erf (GELU) as a polynomial within 1.5e-7.
PSEUDO_OPS = ["erf", "gelu"]


class DownloadBlocked(RuntimeError):
    """onnx2tf tried to fetch sample data from the internet."""


def _block_downloads() -> None:
    """onnx2tf fetches MS-COCO sample images for 4-D inputs; mlxport never lets it."""
    import numpy as np

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise DownloadBlocked("onnx2tf tried to download data; mlxport forbids downloads during export")

    try:
        import requests

        requests.get = refuse  # type: ignore[assignment]
        requests.Session.request = refuse  # type: ignore[assignment]
    except ImportError:
        pass
    import onnx2tf.onnx2tf as core
    from onnx2tf.utils import common_functions

    def stand_in() -> Any:
        # Only reached for image-like 4-D inputs, where onnx2tf prepares its own test batch;
        # the example inputs we pass (custom_input_op_name_np_data_path) take precedence.
        return np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32)

    core.download_test_image_data = stand_in
    common_functions.download_test_image_data = stand_in


class _SkippedConverter:
    """Stands in for the TFLiteConverter that onnx2tf uses for its own float32/float16 files."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        self.target_spec = type("TargetSpec", (), {})()
        self.optimizations: list[Any] = []

    def convert(self) -> bytes:
        return b""


@contextlib.contextmanager
def _only_keras() -> Iterator[None]:
    """Skip onnx2tf's SavedModel and its float32/float16 flatbuffers: we convert the one variant asked for.

    Those writes were about 90 % of onnx2tf's time on the zoo models (each TFLite conversion
    from Keras saves a SavedModel again); the Keras model it returns is all we need.
    """
    import tensorflow as tf

    saved, from_keras = tf.saved_model.save, tf.lite.TFLiteConverter.from_keras_model
    tf.saved_model.save = lambda *_args, **_kwargs: None
    tf.lite.TFLiteConverter.from_keras_model = staticmethod(_SkippedConverter)
    try:
        yield
    finally:
        tf.saved_model.save, tf.lite.TFLiteConverter.from_keras_model = saved, from_keras


class _MaxPoolTF:
    """``tf`` as onnx2tf's MaxPool module sees it for int8: explicit pads take the input's own minimum.

    onnx2tf pads max pooling with the dtype's minimum (-3.4e38), which wrecks the int8 range of
    the padded tensor (garbage outputs; XNNPACK refuses the graph), or, with its own int8 flag,
    with 0 (wrong where the input is negative: onnx2tf issue #444). The input's minimum is
    exact for max pooling (no window is all padding) and inside the calibrated range.
    """

    def __init__(self, tf: Any) -> None:
        self._tf = tf

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tf, name)

    def pad(self, tensor: Any, paddings: Any, mode: str = "CONSTANT", constant_values: Any = 0, **kwargs: Any) -> Any:
        tf = self._tf
        if mode == "CONSTANT" and tensor.dtype.is_floating and constant_values == tensor.dtype.min:
            constant_values = tf.reduce_min(tensor)
        return tf.pad(tensor, paddings, mode=mode, constant_values=constant_values, **kwargs)


@contextlib.contextmanager
def _int8_max_pool() -> Iterator[None]:
    import onnx2tf.ops.MaxPool as max_pool

    tf = max_pool.tf
    max_pool.tf = _MaxPoolTF(tf)
    try:
        yield
    finally:
        max_pool.tf = tf


def _representative(model: Any, calibration: dict[str, str]) -> Iterator[list[Any]]:
    """One calibration sample at a time, in the Keras model's input order.

    The parent stacks N whole inputs per graph input ([N, *input_shape]); Keras inputs carry
    the ONNX names (onnx2tf may have replaced ':' and leading '/'), else their position.
    """
    import numpy as np

    names = list(calibration)
    arrays = []
    for k, t in enumerate(model.inputs):
        name = next((n for n in names if n == t.name or n.replace(":", "__").lstrip("/") == t.name), names[k])
        arrays.append(np.load(calibration[name]))
    for k in range(arrays[0].shape[0]):
        yield [a[k] for a in arrays]


def _convert(model: Any, quantize: str, calibration: dict[str, str] | None) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    # Builtin ops only: ai_edge_litert's interpreter has no Flex (select TensorFlow) delegate.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: _representative(model, calibration or {})
        # Float32 in and out, as the MLX function: (de)quantization happens inside the model.
        converter.inference_input_type = tf.float32
        converter.inference_output_type = tf.float32
    return converter.convert()


def _signature(path: str) -> dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    sigs = interpreter.get_signature_list()
    out: dict[str, Any] = {"signatures": sigs, "inputs": {}, "outputs": {}}
    if len(sigs) == 1:
        runner = interpreter.get_signature_runner(next(iter(sigs)))
        for key, details in (("inputs", runner.get_input_details()), ("outputs", runner.get_output_details())):
            out[key] = {name: {"shape": [int(n) for n in d["shape_signature"]], "dtype": d["dtype"].__name__}
                        for name, d in details.items()}
    ops = set()
    try:
        ops = {op["op_name"] for op in interpreter._get_ops_details()}  # noqa: SLF001 - no public op list
    except (AttributeError, KeyError, RuntimeError):
        pass
    out["ops"] = sorted(ops)
    return out


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Convert as the job says; returns the result record."""
    start = time.perf_counter()
    _block_downloads()
    import onnx2tf

    with _only_keras(), (_int8_max_pool() if job["quantize"] == "int8" else contextlib.nullcontext()):
        model = onnx2tf.convert(
            input_onnx_file_path=job["onnx"],
            output_folder_path=job["workdir"],
            # MLX's layout for every input: onnx2tf would otherwise turn 3-D to 5-D inputs channels-last.
            keep_shape_absolutely_input_names=list(job["examples"]),
            # The example inputs drive onnx2tf's shape and accuracy checks (instead of ones or sample images).
            custom_input_op_name_np_data_path=[[name, path] for name, path in job["examples"].items()],
            replace_to_pseudo_operators=PSEUDO_OPS,
            # Our ONNX is already folded; onnxsim, when installed, would make results depend on it.
            not_use_onnxsim=True,
            verbosity="error",
        )
    if model is None:
        raise RuntimeError("onnx2tf returned no model (see its messages above)")
    convert_s = time.perf_counter() - start
    flatbuffer = _convert(model, job["quantize"], job.get("calibration"))
    with open(job["output"], "wb") as f:
        f.write(flatbuffer)
    result = {"ok": True, "onnx2tf_seconds": round(convert_s, 3),
              "tflite_seconds": round(time.perf_counter() - start - convert_s, 3),
              "keras_inputs": [t.name for t in model.inputs]}
    result.update(_signature(job["output"]))
    return result


def main(argv: list[str]) -> int:
    job_path = argv[1]
    with open(job_path) as f:
        job = json.load(f)
    result_path = job_path + ".result.json"
    try:
        result = run(job)
        code = 0
    except BaseException as exc:  # report every failure to the parent, SystemExit from onnx2tf included
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
                  "blocked_download": isinstance(exc, DownloadBlocked)}
        code = 1
    with open(result_path, "w") as f:
        json.dump(result, f)
    return code


if __name__ == "__main__":
    # Run by path, Python puts this folder first on sys.path, where onnx.py (our exporter) would
    # shadow the onnx package.
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)
    sys.exit(main(sys.argv))
