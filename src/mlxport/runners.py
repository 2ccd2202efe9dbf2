"""Run exported artifacts with one interface: ``runner(*arrays) -> list[np.ndarray]``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .artifact import SIDE_SUFFIX, IOSpec, read_meta
from .dtypes import ORT_TYPES as _ORT_TYPES, numpy_dtype as _np_dtype
from .errors import ArtifactError
from .formats import require_format


def _as_numpy(value: Any) -> np.ndarray:
    try:
        import mlx.core as mx
    except ImportError:  # pragma: no cover - mlx is a core dependency
        mx = None
    if mx is not None and isinstance(value, mx.array):
        from .capture import to_numpy

        mx.eval(value)
        return np.array(to_numpy(value))
    return np.asarray(value)


class Runner:
    """Base class: validates and names the inputs, then runs the backend."""

    backend = "none"
    inputs: list[IOSpec]
    outputs: list[IOSpec]

    def bind(self, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        """Check and convert inputs once (name -> numpy array), ready for ``run``."""
        return self._bind(args, kwargs)

    def _bind(self, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, np.ndarray]:
        names = [i.name for i in self.inputs]
        if len(args) > len(names):
            raise TypeError(f"expected at most {len(names)} inputs ({', '.join(names)}); got {len(args)}")
        feed = {n: _as_numpy(a) for n, a in zip(names, args)}
        for k, v in kwargs.items():
            if k not in names:
                raise TypeError(f"unknown input '{k}'; the inputs are {', '.join(names)}")
            if k in feed:
                raise TypeError(f"input '{k}' given twice (by position and by name)")
            feed[k] = _as_numpy(v)
        missing = [n for n in names if n not in feed]
        if missing:
            raise TypeError(f"missing inputs {', '.join(missing)}; expected {', '.join(i.describe() for i in self.inputs)}")
        for spec in self.inputs:
            arr = feed[spec.name]
            if arr.dtype.name != spec.dtype:
                if arr.dtype.kind == np.dtype(spec.dtype if spec.dtype != "bfloat16" else "float32").kind or (
                        arr.dtype.kind in "iuf" and spec.dtype != "bool"):
                    feed[spec.name] = arr.astype(_np_dtype(spec.dtype))
                else:
                    raise TypeError(f"input '{spec.name}' must be {spec.dtype}; got {arr.dtype.name}")
            if len(arr.shape) != len(spec.shape) or any(
                    isinstance(d, int) and d != s for d, s in zip(spec.shape, arr.shape)):
                raise ValueError(f"input '{spec.name}' must have shape {spec.describe().split(': ')[1]}; "
                                 f"got {list(arr.shape)}")
        # In the artifact's input order, whatever order the keywords came in (positional runners rely on it).
        return {spec.name: feed[spec.name] for spec in self.inputs}

    def __call__(self, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        return self.run(self._bind(args, kwargs))

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        ins = ", ".join(i.describe() for i in self.inputs)
        outs = ", ".join(o.describe() for o in self.outputs)
        return f"<{type(self).__name__} backend={self.backend} inputs=({ins}) outputs=({outs})>"




class OnnxRunner(Runner):
    """ONNX Runtime on CPU."""

    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike | bytes, *, threads: int | None = None,
                 providers: Sequence[str] | None = None, spinning: bool = True, log_severity: int = 3) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        if not spinning:
            # Idle intra-op threads otherwise spin between runs: a server's event loop loses that core.
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = log_severity
        self.path = None if isinstance(path, bytes) else Path(path)
        source = path if isinstance(path, bytes) else str(path)
        try:
            self.session = ort.InferenceSession(source, opts, providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ArtifactError(f"ONNX Runtime cannot load {self.path or 'the model'}: {exc}",
                                hint="Is the file complete and an ONNX model? Export it again, or run "
                                     "`mlxport inspect` on it.") from exc
        self.inputs = [IOSpec(i.name, list(i.shape), _ORT_TYPES.get(i.type, i.type)) for i in self.session.get_inputs()]
        self.outputs = [IOSpec(o.name, list(o.shape), _ORT_TYPES.get(o.type, o.type)) for o in self.session.get_outputs()]

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if any(a.dtype.name == "bfloat16" for a in feed.values()):
            return self._run_bf16(feed)
        return self.session.run(None, feed)

    def _run_bf16(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        # onnxruntime's numpy bridge does not know ml_dtypes.bfloat16: pass raw bits as OrtValues.
        import onnxruntime as ort
        from onnx import TensorProto

        values = {}
        for name, arr in feed.items():
            if arr.dtype.name == "bfloat16":
                values[name] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                    np.ascontiguousarray(arr).view(np.uint16), TensorProto.BFLOAT16)
            else:
                values[name] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr))
        outs = self.session.run_with_ort_values(None, values)
        result = []
        for spec, o in zip(self.outputs, outs):
            if spec.dtype != "bfloat16":
                result.append(o.numpy())
                continue
            # No numpy type for bfloat16 outputs either: copy the raw bits out of the OrtValue.
            import ctypes

            shape = tuple(o.shape())
            count = int(np.prod(shape, dtype=np.int64))
            raw = (ctypes.c_uint16 * count).from_address(o.data_ptr()) if count else []
            bits = np.array(raw, dtype=np.uint16).reshape(shape)
            result.append(bits.view(_np_dtype("bfloat16")))
        return result


class MlxfnRunner(Runner):
    """MLX's own runtime for ``.mlxfn`` files (``mx.import_function``)."""

    backend = "mlx"

    def __init__(self, path: str | os.PathLike) -> None:
        import mlx.core as mx

        self.path = Path(path)
        try:
            self.fn = mx.import_function(str(path))
        except (RuntimeError, ValueError) as exc:
            raise ArtifactError(f"MLX cannot import {path}: {exc}",
                                hint="Was it written by mx.export_function with this MLX version?") from exc
        meta = read_meta(path)
        self.inputs, self.outputs = meta.inputs, meta.outputs

    def __call__(self, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        if not self.inputs:
            return self.run({f"input_{i}": _as_numpy(a) for i, a in enumerate(args)})
        return super().__call__(*args, **kwargs)

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        import mlx.core as mx

        from .capture import to_mx, to_numpy

        outs = self.fn(*[to_mx(a) for a in feed.values()])
        mx.eval(outs)
        return [np.array(to_numpy(o)) for o in outs]


class _TorchRunner(Runner):
    """Shared by the TorchScript and torch.export runners: numpy in, numpy out, names from the sidecar."""

    def _load_signature(self, path: str | os.PathLike) -> None:
        meta = read_meta(path)
        if not meta.inputs:
            raise ArtifactError(f"{path} has no {Path(path).name}{SIDE_SUFFIX} beside it, so its inputs are unknown",
                                hint="Export it again with mlxport, which writes that file.")
        self.inputs, self.outputs = meta.inputs, meta.outputs

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        from .dtypes import to_tensor

        with torch.no_grad():
            outs = self.module(*[to_tensor(a) for a in feed.values()])
        if not isinstance(outs, (tuple, list)):
            outs = (outs,)
        result = []
        for o in outs:
            o = o.detach().contiguous()
            if o.dtype == torch.bfloat16:
                result.append(o.view(torch.int16).numpy().view(_np_dtype("bfloat16")))
            else:
                result.append(o.numpy())
        return result


class TorchScriptRunner(_TorchRunner):
    """TorchScript (``.pt``) through ``torch.jit.load`` (no unpickling of arbitrary objects)."""

    backend = "torchscript"

    def __init__(self, path: str | os.PathLike) -> None:
        from .exporters.torch import import_torch

        torch = import_torch()
        self.path = Path(path)
        self._load_signature(path)
        try:
            self.module = torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError as exc:
            raise ArtifactError(f"torch.jit.load cannot read {path}: {exc}") from exc


class ExportedProgramRunner(_TorchRunner):
    """torch.export programs (``.pt2``) through ``torch.export.load``."""

    backend = "torch.export"

    def __init__(self, path: str | os.PathLike) -> None:
        from .exporters.torch import import_torch

        torch = import_torch()
        self.path = Path(path)
        self._load_signature(path)
        try:
            self.module = torch.export.load(str(path)).module()
        except (RuntimeError, ValueError) as exc:
            raise ArtifactError(f"torch.export.load cannot read {path}: {exc}") from exc


class MLPackageRunner(Runner):
    """Core ML ML Programs (``.mlpackage``) through coremltools; prediction needs macOS."""

    backend = "coreml"

    def __init__(self, path: str | os.PathLike) -> None:
        import sys

        from .exporters.coreml import import_coremltools

        self.path = Path(path)
        if sys.platform != "darwin":
            raise ArtifactError(f"cannot run {self.path.name}: Core ML prediction, and so numeric validation, "
                                f"needs macOS (this is {sys.platform})",
                                hint="Copy the .mlpackage to a Mac, or check its structure with coremltools' "
                                     "ct.utils.load_spec here.")
        ct = import_coremltools()
        meta = read_meta(path)
        try:
            self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        except (RuntimeError, ValueError) as exc:
            raise ArtifactError(f"Core ML cannot load {path}: {exc}") from exc
        spec = self.model.get_spec().description
        self.inputs = meta.inputs or [IOSpec(f.name, list(f.type.multiArrayType.shape), "float32")
                                      for f in spec.input]
        self.outputs = meta.outputs or [IOSpec(f.name, [], "float32") for f in spec.output]

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        outs = self.model.predict({k: np.ascontiguousarray(v) for k, v in feed.items()})
        result = []
        for spec in self.outputs:
            arr = np.asarray(outs[spec.name])
            # Core ML may hand float16 outputs back as float32.
            result.append(arr.astype(_np_dtype(spec.dtype)) if spec.dtype in ("float16", "float32") else arr)
        return result


class TFLiteRunner(Runner):
    """LiteRT flatbuffers (``.tflite``) through ``ai_edge_litert``'s Interpreter.

    Inputs and outputs go by the sidecar's names, mapped to the flatbuffer's signature; a
    dynamic batch resizes the input tensors. One call runs at a time (the interpreter is
    not thread-safe). Where LiteRT's default XNNPACK delegate cannot prepare a graph (seen
    with full-int8 convolutions behind a dynamic batch), the builtin kernels run it.
    """

    backend = "litert"

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        import threading

        from .exporters.tflite import import_litert

        self._litert = import_litert()
        self.path = Path(path)
        self._threads = threads
        self.delegate = "xnnpack"
        try:
            self.interpreter = self._litert.Interpreter(model_path=str(path), num_threads=threads)
        except (RuntimeError, ValueError) as exc:
            raise ArtifactError(f"LiteRT cannot load {path}: {exc}",
                                hint="Is the file complete and a .tflite flatbuffer? Export it again.") from exc
        meta = read_meta(path)
        info = meta.extra.get("tflite") or {}
        sigs = self.interpreter.get_signature_list()
        key = info.get("signature") or (next(iter(sigs)) if len(sigs) == 1 else None)
        if key is not None and key in sigs:
            sig = self.interpreter.get_signature_runner(key)
            ins, outs = sig.get_input_details(), sig.get_output_details()
        else:  # no signature (not written by mlxport): the interpreter's own order and names
            ins = {d["name"]: d for d in self.interpreter.get_input_details()}
            outs = {d["name"]: d for d in self.interpreter.get_output_details()}
        if meta.inputs:
            self.inputs, self.outputs = meta.inputs, meta.outputs
        else:
            self.inputs = [_litert_spec(n, d) for n, d in ins.items()]
            self.outputs = [_litert_spec(n, d) for n, d in outs.items()]
        in_names = info.get("inputs") or {s.name: n for s, n in zip(self.inputs, ins)}
        out_names = info.get("outputs") or {s.name: n for s, n in zip(self.outputs, outs)}
        try:
            self._in = [int(ins[in_names[s.name]]["index"]) for s in self.inputs]
            self._out = [int(outs[out_names[s.name]]["index"]) for s in self.outputs]
        except KeyError as exc:
            raise ArtifactError(f"{self.path.name} has no tensor {exc} that its metadata names; its signature "
                                f"holds {', '.join(ins)} -> {', '.join(outs)}",
                                hint="The metadata file belongs to another export: export again.") from None
        self._shapes: list[tuple[int, ...] | None] = [None] * len(self._in)
        self._lock = threading.Lock()
        self.quantize = info.get("quantize")

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        arrays = [np.ascontiguousarray(feed[s.name]) for s in self.inputs]
        with self._lock:
            resized = False
            for k, (index, arr) in enumerate(zip(self._in, arrays)):
                if self._shapes[k] != arr.shape:
                    self.interpreter.resize_tensor_input(index, list(arr.shape), strict=True)
                    self._shapes[k] = arr.shape
                    resized = True
            if resized:
                self._allocate()
            for index, arr in zip(self._in, arrays):
                self.interpreter.set_tensor(index, arr)
            try:
                self.interpreter.invoke()
            except RuntimeError as exc:
                if self.quantize != "int8":
                    raise
                # e.g. a quantized DIV whose divisor rounds to zero (layer norms, softmax).
                raise RuntimeError(f"{exc} (an int8 kernel failed: full int8 suits dense and convolutional "
                                   "models; export with quantize='dynamic_int8' instead)") from exc
            outs = [self.interpreter.get_tensor(i) for i in self._out]  # copies
        result = []
        for spec, o in zip(self.outputs, outs):
            want = _np_dtype(spec.dtype) if spec.dtype else o.dtype
            # TensorFlow may compute an int64 result in int32 (or the reverse): same values, MLX's dtype.
            result.append(o.astype(want) if o.dtype != want and o.dtype.kind == want.kind else o)
        return result


    def _allocate(self) -> None:
        try:
            self.interpreter.allocate_tensors()
        except RuntimeError as exc:
            if self.delegate != "xnnpack" or "XNNPACK" not in str(exc):
                raise
            # The same flatbuffer, without the default delegate: same tensor indices, builtin kernels.
            self.interpreter = self._litert.Interpreter(
                model_path=str(self.path), num_threads=self._threads,
                experimental_op_resolver_type=self._litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            self.delegate = "none"
            for index, shape in zip(self._in, self._shapes):
                self.interpreter.resize_tensor_input(index, list(shape or ()), strict=True)
            self.interpreter.allocate_tensors()


def _litert_spec(name: str, details: dict[str, Any]) -> IOSpec:
    shape = [None if int(d) < 0 else int(d) for d in details.get("shape_signature", details["shape"])]
    return IOSpec(name, shape, np.dtype(details["dtype"]).name)


def load(path: str | os.PathLike, **options: Any) -> Runner:
    """Open an exported artifact with the runtime its suffix names (see ``mlxport.formats``).

    Args:
        path: an ``.onnx``, ``.tflite`` (LiteRT), ``.pt`` (TorchScript), ``.pt2`` (torch.export) or ``.mlxfn``
            file, or an ``.mlpackage`` (Core ML; runs only on macOS).
        **options: backend options (``threads`` for ONNX Runtime and LiteRT).

    Returns:
        A Runner: call it with numpy or mx arrays (by position or name); it returns numpy arrays.
    """
    p = Path(path)
    fmt = require_format(p, "the artifact to load")
    if not p.exists():
        raise ArtifactError(f"no such artifact: {p}")
    return fmt.load_runner()(p, **options)
