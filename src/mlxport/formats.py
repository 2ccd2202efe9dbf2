"""Every artifact format mlxport writes and reads, in one table.

The API (which writer a suffix picks), the runners (which runtime opens a file), every CLI command (the
suffixes it accepts, its help texts), ``inspect``, the model repository of ``mlxport serve`` (which artifact a
version folder serves, its Triton platform), ``mlxport package`` and ``mlxport registry`` (runtime
requirements, format names) all read this table; docs/cli.md is checked against it by a test. Adding a
format is adding a row here plus its writer, runner and inspector functions.

This module imports nothing heavy: ``mlxport --help`` reads it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import ArtifactError


@dataclass(frozen=True)
class Format:
    """One artifact format.

    Attributes:
        name: what mlxport calls it ("ONNX", "TorchScript", ...), recorded in every artifact's metadata.
        suffix: the file suffix that selects it (lower case, with the dot).
        runtime: what runs it, for people ("ONNX Runtime", "LiteRT", ...).
        backend: the runner's backend name (``mlxport serve --backend``, ``Runner.backend``).
        writer: ``module:function`` writing a ``Traced`` graph to this format (see ``mlxport.writers``).
        runner: ``module:class`` opening a file of this format (see ``mlxport.runners``).
        inspector: ``module:function`` describing a file of this format (see ``mlxport.inspect``).
        extra: the ``pip install "mlxport[EXTRA]"`` that brings its writer and runtime (None: core install).
        requirements: the pip packages that run it (an MLflow model's requirements).
        run_extras: the mlxport extras a server of this format installs beside ``serve`` (a container image).
        run_packages: other pip packages that server installs (the runtime alone, not the exporter's stack).
        triton_platform: the platform a Triton ``config.pbtxt`` names for it.
        options: the format-specific ``save``/``export`` options it takes (others are refused for it).
        runner_options: the portable keyword options its runner takes (``threads``; ``mlxport bench --threads``).
        directory: the artifact is a folder (a Core ML package), not a file.
        dynamic_axes: it can keep dynamic axes (``.mlxfn`` cannot, see ``capture``).
        predicts_on: the only platform (``sys.platform``) where its numbers can be computed, if any: elsewhere
            validation checks its structure only, with ``checker``.
        checker: ``module:function(path, inputs, outputs) -> problems`` checking the file against a signature
            without running it (for formats with ``predicts_on``).
        edge_runtime: the Python module a standalone edge runner imports for it (None: no edge bundle).
        doc: one line for help texts.
    """

    name: str
    suffix: str
    runtime: str
    backend: str
    writer: str
    runner: str
    inspector: str
    extra: str | None
    requirements: tuple[str, ...]
    triton_platform: str
    run_extras: tuple[str, ...] = ()
    run_packages: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    runner_options: tuple[str, ...] = ()
    directory: bool = False
    dynamic_axes: bool = True
    predicts_on: str | None = None
    checker: str | None = None
    edge_runtime: str | None = None
    doc: str = ""

    @property
    def label(self) -> str:
        """``.pt (TorchScript)``: the suffix with the format's name, where the suffix does not say it."""
        plain = {".onnx", ".mlxfn"}
        return self.suffix if self.suffix in plain else f"{self.suffix} ({self.name})"

    def load_writer(self) -> Callable[..., Any]:
        return _resolve(self.writer)

    def load_runner(self) -> Callable[..., Any]:
        return _resolve(self.runner)

    def load_inspector(self) -> Callable[..., Any]:
        return _resolve(self.inspector)

    def runs_here(self) -> bool:
        """Whether this platform can compute the format's numbers (Core ML: macOS only)."""
        import sys

        return self.predicts_on is None or sys.platform == self.predicts_on

    def check_structure(self, path: str | Path, inputs: list[Any], outputs: list[Any]) -> list[str]:
        """Problems found comparing the file with a signature, without running it (``checker``)."""
        if self.checker is None:
            return []
        return _resolve(self.checker)(path, inputs, outputs)

    @property
    def predicts_on_name(self) -> str:
        """The platform that computes its numbers, for people ("macOS")."""
        names = {"darwin": "macOS", "linux": "Linux", "win32": "Windows"}
        return names.get(self.predicts_on or "", self.predicts_on or "any platform")

    @property
    def install(self) -> str:
        """The install command that provides this format."""
        return f'pip install "mlxport[{self.extra}]"' if self.extra else "pip install mlxport"


# The order is the serving preference when a version folder holds several formats: ONNX Runtime is the fast
# Linux path, then LiteRT, the torch runtimes, MLX itself, and Core ML (which predicts only on macOS).
FORMATS: tuple[Format, ...] = (
    Format("ONNX", ".onnx", "ONNX Runtime", "onnxruntime", "mlxport.writers:write_onnx",
           "mlxport.runners:OnnxRunner", "mlxport.inspect:inspect_onnx", None, ("onnxruntime",),
           "onnxruntime_onnx", options=("opset", "external_data", "optimize", "contrib_ops"),
           runner_options=("threads",), edge_runtime="onnxruntime",
           doc="ONNX, run by ONNX Runtime (dynamic axes, packed quantized weights)"),
    Format("TFLite", ".tflite", "LiteRT", "litert", "mlxport.writers:write_tflite",
           "mlxport.runners:TFLiteRunner", "mlxport.inspect:inspect_tflite", "tflite", ("ai-edge-litert",),
           "tensorflow_lite", run_packages=("ai-edge-litert",), options=("quantize", "calibration"),
           runner_options=("threads",), edge_runtime="ai_edge_litert",
           doc="LiteRT flatbuffer through onnx2tf (float32, float16, dynamic_int8, int8; a dynamic batch axis only)"),
    Format("TorchScript", ".pt", "TorchScript", "torchscript", "mlxport.writers:write_torch",
           "mlxport.runners:TorchScriptRunner", "mlxport.inspect:inspect_torch", "torch", ("torch",),
           "pytorch_libtorch", run_extras=("torch",), doc="TorchScript, loads with plain torch.jit.load"),
    Format("torch.export", ".pt2", "torch.export", "torch.export", "mlxport.writers:write_torch",
           "mlxport.runners:ExportedProgramRunner", "mlxport.inspect:inspect_torch", "torch", ("torch",),
           "pytorch_export", run_extras=("torch",), doc="torch.export ExportedProgram"),
    Format("MLX", ".mlxfn", "MLX", "mlx", "mlxport.writers:write_mlxfn",
           "mlxport.runners:MlxfnRunner", "mlxport.inspect:inspect_mlxfn", None, ("mlx",), "mlx",
           dynamic_axes=False, doc="MLX's own mx.export_function file (fixed shapes)"),
    Format("Core ML", ".mlpackage", "Core ML", "coreml", "mlxport.writers:write_coreml",
           "mlxport.runners:MLPackageRunner", "mlxport.inspect:inspect_coreml", "coreml", ("coremltools",),
           "coreml", options=("precision",), directory=True, predicts_on="darwin",
           checker="mlxport.exporters.coreml:check_structure",
           doc="Core ML ML Program package (numbers on macOS; structure-checked elsewhere)"),
)

BY_SUFFIX: dict[str, Format] = {f.suffix: f for f in FORMATS}
BY_BACKEND: dict[str, Format] = {f.backend: f for f in FORMATS}
# Every format-specific option, and the formats that take it.
OPTION_FORMATS: dict[str, tuple[Format, ...]] = {
    opt: tuple(f for f in FORMATS if opt in f.options) for opt in dict.fromkeys(o for f in FORMATS for o in f.options)}


def suffix_list(conjunction: str = "or") -> str:
    """``.onnx, .tflite (TFLite), ... or .mlpackage (Core ML)``: for help texts and messages."""
    labels = [f.label for f in FORMATS]
    return ", ".join(labels[:-1]) + f" {conjunction} {labels[-1]}"


def markdown_table() -> str:
    """The formats table of docs/cli.md (a test checks the file holds exactly this)."""
    rows = ["| suffix | format | runs on | install | format options | dynamic axes |", "|---|---|---|---|---|---|"]
    for f in FORMATS:
        runs = f.runtime + ("" if f.predicts_on is None else f" ({f.predicts_on_name} only; elsewhere checked by "
                                                                 "structure)")
        options = ", ".join(f"`{o}`" for o in f.options) or "-"
        rows.append(f"| `{f.suffix}` | {f.doc} | {runs} | `{f.install}` | {options} | "
                    f"{'yes' if f.dynamic_axes else 'no (fixed shapes)'} |")
    return "\n".join(rows) + "\n"


def format_of(path: str | Path) -> Format | None:
    """The format a path's suffix names (case-insensitive), or None."""
    return BY_SUFFIX.get(Path(path).suffix.lower())


def require_format(path: str | Path, what: str = "an artifact") -> Format:
    """The format of ``path``; an ArtifactError naming every suffix when it has none mlxport knows."""
    fmt = format_of(path)
    if fmt is None:
        raise ArtifactError(f"cannot tell the format of '{Path(path).name}' ({what}): unknown suffix "
                            f"'{Path(path).suffix}'; supported: {suffix_list()}",
                            hint="The suffix picks the format: rename the file, or see `mlxport --help` for what "
                                 "each format needs.")
    return fmt


def is_artifact(path: Path) -> bool:
    """A file (or, for folder formats, a folder) whose suffix names a format; hidden entries are not."""
    fmt = format_of(path)
    if fmt is None or path.name.startswith("."):
        return False
    return path.is_dir() if fmt.directory else path.is_file()


def artifacts_in(folder: Path) -> list[Path]:
    """The artifacts directly inside ``folder``, in the table's (serving preference) order, then by name."""
    found = [p for p in folder.iterdir() if is_artifact(p)]
    return sorted(found, key=lambda p: (FORMATS.index(BY_SUFFIX[p.suffix.lower()]), p.name))


def _resolve(target: str) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


__all__ = ["BY_BACKEND", "BY_SUFFIX", "FORMATS", "Format", "OPTION_FORMATS", "artifacts_in",
           "format_of", "is_artifact", "markdown_table", "require_format", "suffix_list"]
