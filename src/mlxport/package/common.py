"""What every target shares: the source artifact and its signature, bundle names, and safe, staged writes.

Every target writes into a hidden folder inside the output folder first and moves each finished entry into
place with one rename, so a failure leaves nothing half-written and nothing is ever written outside the
output folder (names are checked, symlinks that lead out of it are refused, the artifact is never overwritten).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Sequence

from ..artifact import ArtifactMeta, IOSpec, artifact_sha256, file_sha256, read_meta, sidecar_path, write_meta
from ..formats import BY_SUFFIX, Format, format_of
from ..serve.repository import NAME_RE
from .errors import MissingDependencyError, PackageError


@dataclass
class Source:
    """The artifact being packaged: its files, metadata (sidecar) and signature."""

    path: Path
    meta: ArtifactMeta
    inputs: list[IOSpec]
    outputs: list[IOSpec]
    data_files: list[Path] = field(default_factory=list)
    sha256: str = ""

    @property
    def suffix(self) -> str:
        return self.path.suffix.lower()

    @property
    def fmt(self) -> Format:
        return BY_SUFFIX[self.suffix]

    @property
    def format(self) -> str:
        return self.fmt.name

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.path)

    @property
    def files(self) -> list[Path]:
        """Every file the bundle reads from (the artifact, its sidecar, external data)."""
        return [self.path, self.sidecar, *self.data_files]

    def sidecar_for(self, new_name: str) -> ArtifactMeta:
        """The metadata to ship beside the artifact when it is renamed ``new_name`` (always with its sha256)."""
        meta = self.meta if self.meta.exists else ArtifactMeta(format=self.format, inputs=self.inputs,
                                                               outputs=self.outputs)
        meta = meta.renamed(self.path.name, new_name)
        meta.files.setdefault(new_name, self.sha256)
        for data in self.data_files:
            meta.files.setdefault(data.name, file_sha256(data))
        meta.sha256 = self.sha256
        return meta

    def copy_to(self, folder: Path, new_name: str) -> list[Path]:
        """Copy the artifact as ``folder/new_name``, its external data and its sidecar; returns the files."""
        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / new_name]
        shutil.copyfile(self.path, written[0])
        for data in self.data_files:
            # The ONNX graph names its data files; they keep their names.
            shutil.copyfile(data, folder / data.name)
            written.append(folder / data.name)
        return [*written, write_meta(folder / new_name, self.sidecar_for(new_name))]


def open_source(artifact: str | os.PathLike, target: str, allowed: dict[str, str]) -> Source:
    """Check the artifact exists, has a suffix ``target`` takes, and matches its recorded sha256.

    Args:
        artifact: the exported file.
        target: the target name (for messages).
        allowed: suffix -> what the target does with it.

    Returns:
        The Source, with the signature read from the artifact itself where possible.
    """
    path = Path(artifact)
    if not path.exists():
        raise PackageError(f"no such artifact: {path}")
    suffix = path.suffix.lower()
    if suffix not in allowed:
        what = "; ".join(f"{s} ({why})" for s, why in allowed.items())
        hint = ("Export an ONNX file first (`mlxport export MODULE:ATTR -o model.onnx`), or use --target "
                "sagemaker, which serves every format mlxport runs.") if ".onnx" in allowed else ""
        raise PackageError(f"--target {target} takes {what}; got {path.name}", hint=hint or None)
    fmt = format_of(path)
    if path.is_dir() and not (fmt and fmt.directory):
        raise PackageError(f"{path} is a folder; give the artifact file itself")
    meta = read_meta(path)
    digest = artifact_sha256(path) if path.is_file() else ""
    if meta.sha256 and digest and meta.sha256 != digest:
        raise PackageError(f"{path} does not match the sha256 in {sidecar_path(path).name}: it was changed or "
                           "truncated after export", hint="Export it again (or copy it again) before packaging.")
    data_files: list[Path] = []
    if suffix == ".onnx":
        inputs, outputs, locations = onnx_signature(path)
        data_files = [path.parent / loc for loc in locations]
    elif suffix == ".tflite":
        inputs, outputs = tflite_signature(path, meta)
    else:
        inputs, outputs = meta.inputs, meta.outputs
        if not inputs:
            raise PackageError(f"{path} has no {sidecar_path(path).name} beside it, so its inputs are unknown",
                               hint="Export it again with mlxport, which writes that file.")
    missing = [str(p) for p in data_files if not p.is_file()]
    if missing:
        raise PackageError(f"{path.name} keeps its weights in {', '.join(missing)}, which is missing",
                           hint="Copy the .data file(s) next to the .onnx file, or export it again.")
    return Source(path, meta, _named(inputs, meta.inputs), _named(outputs, meta.outputs), data_files, digest)


def _named(specs: list[IOSpec], recorded: list[IOSpec]) -> list[IOSpec]:
    """Give unnamed dynamic dims the symbols the sidecar recorded (same rank and fixed dims only)."""
    by_name = {r.name: r for r in recorded}
    out = []
    for spec in specs:
        rec = by_name.get(spec.name)
        shape = list(spec.shape)
        if rec and len(rec.shape) == len(shape):
            shape = [r if d is None and isinstance(r, str) else d for d, r in zip(shape, rec.shape)]
        out.append(IOSpec(spec.name, shape, spec.dtype))
    return out


def onnx_signature(path: Path) -> tuple[list[IOSpec], list[IOSpec], list[str]]:
    """Inputs, outputs and external-data file names of an ONNX file (weights are not read)."""
    import onnx
    from onnx import helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a corrupt file
        raise PackageError(f"cannot read {path} as an ONNX model: {exc}",
                           hint="Is the file complete? Export it again or check it with `mlxport inspect`.") from exc
    graph = model.graph

    def spec(v: Any) -> IOSpec:
        tensor = v.type.tensor_type
        dims: list[int | str | None] = [
            int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
        if tensor.elem_type == onnx.TensorProto.BFLOAT16:
            dtype = "bfloat16"
        elif tensor.elem_type == onnx.TensorProto.STRING:
            dtype = "object"
        else:
            dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        return IOSpec(v.name, dims, dtype)

    initializers = {t.name for t in graph.initializer}
    inputs = [spec(v) for v in graph.input if v.name not in initializers]
    outputs = [spec(v) for v in graph.output]
    locations: list[str] = []
    tensors = list(graph.initializer) + [a.t for n in graph.node for a in n.attribute if a.HasField("t")]
    for tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        loc = next((e.value for e in tensor.external_data if e.key == "location"), "")
        # A location that climbs out of the folder would make the bundle copy an unrelated file.
        if not loc or Path(loc).is_absolute() or ".." in Path(loc).parts or "/" in loc or "\\" in loc:
            raise PackageError(f"{path.name} names the external data file '{loc}', which is not a plain file name "
                               "beside it; refusing to read it")
        if loc not in locations:
            locations.append(loc)
    return inputs, outputs, locations


def tflite_signature(path: Path, meta: ArtifactMeta | None = None) -> tuple[list[IOSpec], list[IOSpec]]:
    """Inputs and outputs of a .tflite file (the sidecar's names and symbols where it has them)."""
    details = tflite_details(path, meta or ArtifactMeta(exists=False))
    return details["inputs"], details["outputs"]


def tflite_details(path: Path, meta: ArtifactMeta) -> dict[str, Any]:
    """Signature, the runtime's name for each input/output, and their quantization parameters.

    Returns:
        ``inputs``/``outputs`` (IOSpec, named as in MLX when the sidecar says so), ``signature`` (the
        signature key LiteRT runs, or None), ``tensors`` (IOSpec name -> the signature's or the
        interpreter's tensor name), ``io_quantization`` (name -> scales/zero points) and
        ``tensor_dtypes`` (every dtype in the flatbuffer).
    """
    interpreter_cls = import_litert()
    try:
        interp = interpreter_cls(model_path=str(path))
    except (ValueError, RuntimeError) as exc:
        raise PackageError(f"LiteRT cannot read {path}: {exc}", hint="Export the .tflite file again.") from exc
    info = meta.extra.get("tflite") or {}
    sigs = interp.get_signature_list()
    key = info.get("signature") or (next(iter(sigs)) if len(sigs) == 1 else None)
    if key is not None and key in sigs:
        runner = interp.get_signature_runner(key)
        ins, outs = runner.get_input_details(), runner.get_output_details()
    else:
        key = None
        ins = {d["name"]: d for d in interp.get_input_details()}
        outs = {d["name"]: d for d in interp.get_output_details()}

    def specs(found: dict[str, Any], recorded: list[IOSpec], mapping: dict[str, str] | None,
              ) -> tuple[list[IOSpec], dict[str, str]]:
        if not recorded or len(recorded) != len(found):
            return [IOSpec(n, [None if int(s) < 0 else int(s) for s in d.get("shape_signature", d["shape"])],
                           _np_name(d["dtype"])) for n, d in found.items()], {n: n for n in found}
        names = mapping or {r.name: n for r, n in zip(recorded, found)}
        return list(recorded), {r.name: names.get(r.name, r.name) for r in recorded}

    inputs, in_tensors = specs(ins, meta.inputs, info.get("inputs"))
    outputs, out_tensors = specs(outs, meta.outputs, info.get("outputs"))
    tensors = {**in_tensors, **out_tensors}
    unknown = [t for t in tensors.values() if t not in ins and t not in outs]
    if unknown:
        raise PackageError(f"{path.name} has no tensor {', '.join(unknown)} that its metadata names; its signature "
                           f"holds {', '.join(ins)} -> {', '.join(outs)}",
                           hint="The metadata file belongs to another export: export again.")

    def quant(d: dict[str, Any]) -> dict[str, Any] | None:
        q = d.get("quantization_parameters") or {}
        scales = [float(x) for x in q.get("scales", [])]
        if not scales:
            return None
        return {"scales": scales, "zero_points": [int(z) for z in q.get("zero_points", [])],
                "quantized_dimension": int(q.get("quantized_dimension", 0))}

    every = {**ins, **outs}
    io_quant = {n: quant(every[t]) for n, t in tensors.items() if quant(every[t])}
    return {"inputs": inputs, "outputs": outputs, "signature": key, "tensors": tensors, "io_quantization": io_quant,
            "tensor_dtypes": sorted({_np_name(t["dtype"]) for t in interp.get_tensor_details()})}


def _np_name(dtype: Any) -> str:
    import numpy as np

    return np.dtype(dtype).name


def import_litert() -> Any:
    """``ai_edge_litert.interpreter.Interpreter``, or a clear error naming the package to install."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise MissingDependencyError("reading a .tflite file needs LiteRT (the ai-edge-litert package), "
                                     "which is not installed", hint="pip install ai-edge-litert") from exc
    return Interpreter


def bundle_name(name: str | None, artifact: Path) -> str:
    """The model name: ``name`` if given (checked), else the artifact's file stem made safe."""
    if name is None:
        import re

        name = re.sub(r"[^A-Za-z0-9_.-]", "_", artifact.stem).lstrip("._-")[:128] or "model"
    if not NAME_RE.match(name) or name in (".", ".."):
        raise PackageError(f"--name must be 1-128 letters, digits, '_', '.' or '-', starting with a letter or "
                           f"digit (it becomes a folder name); got '{name[:140]}'")
    return name


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")


def is_dynamic(dim: Any) -> bool:
    return not isinstance(dim, int) or dim < 0


class Staging:
    """Plan the entries of an output folder, check them, build them in a hidden folder, then move them in.

    Args:
        out_dir: the output folder (created if missing).
        protect: files that must never be overwritten (the artifact and its side files).
        force: replace planned entries that already exist.
    """

    def __init__(self, out_dir: str | os.PathLike, protect: Sequence[Path], force: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.protect = [Path(p).resolve() for p in protect if Path(p).exists()]
        self.force = force
        self.entries: list[str] = []
        self.tmp: Path | None = None
        self._created = False

    def plan(self, *rels: str) -> None:
        """Entries (paths relative to the output folder) that the build will write, in commit order."""
        self.entries.extend(rels)

    def check(self) -> None:
        """Refuse before anything is written: output over the artifact, outside paths, existing entries."""
        out = self.out_dir
        if out.exists() and not out.is_dir():
            raise PackageError(f"the output folder {out} is a file; give a folder with -o/--output")
        out_res = out.resolve()
        for p in self.protect:
            if out_res == p or p in out_res.parents:
                raise PackageError(f"the output folder {out} is inside the artifact {p}; choose a folder outside it")
        existing = []
        for rel in self.entries:
            final = out / rel
            res = final.resolve()
            if res != out_res and out_res not in res.parents:
                raise PackageError(f"{final} leads outside the output folder {out} (a symbolic link?); refusing "
                                   "to write there", hint="Choose another output folder or name (CLI: -o, --name).")
            for p in self.protect:
                if p == res or res in p.parents:
                    raise PackageError(f"writing {final} would overwrite the artifact {p}",
                                       hint="Choose another output folder or name (CLI: -o, --name).")
            if final.exists() or final.is_symlink():
                existing.append(str(final))
        if existing and not self.force:
            raise PackageError(f"already there: {', '.join(existing)}",
                               hint="Pass force=True (CLI: --force) to replace them, or choose another output folder.")

    def path(self, rel: str) -> Path:
        """Where to build the planned entry ``rel`` (its parent folders exist)."""
        if self.tmp is None:
            raise RuntimeError("Staging.path() used outside its with-block")
        staged = self.tmp / rel
        staged.parent.mkdir(parents=True, exist_ok=True)
        return staged

    def __enter__(self) -> "Staging":
        self.check()
        self._created = not self.out_dir.exists()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=".mlxport-package-", dir=self.out_dir))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                self._commit()
        finally:
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
            if exc_type is not None and self._created and not any(self.out_dir.iterdir()):
                self.out_dir.rmdir()

    def _commit(self) -> None:
        if self.tmp is None:
            raise RuntimeError("Staging committed outside its with-block")
        for rel in self.entries:
            staged, final = self.tmp / rel, self.out_dir / rel
            if not (staged.exists() or staged.is_symlink()):
                raise RuntimeError(f"internal error: planned entry {rel} was not built")
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            elif final.exists() or final.is_symlink():
                final.unlink()
            os.replace(staged, final)


@dataclass
class Bundle:
    """What a target wrote: the main path, every file, and lines for the user."""

    target: str
    path: Path
    files: list[Path]
    notes: list[str] = field(default_factory=list)


def files_under(paths: Sequence[Path]) -> list[Path]:
    """Every file in the given files and folders, sorted."""
    out: list[Path] = []
    for p in paths:
        out.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
    return out
