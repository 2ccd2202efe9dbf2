"""Model versions: a local repository (the embedded default) or the MLflow Model Registry.

Both backends share one interface (:class:`Registry`): ``push`` an exported artifact as the next numbered
version, ``versions``/``show`` what is there, ``promote`` a version to an alias such as ``production``,
``rollback`` an alias to its previous target and ``fetch`` a version as a local file the server can load.

Specs name a version: ``digits@production`` (an alias), ``digits/3`` (a number), ``digits`` or
``digits@latest`` (the newest). ``models:/digits@production`` and ``models:/digits/3`` name MLflow versions.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import BackendUnavailableError, InvalidNameError, NotFoundError, RegistryError

# The same rule as the server's model names, minus all-digit names (a repository <repo>/<N>/ would look
# like one model's version folders).
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# MLflow's alias rule (word characters and '-'), kept for both backends so specs move between them.
ALIAS_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
VERSION_RE = re.compile(r"^[0-9]{1,18}$")
DEFAULT_ALIAS = "production"
MLFLOW_PREFIX = "models:/"


def check_name(name: str) -> str:
    """Return ``name`` if it is a safe model name (one path component), else raise InvalidNameError."""
    if not isinstance(name, str) or not NAME_RE.match(name) or name.isdigit():
        shown = repr(name)[:140] if isinstance(name, str) else type(name).__name__
        raise InvalidNameError(f"model name must match {NAME_RE.pattern} and not be all digits (no '/', no "
                               f"'..', not empty); got {shown}")
    return name


def check_alias(alias: str) -> str:
    """Return ``alias`` if it is a valid alias name, else raise InvalidNameError."""
    if not isinstance(alias, str) or not ALIAS_RE.match(alias):
        raise InvalidNameError(f"alias must match {ALIAS_RE.pattern}; got {repr(alias)[:80]}")
    if alias.lower() == "latest" or re.match(r"^[vV]?[0-9]+$", alias):
        raise InvalidNameError(f"alias '{alias}' is reserved: 'latest' means the newest version and 'N' or 'vN' "
                               "a version number; choose a word such as production or staging")
    return alias


def check_version(version: int | str) -> int:
    """A version number (>= 1) from an int or a string of digits."""
    text = str(version)
    if not VERSION_RE.match(text) or int(text) < 1:
        raise InvalidNameError(f"version must be a whole number >= 1; got {text[:40]!r}")
    return int(text)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``NAME``, ``NAME@ALIAS`` or ``NAME/VERSION`` (neither alias nor version: the newest)."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}/{self.version}"
        return f"{self.name}@{self.alias}" if self.alias else self.name


def parse_spec(text: str) -> ModelSpec:
    """Parse a version spec (``models:/`` prefix allowed); ``@latest`` is the newest version.

    Args:
        text: ``digits``, ``digits@production``, ``digits/3`` or ``digits@latest``.

    Returns:
        A ModelSpec whose name, alias and version are checked.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidNameError("empty model spec; expected NAME, NAME@ALIAS or NAME/VERSION such as digits@production")
    body = text.removeprefix(MLFLOW_PREFIX)
    separator = "@" if "@" in body else "/" if "/" in body else None
    if separator is None:
        return ModelSpec(check_name(body))
    name, _, rest = body.partition(separator)
    check_name(name)
    if rest.lower() == "latest":
        return ModelSpec(name)
    if separator == "@":
        return ModelSpec(name, alias=check_alias(rest))
    return ModelSpec(name, version=check_version(rest))


def alias_target(name: str, alias: str, aliases: dict[str, int], promote: str) -> int:
    """The version an alias points at; NotFoundError naming the aliases there are when it is not set.

    ``promote`` is the command that sets it, for the hint (the local and MLflow backends differ).
    """
    current = aliases.get(alias)
    if current is None:
        raise NotFoundError(f"model '{name}' has no alias '{alias}'; aliases: {', '.join(sorted(aliases)) or 'none'}",
                            hint=f"Set it first: {promote} {name} VERSION --alias {alias}")
    return current


def rollback_target(name: str, alias: str, current: int, previous: list[int], existing: set[int],
                    promote: str) -> int:
    """Pop the alias's most recent earlier target that still exists (and is not ``current``)."""
    while previous:
        target = previous.pop()
        if target in existing and target != current:
            return target
    raise RegistryError(f"{name}@{alias} (version {current}) has no previous version to roll back to",
                        hint=f"Promote another version instead: {promote} {name} VERSION --alias {alias}")


