"""Lower a captured Graph to an ONNX model and write it without copying the weights twice."""

from __future__ import annotations

import concurrent.futures
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..graph import Graph, SymExpr, TensorInfo
from ..dtypes import onnx_dtype, onnx_dtype_of
from ..rewrite import run_default_passes
from ..rewrite.onnx_optimize import optimize
from ..targets import lowering
from ..targets.onnx.context import ONNX, ConvertContext, Initializer

# The newest opset whose every op version the pinned onnxruntime (1.32) has a CPU
# kernel for (opset 25 brings Attention-25, which it lacks); tests/test_export_core.py
# checks this against ORT's kernel registry. Opset 17 must keep working for converters.
DEFAULT_OPSET = 24
MIN_OPSET = 17
# Protobuf cannot hold a message over 2 GiB; above this, weights go to a side file.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


@dataclass
class OnnxModel:
    """An ONNX graph whose initializers are materialized only when written."""

    proto: onnx.ModelProto  # graph without initializers
    initializers: dict[str, Initializer]
    opset: int
    graph: Graph
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def weight_bytes(self) -> int:
        return sum(i.nbytes for i in self.initializers.values())

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.proto.graph.node:
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
        return counts

    def to_proto(self) -> onnx.ModelProto:
        """A full in-memory ModelProto (copies every weight; for small models and tests)."""
        model = onnx.ModelProto()
        model.CopyFrom(self.proto)
        for name, init in self.initializers.items():
            model.graph.initializer.append(_tensor_proto(name, init.value()))
        return model


def _value_info(info: TensorInfo, name: str) -> onnx.ValueInfoProto:
    dims: list[Any] = [str(d).replace(" ", "") if isinstance(d, SymExpr) else int(d) for d in info.shape]
    return helper.make_tensor_value_info(name, onnx_dtype(info.dtype), dims)


def lower(graph: Graph, opset: int | None = None, *, optimize_graph: bool = True, contrib_ops: bool | None = None,
          nbits_accuracy_level: int | None = None) -> OnnxModel:
    """Translate every node through the registry and assemble an ONNX model.

    Args:
        graph: the captured graph.
        opset: the target opset (default DEFAULT_OPSET).
        optimize_graph: fold constants and clean layout chains.
        contrib_ops: allow ONNX Runtime's com.microsoft ops where they are faster (MatMulNBits);
            False for runtimes and converters that only know standard ONNX (default: ops.quant.CONTRIB_OPS).
        nbits_accuracy_level: MatMulNBits accuracy_level (4 quantizes activations to int8: faster, ~0.6 % error).

    Returns:
        The OnnxModel (weights materialized only when saved).
    """
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        from ..errors import UnsupportedArgumentError

        raise UnsupportedArgumentError(
            f"opset must be between {MIN_OPSET} and {onnx.defs.onnx_opset_version()}; got {opset}")
    # Checked on the captured graph, so the error names nodes as the user's trace has them.
    lowering.check_supported(graph, ONNX, opset)
    graph = run_default_passes(graph, supports=lambda prim: ONNX.supports(prim, opset))
    ctx = ConvertContext(graph, opset)
    if contrib_ops is not None:
        ctx.options["contrib_ops"] = bool(contrib_ops)
    if nbits_accuracy_level is not None:
        ctx.options["nbits_accuracy_level"] = int(nbits_accuracy_level)
    for inp in graph.inputs:
        ctx.values[inp.name] = inp.name
    for name, arr in graph.constants.items():
        ctx.values[name] = name
        ctx.initializers[name] = Initializer(arr.shape, arr.dtype, arr)
    lowering.translate_nodes(graph, ONNX, ctx, opset)
    outputs = _bind_outputs(ctx, graph)
    stats: dict[str, Any] = {"nodes_before_optimize": len(ctx.nodes)}
    if optimize_graph:
        stats.update(optimize(ctx, [o.name for o in graph.outputs]))
    inputs = [_value_info(i, i.name) for i in graph.inputs]
    onnx_graph = helper.make_graph(ctx.nodes, "mlxport", inputs, outputs)
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in ctx.opset_imports.items()]
    proto = helper.make_model(onnx_graph, opset_imports=imports, producer_name="mlxport")
    proto.ir_version = min(proto.ir_version, 10)
    _drop_unused_initializers(ctx)
    for key, value in graph.metadata.items():
        helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, f"mlxport.{key}": str(value)})
    return OnnxModel(proto, ctx.initializers, opset, graph, stats)


def _bind_outputs(ctx: ConvertContext, graph: Graph) -> list[onnx.ValueInfoProto]:
    """Name graph outputs as the user asked: rename the producing node, or add an Identity."""
    produced = {out: node for node in ctx.nodes for out in node.output}
    claimed: set[str] = set()
    renames: dict[str, str] = {}
    for out in graph.outputs:
        src = ctx.values[graph.output_sources[out.name]]
        if src in produced and src not in claimed and src not in ctx.initializers:
            renames[src] = out.name
            claimed.add(src)
        else:
            ctx.nodes.append(helper.make_node("Identity", [renames.get(src, src)], [out.name], name=f"output_{out.name}"))
    for node in ctx.nodes:
        for i, n in enumerate(node.input):
            if n in renames:
                node.input[i] = renames[n]
        for i, n in enumerate(node.output):
            if n in renames:
                node.output[i] = renames[n]
    return [_value_info(o, o.name) for o in graph.outputs]


def _drop_unused_initializers(ctx: ConvertContext) -> None:
    used = {n for node in ctx.nodes for n in node.input}
    for name in [n for n in ctx.initializers if n not in used]:
        del ctx.initializers[name]


