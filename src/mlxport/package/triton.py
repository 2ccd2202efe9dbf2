"""Triton model repository for ONNX artifacts: ``<repo>/<name>/config.pbtxt`` and ``<repo>/<name>/<N>/model.onnx``.

The config is written as text, then parsed with Triton's own schema (``model_config_pb2`` from tritonclient)
and checked against the artifact's signature. ``mlxport serve <repo>`` serves the same layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifact import IOSpec
from ..formats import BY_SUFFIX
from . import target_formats
from .common import Bundle, Source, Staging, bundle_name, files_under, is_dynamic, open_source
from .errors import MissingDependencyError, PackageError

PLATFORM = BY_SUFFIX[".onnx"].triton_platform
DEFAULT_MAX_BATCH_SIZE = 64
TRITON_TYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
    "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64", "bfloat16": "TYPE_BF16",
    "object": "TYPE_STRING",
}
KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}


@dataclass
class TritonModel:
    """One model version to write into a repository."""

    source: Source
    name: str
    version: int
    config: str | None            # None: keep the config.pbtxt already there
    notes: list[str] = field(default_factory=list)

    def entries(self, prefix: str = "") -> list[str]:
        """Entries relative to the output folder, in the order they are moved in (version first)."""
        base = f"{prefix}{self.name}"
        return [f"{base}/{self.version}"] + ([f"{base}/config.pbtxt"] if self.config is not None else [])

    def build(self, stage: Staging, prefix: str = "") -> None:
        base = f"{prefix}{self.name}"
        self.source.copy_to(stage.path(f"{base}/{self.version}/model.onnx").parent, "model.onnx")
        if self.config is not None:
            stage.path(f"{base}/config.pbtxt").write_text(self.config)


def batch_problem(inputs: list[IOSpec], outputs: list[IOSpec]) -> str | None:
    """Why the model cannot take a batch axis (Triton's max_batch_size > 0), or None when it can."""
    for spec in inputs + outputs:
        if not spec.shape:
            return f"'{spec.name}' is a scalar"
        if not is_dynamic(spec.shape[0]):
            return f"'{spec.name}' has the fixed first axis of shape {spec.shape}"
    symbols = {s.shape[0] for s in inputs if isinstance(s.shape[0], str)}
    if len(symbols) > 1:
        return f"the inputs' first axes are different dynamic dimensions ({', '.join(sorted(symbols))})"
    return None


def _dims(spec: IOSpec, batched: bool) -> list[int]:
    dims = [-1 if is_dynamic(d) else int(d) for d in spec.shape]
    return dims[1:] if batched else dims


def _policy_text(policy: str) -> str:
    from ..serve.repository import VersionPolicy

    try:
        parsed = VersionPolicy.parse(policy)
    except ValueError as exc:
        raise PackageError(f"--version-policy: {exc}") from None
    if parsed.kind == "all":
        return "{ all: { } }"
    if parsed.kind == "specific":
        return f"{{ specific: {{ versions: [ {', '.join(parsed.versions)} ] }} }}"
    return f"{{ latest: {{ num_versions: {parsed.n} }} }}"


def config_text(name: str, inputs: list[IOSpec], outputs: list[IOSpec], *, max_batch_size: int,
                max_queue_delay_us: int = 2000, instances: int = 1, instance_kind: str = "cpu",
                version_policy: str = "latest") -> str:
    """The ``config.pbtxt`` of an ONNX model (protobuf text format of Triton's ModelConfig).

    Args:
        name: the model name (must equal its folder's name).
        inputs: the artifact's inputs.
        outputs: the artifact's outputs.
        max_batch_size: 0 (dims are the full shapes) or the batch limit (dims then leave out the first axis).
        max_queue_delay_us: how long dynamic batching waits for more requests (only when batching).
        instances: model instances Triton runs at once.
        instance_kind: "cpu" or "gpu".
        version_policy: "latest", "latest:N", "all" or "specific:1,3".

    Returns:
        The config text.
    """
    batched = max_batch_size > 0

    def tensors(kind: str, specs: list[IOSpec]) -> list[str]:
        lines = [f"{kind} ["]
        for i, spec in enumerate(specs):
            dtype = TRITON_TYPES.get(spec.dtype)
            if dtype is None:
                raise PackageError(f"{kind} '{spec.name}' has the dtype {spec.dtype}, which Triton has no type for; "
                                   f"Triton takes {', '.join(TRITON_TYPES)}")
            dims = _dims(spec, batched)
            # Triton wants at least one dim: a scalar (per batch row) is [1] reshaped to [].
            shape = f"dims: [ {', '.join(map(str, dims))} ]" if dims else "dims: [ 1 ]\n    reshape: { shape: [ ] }"
            lines += ["  {", f'    name: "{spec.name}"', f"    data_type: {dtype}", f"    {shape}",
                      "  }" + ("," if i < len(specs) - 1 else "")]
        return lines + ["]"]

    if instance_kind not in KINDS:
        raise PackageError(f"instance kind must be one of {', '.join(KINDS)}; got '{instance_kind}'")
    lines = [f'name: "{name}"', f'platform: "{PLATFORM}"', f"max_batch_size: {max_batch_size}"]
    lines += tensors("input", inputs) + tensors("output", outputs)
    lines += [f"version_policy: {_policy_text(version_policy)}",
              "instance_group [", "  {", f"    count: {instances}", f"    kind: {KINDS[instance_kind]}", "  }", "]"]
    if batched:
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {max_queue_delay_us}", "}"]
    return "\n".join(lines) + "\n"


