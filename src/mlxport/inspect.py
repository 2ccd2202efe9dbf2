"""Describe an exported artifact: signature, opsets, node counts, weights, size and sidecar metadata."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from .artifact import ArtifactMeta, artifact_bytes, artifact_sha256, read_meta, sidecar_path
from .dtypes import numpy_dtype_of_onnx
from .errors import ArtifactError
from .formats import require_format


def _file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def human_bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def _onnx_io(values: Any) -> list[dict[str, Any]]:
    out = []
    for v in values:
        t = v.type.tensor_type
        dims: list[Any] = []
        for d in t.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        out.append({"name": v.name, "shape": dims, "dtype": numpy_dtype_of_onnx(t.elem_type).name
                    if t.elem_type else "unknown"})
    return out


def _initializer_bytes(tensor: Any) -> int:
    from onnx import TensorProto

    for entry in tensor.external_data:
        if entry.key == "length":
            return int(entry.value)
    if tensor.data_location != TensorProto.EXTERNAL and tensor.raw_data:
        return len(tensor.raw_data)
    count = 1
    for d in tensor.dims:
        count *= d
    return count * numpy_dtype_of_onnx(tensor.data_type).itemsize


def _count_nodes(graph: Any, counts: Counter) -> None:
    """Count ops in a graph and in the subgraphs of If/Loop/Scan nodes."""
    for node in graph.node:
        key = node.op_type if not node.domain else f"{node.domain}.{node.op_type}"
        counts[key] += 1
        for attr in node.attribute:
            if attr.g.node:
                _count_nodes(attr.g, counts)
            for g in attr.graphs:
                _count_nodes(g, counts)


def _sorted_counts(counts: Counter) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _signature(meta: ArtifactMeta) -> dict[str, Any]:
    return {"inputs": [i.to_dict() for i in meta.inputs], "outputs": [o.to_dict() for o in meta.outputs]}


def inspect_onnx(path: Path, meta: ArtifactMeta) -> dict[str, Any]:
    """The ONNX graph: opsets, signature, node counts by op type, initializers, external data."""
    import onnx

    try:
        # The weights stay on disk: only the graph and initializer headers are read.
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several untyped errors for corrupt files
        raise ArtifactError(f"{path} is not a readable ONNX model: {exc}",
                            hint="Was it written completely? Export it again, or check it with onnx.checker.") from exc
    counts: Counter = Counter()
    _count_nodes(model.graph, counts)
    external = sorted({e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"})
    return {
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "inputs": _onnx_io(model.graph.input),
        "outputs": _onnx_io(model.graph.output),
        "nodes": sum(counts.values()),
        "op_counts": _sorted_counts(counts),
        "initializers": len(model.graph.initializer),
        "initializer_bytes": sum(_initializer_bytes(t) for t in model.graph.initializer),
        "external_data": {name: _file_size(path.parent / name) for name in external},
        "metadata": {p.key: p.value for p in model.metadata_props},
    }


def inspect_mlxfn(path: Path, meta: ArtifactMeta) -> dict[str, Any]:
    """Signature from the metadata; primitive counts by re-tracing the imported function when shapes are static."""
    import mlx.core as mx

    from .capture import mx_dtype

    info: dict[str, Any] = _signature(meta)
    try:
        fn = mx.import_function(str(path))
    except (RuntimeError, ValueError) as exc:
        raise ArtifactError(f"MLX cannot import {path}: {exc}") from exc
    inputs = info["inputs"]
    if not inputs or not all(isinstance(d, int) for i in inputs for d in i["shape"]):
        info["primitives_note"] = "primitive counts need static input shapes from the sidecar"
        return info
    counts: Counter = Counter()

    def callback(rec: dict[str, Any]) -> None:
        if rec["type"] == "primitive":
            counts[rec["name"]] += 1

    args = [mx.zeros(i["shape"], dtype=mx_dtype(i["dtype"])) for i in inputs]
    try:
        # One call first: an imported function's constants are lazy Load primitives, which
        # the export callback cannot trace until they have been evaluated.
        mx.eval(fn(*args))
        mx.export_function(callback, lambda *xs: fn(*xs), *args)
    except (RuntimeError, ValueError, TypeError) as exc:
        info["primitives_note"] = f"could not re-trace: {exc}"
        return info
    info["primitives"] = sum(counts.values())
    info["op_counts"] = _sorted_counts(counts)
    return info


def inspect_torch(path: Path, meta: ArtifactMeta) -> dict[str, Any]:
    """TorchScript (``.pt``) or torch.export (``.pt2``): signature from the metadata, graph node counts."""
    from .exporters.torch import import_torch

    torch = import_torch()
    info: dict[str, Any] = _signature(meta)
    counts: Counter = Counter()
    try:
        if path.suffix.lower() == ".pt":
            module = torch.jit.load(str(path), map_location="cpu")
            for node in module.inlined_graph.nodes():
                if node.kind() not in ("prim::Constant", "prim::ListConstruct", "prim::TupleConstruct"):
                    counts[node.kind()] += 1
        else:
            program = torch.export.load(str(path))
            for node in program.graph.nodes:
                if node.op == "call_function":
                    counts[str(node.target)] += 1
            info["torch_export"] = {"parameters": len(program.state_dict), "constants": len(program.constants)}
    except (RuntimeError, ValueError) as exc:
        raise ArtifactError(f"torch cannot read {path}: {exc}",
                            hint="Was it written completely? Export it again.") from exc
    info["nodes"] = sum(counts.values())
    info["op_counts"] = _sorted_counts(counts)
    return info


def inspect_tflite(path: Path, meta: ArtifactMeta) -> dict[str, Any]:
    """A LiteRT flatbuffer: its signature, tensors and op counts (read by LiteRT's interpreter, not run)."""
    import numpy as np

    from .exporters.tflite import import_litert

    litert = import_litert()
    try:
        interpreter = litert.Interpreter(model_path=str(path))
    except (RuntimeError, ValueError) as exc:
        raise ArtifactError(f"LiteRT cannot load {path}: {exc}",
                            hint="Is the file complete and a .tflite flatbuffer? Export it again.") from exc
    info: dict[str, Any] = _signature(meta)
    if not meta.inputs:
        def spec(d: dict[str, Any]) -> dict[str, Any]:
            shape = [None if int(n) < 0 else int(n) for n in d.get("shape_signature", d["shape"])]
            return {"name": d["name"], "shape": shape, "dtype": np.dtype(d["dtype"]).name}

        info["inputs"] = [spec(d) for d in interpreter.get_input_details()]
        info["outputs"] = [spec(d) for d in interpreter.get_output_details()]
    counts: Counter = Counter(op["op_name"] for op in interpreter._get_ops_details())
    info["nodes"] = sum(counts.values())
    info["op_counts"] = _sorted_counts(counts)
    info["tflite"] = {"signatures": list(interpreter.get_signature_list()),
                      "tensors": len(interpreter.get_tensor_details()),
                      "quantize": (meta.extra.get("tflite") or {}).get("quantize")}
    return info


def inspect_coreml(path: Path, meta: ArtifactMeta) -> dict[str, Any]:
    """A Core ML package: its spec's inputs, outputs (with ranges) and ML Program ops; read, not run, so it
    works off macOS too."""
    from .exporters.coreml import describe_spec, import_coremltools

    ct = import_coremltools()
    try:
        spec = ct.utils.load_spec(str(path))
    except Exception as exc:  # coremltools raises protobuf's untyped errors for a broken package
        raise ArtifactError(f"coremltools cannot read {path}: {exc}",
                            hint="Is it a complete .mlpackage folder? Export it again.") from exc
    desc = describe_spec(spec)
    info: dict[str, Any] = _signature(meta)
    if not meta.inputs:
        info["inputs"] = [{"name": f["name"], "shape": f["shape"], "dtype": f["dtype"]} for f in desc["inputs"]]
        info["outputs"] = [{"name": f["name"], "shape": f["shape"], "dtype": f["dtype"]} for f in desc["outputs"]]
    counts: Counter = Counter(desc["ops"])
    info["nodes"] = sum(counts.values())
    info["op_counts"] = _sorted_counts(counts)
    info["coreml"] = {"spec_version": spec.specificationVersion,
                      "ranges": {f["name"]: f["ranges"] for f in desc["inputs"] if f["ranges"]}}
    return info


def inspect_artifact(path: str | os.PathLike) -> dict[str, Any]:
    """Everything ``mlxport inspect`` shows, as a JSON-serialisable dict.

    Args:
        path: an artifact of any format mlxport writes (see ``mlxport.formats``); its ``.mlxport.json``
            metadata is read when present. Nothing is run: a Core ML package is described on Linux too.

    Returns:
        A dict with format, file sizes, inputs/outputs, counts and the metadata.
    """
    p = Path(path)
    fmt = require_format(p, "the artifact to inspect")
    if not p.exists():
        raise ArtifactError(f"no such artifact: {p}")
    meta = read_meta(p)
    info: dict[str, Any] = {"path": str(p), "format": fmt.name, "runtime": fmt.runtime,
                            "file_bytes": artifact_bytes(p, external_data=False)}
    info.update(fmt.load_inspector()(p, meta))
    info["total_bytes"] = info["file_bytes"] + sum(info.get("external_data", {}).values())
    if not fmt.runs_here():
        info["note"] = f"{fmt.name} computes on {fmt.predicts_on_name} only: here it is described, not run"
    if meta.exists:
        sidecar = {k: v for k, v in meta.to_dict().items() if k not in ("inputs", "outputs")}
        if meta.sha256:
            sidecar["sha256_matches"] = artifact_sha256(p) == meta.sha256
        info["sidecar"] = sidecar
    info["sidecar_path"] = str(sidecar_path(p)) if meta.exists else None
    return info


def _describe_io(item: dict[str, Any]) -> str:
    dims = ",".join("?" if d is None else str(d) for d in item["shape"])
    return f"{item['name']}: {item['dtype']}[{dims}]"


def _counts_lines(counts: dict[str, int], limit: int = 40) -> list[str]:
    items = list(counts.items())
    width = max((len(k) for k, _ in items[:limit]), default=0)
    lines = [f"    {k.ljust(width)}  {v}" for k, v in items[:limit]]
    if len(items) > limit:
        lines.append(f"    ... and {len(items) - limit} more op types")
    return lines


def format_inspection(info: dict[str, Any]) -> str:
    """The readable text of ``inspect_artifact``'s dict."""
    lines = [f"{info['format']} artifact: {info['path']}"]
    size = human_bytes(info["file_bytes"])
    if info.get("external_data"):
        size += f" (+ {human_bytes(info['total_bytes'] - info['file_bytes'])} external data)"
    lines.append(f"  size: {size}")
    if "opsets" in info:
        lines.append("  opsets: " + ", ".join(f"{d} {v}" for d, v in info["opsets"].items())
                     + f" (IR version {info['ir_version']}, producer {info['producer'] or 'unknown'})")
    lines.append("  inputs:")
    lines += [f"    {_describe_io(i)}" for i in info["inputs"]] or ["    (unknown: no sidecar)"]
    lines.append("  outputs:")
    lines += [f"    {_describe_io(o)}" for o in info["outputs"]] or ["    (unknown: no sidecar)"]
    if info.get("note"):
        lines.append(f"  note: {info['note']}")
    if "nodes" in info:
        lines.append(f"  nodes: {info['nodes']}")
        lines += _counts_lines(info["op_counts"])
    if "initializers" in info:
        lines.append(f"  initializers: {info['initializers']} ({human_bytes(info['initializer_bytes'])})")
        if info["external_data"]:
            lines.append("  external data: " + ", ".join(
                f"{name} ({human_bytes(n) if n else 'MISSING'})" for name, n in info["external_data"].items()))
    if "primitives" in info:
        lines.append(f"  MLX primitives: {info['primitives']}")
        lines += _counts_lines(info["op_counts"])
    elif "primitives_note" in info:
        lines.append(f"  MLX primitives: unknown ({info['primitives_note']})")
    side = info.get("sidecar")
    if side:
        lines.append(f"  metadata ({Path(info['sidecar_path']).name}):")
        for key in ("source", "mlx_version"):
            if side.get(key):
                lines.append(f"    {key}: {side[key]}")
        axes = side.get("dynamic_axes") or []
        if axes:
            lines.append("    dynamic axes: " + ", ".join(
                f"{a['input']}[{a['axis']}]={a['symbol']} (example {a['example']})" for a in axes))
        if "sha256_matches" in side:
            lines.append("    sha256: " + ("matches the file" if side["sha256_matches"]
                                          else "DIFFERS: the file changed after export"))
        val = side.get("validation")
        if val:
            if not val.get("validated"):
                lines.append("    validation: skipped at export")
            for run in val.get("runs", []):
                worst = max((o["max_abs"] for o in run["outputs"]), default=0.0)
                verdict = "ok" if all(o["ok"] for o in run["outputs"]) else "FAILED"
                lines.append(f"    validation ({run['label']}): {verdict}, max abs {worst:.3g}")
    elif info.get("metadata"):
        lines.append("  metadata: " + ", ".join(f"{k}={v}" for k, v in info["metadata"].items()))
    return "\n".join(lines)


__all__ = ["format_inspection", "human_bytes", "inspect_artifact"]
