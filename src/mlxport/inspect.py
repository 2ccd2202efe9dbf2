"""Describe an exported artifact: signature, opsets, node counts, weights, size and sidecar metadata."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from .errors import ArtifactError
from .runners import SIDE_SUFFIX, file_sha256, read_sidecar


def _file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def human_bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def _onnx_io(values: Any) -> list[dict[str, Any]]:
    from onnx import helper

    out = []
    for v in values:
        t = v.type.tensor_type
        dims: list[Any] = []
        for d in t.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        out.append({"name": v.name, "shape": dims, "dtype": helper.tensor_dtype_to_np_dtype(t.elem_type).name
                    if t.elem_type else "unknown"})
    return out


def _initializer_bytes(tensor: Any) -> int:
    from onnx import TensorProto, helper

    for entry in tensor.external_data:
        if entry.key == "length":
            return int(entry.value)
    if tensor.data_location != TensorProto.EXTERNAL and tensor.raw_data:
        return len(tensor.raw_data)
    count = 1
    for d in tensor.dims:
        count *= d
    return count * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


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


def _inspect_onnx(path: Path) -> dict[str, Any]:
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
        "op_counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "initializers": len(model.graph.initializer),
        "initializer_bytes": sum(_initializer_bytes(t) for t in model.graph.initializer),
        "external_data": {name: _file_size(path.parent / name) for name in external},
        "metadata": {p.key: p.value for p in model.metadata_props},
    }


def _inspect_mlxfn(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Signature from the sidecar; primitive counts by re-tracing the imported function when shapes are static."""
    import mlx.core as mx

    from .capture import mx_dtype

    info: dict[str, Any] = {"inputs": meta.get("inputs", []), "outputs": meta.get("outputs", [])}
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
    info["op_counts"] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return info


def inspect_artifact(path: str | os.PathLike) -> dict[str, Any]:
    """Everything ``mlxport inspect`` shows, as a JSON-serialisable dict.

    Args:
        path: an ``.onnx`` or ``.mlxfn`` file (its ``.mlxport.json`` sidecar is read when present).

    Returns:
        A dict with format, file sizes, inputs/outputs, counts and the sidecar metadata.
    """
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"no such artifact: {p}")
    suffix = p.suffix.lower()
    if suffix not in (".onnx", ".mlxfn"):
        raise ArtifactError(f"cannot inspect '{p.name}': unknown suffix '{p.suffix}'; supported: .onnx, .mlxfn")
    meta = read_sidecar(p)
    info: dict[str, Any] = {"path": str(p), "format": "ONNX" if suffix == ".onnx" else "MLX",
                            "file_bytes": _file_size(p)}
    info.update(_inspect_onnx(p) if suffix == ".onnx" else _inspect_mlxfn(p, meta))
    info["total_bytes"] = info["file_bytes"] + sum(info.get("external_data", {}).values())
    if meta:
        sidecar = {k: v for k, v in meta.items() if k not in ("inputs", "outputs")}
        if "sha256" in meta:
            sidecar["sha256_matches"] = file_sha256(p) == meta["sha256"]
        info["sidecar"] = sidecar
    info["sidecar_path"] = str(p) + SIDE_SUFFIX if meta else None
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
    if "nodes" in info:
        lines.append(f"  nodes: {info['nodes']}")
        lines += _counts_lines(info["op_counts"])
        lines.append(f"  initializers: {info['initializers']} ({human_bytes(info['initializer_bytes'])})")
        if info["external_data"]:
            lines.append("  external data: " + ", ".join(
                f"{name} ({human_bytes(n) if n else 'MISSING'})" for name, n in info["external_data"].items()))
    elif "primitives" in info:
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
