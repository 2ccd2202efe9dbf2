"""Exceptions of the model registry layer (local repository and MLflow)."""

from __future__ import annotations

from ..errors import MlxportError


class RegistryError(MlxportError):
    """A registry operation failed (bad name, broken repository, backend error)."""

    hint = "Run `mlxport registry list NAME` to see the versions and aliases a model has."


class InvalidNameError(RegistryError):
    """A model name, alias, version or spec is malformed (or could escape the repository)."""

    hint = ("Model names are letters, digits, '_', '.', '-' (starting with a letter or digit, not all digits); "
            "aliases are letters, digits, '_', '-' (not 'latest' or 'v<N>'); specs are NAME@ALIAS or NAME/VERSION.")


class NotFoundError(RegistryError):
    """The model, version or alias does not exist."""


class BackendUnavailableError(RegistryError):
    """The backend's package is missing or its server cannot be reached."""

    hint = "Install the extra: pip install 'mlxport[mlflow]'; set --tracking-uri or $MLFLOW_TRACKING_URI."
