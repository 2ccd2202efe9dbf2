"""An exported artifact's metadata: the ``<artifact>.mlxport.json`` file beside it, read and written here only.

It records the signature (inputs and outputs in MLX's names, shapes and dtypes, dynamic dims by symbol), the
dynamic axes with their example sizes, the source and MLX version, the sha256 of every file the export wrote
and the validation report. ``export``, ``export-lm``, the runners, ``inspect``, ``validate``, the model
repository, ``package`` and ``registry`` all read it through :func:`read_meta`; only :func:`write_meta` writes
it (to a temporary file renamed into place, so a reader never sees half of one).

This module imports nothing heavy (numpy is not needed either).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import ArtifactError

SIDE_SUFFIX = ".mlxport.json"
# The keys this module gives a meaning to; any other key is format-specific (``tflite``, ``lm``) and kept as is.
_KNOWN = ("format", "source", "mlx_version", "inputs", "outputs", "dynamic_axes", "sha256", "files", "validation")


@dataclass
class IOSpec:
    """One input or output: name, shape (an int, a symbol name or None per dim) and dtype name."""

    name: str
    shape: list[int | str | None]
    dtype: str

    def describe(self) -> str:
        return f"{self.name}: {self.dtype}[{','.join('?' if d is None else str(d) for d in self.shape)}]"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass
class ArtifactMeta:
    """The metadata of one artifact. ``exists`` is False when the artifact has no metadata file.

    ``sha256`` is the digest of the artifact itself (for a folder format, of its files, see
    :func:`artifact_sha256`); ``files`` maps every file the export wrote (by name relative to the artifact's
    folder) to its digest; ``extra`` holds format-specific keys.
    """

    format: str | None = None
    source: str | None = None
    mlx_version: str | None = None
    inputs: list[IOSpec] = field(default_factory=list)
    outputs: list[IOSpec] = field(default_factory=list)
    dynamic_axes: list[dict[str, Any]] = field(default_factory=list)
    sha256: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    validation: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    exists: bool = True

    @property
    def examples(self) -> dict[str, int]:
        """The example size of each dynamic axis symbol."""
        return {a["symbol"]: int(a["example"]) for a in self.dynamic_axes if "example" in a}

    def verdict(self) -> str:
        """A one-line validation verdict."""
        report = self.validation
        if not self.exists:
            return "unknown (no metadata file)"
        if not report:
            return "not validated"
        if not report.get("validated"):
            return str(report.get("info", {}).get("validation") or "not validated")
        if not report.get("ok"):
            return "FAILED"
        worst = max((o.get("max_abs") or 0.0 for r in report.get("runs", []) for o in r.get("outputs", [])),
                    default=0.0)
        return f"passed (max abs {worst:.1e})"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": self.format, "source": self.source, "mlx_version": self.mlx_version,
            "inputs": [i.to_dict() for i in self.inputs], "outputs": [o.to_dict() for o in self.outputs],
            "dynamic_axes": self.dynamic_axes, "sha256": self.sha256, "files": self.files,
            "validation": self.validation,
        }
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArtifactMeta":
        def specs(key: str) -> list[IOSpec]:
            return [IOSpec(str(d["name"]), list(d.get("shape") or []), str(d.get("dtype") or "float32"))
                    for d in data.get(key) or []]

        files = data.get("files")
        return cls(format=data.get("format"), source=data.get("source"), mlx_version=data.get("mlx_version"),
                   inputs=specs("inputs"), outputs=specs("outputs"), dynamic_axes=list(data.get("dynamic_axes") or []),
                   sha256=data.get("sha256"), files=dict(files) if isinstance(files, dict) else {},
                   validation=data.get("validation"), extra={k: v for k, v in data.items() if k not in _KNOWN})

    def renamed(self, old: str, new: str) -> "ArtifactMeta":
        """The same metadata for a copy of the artifact named ``new`` (its files entry follows the name)."""
        files = {}
        for name, digest in self.files.items():
            if name == old or name.startswith(old + "/"):
                name = new + name[len(old):]
            files[name] = digest
        return dataclasses.replace(self, files=files)


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where the metadata of ``path`` lives."""
    return Path(str(path) + SIDE_SUFFIX)


def read_meta(path: str | os.PathLike) -> ArtifactMeta:
    """The metadata beside ``path``; an empty one (``exists`` False) when there is none.

    Raises:
        ArtifactError: the metadata file exists but is not the JSON mlxport writes.
    """
    side = sidecar_path(path)
    if not side.exists():
        return ArtifactMeta(exists=False)
    try:
        data = json.loads(side.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        return ArtifactMeta.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"cannot read the metadata file {side}: {exc}",
                            hint="Export the artifact again: mlxport rewrites that file.") from exc


def write_meta(path: str | os.PathLike, meta: ArtifactMeta) -> Path:
    """Write the metadata beside ``path`` (a temporary file renamed into place); returns its path."""
    side = sidecar_path(path)
    tmp = side.with_name(f".{side.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(meta.to_dict(), indent=2, default=str))
    os.replace(tmp, side)
    return side


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_files(folder: Path) -> list[Path]:
    """Every file below a folder artifact, sorted."""
    return sorted(f for f in folder.rglob("*") if f.is_file())


def tree_sha256(entries: Iterable[tuple[str, str]]) -> str:
    """One sha256 over a folder from (relative path, file digest) pairs in sorted path order."""
    digest = hashlib.sha256()
    for rel, file_digest in entries:
        digest.update(f"{rel}\0{file_digest}\n".encode())
    return digest.hexdigest()


def artifact_sha256(path: str | os.PathLike) -> str:
    """The digest recorded as an artifact's ``sha256``: the file's, or for a folder (an .mlpackage) one over
    each file's relative path and digest."""
    p = Path(path)
    if p.is_dir():
        return tree_sha256((f.relative_to(p).as_posix(), file_sha256(f)) for f in folder_files(p))
    return file_sha256(p)


def artifact_bytes(path: str | os.PathLike, *, external_data: bool = True) -> int:
    """The artifact's size on disk: the file or folder, plus (unless ``external_data`` is False) the ONNX
    external data beside it."""
    p = Path(path)
    total = sum(f.stat().st_size for f in folder_files(p)) if p.is_dir() else p.stat().st_size
    data = Path(str(p) + ".data")
    return total + (data.stat().st_size if external_data and data.exists() else 0)


def check_sha256(path: str | os.PathLike, meta: ArtifactMeta) -> str | None:
    """None when the artifact matches the sha256 its metadata records (or records none); else the problem."""
    if not meta.sha256:
        return None
    actual = artifact_sha256(path)
    if actual == meta.sha256:
        return None
    return (f"{Path(path).name} does not match the sha256 in {sidecar_path(path).name} ({actual[:12]}... vs "
            f"{meta.sha256[:12]}...): it was changed or truncated after export")


__all__ = ["ArtifactMeta", "IOSpec", "SIDE_SUFFIX", "artifact_bytes", "artifact_sha256", "check_sha256",
           "file_sha256", "folder_files", "read_meta", "sidecar_path", "tree_sha256", "write_meta"]
