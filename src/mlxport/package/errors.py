"""Exceptions of the packaging layer."""

from __future__ import annotations

from ..errors import MlxportError


class PackageError(MlxportError):
    """A bundle cannot be written: bad options, an unsupported artifact, or an unsafe output folder."""

    hint = "Run `mlxport package --help` for the targets and their options."


class MissingDependencyError(PackageError):
    """A target needs a package that is not installed."""


__all__ = ["PackageError", "MissingDependencyError"]