@dataclass
class VersionInfo:
    """One version of a model as a backend reports it."""

    name: str
    version: int
    aliases: list[str]
    size: int
    verdict: str
    location: str
    artifact: str
    pushed_at: str | None = None
    pushed_by: str | None = None
    source: str | None = None
    parent: int | None = None
    lineage: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AliasChange:
    """What ``promote`` or ``rollback`` did to an alias."""

    name: str
    alias: str
    version: int
    previous: int | None
    action: str

    def __str__(self) -> str:
        was = f" (was version {self.previous})" if self.previous is not None else ""
        return f"{self.name}@{self.alias} -> version {self.version}{was}"


class Registry(Protocol):
    """What every backend offers (see ``LocalRegistry`` and ``MlflowRegistry``)."""

    backend: str

    def push(self, artifact: str | os.PathLike, name: str, *, description: str | None = None) -> VersionInfo:
        ...

    def models(self) -> list[str]:
        ...

    def versions(self, name: str) -> list[VersionInfo]:
        ...

    def show(self, spec: str | ModelSpec) -> VersionInfo:
        ...

    def promote(self, name: str, version: int | str, alias: str = DEFAULT_ALIAS) -> AliasChange:
        ...

    def rollback(self, name: str, alias: str = DEFAULT_ALIAS) -> AliasChange:
        ...

    def fetch(self, spec: str | ModelSpec) -> Path:
        ...


def open_registry(backend: str = "local", *, repo: str | os.PathLike | None = None,
                  tracking_uri: str | None = None, cache_dir: str | os.PathLike | None = None) -> Registry:
    """Open a registry backend.

    Args:
        backend: ``local`` (a folder, the default) or ``mlflow`` (the MLflow Model Registry).
        repo: the local repository root (default ``$MLXPORT_REPO`` or ``./mlxport-repo``).
        tracking_uri: the MLflow tracking server (default ``$MLFLOW_TRACKING_URI``).
        cache_dir: where MLflow versions are downloaded to (default ``$MLXPORT_CACHE_DIR`` or
            ``~/.cache/mlxport/models``).

    Returns:
        A LocalRegistry or an MlflowRegistry.
    """
    if backend == "local":
        from .local import LocalRegistry

        return LocalRegistry(repo)
    if backend == "mlflow":
        from .mlflow_backend import MlflowRegistry

        return MlflowRegistry(tracking_uri, cache_dir=cache_dir)
    raise RegistryError(f"unknown registry backend '{backend}'; choose 'local' or 'mlflow'")


def resolve(spec: str | os.PathLike, *, repo: str | os.PathLike | None = None, tracking_uri: str | None = None,
            cache_dir: str | os.PathLike | None = None) -> Path:
    """Turn what ``mlxport serve`` was given into a local path it can load.

    An existing path is returned as it is. ``models:/NAME@ALIAS`` and ``models:/NAME/VERSION`` are downloaded
    from MLflow into the cache (once per version); ``NAME@ALIAS`` and ``NAME/VERSION`` are looked up in the
    local repository. The artifact file is named after the model, so a server that names single artifacts by
    their stem serves it under the model's name.

    Args:
        spec: a path, ``models:/...`` or a local spec.
        repo: the local repository root (default ``$MLXPORT_REPO`` or ``./mlxport-repo``).
        tracking_uri: the MLflow tracking server (default ``$MLFLOW_TRACKING_URI``).
        cache_dir: where MLflow downloads go.

    Returns:
        The artifact file (its metadata file lies beside it) or the path as given.
    """
    text = os.fspath(spec)
    if text.startswith(MLFLOW_PREFIX):
        return open_registry("mlflow", tracking_uri=tracking_uri, cache_dir=cache_dir).fetch(text)
    path = Path(text)
    if path.exists():
        return path
    if "@" not in text and not re.match(r"^[^/]+/[0-9]+$", text):
        raise NotFoundError(f"no such model path: {text[:300]}",
                            hint="Give an artifact or folder that exists, a registry spec NAME@ALIAS or "
                                 "NAME/VERSION (local repository), or models:/NAME@ALIAS (MLflow).")
    return open_registry("local", repo=repo).fetch(text)


__all__ = [
    "AliasChange", "BackendUnavailableError", "DEFAULT_ALIAS", "InvalidNameError", "ModelSpec", "NotFoundError",
    "Registry", "RegistryError", "VersionInfo", "check_alias", "check_name", "check_version", "open_registry",
    "parse_spec", "resolve",
]
