"""The local model repository: ``<repo>/<name>/<N>/`` version folders, published atomically.

Layout (what ``mlxport serve <repo>`` reads; it ignores hidden entries and files)::

    <repo>/digits/1/digits.onnx                 the artifact, named after the model
    <repo>/digits/1/digits.onnx.mlxport.json    its metadata (signature, checksums, validation)
    <repo>/digits/1/version.json                lineage: source, MLX version, verdict, sha256 of every file
    <repo>/digits/aliases.json                  alias -> version, previous targets and history
    <repo>/digits/.lock                         taken while a version number is chosen or aliases change
    <repo>/digits/.push-<host>-<pid>-<random>/  a push in progress (invisible: not a number)

A push copies into the hidden folder, fsyncs every file, then renames the folder to the next number in one
``os.rename`` under the lock: a crash leaves at most a hidden folder, which the next push removes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ..artifact import ArtifactMeta, read_meta, sidecar_path, tree_sha256
from ..errors import ArtifactError
from ..formats import artifacts_in, format_of, is_artifact, suffix_list
from . import (DEFAULT_ALIAS, alias_target, rollback_target, VERSION_RE, AliasChange, ModelSpec, VersionInfo, check_alias, check_name,
               check_version, parse_spec)
from .errors import NotFoundError, RegistryError

DEFAULT_ROOT = "mlxport-repo"
PROMOTE = "mlxport registry promote"  # for hints: the command that sets an alias
VERSION_FILE = "version.json"
ALIASES_FILE = "aliases.json"
LOCK_FILE = ".lock"
TMP_PREFIXES = (".push-", ".tmp-")
# A temporary entry whose owner cannot be checked (another host) is removed only after this long.
STALE_SECONDS = 24 * 3600
HISTORY_LIMIT = 1000


@dataclass
class Staged:
    """An artifact copied into a folder: its file name there, the sha256 of every file, total bytes."""

    artifact: str
    files: dict[str, str]
    size: int


# ---------------------------------------------------------------- artifacts (shared with the MLflow backend)


def read_metadata(artifact: Path) -> ArtifactMeta:
    """The artifact's metadata (``exists`` False when it has none), after checking the artifact exists."""
    if not artifact.exists():
        raise NotFoundError(f"no such artifact: {artifact}", hint="Export one first: mlxport export ... -o model.onnx")
    if not is_artifact(artifact):
        raise RegistryError(f"cannot push '{artifact.name}': expected an exported artifact "
                            f"({suffix_list()}); got suffix '{artifact.suffix or '(none)'}'")
    try:
        return read_meta(artifact)
    except ArtifactError as exc:
        raise RegistryError(exc.message, hint="Export the artifact again so its metadata file is complete.") from exc


def lineage_fields(artifact: Path, meta: ArtifactMeta) -> dict[str, Any]:
    """What a version record (local ``version.json``, MLflow lineage) copies from the artifact's metadata."""
    fmt = format_of(artifact)
    return {"format": meta.format or (fmt.name if fmt else None), "source": meta.source,
            "source_artifact": str(artifact.resolve()), "mlx_version": meta.mlx_version,
            "inputs": [i.to_dict() for i in meta.inputs] or None,
            "outputs": [o.to_dict() for o in meta.outputs] or None,
            "validation": meta.validation, "verdict": meta.verdict()}