def import_model_config() -> Any:
    """Triton's ``model_config_pb2`` (shipped by tritonclient), or a clear error."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise MissingDependencyError(
            "checking config.pbtxt against Triton's own schema needs tritonclient (with its grpc extra), which "
            "is not installed", hint="pip install 'tritonclient[grpc]', or pass validate=False (CLI --no-validate) to skip the "
                                 "check.") from exc
    return model_config_pb2


def check_config(text: str, name: str, inputs: list[IOSpec], outputs: list[IOSpec]) -> Any:
    """Parse ``text`` as Triton's ModelConfig and check it against a signature; raises listing every problem.

    Args:
        text: the config.pbtxt text.
        name: the model name it must carry.
        inputs: the artifact's inputs.
        outputs: the artifact's outputs.

    Returns:
        The parsed ``ModelConfig`` message.
    """
    from google.protobuf import text_format

    pb = import_model_config()
    config = pb.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise PackageError(f"config.pbtxt of '{name}' does not parse as Triton's ModelConfig: {exc}") from None
    problems = []
    if config.name != name:
        problems.append(f"name is '{config.name}', but the model folder is '{name}'")
    if config.platform != PLATFORM and config.backend != "onnxruntime":
        problems.append(f"platform is '{config.platform or config.backend}', expected '{PLATFORM}'")
    mbs = config.max_batch_size
    if mbs < 0:
        problems.append(f"max_batch_size is {mbs}; it must be >= 0")
    if mbs > 0 and (why := batch_problem(inputs, outputs)):
        problems.append(f"max_batch_size is {mbs}, but {why}")
    for kind, got, want in (("input", config.input, inputs), ("output", config.output, outputs)):
        names = [t.name for t in got]
        expected = [s.name for s in want]
        if sorted(names) != sorted(expected):
            problems.append(f"{kind}s are {names}; the artifact's are {expected}")
        by_name = {t.name: t for t in got}
        for spec in want:
            t = by_name.get(spec.name)
            if t is None:
                continue
            dtype = pb.DataType.Name(t.data_type)
            if dtype != TRITON_TYPES.get(spec.dtype):
                problems.append(f"{kind} '{spec.name}' has data_type {dtype}; the artifact's is {spec.dtype} "
                                f"({TRITON_TYPES.get(spec.dtype, 'no Triton type')})")
            dims = _dims(spec, mbs > 0)
            got_dims = list(t.dims)
            reshaped = list(t.reshape.shape) if t.HasField("reshape") else got_dims
            if reshaped != dims:
                problems.append(f"{kind} '{spec.name}' has dims {got_dims}"
                                f"{f' reshaped to {reshaped}' if t.HasField('reshape') else ''}; the artifact's "
                                f"shape {spec.shape} gives {dims} (max_batch_size {mbs})")
    if config.HasField("dynamic_batching") and mbs == 0:
        problems.append("dynamic_batching is set, but max_batch_size is 0 (no batch axis)")
    problems += [f"instance_group has count {g.count}; it must be >= 1" for g in config.instance_group if g.count < 1]
    if problems:
        raise PackageError(f"config.pbtxt of '{name}' does not fit the artifact:\n  - " + "\n  - ".join(problems))
    return config


def plan_model(source: Source, repo: Path, *, name: str | None = None, version: int = 1,
               max_batch_size: int | None = None, max_queue_delay_us: int = 2000, instances: int = 1,
               instance_kind: str = "cpu", version_policy: str = "latest", validate: bool = True,
               force: bool = False, versions: bool = True) -> TritonModel:
    """Decide what to write for one model version in the repository ``repo`` (nothing is written here).

    ``versions``: whether the caller offers --version (the hint for an existing version folder says so).
    """
    name = bundle_name(name, source.path)
    if not isinstance(version, int) or version < 1:
        raise PackageError(f"--version must be a whole number >= 1 (a Triton version folder); got {version}")
    if instances < 1 or max_queue_delay_us < 0:
        raise PackageError(f"--instances must be >= 1 and --max-queue-delay-us >= 0; got {instances} and "
                           f"{max_queue_delay_us}")
    why = batch_problem(source.inputs, source.outputs)
    if max_batch_size is None:
        max_batch_size = 0 if why else DEFAULT_MAX_BATCH_SIZE
    elif max_batch_size < 0:
        raise PackageError(f"--max-batch-size must be >= 0; got {max_batch_size}")
    elif max_batch_size > 0 and why:
        axes = ", ".join(f"{s.name} {s.shape}" for s in source.inputs)
        raise PackageError(
            f"--max-batch-size {max_batch_size} needs a dynamic batch axis first on every input and output, but "
            f"{why} ({source.path.name}: {axes})",
            hint="Export with a dynamic first axis (dynamic_axes={'x': {0: 'batch'}}; CLI --dynamic x:0=batch), "
                 "or pass max_batch_size=0 (CLI --max-batch-size 0) to serve the fixed shapes without batching.")
    text = config_text(name, source.inputs, source.outputs, max_batch_size=max_batch_size,
                       max_queue_delay_us=max_queue_delay_us, instances=instances, instance_kind=instance_kind,
                       version_policy=version_policy)
    if validate:
        check_config(text, name, source.inputs, source.outputs)
    model = TritonModel(source, name, version, text)
    existing = repo / name / "config.pbtxt"
    if existing.is_file() and not force:
        if validate:
            try:
                check_config(existing.read_text(), name, source.inputs, source.outputs)
            except PackageError as exc:
                raise PackageError(f"{existing} already describes another signature, so version {version} of "
                                   f"{source.path.name} cannot join it: {exc}",
                                   hint="Package it under another name (name=, CLI --name), or pass force=True (CLI "
                                        "--force) to rewrite config.pbtxt (the other versions must then fit it too).") from None
        model.config = None
        model.notes.append(f"kept the existing {existing} (pass --force to rewrite it with these settings)")
    version_dir = repo / name / str(version)
    if version_dir.exists() and not force:
        taken = [int(p.name) for p in (repo / name).iterdir() if p.is_dir() and p.name.isdigit()]
        hint = (f"Pass --version {max(taken, default=0) + 1} to add a new version, or --force to replace this one."
                if versions else "Pass --force to replace it, or choose another output folder.")
        raise PackageError(f"{version_dir} already exists", hint=hint)
    return model


def package_triton(artifact: str | os.PathLike, out_dir: str | os.PathLike, *, name: str | None = None,
                   version: int = 1, max_batch_size: int | None = None, max_queue_delay_us: int = 2000,
                   instances: int = 1, instance_kind: str = "cpu", version_policy: str = "latest",
                   validate: bool = True, force: bool = False) -> Bundle:
    """Write (or add a version to) a Triton model repository; see ``mlxport.package.package``."""
    source = open_source(artifact, "triton", target_formats("triton"))
    repo = Path(out_dir)
    model = plan_model(source, repo, name=name, version=version, max_batch_size=max_batch_size,
                       max_queue_delay_us=max_queue_delay_us, instances=instances, instance_kind=instance_kind,
                       version_policy=version_policy, validate=validate, force=force)
    stage = Staging(repo, source.files, force=force)
    stage.plan(*model.entries())
    with stage:
        model.build(stage)
    folder = repo / model.name
    notes = model.notes + [f"serve it: mlxport serve {repo}   (or: tritonserver --model-repository={repo.resolve()})"]
    return Bundle("triton", folder, files_under([folder / str(model.version), folder / "config.pbtxt"]), notes)