# ----------------------------------------------------------------------------
# Writing: stream each weight into the file once
# ----------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _tensor_header(name: str, shape: tuple[int, ...], dtype: np.dtype) -> TensorProto:
    t = TensorProto()
    t.name = name
    t.dims.extend(int(d) for d in shape)
    t.data_type = onnx_dtype_of(dtype)
    return t


def _raw(arr: np.ndarray) -> memoryview:
    arr = np.ascontiguousarray(arr)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return memoryview(arr.reshape(-1).view(np.uint8))


def _tensor_proto(name: str, arr: np.ndarray) -> TensorProto:
    t = _tensor_header(name, arr.shape, arr.dtype)
    t.raw_data = bytes(_raw(arr))
    return t


_RAW_DATA_TAG = _varint((9 << 3) | 2)
_INITIALIZER_TAG = _varint((5 << 3) | 2)
_GRAPH_TAG = _varint((7 << 3) | 2)


class _HashingWriter:
    """A binary file that hashes what is written to it (no second read for the checksum).

    Hashing runs on one worker thread, in order, while the main thread writes and
    makes the next tensor: sha256 costs about as much as the write itself, and
    both release the GIL.
    """

    def __init__(self, f: BinaryIO, pool: "concurrent.futures.ThreadPoolExecutor | None") -> None:
        import hashlib

        self.f = f
        self._digest = hashlib.sha256()
        self._pool = pool
        self._last: concurrent.futures.Future | None = None

    def write(self, data: bytes | memoryview) -> None:
        if self._pool is not None:
            self._last = self._pool.submit(self._digest.update, data)
        self.f.write(data)

    def tell(self) -> int:
        return self.f.tell()

    def hexdigest(self) -> str:
        if self._last is not None:
            self._last.result()  # one worker: the last update finishing means all did
        return self._digest.hexdigest()


def save(model: OnnxModel, path: str | os.PathLike, *, external_data: bool | None = None,
         checksum: bool = True) -> dict[str, str]:
    """Write the model; weights go to ``<name>.data`` beside it when over ~1.8 GB (or when asked).

    Each initializer is made, written and freed in turn, so peak memory stays at
    the source weights plus one tensor.

    Returns:
        The sha256 of each written file by name (empty when ``checksum`` is False).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if external_data is None:
        external_data = model.weight_bytes > EXTERNAL_DATA_THRESHOLD
    data_name = path.name + ".data"
    headers: list[tuple[str, Initializer, TensorProto]] = []
    offset = 0
    for name, init in model.initializers.items():
        h = _tensor_header(name, init.shape, init.dtype)
        if external_data and init.nbytes >= 1024:
            offset = (offset + 4095) // 4096 * 4096  # page-aligned for mmap
            h.data_location = TensorProto.EXTERNAL
            for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(init.nbytes))):
                e = h.external_data.add()
                e.key, e.value = k, v
            offset += init.nbytes
        headers.append((name, init, h))

    graph_bytes = model.proto.graph.SerializeToString()
    sizes = []
    for _, init, h in headers:
        size = h.ByteSize()
        if h.data_location != TensorProto.EXTERNAL:
            size += len(_RAW_DATA_TAG) + len(_varint(init.nbytes)) + init.nbytes
        sizes.append(size)
    graph_len = len(graph_bytes) + sum(len(_INITIALIZER_TAG) + len(_varint(s)) + s for s in sizes)

    rest = onnx.ModelProto()
    rest.CopyFrom(model.proto)
    rest.ClearField("graph")
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mlxport-sha256") if checksum else None
    data_file: BinaryIO | None = open(path.with_name(data_name), "wb") if external_data else None
    data_hash = _HashingWriter(data_file, pool) if data_file is not None else None
    try:
        with open(path, "wb") as raw_file:
            f = _HashingWriter(raw_file, pool)
            f.write(rest.SerializeToString())
            f.write(_GRAPH_TAG + _varint(graph_len) + graph_bytes)
            for (name, init, h), size in zip(headers, sizes):
                f.write(_INITIALIZER_TAG + _varint(size) + h.SerializeToString())
                external = h.data_location == TensorProto.EXTERNAL
                if external and data_hash is not None:
                    gap = int(h.external_data[1].value) - data_hash.tell()
                    data_hash.write(b"\0" * gap)  # alignment padding, hashed like the rest
                    data_hash.write(_raw(init.value()))
                elif not external:
                    f.write(_RAW_DATA_TAG + _varint(init.nbytes))
                    f.write(_raw(init.value()))
        digests = {path.name: f.hexdigest()} if checksum else {}
        if data_hash is not None and checksum:
            digests[data_name] = data_hash.hexdigest()
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
        if data_file is not None:
            data_file.close()
    return digests


def export_onnx(graph: Graph, path: str | os.PathLike, *, opset: int | None = None,
                external_data: bool | None = None, optimize_graph: bool = True, contrib_ops: bool | None = None,
                checksum: bool = True) -> OnnxModel:
    """Lower ``graph`` and write it to ``path``."""
    model = lower(graph, opset, optimize_graph=optimize_graph, contrib_ops=contrib_ops)
    model.stats["sha256"] = save(model, path, external_data=external_data, checksum=checksum)
    return model


def check(model: OnnxModel) -> None:
    """onnx.checker on the graph, with each weight declared by type and shape instead of its data.

    Checking the written file would parse every weight again (twice the weights in memory).
    """
    import onnx

    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    for name, init in model.initializers.items():
        proto.graph.input.append(helper.make_tensor_value_info(name, onnx_dtype_of(init.dtype), list(init.shape)))
    onnx.checker.check_model(proto)