def stage(artifact: Path, name: str, dest: Path, meta: ArtifactMeta) -> Staged:
    """Copy the artifact (renamed ``<name><suffix>``), its metadata file and companions into ``dest``.

    Companions (ONNX external data, files the metadata lists) keep their names, since the artifact refers
    to them by name. Each file is hashed while copied and fsynced; the artifact must match the sha256 in
    its metadata, which catches a file copied while it was still being written.
    """
    dest.mkdir(parents=True, exist_ok=True)
    target = f"{name}{artifact.suffix}"
    files: dict[str, str] = {}
    if artifact.is_dir():
        parts = []
        for f in sorted(p for p in artifact.rglob("*") if p.is_file()):
            rel = f.relative_to(artifact).as_posix()
            files[f"{target}/{rel}"] = digest = _copy(f, dest / target / rel)
            parts.append((rel, digest))
        main = tree_sha256(parts)  # what artifact.artifact_sha256 records for a folder
    else:
        main = files[target] = _copy(artifact, dest / target)
    if meta.sha256 and meta.sha256 != main:
        raise RegistryError(f"{artifact} does not match the sha256 in its metadata file ({main[:12]}... vs "
                            f"{meta.sha256[:12]}...): it is incomplete or was changed after export",
                            hint="Export it again (or wait until the copy has finished), then push.")
    side = sidecar_path(artifact)
    if side.is_file():
        files[sidecar_path(target).name] = _copy(side, sidecar_path(dest / target))
    listed = meta.files
    for other in sorted(set(listed) | {artifact.name + ".data"}):
        source = artifact.parent / other
        if (other == artifact.name or other in files or "/" in other or "\\" in other or other.startswith(".")
                or not source.is_file()):
            continue
        files[other] = _copy(source, dest / other)
        if listed.get(other) and listed[other] != files[other]:
            raise RegistryError(f"{source} does not match the sha256 in {side.name}: it is incomplete or was "
                                "changed after export", hint="Export the artifact again, then push.")
    size = sum((dest / rel).stat().st_size for rel in files)
    return Staged(target, files, size)


