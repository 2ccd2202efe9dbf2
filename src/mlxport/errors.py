"""Exceptions of the capture, conversion and validation layers."""

from __future__ import annotations


class MlxportError(Exception):
    """Base class: every error mlxport raises on purpose.

    ``hint`` says what to do next: the class default, or one given for this error. It is part of the
    exception's text (``str(exc)`` ends with ``hint: ...``), so a Python traceback shows it as the CLI
    does; ``message`` is the text without it. Hints name the Python argument and the CLI flag both
    (``atol=`` / ``--atol``) where they differ, since either kind of user may read them.
    """

    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return f"{self.message}\nhint: {self.hint}" if self.hint else self.message


class CaptureError(MlxportError):
    """The function could not be traced into a graph (bad example inputs, eager code)."""

    hint = "Check the example inputs and that the function only uses mlx operations on them."


class DynamicShapeError(CaptureError):
    """A dynamic axis could not be derived from traces at several sizes."""

    hint = "Export with fixed shapes (drop dynamic_axes) or build size-dependent values with mx ops."


class UnsupportedPrimitiveError(MlxportError):
    """One or more primitives have no translation for the target."""

    hint = "Run `mlxport ops` for the support table; docs/adding_ops.md explains how to add one."


class UnsupportedArgumentError(MlxportError):
    """A translation does not support the arguments or opset a node needs."""

    hint = ("Try another opset (opset=N; CLI: --opset N) or see `mlxport ops` (docs/ops.md) for what each "
            "primitive supports.")


class ValidationError(MlxportError):
    """The exported artifact does not reproduce MLX."""

    hint = ("Pass atol/rtol (CLI: --atol/--rtol) to accept a larger error, or validate=False (CLI: --no-validate) "
            "to skip the check (not recommended).")

    def __init__(self, message: str, report: object | None = None, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report


class ShapeMismatchError(ValidationError):
    """An output has a different shape or dtype than MLX's."""


class ToleranceError(ValidationError):
    """An output differs from MLX by more than the tolerance."""


class ArtifactError(MlxportError):
    """An artifact file cannot be read, or its format is unknown."""

    hint = "`mlxport --help` lists the formats mlxport writes and reads; `mlxport inspect FILE` describes one."
