"""Bundles for where models run: SageMaker, a Triton model repository, KServe, and edge devices.

    from mlxport.package import package

    package("model.onnx", "sagemaker", "dist/")  # model.tar.gz + Dockerfile + deploy.py
    package("model.onnx", "triton", "repo/")     # repo/model/config.pbtxt + repo/model/1/model.onnx
    package("model.onnx", "kserve", "k8s/")      # inferenceservice.yaml + model_repository/
    package("model.tflite", "edge", "edge/")     # model + metadata.json + SHA256SUMS + run.py
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Callable

from ..formats import BY_SUFFIX, FORMATS
from .common import Bundle
from .errors import MissingDependencyError, PackageError

TARGETS: dict[str, str] = {
    "sagemaker": "model.tar.gz for /opt/ml/model, a Dockerfile (docker run IMAGE serve) and deploy.py (boto3)",
    "triton": "a Triton model repository: <name>/config.pbtxt and <name>/<N>/model.onnx (ONNX only)",
    "kserve": "an InferenceService manifest (Triton runtime, protocol v2) and the repository it points to",
    "edge": "the .tflite or .onnx with metadata.json, SHA256SUMS and a standalone run.py",
}


def target_formats(target: str) -> dict[str, str]:
    """The artifact suffixes a target takes, each with what runs it there (from the format table)."""
    if target == "sagemaker":  # a Linux container runs every format but those that predict on macOS only
        return {f.suffix: "served by mlxport serve" for f in FORMATS if f.predicts_on in (None, "linux")}
    if target == "triton":
        return {".onnx": f"Triton's {BY_SUFFIX['.onnx'].runtime} backend"}
    if target == "kserve":
        return {".onnx": "served by Triton on KServe"}
    return {f.suffix: f.runtime for f in FORMATS if f.edge_runtime}


def _writer(target: str) -> Callable[..., Bundle]:
    if target == "sagemaker":
        from .sagemaker import package_sagemaker

        return package_sagemaker
    if target == "triton":
        from .triton import package_triton

        return package_triton
    if target == "kserve":
        from .kserve import package_kserve

        return package_kserve
    from .edge import package_edge

    return package_edge


def options_of(target: str) -> list[str]:
    """The keyword options a target takes."""
    params = inspect.signature(_writer(target)).parameters
    return [p for p, v in params.items() if v.kind == v.KEYWORD_ONLY]


def build(artifact: str | os.PathLike, target: str, out_dir: str | os.PathLike, **options: Any) -> Bundle:
    """Like ``package`` but returns the Bundle (every file written and notes for the user)."""
    if target not in TARGETS:
        import difflib

        close = difflib.get_close_matches(str(target), TARGETS, n=1)
        raise PackageError(f"unknown target '{target}'; choose one of {', '.join(TARGETS)}"
                           + (f" (did you mean {close[0]}?)" if close else ""))
    known = options_of(target)
    unknown = sorted(set(options) - set(known))
    if unknown:
        takers = {o: [t for t in TARGETS if o in options_of(t)] for o in unknown}
        detail = "; ".join(f"{o} is for {' or '.join(t) or 'no target'}" for o, t in takers.items())
        raise PackageError(f"--target {target} does not take {', '.join(unknown)} ({detail}); it takes "
                           f"{', '.join(known)}")
    return _writer(target)(artifact, out_dir, **options)


def package(artifact: str | os.PathLike, target: str, out_dir: str | os.PathLike, **options: Any) -> Path:
    """Write a deployable bundle of an exported artifact.

    Nothing is written outside ``out_dir``; every entry is built in a hidden folder inside it and moved in
    when complete, so a failure leaves no half-written bundle (or half-written model version).

    Args:
        artifact: the exported model (``.onnx``; SageMaker also serves ``.mlxfn``, ``.pt``, ``.pt2``; edge
            also takes ``.tflite``). Its ``.mlxport.json`` metadata travels with it when present.
        target: "sagemaker", "triton", "kserve" or "edge".
        out_dir: the output folder (created if missing; for triton, the model repository).
        **options: per target, all optional:
            every target: ``name`` (model name, default the artifact's stem), ``force`` (replace entries
            already there).
            sagemaker: ``wheel`` (an mlxport .whl to install in the image instead of the index's).
            triton: ``version`` (default 1), ``max_batch_size`` (default 64 with a dynamic batch axis, else 0),
            ``max_queue_delay_us`` (2000), ``instances`` (1), ``instance_kind`` ("cpu"/"gpu"),
            ``version_policy`` ("latest", "latest:N", "all", "specific:1,3"), ``validate`` (True).
            kserve: ``storage_uri`` (default the placeholder s3://BUCKET/path), ``model_format``
            ("triton"/"onnx"), ``cpu``, ``memory``, ``gpus``, ``max_batch_size``, ``max_queue_delay_us``,
            ``instances``, ``validate``.
            edge: ``layout`` (e.g. "NCHW"; default by rank, NHWC for images), ``preprocessing`` (a note).

    Returns:
        sagemaker and edge: ``out_dir``; triton: ``out_dir/<name>``; kserve: the manifest path.
    """
    return build(artifact, target, out_dir, **options).path


__all__ = ["TARGETS", "Bundle", "MissingDependencyError", "PackageError", "build", "options_of", "package"]