def _copy(source: Path, target: Path) -> str:
    """Copy one file, fsync it, and return its sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(source, "rb") as src, open(target, "wb") as dst:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            digest.update(chunk)
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    """Make a rename or new entry in ``folder`` durable (not possible on every OS, so best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def who() -> str:
    """``user@host`` for the lineage record."""
    try:
        import getpass

        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid in some containers
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def tmp_name(prefix: str) -> str:
    return f"{prefix}{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child nobody has reaped yet is a zombie: it will never finish its push
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def clean_stale(model_dir: Path) -> list[str]:
    """Remove temporary entries left by pushes that died (owner process gone, or older than a day)."""
    removed = []
    for entry in model_dir.iterdir():
        if not entry.name.startswith(TMP_PREFIXES):
            continue
        host, _, rest = entry.name.split("-", 1)[1].partition("-")
        pid_text = rest.split("-", 1)[0]
        try:
            age = time.time() - entry.lstat().st_mtime
        except FileNotFoundError:
            continue
        dead = host == _host_tag() and pid_text.isdigit() and int(pid_text) != os.getpid() \
            and not _pid_alive(int(pid_text))
        if dead or age > STALE_SECONDS:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return removed


@contextlib.contextmanager
def _locked(model_dir: Path) -> Iterator[None]:
    """An exclusive lock on ``<model>/.lock`` (released by the kernel if the holder dies)."""
    import fcntl

    fd = os.open(model_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a hidden temporary file, fsync it, then rename it over ``path``."""
    tmp = path.parent / tmp_name(".tmp-")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RegistryError(f"cannot read {path}: {exc}", hint="Fix or remove the file by hand.") from exc
    if not isinstance(data, dict):
        raise RegistryError(f"{path} must hold a JSON object; got {type(data).__name__}")
    return data


# ---------------------------------------------------------------- the repository


class LocalRegistry:
    """Numbered versions and aliases in a folder that ``mlxport serve`` serves as it is.

    Args:
        root: the repository folder (default ``$MLXPORT_REPO`` or ``./mlxport-repo``); created on first push.
    """

    backend = "local"

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root if root is not None else os.environ.get("MLXPORT_REPO") or DEFAULT_ROOT)
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(f"the repository {self.root} is a file, not a folder",
                                hint="Give another folder: repo= (CLI: --repo DIR) or $MLXPORT_REPO.")

    def __repr__(self) -> str:
        return f"LocalRegistry({str(self.root)!r})"

    # ---- writing
    def push(self, artifact: str | os.PathLike, name: str, *, description: str | None = None) -> VersionInfo:
        """Publish an artifact as the model's next version (atomic: all of it appears at once, or nothing).

        Args:
            artifact: an exported file (``.onnx``, ``.pt``, ...) or ``.mlpackage``, with its metadata beside it.
            name: the model name (one path component).
            description: free text kept in the lineage.

        Returns:
            The new version.
        """
        name = check_name(name)
        artifact = Path(artifact)
        meta = read_metadata(artifact)
        model_dir = self.root / name
        model_dir.mkdir(parents=True, exist_ok=True)
        clean_stale(model_dir)
        tmp = model_dir / tmp_name(".push-")
        tmp.mkdir(mode=0o755)
        try:
            staged = stage(artifact, name, tmp, meta)
            with _locked(model_dir):
                existing = self._numbers(model_dir)
                number = max(existing, default=0) + 1
                while (model_dir / str(number)).exists():  # a stray file named like a version
                    number += 1
                record = {
                    "name": name, "version": number, "artifact": staged.artifact, **lineage_fields(artifact, meta),
                    "mlxport_version": _mlxport_version(), "sha256": staged.files, "size": staged.size,
                    "pushed_at": now(), "pushed_by": who(), "parent": max(existing, default=None),
                    "description": description,
                }
                write_json_atomic(tmp / VERSION_FILE, record)
                _fsync_dir(tmp)
                # The one step that publishes: the server never sees a number without all its files.
                os.rename(tmp, model_dir / str(number))
                _fsync_dir(model_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self._info(name, number, self._aliases(model_dir)["aliases"])

    def promote(self, name: str, version: int | str, alias: str = DEFAULT_ALIAS) -> AliasChange:
        """Point ``alias`` at ``version`` (its old target is kept for ``rollback``).

        Args:
            name: the model.
            version: the version number to promote.
            alias: the alias to move (default ``production``).

        Returns:
            The change made.
        """
        model_dir = self._model_dir(check_name(name))
        alias, number = check_alias(alias), check_version(version)
        with _locked(model_dir):
            self._version_dir(model_dir, number)
            state = self._aliases(model_dir)
            previous = state["aliases"].get(alias)
            if previous is not None and previous != number:
                state["previous"].setdefault(alias, []).append(previous)
            state["aliases"][alias] = number
            self._record(state, "promote", alias, number, previous)
            write_json_atomic(model_dir / ALIASES_FILE, state)
        return AliasChange(name, alias, number, previous, "promote")

    def rollback(self, name: str, alias: str = DEFAULT_ALIAS) -> AliasChange:
        """Move ``alias`` back to the version it pointed at before its last promotion.

        Args:
            name: the model.
            alias: the alias to move (default ``production``).

        Returns:
            The change made.
        """
        model_dir = self._model_dir(check_name(name))
        alias = check_alias(alias)
        with _locked(model_dir):
            state = self._aliases(model_dir)
            current = alias_target(name, alias, state["aliases"], PROMOTE)
            target = rollback_target(name, alias, current, state["previous"].get(alias, []),
                                     set(self._numbers(model_dir)), PROMOTE)
            state["aliases"][alias] = target
            self._record(state, "rollback", alias, target, current)
            write_json_atomic(model_dir / ALIASES_FILE, state)
        return AliasChange(name, alias, target, current, "rollback")

    # ---- reading
    def models(self) -> list[str]:
        """The model names in the repository."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and (self._numbers(p) or (p / ALIASES_FILE).exists()))

    def versions(self, name: str) -> list[VersionInfo]:
        """Every version of a model, oldest first, with its aliases, size and validation verdict."""
        model_dir = self._model_dir(check_name(name))
        aliases = self._aliases(model_dir)["aliases"]
        return [self._info(name, n, aliases) for n in sorted(self._numbers(model_dir))]

    def show(self, spec: str | ModelSpec) -> VersionInfo:
        """One version: ``NAME@ALIAS``, ``NAME/VERSION`` or ``NAME`` (the newest)."""
        spec = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
        model_dir = self._model_dir(spec.name)
        state = self._aliases(model_dir)
        if spec.alias is not None:
            number = state["aliases"].get(spec.alias)
            if number is None:
                raise NotFoundError(f"model '{spec.name}' has no alias '{spec.alias}'; aliases: "
                                    f"{', '.join(sorted(state['aliases'])) or 'none'}",
                                    hint=f"mlxport registry promote {spec.name} VERSION --alias {spec.alias}")
        elif spec.version is not None:
            number = spec.version
        else:
            numbers = self._numbers(model_dir)
            if not numbers:
                raise NotFoundError(f"model '{spec.name}' has no version yet",
                                    hint=f"mlxport registry push ARTIFACT --name {spec.name}")
            number = max(numbers)
        self._version_dir(model_dir, number)
        return self._info(spec.name, number, state["aliases"])

    def fetch(self, spec: str | ModelSpec) -> Path:
        """The artifact file of a version, in place (its metadata file lies beside it)."""
        info = self.show(spec)
        path = Path(info.location) / info.artifact
        if not path.exists():
            raise RegistryError(f"{info.location} has no artifact {info.artifact}",
                                hint="The version folder was changed by hand; push the artifact again.")
        return path

    # ---- helpers
    def _model_dir(self, name: str) -> Path:
        folder = self.root / name
        if not folder.is_dir():
            known = ", ".join(self.models()) or "none"
            raise NotFoundError(f"no model '{name}' in the repository {self.root} (models: {known})",
                                hint=f"Push one: mlxport registry push ARTIFACT --name {name} --repo {self.root}")
        return folder

    @staticmethod
    def _numbers(model_dir: Path) -> list[int]:
        return [int(p.name) for p in model_dir.iterdir() if VERSION_RE.match(p.name) and p.is_dir()]

    def _version_dir(self, model_dir: Path, number: int) -> Path:
        folder = model_dir / str(number)
        if not folder.is_dir():
            have = ", ".join(map(str, sorted(self._numbers(model_dir)))) or "none"
            raise NotFoundError(f"model '{model_dir.name}' has no version {number}; versions: {have}")
        return folder

    @staticmethod
    def _aliases(model_dir: Path) -> dict[str, Any]:
        path = model_dir / ALIASES_FILE
        state = _read_json(path) if path.exists() else {}
        state.setdefault("aliases", {})
        state.setdefault("previous", {})
        state.setdefault("history", [])
        return state

    @staticmethod
    def _record(state: dict[str, Any], action: str, alias: str, version: int, previous: int | None) -> None:
        state["history"].append({"action": action, "alias": alias, "version": version, "previous": previous,
                                 "at": now(), "by": who()})
        del state["history"][:-HISTORY_LIMIT]

    def _info(self, name: str, number: int, aliases: dict[str, int]) -> VersionInfo:
        folder = self.root / name / str(number)
        path = folder / VERSION_FILE
        if path.exists():
            record = _read_json(path)
        else:  # a version folder placed by hand (a Triton-style repository): describe what is there
            arts = artifacts_in(folder)
            meta = read_meta(arts[0]) if arts else ArtifactMeta(exists=False)
            record = {"artifact": arts[0].name if arts else "", "verdict": meta.verdict(),
                      "size": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()),
                      "source": meta.source, "mlx_version": meta.mlx_version}
        return VersionInfo(
            name=name, version=number, aliases=sorted(a for a, v in aliases.items() if v == number),
            size=int(record.get("size") or 0), verdict=str(record.get("verdict") or "unknown"),
            location=str(folder), artifact=str(record.get("artifact") or ""), pushed_at=record.get("pushed_at"),
            pushed_by=record.get("pushed_by"), source=record.get("source"), parent=record.get("parent"),
            lineage=record)


def _mlxport_version() -> str:
    from .. import __version__

    return __version__
