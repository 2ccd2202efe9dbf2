"""Edge bundle: the ``.tflite`` (LiteRT) or ``.onnx`` (ONNX Runtime / ONNX Runtime Mobile) model, ``metadata.json``,
``SHA256SUMS`` and a standalone ``run.py`` that needs only numpy and the runtime (never mlxport).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

from ..artifact import IOSpec, file_sha256
from ..formats import FORMATS
from . import target_formats
from .common import Bundle, Source, Staging, bundle_name, files_under, open_source, tflite_details, write_json
from .errors import PackageError

# MLX lays images and sequences out channels-last; these are the defaults by rank.
LAYOUTS = {4: "NHWC", 3: "NLC", 2: "NC"}
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulNBits", "MatMulInteger",
             "ConvInteger", "QLinearMatMul", "QLinearConv", "GatherBlockQuantized")


def _layout(spec: IOSpec, override: str | None) -> str | None:
    if override and len(override) == len(spec.shape):
        return override
    return LAYOUTS.get(len(spec.shape))


def _io(specs: list[IOSpec], tensors: dict[str, str], quant: dict[str, Any], layout: str | None,
        ) -> list[dict[str, Any]]:
    rows = []
    for spec in specs:
        row: dict[str, Any] = {"name": spec.name, "shape": [d if isinstance(d, int) else -1 for d in spec.shape],
                               "dynamic_dims": {str(k): d for k, d in enumerate(spec.shape) if not isinstance(d, int)},
                               "dtype": spec.dtype, "layout": _layout(spec, layout)}
        # The runtime's own name for the tensor, where it differs (LiteRT signatures, serving_default_x:0).
        if tensors.get(spec.name, spec.name) != spec.name:
            row["tensor"] = tensors[spec.name]
        if quant.get(spec.name):
            row["quantization"] = quant[spec.name]
        rows.append(row)
    return rows


def _onnx_quantization(path: Path) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = Counter(n.op_type for n in model.graph.node if n.op_type in QUANT_OPS)
    weights = Counter(onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name for t in model.graph.initializer
                      if t.data_type not in (onnx.TensorProto.BFLOAT16, onnx.TensorProto.STRING))
    return {"quantized": bool(ops), "ops": dict(ops), "weight_dtypes": dict(weights)}


def _preprocessing(inputs: list[dict[str, Any]], note: str | None) -> list[str]:
    notes = []
    for row in inputs:
        text = f"'{row['name']}': {row['dtype']}{row['shape']}"
        if row["layout"]:
            text += f", layout {row['layout']}"
        if row.get("quantization"):
            q = row["quantization"]
            text += (f"; quantized: q = round(x / {q['scales'][0]:g}) + {q['zero_points'][0]} (run.py does this "
                     "for float input)")
        notes.append(text)
    notes.append("-1 marks a dynamic dimension (any size). MLX convolutions are channels-last, so image inputs "
                 "are NHWC, not PyTorch's NCHW.")
    notes.append(note or "mlxport does not record training-time preprocessing: scale and normalise inputs "
                         "exactly as during training.")
    return notes


def metadata(source: Source, name: str, model_file: str, layout: str | None = None,
             preprocessing: str | None = None) -> dict[str, Any]:
    """The metadata.json of an edge bundle: signature, layout, preprocessing notes, quantization, provenance."""
    from .. import __version__

    signature, tensors = None, {}
    if source.suffix == ".tflite":
        details = tflite_details(source.path, source.meta)
        signature, tensors, io_quant = details["signature"], details["tensors"], details["io_quantization"]
        quant: dict[str, Any] = {"quantized": bool(io_quant) or any(
            t in ("int8", "uint8", "int16") for t in details["tensor_dtypes"]),
            "variant": (source.meta.extra.get("tflite") or {}).get("quantize"),
            "io": io_quant, "tensor_dtypes": details["tensor_dtypes"]}
    else:
        io_quant = {}
        quant = _onnx_quantization(source.path)
    if source.meta.extra.get("quantization") is not None:
        quant["recorded"] = source.meta.extra["quantization"]
    inputs = _io(source.inputs, tensors, io_quant, layout)
    outputs = _io(source.outputs, tensors, io_quant, None)
    validation = source.meta.validation or {}
    return {
        "name": name, "model_file": model_file, "format": source.format, "runtime": source.fmt.edge_runtime,
        "signature": signature,
        "inputs": inputs, "outputs": outputs, "preprocessing": _preprocessing(inputs, preprocessing),
        "quantization": quant,
        "provenance": {"source": source.meta.source, "mlx_version": source.meta.mlx_version,
                       "validated": validation.get("validated"), "sha256": source.sha256,
                       "mlxport_version": __version__},
    }


def package_edge(artifact: str | os.PathLike, out_dir: str | os.PathLike, *, name: str | None = None,
                 layout: str | None = None, preprocessing: str | None = None, force: bool = False) -> Bundle:
    """Write the model, metadata.json, SHA256SUMS, run.py and README.md; see ``mlxport.package.package``."""
    source = open_source(artifact, "edge", target_formats("edge"))
    name = bundle_name(name, source.path)
    if layout is not None and (not layout.isalpha() or not layout.isupper() or len(set(layout)) != len(layout)):
        raise PackageError(f"--layout must be distinct upper-case axis letters such as NHWC or NCHW; got '{layout}'")
    model_file = name + source.suffix
    data_names = [p.name for p in source.data_files]
    out = Path(out_dir)
    entries = [model_file, *data_names, "metadata.json", "SHA256SUMS", "run.py", "README.md"]
    stage = Staging(out, source.files, force=force)
    stage.plan(*entries)
    meta = metadata(source, name, model_file, layout, preprocessing)
    with stage:
        shutil.copyfile(source.path, stage.path(model_file))
        for data in source.data_files:
            shutil.copyfile(data, stage.path(data.name))
        write_json(stage.path("metadata.json"), meta)
        sums = [f"{file_sha256(stage.path(f))}  {f}" for f in [model_file, *data_names, "metadata.json"]]
        stage.path("SHA256SUMS").write_text("\n".join(sums) + "\n")
        template = resources.files("mlxport.package.templates").joinpath("edge_run.py")
        stage.path("run.py").write_text(template.read_text())
        stage.path("README.md").write_text(_readme(name, meta))
    notes = [f"run it anywhere with numpy + {meta['runtime']}: cd {out} && python run.py INPUT.npy",
             "verify by hand: sha256sum -c SHA256SUMS"]
    return Bundle("edge", out, files_under([out / e for e in entries]), notes)


def _readme(name: str, meta: dict[str, Any]) -> str:
    package = next(f.requirements[0] for f in FORMATS if f.edge_runtime == meta["runtime"])
    lines = [f"# Edge bundle for `{name}`", "", "Written by `mlxport package --target edge`. Needs only "
             f"`numpy` and `{package}` (no mlxport).", "",
             f"- `{meta['model_file']}`: the model ({meta['format']})",
             "- `metadata.json`: inputs, outputs, layout, preprocessing notes, quantization, provenance",
             "- `SHA256SUMS`: checksums (`sha256sum -c SHA256SUMS`); run.py checks them before running",
             "- `run.py`: `python run.py INPUT.npy|INPUTS.npz [-o OUT.npz]`", "", "## Inputs"]
    lines += [f"- {n}" for n in meta["preprocessing"]]
    return "\n".join(lines) + "\n"
